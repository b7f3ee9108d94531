//! Setup, sign-in, sessions, invitations and the membership rules, over HTTP.

use crate::helpers::{Backend, TestApp, MEMBER_PASSWORD, OWNER_PASSWORD};
use sqlx::Row;

async fn racing_setups_have_one_winner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let calls = (0..8).map(|i| {
        let app = &app;
        async move {
            let c = app.client();
            let email = format!("racer{i}@example.com");
            app.call(
                &c,
                "setup",
                &[
                    ("email", &email),
                    ("name", "R"),
                    ("password", OWNER_PASSWORD),
                    ("org_name", "Race"),
                ],
            )
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let wins = results.iter().filter(|(s, _)| *s == 200).count();
    let conflicts: Vec<_> = results.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!(wins, 1, "{results:?}");
    assert_eq!(conflicts.len(), 7, "{results:?}");
    assert!(conflicts[0].1["message"]
        .as_str()
        .unwrap()
        .contains("setup is already done"));
    let mut db = app.sql().await;
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!((users, orgs), (1, 1));
    // Closed for good.
    let c = app.client();
    assert_eq!(
        app.ok(&c, "setup_status", &[]).await,
        serde_json::json!(false)
    );
    let (status, _) = app
        .call(
            &c,
            "setup",
            &[
                ("email", "late@example.com"),
                ("name", "L"),
                ("password", OWNER_PASSWORD),
                ("org_name", "X"),
            ],
        )
        .await;
    assert_eq!(status, 409);
}
both!(racing_setups_have_one_winner);

async fn setup_validates_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let c = app.client();
    let cases = [
        (("not-an-email", "Ada", OWNER_PASSWORD, "Acme"), "email"),
        (("ada@example.com", " ", OWNER_PASSWORD, "Acme"), "name"),
        (("ada@example.com", "Ada", "short", "Acme"), "password"),
        (("ada@example.com", "Ada", OWNER_PASSWORD, ""), "org_name"),
    ];
    for ((email, name, password, org), field) in cases {
        let (status, body) = app
            .call(
                &c,
                "setup",
                &[
                    ("email", email),
                    ("name", name),
                    ("password", password),
                    ("org_name", org),
                ],
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid");
        assert_eq!(body["field"], field, "{body}");
    }
    assert_eq!(
        app.ok(&c, "setup_status", &[]).await,
        serde_json::json!(true)
    );
}
both!(setup_validates_each_field);

async fn owner_and_billing_limits_and_the_last_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("o1@example.com", OWNER_PASSWORD).await;
    let owner_id = app.user_id(&owner).await;
    // The sole owner can neither demote nor remove themself.
    app.refused(
        &owner,
        "change_member_role",
        &[("org_id", &org), ("user_id", &owner_id), ("role", "member")],
        409,
        "at least one owner",
    )
    .await;
    let (status, _) = app
        .call(
            &owner,
            "remove_member",
            &[("org_id", &org), ("user_id", &owner_id)],
        )
        .await;
    assert_eq!(status, 409);

    // Four more owners make five; a sixth is refused at invitation...
    for i in 2..=5 {
        app.add_member(&owner, &org, &format!("o{i}@example.com"), "owner")
            .await;
    }
    let (status, body) = app
        .call(
            &owner,
            "invite_member",
            &[
                ("org_id", &org),
                ("email", "o6@example.com"),
                ("role", "owner"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "role");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 5 owners"),
        "{body}"
    );
    // ...and at promotion.
    let m = app
        .add_member(&owner, &org, "m@example.com", "member")
        .await;
    let m_id = app.user_id(&m).await;
    app.refused(
        &owner,
        "change_member_role",
        &[("org_id", &org), ("user_id", &m_id), ("role", "owner")],
        409,
        "at most 5 owners",
    )
    .await;
    // With five owners, one may step down.
    app.ok(
        &owner,
        "change_member_role",
        &[("org_id", &org), ("user_id", &owner_id), ("role", "member")],
    )
    .await;
    let o2 = app.sign_in("o2@example.com", MEMBER_PASSWORD).await;

    // Three billing managers, not four.
    for i in 1..=3 {
        app.add_member(&o2, &org, &format!("b{i}@example.com"), "billing")
            .await;
    }
    app.refused(
        &o2,
        "change_member_role",
        &[("org_id", &org), ("user_id", &m_id), ("role", "billing")],
        409,
        "at most 3 billings",
    )
    .await;

    // An invitation accepted after the cap filled up is refused then, too.
    let owners_before: i64 = {
        let mut db = app.sql().await;
        sqlx::query_scalar("SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'")
            .bind(&org)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert_eq!(owners_before, 4);
    let token = app
        .invite(&o2, &org, "late-owner@example.com", "owner")
        .await;
    // Room was there at invitation; o1's return to owner fills it before acceptance.
    app.ok(
        &o2,
        "change_member_role",
        &[("org_id", &org), ("user_id", &owner_id), ("role", "owner")],
    )
    .await;
    let c = app.client();
    app.refused(
        &c,
        "accept_invitation",
        &[
            ("token", &token),
            ("name", "Late"),
            ("password", MEMBER_PASSWORD),
        ],
        409,
        "at most 5 owners",
    )
    .await;
    let mut db = app.sql().await;
    let late: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = 'late-owner@example.com'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(late, 0, "a refused acceptance leaves no account behind");
}
both!(owner_and_billing_limits_and_the_last_owner);

async fn invitations_join_existing_accounts_and_work_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org_a) = app.setup("owner@example.com", OWNER_PASSWORD).await;
    let bob = app
        .add_member(&owner, &org_a, "bob@example.com", "member")
        .await;
    let org_b = app.create_org(&bob, "Bob's").await;
    // Bob invites the owner (an existing account) into his organization.
    let token = app
        .invite(&bob, &org_b, "OWNER@example.com", "viewer")
        .await;
    let anon = app.client();
    let info = app.ok(&anon, "invitation_info", &[("token", &token)]).await;
    assert_eq!(info["org_name"], "Bob's");
    assert_eq!(info["email"], "owner@example.com");
    app.bad_field(
        &anon,
        "accept_invitation",
        &[
            ("token", &token),
            ("name", ""),
            ("password", "not the password"),
        ],
        "password",
    )
    .await;
    app.ok(
        &anon,
        "accept_invitation",
        &[
            ("token", &token),
            ("name", ""),
            ("password", OWNER_PASSWORD),
        ],
    )
    .await;
    let me = app.ok(&anon, "current_user", &[]).await;
    let roles: Vec<_> = me["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(me["email"], "owner@example.com");
    assert_eq!(roles.len(), 2, "{me}");
    // Used once: gone.
    let (status, _) = app
        .call(&app.client(), "invitation_info", &[("token", &token)])
        .await;
    assert_eq!(status, 404);
    // A revoked invitation does not open.
    let token = app
        .invite(&owner, &org_a, "carol@example.com", "member")
        .await;
    let inv_id = app
        .ok(&owner, "list_invitations", &[("org_id", &org_a)])
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        &owner,
        "revoke_invitation",
        &[("org_id", &org_a), ("invitation_id", &inv_id)],
    )
    .await;
    let (status, _) = app
        .call(
            &app.client(),
            "accept_invitation",
            &[
                ("token", &token),
                ("name", "C"),
                ("password", MEMBER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 404);
    // Only the hash of a token is stored.
    let mut db = app.sql().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM invitations")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(!stored.contains(&token));
    // Inviting someone who is already a member names the field.
    app.bad_field(
        &owner,
        "invite_member",
        &[
            ("org_id", &org_a),
            ("email", "bob@example.com"),
            ("role", "member"),
        ],
        "email",
    )
    .await;
    app.bad_field(
        &owner,
        "invite_member",
        &[
            ("org_id", &org_a),
            ("email", "dan@example.com"),
            ("role", "admin"),
        ],
        "role",
    )
    .await;
}
both!(invitations_join_existing_accounts_and_work_once);

async fn sessions_rotate_expire_and_end_on_password_change(backend: Backend) {
    // More sign-ins than the default throttle allows a minute for one account.
    let app = TestApp::spawn_with(backend, |c| c.login_attempts_per_account = 50).await;
    app.setup("ada@example.com", OWNER_PASSWORD).await;
    // Cookie flags.
    let cookie = app.sign_in_cookie("ada@example.com", OWNER_PASSWORD).await;
    assert!(cookie.starts_with("tollgate_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http on localhost: {cookie}"
    );
    let first_id = cookie.split(';').next().unwrap().to_owned();
    // Signing in again (a planted or old session) gets a new id; the old one is dead.
    let res = reqwest::Client::new()
        .post(format!("{}/api/console/sign_in", app.url))
        .header("cookie", &first_id)
        .form(&[("email", "ada@example.com"), ("password", OWNER_PASSWORD)])
        .send()
        .await
        .unwrap();
    let second_id = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(first_id, second_id);
    let old = reqwest::Client::new()
        .post(format!("{}/api/console/current_user", app.url))
        .header("cookie", &first_id)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 401);

    // Changing the password ends the other sessions, keeps this one.
    let a = app.sign_in("ada@example.com", OWNER_PASSWORD).await;
    let b = app.sign_in("ada@example.com", OWNER_PASSWORD).await;
    app.bad_field(
        &a,
        "change_password",
        &[
            ("current_password", "wrong-password"),
            ("new_password", "a brand new password"),
        ],
        "current_password",
    )
    .await;
    app.bad_field(
        &a,
        "change_password",
        &[
            ("current_password", OWNER_PASSWORD),
            ("new_password", "short"),
        ],
        "new_password",
    )
    .await;
    app.ok(
        &a,
        "change_password",
        &[
            ("current_password", OWNER_PASSWORD),
            ("new_password", "a brand new password"),
        ],
    )
    .await;
    app.ok(&a, "current_user", &[]).await;
    assert_eq!(app.call(&b, "current_user", &[]).await.0, 401);
    assert_eq!(
        app.call(
            &app.client(),
            "sign_in",
            &[("email", "ada@example.com"), ("password", OWNER_PASSWORD)]
        )
        .await
        .0,
        400
    );
    app.sign_in("ada@example.com", "a brand new password").await;
    // Sign-out ends the session.
    app.ok(&a, "sign_out", &[]).await;
    assert_eq!(app.call(&a, "current_user", &[]).await.0, 401);
}
both!(sessions_rotate_expire_and_end_on_password_change);

async fn sign_in_is_throttled_per_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.setup("ada@example.com", OWNER_PASSWORD).await;
    let c = app.client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.call(
                &c,
                "sign_in",
                &[
                    ("email", "ada@example.com"),
                    ("password", "guess-guess-guess"),
                ],
            )
            .await,
        );
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [400, 400, 400, 400, 400, 429]);
    assert_eq!(statuses[5].1["code"], "rate_limited");
    assert!(statuses[5].1["retry_after_secs"].as_u64().unwrap() >= 1);
    // Even the right password waits now; another account does not.
    assert_eq!(
        app.call(
            &c,
            "sign_in",
            &[("email", "ada@example.com"), ("password", OWNER_PASSWORD)]
        )
        .await
        .0,
        429
    );
    assert_eq!(
        app.call(
            &c,
            "sign_in",
            &[("email", "bob@example.com"), ("password", OWNER_PASSWORD)]
        )
        .await
        .0,
        400
    );
}
both!(sign_in_is_throttled_per_account);

