//! The MCP gateway on `/mcp/{server}`: an organization's registered MCP
//! servers (Streamable HTTP) behind Tollgate keys. Each message is checked
//! from memory, like `/v1`: the key (revoked, expired), the project's IP
//! allowlist, whether the project and the key may use the server and, for
//! `tools/call`, the tool. `tools/list` answers list only what the key may
//! call; everything else (`initialize`, `resources/*`, `prompts/*`,
//! notifications, the server's own requests) passes through unchanged, and
//! streamed answers pass through as they arrive. Each tool call counts
//! against the key's RPM and is written to the usage ledger.
//!
//! Refusals of a request the client sent are JSON-RPC errors (HTTP 200)
//! that name the rule; so are an upstream that is down, slow past the
//! server's timeout or malformed. A key that fails (401) or a server it
//! may not use (403) is refused before the body is read.

mod session;
mod sse;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use rmcp::model::{
    CallToolRequestParams, ErrorCode, ErrorData, JsonRpcError, JsonRpcMessage, RequestId,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_app::core::mcp::{Grant, Server, Upstream};
use tollgate_app::core::usage::{ContentLog, UsageEvent};
use tracing::Instrument;

use crate::proxy::counters::Admission;
use crate::proxy::error::ProxyError;
use crate::proxy::memory::Caller;
use crate::proxy::Gateway;
use session::Session;

/// The routes under `/mcp` (for the router walk and the auth layer).
pub const PATHS: &[&str] = &["/mcp/{server}"];
pub const ROOT: &str = "mcp";

/// The ledger's endpoint for a tool call.
const ENDPOINT: &str = "mcp.tools/call";

/// The largest message a client sends, and an upstream's JSON answer.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// How often an open stream checks that its key and server still hold.
const RECHECK: Duration = Duration::from_secs(5);

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const NAME: HeaderName = HeaderName::from_static("mcp-name");
const METHOD: HeaderName = HeaderName::from_static("mcp-method");
const LAST_EVENT: HeaderName = HeaderName::from_static("last-event-id");

/// A server as the gateway calls it.
pub struct McpUpstream {
    pub server: Server,
    pub url: Option<reqwest::Url>,
    credential: Option<(HeaderName, HeaderValue)>,
}

/// An organization's servers by name, their URLs and credentials ready.
pub fn entries(list: Vec<Upstream>) -> HashMap<String, Arc<McpUpstream>> {
    list.into_iter()
        .map(|u| {
            let credential = u.credential.and_then(|c| {
                let name = HeaderName::from_bytes(u.server.credential_header.as_bytes()).ok()?;
                let mut value = HeaderValue::from_str(c.expose_secret()).ok()?;
                value.set_sensitive(true);
                Some((name, value))
            });
            let url = reqwest::Url::parse(&u.server.url).ok();
            let e = McpUpstream {
                server: u.server,
                url,
                credential,
            };
            (e.server.name.clone(), Arc::new(e))
        })
        .collect()
}

/// The gateway's HTTP client (no redirects: a server answers where it was
/// registered) and the secret that seals session ids.
pub struct McpClient {
    http: reqwest::Client,
    allow_private: bool,
    secret: Arc<SecretString>,
}

impl McpClient {
    pub fn new(
        connect: Duration,
        allow_private: bool,
        secret: Arc<SecretString>,
    ) -> Result<McpClient, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(connect)
            .tcp_nodelay(true);
        let http = crate::net_guard::guard(builder, allow_private)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(McpClient {
            http,
            allow_private,
            secret,
        })
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/mcp/{server}",
            post(message)
                .get(open_stream)
                .delete(end_session)
                .fallback(method_not_allowed),
        )
        .with_state(gw)
}

type Peer = ConnectInfo<SocketAddr>;

/// The parts of a JSON-RPC request or notification the gateway reads.
#[derive(Deserialize)]
struct Call {
    method: String,
    #[serde(default)]
    params: Option<Value>,
}

type Message = JsonRpcMessage<Call, Value, Call>;

/// A JSON-RPC error answer.
fn rpc_error(id: Option<RequestId>, code: ErrorCode, message: String, rule: &str) -> Value {
    let e = JsonRpcError::new(
        id,
        ErrorData::new(code, message, Some(json!({ "rule": rule }))),
    );
    serde_json::to_value(e).unwrap_or(Value::Null)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A refusal before the message was read: its HTTP status, and the rule
/// as a JSON-RPC error without an id.
fn refusal(e: ProxyError) -> Response {
    let code = match e.status {
        StatusCode::UNAUTHORIZED => ErrorCode(-32001),
        StatusCode::NOT_FOUND => ErrorCode::RESOURCE_NOT_FOUND,
        _ => ErrorCode::INVALID_REQUEST,
    };
    let mut res = json_response(e.status, &rpc_error(None, code, e.message, e.code));
    if e.status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate\""),
        );
    }
    res
}

