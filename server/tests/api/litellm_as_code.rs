//! `litellm-as-code` (PyPI), a declarative reconciler written for LiteLLM's
//! admin API, run against Tollgate with a provisioning key: budgets,
//! models, credentials, users, teams with members and fixed ids, and keys
//! with budgets and limits. The first run applies, a dry run then finds
//! nothing to change, an edited spec applies exactly its edits.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use serde_json::{json, Value};
use std::process::Command;

fn reconciler() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    format!("{home}/.cache/tollgate-venv/bin/litellm-as-code")
}

const SPEC: &str = r#"
budgets:
  - budget_id: platform-budget
    max_budget: 100.0
    budget_duration: 30d
    rpm_limit: 600
models:
  - model_name: acme/chat
    model_info:
      id: 11111111-2222-3333-4444-555555555555
      mode: chat
      base_model: echo
      input_cost_per_million_tokens: 3.0
      output_cost_per_million_tokens: 15.0
    litellm_params:
      model: hosted_vllm/echo
      litellm_credential_name: local-vllm
credentials:
  - credential_name: local-vllm
    credential_info: { custom_llm_provider: hosted_vllm }
    credential_values:
      api_base: http://127.0.0.1:9/v1
      api_key: sk-upstream-secret-value-1234
users:
  - user_id: alice
    user_alias: Alice
    user_email: alice@example.test
    user_role: internal_user
    auto_create_key: "false"
  - user_id: bob
    user_alias: Bob
    user_email: bob@example.test
    user_role: proxy_admin
    auto_create_key: false
teams:
  - team_id: team-prod
    team_alias: production
    max_budget: 50.0
    budget_duration: 30d
    models: [acme/chat, mock/echo]
    members_with_roles:
      - user_id: alice
        role: user
      - user_id: bob
        role: admin
  - team_id: team-research
    team_alias: research
    models: [mock/echo]
virtual_keys:
  - key_alias: prod-service
    team_id: team-prod
    models: [acme/chat]
    max_budget: 10.0
    budget_duration: 1d
    rpm_limit: 60
  - key_alias: alice-laptop
    team_id: team-prod
    user_id: alice
    max_budget: 5.0
"#;