async fn sign_in_is_throttled_per_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.login_attempts_per_ip = 3).await;
    let c = app.client();
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(
                app.call(
                    &c,
                    "sign_in",
                    &[
                        ("email", &format!("u{i}@example.com")),
                        ("password", "x-x-x-x-x-x"),
                    ],
                )
                .await
                .0,
            );
        }
        v
    };
    assert_eq!(codes, [400, 400, 400, 429]);
}
both!(sign_in_is_throttled_per_address);

/// Behind a reverse proxy the operator trusts, the per-address sign-in
/// limit counts each forwarded client, not the proxy; from a peer that is
/// not trusted, `X-Forwarded-For` changes nothing (it cannot be spoofed), and
/// a garbled one is counted against the proxy's address.
async fn sign_in_throttle_counts_forwarded_clients(backend: Backend) {
    async fn codes(app: &TestApp, forwarded_for: &[&str]) -> Vec<u16> {
        let mut codes = Vec::new();
        for (i, ip) in forwarded_for.iter().enumerate() {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-forwarded-for", ip.parse().unwrap());
            let client = reqwest::Client::builder()
                .default_headers(h)
                .build()
                .unwrap();
            let email = format!("u{i}@example.com");
            let form = [("email", email.as_str()), ("password", "x-x-x-x-x-x")];
            codes.push(app.call(&client, "sign_in", &form).await.0);
        }
        codes
    }
    let clients = [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
    ];
    let behind = TestApp::spawn_with(backend, |c| {
        c.login_attempts_per_ip = 2;
        c.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(codes(&behind, &clients).await, [400, 400, 429, 400]);
    // A forwarded entry that is not an address counts as the proxy itself.
    assert_eq!(codes(&behind, &["nonsense"; 3]).await, [400, 400, 429]);
    let direct = TestApp::spawn_with(backend, |c| c.login_attempts_per_ip = 2).await;
    assert_eq!(codes(&direct, &clients).await, [400, 400, 429, 429]);
}
both!(sign_in_throttle_counts_forwarded_clients);

async fn audit_log_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    for i in 0..30 {
        app.ok(
            &owner,
            "rename_org",
            &[("org_id", &org), ("name", &format!("Acme {i}"))],
        )
        .await;
    }
    app.add_member(&owner, &org, "bob@example.com", "member")
        .await;
    // 1 setup + 30 renames + invitation created + accepted = 33 events.
    let page1 = app
        .ok(&owner, "list_audit_events", &[("org_id", &org)])
        .await;
    let events = page1["events"].as_array().unwrap();
    assert_eq!(events.len(), 25);
    assert_eq!(events[0]["action"], "invitation.accepted");
    assert_eq!(events[0]["actor"], "bob@example.com");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let cursor = page1["next_before"].as_i64().unwrap().to_string();
    let page2 = app
        .ok(
            &owner,
            "list_audit_events",
            &[("org_id", &org), ("before", &cursor)],
        )
        .await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 8);
    assert!(page2["next_before"].is_null());
    let renames = app
        .ok(
            &owner,
            "list_audit_events",
            &[("org_id", &org), ("action", "org.renamed")],
        )
        .await;
    assert_eq!(renames["events"].as_array().unwrap().len(), 25);
    assert_eq!(renames["events"][0]["before"], "{\"name\":\"Acme 28\"}");
    assert_eq!(renames["events"][0]["after"], "{\"name\":\"Acme 29\"}");
    let bobs = app
        .ok(
            &owner,
            "list_audit_events",
            &[("org_id", &org), ("actor", "bob@example.com")],
        )
        .await;
    assert_eq!(bobs["events"].as_array().unwrap().len(), 1);
    assert_eq!(page1["actions"].as_array().unwrap().len(), 4);
    // Events of one organization stay out of another's log.
    let other = app.ok(&owner, "create_org", &[("name", "Other")]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = app
        .ok(&owner, "list_audit_events", &[("org_id", &other)])
        .await;
    assert_eq!(theirs["events"].as_array().unwrap().len(), 1);
    let mut db = app.sql().await;
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_events")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get("n");
    assert_eq!(total, 34);
}
both!(audit_log_filters_and_pages);

async fn health_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let get = |p: &'static str| reqwest::get(format!("{}{p}", app.url));
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    app.state.db.pool.close().await;
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 503);
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
}
both!(health_endpoints);

