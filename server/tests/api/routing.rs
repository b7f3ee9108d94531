//! Virtual models over HTTP: the defaults, a hosted gateway's onboarding
//! script, each strategy against local fake upstreams (one failing, one
//! slow, healthy ones) that count what they receive, the circuit breaker,
//! residency, metering at the served model, budgets under concurrency, and
//! who may change virtual models and use the playground.

use crate::helpers::{Backend, TestApp, OPEN_PROJECT, OWNER_PASSWORD};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fake OpenAI-compatible upstreams on one port, counting requests per
/// path prefix: `/ok-*` answer at once (with usage), `/slow-*` after
/// 300 ms, `/boom-*` with 500, `/deny-*` with 401 (a bad provider key).
struct Fakes {
    url: String,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Fakes {
    async fn start() -> Fakes {
        use axum::extract::{Path, State};
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/{name}/chat/completions",
                axum::routing::post(
                    |State(seen): State<Arc<Mutex<HashMap<String, usize>>>>, Path(name): Path<String>| async move {
                        *seen.lock().unwrap().entry(name.clone()).or_default() += 1;
                        if name.starts_with("boom") {
                            return (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                axum::Json(json!({ "error": { "message": "down" } })),
                            );
                        }
                        if name.starts_with("deny") {
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                axum::Json(json!({ "error": { "message": "bad key" } })),
                            );
                        }
                        if name.starts_with("slow") {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({
                                "id": "x", "object": "chat.completion", "model": "up",
                                "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("from {name}") }, "finish_reason": "stop" }],
                                "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 },
                            })),
                        )
                    },
                ),
            )
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        Fakes { url, seen }
    }

    fn count(&self, name: &str) -> usize {
        self.seen.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

struct Org {
    app: TestApp,
    owner: reqwest::Client,
    org: String,
    project: String,
    http: reqwest::Client,
}

impl Org {
    async fn new(backend: Backend) -> Org {
        Self::with(backend, |_| {}).await
    }

    async fn with(
        backend: Backend,
        tweak: impl FnOnce(&mut tollgate_server::config::Config),
    ) -> Org {
        let app = TestApp::spawn_with(backend, tweak).await;
        let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
        let project = app.create_project(&owner, &org, "P").await;
        Org {
            app,
            owner,
            org,
            project,
            http: reqwest::Client::new(),
        }
    }

    /// A provider `name` at the fakes' `/{name}` in `region`, and a model
    /// `t/{name}` on it at `price` USD per million tokens each way.
    async fn upstream(&self, fakes: &Fakes, name: &str, region: &str, price: &str) -> String {
        let base = format!("{}/{name}", fakes.url);
        self.app
            .ok(
                &self.owner,
                "upsert_provider",
                &[
                    ("org_id", &self.org),
                    ("name", name),
                    ("kind", "openai"),
                    ("base_url", &base),
                    ("api_key", "sk-upstream-secret-0000"),
                    ("region", region),
                ],
            )
            .await;
        let id = format!("t/{name}");
        self.model(&id, name, "up-model", price).await;
        id
    }

    async fn model(&self, id: &str, provider: &str, upstream: &str, price: &str) {
        self.app
            .ok(
                &self.owner,
                "upsert_model",
                &[
                    ("org_id", &self.org),
                    ("id", id),
                    ("provider", provider),
                    ("upstream", upstream),
                    ("input_price", price),
                    ("output_price", price),
                    ("context_window", "100000"),
                    ("fallbacks", ""),
                ],
            )
            .await;
    }

    async fn virtual_model(&self, id: &str, strategy: &str, region: &str, targets: &str) {
        self.app
            .ok(
                &self.owner,
                "save_virtual_model",
                &[
                    ("org_id", &self.org),
                    ("id", id),
                    ("description", "test route"),
                    ("strategy", strategy),
                    ("region", region),
                    ("targets", targets),
                ],
            )
            .await;
    }

    /// The project allows `models`; returns a key for all of them.
    async fn key_for(&self, models: &[&str], extra: &[(&str, &str)]) -> (String, String) {
        let fields: Vec<String> = (0..models.len()).map(|i| format!("models[{i}]")).collect();
        let mut form: Vec<(&str, &str)> = vec![
            ("org_id", &self.org),
            ("project_id", &self.project),
            ("name", "P"),
        ];
        for (f, m) in fields.iter().zip(models) {
            form.push((f, m));
        }
        form.extend(OPEN_PROJECT);
        self.app.ok(&self.owner, "update_project", &form).await;
        self.app
            .create_key(&self.owner, &self.org, &self.project, extra)
            .await
    }

    async fn chat(&self, token: &str, model: &str, max_tokens: i64) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.app.url))
            .bearer_auth(token)
            .json(&json!({ "model": model, "max_tokens": max_tokens,
                "messages": [{ "role": "user", "content": "hello there" }] }))
            .send()
            .await
            .unwrap()
    }
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A new organization has the four defaults, routed over the catalogue's
/// public models with the mock standing in: a key for `smart/balanced` is
/// refused a raw model and served the virtual one, the ledger keeps both
/// names, and `/v1/models` lists it.
async fn defaults_work_out_of_the_box(backend: Backend) {
    let o = Org::new(backend).await;
    let list = o
        .app
        .ok(&o.owner, "list_virtual_models", &[("org_id", &o.org)])
        .await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["eu/balanced", "smart/balanced", "smart/best", "smart/fast"]
    );
    let (key_id, token) = o
        .key_for(
            &["smart/balanced", "mock/echo"],
            &[("models[0]", "smart/balanced")],
        )
        .await;
    let res = o.chat(&token, "mock/echo", 10).await;
    assert_eq!(res.status(), 403, "a raw model the key does not allow");
    let res = o.chat(&token, "smart/balanced", 10).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-tollgate-model").as_deref(),
        Some("mock/echo")
    );
    assert_eq!(header(&res, "x-tollgate-provider").as_deref(), Some("mock"));
    assert_eq!(header(&res, "x-tollgate-attempts"), None);
    let models: Value = o
        .http
        .get(format!("{}/v1/models", o.app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "smart/balanced", "{models}");
    assert_eq!(models["data"][0]["owned_by"], "tollgate");
    o.app.gateway.ledger.flush().await;
    let mut conn = o.app.sql().await;
    let (model, requested): (String, String) = sqlx::query_as(
        "SELECT model, requested_model FROM usage_events WHERE key_id = $1 AND status = 200",
    )
    .bind(&key_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (model.as_str(), requested.as_str()),
        ("mock/echo", "smart/balanced")
    );
    let daily: String =
        sqlx::query_scalar("SELECT requested_model FROM usage_daily WHERE key_id = $1")
            .bind(&key_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(daily, "smart/balanced");
    // Once a real target's provider is configured the mock no longer stands in.
    let fakes = Fakes::start().await;
    o.app
        .ok(
            &o.owner,
            "upsert_provider",
            &[
                ("org_id", &o.org),
                ("name", "openai"),
                ("kind", "openai"),
                ("base_url", &format!("{}/ok-openai", fakes.url)),
                ("api_key", "sk-upstream-secret-0000"),
            ],
        )
        .await;
    let res = o.chat(&token, "smart/balanced", 10).await;
    assert_eq!(
        header(&res, "x-tollgate-model").as_deref(),
        Some("openai/gpt-4o-mini")
    );
    assert_eq!(fakes.count("ok-openai"), 1);
    // An unconfigured route names the provider to configure.
    o.virtual_model("smart/claude", "fallback", "", "anthropic/claude-sonnet-4")
        .await;
    let (_, t2) = o.key_for(&["smart/claude"], &[]).await;
    let res = o.chat(&t2, "smart/claude", 10).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider 'anthropic'"),
        "{body}"
    );
}
both!(defaults_work_out_of_the_box);