async fn method_not_allowed() -> Response {
    let mut res = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &rpc_error(
            None,
            ErrorCode::INVALID_REQUEST,
            "an MCP endpoint takes POST (messages), GET (the server's stream) and DELETE (end a session)".into(),
            "method_not_allowed",
        ),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    res
}

/// What the project, then the key, grant of `server` (403 naming which
/// does not).
fn grants<'c>(
    caller: &'c Caller,
    server: &str,
) -> Result<(&'c Grant, Option<&'c Grant>), ProxyError> {
    let project = caller
        .project
        .project
        .mcp
        .iter()
        .find(|g| g.server == server)
        .ok_or_else(|| {
            ProxyError::forbidden(
                "mcp_server_not_allowed",
                format!("the project does not allow the MCP server '{server}'"),
            )
        })?;
    let key = match caller.key.mcp() {
        None => None,
        Some(list) => Some(list.iter().find(|g| g.server == server).ok_or_else(|| {
            ProxyError::forbidden(
                "mcp_server_not_allowed",
                format!("this API key does not allow the MCP server '{server}'"),
            )
        })?),
    };
    Ok((project, key))
}

/// Whether the key may call `tool` of `up`: `None`, or the rule and why not.
fn tool_refusal(caller: &Caller, up: &McpUpstream, tool: &str) -> Option<(&'static str, String)> {
    let name = &up.server.name;
    if up
        .server
        .tools
        .as_ref()
        .is_some_and(|t| !t.iter().any(|x| x == tool))
    {
        return Some((
            "tool_not_exposed",
            format!(
                "the organization does not expose the tool '{tool}' of the MCP server '{name}'"
            ),
        ));
    }
    let (project, key) = match grants(caller, name) {
        Ok(g) => g,
        Err(e) => return Some((e.code, e.message)),
    };
    if !project.allows(tool) {
        return Some((
            "tool_not_allowed",
            format!("the project does not allow the tool '{tool}' of the MCP server '{name}'"),
        ));
    }
    if key.is_some_and(|k| !k.allows(tool)) {
        return Some((
            "tool_not_allowed",
            format!("this API key does not allow the tool '{tool}' of the MCP server '{name}'"),
        ));
    }
    None
}

/// Whether a tool in a `tools/list` answer is one the key may call.
fn lists(caller: &Caller, up: &McpUpstream, tool: &Value) -> bool {
    tool.get("name")
        .and_then(Value::as_str)
        .is_some_and(|t| tool_refusal(caller, up, t).is_none())
}

/// The caller and the server, checked: the key, the project's IP
/// allowlist, the server registered and allowed to the project and key.
fn admit(
    gw: &Gateway,
    peer: SocketAddr,
    h: &HeaderMap,
    name: &str,
) -> Result<(Caller, Arc<McpUpstream>), ProxyError> {
    let caller = crate::proxy::admit_caller(gw, peer, h)?;
    let up = caller.org.mcp.get(name).cloned().ok_or_else(|| {
        ProxyError::not_found(
            "mcp_server_not_found",
            "server",
            format!("this organization has no MCP server '{name}'"),
        )
    })?;
    grants(&caller, name)?;
    Ok((caller, up))
}

/// A session id this server did not seal, or sealed for another key or
/// server: 404, so that the client starts a new session (as the protocol
/// says).
struct UnknownSession;

impl IntoResponse for UnknownSession {
    fn into_response(self) -> Response {
        json_response(
            StatusCode::NOT_FOUND,
            &rpc_error(
                None,
                ErrorCode::INVALID_REQUEST,
                "the MCP session is not known here; initialize a new one".into(),
                "mcp_session_not_found",
            ),
        )
    }
}

/// The client's session, opened: the upstream's id, if the client holds
/// one that this key and server own.
fn upstream_session(
    gw: &Gateway,
    h: &HeaderMap,
    caller: &Caller,
    up: &McpUpstream,
) -> Result<Option<String>, UnknownSession> {
    let server = up.server.name.as_str();
    let Some(raw) = h.get(SESSION) else {
        return Ok(None);
    };
    let s = raw
        .to_str()
        .ok()
        .and_then(|v| Session::open(&gw.mcp.secret, v))
        .ok_or(UnknownSession)?;
    if s.org != caller.key.org_id()
        || s.server != server
        || s.key_id != caller.key.id.to_string()
        || s.url != up.server.url
    {
        return Err(UnknownSession);
    }
    Ok(Some(s.upstream))
}