/// Runs the reconciler on `spec`: its exit code and output.
fn reconcile(app: &TestApp, pk: &str, spec: &str, dry_run: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yml");
    std::fs::write(&path, spec).unwrap();
    let mut cmd = Command::new(reconciler());
    cmd.arg(&path)
        .env("LITELLM_BASE_URL", &app.url)
        .env("LITELLM_API_KEY", pk)
        .env("NO_PROXY", "*");
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The plan's last line: "N to create, M to update, K unchanged."
fn summary(out: &str) -> String {
    out.lines()
        .rfind(|l| l.contains("to create,"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

async fn a_declarative_spec_converges(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let pk = app
        .ok(
            &owner,
            "create_provisioning_key",
            &[("org_id", &org), ("name", "reconciler")],
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, out) = reconcile(&app, &pk, SPEC, false);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        summary(&out),
        "9 to create, 0 to update, 0 unchanged.",
        "{out}"
    );

    // What the console shows.
    let models = app.ok(&owner, "list_models", &[("org_id", &org)]).await;
    let chat = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "acme/chat")
        .cloned()
        .unwrap_or_else(|| panic!("{models}"));
    assert_eq!(
        (chat["provider"].clone(), chat["upstream"].clone()),
        (json!("local-vllm"), json!("echo")),
        "{chat}"
    );
    assert_eq!(
        (chat["input_price"].clone(), chat["output_price"].clone()),
        (json!(3_000_000), json!(15_000_000)),
        "{chat}"
    );
    let providers = app.ok(&owner, "list_providers", &[("org_id", &org)]).await;
    let vllm = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "local-vllm")
        .cloned()
        .unwrap_or_else(|| panic!("{providers}"));
    assert_eq!(vllm["base_url"], "http://127.0.0.1:9/v1", "{vllm}");
    assert!(
        !providers.to_string().contains("secret-value"),
        "{providers}"
    );
    let members = app.ok(&owner, "list_members", &[("org_id", &org)]).await;
    let role_of = |email: &str| {
        members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == email)
            .map(|m| m["role"].clone())
    };
    assert_eq!(
        role_of("alice@example.test"),
        Some(json!("member")),
        "{members}"
    );
    assert_eq!(
        role_of("bob@example.test"),
        Some(json!("owner")),
        "{members}"
    );
    let projects = app.ok(&owner, "list_projects", &[("org_id", &org)]).await;
    let prod = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "production")
        .cloned()
        .unwrap_or_else(|| panic!("{projects}"));
    let prod_id = prod["id"].as_str().unwrap().to_owned();
    let view = app
        .ok(
            &owner,
            "get_project",
            &[("org_id", &org), ("project_id", &prod_id)],
        )
        .await;
    assert_eq!(view["models"], json!(["acme/chat", "mock/echo"]), "{view}");
    assert_eq!(view["budget_micros"], 50_000_000, "{view}");
    assert_eq!(view["budget_reset"], "monthly", "{view}");
    let keys = app
        .ok(
            &owner,
            "list_keys",
            &[("org_id", &org), ("project_id", &prod_id)],
        )
        .await;
    let key = |name: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{keys}"))
    };
    assert_eq!(key("prod-service")["budget_micros"], 10_000_000, "{keys}");
    assert_eq!(key("prod-service")["rpm_limit"], 60, "{keys}");
    assert_eq!(
        key("prod-service")["models"],
        json!(["acme/chat"]),
        "{keys}"
    );
    assert_eq!(key("alice-laptop")["owner"], "alice@example.test", "{keys}");

    // Nothing left to do.
    let (code, out) = reconcile(&app, &pk, SPEC, true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        summary(&out),
        "0 to create, 0 to update, 9 unchanged.",
        "{out}"
    );

    // A budget, a team's models and a key's limit change: exactly those.
    let edited = SPEC
        .replace("max_budget: 100.0", "max_budget: 250.0")
        .replace(
            "team_alias: research\n    models: [mock/echo]",
            "team_alias: research\n    models: [mock/echo, acme/chat]",
        )
        .replace("max_budget: 10.0", "max_budget: 20.0");
    assert_ne!(edited, SPEC);
    let (code, plan) = reconcile(&app, &pk, &edited, true);
    assert_eq!(code, 2, "{plan}");
    assert_eq!(
        summary(&plan),
        "0 to create, 3 to update, 6 unchanged.",
        "{plan}"
    );
    for line in [
        "platform-budget",
        "max_budget: 250.0 -> 100.0",
        "research",
        "prod-service",
        "max_budget: 20.0 -> 10.0",
    ] {
        assert!(plan.contains(line), "{line} not in\n{plan}");
    }
    let (code, out) = reconcile(&app, &pk, &edited, false);
    assert_eq!(code, 0, "{out}");
    let (code, out) = reconcile(&app, &pk, &edited, true);
    assert_eq!(
        (code, summary(&out)),
        (0, "0 to create, 0 to update, 9 unchanged.".to_owned()),
        "{out}"
    );

    let key = keys_named(&app, &owner, &org, &prod_id, "prod-service").await;
    assert_eq!(key["budget_micros"], 20_000_000, "{key}");
    let research = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "research")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = app
        .ok(
            &owner,
            "get_project",
            &[("org_id", &org), ("project_id", &research)],
        )
        .await;
    assert_eq!(view["models"], json!(["mock/echo", "acme/chat"]), "{view}");
}

async fn keys_named(
    app: &TestApp,
    owner: &reqwest::Client,
    org: &str,
    project: &str,
    name: &str,
) -> Value {
    let keys = app
        .ok(
            owner,
            "list_keys",
            &[("org_id", org), ("project_id", project)],
        )
        .await;
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{keys}"))
}

both!(a_declarative_spec_converges);
