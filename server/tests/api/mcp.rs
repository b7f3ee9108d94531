//! The MCP gateway over HTTP: the `mcp` Python SDK's own server (FastMCP,
//! and mcp 2's MCPServer) and Streamable HTTP client through `/mcp/{server}`
//! with a Tollgate key; upstreams that are down, slow or malformed; a
//! session opened on one instance used on another, and a server removed
//! there; who may register servers and choose a project's.

use crate::helpers::{Backend, Binary, Console, TestApp, TestDb, OWNER_PASSWORD};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Python with the `mcp` SDK of this major version: 2 in the main
/// test venv (beside nanoidp), 1 (FastMCP) in a venv of its own.
fn python_with_mcp(major: u8) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    match major {
        1 => std::env::var("TOLLGATE_PYTHON_MCP1")
            .unwrap_or_else(|_| format!("{home}/.cache/tollgate-mcp1-venv/bin/python")),
        _ => crate::sdk::python(),
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SDK's server with tools `add` and `delete_everything` and the
/// resource `notes://today`, on its own port; returns its URL.
async fn python_upstream(major: u8) -> (Killed, String) {
    let port = free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/mcp_upstream.py"
    );
    let child = Command::new(python_with_mcp(major))
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/tools",
                python_with_mcp(major)
            )
        });
    let guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the MCP upstream did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (guard, format!("http://127.0.0.1:{port}/mcp"))
}

fn server_form<'a>(
    org: &'a str,
    name: &'a str,
    url: &'a str,
    timeout: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("org_id", org),
        ("name", name),
        ("url", url),
        ("transport", "http"),
        ("credential_header", ""),
        ("credential", ""),
        ("tools", ""),
        ("timeout_ms", timeout),
    ]
}

/// A JSON-RPC message to `/mcp/{server}`: status, headers and body.
async fn rpc(
    url: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, HeaderMap, Value) {
    let mut rb = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    let res = rb.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    // An event stream's answer is its last data line.
    let json_text = if headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"))
    {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap_or("null")
            .to_owned()
    } else {
        text
    };
    let body = serde_json::from_str(&json_text).unwrap_or(Value::String(json_text));
    (status, headers, body)
}

fn call_tool(id: i64, tool: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": tool, "arguments": {} } })
}

fn initialize() -> Value {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": { "name": "test", "version": "1" } } })
}