/// [`admit`], then the client's session opened: a refusal as its answer.
fn admit_in_session(
    gw: &Gateway,
    peer: SocketAddr,
    h: &HeaderMap,
    name: &str,
) -> Result<(Caller, Arc<McpUpstream>, Option<String>), Box<Response>> {
    let (caller, up) = admit(gw, peer, h, name).map_err(|e| Box::new(refusal(e)))?;
    let session = upstream_session(gw, h, &caller, &up).map_err(|e| Box::new(e.into_response()))?;
    Ok((caller, up, session))
}

/// The request to the upstream with the headers it should get: never the
/// client's Authorization, Host or Origin; the registered credential.
fn upstream_request(
    gw: &Gateway,
    up: &McpUpstream,
    method: reqwest::Method,
    h: &HeaderMap,
    session: Option<&str>,
) -> Result<reqwest::RequestBuilder, String> {
    let name = &up.server.name;
    let url = up
        .url
        .clone()
        .ok_or_else(|| format!("the MCP server '{name}' has a URL that does not parse"))?;
    if !gw.mcp.allow_private && crate::net_guard::is_private_literal(&url) {
        return Err(format!(
            "the MCP server '{name}' is on a private network address, which this server does not call (allow_private_networks)"
        ));
    }
    let mut rb = gw
        .mcp
        .http
        .request(method, url)
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(s) = session {
        rb = rb.header(SESSION, s);
    }
    // The protocol's own headers (`MCP-Protocol-Version`, and the 2026
    // routing headers `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` that a server
    // checks against the body) and `Last-Event-ID`; the session is mapped.
    for (name, v) in h {
        let n = name.as_str();
        if (n.starts_with("mcp-") && name != SESSION) || name == LAST_EVENT {
            rb = rb.header(name.clone(), v.clone());
        }
    }
    if let Some((n, v)) = &up.credential {
        rb = rb.header(n.clone(), v.clone());
    }
    Ok(rb)
}

/// One tool call's facts, written to the ledger once, when its answer is
/// known (or the client left before it).
struct ToolCall {
    gw: Arc<Gateway>,
    caller: Caller,
    server: String,
    tool: String,
    request_id: String,
    at: i64,
    started: Instant,
    stream: bool,
    /// The request's body, where content logging allows it.
    logged: Option<(String, bool)>,
    done: bool,
}

impl ToolCall {
    fn record(&mut self, status: u16, error: Option<&str>, answer: Option<&str>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let k = &self.caller.key;
        // What a client names is bounded before it is kept; the metric's
        // label is the server (registered, so few), not the tool.
        let tool: String = self.tool.chars().take(128).collect();
        let model = format!("{}/{tool}", self.server);
        self.gw
            .metrics
            .request(ENDPOINT, &format!("mcp:{}", self.server), status);
        self.gw.ledger.record(UsageEvent {
            request_id: self.request_id.clone(),
            at: self.at,
            org_id: k.org_id().to_owned(),
            project_id: k.project_id().to_owned(),
            key_id: k.id.to_string(),
            requested_model: model.clone(),
            model,
            provider: format!("mcp:{}", self.server),
            endpoint: ENDPOINT,
            stream: self.stream,
            tokens_in: 0,
            tokens_out: 0,
            cost_micros: 0,
            status: i64::from(status),
            error_code: error.map(str::to_owned),
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            prompt_id: String::new(),
            prompt_version: 0,
        });
        if let Some((request, cut)) = &self.logged {
            let max = self.gw.content_log_max_bytes();
            let (response, res_cut) = crate::proxy::truncate(answer.unwrap_or("").as_bytes(), max);
            self.gw.ledger.record_content(ContentLog {
                request_id: self.request_id.clone(),
                at: self.at,
                org_id: k.org_id().to_owned(),
                project_id: k.project_id().to_owned(),
                key_id: k.id.to_string(),
                request_body: request.clone(),
                response_body: response,
                truncated: *cut || res_cut,
            });
        }
    }

    /// Records the upstream's answer to the call: a JSON-RPC error, a
    /// result with `isError`, or a result.
    fn answered(&mut self, answer: &Value, text: &str) {
        if answer.get("error").is_some() {
            self.record(502, Some("mcp_error"), Some(text));
        } else if answer
            .pointer("/result/isError")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            self.record(200, Some("tool_error"), Some(text));
        } else {
            self.record(200, None, Some(text));
        }
    }
}

impl Drop for ToolCall {
    fn drop(&mut self) {
        // The client went away before the answer.
        self.record(499, Some("client_closed"), None);
    }
}

/// What the gateway does with the answer to the client's request.
enum Watch {
    /// `tools/list`: keep only the tools the key may call.
    List(Caller, Arc<McpUpstream>),
    /// `tools/call`: write it to the ledger.
    Tool(Box<ToolCall>),
    Other,
}

