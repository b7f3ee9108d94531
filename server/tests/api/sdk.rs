//! The official OpenAI Python SDK, unchanged, against the proxy: chat,
//! streaming, embeddings, models; revoked, over-budget and rate-limited keys
//! raise the SDK's own errors. `scripts/tools` installs the SDK into
//! `$HOME/.cache/tollgate-venv` (or set `TOLLGATE_PYTHON`).

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};

pub(crate) fn python() -> String {
    std::env::var("TOLLGATE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/tollgate-venv/bin/python")
    })
}

async fn the_openai_sdk_works_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    app.priced_model(&owner, &org, "mock/priced").await;
    let project = app.create_project(&owner, &org, "P").await;
    app.ok(
        &owner,
        "update_project",
        &[
            ("org_id", &org),
            ("project_id", &project),
            ("name", "P"),
            ("models[0]", "mock/echo"),
            ("models[1]", "mock/embed"),
            ("models[2]", "mock/priced"),
            ("tpm", ""),
            ("rpm", ""),
            ("max_budget", ""),
            ("budget_reset", "never"),
            ("ip_allowlist", ""),
        ],
    )
    .await;
    let key = |extra: &'static [(&'static str, &'static str)]| {
        app.create_key(&owner, &org, &project, extra)
    };
    let (_, ok) = key(&[]).await;
    let (revoked_id, revoked) = key(&[]).await;
    app.ok(
        &owner,
        "revoke_key",
        &[("org_id", &org), ("key_id", &revoked_id)],
    )
    .await;
    let (_, broke) = key(&[("max_budget", "0.0001")]).await;
    let (_, limited) = key(&[("rpm", "1")]).await;
    let used = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&limited)
        .json(&serde_json::json!({ "model": "mock/echo", "messages": [{ "role": "user", "content": "x" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/openai_sdk_check.py"
    );
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .env("TOLLGATE_URL", url)
            .env("KEY_OK", ok)
            .env("KEY_REVOKED", revoked)
            .env("KEY_BROKE", broke)
            .env("KEY_LIMITED", limited)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); run scripts/tools to install the OpenAI SDK",
            python()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
    eprintln!("{stdout}");
}
both!(the_openai_sdk_works_unchanged);

/// The official `openai` (Responses API) and `anthropic` (Messages API)
/// Python SDKs, unchanged (end2end/sdk/agents_api_check.py): plain,
/// streamed, tool round trips and `count_tokens`, against the mock, a fake
/// chat-only OpenAI-compatible provider (translated) and a fake Anthropic
/// provider (passed through), both from end2end/sdk/fake_upstreams.py; a
/// revoked key and a key without the model are refused in each SDK's own
/// error.
async fn the_responses_and_anthropic_sdks_work_unchanged(backend: Backend) {
    use std::io::BufRead;
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let fakes = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/fake_upstreams.py"
    );
    let mut child = std::process::Command::new(python())
        .arg(fakes)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/tools", python()));
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let urls: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("the fake providers said {first:?}: {e}"));
    for (name, kind, base, model) in [
        ("chatonly", "openai", &urls["openai"], "chatonly/echo"),
        ("claude", "anthropic", &urls["anthropic"], "claude/echo"),
    ] {
        let base = base.as_str().unwrap();
        app.ok(
            &owner,
            "upsert_provider",
            &[
                ("org_id", &org),
                ("name", name),
                ("kind", kind),
                ("base_url", base),
                ("api_key", "sk-fake-provider-0000"),
                ("latency_ms", ""),
            ],
        )
        .await;
        app.ok(
            &owner,
            "upsert_model",
            &[
                ("org_id", org.as_str()),
                ("id", model),
                ("provider", name),
                ("upstream", "echo"),
                ("input_price", "1"),
                ("output_price", "2"),
                ("context_window", "128000"),
            ],
        )
        .await;
    }
    let project = open_project(
        &app,
        &owner,
        &org,
        &["mock/echo", "chatonly/echo", "claude/echo"],
    )
    .await;
    let (_, ok) = app.create_key(&owner, &org, &project, &[]).await;
    let (revoked_id, revoked) = app.create_key(&owner, &org, &project, &[]).await;
    app.ok(
        &owner,
        "revoke_key",
        &[("org_id", &org), ("key_id", &revoked_id)],
    )
    .await;
    let (_, narrow) = app
        .create_key(&owner, &org, &project, &[("models[0]", "claude/echo")])
        .await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../end2end/sdk/agents_api_check.py"
    );
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .env("TOLLGATE_URL", url)
            .env("MODELS", "mock/echo,chatonly/echo,claude/echo")
            .env("KEY_OK", ok)
            .env("KEY_REVOKED", revoked)
            .env("KEY_NARROW", narrow)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all agent API checks passed"), "{stdout}");
    eprintln!("{stdout}");
    // Every answer was metered under its endpoint.
    app.gateway.ledger.flush().await;
    let mut conn = app.sql().await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT endpoint, model, CAST(COUNT(*) AS BIGINT) FROM usage_events WHERE org_id = $1 AND status = 200 \
         GROUP BY endpoint, model ORDER BY endpoint, model",
    )
    .bind(&org)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    eprintln!("ledger (endpoint, model, answers): {rows:?}");
    for endpoint in ["responses", "messages"] {
        for model in ["mock/echo", "chatonly/echo", "claude/echo"] {
            assert!(
                rows.iter()
                    .any(|r| r.0 == endpoint && r.1 == model && r.2 > 0),
                "no {endpoint} answer of {model} in the ledger: {rows:?}"
            );
        }
    }
}
both!(the_responses_and_anthropic_sdks_work_unchanged);