/// A hosted gateway's onboarding script, as written: curl with `-d` (a form
/// content type), teams, then `team/update` to virtual models, a key, a call.
async fn a_hosted_gateway_onboarding_script_runs_as_written(backend: Backend) {
    let o = Org::new(backend).await;
    let pk = o
        .app
        .ok(
            &o.owner,
            "create_provisioning_key",
            &[("org_id", &o.org), ("name", "ci")],
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let curl = |path: &str, body: Value| {
        o.http
            .post(format!("{}{path}", o.app.url))
            .bearer_auth(&pk)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
    };
    for team in ["customer-ops", "finance"] {
        let res = curl("/team/new", json!({ "team_alias": team }))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    for (team, model) in [
        ("customer-ops", "smart/balanced"),
        ("finance", "eu/balanced"),
    ] {
        let res = curl(
            "/team/update",
            json!({ "team_id": team, "models": [model] }),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    let res = curl(
        "/key/generate",
        json!({ "team_id": "finance", "key_alias": "eu-app" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let key: Value = res.json().await.unwrap();
    let token = key["key"].as_str().unwrap();
    let res = o.chat(token, "eu/balanced", 20).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );
}
both!(a_hosted_gateway_onboarding_script_runs_as_written);

/// Fallback serves from the next target and says how many it tried;
/// the breaker takes a failing target out and tries it after its cool-down.
async fn fallback_and_the_circuit_breaker(backend: Backend) {
    let o = Org::with(backend, |c| {
        c.proxy.breaker_failures = 2;
        c.proxy.breaker_cool_down_ms = 1_500;
    })
    .await;
    let fakes = Fakes::start().await;
    let boom = o.upstream(&fakes, "boom-a", "", "1").await;
    let ok = o.upstream(&fakes, "ok-b", "", "1").await;
    o.virtual_model("smart/x", "fallback", "", &format!("{boom}\n{ok}"))
        .await;
    let (_, token) = o.key_for(&["smart/x"], &[]).await;
    for _ in 0..2 {
        let res = o.chat(&token, "smart/x", 10).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-tollgate-model").as_deref(), Some("t/ok-b"));
        assert_eq!(header(&res, "x-tollgate-attempts").as_deref(), Some("2"));
    }
    assert_eq!(fakes.count("boom-a"), 2);
    // A target that refuses its own credentials is passed over too.
    let deny = o.upstream(&fakes, "deny-c", "", "1").await;
    o.virtual_model("smart/y", "fallback", "", &format!("{deny}\n{ok}"))
        .await;
    let (_, t2) = o.key_for(&["smart/x", "smart/y"], &[]).await;
    let res = o.chat(&t2, "smart/y", 10).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-tollgate-attempts").as_deref(), Some("2"));
    let token = t2;
    // Out: the next requests go straight to the healthy target.
    for _ in 0..3 {
        let res = o.chat(&token, "smart/x", 10).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-tollgate-attempts"), None);
    }
    assert_eq!(fakes.count("boom-a"), 2, "no request while cooling down");
    let health = o
        .app
        .ok(&o.owner, "route_health", &[("org_id", &o.org)])
        .await;
    let boom_health = health
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "boom-a")
        .unwrap()
        .clone();
    assert!(boom_health["cooling_until"].is_i64(), "{health}");
    // After the cool-down it is tried again (and, failing, taken out again).
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let res = o.chat(&token, "smart/x", 10).await;
    assert_eq!(res.status(), 200);
    assert_eq!(fakes.count("boom-a"), 3);
    let res = o.chat(&token, "smart/x", 10).await;
    assert_eq!(header(&res, "x-tollgate-attempts"), None);
    assert_eq!(fakes.count("boom-a"), 3);
}
both!(fallback_and_the_circuit_breaker);

/// `weighted` 70/30 over 1,000 requests lands within ±5 points; `latency`
/// prefers the fast target once both are measured.
async fn weighted_and_latency(backend: Backend) {
    let o = Org::new(backend).await;
    let fakes = Fakes::start().await;
    let a = o.upstream(&fakes, "ok-w70", "", "1").await;
    let b = o.upstream(&fakes, "ok-w30", "", "1").await;
    let slow = o.upstream(&fakes, "slow-s", "", "1").await;
    let fast = o.upstream(&fakes, "ok-f", "", "1").await;
    o.virtual_model("smart/w", "weighted", "", &format!("{a} 70\n{b} 30"))
        .await;
    o.virtual_model("smart/l", "latency", "", &format!("{slow}\n{fast}"))
        .await;
    let (_, token) = o.key_for(&["smart/w", "smart/l"], &[]).await;
    let n = 1_000;
    let mut done = 0;
    while done < n {
        let batch: Vec<_> = (0..50).map(|_| o.chat(&token, "smart/w", 5)).collect();
        for res in futures::future::join_all(batch).await {
            assert_eq!(res.status(), 200);
        }
        done += 50;
    }
    let share = fakes.count("ok-w70") as f64 / n as f64;
    assert_eq!(fakes.count("ok-w70") + fakes.count("ok-w30"), n);
    assert!((0.65..=0.75).contains(&share), "70/30 landed at {share}");
    for _ in 0..10 {
        assert_eq!(o.chat(&token, "smart/l", 5).await.status(), 200);
    }
    assert_eq!(fakes.count("slow-s"), 1, "measured once, then passed over");
    assert_eq!(fakes.count("ok-f"), 9);
}
both!(weighted_and_latency);

/// `eu/balanced` with one EU and one US provider: the EU one fails, the
/// request fails with a clear error and the US upstream receives nothing.
async fn residency_holds_also_on_fallback(backend: Backend) {
    let o = Org::new(backend).await;
    let fakes = Fakes::start().await;
    let eu = o.upstream(&fakes, "boom-eu", "eu", "1").await;
    let us = o.upstream(&fakes, "ok-us", "us", "1").await;
    o.virtual_model("eu/balanced", "fallback", "eu", &format!("{eu}\n{us}"))
        .await;
    let (_, token) = o.key_for(&["eu/balanced"], &[]).await;
    let res = o.chat(&token, "eu/balanced", 10).await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("boom-eu") && message.contains("region 'eu'"),
        "{message}"
    );
    assert_eq!(fakes.count("boom-eu"), 1);
    assert_eq!(fakes.count("ok-us"), 0, "nothing left the region");
    // With the EU target gone, nothing in the region serves: 503, still
    // nothing sent to the US.
    o.virtual_model("eu/balanced", "fallback", "eu", &us).await;
    let res = o.chat(&token, "eu/balanced", 10).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "region_unavailable", "{body}");
    assert_eq!(fakes.count("ok-us"), 0);
    // Nor does the mock stand in for a target kept out by its region.
    o.virtual_model("eu/balanced", "fallback", "eu", &format!("{us}\nmock/echo"))
        .await;
    let res = o.chat(&token, "eu/balanced", 10).await;
    assert_eq!(res.status(), 503);
    assert_eq!(fakes.count("ok-us"), 0);
}
both!(residency_holds_also_on_fallback);

/// Reserved at the most expensive target, settled at the one that served:
/// 200 concurrent requests never push a key's spend past its budget, and
/// each request is billed at its served model's price.
async fn a_budget_holds_at_the_most_expensive_target(backend: Backend) {
    let o = Org::new(backend).await;
    // Both on the mock: $1 and $100 per million tokens.
    o.model("p/cheap", "mock", "echo", "1").await;
    o.model("p/pricey", "mock", "echo", "100").await;
    o.virtual_model("smart/mixed", "weighted", "", "p/cheap 50\np/pricey 50")
        .await;
    let (key_id, token) = o
        .key_for(
            &["smart/mixed"],
            &[("max_budget", "0.05"), ("budget_reset", "never")],
        )
        .await;
    let calls: Vec<_> = (0..200)
        .map(|_| o.chat(&token, "smart/mixed", 100))
        .collect();
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut refused = 0;
    for res in futures::future::join_all(calls).await {
        match res.status().as_u16() {
            200 => {
                *served
                    .entry(header(&res, "x-tollgate-model").unwrap())
                    .or_default() += 1;
            }
            402 => refused += 1,
            s => panic!("unexpected {s}: {}", res.text().await.unwrap()),
        }
    }
    assert!(refused > 0, "the budget ran out: {served:?}");
    o.app.gateway.ledger.flush().await;
    let mut conn = o.app.sql().await;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT model, tokens_in, tokens_out, cost_micros FROM usage_events WHERE key_id = $1 AND status = 200",
    )
    .bind(&key_id)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut total = 0_i64;
    for (model, tin, tout, cost) in &rows {
        let price = if model == "p/cheap" { 1 } else { 100 };
        assert_eq!(*cost, (tin + tout) * price, "{model}");
        total += cost;
    }
    assert!(total <= 50_000, "spent {total} micro-USD of a 50000 budget");
    assert!(served.len() == 2, "both targets served: {served:?}");
}
both!(a_budget_holds_at_the_most_expensive_target);

/// Owners change virtual models; members, billing managers and other
/// organizations cannot; a bad field is named. The playground belongs to
/// those who may make keys: a viewer is refused, and nobody chats through
/// someone else's key.
async fn who_may_change_virtual_models_and_use_the_playground(backend: Backend) {
    let o = Org::new(backend).await;
    let app = &o.app;
    let [member, billing, viewer] = app
        .add_members(
            &o.owner,
            &o.org,
            [
                ("m@a.test", "member"),
                ("b@a.test", "billing"),
                ("v@a.test", "viewer"),
            ],
        )
        .await;
    let (stranger, other_org) = app
        .outside_owner(&o.owner, &o.org, "s@b.test", "Other")
        .await;
    let form = |org: &str| {
        vec![
            ("org_id".to_owned(), org.to_owned()),
            ("id".to_owned(), "smart/new".to_owned()),
            ("strategy".to_owned(), "fallback".to_owned()),
            ("targets".to_owned(), "mock/echo".to_owned()),
        ]
    };
    let pairs = |f: &[(String, String)]| {
        f.iter()
            .map(|(a, b)| (a.as_str().to_owned(), b.clone()))
            .collect::<Vec<_>>()
    };
    for (who, status) in [
        (&member, 403),
        (&billing, 403),
        (&viewer, 403),
        (&stranger, 404),
    ] {
        let f = pairs(&form(&o.org));
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let (st, body) = app.call(who, "save_virtual_model", &f).await;
        assert_eq!(st, status, "{body}");
        let (st, _) = app
            .call(
                who,
                "delete_virtual_model",
                &[("org_id", &o.org), ("id", "smart/balanced")],
            )
            .await;
        assert_eq!(st, status);
    }
    // The stranger's own organization is theirs to change, not ours.
    let f = pairs(&form(&other_org));
    let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    app.ok(&stranger, "save_virtual_model", &f).await;
    let ours = app
        .ok(&o.owner, "list_virtual_models", &[("org_id", &o.org)])
        .await;
    assert!(!ours.to_string().contains("smart/new"), "{ours}");
    for (field, value) in [
        ("id", "balanced"),
        ("strategy", "random"),
        ("region", "e u"),
        ("targets", "openai/gpt-9"),
    ] {
        let mut f = pairs(&form(&o.org));
        f.retain(|(k, _)| k != field);
        f.push((field.to_owned(), value.to_owned()));
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        app.bad_field(&o.owner, "save_virtual_model", &f, field)
            .await;
    }
    app.ok(
        &o.owner,
        "delete_virtual_model",
        &[("org_id", &o.org), ("id", "smart/fast")],
    )
    .await;
    let (st, _) = app
        .call(
            &o.owner,
            "delete_virtual_model",
            &[("org_id", &o.org), ("id", "smart/fast")],
        )
        .await;
    assert_eq!(st, 404);
    // A catalogue model cannot take a virtual model's name, nor the reverse.
    let (st, body) = app
        .call(
            &o.owner,
            "upsert_model",
            &crate::helpers::priced_model(&o.org, "smart/balanced"),
        )
        .await;
    assert_eq!((st, body["field"].as_str()), (400, Some("id")), "{body}");

    // The playground: a project member opens it (a key of their own is
    // made once), a viewer cannot, and another member cannot chat
    // through it.
    let member_id = app.user_id(&member).await;
    app.ok(
        &o.owner,
        "add_project_member",
        &[
            ("org_id", &o.org),
            ("project_id", &o.project),
            ("user_id", &member_id),
            ("role", "member"),
        ],
    )
    .await;
    let opened = app
        .ok(
            &member,
            "open_playground",
            &[("org_id", &o.org), ("project_id", &o.project)],
        )
        .await;
    let again = app
        .ok(
            &member,
            "open_playground",
            &[("org_id", &o.org), ("project_id", &o.project)],
        )
        .await;
    assert_eq!(opened["key_id"], again["key_id"], "one playground key");
    let key_id = opened["key_id"].as_str().unwrap();
    let (st, _) = app
        .call(
            &viewer,
            "open_playground",
            &[("org_id", &o.org), ("project_id", &o.project)],
        )
        .await;
    assert!(st == 403 || st == 404, "{st}");
    let chat = |client: &reqwest::Client, key: &str| {
        client
            .post(format!(
                "{}/api/console/playground/chat?org_id={}&key_id={key}",
                app.url, o.org
            ))
            .header("origin", &app.url)
            .json(&json!({ "model": "mock/echo", "stream": true,
                "stream_options": { "include_usage": true },
                "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let res = chat(&member, key_id).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-tollgate-model").as_deref(),
        Some("mock/echo")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains("\"usage\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    for who in [&o.owner, &viewer, &stranger] {
        let res = chat(who, key_id).await.unwrap();
        let st = res.status().as_u16();
        assert!(
            st == 403 || st == 404,
            "only its owner chats through a key: {st}"
        );
    }
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/console/playground/chat?org_id={}&key_id={key_id}",
            app.url, o.org
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Revoked: the next chat is refused by the proxy's own rule.
    app.ok(
        &member,
        "revoke_key",
        &[("org_id", &o.org), ("key_id", key_id)],
    )
    .await;
    let res = chat(&member, key_id).await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "key_revoked", "{body}");
    let fresh = app
        .ok(
            &member,
            "open_playground",
            &[("org_id", &o.org), ("project_id", &o.project)],
        )
        .await;
    assert_ne!(
        fresh["key_id"], opened["key_id"],
        "a new key after revocation"
    );
}
both!(who_may_change_virtual_models_and_use_the_playground);