impl Watch {
    /// The answer as the client gets it.
    fn answer(&mut self, mut answer: Value, text: &str) -> Option<String> {
        match self {
            Watch::List(caller, up) => {
                if let Some(tools) = answer
                    .pointer_mut("/result/tools")
                    .and_then(Value::as_array_mut)
                {
                    tools.retain(|t| lists(caller, up, t));
                    return Some(answer.to_string());
                }
                None
            }
            Watch::Tool(call) => {
                call.answered(&answer, text);
                None
            }
            Watch::Other => None,
        }
    }

    fn failed(&mut self, status: u16, rule: &str) {
        if let Watch::Tool(call) = self {
            call.record(status, Some(rule), None);
        }
    }
}

/// A failure of the upstream for the request `id`: the client's JSON-RPC
/// error naming it, with the ledger's status and rule.
struct Failure {
    status: u16,
    rule: &'static str,
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn unreachable(server: &str, e: reqwest::Error) -> Failure {
        let why = if e.is_connect() {
            "could not be connected to"
        } else {
            "failed before it answered"
        };
        // Without the URL: a path or query may carry a token.
        tracing::warn!(server, error = %e.without_url(), "the MCP server failed");
        Failure {
            status: 502,
            rule: "upstream_unreachable",
            code: ErrorCode(-32000),
            message: format!("the MCP server '{server}' {why}"),
        }
    }

    fn timeout(server: &str, ms: i64) -> Failure {
        Failure {
            status: 504,
            rule: "upstream_timeout",
            code: ErrorCode(-32001),
            message: format!("the MCP server '{server}' did not answer within {ms} ms"),
        }
    }

    fn malformed(server: &str, what: &str) -> Failure {
        Failure {
            status: 502,
            rule: "upstream_malformed",
            code: ErrorCode::INTERNAL_ERROR,
            message: format!(
                "the MCP server '{server}' answered with {what}, not a JSON-RPC message"
            ),
        }
    }

    fn status(server: &str, status: u16) -> Failure {
        let message = match status {
            401 | 403 => format!("the MCP server '{server}' refused the gateway's credential ({status}); an owner can update it"),
            _ => format!("the MCP server '{server}' answered HTTP {status}"),
        };
        Failure {
            status: 502,
            rule: "upstream_error",
            code: ErrorCode(-32000),
            message,
        }
    }

    fn rpc(&self, id: Option<RequestId>) -> Value {
        rpc_error(id, self.code, self.message.clone(), self.rule)
    }
}

