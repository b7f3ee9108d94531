//! Usage, credits, statements and alerts: credit exhaustion and the spend cap
//! stop one organization's `/v1` (every project, no other organization);
//! billing managers and viewers through the real server functions; CSV
//! statements against the ledger; threshold alerts at a local receiver.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::{Arc, Mutex};

/// 10 USD per million tokens: 10 micro-USD a token, in and out.
const PRICED: &str = "mock/priced";
/// Longer than `max_tokens`: the echo stops there, so a request costs exactly
/// its reservation.
const LONG: &str =
    "How much is this going to cost me today? Tell me about every budget, every cap, \
every credit and every statement, and then tell me again, slowly, with all the numbers.";

struct Org {
    id: String,
    projects: Vec<String>,
    /// A token per project.
    tokens: Vec<String>,
    key_ids: Vec<String>,
}

fn usd(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// An organization (the setup one, or a new one) with a priced model and
/// `n` projects, each with one key allowed every model.
async fn org(app: &TestApp, owner: &reqwest::Client, id: Option<String>, n: usize) -> Org {
    let id = match id {
        Some(id) => id,
        None => app.ok(owner, "create_org", &[("name", "Other")]).await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    app.priced_model(owner, &id, PRICED).await;
    let mut o = Org {
        id,
        projects: Vec::new(),
        tokens: Vec::new(),
        key_ids: Vec::new(),
    };
    for i in 0..n {
        let name = format!("P{i}");
        let p = app.create_project(owner, &o.id, &name).await;
        app.ok(
            owner,
            "update_project",
            &[
                &[
                    ("org_id", o.id.as_str()),
                    ("project_id", &p),
                    ("name", &name),
                    ("models[0]", "mock/echo"),
                    ("models[1]", PRICED),
                ][..],
                &crate::helpers::OPEN_PROJECT,
            ]
            .concat(),
        )
        .await;
        let (key_id, token) = app.create_key(owner, &o.id, &p, &[]).await;
        o.projects.push(p);
        o.tokens.push(token);
        o.key_ids.push(key_id);
    }
    o
}

async fn chat(app: &TestApp, token: &str, model: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&json!({
            "model": model,
            "max_tokens": 20,
            "messages": [{ "role": "user", "content": LONG }],
        }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn credits_and_the_cap_stop_one_org_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, a_id) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let a = org(&app, &owner, Some(a_id), 2).await;
    let b = org(&app, &owner, None, 1).await;
    let (s, v) = chat(&app, &a.tokens[0], PRICED).await;
    assert_eq!(s, 200, "{v}");
    let one = v["usage"]["total_tokens"].as_i64().unwrap() * 10;

    // Prepaid with enough for about three more requests.
    app.ok(
        &owner,
        "add_credit",
        &[
            ("org_id", &a.id),
            ("kind", "purchase"),
            ("amount", &usd(one * 4)),
            ("note", "first top-up"),
            ("reference", "PO-1"),
        ],
    )
    .await;
    app.ok(
        &owner,
        "set_prepaid",
        &[("org_id", &a.id), ("prepaid", "on")],
    )
    .await;
    let mut admitted = 0;
    for i in 0..10 {
        let (s, v) = chat(&app, &a.tokens[i % 2], PRICED).await;
        match s {
            200 => admitted += 1,
            402 => assert_eq!(code(&v), "org_credits_exhausted", "{v}"),
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(admitted, 3, "credits for 4 requests, one spent before");
    for t in &a.tokens {
        let (s, v) = chat(&app, t, PRICED).await;
        assert_eq!((s, code(&v)), (402, "org_credits_exhausted"), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("credit balance"),
            "{v}"
        );
    }
    assert_eq!(chat(&app, &b.tokens[0], PRICED).await.0, 200);
    app.gateway.ledger.flush().await;
    let stop = app.ok(&owner, "get_stop", &[("org_id", &a.id)]).await;
    assert_eq!(stop["credits_exhausted"], true, "{stop}");
    let stop_b = app.ok(&owner, "get_stop", &[("org_id", &b.id)]).await;
    assert_eq!(stop_b["credits_exhausted"], false, "{stop_b}");
    let billing = app.ok(&owner, "get_billing", &[("org_id", &a.id)]).await;
    assert_eq!(billing["standing"]["spent"], one * 4);
    assert_eq!(billing["standing"]["balance"], 0);
    assert_eq!(billing["entries"][0]["reference"], "PO-1");
    // A grant tops it up: the next request passes.
    app.ok(
        &owner,
        "add_credit",
        &[
            ("org_id", &a.id),
            ("kind", "grant"),
            ("amount", "1"),
            ("note", ""),
            ("reference", ""),
        ],
    )
    .await;
    assert_eq!(chat(&app, &a.tokens[1], PRICED).await.0, 200);

    // The spend cap: at this month's spend, every project of A stops.
    app.ok(
        &owner,
        "update_spending",
        &[
            ("org_id", &a.id),
            ("spend_cap", &usd(one * 5)),
            ("spend_cap_reset", "monthly"),
        ],
    )
    .await;
    for t in &a.tokens {
        let (s, v) = chat(&app, t, PRICED).await;
        assert_eq!((s, code(&v)), (402, "org_spend_cap_exceeded"), "{v}");
    }
    assert_eq!(chat(&app, &b.tokens[0], PRICED).await.0, 200);
    app.gateway.ledger.flush().await;
    let stop = app.ok(&owner, "get_stop", &[("org_id", &a.id)]).await;
    assert_eq!(stop["cap_exhausted"], true, "{stop}");
    assert_eq!(
        app.ok(&owner, "get_stop", &[("org_id", &b.id)]).await["cap_exhausted"],
        false
    );
    // The banner says so on A's pages, not on B's.
    let page = |org: &str| {
        let (c, url) = (owner.clone(), format!("{}/orgs/{org}", app.url));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert!(page(&a.id).await.contains("stop-banner"));
    assert!(!page(&b.id).await.contains("stop-banner"));
}
both!(credits_and_the_cap_stop_one_org_only);

async fn billing_managers_and_viewers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, a_id) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let a = org(&app, &owner, Some(a_id), 1).await;
    let p = a.projects[0].clone();
    let [billing, viewer, member, outsider] = app
        .add_members(
            &owner,
            &a.id,
            [
                ("billing@a.test", "billing"),
                ("viewer@a.test", "viewer"),
                ("member@a.test", "member"),
                ("out@a.test", "member"),
            ],
        )
        .await;
    let member_id = app.user_id(&member).await;
    app.ok(
        &owner,
        "add_project_member",
        &[
            ("org_id", &a.id),
            ("project_id", &p),
            ("user_id", &member_id),
            ("role", "member"),
        ],
    )
    .await;
    // Bodies are kept (the organization allows it; the project does).
    app.ok(
        &owner,
        "update_spending",
        &[
            ("org_id", &a.id),
            ("spend_cap", ""),
            ("spend_cap_reset", "monthly"),
            ("content_logging", "on"),
        ],
    )
    .await;
    let (_, member_token) = app
        .create_key(&member, &a.id, &p, &[("name", "mine")])
        .await;
    assert_eq!(chat(&app, &member_token, PRICED).await.0, 200);
    assert_eq!(chat(&app, &a.tokens[0], PRICED).await.0, 200);
    app.gateway.ledger.flush().await;
    // Another organization's owner: joins A, makes B, leaves A.
    let (stranger, b_id) = app
        .outside_owner(&owner, &a.id, "owner@b.test", "Beta")
        .await;

    let o = a.id.as_str();
    let credit = [
        ("org_id", o),
        ("kind", "grant"),
        ("amount", "5"),
        ("note", "welcome"),
        ("reference", "G-1"),
    ];
    let month = tollgate_app::format::month_of(tollgate_app::core::now_ms());
    // The billing manager: credits, statements, alerts and usage, yes.
    app.ok(&billing, "add_credit", &credit).await;
    app.ok(&billing, "get_billing", &[("org_id", o)]).await;
    app.ok(
        &billing,
        "set_prepaid",
        &[("org_id", o), ("prepaid", "off")],
    )
    .await;
    app.ok(
        &billing,
        "get_statement",
        &[("org_id", o), ("month", &month)],
    )
    .await;
    app.ok(
        &billing,
        "update_alerting",
        &[
            ("org_id", o),
            ("webhook_url", "https://hooks.example.test/a"),
            ("slack_url", ""),
            ("thresholds", "50, 80, 100"),
        ],
    )
    .await;
    app.ok(&billing, "get_alerting", &[("org_id", o)]).await;
    let usage = app.ok(&billing, "get_usage", &[("org_id", o)]).await;
    assert_eq!(usage["whole"], true);
    assert_eq!(usage["totals"]["requests"], 2, "{usage}");
    // ... and keys and models, no: 403 naming the permission.
    let key = crate::helpers::key_form(o, &p, &[]);
    denied(
        &app,
        &billing,
        "create_key",
        &key,
        "create & manage own keys",
    )
    .await;
    denied(
        &app,
        &billing,
        "list_keys",
        &[("org_id", o), ("project_id", &p)],
        "create & manage own keys",
    )
    .await;
    let model = [
        ("org_id", o),
        ("id", "mock/new"),
        ("provider", "mock"),
        ("upstream", "echo"),
        ("input_price", "1"),
        ("output_price", "1"),
        ("context_window", "1000"),
    ];
    denied(&app, &billing, "upsert_model", &model, "model catalogue").await;
    denied(
        &app,
        &billing,
        "list_requests",
        &[("org_id", o), ("project_id", &p)],
        "view request log",
    )
    .await;

    // The viewer: analytics, yes; keys, credits, statements, no.
    let usage = app
        .ok(&viewer, "get_usage", &[("org_id", o), ("days", "7")])
        .await;
    assert_eq!(usage["whole"], true);
    assert_eq!(usage["totals"]["requests"], 2);
    denied(
        &app,
        &viewer,
        "create_key",
        &key,
        "create & manage own keys",
    )
    .await;
    denied(&app, &viewer, "add_credit", &credit, "billing & credits").await;
    denied(
        &app,
        &viewer,
        "get_statement",
        &[("org_id", o), ("month", &month)],
        "billing & credits",
    )
    .await;
    denied(
        &app,
        &viewer,
        "update_alerting",
        &[
            ("org_id", o),
            ("webhook_url", ""),
            ("slack_url", ""),
            ("thresholds", ""),
        ],
        "billing & credits",
    )
    .await;
    denied(&app, &viewer, "upsert_model", &model, "model catalogue").await;

    // A project member: their own key's usage only, no request log.
    let usage = app.ok(&member, "get_usage", &[("org_id", o)]).await;
    assert_eq!(usage["whole"], false);
    assert_eq!(usage["totals"]["requests"], 1, "{usage}");
    assert_eq!(usage["by_key"][0]["name"], "mine");
    denied(
        &app,
        &member,
        "list_requests",
        &[("org_id", o), ("project_id", &p)],
        "view request log",
    )
    .await;
    denied(&app, &member, "add_credit", &credit, "billing & credits").await;
    // A member of no project sees no usage.
    denied(
        &app,
        &outsider,
        "get_usage",
        &[("org_id", o)],
        "view usage analytics",
    )
    .await;
    // The owner reads the request log with bodies.
    let log = app
        .ok(
            &owner,
            "list_requests",
            &[("org_id", o), ("project_id", &p)],
        )
        .await;
    assert_eq!(log["requests"].as_array().unwrap().len(), 2, "{log}");
    let rid = log["requests"][0]["request_id"].as_str().unwrap();
    assert_eq!(log["requests"][0]["has_body"], true);
    let bodies = app
        .ok(
            &owner,
            "get_request_bodies",
            &[("org_id", o), ("project_id", &p), ("request_id", rid)],
        )
        .await;
    assert!(
        bodies["request"]
            .as_str()
            .unwrap()
            .contains("cost me today"),
        "{bodies}"
    );

    // Another organization's owner: A does not exist for them.
    for (f, args) in [
        ("add_credit", credit.to_vec()),
        ("get_billing", vec![("org_id", o)]),
        ("set_prepaid", vec![("org_id", o), ("prepaid", "on")]),
        (
            "get_statement",
            vec![("org_id", o), ("month", month.as_str())],
        ),
        ("get_usage", vec![("org_id", o)]),
        (
            "update_alerting",
            vec![
                ("org_id", o),
                ("webhook_url", ""),
                ("slack_url", ""),
                ("thresholds", ""),
            ],
        ),
        (
            "list_requests",
            vec![("org_id", o), ("project_id", p.as_str())],
        ),
    ] {
        let (s, v) = app.call(&stranger, f, &args).await;
        assert_eq!(s, 404, "{f}: {v}");
    }
    // Their own organization's billing is theirs, and holds none of A's credits.
    let theirs = app.ok(&stranger, "get_billing", &[("org_id", &b_id)]).await;
    assert_eq!(theirs["entries"].as_array().unwrap().len(), 0);
    // Bad input names the field.
    for (args, field) in [
        (
            vec![
                ("org_id", o),
                ("kind", "gift"),
                ("amount", "5"),
                ("note", ""),
                ("reference", ""),
            ],
            "kind",
        ),
        (
            vec![
                ("org_id", o),
                ("kind", "grant"),
                ("amount", "-5"),
                ("note", ""),
                ("reference", ""),
            ],
            "amount",
        ),
        (
            vec![
                ("org_id", o),
                ("kind", "grant"),
                ("amount", "five"),
                ("note", ""),
                ("reference", ""),
            ],
            "amount",
        ),
    ] {
        let (s, v) = app.call(&owner, "add_credit", &args).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
    }
    app.bad_field(
        &owner,
        "get_statement",
        &[("org_id", o), ("month", "2026-13")],
        "month",
    )
    .await;
    app.bad_field(
        &owner,
        "update_alerting",
        &[
            ("org_id", o),
            ("webhook_url", "ftp://x"),
            ("slack_url", ""),
            ("thresholds", ""),
        ],
        "webhook_url",
    )
    .await;
    app.bad_field(
        &owner,
        "update_alerting",
        &[
            ("org_id", o),
            ("webhook_url", ""),
            ("slack_url", ""),
            ("thresholds", "50, lots"),
        ],
        "thresholds",
    )
    .await;
    app.bad_field(
        &owner,
        "get_usage",
        &[("org_id", o), ("days", "12")],
        "days",
    )
    .await;
    // The webhook URL (it holds a token) stays out of what is read back and the audit log.
    let alerting = app.ok(&owner, "get_alerting", &[("org_id", o)]).await;
    assert_eq!(alerting["webhook"], "https://hooks.example.test/…");
    let audit = app.ok(&owner, "list_audit_events", &[("org_id", o)]).await;
    assert!(
        !audit.to_string().contains("hooks.example.test/a"),
        "{audit}"
    );
}
both!(billing_managers_and_viewers);

async fn denied(
    app: &TestApp,
    c: &reqwest::Client,
    f: &str,
    args: &[(&str, &str)],
    permission: &str,
) {
    let (s, v) = app.call(c, f, args).await;
    assert_eq!(s, 403, "{f}: {v}");
    assert_eq!(v["permission"], permission, "{f}: {v}");
}

async fn statements_equal_the_ledger(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, a_id) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let a = org(&app, &owner, Some(a_id), 2).await;
    let b = org(&app, &owner, None, 1).await;
    for i in 0..7 {
        let model = if i % 3 == 0 { "mock/echo" } else { PRICED };
        assert_eq!(chat(&app, &a.tokens[i % 2], model).await.0, 200);
    }
    assert_eq!(chat(&app, &b.tokens[0], PRICED).await.0, 200);
    app.gateway.ledger.flush().await;
    let mut conn = app.sql().await;
    let r = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(SUM(cost_micros) AS BIGINT) AS cost, CAST(SUM(tokens_in) AS BIGINT) AS t_in, \
         CAST(SUM(tokens_out) AS BIGINT) AS t_out FROM usage_events WHERE org_id = $1",
    )
    .bind(&a.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let (n, cost, t_in, t_out): (i64, i64, i64, i64) =
        (r.get("n"), r.get("cost"), r.get("t_in"), r.get("t_out"));
    assert_eq!(n, 7);
    assert!(cost > 0);
    let month = tollgate_app::format::month_of(tollgate_app::core::now_ms());
    let st = app
        .ok(
            &owner,
            "get_statement",
            &[("org_id", &a.id), ("month", &month)],
        )
        .await;
    assert_eq!(st["statement"]["total"], cost, "{st}");
    // Two projects by two models.
    assert_eq!(
        st["statement"]["lines"].as_array().unwrap().len(),
        4,
        "{st}"
    );
    let csv = st["csv"].as_str().unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("month,project_id,project,model,requests,tokens_in,tokens_out,cost_usd")
    );
    let micros = |s: &str| -> i64 {
        let (w, f) = s.split_once('.').unwrap();
        w.parse::<i64>().unwrap() * 1_000_000 + f.parse::<i64>().unwrap()
    };
    let (mut sum, mut reqs, mut sin, mut sout) = (0, 0, 0, 0);
    let mut total = None;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 8, "{l}");
        if f[2] == "TOTAL" {
            total = Some((f[4].parse::<i64>().unwrap(), micros(f[7])));
            continue;
        }
        assert!(a.projects.contains(&f[1].to_owned()), "{l}");
        reqs += f[4].parse::<i64>().unwrap();
        sin += f[5].parse::<i64>().unwrap();
        sout += f[6].parse::<i64>().unwrap();
        sum += micros(f[7]);
    }
    assert_eq!((reqs, sin, sout, sum), (n, t_in, t_out, cost), "{csv}");
    assert_eq!(total, Some((n, cost)), "{csv}");
    // The usage report says the same, and the other org's request is in neither.
    let usage = app.ok(&owner, "get_usage", &[("org_id", &a.id)]).await;
    assert_eq!(usage["totals"]["cost_micros"], cost);
    assert_eq!(usage["totals"]["requests"], n);
    let day_sum: i64 = usage["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["totals"]["cost_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(day_sum, cost);
    // The rollup the reports read matches the ledger row for row.
    let rolled: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(cost_micros) AS BIGINT) FROM usage_daily WHERE org_id = $1",
    )
    .bind(&a.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(rolled, cost);
    // The month before holds nothing.
    let st = app
        .ok(
            &owner,
            "get_statement",
            &[("org_id", &a.id), ("month", "2020-01")],
        )
        .await;
    assert_eq!(st["statement"]["total"], 0);
}
both!(statements_equal_the_ledger);

