//! The machine APIs over HTTP: FastRouter's `/prod/*`, LiteLLM's management
//! API (driven by a curl script written as LiteLLM users write them), the
//! native REST API and its OpenAPI document; isolation between organizations
//! through every endpoint, and errors that name the field.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

/// An organization with its owner, a "Production" project and a provisioning key.
struct Org {
    owner: reqwest::Client,
    id: String,
    project: String,
    pk: String,
}

async fn organization(app: &TestApp, owner: reqwest::Client, id: String) -> Org {
    let project = app.create_project(&owner, &id, "Production").await;
    let pk = app
        .ok(
            &owner,
            "create_provisioning_key",
            &[("org_id", &id), ("name", "automation")],
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    Org {
        owner,
        id,
        project,
        pk,
    }
}

/// Two organizations: A (set up first) and B (made by another person).
async fn two_orgs(app: &TestApp) -> (Org, Org) {
    let (owner, id) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let other = app.add_member(&owner, &id, "owner@b.test", "member").await;
    let b_id = app.ok(&other, "create_org", &[("name", "Beta")]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = organization(app, owner, id).await;
    let b = organization(app, other, b_id).await;
    (a, b)
}

/// Sends `body` as JSON (or nothing) with a bearer token.
async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    send(app, token, Method::POST, path, Some(body)).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    send(app, token, Method::GET, path, None).await
}

async fn chat(app: &TestApp, token: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

async fn fastrouter_service_keys_from_create_to_delete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    let (st, created) = post(
        &app,
        &a.pk,
        "/prod/createServiceKey",
        json!({
            "api_key_name": "ci-pipeline", "project_name": "Production", "models": ["mock/echo"],
            "credit_limit": 150, "reset_budget_interval": "daily", "tags": ["ci", "nightly"],
            "metadata": { "team": "search", "build": 42 }, "rpm_limit": 100,
        }),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let token = s(&created["api_key"]);
    let hash = s(&created["api_key_id_hash"]);
    assert!(token.starts_with("sk-tg-") && !hash.is_empty(), "{created}");
    assert_eq!(created["credit_limit"], 150.0);
    assert_eq!(created["reset_budget_interval"], "daily");
    assert_eq!(created["project_id"], json!(a.project));

    // The key calls /v1 within its limits: its model, and no other.
    assert_eq!(chat(&app, &token, "mock/echo").await, 200);
    assert_eq!(chat(&app, &token, "mock/fast").await, 403);

    // Listed without its secret, filtered by tag and by metadata.
    let (_, all) = get(&app, &a.pk, "/prod/getServiceKeys").await;
    assert_eq!(all["total"], 1, "{all}");
    assert!(!all.to_string().contains(&token[10..]), "{all}");
    for (query, n) in [
        ("tag=ci", 1),
        ("tag=other", 0),
        ("metadata=%7B%22team%22%3A%22search%22%7D", 1),
        ("metadata=%7B%22team%22%3A%22ads%22%7D", 0),
        ("project_name=Production&tag=nightly", 1),
    ] {
        let (st, found) = get(&app, &a.pk, &format!("/prod/getServiceKeys?{query}")).await;
        assert_eq!(
            (st, found["total"].as_u64()),
            (200, Some(n)),
            "{query}: {found}"
        );
    }

    // Updated by hash: the next request sees the new limit.
    let (st, updated) = post(
        &app,
        &a.pk,
        "/prod/updateServiceKey",
        json!({ "api_key_id_hash": hash, "rpm_limit": 1, "api_key_name": "ci-pipeline-2" }),
    )
    .await;
    assert_eq!(st, 200, "{updated}");
    assert_eq!(updated["api_key_name"], "ci-pipeline-2");
    assert_eq!(chat(&app, &token, "mock/echo").await, 200);
    assert_eq!(chat(&app, &token, "mock/echo").await, 429);

    // In the console: a service key, in the project's list, with no owner.
    let keys = app
        .ok(
            &a.owner,
            "list_keys",
            &[("org_id", &a.id), ("project_id", &a.project)],
        )
        .await;
    let listed = &keys["keys"][0];
    assert_eq!(
        (listed["name"].clone(), listed["owner"].clone()),
        (json!("ci-pipeline-2"), Value::Null)
    );
    assert_eq!(listed["id_hash"], json!(hash));

    // Deleted by hash: the next call gets 401; it is gone from the list.
    let (st, gone) = post(
        &app,
        &a.pk,
        "/prod/deleteServiceKey",
        json!({ "api_key_id_hash": hash }),
    )
    .await;
    assert_eq!((st, gone["deleted"].clone()), (200, json!(true)), "{gone}");
    assert_eq!(chat(&app, &token, "mock/echo").await, 401);
    assert_eq!(get(&app, &a.pk, "/prod/getServiceKeys").await.1["total"], 0);
    let (st, again) = post(
        &app,
        &a.pk,
        "/prod/deleteServiceKey",
        json!({ "api_key_id_hash": hash }),
    )
    .await;
    assert_eq!(
        (st, s(&again["error"]["field"])),
        (404, "api_key_id_hash".into())
    );

    // Every change is audited with the provisioning key as the actor.
    let audit = app
        .ok(&a.owner, "list_audit_events", &[("org_id", &a.id)])
        .await;
    let by_key: Vec<String> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "provisioning key 'automation'")
        .map(|e| s(&e["action"]))
        .collect();
    assert_eq!(
        by_key,
        ["key.deleted", "key.updated", "key.created"],
        "{audit}"
    );
}
both!(fastrouter_service_keys_from_create_to_delete);

/// LiteLLM's admin API past onboarding, each route once: named budgets that
/// teams and keys take their limits from, credentials and models, users and
/// teams under the caller's ids, an imported key, the organization, spend
/// and health; then everything deleted again.
async fn litellm_admin_routes_from_create_to_delete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    let pk = a.pk.as_str();
    let (st, b) = post(
        &app,
        pk,
        "/budget/new",
        json!({ "budget_id": "eng", "max_budget": 20, "budget_duration": "1mo", "rpm_limit": 30 }),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (
            b["max_budget"].clone(),
            b["budget_duration"].clone(),
            b["rpm_limit"].clone()
        ),
        (json!(20.0), json!("1mo"), json!(30))
    );
    let (st, list) = get(&app, pk, "/budget/list").await;
    assert_eq!(
        (st, list[0]["budget_id"].clone()),
        (200, json!("eng")),
        "{list}"
    );
    let (_, info) = post(&app, pk, "/budget/info", json!({ "budgets": ["eng"] })).await;
    assert_eq!(info[0]["max_budget"], 20.0, "{info}");

    // A credential and a model served through it.
    let (st, c) = post(&app, pk, "/credentials", json!({
        "credential_name": "lab", "credential_info": { "custom_llm_provider": "hosted_vllm", "description": "GPU box" },
        "credential_values": { "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-upstream-0123456789" },
    })).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["credential_values"]["api_key"], "…6789", "{c}");
    let (st, patched) = send(
        &app,
        pk,
        Method::PATCH,
        "/credentials/lab",
        Some(json!({ "credential_values": { "api_base": "http://127.0.0.1:10/v1" } })),
    )
    .await;
    assert_eq!(st, 200, "{patched}");
    assert_eq!(
        patched["credential_values"]["api_base"],
        "http://127.0.0.1:10/v1"
    );
    assert_eq!(
        patched["credential_values"]["api_key"],
        Value::Null,
        "a key is never sent to an address it was not given for"
    );
    let (st, patched) = send(
        &app,
        pk,
        Method::PATCH,
        "/credentials/lab",
        Some(json!({ "credential_values": { "api_key": "sk-upstream-0123456789" } })),
    )
    .await;
    assert_eq!(
        (st, patched["credential_values"]["api_key"].clone()),
        (200, json!("…6789")),
        "{patched}"
    );
    let (st, patched) = send(
        &app,
        pk,
        Method::PATCH,
        "/credentials/lab",
        Some(json!({ "credential_info": { "custom_llm_provider": "hosted_vllm", "description": "GPU box" } })),
    )
    .await;
    assert_eq!(
        (st, patched["credential_values"]["api_key"].clone()),
        (200, json!("…6789")),
        "the same address keeps its key: {patched}"
    );
    assert_eq!(patched["credential_info"]["description"], "GPU box");
    let (_, all) = get(&app, pk, "/credentials").await;
    assert!(!all.to_string().contains("0123456789"), "{all}");
    let (st, m) = post(&app, pk, "/model/new", json!({
        "model_name": "lab/chat", "litellm_params": { "model": "hosted_vllm/chat", "litellm_credential_name": "lab" },
        "model_info": { "id": "m-1", "mode": "chat", "input_cost_per_token": 0.000002 },
    })).await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(
        (
            m["model_info"]["id"].clone(),
            m["model_info"]["input_cost_per_million_tokens"].clone()
        ),
        (json!("m-1"), json!(2.0)),
        "{m}"
    );
    assert_eq!(m["litellm_params"]["model"], "hosted_vllm/chat");
    let (st, m) = send(
        &app,
        pk,
        Method::PATCH,
        "/model/m-1/update",
        Some(json!({ "model_info": { "input_cost_per_million_tokens": 3 } })),
    )
    .await;
    assert_eq!(
        (st, m["model_info"]["input_cost_per_million_tokens"].clone()),
        (200, json!(3.0)),
        "{m}"
    );
    let (_, info) = get(&app, pk, "/model/info?litellm_model_id=m-1").await;
    assert_eq!(info["data"].as_array().map(Vec::len), Some(1), "{info}");

    // A user under the caller's id, and a team under the caller's id.
    let (st, u) = post(&app, pk, "/user/new", json!({ "user_id": "carol", "user_email": "carol@a.test", "user_alias": "Carol", "auto_create_key": false })).await;
    assert_eq!(
        (st, u["user_id"].clone(), u["status"].clone()),
        (200, json!("carol"), json!("created")),
        "{u}"
    );
    let (st, u) = post(
        &app,
        pk,
        "/user/update",
        json!({ "user_id": "carol", "user_alias": "C." }),
    )
    .await;
    assert_eq!(
        (st, u["user_alias"].clone(), u["user_role"].clone()),
        (200, json!("C."), json!("internal_user")),
        "{u}"
    );
    let (_, users) = get(&app, pk, "/user/list?page_size=10").await;
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == "carol"),
        "{users}"
    );
    let (st, t) = post(&app, pk, "/team/new", json!({
        "team_id": "team-lab", "team_alias": "lab", "budget_id": "eng", "models": ["mock/echo", "lab/chat"],
        "members_with_roles": [{ "user_id": "carol", "role": "user" }],
    })).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (
            t["team_id"].clone(),
            t["max_budget"].clone(),
            t["rpm_limit"].clone(),
            t["budget_id"].clone()
        ),
        (json!("team-lab"), json!(20.0), json!(30), json!("eng")),
        "{t}"
    );
    let (st, dup) = post(
        &app,
        pk,
        "/team/new",
        json!({ "team_id": "team-lab", "team_alias": "other" }),
    )
    .await;
    assert_eq!(
        (st, dup["error"]["field"].clone()),
        (400, json!("team_id")),
        "{dup}"
    );
    let (_, listed) = get(&app, pk, "/v2/team/list?team_alias=lab").await;
    assert_eq!(
        (
            listed["total"].clone(),
            listed["teams"][0]["team_id"].clone()
        ),
        (json!(1), json!("team-lab")),
        "{listed}"
    );
    let (st, up) = post(
        &app,
        pk,
        "/team/member_update",
        json!({ "team_id": "team-lab", "user_id": "carol", "role": "admin" }),
    )
    .await;
    assert_eq!(st, 200, "{up}");
    let (_, info) = get(&app, pk, "/team/info?team_id=team-lab").await;
    assert_eq!(
        info["team_info"]["members_with_roles"],
        json!([{ "user_id": "carol", "user_email": "carol@a.test", "role": "admin" }]),
        "{info}"
    );

    // An imported key: the caller's token works as it is.
    let imported = "sk-proj-Q3fZ8kLm2Vx9Rt4Yw7Np1Hs6Jd0Gb5Ce";
    let (st, k) = post(&app, pk, "/key/generate", json!({ "team_id": "team-lab", "key_alias": "imported", "key": imported, "user_id": "carol", "budget_id": "eng" })).await;
    assert_eq!(st, 200, "{k}");
    assert_eq!(
        (
            k["key"].clone(),
            k["user_id"].clone(),
            k["team_id"].clone(),
            k["max_budget"].clone()
        ),
        (
            json!(imported),
            json!("carol"),
            json!("team-lab"),
            json!(20.0)
        ),
        "{k}"
    );
    app.feed_caught_up().await;
    assert_eq!(chat(&app, imported, "mock/echo").await, 200);
    let (st, again) = post(
        &app,
        pk,
        "/key/generate",
        json!({ "team_id": "team-lab", "key_alias": "imported" }),
    )
    .await;
    assert_eq!(
        (st, again["error"]["field"].clone()),
        (400, json!("key_alias")),
        "{again}"
    );
    let (st, again) = post(
        &app,
        pk,
        "/key/generate",
        json!({ "team_id": "team-lab", "key_alias": "twice", "key": imported }),
    )
    .await;
    assert_eq!(
        (st, again["error"]["field"].clone()),
        (400, json!("key")),
        "{again}"
    );
    let (_, keys) = get(&app, pk, "/key/list?return_full_object=true&user_id=carol").await;
    assert_eq!(
        (
            keys["total_count"].clone(),
            keys["keys"][0]["key_alias"].clone()
        ),
        (json!(1), json!("imported")),
        "{keys}"
    );
    // Blocked and unblocked, the key and then its whole team.
    for (path, body, status) in [
        ("/key/block", json!({ "key": imported }), 401),
        ("/key/unblock", json!({ "key": imported }), 200),
        ("/team/block", json!({ "team_id": "team-lab" }), 403),
        ("/team/unblock", json!({ "team_id": "team-lab" }), 200),
    ] {
        let (st, answer) = post(&app, pk, path, body).await;
        assert_eq!(st, 200, "{path}: {answer}");
        app.feed_caught_up().await;
        assert_eq!(
            chat(&app, imported, "mock/echo").await,
            status,
            "after {path}"
        );
    }
    let (st, again) = post(&app, pk, "/key/unblock", json!({ "key": imported })).await;
    assert_eq!(st, 409, "{again}");
    // A change to the budget reaches the team and the key.
    let (st, _) = post(
        &app,
        pk,
        "/budget/update",
        json!({ "budget_id": "eng", "max_budget": 40 }),
    )
    .await;
    assert_eq!(st, 200);
    let (_, info) = get(&app, pk, "/team/info?team_id=team-lab").await;
    assert_eq!(info["team_info"]["max_budget"], 40.0, "{info}");
    let (_, key) = get(&app, pk, &format!("/key/info?key={imported}")).await;
    assert_eq!(key["info"]["max_budget"], 40.0, "{key}");

    // The organization, spend and health.
    let (_, orgs) = get(&app, pk, "/organization/list").await;
    assert_eq!(orgs[0]["organization_id"], json!(a.id), "{orgs}");
    assert!(
        orgs[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == "carol"),
        "{orgs}"
    );
    let (st, o) = send(
        &app,
        pk,
        Method::PATCH,
        "/organization/update",
        Some(json!({ "organization_alias": "Acme" })),
    )
    .await;
    assert_eq!(
        (st, o["organization_alias"].clone()),
        (200, json!("Acme")),
        "{o}"
    );
    let (_, o) = get(
        &app,
        pk,
        &format!("/organization/info?organization_id={}", a.id),
    )
    .await;
    assert_eq!(o["organization_alias"], "Acme", "{o}");
    let (_, logs) = get(&app, pk, "/spend/logs").await;
    app.feed_caught_up().await;
    assert!(logs.is_array(), "{logs}");
    for path in ["/global/spend/keys", "/global/spend/teams", "/health"] {
        let (st, body) = get(&app, pk, path).await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (_, health) = get(&app, pk, "/health").await;
    assert!(health["healthy_count"].as_u64().unwrap() >= 1, "{health}");
    for path in ["/health/liveliness", "/health/readiness"] {
        let res = reqwest::get(format!("{}{path}", app.url)).await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
    }
    // A known path with a method it does not take: JSON, 405.
    let (st, wrong) = get(&app, pk, "/budget/new").await;
    assert_eq!(
        (st, wrong["error"]["code"].clone()),
        (405, json!("method_not_allowed")),
        "{wrong}"
    );
    // A blocked key whose holder leaves (a viewer holds no keys) is revoked
    // for good: it is never unblocked.
    let (st, _) = post(&app, pk, "/key/block", json!({ "key": imported })).await;
    assert_eq!(st, 200);
    let (st, member) = send(
        &app,
        pk,
        Method::PATCH,
        "/organization/member_update",
        Some(json!({ "user_id": "carol", "role": "internal_user_viewer" })),
    )
    .await;
    assert_eq!(
        (st, member["user_role"].clone()),
        (200, json!("internal_user_viewer")),
        "{member}"
    );

    // The rest of the organization routes, and bad input on the GET and
    // PATCH routes (the 400 table covers the POST ones).
    let (st, b) = get(&app, pk, "/budget/info?budget_id=eng").await;
    assert_eq!((st, b[0]["max_budget"].clone()), (200, json!(40.0)), "{b}");
    let (st, added) = post(
        &app,
        pk,
        "/organization/member_add",
        json!({ "member": [{ "user_id": "carol", "role": "internal_user" }] }),
    )
    .await;
    assert_eq!(
        (st, added["updated_members"][0]["user_id"].clone()),
        (200, json!("carol")),
        "{added}"
    );
    let (st, _) = post(
        &app,
        pk,
        "/user/new",
        json!({ "user_id": "dave", "user_email": "dave@a.test" }),
    )
    .await;
    assert_eq!(st, 200);
    let (st, gone) = send(
        &app,
        pk,
        Method::DELETE,
        "/organization/member_delete",
        Some(json!({ "user_id": "dave" })),
    )
    .await;
    assert_eq!(
        (st, gone["deleted_user_id"].clone()),
        (200, json!("dave")),
        "{gone}"
    );
    for (method, path, body, field) in [
        (Method::GET, "/spend/logs?limit=0", None, "limit"),
        (
            Method::GET,
            "/spend/logs?start_date=yesterday",
            None,
            "start_date",
        ),
        (
            Method::GET,
            "/global/spend/keys?start_date=2026-01-01",
            None,
            "start_date",
        ),
        (Method::GET, "/global/spend/teams?limit=5000", None, "limit"),
        (
            Method::GET,
            "/model/info?litellm_model_id=nope",
            None,
            "litellm_model_id",
        ),
        (
            Method::PATCH,
            "/model/m-1/update",
            Some(json!({ "model_name": "renamed" })),
            "model_name",
        ),
        (
            Method::PATCH,
            "/credentials/lab",
            Some(json!({ "credential_name": "renamed" })),
            "credential_name",
        ),
        (
            Method::PATCH,
            "/organization/update",
            Some(json!({ "organization_alias": "" })),
            "organization_alias",
        ),
    ] {
        let (st, e) = send(&app, pk, method.clone(), path, body).await;
        assert!(st == 400 || st == 404, "{method} {path}: {st} {e}");
        assert_eq!(e["error"]["field"], field, "{method} {path}: {e}");
    }

    // The organization's owners are people's to change: a provisioning key
    // links one under its own id, but never changes or removes them.
    let (st, boss) = post(
        &app,
        pk,
        "/user/new",
        json!({ "user_id": "boss", "user_email": "owner@a.test" }),
    )
    .await;
    assert_eq!(
        (st, boss["tollgate_role"].clone()),
        (200, json!("owner")),
        "{boss}"
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/user/delete",
            json!({ "user_ids": ["boss"] }),
        ),
        (
            Method::POST,
            "/user/update",
            json!({ "user_id": "boss", "user_role": "internal_user" }),
        ),
        (
            Method::PATCH,
            "/organization/member_update",
            json!({ "user_id": "boss", "role": "internal_user" }),
        ),
        (
            Method::DELETE,
            "/organization/member_delete",
            json!({ "user_id": "boss" }),
        ),
    ] {
        let (st, e) = send(&app, pk, method, path, Some(body)).await;
        assert_eq!(
            (st, e["error"]["code"].clone()),
            (403, json!("forbidden")),
            "{path}: {e}"
        );
    }
    let (_, owners) = get(&app, pk, "/user/list?role=proxy_admin").await;
    assert_eq!(owners["total"], 1, "{owners}");

    // Deleted again; the team keeps the limits of a deleted budget.
    for (path, body) in [
        ("/model/delete", json!({ "id": "m-1" })),
        ("/budget/delete", json!({ "id": "eng" })),
        ("/user/delete", json!({ "user_ids": ["carol"] })),
    ] {
        let (st, answer) = post(&app, pk, path, body).await;
        assert_eq!(st, 200, "{path}: {answer}");
    }
    let (st, gone) = send(&app, pk, Method::DELETE, "/credentials/lab", None).await;
    assert_eq!(st, 200, "{gone}");
    let (_, info) = get(&app, pk, "/team/info?team_id=team-lab").await;
    assert_eq!(
        (
            info["team_info"]["max_budget"].clone(),
            info["team_info"]["budget_id"].clone()
        ),
        (json!(40.0), Value::Null),
        "{info}"
    );
    let (_, users) = get(&app, pk, "/user/list").await;
    assert!(!users.to_string().contains("carol"), "{users}");
    let (_, models) = get(&app, pk, "/model/info").await;
    assert!(!models.to_string().contains("lab/chat"), "{models}");
    let (st, e) = post(&app, pk, "/key/unblock", json!({ "key": imported })).await;
    assert_eq!(st, 409, "{e}");
    app.feed_caught_up().await;
    assert_eq!(
        chat(&app, imported, "mock/echo").await,
        401,
        "a removed member's key stops"
    );
}
both!(litellm_admin_routes_from_create_to_delete);