async fn ledger(app: &TestApp) -> Vec<(String, i64, Option<String>)> {
    app.gateway.ledger.flush().await;
    let mut conn = app.sql().await;
    sqlx::query_as(
        "SELECT model, status, error_code FROM usage_events WHERE endpoint = 'mcp.tools/call' ORDER BY at, model",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The SDK's client through the gateway (mcp 1 FastMCP and client on
/// SQLite, mcp 2 on PostgreSQL): only the allowed tool is listed and
/// called, the other refused naming the rule, the resource read; a
/// revoked key is refused on its next call; each call is in the ledger.
async fn the_mcp_sdk_works_through_the_gateway(backend: Backend) {
    let major = match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "Agents").await;
    let other = app.create_project(&owner, &org, "Other").await;
    let (_upstream, upstream_url) = python_upstream(major).await;

    let saved = app
        .ok(
            &owner,
            "save_mcp_server",
            &server_form(&org, "tools", &upstream_url, ""),
        )
        .await;
    assert_eq!(saved["tools"], Value::Null, "{saved}");
    assert_eq!(saved["timeout_ms"], 30_000);
    // The project may use every tool of the server; the key narrows it to `add`.
    let set = app
        .ok(
            &owner,
            "set_project_mcp",
            &[("org_id", &org), ("project_id", &project), ("mcp", "tools")],
        )
        .await;
    assert_eq!(set["grants"], "tools");
    let (key_id, key) = app.create_key(&owner, &org, &project, &[]).await;
    app.ok(
        &owner,
        "set_key_mcp",
        &[("org_id", &org), ("key_id", &key_id), ("mcp", "tools: add")],
    )
    .await;
    let shown = app
        .ok(&owner, "key_mcp", &[("org_id", &org), ("key_id", &key_id)])
        .await;
    assert_eq!(
        (shown["grants"].clone(), shown["inherited"].clone()),
        (json!("tools: add"), json!(false))
    );
    app.feed_caught_up().await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/mcp_client_check.py"
    );
    let mut child = Killed(
        Command::new(python_with_mcp(major))
            .arg(script)
            .env("MCP_URL", format!("{}/mcp/tools", app.url))
            .env("KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| {
                panic!("the MCP client stopped before READY:\n{}", seen.join("\n"))
            });
        seen.push(line.clone());
        if line == "READY" {
            break;
        }
        assert!(!line.starts_with("FAILED"), "{}", seen.join("\n"));
    }
    // Revoked while the client's session is open: its next call is refused.
    app.ok(
        &owner,
        "revoke_key",
        &[("org_id", &org), ("key_id", &key_id)],
    )
    .await;
    app.feed_caught_up().await;
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut status = tokio::task::spawn_blocking(move || {
        let s = child.0.wait();
        (s, child)
    })
    .await
    .unwrap();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let mut stderr = String::new();
    if let Some(mut e) = status.1 .0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let out = seen.join("\n");
    assert!(
        status.0.unwrap().success() && out.contains("all mcp checks passed"),
        "the MCP client check failed:\n{out}\n{}",
        stderr
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    eprintln!("{out}");

    // Each tool call is in the ledger: the one served, the one refused.
    assert_eq!(
        ledger(&app).await,
        [
            ("tools/add".to_owned(), 200, None),
            (
                "tools/delete_everything".to_owned(),
                403,
                Some("tool_not_allowed".to_owned())
            ),
        ]
    );

    // The revoked key, as the gateway answers it: 401 naming the rule.
    let (st, _, body) = rpc(
        &format!("{}/mcp/tools", app.url),
        &key,
        None,
        call_tool(3, "add"),
    )
    .await;
    assert_eq!(
        (st, body["error"]["data"]["rule"].as_str()),
        (401, Some("key_revoked")),
        "{body}"
    );

    // Content logging is off (the default): no arguments or results kept.
    let mut conn = app.sql().await;
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM request_logs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 0);

    // A key of a project that may not use the server is refused before
    // anything reaches it; an unknown server is a 404; no key, a 401.
    let (_, other_key) = app.create_key(&owner, &org, &other, &[]).await;
    let url = format!("{}/mcp/tools", app.url);
    let (st, _, body) = rpc(&url, &other_key, None, initialize()).await;
    assert_eq!(
        (st, body["error"]["data"]["rule"].as_str()),
        (403, Some("mcp_server_not_allowed")),
        "{body}"
    );
    let (st, _, body) = rpc(
        &format!("{}/mcp/nope", app.url),
        &other_key,
        None,
        initialize(),
    )
    .await;
    assert_eq!(
        (st, body["error"]["data"]["rule"].as_str()),
        (404, Some("mcp_server_not_found")),
        "{body}"
    );
    let res = reqwest::Client::new()
        .post(&url)
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
both!(the_mcp_sdk_works_through_the_gateway);