async fn cookies_are_secure_behind_https(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.public_url = Some("https://gateway.example.com".into())
    })
    .await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/console/setup", app.url))
        .form(&[
            ("email", "ada@example.com"),
            ("name", "Ada"),
            ("password", OWNER_PASSWORD),
            ("org_name", "Acme"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
both!(cookies_are_secure_behind_https);

async fn sessions_expire_when_idle(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.session_idle_secs = 1).await;
    let (owner, _) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    app.ok(&owner, "current_user", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.call(&owner, "current_user", &[]).await.0, 401);
}
both!(sessions_expire_when_idle);

async fn sessions_end_at_their_absolute_limit_however_active(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.session_absolute_secs = 2).await;
    let (owner, _) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.call(&owner, "current_user", &[]).await.0);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 401, "{statuses:?}");
    // Once ended, it stays ended; signing in again starts a new one.
    assert_eq!(app.call(&owner, "current_user", &[]).await.0, 401);
    let again = app.sign_in("ada@example.com", OWNER_PASSWORD).await;
    app.ok(&again, "current_user", &[]).await;
}
both!(sessions_end_at_their_absolute_limit_however_active);

/// A cross-origin browser POST (another site, a sibling subdomain, a `text/plain`
/// form) carries the victim's cookie; it must not change anything.
async fn cross_origin_console_posts_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, _) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    let url = format!("{}/api/console/create_org", app.url);
    let post = |origin: Option<&str>, site: Option<&str>, content_type: &str, body: &str| {
        let mut req = owner
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let form = "application/x-www-form-urlencoded";
    let refused = [
        post(Some("http://evil.test"), None, form, "name=Evil").await,
        post(Some("null"), None, form, "name=Null").await,
        post(None, Some("same-site"), form, "name=Sibling").await,
        post(
            Some("http://evil.test"),
            Some("cross-site"),
            "text/plain",
            "name=Plain",
        )
        .await,
        post(None, None, "text/plain", "name=Plain").await,
        post(None, None, "application/json", r#"{"name":"Json"}"#).await,
    ];
    assert_eq!(refused, [403, 403, 403, 403, 415, 415]);
    let me = app.ok(&owner, "current_user", &[]).await;
    assert_eq!(me["orgs"].as_array().unwrap().len(), 1, "{me}");
    // What the console itself sends, and a client that is not a browser.
    assert_eq!(
        post(Some(&app.url), Some("same-origin"), form, "name=Mine").await,
        200
    );
    app.ok(&owner, "create_org", &[("name", "Scripted")]).await;
    let me = app.ok(&owner, "current_user", &[]).await;
    assert_eq!(me["orgs"].as_array().unwrap().len(), 3, "{me}");
    // A public call with a body past the console's limit is refused before
    // the body is buffered.
    // Headers announcing 2 MiB and 1 KiB of it, the rest held back: writing
    // it all races the server's early answer (a broken pipe).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/console/sign_in HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {form}\r\nContent-Length: {}\r\n\r\nemail=a%40b.test&password=",
        2 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b'x'; 1024]).await.unwrap();
    let mut answer = [0_u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
}
both!(cross_origin_console_posts_are_refused);

