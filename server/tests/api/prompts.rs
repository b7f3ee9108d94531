//! Prompt management over HTTP: versions and labels saved in the console,
//! rendered by `/v1/chat/completions` for the OpenAI Python SDK (through
//! `extra_body`), a label moved without a restart (also on a second
//! instance), the ledger's prompt and version, `GET /v1/prompts`, and who
//! may change prompts or choose a project's.

use crate::helpers::{Backend, Binary, Console, TestApp, TestDb, OWNER_PASSWORD};
use crate::sdk::python;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ID: &str = "support/triage";
const V1: &str =
    "system: You answer for {{ company }}.\nuser: Ticket from {{ customer }}: {{ ticket }}";
const V2: &str =
    "system: You answer for {{ company }}, briefly.\nuser: {{ customer }} (v2) says: {{ ticket }}";

fn save_form<'a>(org: &'a str, messages: &'a str, label: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("org_id", org),
        ("id", ID),
        ("description", "Triage a support ticket"),
        ("messages", messages),
        ("model", "mock/echo"),
        ("params", r#"{"max_tokens": 200}"#),
        ("note", ""),
        ("label", label),
    ]
}

async fn chat(url: &str, token: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn answer(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn vars() -> Value {
    json!({ "company": "Acme", "customer": "Ada", "ticket": "the printer is on fire" })
}

async fn run_sdk(url: &str, ok: &str, other: &str, expect: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/openai_prompt_check.py"
    );
    let (url, ok, other, expect) = (
        url.to_owned(),
        ok.to_owned(),
        other.to_owned(),
        expect.to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .env("TOLLGATE_URL", url)
            .env("PROMPT_ID", ID)
            .env("EXPECT", expect)
            .env("KEY_OK", ok)
            .env("KEY_OTHER_PROJECT", other)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/tools", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all prompt checks passed"), "{stdout}");
    eprintln!("{stdout}");
}

