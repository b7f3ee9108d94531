//! The `tollgate` binary itself: operator commands, the audit chain check, and
//! that a password never reaches the database in clear nor the server's log.

use crate::helpers::{Backend, TestApp, TestDb, OWNER_PASSWORD};
use std::process::Command;

fn tollgate(
    db_url: &str,
    data_dir: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .env("TOLLGATE_DATABASE_URL", db_url)
        .env("TOLLGATE_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn");
    let out = crate::helpers::run_with_stdin(cmd, stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An app whose audit chain holds the setup and a rename of the organization;
/// returns it, the owner's client and the organization's id.
async fn renamed_org(backend: Backend) -> (TestApp, reqwest::Client, String) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    app.ok(
        &owner,
        "rename_org",
        &[("org_id", &org), ("name", "Acme Two")],
    )
    .await;
    (app, owner, org)
}

async fn verify_audit_detects_edits_and_deletions(backend: Backend) {
    let (app, owner, org) = renamed_org(backend).await;
    app.add_member(&owner, &org, "bob@example.com", "member")
        .await;
    let dir = app.db.dir.path();
    let verify = || tollgate(&app.db.url, dir, &["admin", "verify-audit"], "");
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "audit chain intact: 4 events verified");

    let mut db = app.sql().await;
    // Edit: make the rename say something else.
    sqlx::query("UPDATE audit_events SET after_json = '{\"name\":\"Evil\"}' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(
        err.contains("event 2: its content does not match its hash (edited)"),
        "{err}"
    );
    sqlx::query("UPDATE audit_events SET after_json = '{\"name\":\"Acme Two\"}' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(verify().0, 0, "restored");
    // Delete from the middle.
    sqlx::query("DELETE FROM audit_events WHERE seq = 3")
        .execute(&mut db)
        .await
        .unwrap();
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("event 4: expected sequence number 3"), "{err}");
}
both!(verify_audit_detects_edits_and_deletions);

async fn verify_audit_detects_a_cut_tail(backend: Backend) {
    let (app, _, _) = renamed_org(backend).await;
    let mut db = app.sql().await;
    sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let (code, _, err) = tollgate(
        &app.db.url,
        app.db.dir.path(),
        &["admin", "verify-audit"],
        "",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("the chain ends at event 1 but its head says 2"),
        "{err}"
    );
}
both!(verify_audit_detects_a_cut_tail);

async fn create_owner_and_reset_password_from_the_cli(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = app.db.dir.path();
    let create_owner = |stdin| {
        let args = [
            "admin",
            "create-owner",
            "--email",
            "ops@example.com",
            "--org",
            "Ops",
        ];
        tollgate(&app.db.url, dir, &args, stdin)
    };
    let (code, _, err) = create_owner("short\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("password: must be at least 10 characters"),
        "{err}"
    );
    let (code, out, err) = create_owner("first-password-123\n");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created ops@example.com as owner of organization 'Ops'"),
        "{out}"
    );
    // The console's setup is closed once an owner exists.
    assert_eq!(
        app.ok(&app.client(), "setup_status", &[]).await,
        serde_json::json!(false)
    );
    let c = app.sign_in("ops@example.com", "first-password-123").await;
    let me = app.ok(&c, "current_user", &[]).await;
    assert_eq!(me["orgs"][0]["role"], "owner");
    assert_eq!(me["orgs"][0]["name"], "Ops");

    let (code, out, err) = tollgate(
        &app.db.url,
        dir,
        &["admin", "reset-password", "--email", "ops@example.com"],
        "second-password-456\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password of ops@example.com reset"), "{out}");
    assert_eq!(
        app.call(&c, "current_user", &[]).await.0,
        401,
        "the old session ended"
    );
    assert_eq!(
        app.call(
            &app.client(),
            "sign_in",
            &[
                ("email", "ops@example.com"),
                ("password", "first-password-123")
            ]
        )
        .await
        .0,
        400
    );
    app.sign_in("ops@example.com", "second-password-456").await;
    let (code, _, err) = tollgate(
        &app.db.url,
        dir,
        &["admin", "reset-password", "--email", "nobody@example.com"],
        "second-password-456\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no user with email nobody@example.com"),
        "{err}"
    );
    let org = me["orgs"][0]["id"].as_str().unwrap().to_owned();
    let c = app.sign_in("ops@example.com", "second-password-456").await;
    let log = app.ok(&c, "list_audit_events", &[("org_id", &org)]).await;
    let actions: Vec<_> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("user.password_reset", "operator (cli)"),
            ("setup.owner_created", "operator (cli)")
        ]
    );
}
both!(create_owner_and_reset_password_from_the_cli);

