//! The metered proxy over HTTP: every endpoint, every refusal with the rule
//! it names, rate limits and budgets under concurrency, the ledger, the
//! database never touched on the request path, disconnects, upstream faults
//! and the Anthropic translation (against fake upstreams on port 0).

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;
use tollgate_server::config::Config;

pub(crate) struct Gw {
    pub(crate) app: TestApp,
    pub(crate) owner: reqwest::Client,
    pub(crate) org: String,
    pub(crate) project: String,
    pub(crate) http: reqwest::Client,
}

/// 10 USD per million tokens: 10 micro-USD a token, in and out.
pub(crate) const PRICED: &str = "mock/priced";

pub(crate) fn usd(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

impl Gw {
    pub(crate) async fn new(backend: Backend) -> Gw {
        Self::with(backend, |_| {}).await
    }

    pub(crate) async fn with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Gw {
        let app = TestApp::spawn_with(backend, tweak).await;
        let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
        app.priced_model(&owner, &org, PRICED).await;
        let project = app.create_project(&owner, &org, "P").await;
        let gw = Gw {
            app,
            owner,
            org,
            project,
            http: reqwest::Client::new(),
        };
        gw.project_settings(&[]).await;
        gw
    }

    /// Sets the project's settings: every mock model, no caps, plus `extra`.
    pub(crate) async fn project_settings(&self, extra: &[(&str, &str)]) {
        self.project_settings_of(&self.project.clone(), extra).await;
    }

    pub(crate) async fn project_settings_of(&self, project: &str, extra: &[(&str, &str)]) {
        let mut form: Vec<(&str, &str)> = vec![
            ("org_id", &self.org),
            ("project_id", project),
            ("name", if project == self.project { "P" } else { "Q" }),
            ("models[0]", "mock/echo"),
            ("models[1]", "mock/fast"),
            ("models[2]", "mock/embed"),
            ("models[3]", PRICED),
        ];
        form.extend(crate::helpers::OPEN_PROJECT);
        for (k, v) in extra {
            form.retain(|(f, _)| f != k);
            form.push((k, v));
        }
        self.app.ok(&self.owner, "update_project", &form).await;
    }

    /// A key in the project (every project model unless `models[0]` is
    /// given); returns its id and token.
    pub(crate) async fn key_in(&self, project: &str, extra: &[(&str, &str)]) -> (String, String) {
        self.app
            .create_key(&self.owner, &self.org, project, extra)
            .await
    }

    pub(crate) async fn key(&self, extra: &[(&str, &str)]) -> (String, String) {
        self.key_in(&self.project.clone(), extra).await
    }

    pub(crate) async fn post(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/{path}", self.app.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Status and JSON body of a call.
    pub(crate) async fn call(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self.post(token, path, body).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` (from the root) with a bearer token.
    pub(crate) async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.app.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn revoke(&self, key_id: &str) {
        let form = [("org_id", self.org.as_str()), ("key_id", key_id)];
        self.app.ok(&self.owner, "revoke_key", &form).await;
    }

    /// The owner calls `name`; returns the string `field` of its answer.
    pub(crate) async fn field_of(&self, name: &str, form: &[(&str, &str)], field: &str) -> String {
        self.app.ok(&self.owner, name, form).await[field]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn set_mock_latency(&self, ms: &str) {
        self.app
            .ok(
                &self.owner,
                "upsert_provider",
                &[
                    ("org_id", &self.org),
                    ("name", "mock"),
                    ("kind", "mock"),
                    ("base_url", ""),
                    ("api_key", ""),
                    ("latency_ms", ms),
                ],
            )
            .await;
    }

    /// (request id, status, tokens in, tokens out, cost) of every event of a
    /// key, once the ledger has written what is queued.
    pub(crate) async fn events(&self, key_id: &str) -> Vec<(String, i64, i64, i64, i64)> {
        self.app.gateway.ledger.flush().await;
        let mut conn = self.app.sql().await;
        sqlx::query(
            "SELECT request_id, status, tokens_in, tokens_out, cost_micros FROM usage_events WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("request_id"),
                r.get("status"),
                r.get("tokens_in"),
                r.get("tokens_out"),
                r.get("cost_micros"),
            )
        })
        .collect()
    }
}

pub(crate) fn chat_body(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// Reads an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// A streamed answer's chunks (it must end with `[DONE]`) and the text
/// their deltas spell.
fn stream_chunks(body: &str) -> (Vec<Value>, String) {
    let events = sse_data(body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, text)
}

/// Streams "hi" to `model`, which must answer 200 and then break: one
/// chunk, then an error event, which is returned.
async fn stream_error(gw: &Gw, token: &str, model: &str) -> Value {
    let mut b = chat_body(model, "hi");
    b["stream"] = json!(true);
    let res = gw.post(token, "chat/completions", b).await;
    assert_eq!(res.status(), 200, "{model}");
    let events = sse_data(&res.text().await.unwrap());
    assert_eq!(events.len(), 2, "{events:?}");
    serde_json::from_str(&events[1]).unwrap()
}

async fn endpoints_answer_like_openai(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[]).await;

    let res = gw
        .post(
            &token,
            "chat/completions",
            chat_body("mock/echo", "Hello there, gateway"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"].len(), 32);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock/echo");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello there, gateway"
    );
    assert!(body["usage"]["prompt_tokens"].as_i64().unwrap() > 5);

    // max_tokens cuts the answer and says so.
    let (s, body) = gw
        .call(
            &token,
            "chat/completions",
            json!({ "model": "mock/echo", "max_tokens": 2,
            "messages": [{ "role": "user", "content": "one two three four five six" }] }),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    // Streaming: chunk by chunk, [DONE] last, usage only when asked for.
    for wants_usage in [false, true] {
        let mut req = chat_body("mock/echo", "stream these five words");
        req["stream"] = json!(true);
        if wants_usage {
            req["stream_options"] = json!({ "include_usage": true });
        }
        let res = gw.post(&token, "chat/completions", req).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let (chunks, text) = stream_chunks(&res.text().await.unwrap());
        assert_eq!(text, "stream these five words");
        let with_usage = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(with_usage, usize::from(wants_usage), "{chunks:?}");
    }

    let (s, body) = gw
        .call(
            &token,
            "completions",
            json!({ "model": "mock/echo", "prompt": "Say this" }),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], "Say this");

    let (s, body) = gw
        .call(
            &token,
            "embeddings",
            json!({ "model": "mock/embed", "input": ["a", "b"] }),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16);
    let (_, again) = gw
        .call(
            &token,
            "embeddings",
            json!({ "model": "mock/embed", "input": "a", "encoding_format": "base64" }),
        )
        .await;
    assert!(again["data"][0]["embedding"].is_string(), "{again}");

    // The models this key may use, and only those.
    let (_, narrow) = gw.key(&[("models[0]", "mock/fast")]).await;
    let res = gw.get(&narrow, "/v1/models").await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock/fast"]);
}
both!(endpoints_answer_like_openai);

/// LiteLLM's `/v1/model/info` for an API key (its models with their prices,
/// from memory); a path Tollgate does not serve is 404 and a method a path
/// does not take 405, both as OpenAI error bodies.
async fn model_info_and_unserved_paths(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[("models[0]", "mock/echo")]).await;
    let url = |p: &str| format!("{}/v1/{p}", gw.app.url);
    let res = gw
        .http
        .get(url("model/info"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["data"][0]["model_name"], "mock/echo", "{body}");
    assert_eq!(
        body["data"][0]["litellm_params"]["model"], "mock/echo",
        "{body}"
    );
    assert_eq!(
        body["data"][0]["model_info"]["input_cost_per_token"], 0.0,
        "{body}"
    );
    for (method, path, status, code) in [
        (reqwest::Method::GET, "files", 404, "unknown_endpoint"),
        (
            reqwest::Method::POST,
            "models/mock/echo",
            404,
            "unknown_endpoint",
        ),
        (
            reqwest::Method::GET,
            "chat/completions",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::DELETE, "models", 405, "method_not_allowed"),
    ] {
        let res = gw
            .http
            .request(method.clone(), url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
    }
}
both!(model_info_and_unserved_paths);

async fn refusals_name_the_rule(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw.key(&[]).await;
    let body = chat_body("mock/echo", "hi");
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    let res = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(code(&v), "missing_api_key");
    assert_eq!(v["error"]["type"], "authentication_error");

    let (s, v) = gw
        .call("sk-tg-nope", "chat/completions", body.clone())
        .await;
    assert_eq!((s, code(&v).as_str()), (401, "invalid_api_key"));
    // A well-formed token with a wrong secret: same answer, no hint.
    let forged = format!("{}{}", &token[..token.len() - 10], "AAAAAAAAAA");
    let (s, v) = gw.call(&forged, "chat/completions", body.clone()).await;
    assert_eq!((s, code(&v).as_str()), (401, "invalid_api_key"));
    assert!(
        !v.to_string().contains(&token[6..18]),
        "the error names no part of the key"
    );

    let (s, v) = gw
        .call(&token, "chat/completions", json!({ "messages": [] }))
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("model")));
    let (s, v) = gw.call(&token, "chat/completions", json!("text")).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("body")));
    let (s, v) = gw
        .call(
            &token,
            "chat/completions",
            json!({ "model": "mock/echo", "max_tokens": -1, "messages": [] }),
        )
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("max_tokens")));
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("nope/model", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (404, "model_not_found"));
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("openai/gpt-4o", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (403, "model_not_allowed"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("project"));

    // A key limited to one model; an edit widens it for the next request.
    let (narrow_id, narrow) = gw.key(&[("models[0]", "mock/fast")]).await;
    let (s, v) = gw.call(&narrow, "chat/completions", body.clone()).await;
    assert_eq!((s, code(&v).as_str()), (403, "model_not_allowed"));
    assert!(v["error"]["message"].as_str().unwrap().contains("key"));
    gw.app
        .ok(
            &gw.owner,
            "update_key",
            &[
                &[
                    ("org_id", gw.org.as_str()),
                    ("key_id", &narrow_id),
                    ("name", "k"),
                    ("models[0]", "mock/fast"),
                    ("models[1]", "mock/echo"),
                ][..],
                &crate::helpers::NO_LIMITS,
            ]
            .concat(),
        )
        .await;
    assert_eq!(
        gw.call(&narrow, "chat/completions", body.clone()).await.0,
        200
    );

    // Rotation: the old token stops at once, the new one works.
    let rotated = gw
        .field_of(
            "rotate_key",
            &[("org_id", &gw.org), ("key_id", &key_id)],
            "token",
        )
        .await;
    assert_eq!(
        gw.call(&token, "chat/completions", body.clone()).await.0,
        401
    );
    assert_eq!(
        gw.call(&rotated, "chat/completions", body.clone()).await.0,
        200
    );

    // Revocation applies to the very next request.
    gw.revoke(&key_id).await;
    let (s, v) = gw.call(&rotated, "chat/completions", body.clone()).await;
    assert_eq!((s, code(&v).as_str()), (401, "key_revoked"));

    // The project's IP allowlist: the test client is 127.0.0.1.
    let (_, fresh) = gw.key(&[]).await;
    gw.project_settings(&[("ip_allowlist", "10.0.0.0/8")]).await;
    let (s, v) = gw.call(&fresh, "chat/completions", body.clone()).await;
    assert_eq!((s, code(&v).as_str()), (403, "ip_not_allowed"));
    gw.project_settings(&[("ip_allowlist", "127.0.0.1")]).await;
    assert_eq!(
        gw.call(&fresh, "chat/completions", body.clone()).await.0,
        200
    );

    // A deleted project takes its keys with it.
    gw.app
        .ok(
            &gw.owner,
            "delete_project",
            &[
                ("org_id", &gw.org),
                ("project_id", &gw.project),
                ("confirm", "P"),
            ],
        )
        .await;
    assert_eq!(gw.call(&fresh, "chat/completions", body).await.0, 401);
}
both!(refusals_name_the_rule);

async fn rpm_admits_exactly_the_limit(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[("rpm", "10")]).await;
    let body = chat_body("mock/fast", "hi");
    let all = futures::future::join_all(
        (0..30).map(|_| gw.post(&token, "chat/completions", body.clone())),
    )
    .await;
    let ok = all.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = all.iter().filter(|r| r.status() == 429).collect();
    assert_eq!((ok, limited.len()), (10, 20));
    let h = limited[0].headers();
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["x-ratelimit-limit-requests"], "10");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let admitted = all.iter().find(|r| r.status() == 200).unwrap();
    assert_eq!(admitted.headers()["x-ratelimit-limit-requests"], "10");
}
both!(rpm_admits_exactly_the_limit);

async fn tpm_reserves_tokens_and_project_caps_apply(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[("tpm", "1000")]).await;
    let mut body = chat_body("mock/fast", "hi");
    body["max_tokens"] = json!(300);
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let res = gw.post(&token, "chat/completions", body.clone()).await;
        statuses.push(res.status().as_u16());
        last = Some(res);
    }
    // Each reserves ~310 tokens; the mock answers ~15, so settling frees
    // room: more than 3 fit, but a request above the limit never does.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let h = last.unwrap().headers().clone();
    assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
    body["max_tokens"] = json!(2000);
    let res = gw.post(&token, "chat/completions", body.clone()).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-ratelimit-limit-tokens"], "1000");
    assert!(res.headers().contains_key("x-ratelimit-remaining-tokens"));
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key rate limit of 1000 tokens per minute"),
        "{v}"
    );

    // The project's RPM binds every key in it.
    gw.project_settings(&[("rpm", "3")]).await;
    let (_, a) = gw.key(&[]).await;
    let (_, b) = gw.key(&[]).await;
    let mut ok = 0;
    for t in [&a, &b, &a, &b, &a] {
        if gw
            .call(t, "chat/completions", chat_body("mock/fast", "hi"))
            .await
            .0
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
}
both!(tpm_reserves_tokens_and_project_caps_apply);

/// What one request with this prompt and `max_tokens: 50` costs on the
/// priced mock model (its answer echoes the prompt, so it uses all 50).
pub(crate) const LONG: &str = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega \
alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega \
alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega";

fn priced_body() -> Value {
    let mut b = chat_body(PRICED, LONG);
    b["max_tokens"] = json!(50);
    b
}

async fn cost_of_one(gw: &Gw) -> i64 {
    let (_, probe) = gw.key(&[]).await;
    let (s, v) = gw.call(&probe, "chat/completions", priced_body()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 50);
    v["usage"]["total_tokens"].as_i64().unwrap() * 10
}

/// Fires 200 requests at once over `tokens`; checks that what the ledger
/// holds for them never exceeds `budget` and that every admitted request is
/// in it. Returns how many were admitted.
async fn storm(gw: &Gw, tokens: &[(String, String)], budget: i64) -> usize {
    let calls = (0..200).map(|i| {
        let (_, t) = &tokens[i % tokens.len()];
        gw.post(t, "chat/completions", priced_body())
    });
    let all = futures::future::join_all(calls).await;
    let mut admitted = Vec::new();
    for r in &all {
        match r.status().as_u16() {
            200 => admitted.push(r.headers()["x-request-id"].to_str().unwrap().to_owned()),
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let mut events = Vec::new();
    for (id, _) in tokens {
        events.extend(gw.events(id).await);
    }
    let spent: i64 = events.iter().filter(|e| e.1 == 200).map(|e| e.4).sum();
    assert!(spent <= budget, "spent {spent} of a budget of {budget}");
    for id in &admitted {
        assert!(
            events.iter().any(|e| &e.0 == id && e.1 == 200),
            "admitted request {id} is not in the ledger"
        );
    }
    assert_eq!(
        events.iter().filter(|e| e.1 == 402).count(),
        200 - admitted.len()
    );
    admitted.len()
}

async fn key_budget_holds_under_concurrency(backend: Backend) {
    let gw = Gw::new(backend).await;
    gw.set_mock_latency("20").await;
    let c = cost_of_one(&gw).await;
    let budget = c * 50 + c / 2;
    let key = gw
        .key(&[("max_budget", &usd(budget)), ("budget_reset", "monthly")])
        .await;
    let admitted = storm(&gw, std::slice::from_ref(&key), budget).await;
    assert_eq!(admitted, 50);
    let (s, v) = gw.call(&key.1, "chat/completions", priced_body()).await;
    assert_eq!(s, 402);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "key budget ${} (monthly) exhausted: spent $",
            usd(budget).trim_end_matches('0')
        )) || msg.starts_with("key budget $"),
        "{msg}"
    );
    assert!(msg.contains("(monthly)") && msg.contains("spent"), "{msg}");
    assert_eq!(v["error"]["code"], "key_budget_exceeded");
}
both!(key_budget_holds_under_concurrency);

/// A gateway whose mock answers in 20 ms, the cost of one priced request
/// (spent once, by a probe in the first project) and a second project "Q".
async fn slow_gateway_with_second_project(backend: Backend) -> (Gw, i64, String) {
    let gw = Gw::new(backend).await;
    gw.set_mock_latency("20").await;
    let c = cost_of_one(&gw).await;
    let q = gw
        .field_of(
            "create_project",
            &[("org_id", &gw.org), ("name", "Q")],
            "id",
        )
        .await;
    gw.project_settings_of(&q, &[]).await;
    (gw, c, q)
}

async fn project_budget_is_shared_by_its_keys(backend: Backend) {
    // A second project spends the probe's money elsewhere: the budget is this one's.
    let (gw, c, q) = slow_gateway_with_second_project(backend).await;
    let budget = c * 50 + c / 2;
    gw.project_settings_of(
        &q,
        &[("max_budget", &usd(budget)), ("budget_reset", "daily")],
    )
    .await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(gw.key_in(&q, &[]).await);
    }
    let admitted = storm(&gw, &keys, budget).await;
    assert_eq!(admitted, 50);
    let (s, v) = gw.call(&keys[0].1, "chat/completions", priced_body()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (402, Some("project_budget_exceeded"))
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("(daily)"));
    // Other projects keep working.
    let (_, other) = gw.key(&[]).await;
    assert_eq!(
        gw.call(&other, "chat/completions", priced_body()).await.0,
        200
    );
}
both!(project_budget_is_shared_by_its_keys);

async fn org_cap_holds_across_projects(backend: Backend) {
    let (gw, c, q) = slow_gateway_with_second_project(backend).await;
    // The probe already spent `c` this month.
    let cap = c * 51 + c / 2;
    gw.app
        .ok(
            &gw.owner,
            "update_spending",
            &[
                ("org_id", &gw.org),
                ("spend_cap", &usd(cap)),
                ("spend_cap_reset", "monthly"),
            ],
        )
        .await;
    let keys = vec![
        gw.key(&[]).await,
        gw.key_in(&q, &[]).await,
        gw.key_in(&q, &[]).await,
    ];
    let admitted = storm(&gw, &keys, cap - c).await;
    assert_eq!(admitted, 50);
    let (s, v) = gw.call(&keys[0].1, "chat/completions", priced_body()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (402, Some("org_spend_cap_exceeded"))
    );
    // Raising the cap takes effect on the next request.
    gw.app
        .ok(
            &gw.owner,
            "update_spending",
            &[
                ("org_id", &gw.org),
                ("spend_cap", &usd(cap * 2)),
                ("spend_cap_reset", "monthly"),
            ],
        )
        .await;
    assert_eq!(
        gw.call(&keys[0].1, "chat/completions", priced_body())
            .await
            .0,
        200
    );
}
both!(org_cap_holds_across_projects);

async fn no_database_on_the_request_path(backend: Backend) {
    // The ledger writes only when flushed, so that the count below is the
    // request path's alone.
    // The change feed reads the log only when notified: once it has read
    // what the setup wrote, it is idle too.
    let gw = Gw::with(backend, |c| {
        c.proxy.ledger_flush_ms = 3_600_000;
        c.proxy.ledger_batch = 1_000_000;
        c.proxy.change_poll_ms = 3_600_000;
    })
    .await;
    let (_, token) = gw.key(&[]).await;
    let (revoked_id, revoked) = gw.key(&[]).await;
    gw.app
        .ok(
            &gw.owner,
            "revoke_key",
            &[("org_id", &gw.org), ("key_id", &revoked_id)],
        )
        .await;
    let (_, limited) = gw.key(&[("rpm", "1")]).await;
    let (_, broke) = gw.key(&[("max_budget", "0.000001")]).await;
    gw.app.feed_caught_up().await;
    let before = gw
        .app
        .state
        .db
        .acquires
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(before > 0, "the counter counts");

    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            gw.call(&token, "chat/completions", chat_body("mock/echo", "plain"))
                .await
                .0,
        );
    }
    for _ in 0..5 {
        let mut b = chat_body("mock/echo", "streamed");
        b["stream"] = json!(true);
        let res = gw.post(&token, "chat/completions", b).await;
        statuses.push(res.status().as_u16());
        let _ = res.text().await;
        statuses.push(
            gw.call(
                &token,
                "embeddings",
                json!({ "model": "mock/embed", "input": "x" }),
            )
            .await
            .0,
        );
        statuses.push(
            gw.call(
                &token,
                "completions",
                json!({ "model": "mock/echo", "prompt": "x" }),
            )
            .await
            .0,
        );
        let res = gw
            .http
            .get(format!("{}/v1/models", gw.app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    let refused = [
        gw.call(&revoked, "chat/completions", chat_body("mock/echo", "x"))
            .await
            .0,
        gw.call(
            "sk-tg-unknown",
            "chat/completions",
            chat_body("mock/echo", "x"),
        )
        .await
        .0,
        gw.call(&token, "chat/completions", chat_body("openai/gpt-4o", "x"))
            .await
            .0,
        gw.call(&limited, "chat/completions", chat_body("mock/echo", "x"))
            .await
            .0,
        gw.call(&limited, "chat/completions", chat_body("mock/echo", "x"))
            .await
            .0,
        gw.call(&broke, "chat/completions", priced_body()).await.0,
    ];
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(refused, [401, 401, 403, 200, 429, 402]);
    let after = gw
        .app
        .state
        .db
        .acquires
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(after, before, "a request took a database connection");

    // The ledger got them all once it wrote.
    gw.app.gateway.ledger.flush().await;
    let mut conn = gw.app.sql().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // 36 answered, plus the 429 and the 402 (refusals before admission —
    // 401, 403 — and model listings are not metered).
    assert_eq!(n, 20 + 5 * 3 + 1 + 2);
}
both!(no_database_on_the_request_path);

async fn a_client_leaving_mid_stream_is_billed_for_what_was_generated(backend: Backend) {
    let gw = Gw::new(backend).await;
    gw.set_mock_latency("40").await;
    let c = cost_of_one(&gw).await;
    // Room for two worst-case requests: with the first one's reservation
    // leaked, its partial spend would leave no room for the second.
    let (key_id, token) = gw.key(&[("max_budget", &usd(2 * c))]).await;
    let mut body = priced_body();
    body["stream"] = json!(true);
    let res = gw.post(&token, "chat/completions", body.clone()).await;
    assert_eq!(res.status(), 200);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut stream = res.bytes_stream();
    let mut chunks = 0;
    let mut seen = String::new();
    while chunks < 3 {
        let bytes = stream.next().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&bytes));
        chunks = sse_data(&seen).len();
    }
    drop(stream);
    // The server notices at its next write.
    let mut event = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        event = gw
            .events(&key_id)
            .await
            .into_iter()
            .find(|e| e.0 == request_id);
        if event.is_some() {
            break;
        }
    }
    let Some((_, status, tin, tout, cost)) = event else {
        panic!("no usage event for the abandoned stream")
    };
    assert_eq!(status, 499);
    assert!(tin > 50, "prompt tokens billed: {tin}");
    assert!((2..50).contains(&tout), "partial output billed: {tout}");
    assert_eq!(cost, (tin + tout) * 10);
    let (s, v) = gw.call(&token, "chat/completions", priced_body()).await;
    assert_eq!(s, 200, "the reservation was released: {v}");
}
both!(a_client_leaving_mid_stream_is_billed_for_what_was_generated);

/// A fake OpenAI-compatible upstream: `/ok` answers without usage, `/boom`
/// 503s, `/junk` answers non-JSON, `/stall` streams one chunk then hangs.
/// It records the last body it was sent.
async fn fake_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Value>>) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let s1 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok/chat/completions",
            post(move |axum::Json(b): axum::Json<Value>| {
                let seen = s1.clone();
                async move {
                    *seen.lock().unwrap() = b;
                    axum::Json(json!({ "id": "x", "object": "chat.completion", "model": "up",
                        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "four words right here" }, "finish_reason": "stop" }] }))
                }
            }),
        )
        .route(
            "/boom/chat/completions",
            post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": { "message": "overloaded" } }))) }),
        )
        .route("/junk/chat/completions", post(|| async { "<html>not json</html>" }))
        .route(
            "/stall/chat/completions",
            post(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(
                        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
                    ))
                });
                let body = axum::body::Body::from_stream(first.chain(futures::stream::pending()));
                ([("content-type", "text/event-stream")], body)
            }),
        )
        .route(
            "/reset/chat/completions",
            post(|| async {
                let first = futures::stream::iter([
                    Ok(bytes::Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n")),
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
                ])
                // The first chunk goes out before the connection breaks.
                .then(|item| async move {
                    if item.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    item
                });
                ([("content-type", "text/event-stream")], axum::body::Body::from_stream(first))
            }),
        )
        .route(
            "/slow/chat/completions",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

async fn upstream_faults_are_openai_shaped_and_retried(backend: Backend) {
    let gw = Gw::with(backend, |c| {
        c.proxy.upstream_timeout_ms = 500;
        c.proxy.stream_idle_timeout_ms = 300;
    })
    .await;
    let (up, seen) = fake_upstream().await;
    let provider = |name: &str, path: &str| {
        vec![
            ("org_id", gw.org.clone()),
            ("name", name.to_owned()),
            ("kind", "openai".to_owned()),
            ("base_url", format!("{up}/{path}")),
            ("api_key", "sk-upstream-secret-0000".to_owned()),
            ("latency_ms", String::new()),
        ]
    };
    for (name, path) in [
        ("good", "ok"),
        ("boom", "boom"),
        ("junk", "junk"),
        ("stall", "stall"),
        ("slow", "slow"),
        ("reset", "reset"),
    ] {
        let form = provider(name, path);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        gw.app.ok(&gw.owner, "upsert_provider", &form).await;
    }
    // A provider nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    gw.app
        .ok(
            &gw.owner,
            "upsert_provider",
            &[
                ("org_id", &gw.org),
                ("name", "dead"),
                ("kind", "openai"),
                ("base_url", &dead),
                ("api_key", ""),
                ("latency_ms", ""),
            ],
        )
        .await;
    let model = |id: &str, provider: &str, fallbacks: &str| {
        vec![
            ("org_id", gw.org.clone()),
            ("id", id.to_owned()),
            ("provider", provider.to_owned()),
            ("upstream", "up-model".to_owned()),
            ("input_price", "10".to_owned()),
            ("output_price", "10".to_owned()),
            ("context_window", "1000".to_owned()),
            ("fallbacks", fallbacks.to_owned()),
        ]
    };
    let ids = [
        "t/good", "t/boom", "t/junk", "t/stall", "t/slow", "t/dead", "t/retry", "t/reset",
    ];
    for (id, p, f) in [
        ("t/good", "good", ""),
        ("t/boom", "boom", ""),
        ("t/junk", "junk", ""),
        ("t/stall", "stall", ""),
        ("t/slow", "slow", ""),
        ("t/dead", "dead", ""),
        ("t/retry", "boom", "dead:up-model, good:other-name"),
        ("t/reset", "reset", ""),
    ] {
        let form = model(id, p, f);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        gw.app.ok(&gw.owner, "upsert_model", &form).await;
    }
    let mut settings: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("models[{}]", i + 4), (*m).to_owned()))
        .collect();
    settings.push(("models[0]".into(), "mock/echo".into()));
    let settings_ref: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    gw.project_settings(&settings_ref).await;
    let p = gw
        .app
        .ok(
            &gw.owner,
            "get_project",
            &[("org_id", &gw.org), ("project_id", &gw.project)],
        )
        .await;
    assert_eq!(p["models"].as_array().unwrap().len(), 12, "{p}");
    let (key_id, token) = gw.key(&[]).await;

    // Passed through unchanged but for the model; usage counted where absent.
    let mut body = chat_body("t/good", "hi");
    body["custom_field"] = json!({ "kept": true });
    let (s, v) = gw.call(&token, "chat/completions", body).await;
    assert_eq!(s, 200, "{v}");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent["model"], "up-model");
    assert_eq!(sent["custom_field"], json!({ "kept": true }));
    assert_eq!(sent["messages"][0]["content"], "hi");

    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("t/boom", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (502, "upstream_error"));
    // The status, and a reference instead of the upstream's own words.
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("503") && msg.contains("reference"), "{v}");
    assert!(!msg.contains("overloaded"), "{v}");
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("t/junk", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (502, "upstream_malformed"));
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("t/dead", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (502, "upstream_unreachable"));
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("t/slow", "hi"))
        .await;
    assert_eq!((s, code(&v).as_str()), (504, "upstream_timeout"));
    assert!(!v.to_string().contains("sk-upstream-secret"));

    // A stream that stalls ends with an error event, not a hang.
    let err = stream_error(&gw, &token, "t/stall").await;
    assert_eq!(err["error"]["code"], "upstream_timeout");

    // A connection reset mid-stream ends it with an error event too.
    let err = stream_error(&gw, &token, "t/reset").await;
    assert_eq!(err["error"]["code"], "upstream_unreachable", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("broke"),
        "{err}"
    );

    // The first deployment 503s, the second is down, the third answers.
    let (s, v) = gw
        .call(&token, "chat/completions", chat_body("t/retry", "hi"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(seen.lock().unwrap()["model"], "other-name");

    // Every failure released its reservation; the answers without usage
    // were counted.
    let events = gw.events(&key_id).await;
    let mut statuses: Vec<i64> = events.iter().map(|e| e.1).collect();
    statuses.sort_unstable();
    // good and retry; boom, junk, dead, the reset stream; slow and the stalled stream.
    assert_eq!(statuses, [200, 200, 502, 502, 502, 502, 504, 504]);
    // Failures before any answer cost nothing; the broken streams are billed
    // for the prompt and the one token they got.
    let failed: Vec<_> = events.iter().filter(|e| e.1 >= 500).collect();
    assert_eq!(failed.iter().filter(|e| e.4 == 0).count(), 4, "{failed:?}");
    assert_eq!(
        failed.iter().filter(|e| e.3 == 1 && e.4 > 0).count(),
        2,
        "{failed:?}"
    );
    let good = events.iter().find(|e| e.1 == 200).unwrap();
    assert_eq!(good.3, 4, "four words right here");
}
both!(upstream_faults_are_openai_shaped_and_retried);

async fn anthropic_is_translated_both_ways(backend: Backend) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Value::Null, String::new())));
    let s1 = seen.clone();
    let app = axum::Router::new().route(
        "/v1/messages",
        post(move |headers: axum::http::HeaderMap, axum::Json(b): axum::Json<Value>| {
            let seen = s1.clone();
            async move {
                let key = headers["x-api-key"].to_str().unwrap().to_owned();
                let stream = b["stream"] == json!(true);
                *seen.lock().unwrap() = (b, key);
                if stream {
                    let events = [
                        ("message_start", json!({ "type": "message_start", "message": { "usage": { "input_tokens": 12, "output_tokens": 1 } } })),
                        ("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Bon" } })),
                        ("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "jour" } })),
                        ("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 2 } })),
                        ("message_stop", json!({ "type": "message_stop" })),
                    ];
                    let body: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
                    ([("content-type", "text/event-stream")], body).into_response()
                } else {
                    axum::Json(json!({ "id": "msg_1", "type": "message", "role": "assistant",
                        "content": [{ "type": "text", "text": "Bonjour" }], "stop_reason": "end_turn",
                        "usage": { "input_tokens": 12, "output_tokens": 2 } }))
                    .into_response()
                }
            }
        }),
    );
    use axum::response::IntoResponse;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    let gw = Gw::new(backend).await;
    gw.app
        .ok(
            &gw.owner,
            "upsert_provider",
            &[
                ("org_id", &gw.org),
                ("name", "anthropic"),
                ("kind", "anthropic"),
                ("base_url", &url),
                ("api_key", "sk-ant-test-9999"),
                ("latency_ms", ""),
            ],
        )
        .await;
    gw.project_settings(&[("models[4]", "anthropic/claude-3-5-haiku")])
        .await;
    let (key_id, token) = gw.key(&[]).await;
    let body = json!({ "model": "anthropic/claude-3-5-haiku", "max_tokens": 64, "messages": [
        { "role": "system", "content": "Answer in French." }, { "role": "user", "content": "Hello" } ] });
    let (s, v) = gw.call(&token, "chat/completions", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    let (sent, key) = seen.lock().unwrap().clone();
    assert_eq!(
        key, "sk-ant-test-9999",
        "the provider key, unsealed, went upstream"
    );
    assert_eq!(sent["system"], "Answer in French.");
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");
    assert_eq!(sent["max_tokens"], 64);

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({ "include_usage": true });
    let res = gw.post(&token, "chat/completions", stream_body).await;
    assert_eq!(res.status(), 200);
    let (chunks, text) = stream_chunks(&res.text().await.unwrap());
    assert_eq!(text, "Bonjour");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 2);

    let events = gw.events(&key_id).await;
    assert_eq!(events.len(), 2);
    // claude-3-5-haiku: $0.80 in, $4.00 out per million tokens.
    for e in events {
        assert_eq!((e.1, e.2, e.3), (200, 12, 2));
        assert_eq!(e.4, (12 * 800_000 + 2 * 4_000_000 + 999_999) / 1_000_000);
    }
}
both!(anthropic_is_translated_both_ways);

async fn providers_and_spending_are_the_owners_and_billings(backend: Backend) {
    let gw = Gw::new(backend).await;
    let app = &gw.app;
    let [member, billing] = app
        .add_members(
            &gw.owner,
            &gw.org,
            [("member@a.test", "member"), ("billing@a.test", "billing")],
        )
        .await;
    let (stranger, other_org) = app
        .outside_owner(&gw.owner, &gw.org, "stranger@b.test", "Other")
        .await;
    let add = |org: &str| {
        vec![
            ("org_id", org.to_owned()),
            ("name", "oa".to_owned()),
            ("kind", "openai".to_owned()),
            ("base_url", "https://api.openai.com/v1".to_owned()),
            ("api_key", "sk-live-provider-key-7f3a".to_owned()),
            ("latency_ms", String::new()),
        ]
    };
    let form = |v: &Vec<(&'static str, String)>| {
        v.iter().map(|(k, x)| (*k, x.clone())).collect::<Vec<_>>()
    };
    let call = |c: &reqwest::Client, f: &str, v: Vec<(&'static str, String)>| {
        let v: Vec<(&str, String)> = v;
        let c = c.clone();
        let f = f.to_owned();
        async move {
            let r: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
            app.call(&c, &f, &r).await
        }
    };
    // Wrong role, wrong organization.
    let (s, v) = call(&member, "upsert_provider", form(&add(&gw.org))).await;
    assert_eq!(s, 403, "{v}");
    assert!(v.to_string().contains("external keys"), "{v}");
    assert_eq!(
        call(&billing, "upsert_provider", form(&add(&gw.org)))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&stranger, "upsert_provider", form(&add(&gw.org)))
            .await
            .0,
        404
    );
    assert_eq!(
        call(&gw.owner, "upsert_provider", form(&add(&other_org)))
            .await
            .0,
        404
    );
    // The owner's works; the key is never shown again, only its hint.
    let (s, v) = call(&gw.owner, "upsert_provider", form(&add(&gw.org))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["key_hint"], "…7f3a");
    let list = app
        .ok(&gw.owner, "list_providers", &[("org_id", &gw.org)])
        .await;
    assert!(!list.to_string().contains("sk-live-provider-key"));
    assert_eq!(list.as_array().unwrap().len(), 2, "mock and oa: {list}");
    assert!(
        !crate::helpers::dump(&app.db)
            .await
            .contains("sk-live-provider-key"),
        "sealed at rest"
    );
    let del = |org: &str| vec![("org_id", org.to_owned()), ("name", "oa".to_owned())];
    assert_eq!(call(&member, "delete_provider", del(&gw.org)).await.0, 403);
    assert_eq!(
        call(&stranger, "delete_provider", del(&gw.org)).await.0,
        404
    );
    assert_eq!(
        call(&gw.owner, "delete_provider", del(&gw.org)).await.0,
        200
    );

    // Spending: the cap is billing's (and the owner's), content logging the owner's.
    let spend = |org: &str, cap: &str, logging: &str| {
        vec![
            ("org_id", org.to_owned()),
            ("spend_cap", cap.to_owned()),
            ("spend_cap_reset", "monthly".to_owned()),
            ("content_logging", logging.to_owned()),
        ]
    };
    assert_eq!(
        call(&member, "update_spending", spend(&gw.org, "100", ""))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&stranger, "update_spending", spend(&gw.org, "100", ""))
            .await
            .0,
        404
    );
    let (s, v) = call(&billing, "update_spending", spend(&gw.org, "100", "")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spend_cap_micros"], 100_000_000);
    let (s, v) = call(&billing, "update_spending", spend(&gw.org, "100", "on")).await;
    assert_eq!(s, 403, "{v}");
    assert!(v.to_string().contains("edit organization"), "{v}");
    assert_eq!(
        call(&gw.owner, "update_spending", spend(&gw.org, "100", "on"))
            .await
            .0,
        200
    );
    let (s, v) = call(&gw.owner, "update_spending", spend(&gw.org, "-5", "on")).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("spend_cap")), "{v}");
    let audit = app
        .ok(&gw.owner, "list_audit_events", &[("org_id", &gw.org)])
        .await;
    for action in [
        "provider.upserted",
        "provider.deleted",
        "org.spending_changed",
    ] {
        assert!(audit.to_string().contains(action), "{action} audited");
    }
}
both!(providers_and_spending_are_the_owners_and_billings);

async fn a_new_organization_serves_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, first) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let second = app.ok(&owner, "create_org", &[("name", "Second")]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Straight to a project and a key: nothing else of either organization changed.
    for org in [first, second] {
        let project = app.create_project(&owner, &org, "P").await;
        let (_, token) = app.create_key(&owner, &org, &project, &[]).await;
        let res = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(&token)
            .json(&chat_body("mock/echo", "first words"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}
both!(a_new_organization_serves_at_once);

async fn the_ledger_is_idempotent_by_request_id(backend: Backend) {
    use tollgate_app::core::usage::{write_batch, UsageEvent};
    let gw = Gw::new(backend).await;
    let (key_id, _) = gw.key(&[]).await;
    // 250 events: more than one INSERT statement's worth.
    let events: Vec<UsageEvent> = (0..250)
        .map(|i| UsageEvent {
            request_id: format!("req-{i}"),
            at: 1_700_000_000_000 + i,
            org_id: gw.org.clone(),
            project_id: gw.project.clone(),
            key_id: key_id.clone(),
            model: "mock/echo".into(),
            requested_model: "mock/echo".into(),
            provider: "mock".into(),
            endpoint: "chat.completions",
            stream: i % 2 == 0,
            tokens_in: 10,
            tokens_out: 5,
            cost_micros: 7,
            status: 200,
            error_code: (i % 10 == 0).then(|| "x".to_owned()),
            latency_ms: 3,
            prompt_id: String::new(),
            prompt_version: 0,
        })
        .collect();
    let mut conn = gw.app.sql().await;
    write_batch(&mut conn, &events, &[]).await.unwrap();
    // A retried batch, with one new event in it.
    let mut again = events[200..].to_vec();
    again.push(UsageEvent {
        request_id: "req-new".into(),
        ..events[0].clone()
    });
    write_batch(&mut conn, &again, &[]).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 251);
    let spend: i64 = sqlx::query_scalar("SELECT spend_micros FROM api_keys WHERE id = $1")
        .bind(&key_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(spend, 251 * 7);
}
both!(the_ledger_is_idempotent_by_request_id);

/// Status and JSON body, or status 0 where the server dropped the
/// connection (a panic in a debug build).
async fn try_call(gw: &Gw, token: &str, path: &str, body: Value) -> (u16, Value) {
    match gw
        .http
        .post(format!("{}/v1/{path}", gw.app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// The security test's scenario: `max_tokens: i64::MAX` with a long prompt
/// on a key with TPM 100 and a $1 budget was admitted and spent $16.
async fn hostile_numbers_are_refused_and_budgets_hold(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw
        .key(&[
            ("tpm", "100"),
            ("max_budget", "1"),
            ("budget_reset", "never"),
        ])
        .await;
    let long = LONG.repeat(20);
    for _ in 0..5 {
        let mut b = chat_body(PRICED, &long);
        b["max_tokens"] = json!(i64::MAX);
        let (s, v) = try_call(&gw, &token, "chat/completions", b).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some("max_tokens")),
            "{v}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // Every numeric input of /v1: i64::MAX, above the context window,
    // negative, zero, fractional, beyond i64, a string.
    let hostile = [
        json!(i64::MAX),
        json!(128_001),
        json!(1_000_000_000_000_i64),
        json!(-1),
        json!(i64::MIN),
        json!(0),
        json!(1.5),
        json!(u64::MAX),
        json!(1e300),
        json!("10"),
    ];
    for (path, field) in [
        ("chat/completions", "max_tokens"),
        ("chat/completions", "max_completion_tokens"),
        ("completions", "max_tokens"),
    ] {
        for n in &hostile {
            let mut b = if path == "completions" {
                json!({ "model": PRICED, "prompt": LONG })
            } else {
                chat_body(PRICED, LONG)
            };
            b[field] = n.clone();
            for stream in [false, true] {
                b["stream"] = json!(stream);
                let (s, v) = try_call(&gw, &token, path, b.clone()).await;
                assert_eq!(
                    (s, v["error"]["param"].as_str()),
                    (400, Some(field)),
                    "{path} {field}={n}: {v}"
                );
            }
        }
    }
    // Embeddings read no such field; hostile numbers there change nothing.
    let (s, v) = try_call(
        &gw,
        &token,
        "embeddings",
        json!({ "model": "mock/embed", "input": [[i64::MAX, -1]], "dimensions": i64::MAX,
                "max_tokens": i64::MAX }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The largest request the window allows is admitted on the counters'
    // terms: TPM 100 refuses it, and without TPM the $1 budget does.
    let mut b = chat_body(PRICED, LONG);
    b["max_tokens"] = json!(128_000);
    let (s, v) = try_call(&gw, &token, "chat/completions", b.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "{v}"
    );
    let (no_tpm_id, no_tpm) = gw
        .key(&[("max_budget", "1"), ("budget_reset", "never")])
        .await;
    for _ in 0..3 {
        let (s, v) = try_call(&gw, &no_tpm, "chat/completions", b.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (402, Some("key_budget_exceeded")),
            "{v}"
        );
    }
    for id in [&key_id, &no_tpm_id] {
        let spent: i64 = gw.events(id).await.iter().map(|e| e.4).sum();
        assert!(
            (0..=1_000_000).contains(&spent),
            "spent {spent} micro-USD of $1"
        );
    }
}
both!(hostile_numbers_are_refused_and_budgets_hold);

/// An upstream that lies about usage: negative counts (plain and streamed),
/// i64::MAX, and an Anthropic answer with i64::MAX tokens.
async fn hostile_usage_upstream() -> String {
    use axum::response::IntoResponse;
    use axum::routing::post;
    /// Answers with `usage`, whole or as a stream as asked.
    fn lying(usage: Value) -> axum::routing::MethodRouter {
        post(move |axum::Json(b): axum::Json<Value>| async move {
            let text = "four words right here";
            if b["stream"] == json!(true) {
                let chunk = json!({ "choices": [{ "index": 0, "delta": { "content": text } }] });
                let last = json!({ "choices": [], "usage": usage });
                let body = format!("data: {chunk}\n\ndata: {last}\n\ndata: [DONE]\n\n");
                ([("content-type", "text/event-stream")], body).into_response()
            } else {
                axum::Json(json!({ "id": "x", "object": "chat.completion", "model": "up",
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
                    "usage": usage }))
                .into_response()
            }
        })
    }
    let app = axum::Router::new()
        .route(
            "/neg/chat/completions",
            lying(json!({ "prompt_tokens": -1_000_000_000_i64, "completion_tokens": -100_000_000_000_i64 })),
        )
        .route(
            "/max/chat/completions",
            lying(json!({ "prompt_tokens": i64::MAX, "completion_tokens": i64::MAX })),
        )
        .route(
            "/ant/messages",
            post(|| async {
                axum::Json(json!({ "id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{ "type": "text", "text": "four words right here" }], "stop_reason": "end_turn",
                    "usage": { "input_tokens": i64::MAX, "output_tokens": i64::MAX } }))
            }),
        )
        .route(
            "/antnone/messages",
            // Anthropic-shaped, whole or streamed, with no usage at all.
            post(|axum::Json(b): axum::Json<Value>| async move {
                if b["stream"] == json!(true) {
                    let events = [
                        ("message_start", json!({ "type": "message_start", "message": { "id": "msg_2" } })),
                        ("content_block_delta", json!({ "type": "content_block_delta", "index": 0,
                            "delta": { "type": "text_delta", "text": "four words right here" } })),
                        ("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" } })),
                        ("message_stop", json!({ "type": "message_stop" })),
                    ];
                    let body: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
                    ([("content-type", "text/event-stream")], body).into_response()
                } else {
                    axum::Json(json!({ "id": "msg_2", "type": "message", "role": "assistant",
                        "content": [{ "type": "text", "text": "four words right here" }], "stop_reason": "end_turn" }))
                    .into_response()
                }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// Adds an upstream provider and a model served by it at 10 USD per
/// million tokens; returns the model's id.
async fn fake_model(gw: &Gw, name: &str, kind: &str, base_url: &str) -> String {
    gw.app
        .ok(
            &gw.owner,
            "upsert_provider",
            &[
                ("org_id", &gw.org),
                ("name", name),
                ("kind", kind),
                ("base_url", base_url),
                ("api_key", "sk-upstream-secret-0000"),
                ("latency_ms", ""),
            ],
        )
        .await;
    let id = format!("t/{name}");
    gw.app
        .ok(
            &gw.owner,
            "upsert_model",
            &[
                ("org_id", &gw.org),
                ("id", &id),
                ("provider", name),
                ("upstream", "up-model"),
                ("input_price", "10"),
                ("output_price", "10"),
                ("context_window", "1000"),
                ("fallbacks", ""),
            ],
        )
        .await;
    id
}

/// Every reader of usage and spend, as the owner and a provisioning key:
/// each must answer 200.
async fn readers_answer(gw: &Gw) {
    let form = [("org_id", gw.org.as_str()), ("name", "reader")];
    let pk = gw.field_of("create_provisioning_key", &form, "token").await;
    for path in [
        format!("/key/list?team_id={}", gw.project),
        "/key/list?return_full_object=true".to_owned(),
        format!("/api/v1/keys?project={}", gw.project),
        "/api/v1/usage?group_by=key".to_owned(),
        "/api/v1/usage?group_by=project".to_owned(),
        "/api/v1/usage".to_owned(),
    ] {
        let res = gw.get(&pk, &path).await;
        let status = res.status().as_u16();
        assert_eq!(status, 200, "{path}: {}", res.text().await.unwrap());
    }
    for (name, form) in [
        (
            "list_keys",
            vec![
                ("org_id", gw.org.as_str()),
                ("project_id", gw.project.as_str()),
            ],
        ),
        ("my_keys", vec![("org_id", gw.org.as_str())]),
    ] {
        let (s, v) = gw.app.call(&gw.owner, name, &form).await;
        assert_eq!(s, 200, "{name}: {v}");
    }
}

async fn hostile_upstream_usage_is_not_billed(backend: Backend) {
    let gw = Gw::new(backend).await;
    let up = hostile_usage_upstream().await;
    let neg = fake_model(&gw, "neg", "openai", &format!("{up}/neg")).await;
    let max = fake_model(&gw, "max", "openai", &format!("{up}/max")).await;
    let ant = fake_model(&gw, "ant", "anthropic", &format!("{up}/ant")).await;
    let none = fake_model(&gw, "antnone", "anthropic", &format!("{up}/antnone")).await;
    gw.project_settings(&[
        ("models[4]", &neg),
        ("models[5]", &max),
        ("models[6]", &ant),
        ("models[7]", &none),
    ])
    .await;
    let (key_id, token) = gw.key(&[]).await;
    for model in [&neg, &max, &ant, &none] {
        for stream in [false, true] {
            if model == &ant && stream {
                continue;
            }
            let mut b = chat_body(model, "hi");
            b["max_tokens"] = json!(50);
            b["stream"] = json!(stream);
            b["stream_options"] = json!({ "include_usage": true });
            let res = match gw
                .http
                .post(format!("{}/v1/chat/completions", gw.app.url))
                .bearer_auth(&token)
                .json(&b)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => panic!("{model} stream={stream}: the server dropped the request: {e}"),
            };
            assert_eq!(res.status(), 200, "{model} stream={stream}");
            let _ = res.text().await;
        }
    }
    let events = gw.events(&key_id).await;
    assert_eq!(events.len(), 7, "{events:?}");
    for e in &events {
        // Counted instead (also where no usage was reported at all): the
        // prompt's estimate, four words out.
        assert!((1..=1000).contains(&e.2), "tokens in {e:?}");
        assert!((1..=50).contains(&e.3), "tokens out {e:?}");
        assert!((1..=10_000).contains(&e.4), "cost {e:?}");
    }
    readers_answer(&gw).await;
}
both!(hostile_upstream_usage_is_not_billed);

/// Extreme values already stored (by an older version): every reader
/// still answers, and the gateway still starts.
async fn extreme_stored_usage_is_read(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw.key(&[]).await;
    assert_eq!(
        gw.call(&token, "chat/completions", chat_body("mock/echo", "hi"))
            .await
            .0,
        200
    );
    gw.app.gateway.ledger.flush().await;
    let mut conn = gw.app.sql().await;
    let day = tollgate_app::core::now_ms() / 86_400_000;
    for (d, model) in [(day, "mock/x"), (day, "mock/y"), (day - 1, "mock/x")] {
        sqlx::query(
            "INSERT INTO usage_daily (org_id, day, project_id, key_id, model, requested_model, endpoint, \
             requests, errors, tokens_in, tokens_out, cost_micros) \
             VALUES ($1, $2, $3, $4, $5, $5, 'chat.completions', $6, $6, $6, $6, $6)",
        )
        .bind(&gw.org)
        .bind(d)
        .bind(&gw.project)
        .bind(&key_id)
        .bind(model)
        .bind(i64::MAX)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO usage_events (request_id, at, org_id, project_id, key_id, model, requested_model, \
         provider, endpoint, stream, tokens_in, tokens_out, cost_micros, status, error_code, latency_ms) \
         SELECT 'extreme-' || request_id, at, org_id, project_id, key_id, model, requested_model, provider, \
         endpoint, stream, $1, $1, $1, status, error_code, latency_ms FROM usage_events",
    )
    .bind(i64::MAX)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE api_keys SET spend_micros = $1 WHERE id = $2")
        .bind(i64::MAX)
        .bind(&key_id)
        .execute(&mut conn)
        .await
        .unwrap();
    readers_answer(&gw).await;
    // A restart reads the same sums.
    let again =
        tollgate_server::proxy::Gateway::start(&gw.app.state, &Config::default().proxy).await;
    assert!(
        again.is_ok(),
        "the gateway no longer starts: {:?}",
        again.err()
    );
}
both!(extreme_stored_usage_is_read);

/// Sums already at the top of BIGINT (a ledger from before usage was
/// bounded): new events still land, and the sums stay at the top instead of
/// failing the batch (PostgreSQL: "bigint out of range", retried for ever)
/// or turning into REALs (SQLite).
async fn the_ledger_saturates_at_extreme_stored_sums(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw.key(&[]).await;
    let mut conn = gw.app.sql().await;
    let day = tollgate_app::core::now_ms() / 86_400_000;
    sqlx::query(
        "INSERT INTO usage_daily (org_id, day, project_id, key_id, model, requested_model, endpoint, \
         requests, errors, tokens_in, tokens_out, cost_micros) \
         VALUES ($1, $2, $3, $4, 'mock/echo', 'mock/echo', 'chat.completions', $5, 0, $5, $5, $5)",
    )
    .bind(&gw.org)
    .bind(day)
    .bind(&gw.project)
    .bind(&key_id)
    .bind(i64::MAX)
    .execute(&mut conn)
    .await
    .unwrap();
    for _ in 0..2 {
        let (status, _) = gw
            .call(&token, "chat/completions", chat_body("mock/echo", "hi"))
            .await;
        assert_eq!(status, 200);
    }
    let flushed =
        tokio::time::timeout(Duration::from_secs(60), gw.app.gateway.ledger.flush()).await;
    assert!(flushed.is_ok(), "the ledger writer is stuck on the batch");
    let row = sqlx::query(
        "SELECT requests, tokens_in, tokens_out FROM usage_daily WHERE key_id = $1 AND model = 'mock/echo'",
    )
    .bind(&key_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let sums: (i64, i64, i64) = (
        row.try_get(0).unwrap(),
        row.try_get(1).unwrap(),
        row.try_get(2).unwrap(),
    );
    assert_eq!(sums, (i64::MAX, i64::MAX, i64::MAX));
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events WHERE key_id = $1")
        .bind(&key_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(events, 2);
}
both!(the_ledger_saturates_at_extreme_stored_sums);

/// What an owner enters for a model is bounded, so that one request's worst
/// case (context window x price) stays far inside the ledger's integers.
async fn model_prices_and_windows_are_bounded(backend: Backend) {
    let gw = Gw::new(backend).await;
    for (field, value) in [
        ("context_window", "9223372036854775807"),
        ("context_window", "100000001"),
        ("input_price", "9000000000000"),
        ("output_price", "1000000.01"),
    ] {
        let mut form = vec![
            ("org_id", gw.org.as_str()),
            ("id", "mock/huge"),
            ("provider", "mock"),
            ("upstream", "echo"),
            ("input_price", "10"),
            ("output_price", "10"),
            ("context_window", "128000"),
        ];
        form.retain(|(k, _)| *k != field);
        form.push((field, value));
        let (status, v) = gw.app.call(&gw.owner, "upsert_model", &form).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{value}: {v}"
        );
    }
}
both!(model_prices_and_windows_are_bounded);

/// `n` and `best_of` ask for several answers, each of which may use the whole
/// output allowance: bounded, and each reserved.
async fn several_answers_are_bounded(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[]).await;
    let mut body = chat_body("mock/echo", "hi");
    for (field, value) in [
        ("n", json!(0)),
        ("n", json!(1000)),
        ("best_of", json!(-1)),
        ("n", json!("2")),
    ] {
        let mut b = body.clone();
        b[field] = value.clone();
        let (status, v) = gw.call(&token, "chat/completions", b).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(field)),
            "{value}: {v}"
        );
    }
    body["n"] = json!(2);
    assert_eq!(gw.call(&token, "chat/completions", body).await.0, 200);
}
both!(several_answers_are_bounded);

/// An upstream whose errors carry secrets: a 401 echoing the provider key,
/// a 500 with internal details, the same for Anthropic, and an Anthropic
/// stream that fails with the key in its error event.
async fn leaky_upstream() -> String {
    use axum::http::StatusCode;
    use axum::routing::post;
    const LEAK: &str = "Incorrect API key provided: Bearer sk-upstream-secret-0000; see http://10.0.0.5/admin?password=hunter2";
    let app = axum::Router::new()
        .route(
            "/l401/chat/completions",
            post(|| async { (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": { "message": LEAK } }))) }),
        )
        .route(
            "/l500/chat/completions",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, LEAK) }),
        )
        .route(
            "/ostream/chat/completions",
            post(|| async {
                let chunk = json!({ "choices": [{ "index": 0, "delta": { "content": "an \"error\" word" } }] });
                let err = json!({ "error": { "message": LEAK, "type": "server_error" } });
                ([("content-type", "text/event-stream")], format!("data: {chunk}\n\ndata: {err}\n\n"))
            }),
        )
        .route(
            // A failure whose body never ends: read up to a cap, not forever.
            "/endless/chat/completions",
            post(|| async {
                let chunk = axum::body::Bytes::from(format!("{LEAK} ").repeat(100));
                let body = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                (StatusCode::INTERNAL_SERVER_ERROR, axum::body::Body::from_stream(body))
            }),
        )
        .route(
            "/a401/messages",
            post(|| async {
                (StatusCode::UNAUTHORIZED, axum::Json(json!({ "type": "error", "error": { "type": "authentication_error", "message": LEAK } })))
            }),
        )
        .route(
            "/a500/messages",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, LEAK) }),
        )
        .route(
            "/astream/messages",
            post(|| async {
                let err = json!({ "type": "error", "error": { "type": "api_error", "message": LEAK } });
                ([("content-type", "text/event-stream")], format!("event: error\ndata: {err}\n\n"))
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

async fn upstream_error_bodies_stay_in_the_log(backend: Backend) {
    let gw = Gw::new(backend).await;
    let up = leaky_upstream().await;
    let mut models = Vec::new();
    for (name, kind) in [
        ("l401", "openai"),
        ("l500", "openai"),
        ("ostream", "openai"),
        ("endless", "openai"),
        ("a401", "anthropic"),
        ("a500", "anthropic"),
        ("astream", "anthropic"),
    ] {
        models.push(fake_model(&gw, name, kind, &format!("{up}/{name}")).await);
    }
    let settings: Vec<(String, String)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("models[{}]", i + 4), m.clone()))
        .collect();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    gw.project_settings(&settings).await;
    let (_, token) = gw.key(&[]).await;
    for (model, stream, status) in [
        ("t/l401", false, 401),
        ("t/l401", true, 401),
        ("t/l500", false, 502),
        ("t/l500", true, 502),
        ("t/ostream", true, 200),
        ("t/endless", false, 502),
        ("t/endless", true, 502),
        ("t/a401", false, 401),
        ("t/a401", true, 401),
        ("t/a500", false, 502),
        ("t/a500", true, 502),
        ("t/astream", true, 200),
    ] {
        let mut b = chat_body(model, "hi");
        b["stream"] = json!(stream);
        let res = gw.post(&token, "chat/completions", b).await;
        assert_eq!(res.status(), status, "{model} stream={stream}");
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let text = res.text().await.unwrap();
        for leak in ["sk-upstream", "hunter2", "10.0.0.5", "Incorrect API key"] {
            assert!(
                !text.contains(leak),
                "{model} stream={stream} leaks {leak}: {text}"
            );
        }
        let err: Value = if status == 200 {
            serde_json::from_str(sse_data(&text).last().unwrap()).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(err["error"]["type"], "upstream_error", "{model}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&id), "{model}: no reference in {msg}");
    }
}
both!(upstream_error_bodies_stay_in_the_log);

/// Sends headers announcing a body of `mib` MiB and 1 KiB of it, then
/// holds the rest; returns the status line the server answers with meanwhile.
async fn answer_while_body_held(url: &str, auth: Option<&str>, mib: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        mib * 1024 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b' '; 1024]).await.unwrap();
    let mut buf = vec![0_u8; 4096];
    // The rest of the body never comes: an answer can only be one that did
    // not wait for it.
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer while the body was held back"))
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn bodies_are_not_read_before_the_key_is_checked(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (key_id, token) = gw.key(&[]).await;
    assert_eq!(
        answer_while_body_held(&gw.app.url, None, 31).await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        answer_while_body_held(&gw.app.url, Some("sk-tg-nope"), 31).await,
        "HTTP/1.1 401 Unauthorized"
    );
    gw.revoke(&key_id).await;
    assert_eq!(
        answer_while_body_held(&gw.app.url, Some(&token), 31).await,
        "HTTP/1.1 401 Unauthorized"
    );
    let (_, fresh) = gw.key(&[]).await;
    gw.project_settings(&[("ip_allowlist", "10.0.0.0/8")]).await;
    assert_eq!(
        answer_while_body_held(&gw.app.url, Some(&fresh), 31).await,
        "HTTP/1.1 403 Forbidden"
    );
    // A body announced over the limit is refused before it is read.
    gw.project_settings(&[]).await;
    assert_eq!(
        answer_while_body_held(&gw.app.url, Some(&fresh), 33).await,
        "HTTP/1.1 413 Payload Too Large"
    );
}
both!(bodies_are_not_read_before_the_key_is_checked);

async fn an_unparseable_allowlist_entry_denies(backend: Backend) {
    let gw = Gw::new(backend).await;
    let (_, token) = gw.key(&[]).await;
    let body = chat_body("mock/echo", "hi");
    let mut conn = gw.app.sql().await;
    for list in [r#"["not-an-address"]"#, r#"["127.0.0.1", "10.0.0.0/33"]"#] {
        sqlx::query("UPDATE projects SET ip_allowlist_json = $1 WHERE id = $2")
            .bind(list)
            .bind(&gw.project)
            .execute(&mut conn)
            .await
            .unwrap();
        gw.app
            .state
            .changes
            .publish(tollgate_app::core::changes::Change::Project(
                gw.project.clone(),
            ))
            .await;
        let (s, v) = gw.call(&token, "chat/completions", body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("ip_allowlist_invalid")),
            "{list}: {v}"
        );
    }
    // An empty list is no allowlist.
    gw.project_settings(&[("ip_allowlist", "")]).await;
    assert_eq!(gw.call(&token, "chat/completions", body).await.0, 200);
}
both!(an_unparseable_allowlist_entry_denies);

async fn forwarded_for_counts_only_from_trusted_proxies(backend: Backend) {
    let body = chat_body("mock/echo", "hi");
    for trusted in [true, false] {
        let gw = Gw::with(backend, |c| {
            if trusted {
                c.proxy.trusted_proxies = vec![
                    "127.0.0.0/8".parse().unwrap(),
                    "10.1.2.3".parse::<std::net::IpAddr>().unwrap().into(),
                ];
            }
        })
        .await;
        gw.project_settings(&[("ip_allowlist", "203.0.113.7")])
            .await;
        let (_, token) = gw.key(&[]).await;
        for (xff, via_trusted) in [
            ("203.0.113.7", 200),
            ("203.0.113.7, 10.1.2.3", 200),
            // The left-most entry is the client's own claim: not believed.
            ("203.0.113.7, 198.51.100.1", 403),
            ("not-an-address", 403),
        ] {
            let res = gw
                .http
                .post(format!("{}/v1/chat/completions", gw.app.url))
                .bearer_auth(&token)
                .header("x-forwarded-for", xff)
                .json(&body)
                .send()
                .await
                .unwrap();
            let want = if trusted { via_trusted } else { 403 };
            assert_eq!(res.status(), want, "trusted={trusted} {xff}");
        }
    }
}
both!(forwarded_for_counts_only_from_trusted_proxies);

/// Parses a scrape with Prometheus's own Python parsers (the Prometheus
/// text parser, and the stricter OpenMetrics one); returns each sample as
/// `[name, labels, value]`.
fn parse_scrape(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families as prom\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as om\n\
        text = sys.stdin.read()\n\
        list(om(text))\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in prom(text) for s in f.samples]))\n";
    let mut cmd = std::process::Command::new(crate::sdk::python());
    cmd.args(["-c", script]);
    let out = crate::helpers::run_with_stdin(cmd, text);
    assert!(
        out.status.success(),
        "the parsers refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `/metrics` is off (404) without a token and asks for it when set; its
/// request counters, read by Prometheus's parser, equal the ledger row for
/// row (endpoint, model, status), and refusals are counted by rule.
async fn metrics_add_up_to_the_ledger(backend: Backend) {
    let off = TestApp::spawn(backend).await;
    let res = reqwest::get(format!("{}/metrics", off.url)).await.unwrap();
    assert_eq!(res.status(), 404);

    let gw = Gw::with(backend, |c| {
        c.metrics_token = Some("scrape-token-0123456789".to_owned().into());
    })
    .await;
    let scrape = |token: Option<&'static str>| {
        let mut req = gw.http.get(format!("{}/metrics", gw.app.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(scrape(Some("wrong")).await.unwrap().status(), 401);

    let (_, token) = gw.key(&[]).await;
    let (_, limited) = gw.key(&[("rpm", "1")]).await;
    let (_, broke) = gw.key(&[("max_budget", "0.000001")]).await;
    for i in 0..5 {
        gw.call(
            &token,
            "chat/completions",
            chat_body("mock/echo", &format!("n{i}")),
        )
        .await;
    }
    let mut streamed = chat_body("mock/echo", "s");
    streamed["stream"] = json!(true);
    let _ = gw
        .post(&token, "chat/completions", streamed)
        .await
        .text()
        .await;
    gw.call(
        &token,
        "embeddings",
        json!({ "model": "mock/embed", "input": "x" }),
    )
    .await;
    let mut refused = Vec::new();
    for (key, body) in [
        (token.as_str(), chat_body("openai/gpt-4o", "x")),
        (&limited, chat_body("mock/echo", "x")),
        (&limited, chat_body("mock/echo", "x")),
        (&broke, priced_body()),
        ("sk-tg-unknown", chat_body("mock/echo", "x")),
    ] {
        refused.push(gw.call(key, "chat/completions", body).await.0);
    }
    assert_eq!(refused, [403, 200, 429, 402, 401]);
    gw.app.gateway.ledger.flush().await;

    let res = scrape(Some("scrape-token-0123456789")).await.unwrap();
    assert_eq!(res.status(), 200);
    let samples = parse_scrape(&res.text().await.unwrap());
    let mut counted: Vec<(String, String, i64, i64)> = samples
        .iter()
        .filter(|(name, _, _)| name == "tollgate_requests_total")
        .map(|(_, l, v)| {
            #[expect(clippy::cast_possible_truncation, reason = "a count")]
            let n = *v as i64;
            (
                l["endpoint"].clone(),
                l["model"].clone(),
                l["status"].parse().unwrap(),
                n,
            )
        })
        .collect();
    counted.sort();
    let mut conn = gw.app.sql().await;
    let ledger: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT endpoint, model, status, COUNT(*) FROM usage_events \
         GROUP BY endpoint, model, status ORDER BY endpoint, model, status",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(counted, ledger);
    assert_eq!(ledger.iter().map(|r| r.3).sum::<i64>(), 10, "{ledger:?}");
    let refusals = |rule: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == "tollgate_refusals_total" && l["rule"] == rule)
            .map_or(0.0, |s| s.2)
    };
    assert_eq!(refusals("model_not_allowed"), 1.0);
    assert_eq!(refusals("invalid_api_key"), 1.0);
    for family in [
        "tollgate_upstream_latency_seconds_count",
        "tollgate_added_latency_seconds_count",
        "tollgate_ledger_write_seconds_count",
    ] {
        assert!(
            samples.iter().any(|(n, _, v)| n == family && *v > 0.0),
            "{family} observed something"
        );
    }
    assert!(samples
        .iter()
        .any(|(n, _, v)| n == "tollgate_change_feed_behind" && *v == 0.0));
}
both!(metrics_add_up_to_the_ledger);