async fn prompts_render_for_the_openai_sdk(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "Support").await;
    let other = app.create_project(&owner, &org, "Other").await;

    let saved = app
        .ok(&owner, "save_prompt", &save_form(&org, V1, "production"))
        .await;
    assert_eq!(
        (saved["version"].clone(), saved["new"].clone()),
        (json!(1), json!(true))
    );
    // The same content again makes no version.
    let again = app
        .ok(&owner, "save_prompt", &save_form(&org, V1, ""))
        .await;
    assert_eq!(
        (again["version"].clone(), again["new"].clone()),
        (json!(1), json!(false))
    );
    let v2 = app
        .ok(&owner, "save_prompt", &save_form(&org, V2, "staging"))
        .await;
    assert_eq!(v2["version"], 2);

    let (_, other_key) = app.create_key(&owner, &org, &other, &[]).await;
    let (_, key) = app.create_key(&owner, &org, &project, &[]).await;
    // Before the project may use it: 403 naming the rule.
    let request = json!({ "model": "mock/echo", "messages": [], "prompt_id": ID, "prompt_variables": vars() });
    let (st, body) = chat(&app.url, &key, request.clone()).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (403, Some("prompt_not_allowed")),
        "{body}"
    );
    let chosen = app
        .ok(
            &owner,
            "set_project_prompts",
            &[
                ("org_id", &org),
                ("project_id", &project),
                ("prompts[0]", ID),
            ],
        )
        .await;
    assert_eq!(chosen["chosen"], json!([ID]));
    app.feed_caught_up().await;

    // The production label (v1) serves; the OpenAI SDK sends the fields
    // through extra_body.
    run_sdk(
        &app.url,
        &key,
        &other_key,
        "Ticket from Ada: the printer is on fire",
    )
    .await;

    // A version or a label chosen by the request; the template's model
    // when the request names none.
    let (st, body) = chat(
        &app.url,
        &key,
        json!({ "prompt_id": ID, "prompt_version": "2", "prompt_variables": vars() }),
    )
    .await;
    assert_eq!(
        (st, answer(&body)),
        (200, "Ada (v2) says: the printer is on fire"),
        "{body}"
    );
    let (st, body) = chat(&app.url, &key, json!({ "model": "mock/echo", "prompt_id": ID, "prompt_label": "staging", "prompt_variables": vars() })).await;
    assert_eq!(
        (st, answer(&body)),
        (200, "Ada (v2) says: the printer is on fire"),
        "{body}"
    );
    for (extra, status, param) in [
        (json!({ "prompt_label": "canary" }), 404, "prompt_label"),
        (json!({ "prompt_version": 9 }), 404, "prompt_version"),
        (json!({ "prompt_version": "v2" }), 400, "prompt_version"),
        (
            json!({ "prompt_version": 1, "prompt_label": "staging" }),
            400,
            "prompt_version",
        ),
        (
            json!({ "prompt_variables": ["x"] }),
            400,
            "prompt_variables",
        ),
        (json!({ "prompt_id": "support/none" }), 404, "prompt_id"),
        (json!({ "prompt_id": 7 }), 400, "prompt_id"),
        (json!({ "prompt_id": null }), 400, "prompt_id"),
        (json!({ "prompt_version": -1 }), 400, "prompt_version"),
        (json!({ "prompt_version": 1.5 }), 400, "prompt_version"),
        (
            json!({ "prompt_version": 99_999_999_999_999_999_999.0 }),
            400,
            "prompt_version",
        ),
        (
            json!({ "prompt_label": "staging", "prompt_environment": "production" }),
            400,
            "prompt_environment",
        ),
        (
            json!({ "prompt_variables": { "company": "A", "customer": "B", "ticket": "x".repeat(1_100_000) } }),
            413,
            "prompt_variables",
        ),
    ] {
        let mut req = request.clone();
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let (st, body) = chat(&app.url, &key, req.clone()).await;
        assert_eq!(
            (st, body["error"]["param"].as_str()),
            (status, Some(param)),
            "{req}: {body}"
        );
    }
    let completion = reqwest::Client::new()
        .post(format!("{}/v1/completions", app.url))
        .bearer_auth(&key)
        .json(&json!({ "model": "mock/echo", "prompt": "x", "prompt_id": ID }))
        .send()
        .await
        .unwrap();
    assert_eq!(completion.status(), 400);
    let completion: Value = completion.json().await.unwrap();
    assert_eq!(completion["error"]["param"], "prompt_id", "{completion}");
    let (st, body) = chat(&app.url, &key, json!({ "model": "mock/echo", "messages": [{"role": "user", "content": "x"}], "prompt_variables": vars() })).await;
    assert_eq!(
        (st, body["error"]["param"].as_str()),
        (400, Some("prompt_variables")),
        "{body}"
    );

    // Moving the label changes the next answer, without a restart.
    app.ok(
        &owner,
        "set_prompt_label",
        &[
            ("org_id", &org),
            ("id", ID),
            ("label", "production"),
            ("version", "2"),
        ],
    )
    .await;
    app.feed_caught_up().await;
    run_sdk(
        &app.url,
        &key,
        &other_key,
        "Ada (v2) says: the printer is on fire",
    )
    .await;

    // The ledger names the prompt and version of each rendered request.
    app.gateway.ledger.flush().await;
    let mut conn = app.sql().await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT prompt_id, prompt_version, status FROM usage_events ORDER BY at, prompt_version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let served: Vec<(String, i64)> = rows
        .iter()
        .filter(|r| r.2 == 200)
        .map(|r| (r.0.clone(), r.1))
        .collect();
    let id = ID.to_owned();
    assert_eq!(
        served,
        [
            (id.clone(), 1),
            (id.clone(), 1),
            (id.clone(), 2),
            (id.clone(), 2),
            (id.clone(), 2),
            (id.clone(), 2),
        ],
        "{rows:?}"
    );

    // GET /v1/prompts: what the key's project may use.
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!("{}/v1/prompts", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["prompt_id"], ID, "{list}");
    assert_eq!(list["data"][0]["default_version"], 2);
    assert_eq!(
        list["data"][0]["variables"],
        json!(["company", "customer", "ticket"])
    );
    let none: Value = http
        .get(format!("{}/v1/prompts", app.url))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"], json!([]), "{none}");
    let one = http
        .get(format!("{}/v1/prompts/{ID}?version=1", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(
        one["messages"][1]["content"],
        "Ticket from {{ customer }}: {{ ticket }}"
    );
    assert_eq!(one["params"], json!({ "max_tokens": 200 }));
    let staging: Value = http
        .get(format!("{}/v1/prompts/{ID}?label=staging", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (staging["version"].clone(), staging["labels"].clone()),
        (json!(2), json!(["production", "staging"])),
        "{staging}"
    );
    let bad = http
        .get(format!("{}/v1/prompts/{ID}?version=two", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["param"], "version", "{bad}");
    let refused = http
        .get(format!("{}/v1/prompts/{ID}", app.url))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // The console's history and diff.
    let p = app
        .ok(&owner, "get_prompt", &[("org_id", &org), ("id", ID)])
        .await;
    assert_eq!(p["versions"][0]["version"], 2);
    assert_eq!(p["versions"][0]["labels"], json!(["production", "staging"]));
    assert_eq!(p["projects"], json!(["Support"]));
    let diff = app
        .ok(
            &owner,
            "diff_prompt_versions",
            &[("org_id", &org), ("id", ID), ("from", "1"), ("to", "2")],
        )
        .await;
    let changed: Vec<String> = diff
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["tag"] != " ")
        .map(|l| {
            format!(
                "{}{}",
                l["tag"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-system: You answer for {{ company }}.",
            "-user: Ticket from {{ customer }}: {{ ticket }}",
            "+system: You answer for {{ company }}, briefly.",
            "+user: {{ customer }} (v2) says: {{ ticket }}",
        ],
        "{diff}"
    );
    // Bad input names its field.
    for (field, value) in [
        ("id", "has space"),
        ("messages", "no role here"),
        ("messages", "system: fine\nuser:   "),
        ("params", r#"{"model": "x"}"#),
        ("model", "openai/gpt-9"),
        ("label", "Prod"),
    ] {
        let mut f = save_form(&org, V1, "");
        f.retain(|(k, _)| *k != field);
        f.push((field, value));
        app.bad_field(&owner, "save_prompt", &f, field).await;
    }
    // Deleting the prompt: the next request names it as unknown.
    app.ok(&owner, "delete_prompt", &[("org_id", &org), ("id", ID)])
        .await;
    app.feed_caught_up().await;
    let (st, body) = chat(&app.url, &key, request).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("prompt_not_found")),
        "{body}"
    );
}
both!(prompts_render_for_the_openai_sdk);

/// Owners only change prompts; project admins choose their project's; no
/// one reaches another organization's.
async fn who_may_manage_prompts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    app.ok(&owner, "save_prompt", &save_form(&org, V1, "production"))
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
    let label = [
        ("org_id", org.as_str()),
        ("id", ID),
        ("label", "production"),
        ("version", "1"),
    ];
    let id_only = [("org_id", org.as_str()), ("id", ID)];
    let diff = [
        ("org_id", org.as_str()),
        ("id", ID),
        ("from", "1"),
        ("to", "1"),
    ];
    let list = [("org_id", org.as_str())];
    for (who, status) in [
        (&admin, 403),
        (&member, 403),
        (&billing, 403),
        (&viewer, 403),
        (&stranger, 404),
    ] {
        for (name, form) in [
            ("save_prompt", save_form(&org, V2, "")),
            ("set_prompt_label", label.to_vec()),
            ("delete_prompt", id_only.to_vec()),
            ("get_prompt", id_only.to_vec()),
            ("diff_prompt_versions", diff.to_vec()),
            ("list_prompts", list.to_vec()),
        ] {
            let (st, body) = app.call(who, name, &form).await;
            assert_eq!(st, status, "{name}: {body}");
        }
    }
    // Nothing changed.
    let p = app
        .ok(&owner, "get_prompt", &[("org_id", &org), ("id", ID)])
        .await;
    assert_eq!(p["versions"].as_array().unwrap().len(), 1, "{p}");

    // A project admin chooses their project's prompts; a project member,
    // a viewer and another organization's owner cannot.
    let choose = [
        ("org_id", org.as_str()),
        ("project_id", project.as_str()),
        ("prompts[0]", ID),
    ];
    for (who, status) in [
        (&member, 403),
        (&viewer, 403),
        (&billing, 403),
        (&stranger, 404),
    ] {
        let (st, body) = app.call(who, "set_project_prompts", &choose).await;
        assert_eq!(st, status, "{body}");
        let (st, _) = app
            .call(
                who,
                "project_prompts",
                &[("org_id", &org), ("project_id", &project)],
            )
            .await;
        assert_eq!(st, status);
    }
    let chosen = app.ok(&admin, "set_project_prompts", &choose).await;
    assert_eq!(chosen, json!({ "all": [ID], "chosen": [ID] }));

    // Through their own organization, the stranger reaches none of ours.
    for (name, form) in [
        (
            "get_prompt",
            vec![("org_id", other_org.as_str()), ("id", ID)],
        ),
        (
            "delete_prompt",
            vec![("org_id", other_org.as_str()), ("id", ID)],
        ),
        (
            "set_prompt_label",
            vec![
                ("org_id", other_org.as_str()),
                ("id", ID),
                ("label", "x"),
                ("version", "1"),
            ],
        ),
        (
            "project_prompts",
            vec![
                ("org_id", other_org.as_str()),
                ("project_id", project.as_str()),
            ],
        ),
        (
            "set_project_prompts",
            vec![
                ("org_id", other_org.as_str()),
                ("project_id", project.as_str()),
                ("prompts[0]", ID),
            ],
        ),
    ] {
        let (st, body) = app.call(&stranger, name, &form).await;
        assert_eq!(st, 404, "{name}: {body}");
    }
    // The stranger's own prompts are theirs: ours do not show, and a
    // project of ours cannot be given theirs.
    let mut f = save_form(&other_org, V2, "");
    f.retain(|(k, _)| *k != "id");
    f.push(("id", "theirs/prompt"));
    app.ok(&stranger, "save_prompt", &f).await;
    let theirs = app
        .ok(&stranger, "list_prompts", &[("org_id", &other_org)])
        .await;
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs[0]["id"], "theirs/prompt");
    app.bad_field(
        &owner,
        "set_project_prompts",
        &[
            ("org_id", &org),
            ("project_id", &project),
            ("prompts[0]", "theirs/prompt"),
        ],
        "prompts",
    )
    .await;
}
both!(who_may_manage_prompts);

/// A label moved on instance A serves the new version on instance B (two
/// real processes on one PostgreSQL database, through the change feed).
#[test]
fn a_label_moved_on_a_serves_on_b() {
    crate::helpers::run(async {
        sqlx::any::install_default_drivers();
        let db = TestDb::new(Backend::Postgres).await;
        let a = Binary::start(&db, &[]).await;
        let b = Binary::start(&db, &[]).await;
        let o = Console::set_up(&a.url).await;
        o.call("save_prompt", &save_form(&o.org, V1, "production"))
            .await;
        o.call("save_prompt", &save_form(&o.org, V2, "")).await;
        o.call(
            "set_project_prompts",
            &[
                ("org_id", &o.org),
                ("project_id", &o.project),
                ("prompts[0]", ID),
            ],
        )
        .await;
        let (_, key) = o.key(&[]).await;
        let request = json!({ "model": "mock/echo", "messages": [], "prompt_id": ID, "prompt_variables": vars() });
        let until = |want: &'static str| {
            let (url, key, request) = (b.url.clone(), key.clone(), request.clone());
            async move {
                let started = Instant::now();
                loop {
                    let (st, body) = chat(&url, &key, request.clone()).await;
                    if st == 200 && answer(&body) == want {
                        return started.elapsed();
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "B still answers {st} {body}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        until("Ticket from Ada: the printer is on fire").await;
        o.call(
            "set_prompt_label",
            &[
                ("org_id", &o.org),
                ("id", ID),
                ("label", "production"),
                ("version", "2"),
            ],
        )
        .await;
        let took = until("Ada (v2) says: the printer is on fire").await;
        eprintln!("the label moved on A served on B after {took:?}");
    });
}
