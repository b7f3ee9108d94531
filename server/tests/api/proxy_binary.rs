//! The proxy in the real binary: a key with content logging off leaves no
//! body in the database or the log (debug level), and SIGTERM under load
//! loses no usage event of an admitted request.

use crate::helpers::{Backend, Binary, Console, TestDb};
use serde_json::json;
use sqlx::Row;

/// A fresh database, the binary on it, and its first owner signed in.
async fn started(backend: Backend) -> (TestDb, Binary, Console) {
    sqlx::any::install_default_drivers();
    let db = TestDb::new(backend).await;
    let server = Binary::start(&db, &[]).await;
    let console = Console::set_up(&server.url).await;
    (db, server, console)
}

async fn chat(url: &str, token: &str, text: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({ "model": "mock/echo", "stream": stream,
            "messages": [{ "role": "user", "content": text }] }))
        .send()
        .await
        .unwrap()
}

async fn no_content_logging_leaves_no_body_anywhere(backend: Backend) {
    let (db, mut server, console) = started(backend).await;
    console
        .call(
            "update_spending",
            &[
                ("org_id", &console.org),
                ("spend_cap", ""),
                ("spend_cap_reset", "monthly"),
                ("content_logging", "on"),
            ],
        )
        .await;
    let (_, logged) = console.key(&[]).await;
    let (_, private) = console.key(&[("no_content_logging", "on")]).await;
    let kept = format!("kept-{}", uuid::Uuid::new_v4().simple());
    let secret = format!("private-{}", uuid::Uuid::new_v4().simple());
    for stream in [false, true] {
        let res = chat(&server.url, &logged, &format!("remember {kept}"), stream).await;
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains(&kept));
        let res = chat(&server.url, &private, &format!("forget {secret}"), stream).await;
        assert_eq!(res.status(), 200);
        assert!(
            res.text().await.unwrap().contains(&secret),
            "the answer echoes it"
        );
    }
    let res = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", server.url))
        .bearer_auth(&private)
        .json(&json!({ "model": "mock/embed", "input": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.stop(), Some(0));

    let log = server.log();
    assert!(log.contains("DEBUG"), "the log was written at debug level");
    let dump = crate::helpers::dump(&db).await;
    assert!(
        dump.contains(&kept),
        "the logged key's bodies are in the content log"
    );
    assert!(
        !dump.contains(&secret),
        "a body of the no-logging key is in the database"
    );
    assert!(
        !log.contains(&secret),
        "a body of the no-logging key is in the log"
    );
    assert!(!log.contains(&kept), "a prompt is in the log");
    for token in [&logged, &private] {
        let secret = &token[token.len() - 38..token.len() - 6];
        assert!(
            !log.contains(secret) && !dump.contains(secret),
            "a key's secret was stored or logged"
        );
    }
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM request_logs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 2, "one content log per request of the logged key");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(events, 5, "every request metered, logged or not");
}
both!(no_content_logging_leaves_no_body_anywhere);

async fn sigterm_under_load_loses_no_usage_event(backend: Backend) {
    let (db, mut server, console) = started(backend).await;
    // Slow answers, so that many are in flight when the signal comes.
    console
        .call(
            "upsert_provider",
            &[
                ("org_id", &console.org),
                ("name", "mock"),
                ("kind", "mock"),
                ("base_url", ""),
                ("api_key", ""),
                ("latency_ms", "30"),
            ],
        )
        .await;
    let (key_id, token) = console.key(&[]).await;
    let url = server.url.clone();
    let load: Vec<_> = (0..300)
        .map(|i| {
            let url = url.clone();
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i)).await;
                let res = reqwest::Client::new()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&json!({ "model": "mock/echo", "stream": i % 2 == 0,
                        "messages": [{ "role": "user", "content": "one two three four five" }] }))
                    .send()
                    .await
                    .ok()?;
                if res.status() != 200 {
                    return None;
                }
                let id = res.headers()["x-request-id"].to_str().ok()?.to_owned();
                // A stream cut by the shutdown still counts as admitted.
                let _ = res.text().await;
                Some(id)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let pid = server.child.id();
    let stopped = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
    });
    let mut admitted = Vec::new();
    for task in load {
        if let Some(id) = task.await.unwrap() {
            admitted.push(id);
        }
    }
    stopped.await.unwrap().unwrap();
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    assert!(
        admitted.len() >= 20,
        "only {} requests got in before the signal",
        admitted.len()
    );
    assert!(
        admitted.len() < 300,
        "the signal came before the load ended"
    );
    assert!(server.log().contains("usage ledger flushed"));

    // After a restart, the ledger holds every admitted request.
    let again = Binary::start(&db, &[]).await;
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT request_id, status FROM usage_events WHERE key_id = $1")
        .bind(&key_id)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let stored: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.get("request_id"), r.get("status")))
        .collect();
    for id in &admitted {
        assert!(
            stored.contains_key(id),
            "admitted request {id} has no usage event"
        );
    }
    eprintln!(
        "{} admitted before SIGTERM, {} events stored",
        admitted.len(),
        stored.len()
    );
    drop(again);
}
both!(sigterm_under_load_loses_no_usage_event);

/// Each `/v1` request's span carries who and what as fields (organization,
/// project, the key's public id, model, status, the rule that refused it),
/// never the token's secret or the prompt.
async fn v1_spans_name_the_request(backend: Backend) {
    let (_db, mut server, console) = started(backend).await;
    let (_, token) = console.key(&[("rpm", "1")]).await;
    let public_id = token
        .trim_start_matches("sk-tg-")
        .split('-')
        .next()
        .unwrap()
        .to_owned();
    let prompt = format!("prompt-{}", uuid::Uuid::new_v4().simple());
    let res = chat(&server.url, &token, &prompt, false).await;
    assert_eq!(res.status(), 200);
    let res = chat(&server.url, &token, &prompt, false).await;
    assert_eq!(res.status(), 429);
    assert_eq!(server.stop(), Some(0));
    // The log as text, without its colours.
    let raw = server.log();
    let mut log = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(i) = rest.find('\u{1b}') {
        log.push_str(&rest[..i]);
        rest = rest[i..].find('m').map_or("", |j| &rest[i + j + 1..]);
    }
    log.push_str(rest);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&public_id)).collect();
    let done = |status: &str| {
        lines.iter().any(|l| {
            l.contains(&format!("org={}", console.org))
                && l.contains(&format!("project={}", console.project))
                && l.contains(&format!("key_id={public_id}"))
                && l.contains(&format!("status={status}"))
        })
    };
    assert!(
        done("200") && lines.iter().any(|l| l.contains("model=mock/echo")),
        "{log}"
    );
    assert!(
        done("429") && lines.iter().any(|l| l.contains("rule=rate_limit_exceeded")),
        "{log}"
    );
    assert!(
        !log.contains(&token[token.len() - 38..]),
        "the key's secret is logged"
    );
    assert!(!log.contains(&prompt), "a prompt is logged");
}
both!(v1_spans_name_the_request);