/// The machine APIs' key, team and user lists are pages cut in SQL, with
/// the number that match in all.
async fn lists_come_in_pages_with_their_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    for i in 0..3 {
        let (st, _) = post(&app, &a.pk, "/prod/createServiceKey", json!({ "api_key_name": format!("svc-{i}"), "project_name": "Production", "tags": ["paged"] })).await;
        assert_eq!(st, 201);
        // Newest first: each a millisecond apart at least.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let (_, page) = get(&app, &a.pk, "/prod/getServiceKeys?limit=2").await;
    assert_eq!(
        (
            page["total"].clone(),
            page["service_keys"].as_array().map(Vec::len)
        ),
        (json!(3), Some(2)),
        "{page}"
    );
    assert_eq!(
        page["service_keys"][0]["api_key_name"], "svc-2",
        "newest first: {page}"
    );
    let (_, rest) = get(
        &app,
        &a.pk,
        "/prod/getServiceKeys?limit=2&offset=2&tag=paged",
    )
    .await;
    assert_eq!(
        (
            rest["total"].clone(),
            rest["service_keys"][0]["api_key_name"].clone()
        ),
        (json!(3), json!("svc-0")),
        "{rest}"
    );
    let res = reqwest::Client::new()
        .get(format!("{}/api/v1/keys?limit=1&offset=1", app.url))
        .bearer_auth(&a.pk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-total-count"], "3");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body.as_array().map(Vec::len), body[0]["name"].clone()),
        (Some(1), json!("svc-1")),
        "{body}"
    );
    let (_, keys) = get(&app, &a.pk, "/key/list?size=2&page=2").await;
    assert_eq!(
        (
            keys["total_count"].clone(),
            keys["total_pages"].clone(),
            keys["keys"].as_array().map(Vec::len)
        ),
        (json!(3), json!(2), Some(1)),
        "{keys}"
    );
    for (path, field) in [
        ("/prod/getServiceKeys?limit=0", "limit"),
        ("/api/v1/keys?offset=-1", "offset"),
        ("/key/list?size=101", "size"),
        ("/user/list?page_size=0", "page_size"),
        ("/v2/team/list?page=0", "page"),
    ] {
        let (st, e) = get(&app, &a.pk, path).await;
        assert_eq!(
            (st, e["error"]["field"].clone()),
            (400, json!(field)),
            "{path}: {e}"
        );
    }
}
both!(lists_come_in_pages_with_their_total);

