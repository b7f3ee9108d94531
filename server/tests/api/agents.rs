//! The Responses and Messages APIs through the proxy. The mock answers
//! both; a chat-only OpenAI-compatible provider is sent them as chat; an
//! OpenAI-compatible provider with the Responses API gets the Responses
//! request as written, an Anthropic one the Messages request as written.
//! The key's rules (revocation, models, RPM, budgets) hold on each, and
//! refusals come in each API's own error shape.

use crate::helpers::Backend;
use crate::proxy::{chat_body, usd, Gw, LONG, PRICED};
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::{Arc, Mutex};

/// A streamed answer's named events: (event, data).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            assert_eq!(
                data["type"],
                name.as_str(),
                "each event names its type: {e}"
            );
            (name, data)
        })
        .collect()
}

async fn stream(gw: &Gw, token: &str, path: &str, mut body: Value) -> String {
    body["stream"] = json!(true);
    let res = gw.post(token, path, body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    res.text().await.unwrap()
}

/// (endpoint, status, tokens in, tokens out) of each event of a key.
async fn ledger(gw: &Gw, key_id: &str) -> Vec<(String, i64, i64, i64)> {
    gw.app.gateway.ledger.flush().await;
    let mut conn = gw.app.sql().await;
    sqlx::query(
        "SELECT endpoint, status, tokens_in, tokens_out FROM usage_events WHERE key_id = $1 ORDER BY at, request_id",
    )
    .bind(key_id)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("endpoint"), r.get("status"), r.get("tokens_in"), r.get("tokens_out")))
    .collect()
}