/// A fake MCP server whose answers the test chooses, at `/{mode}`:
/// `good` (a session, then tool results), `slow` (3 s), `html` (not
/// JSON-RPC), `sse-garbage` (an event stream that closes unanswered).
async fn fake_upstream() -> String {
    use axum::extract::Path;
    use axum::response::IntoResponse;
    async fn answer(
        Path(mode): Path<String>,
        h: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = msg["id"].clone();
        match mode.as_str() {
            "good" => {
                if msg["method"] == "initialize" {
                    return (
                        [
                            ("mcp-session-id", "upstream-session-1"),
                            ("content-type", "application/json"),
                        ],
                        json!({ "jsonrpc": "2.0", "id": id, "result": {
                            "protocolVersion": "2025-06-18", "capabilities": { "tools": {} },
                            "serverInfo": { "name": "fake", "version": "1" } } })
                        .to_string(),
                    )
                        .into_response();
                }
                // The 2026 routing header, where sent, names the body's method.
                if h.get("mcp-method")
                    .is_some_and(|v| msg["method"] != v.to_str().unwrap())
                {
                    return (axum::http::StatusCode::BAD_REQUEST, "mcp-method mismatch")
                        .into_response();
                }
                if h.get("mcp-session-id").and_then(|v| v.to_str().ok())
                    != Some("upstream-session-1")
                {
                    return (axum::http::StatusCode::BAD_REQUEST, "no session").into_response();
                }
                if msg["method"] == "tools/list" {
                    return axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": { "tools": [
                        { "name": "ok", "inputSchema": { "type": "object" } },
                        { "name": "hidden", "inputSchema": { "type": "object" } } ] } }))
                    .into_response();
                }
                axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "content": [{ "type": "text", "text": "fine" }] } }))
                .into_response()
            }
            "theirs" => axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "serverInfo": { "name": "theirs", "version": "1" } } }))
            .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": {} })).into_response()
            }
            "html" => ([("content-type", "text/html")], "<html>oops</html>").into_response(),
            _ => (
                [("content-type", "text/event-stream")],
                "event: message\ndata: {not json\n\n",
            )
                .into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let app = axum::Router::new().route("/{mode}", axum::routing::post(answer));
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://127.0.0.1:{port}")
}