/// Every password used here appears in neither the database nor the log of a
/// real `tollgate` process running at debug level.
async fn passwords_never_stored_or_logged_in_clear(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let log_path = db.dir.path().join("server.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_DATABASE_URL", &db.url)
        .env("TOLLGATE_DATA_DIR", db.dir.path().join("data"))
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    crate::helpers::wait_ready(&client, &url).await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let setup_pw = format!("setup-{marker}");
    let wrong_pw = format!("wrong-{marker}");
    let new_pw = format!("changed-{marker}");
    let member_pw = format!("member-{marker}");
    let call = |name: &str, form: Vec<(&str, String)>| {
        let req = client.post(format!("{url}/api/console/{name}")).form(&form);
        async move {
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s, body) = call(
        "setup",
        vec![
            ("email", "ada@example.com".into()),
            ("name", "Ada".into()),
            ("password", setup_pw.clone()),
            ("org_name", "Acme".into()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let org = body["org_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            "sign_in",
            vec![
                ("email", "ada@example.com".into()),
                ("password", wrong_pw.clone())
            ]
        )
        .await
        .0,
        400
    );
    let signed_in = client
        .post(format!("{url}/api/console/sign_in"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", setup_pw.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 200);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let session_id = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tollgate_session=")
        .to_owned();
    assert!(session_id.len() >= 16, "{cookie}");
    assert_eq!(
        call(
            "change_password",
            vec![
                ("current_password", setup_pw.clone()),
                ("new_password", new_pw.clone())
            ]
        )
        .await
        .0,
        200
    );
    // A key's token, at creation and at rotation, stays out of the log too.
    let (s, project) = call(
        "create_project",
        vec![("org_id", org.clone()), ("name", "Alpha".into())],
    )
    .await;
    assert_eq!(s, 200, "{project}");
    let project_id = project["id"].as_str().unwrap().to_owned();
    let key_form = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("org_id", org.clone()),
            ("project_id", project_id.clone()),
            ("name", "ci".to_owned()),
            ("max_budget", String::new()),
            ("budget_reset", "never".to_owned()),
            ("tpm", String::new()),
            ("rpm", String::new()),
            ("expires_at", String::new()),
            ("tags", String::new()),
        ];
        v.extend(extra);
        v
    };
    let (s, issued) = call("create_key", key_form(vec![])).await;
    assert_eq!(s, 200, "{issued}");
    let key_token = issued["token"].as_str().unwrap().to_owned();
    let key_id = issued["key"]["id"].as_str().unwrap().to_owned();
    let (s, rotated) = call(
        "rotate_key",
        vec![("org_id", org.clone()), ("key_id", key_id)],
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let rotated_token = rotated["token"].as_str().unwrap().to_owned();

    let (s, inv) = call(
        "invite_member",
        vec![
            ("org_id", org.clone()),
            ("email", "bob@example.com".into()),
            ("role", "member".into()),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let token = inv["link"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (s, body) = call(
        "accept_invitation",
        vec![
            ("token", token),
            ("name", "Bob".into()),
            ("password", member_pw.clone()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // Stop the server (SIGTERM: graceful) and read what it wrote.
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("signed in"),
        "the log was captured at debug level:\n{log}"
    );
    assert!(log.contains("sign-in refused"));
    assert!(
        !log.contains(&session_id),
        "a session id is in the server log"
    );

    let dump = crate::helpers::dump(&db).await;
    assert!(
        dump.contains("$argon2id$"),
        "the dump holds the password hashes"
    );
    assert!(dump.contains("bob@example.com"));
    for t in [&key_token, &rotated_token] {
        let secret = &t[t.len() - 38..t.len() - 6];
        assert!(
            !log.contains(t.as_str()) && !log.contains(secret),
            "a key token is in the server log"
        );
        assert!(
            !dump.contains(t.as_str()) && !dump.contains(secret),
            "a key token is in the database"
        );
    }
    for pw in [&setup_pw, &wrong_pw, &new_pw, &member_pw] {
        assert!(
            !dump.contains(pw.as_str()),
            "a password is in the database in clear"
        );
        assert!(
            !log.contains(pw.as_str()),
            "a password is in the server log"
        );
        assert!(
            !log.contains(&marker),
            "part of a password is in the server log"
        );
    }
}
both!(passwords_never_stored_or_logged_in_clear);

async fn the_cli_prints_a_provisioning_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let data = app.db.dir.path().join("data");
    let (code, out, err) = tollgate(
        &app.db.url,
        &data,
        &[
            "admin",
            "provisioning-key",
            "--org",
            "Acme",
            "--name",
            "bootstrap",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert!(
        token.starts_with("sk-tgp-") && !token.contains(' '),
        "only the token is printed: {out}"
    );
    let mut conn = app.sql().await;
    let who = tollgate_app::core::provisioning::authenticate(&mut conn, &token, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.org_id, org);
    let list = app
        .ok(&owner, "list_provisioning_keys", &[("org_id", &org)])
        .await;
    assert_eq!(list[0]["name"], "bootstrap");
    // By id too; an unknown or ambiguous name is an error that says so.
    assert_eq!(
        tollgate(
            &app.db.url,
            &data,
            &["admin", "provisioning-key", "--org", &org],
            ""
        )
        .0,
        0
    );
    let (code, _, err) = tollgate(
        &app.db.url,
        &data,
        &["admin", "provisioning-key", "--org", "Nope"],
        "",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no organization with the id or name 'Nope'"),
        "{err}"
    );
    app.ok(&owner, "create_org", &[("name", "Acme")]).await;
    let (code, _, err) = tollgate(
        &app.db.url,
        &data,
        &["admin", "provisioning-key", "--org", "Acme"],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("2 organizations are named 'Acme'"), "{err}");
}
both!(the_cli_prints_a_provisioning_key);

/// With private networks not allowed (the default), a provider or a webhook
/// on this machine, the LAN or the cloud's metadata address is refused when
/// saved, also behind a name that resolves there.
async fn private_networks_are_refused_unless_allowed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allow_private_networks = false).await;
    let (owner, org) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    let internal = [
        "http://127.0.0.1:9/v1",
        "http://10.1.2.3/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/v1",
        "http://[::ffff:127.0.0.1]:8080/v1",
        "http://100.64.0.1/v1",
        "http://0.0.0.0:8080/v1",
        "http://localhost:1234/v1",
    ];
    for url in internal {
        let (s, v) = app
            .call(
                &owner,
                "upsert_provider",
                &[
                    ("org_id", &org),
                    ("name", "internal"),
                    ("kind", "openai"),
                    ("base_url", url),
                    ("api_key", ""),
                ],
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (400, Some("base_url")),
            "{url}: {v}"
        );
    }
    // A name that does not resolve (no DNS, or not yet) is saved; the
    // client's resolver refuses it at connect time if it turns private.
    let (s, v) = app
        .call(
            &owner,
            "upsert_provider",
            &[
                ("org_id", &org),
                ("name", "later"),
                ("kind", "openai"),
                ("base_url", "https://api.provider.invalid/v1"),
                ("api_key", ""),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for field in ["webhook_url", "slack_url"] {
        let mut form = vec![
            ("org_id", org.as_str()),
            ("webhook_url", ""),
            ("slack_url", ""),
            ("thresholds", ""),
        ];
        form.retain(|(k, _)| *k != field);
        form.push((field, "http://169.254.169.254/hook"));
        let (s, v) = app.call(&owner, "update_alerting", &form).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
    }
}
both!(private_networks_are_refused_unless_allowed);

/// `org_creation = "operators"`: first-run setup and the CLI make
/// organizations, the console does not.
async fn org_creation_can_be_kept_to_operators(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.org_creation = tollgate_app::core::state::OrgCreation::Operators
    })
    .await;
    let (owner, _) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    let (s, v) = app.call(&owner, "create_org", &[("name", "Side")]).await;
    assert_eq!(s, 403, "{v}");
    assert!(v.to_string().contains("org_creation"), "{v}");
}
both!(org_creation_can_be_kept_to_operators);