/// The onboarding script, run as its users run it: only the host and the
/// admin key differ from a LiteLLM deployment.
async fn litellm_onboarding_script_runs_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    // One person already in the organization; the script also invites one.
    app.add_member(&a.owner, &a.id, "dana@a.test", "member")
        .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../end2end/litellm/onboard.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .env("LITELLM_URL", &app.url)
        .env("LITELLM_MASTER_KEY", &a.pk)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the script failed:\n{stdout}\n{stderr}"
    );

    // What it printed: each team's kept key, and the rejected old one.
    let line = |prefix: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    let kept = line("KEY ");
    assert_eq!(kept.len(), 3, "{stdout}");
    assert_eq!(line("OLD KEY STATUS "), ["401"]);
    for k in &kept {
        let (team, token) = k.split_once(' ').unwrap();
        assert_eq!(chat(&app, token, "mock/echo").await, 200, "{team}");
        assert_eq!(chat(&app, token, "mock/fast").await, 403, "{team}");
    }

    // Everything it made is in the console.
    let projects = app
        .ok(&a.owner, "list_projects", &[("org_id", &a.id)])
        .await;
    let names: Vec<String> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| s(&p["name"]))
        .collect();
    for team in ["search", "ads", "support", "research"] {
        assert!(names.contains(&team.to_owned()), "{names:?}");
    }
    let search = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "search")
        .unwrap();
    let view = app
        .ok(
            &a.owner,
            "get_project",
            &[("org_id", &a.id), ("project_id", &s(&search["id"]))],
        )
        .await;
    assert_eq!(view["models"], json!(["mock/echo"]), "{view}");
    assert_eq!(view["budget_micros"], 500_000_000);
    assert_eq!(view["budget_reset"], "monthly");
    let keys = app
        .ok(
            &a.owner,
            "list_keys",
            &[("org_id", &a.id), ("project_id", &s(&search["id"]))],
        )
        .await;
    assert_eq!(keys["total"], 1, "the regenerated key stays, one per team");
    let expires = keys["keys"][0]["expires_at"].as_i64().unwrap();
    let days = (expires - tollgate_app::core::now_ms()) / 86_400_000;
    assert!((89..=90).contains(&days), "{days}");
    let members = app.ok(&a.owner, "list_members", &[("org_id", &a.id)]).await;
    let dana = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "dana@a.test")
        .unwrap();
    assert_eq!(dana["role"], "viewer");
    let invited = app
        .ok(&a.owner, "list_invitations", &[("org_id", &a.id)])
        .await;
    assert!(
        invited.to_string().contains("erin@a.test"),
        "an unknown email becomes a pending invitation: {invited}"
    );
    let audit = app
        .ok(&a.owner, "list_audit_events", &[("org_id", &a.id)])
        .await;
    assert!(audit["actors"]
        .as_array()
        .unwrap()
        .contains(&json!("provisioning key 'automation'")));
}
both!(litellm_onboarding_script_runs_unchanged);