async fn bad_console_arguments_answer_400_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("ada@example.com", OWNER_PASSWORD).await;
    let (status, body) = app.call(&owner, "create_org", &[]).await;
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid"), Some("name")),
        "{body}"
    );
    let (status, body) = app.call(&owner, "rename_org", &[("org_id", &org)]).await;
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid"), Some("name")),
        "{body}"
    );
}
both!(bad_console_arguments_answer_400_naming_the_field);

/// Whoever holds an invitation link (its inviter too) must not learn from it
/// whether the invited email has an account.
async fn invitation_info_does_not_tell_whether_an_account_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org_a) = app.setup("owner@example.com", OWNER_PASSWORD).await;
    app.add_member(&owner, &org_a, "bob@example.com", "member")
        .await;
    let org_b = app.create_org(&owner, "B").await;
    let known = app
        .invite(&owner, &org_b, "bob@example.com", "viewer")
        .await;
    let unknown = app
        .invite(&owner, &org_b, "carol@example.com", "viewer")
        .await;
    let anon = app.client();
    let a = app.ok(&anon, "invitation_info", &[("token", &known)]).await;
    let b = app
        .ok(&anon, "invitation_info", &[("token", &unknown)])
        .await;
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    assert!(a.get("account_exists").is_none(), "{a}");
    // Accepting works for both: the existing account proves itself, the new one is made.
    app.ok(
        &app.client(),
        "accept_invitation",
        &[
            ("token", &known),
            ("name", ""),
            ("password", MEMBER_PASSWORD),
        ],
    )
    .await;
    app.ok(
        &app.client(),
        "accept_invitation",
        &[
            ("token", &unknown),
            ("name", "Carol"),
            ("password", "carol-password-1234"),
        ],
    )
    .await;
}
both!(invitation_info_does_not_tell_whether_an_account_exists);