/// A project "P" with no limits that allows `models`; its id.
async fn open_project(
    app: &TestApp,
    owner: &reqwest::Client,
    org: &str,
    models: &[&str],
) -> String {
    let project = app.create_project(owner, org, "P").await;
    let fields: Vec<String> = (0..models.len()).map(|i| format!("models[{i}]")).collect();
    let mut form = vec![
        ("org_id", org),
        ("project_id", project.as_str()),
        ("name", "P"),
    ];
    form.extend(
        fields
            .iter()
            .map(String::as_str)
            .zip(models.iter().copied()),
    );
    form.extend(crate::helpers::OPEN_PROJECT);
    app.ok(owner, "update_project", &form).await;
    project
}

/// Where `scripts/tools` installs Claude Code and the Codex CLI.
fn agent_bin(name: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    format!("{home}/.cache/tollgate-agents/node_modules/.bin/{name}")
}

/// Runs a coding agent with only `env` (and PATH) in a home of its own,
/// stdin closed; its output, within two minutes.
async fn run_agent(
    bin: String,
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    cwd: std::path::PathBuf,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("timeout");
        cmd.arg("120")
            .arg(&bin)
            .args(&args)
            .env_clear()
            .current_dir(cwd);
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); run scripts/tools to install it"))
    })
    .await
    .unwrap()
}

/// Claude Code (print mode) and the Codex CLI (`codex exec`), configured by
/// environment and config file only, answered by the mock through Tollgate:
/// Claude Code speaks the Messages API, Codex the Responses API, and both
/// appear in the usage ledger under their endpoints.
async fn claude_code_and_codex_answer_through_tollgate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = open_project(&app, &owner, &org, &["mock/echo"]).await;
    let (claude_key_id, claude_key) = app.create_key(&owner, &org, &project, &[]).await;
    let (codex_key_id, codex_key) = app.create_key(&owner, &org, &project, &[]).await;
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    let out = run_agent(
        agent_bin("claude"),
        vec!["-p", "Say PONG", "--output-format", "json"],
        vec![
            ("HOME", home_path.clone()),
            ("ANTHROPIC_BASE_URL", app.url.clone()),
            ("ANTHROPIC_AUTH_TOKEN", claude_key),
            ("ANTHROPIC_MODEL", "mock/echo".into()),
            ("ANTHROPIC_SMALL_FAST_MODEL", "mock/echo".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
        ],
        work.clone(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Claude Code failed:\n{stdout}\n{stderr}"
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("Claude Code printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(result["is_error"], false, "{result}");
    let answer = result["result"].as_str().unwrap_or_default();
    assert!(answer.contains("PONG"), "Claude Code's answer: {result}");
    eprintln!(
        "Claude Code: {} ms, answer {:?}",
        result["duration_ms"],
        answer.chars().take(80).collect::<String>()
    );

    let codex_home = home.path().join("codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"mock/echo\"\nmodel_provider = \"tollgate\"\ncheck_for_update_on_startup = false\n\n\
             [model_providers.tollgate]\nname = \"Tollgate\"\nbase_url = \"{}/v1\"\nenv_key = \"TOLLGATE_KEY\"\n\
             wire_api = \"responses\"\n\n[features]\nplugins = false\n\n[analytics]\nenabled = false\n",
            app.url
        ),
    )
    .unwrap();
    let out = run_agent(
        agent_bin("codex"),
        vec!["exec", "--skip-git-repo-check", "Say PONG"],
        vec![
            ("HOME", home_path.clone()),
            ("CODEX_HOME", codex_home.to_str().unwrap().to_owned()),
            ("TOLLGATE_KEY", codex_key),
        ],
        work,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Codex failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("PONG"),
        "Codex's answer:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "Codex: {:?}",
        stdout.trim().chars().take(80).collect::<String>()
    );

    app.gateway.ledger.flush().await;
    let mut conn = app.sql().await;
    for (key_id, endpoint) in [(claude_key_id, "messages"), (codex_key_id, "responses")] {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_events WHERE key_id = $1 AND endpoint = $2 AND status = 200",
        )
        .bind(&key_id)
        .bind(endpoint)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        eprintln!("{endpoint}: {n} answers in the ledger");
        assert!(
            n > 0,
            "no {endpoint} answer of the agent's key in the ledger"
        );
    }
}
both!(claude_code_and_codex_answer_through_tollgate);