/// Org A's provisioning key against every endpoint, naming B's things: each
/// answers as if they did not exist, and B is as it was.
async fn a_provisioning_key_reaches_nothing_of_another_org(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = two_orgs(&app).await;
    let (_, b_key) = post(
        &app,
        &b.pk,
        "/prod/createServiceKey",
        json!({ "api_key_name": "b-key", "project_id": b.project, "tags": ["b"] }),
    )
    .await;
    let b_token = s(&b_key["api_key"]);
    let b_hash = s(&b_key["api_key_id_hash"]);
    assert_eq!(chat(&app, &b_token, "mock/echo").await, 200);
    let b_member = app
        .add_member(&b.owner, &b.id, "bob@b.test", "member")
        .await;
    let b_member_id = app.user_id(&b_member).await;
    // B's own LiteLLM objects, under ids B chose.
    for (path, body) in [
        (
            "/budget/new",
            json!({ "budget_id": "b-budget", "max_budget": 5 }),
        ),
        (
            "/credentials",
            json!({ "credential_name": "b-cred", "credential_values": { "api_base": "http://127.0.0.1:9/v1" } }),
        ),
        (
            "/model/new",
            json!({ "model_name": "b/model", "litellm_params": { "model": "mock/echo", "litellm_credential_name": "mock" }, "model_info": { "id": "b-model-id" } }),
        ),
        (
            "/user/new",
            json!({ "user_id": "b-user", "user_email": "b-user@b.test" }),
        ),
        (
            "/team/new",
            json!({ "team_id": "b-team", "team_alias": "b team", "members_with_roles": [{ "user_id": "b-user", "role": "user" }] }),
        ),
    ] {
        let (st, answer) = post(&app, &b.pk, path, body).await;
        assert_eq!(st, 200, "{path}: {answer}");
    }
    let before = snapshot(&app, &b).await;

    let p = &b.project;
    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/budget/update".into(),
            Some(json!({ "budget_id": "b-budget", "max_budget": 1 })),
        ),
        (
            Method::POST,
            "/budget/delete".into(),
            Some(json!({ "id": "b-budget" })),
        ),
        (
            Method::POST,
            "/budget/info".into(),
            Some(json!({ "budgets": ["b-budget"] })),
        ),
        (Method::GET, "/budget/info?budget_id=b-budget".into(), None),
        (
            Method::POST,
            "/key/generate".into(),
            Some(json!({ "team_id": "b-team" })),
        ),
        (
            Method::POST,
            "/key/generate".into(),
            Some(json!({ "team_id": "Production", "budget_id": "b-budget" })),
        ),
        (
            Method::POST,
            "/key/update".into(),
            Some(json!({ "key_alias": "b-key", "max_budget": 1 })),
        ),
        (Method::GET, "/key/list?user_id=b-user".into(), None),
        (
            Method::PATCH,
            "/model/b-model-id/update".into(),
            Some(json!({ "model_info": { "input_cost_per_million_tokens": 9 } })),
        ),
        (
            Method::POST,
            "/model/delete".into(),
            Some(json!({ "id": "b-model-id" })),
        ),
        (
            Method::GET,
            "/model/info?litellm_model_id=b-model-id".into(),
            None,
        ),
        (
            Method::PATCH,
            "/credentials/b-cred".into(),
            Some(json!({ "credential_values": { "api_key": "x" } })),
        ),
        (Method::DELETE, "/credentials/b-cred".into(), None),
        (
            Method::POST,
            "/user/update".into(),
            Some(json!({ "user_id": "b-user", "user_alias": "x" })),
        ),
        (
            Method::POST,
            "/user/delete".into(),
            Some(json!({ "user_ids": ["b-user"] })),
        ),
        (Method::GET, "/user/info?user_id=b-user".into(), None),
        (Method::GET, "/team/info?team_id=b-team".into(), None),
        (
            Method::POST,
            "/team/update".into(),
            Some(json!({ "team_id": "b-team", "max_budget": 1 })),
        ),
        (
            Method::POST,
            "/team/member_update".into(),
            Some(json!({ "team_id": "b-team", "user_id": "b-user", "role": "admin" })),
        ),
        (
            Method::POST,
            "/team/member_update".into(),
            Some(json!({ "team_id": "Production", "user_id": "b-user", "role": "admin" })),
        ),
        (
            Method::GET,
            "/v2/team/list?organization_id=".to_owned() + &b.id,
            None,
        ),
        (
            Method::GET,
            format!("/organization/info?organization_id={}", b.id),
            None,
        ),
        (
            Method::PATCH,
            "/organization/update".into(),
            Some(json!({ "organization_id": b.id, "organization_alias": "x" })),
        ),
        (
            Method::POST,
            "/organization/member_add".into(),
            Some(json!({ "organization_id": b.id, "member": { "user_id": "b-user" } })),
        ),
        (
            Method::POST,
            "/organization/member_add".into(),
            Some(json!({ "member": { "user_id": "b-user" } })),
        ),
        (
            Method::PATCH,
            "/organization/member_update".into(),
            Some(json!({ "user_id": "b-user", "role": "org_admin" })),
        ),
        (
            Method::DELETE,
            "/organization/member_delete".into(),
            Some(json!({ "user_id": "b-user" })),
        ),
        (Method::GET, format!("/spend/logs?api_key={b_hash}"), None),
        (Method::GET, "/spend/logs?team_id=b-team".into(), None),
        (
            Method::POST,
            "/prod/createServiceKey".into(),
            Some(json!({ "api_key_name": "x", "project_id": p })),
        ),
        (
            Method::POST,
            "/prod/createServiceKey".into(),
            Some(json!({ "api_key_name": "x", "org_id": b.id, "project_name": "Production" })),
        ),
        (
            Method::GET,
            format!("/prod/getServiceKeys?org_id={}", b.id),
            None,
        ),
        (
            Method::GET,
            format!("/prod/getServiceKeys?project_id={p}"),
            None,
        ),
        (
            Method::POST,
            "/prod/updateServiceKey".into(),
            Some(json!({ "api_key_id_hash": b_hash, "rpm_limit": 1 })),
        ),
        (
            Method::POST,
            "/prod/deleteServiceKey".into(),
            Some(json!({ "api_key_id_hash": b_hash })),
        ),
        (
            Method::POST,
            "/key/generate".into(),
            Some(json!({ "team_id": p })),
        ),
        (
            Method::POST,
            "/key/update".into(),
            Some(json!({ "key": b_token, "max_budget": 1 })),
        ),
        (
            Method::POST,
            "/key/update".into(),
            Some(json!({ "key": b_hash, "max_budget": 1 })),
        ),
        (
            Method::POST,
            "/key/regenerate".into(),
            Some(json!({ "key": b_token })),
        ),
        (
            Method::POST,
            "/key/delete".into(),
            Some(json!({ "keys": [b_token] })),
        ),
        (
            Method::DELETE,
            "/key/delete".into(),
            Some(json!({ "key_aliases": ["b-key"] })),
        ),
        (Method::GET, format!("/key/info?key={b_hash}"), None),
        (Method::GET, format!("/key/list?team_id={p}"), None),
        (
            Method::POST,
            "/team/new".into(),
            Some(json!({ "team_alias": "x", "organization_id": b.id })),
        ),
        (
            Method::POST,
            "/team/update".into(),
            Some(json!({ "team_id": p, "max_budget": 1 })),
        ),
        (Method::GET, format!("/team/info?team_id={p}"), None),
        (
            Method::GET,
            format!("/team/list?organization_id={}", b.id),
            None,
        ),
        (
            Method::POST,
            "/team/delete".into(),
            Some(json!({ "team_ids": [p] })),
        ),
        (
            Method::POST,
            "/team/member_add".into(),
            Some(json!({ "team_id": p, "member": { "user_email": "bob@b.test" } })),
        ),
        (
            Method::POST,
            "/team/member_delete".into(),
            Some(json!({ "team_id": p, "user_email": "bob@b.test" })),
        ),
        (
            Method::POST,
            "/organization/member_permission_update".into(),
            Some(
                json!({ "user_email": "bob@b.test", "user_role": "admin", "organization_id": b.id }),
            ),
        ),
        (
            Method::POST,
            "/organization/member_permission_update".into(),
            Some(json!({ "user_email": "x@a.test", "user_role": "internal_user", "team_id": p })),
        ),
        (
            Method::POST,
            "/user/new".into(),
            Some(json!({ "user_email": "x@a.test", "organization_id": b.id })),
        ),
        (
            Method::POST,
            "/user/new".into(),
            Some(json!({ "user_email": "x@a.test", "teams": [p] })),
        ),
        (Method::GET, "/user/info?user_email=bob@b.test".into(), None),
        (
            Method::GET,
            format!("/user/info?user_id={b_member_id}"),
            None,
        ),
        (Method::GET, format!("/api/v1/projects/{p}"), None),
        (
            Method::PATCH,
            format!("/api/v1/projects/{p}"),
            Some(json!({ "rpm_limit": 1 })),
        ),
        (Method::DELETE, format!("/api/v1/projects/{p}"), None),
        (Method::GET, format!("/api/v1/projects/{p}/members"), None),
        (
            Method::PUT,
            format!("/api/v1/projects/{p}/members/{b_member_id}"),
            Some(json!({ "role": "admin" })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/members/{b_member_id}"),
            None,
        ),
        (Method::GET, format!("/api/v1/keys?project={p}"), None),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({ "project": p, "name": "x" })),
        ),
        (Method::GET, format!("/api/v1/keys/{b_hash}"), None),
        (
            Method::PATCH,
            format!("/api/v1/keys/{b_hash}"),
            Some(json!({ "rpm_limit": 1 })),
        ),
        (Method::DELETE, format!("/api/v1/keys/{b_hash}"), None),
        (
            Method::POST,
            format!("/api/v1/keys/{b_hash}/rotate"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in refused {
        let (st, answer) = send(&app, &a.pk, method.clone(), &path, body).await;
        assert_eq!(st, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{method} {path}");
        assert!(!answer.to_string().contains("Beta"), "{answer}");
    }
    // Lists and reports of A's own hold nothing of B's.
    for path in [
        "/prod/getServiceKeys",
        "/key/list?return_full_object=true",
        "/team/list",
        "/billing/daily-spend",
        "/global/spend/report",
        "/global/spend/report?group_by=api_key",
        "/api/v1/projects",
        "/api/v1/keys",
        "/api/v1/members",
        "/api/v1/usage?group_by=key",
        "/user/list",
        "/v2/team/list",
        "/budget/list",
        "/model/info",
        "/credentials",
        "/organization/list",
        "/spend/logs",
        "/global/spend/keys",
        "/global/spend/teams",
        "/health",
    ] {
        let (st, answer) = get(&app, &a.pk, path).await;
        assert_eq!(st, 200, "{path}: {answer}");
        let text = answer.to_string();
        for theirs in [
            b_hash.as_str(),
            b.project.as_str(),
            "b-key",
            "bob@b.test",
            "b-budget",
            "b-cred",
            "b-model-id",
            "b-user",
            "b-team",
        ] {
            assert!(!text.contains(theirs), "{path} shows {theirs}: {text}");
        }
    }
    // A's alerting settings are A's.
    let (st, _) = post(
        &app,
        &a.pk,
        "/config/update",
        json!({ "environment_variables": { "WEBHOOK_URL": "https://hooks.a.test/x" } }),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(snapshot(&app, &b).await, before, "B changed");
    assert_eq!(chat(&app, &b_token, "mock/echo").await, 200);
}
both!(a_provisioning_key_reaches_nothing_of_another_org);

/// What B's own provisioning key and owner see of B.
async fn snapshot(app: &TestApp, b: &Org) -> String {
    let mut parts = Vec::new();
    for path in [
        "/prod/getServiceKeys",
        "/team/list",
        "/api/v1/members",
        "/api/v1/organization",
        "/budget/list",
        "/credentials",
        "/model/info",
        "/user/list",
        "/v2/team/list",
        "/organization/list",
    ] {
        parts.push(get(app, &b.pk, path).await.1.to_string());
    }
    for f in ["list_members", "list_invitations"] {
        parts.push(app.ok(&b.owner, f, &[("org_id", &b.id)]).await.to_string());
    }
    let mut conn = app.sql().await;
    let alerting: Option<String> =
        sqlx::query_scalar("SELECT alert_webhook_url FROM organizations WHERE id = $1")
            .bind(&b.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    parts.push(format!("{alerting:?}"));
    parts.join("\n")
}

async fn bad_input_answers_400_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    // A project with caps, for the over-cap cases.
    let (st, _) = send(
        &app,
        &a.pk,
        Method::PATCH,
        "/api/v1/projects/Production",
        Some(json!({ "tpm_limit": 1000, "rpm_limit": 100 })),
    )
    .await;
    assert_eq!(st, 200);
    let create = "/prod/createServiceKey";
    let ok = json!({ "api_key_name": "k", "project_name": "Production" });
    let with = |extra: Value| {
        let mut v = ok.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            create,
            with(json!({ "credit_limit": "lots" })),
            "credit_limit",
            "invalid type",
        ),
        (
            create,
            with(json!({ "tpm_limit": 1.5 })),
            "tpm_limit",
            "invalid type",
        ),
        (
            create,
            with(json!({ "models": "mock/echo" })),
            "models",
            "invalid type",
        ),
        (
            create,
            json!({ "project_name": "Production" }),
            "api_key_name",
            "missing field",
        ),
        (
            create,
            with(json!({ "colour": "red" })),
            "colour",
            "unknown field",
        ),
        (
            create,
            with(json!({ "tpm_limit": 5000 })),
            "tpm_limit",
            "exceeds the project's cap of 1000",
        ),
        (
            create,
            with(json!({ "rpm_limit": 101 })),
            "rpm_limit",
            "exceeds the project's cap of 100",
        ),
        (
            create,
            with(json!({ "rpm_limit": 0 })),
            "rpm_limit",
            "positive whole number",
        ),
        (
            create,
            with(json!({ "credit_limit": -1 })),
            "credit_limit",
            "0 or more",
        ),
        (
            create,
            with(json!({ "reset_budget_interval": "hourly" })),
            "reset_budget_interval",
            "hourly",
        ),
        (
            create,
            with(json!({ "models": ["gpt-9"] })),
            "models",
            "gpt-9",
        ),
        (
            create,
            with(json!({ "expire_key": "yesterday" })),
            "expire_key",
            "yesterday",
        ),
        (
            create,
            with(json!({ "metadata": [1] })),
            "metadata",
            "JSON object",
        ),
        (
            create,
            with(json!({ "tags": ["no spaces"] })),
            "tags",
            "no spaces",
        ),
        (
            create,
            json!({ "api_key_name": "k" }),
            "project_id",
            "project_id or project_name",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "budget_duration": "3d" }),
            "budget_duration",
            "1mo",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "duration": "ninety" }),
            "duration",
            "30d",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "key_type": "llm_api" }),
            "key_type",
            "unknown field",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "key": "sk-my-static-key" }),
            "key",
            "32 to 256",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "key": "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }),
            "key",
            "too easy to guess",
        ),
        (
            "/key/generate",
            json!({ "team_id": "Production", "allowed_routes": ["/key/generate"] }),
            "allowed_routes",
            "/v1",
        ),
        (
            "/team/new",
            json!({ "team_id": "has space", "team_alias": "spaced" }),
            "team_id",
            "without spaces",
        ),
        (
            "/team/member_update",
            json!({ "team_id": "Production", "user_id": "x", "role": "boss" }),
            "role",
            "user or admin",
        ),
        (
            "/budget/new",
            json!({ "budget_id": "b", "budget_duration": "3d" }),
            "budget_duration",
            "1mo",
        ),
        (
            "/budget/new",
            json!({ "budget_id": "b", "soft_budget": 5 }),
            "soft_budget",
            "not kept",
        ),
        (
            "/budget/new",
            json!({ "max_budget": 5 }),
            "budget_id",
            "required",
        ),
        (
            "/budget/new",
            json!({ "budget_id": "b", "max_budget": -1 }),
            "max_budget",
            "",
        ),
        (
            "/model/new",
            json!({ "model_name": "x/y", "litellm_params": { "model": "hosted_vllm/y" } }),
            "litellm_params.litellm_credential_name",
            "credential",
        ),
        (
            "/model/new",
            json!({ "model_name": "x/y", "litellm_params": { "model": "openai/y", "api_key": "sk-abc" } }),
            "litellm_params.api_key",
            "credential",
        ),
        (
            "/model/new",
            json!({ "model_name": "x/y", "litellm_params": { "model": "openai/y" }, "model_info": { "tier": "gold" } }),
            "model_info.tier",
            "free or paid",
        ),
        (
            "/model/new",
            json!({ "model_name": "x/y", "litellm_params": { "model": "openai/y" }, "model_info": { "input_cost_per_million_tokens": -1 } }),
            "model_info.input_cost_per_million_tokens",
            "price",
        ),
        (
            "/model/new",
            json!({ "model_name": "mock/echo", "litellm_params": { "model": "mock/echo" } }),
            "model_name",
            "already in the catalogue",
        ),
        (
            "/model/new",
            json!({ "litellm_params": { "model": "mock/echo" } }),
            "model_name",
            "required",
        ),
        (
            "/credentials",
            json!({ "credential_name": "v", "credential_info": { "custom_llm_provider": "hosted_vllm" } }),
            "credential_values.api_base",
            "required",
        ),
        (
            "/credentials",
            json!({ "credential_name": "v", "credential_values": { "api_base": "ftp://x" } }),
            "credential_values.api_base",
            "http",
        ),
        (
            "/credentials",
            json!({ "credential_name": "v", "credential_values": { "region": "eu" } }),
            "credential_values.region",
            "unknown field",
        ),
        (
            "/credentials",
            json!({ "credential_name": "has space" }),
            "credential_name",
            "letters",
        ),
        (
            "/user/new",
            json!({ "user_id": "u1" }),
            "user_email",
            "required",
        ),
        (
            "/user/new",
            json!({ "user_id": "u1", "user_email": "u1@a.test", "auto_create_key": true }),
            "auto_create_key",
            "false",
        ),
        (
            "/user/new",
            json!({ "user_id": "u1", "user_email": "u1@a.test", "user_role": "god" }),
            "user_role",
            "proxy_admin",
        ),
        (
            "/user/update",
            json!({ "user_id": "u1", "teams": ["Production"] }),
            "teams",
            "member_add",
        ),
        (
            "/user/delete",
            json!({ "user_ids": [] }),
            "user_ids",
            "at least one",
        ),
        (
            "/organization/update",
            json!({ "models": ["mock/echo"] }),
            "models",
            "per team",
        ),
        (
            "/organization/member_add",
            json!({ "member": { "user_email": "x@a.test", "role": "emperor" } }),
            "member[0].role",
            "internal_user",
        ),
        (
            "/guardrails",
            json!({ "guardrail": { "guardrail_name": "pii" } }),
            "guardrail",
            "no guardrails",
        ),
        (
            "/key/generate",
            json!({ "key_alias": "k" }),
            "team_id",
            "required",
        ),
        (
            "/team/new",
            json!({ "team_alias": "t", "max_budget": { "usd": 5 } }),
            "max_budget",
            "invalid type",
        ),
        (
            "/team/new",
            json!({ "team_alias": "t", "models": ["nope"] }),
            "models",
            "catalogue",
        ),
        (
            "/team/new",
            json!({ "team_alias": "Production" }),
            "team_alias",
            "already exists",
        ),
        (
            "/team/update",
            json!({ "team_id": "Production", "tpm_limit": -5 }),
            "tpm_limit",
            "positive",
        ),
        (
            "/organization/member_permission_update",
            json!({ "user_email": "x@a.test", "user_role": "god" }),
            "user_role",
            "internal_user",
        ),
        (
            "/organization/member_permission_update",
            json!({ "user_email": "not-an-email", "user_role": "admin" }),
            "user_email",
            "",
        ),
        (
            "/config/update",
            json!({ "general_settings": { "alerting": ["pager"] } }),
            "general_settings.alerting[0]",
            "webhook",
        ),
        (
            "/config/update",
            json!({ "general_settings": { "alerting_threshold": 5 } }),
            "general_settings.alerting_threshold",
            "unknown field",
        ),
        (
            "/config/update",
            json!({ "environment_variables": { "WEBHOOK_URL": "ftp://x" } }),
            "environment_variables.WEBHOOK_URL",
            "http",
        ),
        (
            "/api/v1/keys",
            json!({ "project": "Production", "name": "k", "budget_reset": "yearly" }),
            "budget_reset",
            "yearly",
        ),
        (
            "/api/v1/projects",
            json!({ "name": "x", "ip_allowlist": ["10.0.0.0/33"] }),
            "ip_allowlist",
            "10.0.0.0/33",
        ),
    ];
    for (path, body, field, says) in cases {
        let (st, answer) = post(&app, &a.pk, path, body.clone()).await;
        assert_eq!(st, 400, "{path} {body}: {answer}");
        assert_eq!(
            s(&answer["error"]["field"]),
            field,
            "{path} {body}: {answer}"
        );
        let message = s(&answer["error"]["message"]);
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert!(message.contains(says), "{path} {body}: {message}");
        assert!(
            !message.contains("SELECT") && !message.contains("sqlx"),
            "{message}"
        );
    }
    // Malformed JSON, sent as curl -d sends it (a form content type).
    for raw in ["{\"api_key_name\": ", "not json", "[1, 2", "{\"a\": 1,}"] {
        let res = reqwest::Client::new()
            .post(format!("{}{create}", app.url))
            .bearer_auth(&a.pk)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "malformed_json", "{answer}");
        assert_eq!(answer["error"]["field"], "body");
    }
    let (st, answer) = post(&app, &a.pk, create, json!([1, 2])).await;
    assert_eq!(
        (st, s(&answer["error"]["field"])),
        (400, "body".into()),
        "{answer}"
    );
    // Unknown query parameters, and bad ones.
    for (path, field) in [
        ("/prod/getServiceKeys?colour=red", "colour"),
        ("/prod/getServiceKeys?metadata=5", "metadata"),
        ("/key/list?size=1000", "size"),
        ("/key/list?page=x", "page"),
        ("/global/spend/report?group_by=planet", "group_by"),
        ("/billing/daily-spend?start_date=2026-13-01", "start_date"),
        ("/api/v1/usage?from=2026-11-10&to=2026-11-01", "from"),
    ] {
        let (st, answer) = get(&app, &a.pk, path).await;
        assert_eq!(
            (st, s(&answer["error"]["field"])),
            (400, field.into()),
            "{path}: {answer}"
        );
    }
    // No key, a console API key, a revoked provisioning key: 401.
    let (_, user_key) = app.create_key(&a.owner, &a.id, &a.project, &[]).await;
    let keys = app
        .ok(&a.owner, "list_provisioning_keys", &[("org_id", &a.id)])
        .await;
    app.ok(
        &a.owner,
        "revoke_provisioning_key",
        &[("org_id", &a.id), ("key_id", &s(&keys[0]["id"]))],
    )
    .await;
    for token in ["", user_key.as_str(), a.pk.as_str()] {
        let (st, answer) = get(&app, token, "/key/list").await;
        assert_eq!(
            (st, s(&answer["error"]["code"])),
            (401, "unauthorized".into()),
            "{answer}"
        );
        assert!(!answer.to_string().contains(&user_key[6..]));
    }
}
both!(bad_input_answers_400_naming_the_field);