/// POST: one message from the client.
async fn message(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    Path(name): Path<String>,
    h: HeaderMap,
    body: Body,
) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "mcp",
        request_id = %request_id,
        server = %name,
        org = tracing::field::Empty,
        project = tracing::field::Empty,
        key_id = tracing::field::Empty,
    );
    let mut res = relay_message(gw, peer, name, h, body, request_id.clone())
        .instrument(span)
        .await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn relay_message(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    name: String,
    h: HeaderMap,
    body: Body,
    request_id: String,
) -> Response {
    let started = Instant::now();
    let at = tollgate_app::core::now_ms();
    let (caller, up) = match admit(&gw, peer, &h, &name) {
        Ok(x) => x,
        Err(e) => return refusal(e),
    };
    let raw = match read(&h, body).await {
        Ok(b) => b,
        Err(e) => return refusal(e),
    };
    let parse_error = |m: &str, rule: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(None, ErrorCode::PARSE_ERROR, m.to_owned(), rule),
        )
    };
    let Ok(value) = serde_json::from_slice::<Value>(&raw) else {
        return parse_error("the body is not JSON", "parse_error");
    };
    if value.is_array() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(
                None,
                ErrorCode::INVALID_REQUEST,
                "send one JSON-RPC message per request (MCP 2025-06-18 removed batches)".into(),
                "batch_not_supported",
            ),
        );
    }
    if let Some(why) = ambiguous(&value) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(None, ErrorCode::INVALID_REQUEST, why, "invalid_request"),
        );
    }
    // What the upstream gets is what the gateway read (a duplicate key is
    // sent once, as checked), not the client's bytes.
    let canonical = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    let Ok(msg) = Message::deserialize(&value) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(
                None,
                ErrorCode::INVALID_REQUEST,
                "the body is not a JSON-RPC 2.0 request, notification or response".into(),
                "invalid_request",
            ),
        );
    };
    let session = match upstream_session(&gw, &h, &caller, &up) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (id, method, params) = match msg {
        JsonRpcMessage::Request(r) => (Some(r.id), r.request.method, r.request.params),
        JsonRpcMessage::Notification(n) => (None, n.notification.method, None),
        JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_) => (None, String::new(), None),
    };
    if let Some(refused) = unsupported(&method, id.as_ref(), &h, &value) {
        return refused;
    }
    let mut watch = match (method.as_str(), &id) {
        ("tools/list", Some(_)) => Watch::List(caller.clone(), up.clone()),
        ("tools/call", Some(id)) => {
            let tool = params
                .and_then(|p| serde_json::from_value::<CallToolRequestParams>(p).ok())
                .map(|p| p.name.into_owned());
            let Some(tool) = tool else {
                return json_response(
                    StatusCode::OK,
                    &rpc_error(
                        Some(id.clone()),
                        ErrorCode::INVALID_PARAMS,
                        "tools/call needs params.name, the tool to call".into(),
                        "invalid_params",
                    ),
                );
            };
            let logs = caller.org.org.spending.content_logging
                && caller.project.project.content_logging
                && !caller.key.no_content_logging;
            let mut call = Box::new(ToolCall {
                gw: gw.clone(),
                caller: caller.clone(),
                server: name.clone(),
                tool: tool.clone(),
                request_id: request_id.clone(),
                at,
                started,
                stream: false,
                logged: logs
                    .then(|| crate::proxy::truncate(&canonical, gw.content_log_max_bytes())),
                done: false,
            });
            // The key's RPM first, refused calls too (and its budgets as they
            // stand: a tool call costs nothing itself).
            let admission = Admission {
                caller: &caller,
                tokens: 0,
                cost: 0,
                now: at,
            };
            match gw.counters.admit(admission).await {
                Ok((ticket, _)) => gw.counters.settle(ticket, 0, 0, at),
                Err(e) => {
                    call.record(e.status.as_u16(), Some(e.code), None);
                    return json_response(
                        StatusCode::OK,
                        &rpc_error(Some(id.clone()), ErrorCode(-32000), e.message, e.code),
                    );
                }
            }
            // A routing header that names another tool than the body is
            // refused: the gateway checks one name, the server must see it.
            if !one_header_is(&h, &NAME, &tool) {
                call.record(400, Some("header_mismatch"), None);
                return json_response(
                    StatusCode::OK,
                    &rpc_error(
                        Some(id.clone()),
                        ErrorCode::HEADER_MISMATCH,
                        "the Mcp-Name header does not name the tool in params.name".into(),
                        "header_mismatch",
                    ),
                );
            }
            if let Some((rule, why)) = tool_refusal(&caller, &up, &tool) {
                call.record(403, Some(rule), None);
                return json_response(
                    StatusCode::OK,
                    &rpc_error(Some(id.clone()), ErrorCode::INVALID_PARAMS, why, rule),
                );
            }
            Watch::Tool(call)
        }
        _ => Watch::Other,
    };
    let timeout_ms = up.server.timeout_ms;
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(30_000));
    let fail = |watch: &mut Watch, f: Failure| -> Response {
        watch.failed(f.status, f.rule);
        match &id {
            Some(id) => json_response(StatusCode::OK, &f.rpc(Some(id.clone()))),
            None => json_response(StatusCode::BAD_GATEWAY, &f.rpc(None)),
        }
    };
    let rb = match upstream_request(&gw, &up, reqwest::Method::POST, &h, session.as_deref()) {
        Ok(rb) => rb
            .header(header::CONTENT_TYPE, "application/json")
            .body(canonical),
        Err(m) => {
            return fail(
                &mut watch,
                Failure {
                    status: 502,
                    rule: "upstream_unreachable",
                    code: ErrorCode(-32000),
                    message: m,
                },
            )
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let upstream = match tokio::time::timeout_at(deadline, rb.send()).await {
        Err(_) => return fail(&mut watch, Failure::timeout(&name, timeout_ms)),
        Ok(Err(e)) => return fail(&mut watch, Failure::unreachable(&name, e)),
        Ok(Ok(r)) => r,
    };
    let status = upstream.status();
    let new_session = if method == "initialize" {
        upstream
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= session::MAX_UPSTREAM_ID)
            .and_then(|u| {
                Session {
                    org: caller.key.org_id().to_owned(),
                    server: name.clone(),
                    key_id: caller.key.id.to_string(),
                    url: up.server.url.clone(),
                    upstream: u.to_owned(),
                }
                .seal(&gw.mcp.secret)
            })
    } else {
        None
    };
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if status == StatusCode::ACCEPTED {
        if id.is_some() {
            return fail(
                &mut watch,
                Failure::malformed(&name, "202 Accepted to a request"),
            );
        }
        return StatusCode::ACCEPTED.into_response();
    }
    if status == StatusCode::NOT_FOUND && session.is_some() {
        watch.failed(404, "mcp_session_not_found");
        return json_response(
            StatusCode::NOT_FOUND,
            &rpc_error(
                None,
                ErrorCode::INVALID_REQUEST,
                format!("the MCP server '{name}' ended the session; initialize a new one"),
                "mcp_session_not_found",
            ),
        );
    }
    let mut res = if content_type.starts_with("text/event-stream") && status.is_success() {
        if let Watch::Tool(call) = &mut watch {
            call.stream = true;
        }
        let relay = Relay::new(
            upstream.bytes_stream(),
            id.clone(),
            watch,
            Some(timeout),
            timeout_ms,
            (caller.clone(), up.clone()),
            Liveness {
                gw: gw.clone(),
                key_id: caller.key.id.to_string(),
                server: name.clone(),
            },
        );
        let mut res = Response::new(Body::from_stream(relay.into_stream()));
        let hs = res.headers_mut();
        hs.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    } else {
        let text = match tokio::time::timeout_at(deadline, read_answer(upstream)).await {
            Err(_) => return fail(&mut watch, Failure::timeout(&name, timeout_ms)),
            Ok(Err(e)) => return fail(&mut watch, Failure::unreachable(&name, e)),
            Ok(Ok(None)) => {
                return fail(
                    &mut watch,
                    Failure::malformed(&name, &format!("more than {} MiB", ANSWER_LIMIT >> 20)),
                )
            }
            Ok(Ok(Some(t))) => t,
        };
        let parsed = serde_json::from_str::<Value>(&text)
            .ok()
            .filter(|v| Message::deserialize(v).is_ok());
        let Some(answer) = parsed else {
            if !status.is_success() {
                return fail(&mut watch, Failure::status(&name, status.as_u16()));
            }
            if id.is_none() && status.is_success() && text.trim().is_empty() {
                return StatusCode::ACCEPTED.into_response();
            }
            return fail(&mut watch, Failure::malformed(&name, "something"));
        };
        if !status.is_success() && answer.get("error").is_none() {
            return fail(&mut watch, Failure::status(&name, status.as_u16()));
        }
        let is_answer = matches!(
            Message::deserialize(&answer),
            Ok(JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_))
        );
        if id.is_some() && !is_answer {
            return fail(
                &mut watch,
                Failure::malformed(&name, "a message that is not an answer"),
            );
        }
        let out = watch.answer(answer, &text).unwrap_or(text);
        let mut res = Response::new(Body::from(out));
        *res.status_mut() = if status.is_success() {
            StatusCode::OK
        } else {
            status
        };
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    };
    if let Some(s) = new_session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        res.headers_mut().insert(SESSION, s);
    }
    res
}