/// A webhook receiver on a free port: records every body; answers 500 to
/// the first request and 200 after.
async fn receiver() -> (String, Arc<Mutex<Vec<(u16, Value)>>>) {
    use axum::routing::post;
    let seen: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |axum::Json(body): axum::Json<Value>| {
            let s = s.clone();
            async move {
                let mut seen = s.lock().unwrap();
                let status = if seen.is_empty() { 500 } else { 200 };
                seen.push((status, body));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// An organization with one project and key whose alerts go to a fresh
/// `receiver`: `webhook` and `slack` are paths on it ("" for none). Returns
/// the app, the owner, the organization and what the receiver saw.
async fn alerting_to_receiver(
    backend: Backend,
    webhook: &str,
    slack: &str,
    thresholds: &str,
) -> (TestApp, reqwest::Client, Org, Arc<Mutex<Vec<(u16, Value)>>>) {
    let app = TestApp::spawn(backend).await;
    let (owner, a_id) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let a = org(&app, &owner, Some(a_id), 1).await;
    let (url, seen) = receiver().await;
    let at = |path: &str| {
        if path.is_empty() {
            String::new()
        } else {
            format!("{url}{path}")
        }
    };
    app.ok(
        &owner,
        "update_alerting",
        &[
            ("org_id", &a.id),
            ("webhook_url", &at(webhook)),
            ("slack_url", &at(slack)),
            ("thresholds", thresholds),
        ],
    )
    .await;
    (app, owner, a, seen)
}

async fn threshold_alerts_arrive_once_and_are_retried(backend: Backend) {
    use tollgate_server::alerts::Alerter;
    let (app, owner, a, seen) = alerting_to_receiver(backend, "/hook/secret-token", "", "").await;
    let (s, v) = chat(&app, &a.tokens[0], PRICED).await;
    assert_eq!(s, 200);
    let one = v["usage"]["total_tokens"].as_i64().unwrap() * 10;
    // A key whose monthly budget is ten requests.
    let (key_id, token) = app
        .create_key(
            &owner,
            &a.id,
            &a.projects[0],
            &[
                ("name", "budgeted"),
                ("max_budget", &usd(one * 10)),
                ("budget_reset", "monthly"),
            ],
        )
        .await;
    let config = tollgate_server::config::AlertConfig {
        retry_base_ms: 1_000,
        ..Default::default()
    };
    let alerter = Alerter::new(app.state.db.clone(), config, true);
    let now = tollgate_app::core::now_ms();
    let spend = |n: usize| {
        let (app, token) = (&app, token.clone());
        async move {
            for _ in 0..n {
                assert_eq!(chat(app, &token, PRICED).await.0, 200);
            }
            app.gateway.ledger.flush().await;
        }
    };
    let alerts_of = |seen: &Arc<Mutex<Vec<(u16, Value)>>>| -> Vec<(u16, Value)> {
        seen.lock().unwrap().clone()
    };
    spend(4).await;
    assert_eq!(
        alerter.run_once(now).await.unwrap(),
        (0, 0),
        "40% is below every threshold"
    );
    spend(1).await;
    // 50%: raised, and the receiver fails the first delivery.
    assert_eq!(alerter.run_once(now).await.unwrap(), (1, 1));
    assert_eq!(alerts_of(&seen).len(), 1);
    assert_eq!(alerts_of(&seen)[0].0, 500);
    // Not due again before the backoff...
    assert_eq!(alerter.run_once(now + 500).await.unwrap(), (0, 0));
    // ... then retried, and delivered.
    assert_eq!(alerter.run_once(now + 1_000).await.unwrap(), (0, 1));
    let got = alerts_of(&seen);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, 200);
    assert_eq!(got[1].1["type"], "budget");
    assert_eq!(got[1].1["threshold_percent"], 50);
    assert_eq!(got[1].1["subject"]["id"], key_id.as_str());
    assert_eq!(got[1].1["subject"]["name"], "budgeted");
    assert_eq!(got[0].1, got[1].1, "the retry sends the same alert");
    // Evaluated again and again: nothing new.
    for t in [now + 2_000, now + 60_000] {
        assert_eq!(alerter.run_once(t).await.unwrap(), (0, 0));
    }
    // 80% and 100%: one each.
    spend(5).await;
    assert_eq!(alerter.run_once(now + 61_000).await.unwrap(), (2, 2));
    assert_eq!(alerter.run_once(now + 120_000).await.unwrap(), (0, 0));
    let got = alerts_of(&seen);
    let thresholds: Vec<i64> = got[2..]
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200);
            v["threshold_percent"].as_i64().unwrap()
        })
        .collect();
    let mut sorted = thresholds.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![80, 100]);
    // One row per threshold in this period; the console lists them as delivered.
    let listed = app.ok(&owner, "get_alerting", &[("org_id", &a.id)]).await;
    let sent = listed["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 3, "{listed}");
    for s in sent {
        assert!(s["deliveries"][0]["delivered_at"].is_i64(), "{s}");
    }
    let first = sent.last().unwrap();
    assert_eq!(first["deliveries"][0]["attempts"], 2);
    assert_eq!(first["deliveries"][0]["last_error"], Value::Null);
    // A key expiring within a week: one alert, once.
    app.create_key(
        &owner,
        &a.id,
        &a.projects[0],
        &[
            ("name", "short-lived"),
            (
                "expires_at",
                &tollgate_app::format::format_time(now + 3 * 86_400_000)[..16].replace(' ', "T"),
            ),
        ],
    )
    .await;
    assert_eq!(alerter.run_once(now + 121_000).await.unwrap(), (1, 1));
    assert_eq!(alerter.run_once(now + 122_000).await.unwrap(), (0, 0));
    let got = alerts_of(&seen);
    assert_eq!(got.last().unwrap().1["type"], "key_expiring");
    assert_eq!(got.len(), 5, "one failed and four delivered");
    // Nothing the receiver's URL holds is kept where people read.
    let audit = app
        .ok(&owner, "list_audit_events", &[("org_id", &a.id)])
        .await;
    assert!(!audit.to_string().contains("secret-token"), "{audit}");
    assert!(!listed.to_string().contains("secret-token"), "{listed}");
}
both!(threshold_alerts_arrive_once_and_are_retried);