fn weather_tool_responses() -> Value {
    json!([{ "type": "function", "name": "get_weather", "description": "The weather in a city",
             "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } }])
}

fn weather_tool_messages() -> Value {
    json!([{ "name": "get_weather", "description": "The weather in a city",
             "input_schema": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } }])
}

async fn the_mock_speaks_responses_and_messages(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw.key(&[]).await;

    // Responses: plain, with instructions and message items.
    let (s, r) = gw
        .call(
            &token,
            "responses",
            json!({ "model": "mock/echo", "input": "hello responses", "max_output_tokens": 64 }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["text"], "hello responses");
    assert!(r["usage"]["input_tokens"].as_i64().unwrap() > 0, "{r}");
    assert!(r["usage"]["output_tokens"].as_i64().unwrap() > 0, "{r}");
    let (s, r) = gw
        .call(&token, "responses", json!({ "model": "mock/echo", "instructions": "Be brief.",
            "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "from items" }] }] }))
        .await;
    assert_eq!(
        (s, r["output"][0]["content"][0]["text"].as_str()),
        (200, Some("from items")),
        "{r}"
    );

    // Responses streamed: created first, completed last, deltas spell it.
    let body = stream(
        &gw,
        &token,
        "responses",
        json!({ "model": "mock/echo", "input": "stream me please" }),
    )
    .await;
    let ev = events(&body);
    assert_eq!(ev.first().unwrap().0, "response.created");
    assert_eq!(ev.last().unwrap().0, "response.completed");
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "stream me please");
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "stream me please");
    assert!(done["usage"]["output_tokens"].as_i64().unwrap() > 0);

    // A function tool round trip.
    let ask = json!({ "role": "user", "content": "Use get_weather for Paris" });
    let (s, r) = gw
        .call(
            &token,
            "responses",
            json!({ "model": "mock/echo", "input": [ask], "tools": weather_tool_responses() }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let call = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({ "city": "mock" })
    );
    let back = json!([ask, call, { "type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21C" }]);
    let (s, r) = gw
        .call(
            &token,
            "responses",
            json!({ "model": "mock/echo", "input": back, "tools": weather_tool_responses() }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["output"][0]["content"][0]["text"],
        "Tool result: sunny, 21C"
    );
    let body = stream(
        &gw,
        &token,
        "responses",
        json!({ "model": "mock/echo", "input": [ask], "tools": weather_tool_responses() }),
    )
    .await;
    let ev = events(&body);
    let args: String = ev
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\":\"mock\"}");
    assert_eq!(
        ev.last().unwrap().1["response"]["output"][0]["type"],
        "function_call"
    );

    // Messages: plain, streamed, a tool round trip, count_tokens.
    let (s, m) = gw
        .call(
            &token,
            "messages",
            json!({ "model": "mock/echo", "max_tokens": 64, "system": "Be brief.",
            "messages": [{ "role": "user", "content": "hello messages" }] }),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(
        m["content"][0],
        json!({ "type": "text", "text": "hello messages" })
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_i64().unwrap() > 0);
    let body = stream(&gw, &token, "messages", json!({ "model": "mock/echo", "max_tokens": 64,
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": "stream messages" }] }] })).await;
    let ev = events(&body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = ev
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "stream messages");
    let ask = json!({ "role": "user", "content": "Use get_weather for Paris" });
    let (s, m) = gw
        .call(&token, "messages", json!({ "model": "mock/echo", "max_tokens": 64, "messages": [ask], "tools": weather_tool_messages() }))
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["stop_reason"], "tool_use");
    let use_ = m["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(use_["input"], json!({ "city": "mock" }));
    let back = json!([ask, { "role": "assistant", "content": m["content"] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": use_["id"], "content": "sunny, 21C" }] }]);
    let (s, m) = gw
        .call(&token, "messages", json!({ "model": "mock/echo", "max_tokens": 64, "messages": back, "tools": weather_tool_messages() }))
        .await;
    assert_eq!(
        (s, m["content"][0]["text"].as_str()),
        (200, Some("Tool result: sunny, 21C")),
        "{m}"
    );
    let (s, c) = gw
        .call(
            &token,
            "messages/count_tokens",
            json!({ "model": "mock/echo", "messages": [ask], "tools": weather_tool_messages() }),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert!(c["input_tokens"].as_i64().unwrap() > 10, "{c}");

    // Each answer is in the ledger under its endpoint; count_tokens is not.
    let rows = ledger(&gw, &key_id).await;
    let count = |e: &str| rows.iter().filter(|r| r.0 == e && r.1 == 200).count();
    assert_eq!((count("responses"), count("messages")), (6, 4), "{rows:?}");
    assert!(rows.iter().all(|r| r.2 > 0 && r.3 > 0), "{rows:?}");
}
both!(the_mock_speaks_responses_and_messages);

async fn each_api_refuses_in_its_own_shape(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (revoked_id, revoked) = gw.key(&[]).await;
    gw.revoke(&revoked_id).await;
    let (_, narrow) = gw.key(&[("models[0]", "mock/fast")]).await;
    let (_, ok) = gw.key(&[]).await;
    let responses = json!({ "model": "mock/echo", "input": "hi" });
    let messages = json!({ "model": "mock/echo", "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }] });

    let (s, v) = gw.call(&revoked, "responses", responses.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("key_revoked")),
        "{v}"
    );
    let (s, v) = gw.call(&revoked, "messages", messages.clone()).await;
    assert_eq!(s, 401);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    // Anthropic's clients send the key as x-api-key.
    let res = gw
        .http
        .post(format!("{}/v1/messages", gw.app.url))
        .header("x-api-key", &revoked)
        .header("anthropic-version", "2023-06-01")
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = gw
        .http
        .post(format!("{}/v1/messages", gw.app.url))
        .header("x-api-key", &ok)
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = gw
        .http
        .post(format!("{}/v1/messages", gw.app.url))
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "missing_api_key"
    );

    let (s, v) = gw.call(&narrow, "responses", responses.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("model_not_allowed")),
        "{v}"
    );
    let (s, v) = gw.call(&narrow, "messages", messages.clone()).await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (403, Some("permission_error")),
        "{v}"
    );
    let (s, v) = gw
        .call(&narrow, "messages/count_tokens", messages.clone())
        .await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (403, Some("permission_error")),
        "{v}"
    );

    // Bad input names its field, in each API's words.
    for (path, body, field) in [
        (
            "messages",
            json!({ "model": "mock/echo", "messages": [{ "role": "user", "content": "hi" }] }),
            "max_tokens",
        ),
        (
            "messages",
            json!({ "model": "mock/echo", "max_tokens": 5, "messages": [] }),
            "messages",
        ),
        (
            "messages",
            json!({ "model": "mock/echo", "max_tokens": 0, "messages": [{ "role": "user", "content": "hi" }] }),
            "max_tokens",
        ),
        ("responses", json!({ "model": "mock/echo" }), "input"),
        (
            "responses",
            json!({ "model": "mock/echo", "input": "hi", "max_output_tokens": 0 }),
            "max_output_tokens",
        ),
        ("responses", json!({ "input": "hi" }), "model"),
    ] {
        let (s, v) = gw.call(&ok, path, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], field, "{body}: {v}");
        if path == "messages" {
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            assert_eq!(v["type"], "error", "{v}");
        }
    }
    // A stored response of a chat-only provider does not exist.
    let res = gw.get(&ok, "/v1/responses/resp_nothing").await;
    assert_eq!(res.status(), 404);
    let res = gw.get(&ok, "/v1/responses/bad%2Fid").await;
    assert_eq!(res.status(), 404);
}
both!(each_api_refuses_in_its_own_shape);

async fn rpm_is_shared_by_chat_responses_and_messages(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[("rpm", "10")]).await;
    let mut admitted = 0;
    let mut limited = 0;
    for i in 0..15 {
        let (path, body) = match i % 3 {
            0 => ("chat/completions", chat_body("mock/echo", "hi")),
            1 => ("responses", json!({ "model": "mock/echo", "input": "hi" })),
            _ => (
                "messages",
                json!({ "model": "mock/echo", "max_tokens": 8, "messages": [{ "role": "user", "content": "hi" }] }),
            ),
        };
        let (s, v) = gw.call(&token, path, body).await;
        match s {
            200 => admitted += 1,
            429 => {
                limited += 1;
                if path == "messages" {
                    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
                } else {
                    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                }
            }
            other => panic!("{path}: {other} {v}"),
        }
    }
    assert_eq!((admitted, limited), (10, 5));
}
both!(rpm_is_shared_by_chat_responses_and_messages);

async fn a_budget_holds_under_200_mixed_concurrent_requests(backend: Backend) {
    let gw = Gw::new(backend).await;
    gw.set_mock_latency("20").await;
    let budget = 50_000; // $0.05
    let (key_id, token) = gw
        .key(&[("max_budget", &usd(budget)), ("budget_reset", "monthly")])
        .await;
    let calls = (0..200).map(|i| {
        let (path, mut body) = match i % 3 {
            0 => ("chat/completions", chat_body(PRICED, LONG)),
            1 => ("responses", json!({ "model": PRICED, "input": LONG, "max_output_tokens": 50 })),
            _ => ("messages", json!({ "model": PRICED, "max_tokens": 50, "messages": [{ "role": "user", "content": LONG }] })),
        };
        if i % 3 == 0 {
            body["max_tokens"] = json!(50);
        }
        if i % 2 == 0 {
            body["stream"] = json!(true);
        }
        let gw = &gw;
        let token = &token;
        async move {
            let res = gw.post(token, path, body).await;
            let status = res.status().as_u16();
            let _ = res.bytes().await;
            status
        }
    });
    let statuses = futures::future::join_all(calls).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(admitted + refused, 200, "{statuses:?}");
    let mut conn = gw.app.sql().await;
    gw.app.gateway.ledger.flush().await;
    let spent: i64 = sqlx::query("SELECT cost_micros FROM usage_events WHERE key_id = $1")
        .bind(&key_id)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64, _>("cost_micros"))
        .sum();
    let endpoints: Vec<String> = sqlx::query(
        "SELECT DISTINCT endpoint FROM usage_events WHERE key_id = $1 AND status = 200",
    )
    .bind(&key_id)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("endpoint"))
    .collect();
    eprintln!("$0.05 budget, 200 mixed requests: {admitted} admitted, {refused} refused, spent {spent} micro-USD, endpoints {endpoints:?}");
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(
        admitted >= 20,
        "a $0.05 budget admits about 40 of these: {admitted}"
    );
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
}
both!(a_budget_holds_under_200_mixed_concurrent_requests);

type Seen = Arc<Mutex<Vec<(String, Value, String)>>>;

/// Fake providers on one server, recording (path, body, anthropic-beta):
/// `/chatonly` serves chat completions only (404 on `/responses`),
/// `/native` serves the Responses API (usage 11 in, 7 out), `/anth` serves
/// Anthropic's Messages API (13 in + 2 cache reads, 5 out) and its count.
async fn fake_providers() -> (String, Seen) {
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    async fn record(seen: &Seen, path: &str, h: &HeaderMap, body: &Value) {
        let beta = h
            .get("anthropic-beta")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        seen.lock()
            .unwrap()
            .push((path.to_owned(), body.clone(), beta));
    }
    fn sse(events: &[Value]) -> axum::response::Response {
        use axum::response::IntoResponse;
        let body: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect();
        ([("content-type", "text/event-stream")], body).into_response()
    }
    async fn chatonly(
        State(seen): State<Seen>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        record(&seen, "/chatonly/chat/completions", &h, &b).await;
        let text = b["messages"].as_array().unwrap().last().unwrap()["content"].clone();
        let text = text
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text[0]["text"].as_str().unwrap_or_default().to_owned());
        if b["stream"] == true {
            let chunks = [
                json!({ "choices": [{ "index": 0, "delta": { "role": "assistant", "content": text } }] }),
                json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }),
                json!({ "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 3 } }),
            ];
            let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            body.push_str("data: [DONE]\n\n");
            return ([("content-type", "text/event-stream")], body).into_response();
        }
        axum::Json(json!({ "id": "c", "object": "chat.completion", "model": b["model"],
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12 } }))
        .into_response()
    }
    async fn responses(
        State(seen): State<Seen>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        record(&seen, "/native/responses", &h, &b).await;
        if b["previous_response_id"] == "resp_missing" {
            return (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({ "error": {
                "message": "Previous response with id 'resp_missing' not found.", "type": "invalid_request_error",
                "param": "previous_response_id", "code": "previous_response_not_found" } }))).into_response();
        }
        let usage = json!({ "input_tokens": 11, "output_tokens": 7, "total_tokens": 18 });
        let done = json!({ "id": "resp_up1", "object": "response", "status": "completed", "model": b["model"],
            "output": [{ "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                         "content": [{ "type": "output_text", "text": "native answer", "annotations": [] }] }],
            "usage": usage });
        if b["stream"] == true {
            return sse(&[
                json!({ "type": "response.created", "sequence_number": 0, "response": { "id": "resp_up1", "status": "in_progress", "error": null } }),
                json!({ "type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "native answer" }),
                json!({ "type": "response.completed", "sequence_number": 2, "response": done }),
            ]);
        }
        axum::Json(done).into_response()
    }
    async fn stored(Path(id): Path<String>) -> axum::response::Response {
        use axum::response::IntoResponse;
        if id == "resp_up1" {
            return axum::Json(
                json!({ "id": "resp_up1", "object": "response", "status": "completed" }),
            )
            .into_response();
        }
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": { "message": "no such response" } })),
        )
            .into_response()
    }
    async fn messages(
        State(seen): State<Seen>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        record(&seen, "/anth/messages", &h, &b).await;
        if h.get("x-api-key").is_none() || h.get("anthropic-version").is_none() {
            return (axum::http::StatusCode::UNAUTHORIZED, "no key").into_response();
        }
        let usage = json!({ "input_tokens": 13, "output_tokens": 5, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0 });
        if b["stream"] == true {
            return sse(&[
                json!({ "type": "message_start", "message": { "id": "msg_up", "type": "message", "role": "assistant", "content": [], "model": b["model"],
                        "stop_reason": null, "usage": { "input_tokens": 13, "output_tokens": 1, "cache_read_input_tokens": 2 } } }),
                json!({ "type": "ping" }),
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "anthropic answer" } }),
                json!({ "type": "content_block_stop", "index": 0 }),
                json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 5 } }),
                json!({ "type": "message_stop" }),
            ]);
        }
        axum::Json(json!({ "id": "msg_up", "type": "message", "role": "assistant", "model": b["model"],
            "content": [{ "type": "text", "text": "anthropic answer" }], "stop_reason": "end_turn", "usage": usage }))
        .into_response()
    }
    /// Anthropic's stream, cut after the first words (no `message_delta`).
    async fn cut(
        State(seen): State<Seen>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::response::Response {
        record(&seen, "/cut/messages", &h, &b).await;
        sse(&[
            json!({ "type": "message_start", "message": { "id": "msg_cut", "type": "message", "role": "assistant", "content": [],
                    "model": b["model"], "stop_reason": null, "usage": { "input_tokens": 13, "output_tokens": 1 } } }),
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta",
                    "text": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu" } }),
        ])
    }
    async fn count(
        State(seen): State<Seen>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::Json<Value> {
        record(&seen, "/anth/messages/count_tokens", &h, &b).await;
        axum::Json(json!({ "input_tokens": 42 }))
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/chatonly/chat/completions", post(chatonly))
        .route("/native/responses", post(responses))
        .route("/native/responses/{id}", get(stored).delete(stored))
        .route("/anth/messages", post(messages))
        .route("/anth/messages/count_tokens", post(count))
        .route("/cut/messages", post(cut))
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

async fn providers_are_passed_through_or_translated(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (up, seen) = fake_providers().await;
    for (name, kind, path) in [
        ("chatonly", "openai", "chatonly"),
        ("native", "openai", "native"),
        ("anth", "anthropic", "anth"),
        ("cut", "anthropic", "cut"),
    ] {
        let base = format!("{up}/{path}");
        gw.app
            .ok(
                &gw.owner,
                "upsert_provider",
                &[
                    ("org_id", &gw.org),
                    ("name", name),
                    ("kind", kind),
                    ("base_url", &base),
                    ("api_key", "sk-upstream-secret-0000"),
                    ("latency_ms", ""),
                ],
            )
            .await;
        let id = format!("{name}/m");
        gw.app
            .ok(
                &gw.owner,
                "upsert_model",
                &[
                    ("org_id", gw.org.as_str()),
                    ("id", &id),
                    ("provider", name),
                    ("upstream", "up-model"),
                    ("input_price", "1"),
                    ("output_price", "1"),
                    ("context_window", "128000"),
                ],
            )
            .await;
    }
    gw.project_settings(&[
        ("models[4]", "chatonly/m"),
        ("models[5]", "native/m"),
        ("models[6]", "anth/m"),
        ("models[7]", "cut/m"),
    ])
    .await;
    let (key_id, token) = gw.key(&[]).await;
    let (_, other) = gw.key(&[]).await;
    let paths = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect::<Vec<_>>()
    };

    // A chat-only provider: asked once for the Responses API, then sent chat.
    for text in ["first", "second"] {
        let (s, r) = gw
            .call(
                &token,
                "responses",
                json!({ "model": "chatonly/m", "input": text }),
            )
            .await;
        assert_eq!(
            (s, r["output"][0]["content"][0]["text"].as_str()),
            (200, Some(text)),
            "{r}"
        );
        assert_eq!(r["usage"]["input_tokens"], 9);
    }
    let body = stream(
        &gw,
        &token,
        "responses",
        json!({ "model": "chatonly/m", "input": "third" }),
    )
    .await;
    assert_eq!(
        events(&body).last().unwrap().1["response"]["output"][0]["content"][0]["text"],
        "third"
    );
    assert_eq!(
        paths(&seen),
        ["/chatonly/chat/completions"; 3],
        "a 404 on /responses is remembered"
    );
    let last = seen.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(last["model"], "up-model");
    assert_eq!(
        last["messages"][0],
        json!({ "role": "user", "content": "third" })
    );
    // State only a Responses provider keeps is refused, naming the field.
    let kept =
        tollgate_server::proxy::dialect::owned::seal(&gw.app.state.secret, &key_id, "resp_1");
    let (s, v) = gw
        .call(
            &token,
            "responses",
            json!({ "model": "chatonly/m", "input": "x", "previous_response_id": kept }),
        )
        .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("previous_response_id")),
        "{v}"
    );
    let (s, m) = gw
        .call(&token, "messages", json!({ "model": "chatonly/m", "max_tokens": 20, "messages": [{ "role": "user", "content": "to chat" }] }))
        .await;
    assert_eq!(
        (s, m["content"][0]["text"].as_str()),
        (200, Some("to chat")),
        "{m}"
    );
    seen.lock().unwrap().clear();

    // The Responses API passed through: the body as written, model mapped,
    // the output cap it is reserved at added; the stored response's id is
    // sealed to the key, and unsealed when the key follows it.
    let sent = json!({ "model": "native/m", "input": "hi", "store": true, "reasoning": { "effort": "low" } });
    let (s, r) = gw.call(&token, "responses", sent.clone()).await;
    assert_eq!(
        (s, r["output"][0]["content"][0]["text"].as_str()),
        (200, Some("native answer")),
        "{r}"
    );
    let sealed = r["id"].as_str().unwrap().to_owned();
    assert!(
        sealed.starts_with("resp_tg") && sealed.ends_with("_resp_up1"),
        "{sealed}"
    );
    let got = seen.lock().unwrap()[0].1.clone();
    let mut want = sent.clone();
    want["model"] = json!("up-model");
    want["max_output_tokens"] = json!(4096);
    assert_eq!(got, want);
    let mut follow = json!({ "model": "native/m", "input": "and then?", "previous_response_id": sealed, "max_output_tokens": 20 });
    let (s, r) = gw.call(&token, "responses", follow.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1["previous_response_id"],
        "resp_up1"
    );
    // Another key, or the provider's own id, does not reach it.
    let (s, v) = gw.call(&other, "responses", follow.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("previous_response_not_found")),
        "{v}"
    );
    follow["previous_response_id"] = json!("resp_up1");
    let (s, _) = gw.call(&token, "responses", follow.clone()).await;
    assert_eq!(s, 404);
    // The provider's own 404 (an API error with a code) is the client's,
    // and the provider keeps its Responses API.
    let missing =
        tollgate_server::proxy::dialect::owned::seal(&gw.app.state.secret, &key_id, "resp_missing");
    follow["previous_response_id"] = json!(missing);
    let (s, _) = gw.call(&token, "responses", follow.clone()).await;
    assert_eq!(s, 404);
    for (field, value) in [
        ("background", json!(true)),
        ("conversation", json!("conv_1")),
    ] {
        let mut b = json!({ "model": "native/m", "input": "x" });
        b[field] = value;
        let (s, v) = gw.call(&token, "responses", b).await;
        assert_eq!((s, v["error"]["param"].as_str()), (400, Some(field)), "{v}");
    }
    let body = stream(
        &gw,
        &token,
        "responses",
        json!({ "model": "native/m", "input": "hi" }),
    )
    .await;
    let ev = events(&body);
    assert_eq!(
        ev.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        [
            "response.created",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    assert!(
        ev.iter()
            .all(|(_, d)| d.get("response").is_none_or(|r| r["id"] == sealed.as_str())),
        "streamed response ids are sealed: {body}"
    );
    let res = gw.get(&token, &format!("/v1/responses/{sealed}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], sealed.as_str());
    assert_eq!(
        gw.get(&other, &format!("/v1/responses/{sealed}"))
            .await
            .status(),
        404
    );
    assert_eq!(gw.get(&token, "/v1/responses/resp_up1").await.status(), 404);
    let gone =
        tollgate_server::proxy::dialect::owned::seal(&gw.app.state.secret, &key_id, "resp_gone");
    assert_eq!(
        gw.get(&token, &format!("/v1/responses/{gone}"))
            .await
            .status(),
        404
    );

    // The Messages API passed through, with the client's beta header.
    let sent = json!({ "model": "anth/m", "max_tokens": 20, "messages": [{ "role": "user", "content": "hi" }],
                       "thinking": { "type": "enabled", "budget_tokens": 10 } });
    let res = gw
        .http
        .post(format!("{}/v1/messages", gw.app.url))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14, files-api-2025-04-14",
        )
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["content"][0]["text"],
        "anthropic answer"
    );
    let (path, got, beta) = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.0 == "/anth/messages")
        .unwrap()
        .clone();
    assert_eq!(path, "/anth/messages");
    assert_eq!(beta, "interleaved-thinking-2025-05-14");
    let mut want = sent.clone();
    want["model"] = json!("up-model");
    assert_eq!(got, want);
    let body = stream(&gw, &token, "messages", json!({ "model": "anth/m", "max_tokens": 20, "messages": [{ "role": "user", "content": "hi" }] })).await;
    let ev = events(&body);
    assert_eq!(ev.len(), 7, "every event passed on, ping included");
    let (s, c) = gw
        .call(
            &token,
            "messages/count_tokens",
            json!({ "model": "anth/m", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .await;
    assert_eq!((s, c["input_tokens"].as_i64()), (200, Some(42)), "{c}");
    // A stream cut before Anthropic's last event: the client is told, and
    // the text that came is billed (not message_start's 1 output token).
    let body = stream(&gw, &token, "messages", json!({ "model": "cut/m", "max_tokens": 200, "messages": [{ "role": "user", "content": "hi" }] })).await;
    let ev = events(&body);
    assert_eq!(ev.last().unwrap().0, "error", "{body}");
    assert_eq!(ev.last().unwrap().1["error"]["code"], "upstream_truncated");
    // Responses to an Anthropic provider go as chat, translated to Messages.
    let (s, r) = gw
        .call(
            &token,
            "responses",
            json!({ "model": "anth/m", "input": "via chat" }),
        )
        .await;
    assert_eq!(
        (s, r["output"][0]["content"][0]["text"].as_str()),
        (200, Some("anthropic answer")),
        "{r}"
    );

    // Billed from each API's own usage: Anthropic's cache reads are input.
    let rows = ledger(&gw, &key_id).await;
    let native: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "responses" && r.2 == 11)
        .collect();
    assert_eq!(native.len(), 3, "{rows:?}");
    assert!(native.iter().all(|r| r.3 == 7));
    let anth: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "messages" && r.2 == 15 && r.3 == 5)
        .collect();
    assert_eq!(anth.len(), 2, "{rows:?}");
    let cut: Vec<_> = rows.iter().filter(|r| r.1 == 502).collect();
    assert_eq!(cut.len(), 1, "{rows:?}");
    assert!(
        cut[0].2 == 13 && cut[0].3 > 1,
        "input as reported, output as counted (not message_start's 1): {rows:?}"
    );
}
both!(providers_are_passed_through_or_translated);