/// The members a JSON-RPC message has, and those of a request's params
/// the gateway reads.
const MEMBERS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS: [&str; 3] = ["name", "arguments", "_meta"];

/// A key as a case-insensitive decoder (Go's) would match it: lower case,
/// with the Kelvin sign and the long s folded as Go folds them.
fn folded(k: &str) -> String {
    k.chars()
        .map(|c| match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Why a message could be read differently by the upstream than by the
/// gateway (`None`: it cannot): a member JSON-RPC does not have, or a
/// params member that is not one the gateway reads but folds to one.
fn ambiguous(v: &Value) -> Option<String> {
    let top = v.as_object()?;
    if let Some(k) = top.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Some(format!(
            "'{}' is not a member of a JSON-RPC message",
            k.chars().take(64).collect::<String>()
        ));
    }
    let params = top.get("params").and_then(Value::as_object)?;
    params
        .keys()
        .find(|k| !PARAMS.contains(&k.as_str()) && PARAMS.contains(&folded(k).as_str()))
        .map(|k| format!("params.{k} differs from params.{} only in case", folded(k)))
}

/// Whether the header `name` is absent, or present once with `expected`.
fn one_header_is(h: &HeaderMap, name: &HeaderName, expected: &str) -> bool {
    let mut all = h.get_all(name).iter();
    match (all.next(), all.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes() == expected.as_bytes(),
        (Some(_), Some(_)) => false,
    }
}

/// A message the gateway does not pass on, answered: a client notification
/// that is not one (`notifications/…`), a routing header that does not
/// name the body's method, and tasks (an upstream keeps one task list for
/// every key, so a key could read another's results).
fn unsupported(method: &str, id: Option<&RequestId>, h: &HeaderMap, v: &Value) -> Option<Response> {
    let refuse = |code: ErrorCode, message: &str, rule: &str| {
        let body = rpc_error(id.cloned(), code, message.to_owned(), rule);
        Some(match id {
            Some(_) => json_response(StatusCode::OK, &body),
            None => json_response(StatusCode::BAD_REQUEST, &body),
        })
    };
    if id.is_none() && !method.is_empty() && !method.starts_with("notifications/") {
        return refuse(
            ErrorCode::INVALID_REQUEST,
            "a notification's method starts with notifications/; send a request with an id",
            "invalid_request",
        );
    }
    if !method.is_empty() && !one_header_is(h, &METHOD, method) {
        return refuse(
            ErrorCode::HEADER_MISMATCH,
            "the Mcp-Method header does not name the method in the body",
            "header_mismatch",
        );
    }
    if method.starts_with("tasks/")
        || (method == "tools/call" && v.pointer("/params/task").is_some())
    {
        return refuse(
            ErrorCode::METHOD_NOT_FOUND,
            "tasks are not available through the gateway; call the tool and wait for its answer",
            "tasks_not_supported",
        );
    }
    None
}

/// The client's message, at most [`BODY_LIMIT`] bytes.
async fn read(h: &HeaderMap, body: Body) -> Result<Bytes, ProxyError> {
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ProxyError::too_large(
            "body",
            format!("an MCP message is at most {} MiB", BODY_LIMIT >> 20),
        )
    };
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| too_large())
}