/// The 429 says when to come back, and a client that is not the one failing
/// still signs in with the right password.
async fn sign_in_throttle_says_when_and_spares_other_clients(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.setup("ada@example.com", OWNER_PASSWORD).await;
    let attacker = app.client();
    let wrong = [
        ("email", "ada@example.com"),
        ("password", "guess-guess-guess"),
    ];
    for _ in 0..5 {
        assert_eq!(app.call(&attacker, "sign_in", &wrong).await.0, 400);
    }
    let res = attacker
        .post(format!("{}/api/console/sign_in", app.url))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{:?}", res.headers());
    // The owner, from another address (all of 127/8 is this machine).
    let elsewhere = reqwest::Client::builder()
        .cookie_store(true)
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let right = [("email", "ada@example.com"), ("password", OWNER_PASSWORD)];
    let (status, body) = app.call(&elsewhere, "sign_in", &right).await;
    assert_eq!(status, 200, "{body}");
    app.ok(&elsewhere, "current_user", &[]).await;
    // The failing client stays throttled.
    assert_eq!(app.call(&attacker, "sign_in", &right).await.0, 429);
}
both!(sign_in_throttle_says_when_and_spares_other_clients);

/// A read of the database does not give a working session cookie.
async fn sessions_are_stored_under_a_hash_of_the_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.setup("ada@example.com", OWNER_PASSWORD).await;
    let cookie = app.sign_in_cookie("ada@example.com", OWNER_PASSWORD).await;
    let pair = cookie.split(';').next().unwrap().to_owned();
    let value = pair.trim_start_matches("tollgate_session=").to_owned();
    let table = match backend {
        Backend::Sqlite => "SELECT id FROM tower_sessions",
        Backend::Postgres => "SELECT id FROM tower_sessions.session",
    };
    let ids: Vec<String> = sqlx::query_scalar(table)
        .fetch_all(&mut app.sql().await)
        .await
        .unwrap();
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|id| !id.contains(&value)),
        "{value} in {ids:?}"
    );
    // The cookie itself still works.
    let me = reqwest::Client::new()
        .post(format!("{}/api/console/current_user", app.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
}
both!(sessions_are_stored_under_a_hash_of_the_cookie);

/// An in-memory SQLite database leaves no file behind: sqlx names it
/// `file:sqlx-in-memory-N`, and nothing of that name may appear on disk.
#[tokio::test]
async fn an_in_memory_database_leaves_no_file() {
    let db = tollgate_app::core::db::connect("sqlite::memory:")
        .await
        .unwrap();
    drop(db);
    let stray: Vec<String> = std::fs::read_dir(".")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sqlx-in-memory"))
        .collect();
    assert!(stray.is_empty(), "{stray:?} left in the working directory");
}

/// The data dir is the owner's only, also when it existed with looser modes.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut data_dir = None;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.database_url = None;
        std::fs::create_dir_all(&c.data_dir).unwrap();
        std::fs::set_permissions(&c.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        data_dir = Some(c.data_dir.clone());
    })
    .await;
    let dir = data_dir.unwrap();
    app.setup("ada@example.com", OWNER_PASSWORD).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let modes: Vec<(String, u32)> = ["", "tollgate.db", "tollgate.db-wal", "tollgate.db-shm"]
        .iter()
        .map(|f| (f.to_string(), mode(&dir.join(f))))
        .collect();
    assert_eq!(
        modes,
        [
            ("".into(), 0o700),
            ("tollgate.db".into(), 0o600),
            ("tollgate.db-wal".into(), 0o600),
            ("tollgate.db-shm".into(), 0o600)
        ]
    );
}

