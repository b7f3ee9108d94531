//! The organization's overview (`overview`) through the real server
//! function: another organization's owner is refused; each seat gets the
//! parts the policy gives it — the owner everything, a billing manager the
//! money, a viewer the spend without credits, keys or events, a project
//! member their project and their own keys and no organization-wide figure.

use crate::helpers::{Backend, TestApp, OPEN_PROJECT, OWNER_PASSWORD};
use serde_json::{json, Value};

const PRICED: &str = "mock/priced";

/// `now + days` as the key form takes it (RFC 3339).
fn in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn chat(app: &TestApp, token: &str) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&json!({
            "model": PRICED,
            "max_tokens": 20,
            "messages": [{ "role": "user", "content": "What does the overview show today?" }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

/// The names of the keys in an overview's `expiring`.
fn expiring(o: &Value) -> Vec<&str> {
    o["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect()
}

async fn overview_by_seat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let o = org.as_str();
    app.priced_model(&owner, o, PRICED).await;
    let p = app.create_project(&owner, o, "Search").await;
    let fields = [
        ("org_id", o),
        ("project_id", p.as_str()),
        ("name", "Search"),
        ("models[0]", PRICED),
    ];
    app.ok(
        &owner,
        "update_project",
        &[&fields[..], &OPEN_PROJECT].concat(),
    )
    .await;
    // A second project the member is not in: they never see it.
    let analytics = app.create_project(&owner, o, "Analytics").await;
    let [member, viewer, billing] = app
        .add_members(
            &owner,
            o,
            [
                ("member@a.test", "member"),
                ("viewer@a.test", "viewer"),
                ("billing@a.test", "billing"),
            ],
        )
        .await;
    let member_id = app.user_id(&member).await;
    let add = [
        ("org_id", o),
        ("project_id", p.as_str()),
        ("user_id", member_id.as_str()),
        ("role", "member"),
    ];
    app.ok(&owner, "add_project_member", &add).await;

    let (soon, sooner, later) = (in_days(4), in_days(3), in_days(30));
    let (_, token) = app
        .create_key(
            &owner,
            o,
            &p,
            &[("name", "theirs"), ("expires_at", &sooner)],
        )
        .await;
    app.create_key(&owner, o, &p, &[("name", "later"), ("expires_at", &later)])
        .await;
    app.create_key(&member, o, &p, &[("name", "mine"), ("expires_at", &soon)])
        .await;
    chat(&app, &token).await;
    app.gateway.ledger.flush().await;
    let credit = [
        ("org_id", o),
        ("kind", "grant"),
        ("amount", "5"),
        ("note", "welcome"),
        ("reference", "G-1"),
    ];
    app.ok(&owner, "add_credit", &credit).await;

    // The owner: money, the whole chart, every project with its spend, the
    // organization's expiring keys, recent events, a model to call.
    let all = app.ok(&owner, "get_overview", &[("org_id", o)]).await;
    let spent = all["spend"]["month_micros"].as_i64().unwrap();
    assert!(spent > 0, "{all}");
    assert_eq!(all["spend"]["credits"]["balance_micros"], 5_000_000 - spent);
    assert_eq!(all["chart"]["whole"], true);
    assert_eq!(all["chart"]["days"].as_array().unwrap().len(), 30);
    assert_eq!(all["chart"]["total_micros"], spent);
    let names: Vec<&str> = all["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Analytics", "Search"],
        "by name while none is near its budget"
    );
    assert_eq!(all["projects"][0]["spent_micros"], 0);
    assert_eq!(all["projects"][1]["spent_micros"], spent);
    assert_eq!(expiring(&all), ["theirs", "mine"], "soonest first");
    assert_eq!(all["expiring_all"], true);
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0]["action"], "billing.credit_added", "{all}");
    assert_eq!(all["proxy"]["base_url"], format!("{}/v1", app.url));
    // The owner may call the models of every project: the first one's.
    assert_eq!(all["proxy"]["model"][0], analytics);
    assert_eq!(all["proxy"]["model"][1], "Analytics");

    // A project budget at what was spent: the project is at 100 %.
    let budget = format!("{}.{:06}", spent / 1_000_000, spent % 1_000_000);
    let capped = [("max_budget", budget.as_str()), ("budget_reset", "monthly")];
    let form: Vec<(&str, &str)> = [&fields[..], &OPEN_PROJECT]
        .concat()
        .into_iter()
        .filter(|(k, _)| !capped.iter().any(|(c, _)| c == k))
        .chain(capped)
        .collect();
    app.ok(&owner, "update_project", &form).await;
    let all = app.ok(&owner, "get_overview", &[("org_id", o)]).await;
    assert_eq!(
        all["projects"][0]["name"], "Search",
        "over its budget: first"
    );
    assert_eq!(all["projects"][0]["budget_micros"], spent);

    // A project member: their project (no spend of it), their own key, their
    // share of the spend, a model; no organization-wide figure.
    let mine = app.ok(&member, "get_overview", &[("org_id", o)]).await;
    for part in ["spend", "events"] {
        assert_eq!(mine[part], Value::Null, "{part}: {mine}");
    }
    assert_eq!(mine["chart"]["whole"], false);
    assert_eq!(
        mine["chart"]["total_micros"], 0,
        "the owner's key is not theirs"
    );
    assert_eq!(mine["projects"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["projects"][0]["name"], "Search");
    assert_eq!(mine["projects"][0]["spent_micros"], Value::Null);
    assert_eq!(expiring(&mine), ["mine"]);
    assert_eq!(mine["expiring_all"], false);
    assert_eq!(mine["proxy"]["model"], json!([p, "Search", PRICED]));
    let text = mine.to_string();
    for secret in ["theirs", "Analytics", "billing.credit_added"] {
        assert!(!text.contains(secret), "{secret} in {mine}");
    }
    // The settings card tells them whether bodies are kept, not the cap.
    let settings = app.ok(&member, "get_spending", &[("org_id", o)]).await;
    assert!(settings["content_logging"].is_boolean(), "{settings}");
    for hidden in ["spend_cap_micros", "spend_cap_reset"] {
        assert_eq!(settings.get(hidden), None, "{settings}");
    }

    // A viewer reads the organization's spend, not its credits, keys or
    // events, and has no model to call.
    let seen = app.ok(&viewer, "get_overview", &[("org_id", o)]).await;
    assert_eq!(seen["spend"]["month_micros"], spent);
    assert_eq!(seen["spend"]["credits"], Value::Null);
    assert_eq!(seen["chart"]["whole"], true);
    assert_eq!(
        (seen["events"].clone(), seen["proxy"]["model"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(expiring(&seen).is_empty() && seen["projects"].as_array().unwrap().is_empty());
    let settings = app.ok(&viewer, "get_spending", &[("org_id", o)]).await;
    let owners = app.ok(&owner, "get_spending", &[("org_id", o)]).await;
    assert_eq!(
        settings, owners,
        "the viewer reads the cap as the owner does"
    );
    assert!(settings.get("spend_cap_reset").is_some(), "{settings}");

    // A billing manager reads the credits too; still no audit log.
    let money = app.ok(&billing, "get_overview", &[("org_id", o)]).await;
    assert_eq!(
        money["spend"]["credits"]["balance_micros"],
        5_000_000 - spent
    );
    assert_eq!(money["events"], Value::Null);

    // Another organization's owner: A's overview does not exist for them,
    // and their own shows nothing of A.
    let (stranger, b) = app.outside_owner(&owner, o, "owner@b.test", "Beta").await;
    let (status, body) = app.call(&stranger, "get_overview", &[("org_id", o)]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let theirs = app.ok(&stranger, "get_overview", &[("org_id", &b)]).await;
    assert_eq!(theirs["spend"]["month_micros"], 0);
    assert!(theirs["projects"].as_array().unwrap().is_empty());
    assert!(expiring(&theirs).is_empty());
    assert!(!theirs.to_string().contains("Search"), "{theirs}");
    // Signed out: 401.
    let (status, _) = app
        .call(&app.client(), "get_overview", &[("org_id", o)])
        .await;
    assert_eq!(status, 401);
}
both!(overview_by_seat);