/// An upstream that is down, slower than its timeout or malformed gives
/// the client a JSON-RPC error for its request that names the server and
/// the failure, while the gateway goes on serving the others.
async fn upstream_failures_are_json_rpc_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    let fake = fake_upstream().await;
    let down = format!("http://127.0.0.1:{}/mcp", free_port());
    let servers = [
        ("good", format!("{fake}/good")),
        ("slow", format!("{fake}/slow")),
        ("html", format!("{fake}/html")),
        ("garbage", format!("{fake}/sse-garbage")),
        ("down", down),
    ];
    for (name, url) in &servers {
        app.ok(
            &owner,
            "save_mcp_server",
            &server_form(&org, name, url, "500"),
        )
        .await;
    }
    app.ok(
        &owner,
        "set_project_mcp",
        &[
            ("org_id", &org),
            ("project_id", &project),
            ("mcp", "good: ok\nslow\nhtml\ngarbage\ndown"),
        ],
    )
    .await;
    // Content logging on: a tool call's arguments and result are kept.
    app.ok(
        &owner,
        "update_spending",
        &[
            ("org_id", &org),
            ("spend_cap", ""),
            ("spend_cap_reset", "monthly"),
            ("content_logging", "on"),
        ],
    )
    .await;
    let (_, key) = app.create_key(&owner, &org, &project, &[]).await;
    app.feed_caught_up().await;
    let at = |s: &str| format!("{}/mcp/{s}", app.url);

    // The slow server's call and the good server's at once: the good one
    // answers, the slow one times out.
    let good_url = at("good");
    let (st, h, init) = rpc(&good_url, &key, None, initialize()).await;
    assert_eq!(st, 200, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "fake");
    let session = h["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(session.starts_with("v1:") && !session.contains("upstream-session-1"));
    let slow_url = at("slow");
    let started = Instant::now();
    let (slow, good) = tokio::join!(
        rpc(&slow_url, &key, None, call_tool(7, "wait")),
        rpc(&good_url, &key, Some(&session), call_tool(8, "ok")),
    );
    assert_eq!(good.2["result"]["content"][0]["text"], "fine", "{}", good.2);
    assert_eq!(slow.0, 200);
    assert_eq!(slow.2["id"], 7, "{}", slow.2);
    assert_eq!(slow.2["error"]["code"], -32001);
    assert_eq!(slow.2["error"]["data"]["rule"], "upstream_timeout");
    assert!(
        slow.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'slow' did not answer within 500 ms"),
        "{}",
        slow.2
    );
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the timeout held"
    );

    for (server, id, code, rule, says) in [
        (
            "html",
            9,
            -32603,
            "upstream_malformed",
            "not a JSON-RPC message",
        ),
        (
            "garbage",
            10,
            -32000,
            "upstream_closed",
            "closed the stream without answering",
        ),
        (
            "down",
            11,
            -32000,
            "upstream_unreachable",
            "could not be connected to",
        ),
    ] {
        let (st, _, body) = rpc(&at(server), &key, None, call_tool(id, "x")).await;
        assert_eq!(st, 200, "{server}: {body}");
        assert_eq!(body["id"], id, "{server}: {body}");
        assert_eq!(body["error"]["code"], code, "{server}: {body}");
        assert_eq!(body["error"]["data"]["rule"], rule, "{server}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("'{server}'")) && message.contains(says),
            "{body}"
        );
    }

    // tools/list shows only the granted tool; `hidden` is refused by name.
    let (_, _, list) = rpc(
        &good_url,
        &key,
        Some(&session),
        json!({ "jsonrpc": "2.0", "id": 12, "method": "tools/list" }),
    )
    .await;
    assert_eq!(
        list["result"]["tools"],
        json!([{ "name": "ok", "inputSchema": { "type": "object" } }])
    );
    let (_, _, hidden) = rpc(&good_url, &key, Some(&session), call_tool(13, "hidden")).await;
    assert_eq!(
        hidden["error"]["message"],
        "the project does not allow the tool 'hidden' of the MCP server 'good'"
    );
    // A session is bound to its server and key: elsewhere it is unknown (404).
    let (_, other) = app.create_key(&owner, &org, &project, &[]).await;
    app.feed_caught_up().await;
    let (st, _, _) = rpc(&good_url, &other, Some(&session), call_tool(14, "ok")).await;
    assert_eq!(st, 404);
    let (st, _, _) = rpc(&good_url, &key, Some("v1:forged"), call_tool(15, "ok")).await;
    assert_eq!(st, 404);
    // The routing headers reach the server; one that names another tool
    // than the body is refused.
    let with = |name: &'static str, tool: &'static str| {
        reqwest::Client::new()
            .post(&good_url)
            .bearer_auth(&key)
            .header("mcp-session-id", &session)
            .header("mcp-method", "tools/call")
            .header(name, tool)
            .json(&call_tool(16, "ok"))
            .send()
    };
    let fine: Value = with("mcp-name", "ok").await.unwrap().json().await.unwrap();
    assert_eq!(fine["result"]["content"][0]["text"], "fine", "{fine}");
    let sneaky: Value = with("mcp-name", "hidden")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sneaky["error"]["code"], -32020, "{sneaky}");

    // Twice the routing header, or one naming another method: refused.
    let twice: Value = reqwest::Client::new()
        .post(&good_url)
        .bearer_auth(&key)
        .header("mcp-session-id", &session)
        .header("mcp-name", "ok")
        .header("mcp-name", "hidden")
        .json(&call_tool(17, "ok"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(twice["error"]["code"], -32020, "{twice}");
    let other_method: Value = with("mcp-method", "tools/list")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other_method["error"]["code"], -32020, "{other_method}");
    // What another decoder could read differently is refused: a member
    // JSON-RPC does not have (Go matches `ID` to `id`), a params member that
    // differs from one the gateway reads only in case, a "notification"
    // that is not one; tasks are not passed on (an upstream shares them
    // between keys).
    for (message, status, rule) in [
        (
            json!({ "jsonrpc": "2.0", "ID": 18, "method": "tools/call", "params": { "name": "hidden" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "jsonrpc": "2.0", "id": 19, "method": "tools/call", "params": { "name": "ok", "Name": "hidden" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "jsonrpc": "2.0", "id": 20, "method": "tools/call", "params": { "name": "ok", "na\u{17F}me": "x" } }),
            200,
            "ok",
        ),
        (
            json!({ "jsonrpc": "2.0", "method": "tools/call", "params": { "name": "hidden" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "jsonrpc": "2.0", "id": 21, "method": "tasks/list" }),
            200,
            "tasks_not_supported",
        ),
        (
            json!({ "jsonrpc": "2.0", "id": 22, "method": "tools/call", "params": { "name": "ok", "task": {} } }),
            200,
            "tasks_not_supported",
        ),
    ] {
        let (st, _, body) = rpc(&good_url, &key, Some(&session), message.clone()).await;
        assert_eq!(st, status, "{message}: {body}");
        if rule == "ok" {
            assert_eq!(
                body["result"]["content"][0]["text"], "fine",
                "{message}: {body}"
            );
        } else {
            assert_eq!(body["error"]["data"]["rule"], rule, "{message}: {body}");
        }
    }

    // Garbage in: JSON-RPC errors that say what is wrong.
    let res = reqwest::Client::new()
        .post(&good_url)
        .bearer_auth(&key)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700, "{body}");
    let (st, _, body) = rpc(&good_url, &key, Some(&session), json!([call_tool(1, "ok")])).await;
    assert_eq!(
        (st, body["error"]["data"]["rule"].as_str()),
        (400, Some("batch_not_supported"))
    );

    let rows = ledger(&app).await;
    let mut conn = app.sql().await;
    let bodies: Vec<(String, String)> =
        sqlx::query_as("SELECT request_body, response_body FROM request_logs")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(
        bodies
            .iter()
            .any(|(req, res)| req.contains(r#""name":"ok""#) && res.contains("fine")),
        "{bodies:?}"
    );
    let statuses: Vec<(String, i64, Option<String>)> = rows;
    for want in [
        ("slow/wait", 504, Some("upstream_timeout")),
        ("good/ok", 200, None),
        ("html/x", 502, Some("upstream_malformed")),
        ("garbage/x", 502, Some("upstream_closed")),
        ("down/x", 502, Some("upstream_unreachable")),
        ("good/hidden", 403, Some("tool_not_allowed")),
    ] {
        assert!(
            statuses
                .iter()
                .any(|r| r.0 == want.0 && r.1 == want.1 && r.2.as_deref() == want.2),
            "{want:?} not in {statuses:?}"
        );
    }
}
both!(upstream_failures_are_json_rpc_errors);

/// Owners only register servers; project admins choose their project's;
/// a key's holder narrows it; nobody reaches another organization's.
async fn who_may_manage_mcp_servers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    let fake = fake_upstream().await;
    let good = format!("{fake}/good");
    app.ok(
        &owner,
        "save_mcp_server",
        &server_form(&org, "tools", &good, ""),
    )
    .await;
    let [admin, member, billing, viewer] = app
        .add_members(
            &owner,
            &org,
            [
                ("admin@a.test", "member"),
                ("m@a.test", "member"),
                ("b@a.test", "billing"),
                ("v@a.test", "viewer"),
            ],
        )
        .await;
    for (who, role) in [(&admin, "admin"), (&member, "member")] {
        let id = app.user_id(who).await;
        app.ok(
            &owner,
            "add_project_member",
            &[
                ("org_id", &org),
                ("project_id", &project),
                ("user_id", &id),
                ("role", role),
            ],
        )
        .await;
    }
    let (stranger, other_org) = app.outside_owner(&owner, &org, "s@b.test", "Other").await;
    let save = server_form(&org, "tools", "https://evil.example/mcp", "");
    let delete = [("org_id", org.as_str()), ("name", "tools")];
    let list = [("org_id", org.as_str())];
    for (who, status) in [
        (&admin, 403),
        (&member, 403),
        (&billing, 403),
        (&viewer, 403),
        (&stranger, 404),
    ] {
        for (name, form) in [
            ("save_mcp_server", save.clone()),
            ("delete_mcp_server", delete.to_vec()),
            ("list_mcp_servers", list.to_vec()),
        ] {
            let (st, body) = app.call(who, name, &form).await;
            assert_eq!(st, status, "{name}: {body}");
        }
    }
    let servers = app.ok(&owner, "list_mcp_servers", &list).await;
    assert_eq!(servers[0]["url"], good, "nothing changed: {servers}");

    // A project admin chooses the project's servers; members, viewers,
    // billing managers and other organizations cannot.
    let choose = [
        ("org_id", org.as_str()),
        ("project_id", project.as_str()),
        ("mcp", "tools"),
    ];
    for (who, status) in [
        (&member, 403),
        (&viewer, 403),
        (&billing, 403),
        (&stranger, 404),
    ] {
        let (st, body) = app.call(who, "set_project_mcp", &choose).await;
        assert_eq!(st, status, "{body}");
        let (st, _) = app
            .call(
                who,
                "project_mcp",
                &[("org_id", &org), ("project_id", &project)],
            )
            .await;
        assert_eq!(st, status);
    }
    let chosen = app.ok(&admin, "set_project_mcp", &choose).await;
    assert_eq!(
        chosen,
        json!({ "servers": ["tools"], "grants": "tools", "inherited": false })
    );
    // Bad input names the field.
    for (field, form) in [
        (
            "mcp",
            vec![
                ("org_id", org.as_str()),
                ("project_id", project.as_str()),
                ("mcp", "nope"),
            ],
        ),
        (
            "mcp",
            vec![
                ("org_id", org.as_str()),
                ("project_id", project.as_str()),
                ("mcp", "tools: a b/c"),
            ],
        ),
    ] {
        app.bad_field(&admin, "set_project_mcp", &form, field).await;
    }
    for (field, value) in [
        ("name", "has space"),
        ("url", "ftp://x"),
        ("transport", "sse"),
        ("timeout_ms", "5"),
        ("credential_header", "Host"),
        ("tools", "a/b"),
    ] {
        let mut f = server_form(&org, "x", "https://x.example/mcp", "");
        f.retain(|(k, _)| *k != field);
        f.push((field, value));
        app.bad_field(&owner, "save_mcp_server", &f, field).await;
    }

    // A member narrows their own key; not another's, and no stranger any.
    let (mine, _) = app.create_key(&member, &org, &project, &[]).await;
    let (admins, _) = app.create_key(&admin, &org, &project, &[]).await;
    app.ok(
        &member,
        "set_key_mcp",
        &[("org_id", &org), ("key_id", &mine), ("mcp", "none")],
    )
    .await;
    let (st, _) = app
        .call(
            &member,
            "set_key_mcp",
            &[("org_id", &org), ("key_id", &admins), ("mcp", "none")],
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = app
        .call(
            &stranger,
            "set_key_mcp",
            &[("org_id", &other_org), ("key_id", &mine), ("mcp", "none")],
        )
        .await;
    assert_eq!(st, 404);

    // The stranger's own server of the same name is theirs alone: their key
    // reaches it, ours does not see it, and our server is not theirs.
    let their_url = format!("{fake}/theirs");
    let theirs = server_form(&other_org, "tools", &their_url, "");
    app.ok(&stranger, "save_mcp_server", &theirs).await;
    let listed = app
        .ok(&stranger, "list_mcp_servers", &[("org_id", &other_org)])
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["projects"], json!([]), "{listed}");
    let their_project = app.create_project(&stranger, &other_org, "Theirs").await;
    let (_, their_key) = app
        .create_key(&stranger, &other_org, &their_project, &[])
        .await;
    app.feed_caught_up().await;
    let (st, _, body) = rpc(
        &format!("{}/mcp/tools", app.url),
        &their_key,
        None,
        initialize(),
    )
    .await;
    assert_eq!(
        (st, body["error"]["data"]["rule"].as_str()),
        (403, Some("mcp_server_not_allowed")),
        "their project has no grant of their server: {body}"
    );
    app.ok(
        &stranger,
        "set_project_mcp",
        &[
            ("org_id", &other_org),
            ("project_id", &their_project),
            ("mcp", "tools"),
        ],
    )
    .await;
    let (_, our_key) = app.create_key(&owner, &org, &project, &[]).await;
    app.feed_caught_up().await;
    // The same path answers each key from its own organization's server.
    let (_, _, body) = rpc(
        &format!("{}/mcp/tools", app.url),
        &their_key,
        None,
        initialize(),
    )
    .await;
    assert_eq!(body["result"]["serverInfo"]["name"], "theirs", "{body}");
    let (_, _, body) = rpc(
        &format!("{}/mcp/tools", app.url),
        &our_key,
        None,
        initialize(),
    )
    .await;
    assert_eq!(body["result"]["serverInfo"]["name"], "fake", "{body}");
    for (name, form) in [
        (
            "set_project_mcp",
            vec![
                ("org_id", other_org.as_str()),
                ("project_id", project.as_str()),
                ("mcp", "tools"),
            ],
        ),
        (
            "project_mcp",
            vec![
                ("org_id", other_org.as_str()),
                ("project_id", project.as_str()),
            ],
        ),
        (
            "key_mcp",
            vec![("org_id", other_org.as_str()), ("key_id", mine.as_str())],
        ),
    ] {
        let (st, body) = app.call(&stranger, name, &form).await;
        assert_eq!(
            st, 404,
            "{name}: our project or key through their organization: {body}"
        );
    }
    // Deleting the server takes it out of the projects that named it.
    app.ok(&owner, "delete_mcp_server", &delete).await;
    let after = app
        .ok(
            &owner,
            "project_mcp",
            &[("org_id", &org), ("project_id", &project)],
        )
        .await;
    assert_eq!(after["grants"], "", "{after}");
    let still = app
        .ok(&stranger, "list_mcp_servers", &[("org_id", &other_org)])
        .await;
    assert_eq!(still.as_array().unwrap().len(), 1, "theirs stays");
}
both!(who_may_manage_mcp_servers);

/// A session opened on instance A goes on on instance B (the session id is
/// sealed, not stored); the server removed on A is refused on B at the
/// next message (two real processes on one PostgreSQL database).
#[test]
fn an_mcp_session_moves_between_instances_and_ends_with_its_server() {
    crate::helpers::run(async {
        sqlx::any::install_default_drivers();
        let db = TestDb::new(Backend::Postgres).await;
        let a = Binary::start(&db, &[]).await;
        let b = Binary::start(&db, &[]).await;
        let o = Console::set_up(&a.url).await;
        let fake = fake_upstream().await;
        let good = format!("{fake}/good");
        o.call("save_mcp_server", &server_form(&o.org, "tools", &good, ""))
            .await;
        o.call(
            "set_project_mcp",
            &[
                ("org_id", &o.org),
                ("project_id", &o.project),
                ("mcp", "tools"),
            ],
        )
        .await;
        let (_, key) = o.key(&[]).await;
        let on = |url: &str| format!("{url}/mcp/tools");
        let (st, h, _) = rpc(&on(&a.url), &key, None, initialize()).await;
        assert_eq!(st, 200);
        let session = h["mcp-session-id"].to_str().unwrap().to_owned();
        // B learns of the key, server and grant through the change feed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let (st, _, body) = rpc(&on(&b.url), &key, Some(&session), call_tool(1, "ok")).await;
            if st == 200 || Instant::now() > deadline {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(body["result"]["content"][0]["text"], "fine", "{body}");
        o.call(
            "delete_mcp_server",
            &[("org_id", &o.org), ("name", "tools")],
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (st, body) = loop {
            let (st, _, body) = rpc(&on(&b.url), &key, Some(&session), call_tool(2, "ok")).await;
            if st != 200 || Instant::now() > deadline {
                break (st, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            (st, body["error"]["data"]["rule"].as_str()),
            (404, Some("mcp_server_not_found")),
            "{body}"
        );
    });
}