/// Two hundred people invited in one request with a role template; each
/// who accepts is a member whose first key carries the template's limits.
/// A list with one bad address is refused whole, naming it; members already
/// there are skipped. Only owners of the organization do any of it.
async fn bulk_invitations_with_a_role_template(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.login_attempts_per_ip = 100_000).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    let [member] = app
        .add_members(&owner, &org, [("m@a.test", "member")])
        .await;
    let (other, _) = app.outside_owner(&owner, &org, "other@b.test", "B").await;
    let form = [
        ("org_id", org.as_str()),
        ("template_id", ""),
        ("name", "Contractor"),
        ("role", "member"),
        ("max_budget", "5"),
        ("budget_reset", "monthly"),
        ("rpm", "60"),
        ("tpm", "10000"),
        ("expires_in_days", "30"),
    ];
    assert_eq!(app.call(&member, "save_role_template", &form).await.0, 403);
    assert_eq!(app.call(&other, "save_role_template", &form).await.0, 404);
    let mut bad = form.to_vec();
    bad.retain(|(k, _)| *k != "expires_in_days");
    bad.push(("expires_in_days", "forever"));
    app.bad_field(&owner, "save_role_template", &bad, "expires_in_days")
        .await;
    let t = app.ok(&owner, "save_role_template", &form).await;
    let template = t["id"].as_str().unwrap().to_owned();

    let emails: Vec<String> = (0..200).map(|i| format!("person{i}@new.test")).collect();
    let mut list = emails.join("\n");
    list.push_str("\nm@a.test, person0@new.test");
    let invite = |list: &str| {
        vec![
            ("org_id".to_owned(), org.clone()),
            ("emails".to_owned(), list.to_owned()),
            ("role".to_owned(), "viewer".to_owned()),
            ("template_id".to_owned(), template.clone()),
        ]
    };
    let as_ref = |f: &Vec<(String, String)>| {
        f.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let call = |who: &reqwest::Client, f: Vec<(String, String)>| {
        let who = who.clone();
        let url = app.url.clone();
        async move {
            let res = who
                .post(format!("{url}/api/console/invite_members"))
                .form(&f)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(call(&member, as_ref(&invite("x@new.test"))).await.0, 403);
    assert_eq!(call(&other, as_ref(&invite("x@new.test"))).await.0, 404);
    let (s, e) = call(&owner, as_ref(&invite("ok@new.test\nnot-an-email\n"))).await;
    assert_eq!((s, e["field"].as_str()), (400, Some("emails")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("line 2"), "{e}");
    let started = std::time::Instant::now();
    let (s, done) = call(&owner, as_ref(&invite(&list))).await;
    eprintln!(
        "bulk invitation of 200 addresses: one request, {:?}",
        started.elapsed()
    );
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["created"].as_array().unwrap().len(), 200);
    assert_eq!(
        done["skipped"],
        serde_json::json!([["m@a.test", "already a member"]])
    );
    assert_eq!(
        done["created"][0]["invitation"]["role"], "member",
        "the template's role"
    );

    // Each accepts; each one's first key carries the template's limits.
    for (i, created) in done["created"].as_array().unwrap().iter().enumerate() {
        let token = created["link"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let email = created["invitation"]["email"].as_str().unwrap().to_owned();
        let c = app.client();
        app.ok(
            &c,
            "accept_invitation",
            &[
                ("token", &token),
                ("name", "New"),
                ("password", crate::helpers::MEMBER_PASSWORD),
            ],
        )
        .await;
        let uid = app.user_id(&c).await;
        app.ok(
            &owner,
            "add_project_member",
            &[
                ("org_id", &org),
                ("project_id", &project),
                ("user_id", &uid),
                ("role", "member"),
            ],
        )
        .await;
        let issued = app
            .ok(
                &c,
                "create_key",
                &crate::helpers::key_form(&org, &project, &[("rpm", "500")]),
            )
            .await;
        let k = &issued["key"];
        assert_eq!(k["rpm_limit"], 60, "{email}: {k}");
        assert_eq!(k["tpm_limit"], 10000, "{email}");
        assert_eq!(k["budget_reset"], "monthly", "{email}");
        assert_eq!(k["budget_micros"], 5_000_000, "{email}");
        assert!(!k["expires_at"].is_null(), "{email}: {k}");
        if i == 0 {
            let members = app.ok(&owner, "list_members", &[("org_id", &org)]).await;
            let me = members
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["email"] == email.as_str())
                .unwrap();
            assert_eq!(
                (me["joined_via"].as_str(), me["template"].as_str()),
                (Some("invitation"), Some("Contractor"))
            );
        }
    }
}
both!(bulk_invitations_with_a_role_template);