/// The native REST API end to end, and its OpenAPI document checked by a
/// validator (openapi-spec-validator, from PyPI).
async fn rest_api_and_a_valid_openapi_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    let (st, p) = post(
        &app,
        &a.pk,
        "/api/v1/projects",
        json!({ "name": "Agents", "models": ["mock/echo", "mock/fast"], "rpm_limit": 60, "max_budget": 25 }),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["max_budget"], 25.0);
    let (st, issued) = post(
        &app,
        &a.pk,
        "/api/v1/keys",
        json!({ "project": "Agents", "name": "agent-1", "models": ["mock/echo"], "expires_at": "30d",
                "metadata": { "customer": "c-1" }, "tags": ["agents"] }),
    )
    .await;
    assert_eq!(st, 201, "{issued}");
    let token = s(&issued["token"]);
    let id = s(&issued["key"]["id"]);
    assert_eq!(issued["key"]["kind"], "service");
    assert_eq!(chat(&app, &token, "mock/echo").await, 200);
    let (st, listed) = get(&app, &a.pk, "/api/v1/keys?project=Agents&kind=service").await;
    assert_eq!((st, listed.as_array().unwrap().len()), (200, 1), "{listed}");
    assert!(!listed.to_string().contains(&token[10..]));
    let (st, rotated) = post(&app, &a.pk, &format!("/api/v1/keys/{id}/rotate"), json!({})).await;
    assert_eq!(st, 200, "{rotated}");
    assert_eq!(chat(&app, &token, "mock/echo").await, 401);
    assert_eq!(chat(&app, &s(&rotated["token"]), "mock/echo").await, 200);
    let (st, usage) = get(&app, &a.pk, "/api/v1/usage?group_by=project").await;
    assert_eq!(st, 200);
    app.gateway.ledger.flush().await;
    let (_, usage_after) = get(&app, &a.pk, "/api/v1/usage?group_by=project").await;
    let requests: i64 = usage_after
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["group"] == p["id"])
        .map(|d| d["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(requests, 2, "{usage} then {usage_after}");
    let (st, _) = send(
        &app,
        &a.pk,
        Method::DELETE,
        &format!("/api/v1/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 204);
    assert_eq!(chat(&app, &s(&rotated["token"]), "mock/echo").await, 401);

    // The document needs no key, and a validator accepts it.
    let doc: Value = reqwest::get(format!("{}/api/openapi.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/keys/{key}/rotate"]["post"].is_object());
    // The operations the router serves, each declared once with its route.
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().unwrap();
            item.keys().map(move |m| format!("{m} {path}"))
        })
        .collect();
    operations.sort();
    let mut expected = [
        "get /api/v1/organization",
        "get /api/v1/members",
        "get /api/v1/projects",
        "post /api/v1/projects",
        "get /api/v1/projects/{project}",
        "delete /api/v1/projects/{project}",
        "patch /api/v1/projects/{project}",
        "get /api/v1/projects/{project}/members",
        "put /api/v1/projects/{project}/members/{user_id}",
        "delete /api/v1/projects/{project}/members/{user_id}",
        "get /api/v1/keys",
        "post /api/v1/keys",
        "get /api/v1/keys/{key}",
        "delete /api/v1/keys/{key}",
        "patch /api/v1/keys/{key}",
        "post /api/v1/keys/{key}/rotate",
        "get /api/v1/usage",
    ];
    expected.sort_unstable();
    assert_eq!(operations, expected);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let python = std::env::var("TOLLGATE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tollgate-venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    });
    let out = std::process::Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("openapi-spec-validator: {said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("OK"), "{said}");
    // An invalid document is refused by the same check (so it can fail).
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/keys"]["get"]["responses"] = json!("none");
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = std::process::Command::new(std::env::var("TOLLGATE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tollgate-venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    }))
    .args(["-m", "openapi_spec_validator"])
    .arg(&file)
    .output()
    .unwrap();
    assert!(!out.status.success());
}
both!(rest_api_and_a_valid_openapi_document);

/// Service keys belong to no one: made in the console by a project admin
/// (not by a plain member) or by a provisioning key, they keep working when
/// their maker leaves or is revoked.
async fn service_keys_outlive_whoever_made_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, _) = two_orgs(&app).await;
    let [admin, member] = app
        .add_members(
            &a.owner,
            &a.id,
            [("pat@a.test", "member"), ("sam@a.test", "member")],
        )
        .await;
    for (who, role) in [(&admin, "admin"), (&member, "member")] {
        let uid = app.user_id(who).await;
        app.ok(
            &a.owner,
            "add_project_member",
            &[
                ("org_id", &a.id),
                ("project_id", &a.project),
                ("user_id", &uid),
                ("role", role),
            ],
        )
        .await;
    }
    let (st, body) = app
        .call(
            &member,
            "create_key",
            &crate::helpers::key_form(&a.id, &a.project, &[("service", "on")]),
        )
        .await;
    assert_eq!(
        st, 403,
        "a plain member may not make a key nobody owns: {body}"
    );
    let (_, own) = app.create_key(&admin, &a.id, &a.project, &[]).await;
    let (_, service) = app
        .create_key(
            &admin,
            &a.id,
            &a.project,
            &[("service", "on"), ("name", "nightly")],
        )
        .await;
    let (_, made) = post(
        &app,
        &a.pk,
        "/prod/createServiceKey",
        json!({ "api_key_name": "by-automation", "project_id": a.project }),
    )
    .await;
    let by_key = s(&made["api_key"]);

    // The admin leaves; the provisioning key is revoked.
    let admin_id = app.user_id(&admin).await;
    app.ok(
        &a.owner,
        "remove_member",
        &[("org_id", &a.id), ("user_id", &admin_id)],
    )
    .await;
    let pks = app
        .ok(&a.owner, "list_provisioning_keys", &[("org_id", &a.id)])
        .await;
    app.ok(
        &a.owner,
        "revoke_provisioning_key",
        &[("org_id", &a.id), ("key_id", &s(&pks[0]["id"]))],
    )
    .await;
    assert_eq!(
        chat(&app, &own, "mock/echo").await,
        401,
        "the admin's own key went with them"
    );
    assert_eq!(chat(&app, &service, "mock/echo").await, 200);
    assert_eq!(chat(&app, &by_key, "mock/echo").await, 200);
    let keys = app
        .ok(
            &a.owner,
            "list_keys",
            &[("org_id", &a.id), ("project_id", &a.project)],
        )
        .await;
    let services: Vec<String> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["owner"].is_null() && k["status"] == "active")
        .map(|k| s(&k["name"]))
        .collect();
    assert_eq!(services, ["by-automation", "nightly"]);
}
both!(service_keys_outlive_whoever_made_them);