/// An upstream's JSON answer as text (`None`: larger than [`ANSWER_LIMIT`]).
async fn read_answer(r: reqwest::Response) -> Result<Option<String>, reqwest::Error> {
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if buf.len().saturating_add(chunk.len()) > ANSWER_LIMIT {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Whether an answer's id is the request's (`1` and `"1"` alike, as
/// JSON-RPC peers often treat them).
fn same_id(a: &RequestId, b: &RequestId) -> bool {
    a == b || a.to_string() == b.to_string()
}

/// What an open stream checks again: the key still live and the server
/// still registered and allowed to it.
struct Liveness {
    gw: Arc<Gateway>,
    key_id: String,
    server: String,
}

impl Liveness {
    fn check(&self) -> Result<(), ProxyError> {
        let caller = self
            .gw
            .memory
            .caller_by_key_id(&self.key_id, tollgate_app::core::now_ms())?;
        if !caller.org.mcp.contains_key(&self.server) {
            return Err(ProxyError::not_found(
                "mcp_server_not_found",
                "server",
                format!("the MCP server '{}' was removed", self.server),
            ));
        }
        grants(&caller, &self.server).map(|_| ())
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// An upstream's event stream on its way to the client: whole events, the
/// answer to the client's request rewritten or recorded, Tollgate's own
/// error event where the upstream fails before answering.
struct Relay {
    upstream: ByteStream,
    split: sse::Splitter,
    out: VecDeque<Bytes>,
    /// The request whose answer is awaited (`None`: the server's stream).
    id: Option<RequestId>,
    watch: Watch,
    /// How long the upstream may be silent before the answer.
    idle: Option<Duration>,
    timeout_ms: i64,
    /// Whose `tools/list` answers are filtered, on every stream.
    filter: (Caller, Arc<McpUpstream>),
    /// Since when the upstream has sent no event with data.
    quiet_since: Instant,
    live: Liveness,
    done: bool,
}

impl Relay {
    fn new(
        upstream: impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
        id: Option<RequestId>,
        watch: Watch,
        idle: Option<Duration>,
        timeout_ms: i64,
        filter: (Caller, Arc<McpUpstream>),
        live: Liveness,
    ) -> Relay {
        Relay {
            upstream: Box::pin(upstream),
            split: sse::Splitter::default(),
            out: VecDeque::new(),
            id,
            watch,
            idle,
            timeout_ms,
            filter,
            quiet_since: Instant::now(),
            live,
            done: false,
        }
    }

    /// Ends the stream; a request still unanswered gets `f` as its answer.
    fn end(&mut self, f: Option<Failure>) {
        self.done = true;
        if let (Some(id), Some(f)) = (self.id.take(), f) {
            self.watch.failed(f.status, f.rule);
            self.out
                .push_back(sse::message(&f.rpc(Some(id)).to_string()));
        }
    }

    fn event(&mut self, event: Bytes) {
        let Some(data) = sse::data(&event) else {
            // A comment, a retry or an id alone: passed as it came.
            self.out.push_back(event);
            return;
        };
        self.quiet_since = Instant::now();
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            self.out.push_back(event);
            return;
        };
        // Any answer that lists tools, also one replayed on the server's
        // stream or sent twice, lists only the key's.
        let mut rewritten = None;
        if let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
            let (caller, up) = &self.filter;
            tools.retain(|t| lists(caller, up, t));
            rewritten = Some(v.to_string());
        }
        let answers = self.id.as_ref().is_some_and(|id| {
            matches!(Message::deserialize(&v), Ok(JsonRpcMessage::Response(ref r)) if same_id(&r.id, id))
                || matches!(Message::deserialize(&v), Ok(JsonRpcMessage::Error(ref e)) if e.id.as_ref().is_some_and(|e| same_id(e, id)))
        });
        if answers {
            self.id = None;
            let text = rewritten.clone().unwrap_or(data);
            if let Some(new) = self.watch.answer(v, &text) {
                rewritten = Some(new);
            }
        }
        self.out.push_back(match rewritten {
            Some(new) => sse::with_data(&event, &new),
            None => event,
        });
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.live.check() {
                self.end(Some(Failure {
                    status: e.status.as_u16(),
                    rule: e.code,
                    code: ErrorCode(-32001),
                    message: e.message,
                }));
                continue;
            }
            let wait = match (&self.id, self.idle) {
                (Some(_), Some(idle)) => idle.min(RECHECK),
                _ => RECHECK,
            };
            match tokio::time::timeout(wait, self.upstream.next()).await {
                Err(_) => {
                    let quiet = self.quiet_since.elapsed();
                    if self.id.is_some() && self.idle.is_some_and(|i| quiet >= i) {
                        let name = self.live.server.clone();
                        self.end(Some(Failure::timeout(&name, self.timeout_ms)));
                    }
                }
                Ok(Some(Ok(chunk))) => {
                    self.split.push(&chunk);
                    while let Some(e) = self.split.next_event() {
                        self.event(e);
                    }
                    if self.split.pending() > sse::MAX_EVENT {
                        let name = self.live.server.clone();
                        self.end(Some(Failure::malformed(
                            &name,
                            "an event of more than 16 MiB",
                        )));
                    }
                }
                Ok(Some(Err(e))) => {
                    let name = self.live.server.clone();
                    self.end(Some(Failure::unreachable(&name, e)));
                }
                Ok(None) => {
                    // An event cut short is dropped, as a client would.
                    self.split.rest();
                    let name = self.live.server.clone();
                    self.end(Some(Failure {
                        status: 502,
                        rule: "upstream_closed",
                        code: ErrorCode(-32000),
                        message: format!(
                            "the MCP server '{name}' closed the stream without answering"
                        ),
                    }));
                }
            }
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::unfold(
            self,
            |mut r| async move { r.next().await.map(|b| (Ok(b), r)) },
        )
    }
}

/// GET: the server's own stream (its requests and notifications), passed
/// through for as long as the key and the server hold.
async fn open_stream(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Response {
    let (caller, up, session) = match admit_in_session(&gw, peer, &h, &name) {
        Ok(x) => x,
        Err(res) => return *res,
    };
    let timeout = Duration::from_millis(u64::try_from(up.server.timeout_ms).unwrap_or(30_000));
    let fail = |f: Failure| json_response(StatusCode::BAD_GATEWAY, &f.rpc(None));
    let rb = match upstream_request(&gw, &up, reqwest::Method::GET, &h, session.as_deref()) {
        Ok(rb) => rb,
        Err(m) => {
            return json_response(
                StatusCode::BAD_GATEWAY,
                &rpc_error(None, ErrorCode(-32000), m, "upstream_unreachable"),
            )
        }
    };
    let upstream = match tokio::time::timeout(timeout, rb.send()).await {
        Err(_) => return fail(Failure::timeout(&name, up.server.timeout_ms)),
        Ok(Err(e)) => return fail(Failure::unreachable(&name, e)),
        Ok(Ok(r)) => r,
    };
    let status = upstream.status();
    let is_sse = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    if !status.is_success() || !is_sse {
        // 405: the server offers no stream of its own; 404: the session ended.
        let status = match status.as_u16() {
            404 | 405 => status,
            s if s < 400 => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_GATEWAY,
        };
        return json_response(
            status,
            &rpc_error(
                None,
                ErrorCode::INVALID_REQUEST,
                format!(
                    "the MCP server '{name}' offers no event stream here ({})",
                    upstream.status().as_u16()
                ),
                "no_stream",
            ),
        );
    }
    let relay = Relay::new(
        upstream.bytes_stream(),
        None,
        Watch::Other,
        None,
        up.server.timeout_ms,
        (caller.clone(), up.clone()),
        Liveness {
            gw: gw.clone(),
            key_id: caller.key.id.to_string(),
            server: name,
        },
    );
    let mut res = Response::new(Body::from_stream(relay.into_stream()));
    let hs = res.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// DELETE: the client ends its session (passed to the server).
async fn end_session(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Response {
    let (_, up, session) = match admit_in_session(&gw, peer, &h, &name) {
        Ok(x) => x,
        Err(res) => return *res,
    };
    let session = match session {
        Some(s) => s,
        None => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    None,
                    ErrorCode::INVALID_REQUEST,
                    "send the Mcp-Session-Id of the session to end".into(),
                    "mcp_session_missing",
                ),
            )
        }
    };
    let timeout = Duration::from_millis(u64::try_from(up.server.timeout_ms).unwrap_or(30_000));
    let Ok(rb) = upstream_request(&gw, &up, reqwest::Method::DELETE, &h, Some(&session)) else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    match tokio::time::timeout(timeout, rb.send()).await {
        Ok(Ok(r)) if r.status().is_success() => StatusCode::OK.into_response(),
        Ok(Ok(r)) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
            StatusCode::METHOD_NOT_ALLOWED.into_response()
        }
        Ok(Ok(r)) if r.status() == StatusCode::NOT_FOUND => StatusCode::NOT_FOUND.into_response(),
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}