async fn a_paused_project_is_alerted(backend: Backend) {
    use tollgate_server::alerts::Alerter;
    let (app, owner, a, seen) = alerting_to_receiver(backend, "", "/slack", "100").await;
    let (_, v) = chat(&app, &a.tokens[0], PRICED).await;
    let one = v["usage"]["total_tokens"].as_i64().unwrap() * 10;
    app.ok(
        &owner,
        "update_project",
        &[
            ("org_id", &a.id),
            ("project_id", &a.projects[0]),
            ("name", "P0"),
            ("models[0]", PRICED),
            ("tpm", ""),
            ("rpm", ""),
            ("max_budget", &usd(one * 2)),
            ("budget_reset", "never"),
            ("ip_allowlist", ""),
            ("content_logging", "on"),
        ],
    )
    .await;
    assert_eq!(chat(&app, &a.tokens[0], PRICED).await.0, 200);
    let (s, v) = chat(&app, &a.tokens[0], PRICED).await;
    assert_eq!((s, code(&v)), (402, "project_budget_exceeded"));
    app.gateway.ledger.flush().await;
    let alerter = Alerter::new(app.state.db.clone(), Default::default(), true);
    let now = tollgate_app::core::now_ms();
    // The 100% threshold and the pause; the receiver fails the first once.
    assert_eq!(alerter.run_once(now).await.unwrap(), (2, 2));
    alerter.run_once(now + 3_600_000).await.unwrap();
    let got = seen.lock().unwrap().clone();
    let texts: Vec<&str> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{got:?}");
    assert!(
        texts.iter().any(|t| t.contains("project 'P0' is paused")),
        "{texts:?}"
    );
}
both!(a_paused_project_is_alerted);
