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
