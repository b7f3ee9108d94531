//! Single sign-on against a real IdP: nanoidp (PyPI) serves OIDC and SAML.
//! New users sign in and land with the mapped role (the default one when no
//! group is mapped), the mapping is applied again at each sign-in, existing
//! password accounts are linked only on a verified email, enforced SSO
//! refuses passwords except the break-glass owner's; and every forged,
//! replayed, expired or misdirected answer is refused with no session.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};

/// A nanoidp process on a free port, its config and keys in a temp dir.
pub struct NanoIdp {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

impl NanoIdp {
    pub async fn start() -> NanoIdp {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = format!("{}/tests/api/fixtures/nanoidp", env!("CARGO_MANIFEST_DIR"));
        for f in ["settings.yaml", "users.yaml"] {
            std::fs::copy(format!("{fixtures}/{f}"), dir.path().join(f)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let bin = crate::sdk::python().replace("/bin/python", "/bin/nanoidp");
        let log = std::fs::File::create(dir.path().join("nanoidp.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(dir.path())
            .env("NANOIDP_PORT", port.to_string())
            .env("NANOIDP_KEYS_DIR", dir.path().join("keys"))
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // Owned at once: dropping it (a failed start included) kills and reaps it.
        let idp = NanoIdp {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http
                .get(format!("{}/health", idp.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return idp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(idp.dir.path().join("nanoidp.log")).unwrap_or_default();
        panic!("nanoidp did not start:\n{log}");
    }

    /// Logs `user` in at the IdP's form for `authorize_url`; returns where
    /// the IdP sends the browser back (our callback with code and state).
    pub async fn login(&self, authorize_url: &str, user: &str, password: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = http
            .post(authorize_url)
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status().as_u16(),
            302,
            "{}",
            res.text().await.unwrap_or_default()
        );
        res.headers()["location"].to_str().unwrap().to_owned()
    }
}

impl Drop for NanoIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser: a cookie jar that does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn location(c: &reqwest::Client, url: &str) -> String {
    let res = c.get(url).send().await.unwrap();
    assert!(
        res.status().is_redirection(),
        "{url}: {} {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// Signs `user` in through the connection with `browser`; returns where
/// Tollgate sent the browser at the end.
async fn oidc_sign_in(
    app: &TestApp,
    idp: &NanoIdp,
    b: &reqwest::Client,
    conn: &str,
    user: &str,
    pw: &str,
) -> String {
    let to_idp = location(b, &format!("{}/sso/{conn}/start", app.url)).await;
    assert!(to_idp.starts_with(&idp.url), "{to_idp}");
    assert!(
        to_idp.contains("code_challenge_method=S256") && to_idp.contains("nonce="),
        "{to_idp}"
    );
    let back = idp.login(&to_idp, user, pw).await;
    location(b, &back).await
}

async fn signed_in(app: &TestApp, b: &reqwest::Client) -> Option<Value> {
    let res = b
        .post(format!("{}/api/console/current_user", app.url))
        .send()
        .await
        .unwrap();
    if res.status().is_success() {
        Some(res.json().await.unwrap())
    } else {
        None
    }
}

pub async fn oidc_connection(
    app: &TestApp,
    owner: &reqwest::Client,
    org: &str,
    issuer: &str,
    mapping: &str,
) -> String {
    let c = app
        .ok(
            owner,
            "save_oidc_connection",
            &[
                ("org_id", org),
                ("connection_id", ""),
                ("name", "Corp IdP"),
                ("issuer", issuer),
                ("client_id", "tollgate"),
                ("client_secret", "tollgate-secret"),
                ("scopes", "openid email profile groups"),
                ("domains", "corp.test"),
                ("default_role", "viewer"),
                ("groups_claim", "groups"),
                ("mapping", mapping),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(c["client_secret_hint"], "…cret", "{c}");
    assert!(
        !c.to_string().contains("tollgate-secret"),
        "the secret is never shown: {c}"
    );
    c["id"].as_str().unwrap().to_owned()
}

async fn role_in(app: &TestApp, org: &str, email: &str) -> Option<(String, String)> {
    let mut db = app.sql().await;
    sqlx::query_as(
        "SELECT m.role, m.joined_via FROM org_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email = $2",
    )
    .bind(org)
    .bind(email)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

async fn oidc_signs_people_in_with_their_mapped_role(backend: Backend) {
    let idp = NanoIdp::start().await;
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    let conn = oidc_connection(
        &app,
        &owner,
        &org,
        &idp.url,
        "tollgate-admins => owner\nengineering => member, project:P admin",
    )
    .await;
    // The sign-in page asks for the email first and sends corp.test to the IdP.
    let route = app
        .ok(
            &app.client(),
            "sign_in_route",
            &[("email", "Alice@Corp.test")],
        )
        .await;
    assert!(
        route["sso_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/sso/{conn}/start")),
        "{route}"
    );
    let route = app
        .ok(&app.client(), "sign_in_route", &[("email", "x@other.test")])
        .await;
    assert_eq!(route["sso_url"], Value::Null);

    // A new user, just in time, with the first mapped role of their groups.
    let alice = browser();
    let landed = oidc_sign_in(&app, &idp, &alice, &conn, "alice", "alice-pw").await;
    assert_eq!(landed, format!("/orgs/{org}"));
    let me = signed_in(&app, &alice).await.unwrap();
    assert_eq!(me["email"], "alice@corp.test");
    assert_eq!(
        role_in(&app, &org, "alice@corp.test").await,
        Some(("owner".into(), "oidc".into()))
    );
    // A member by a mapped group, in the mapped project.
    let carol = browser();
    oidc_sign_in(&app, &idp, &carol, &conn, "carol", "carol-pw").await;
    assert_eq!(
        role_in(&app, &org, "carol@corp.test").await,
        Some(("member".into(), "oidc".into()))
    );
    let mut db = app.sql().await;
    let prole: String = sqlx::query_scalar(
        "SELECT pm.role FROM project_members pm JOIN users u ON u.id = pm.user_id WHERE pm.project_id = $1 AND u.email = 'carol@corp.test'",
    )
    .bind(&project)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(prole, "admin");
    // An unmapped group: the default role.
    let bob = browser();
    oidc_sign_in(&app, &idp, &bob, &conn, "bob", "bob-pw").await;
    assert_eq!(
        role_in(&app, &org, "bob@corp.test").await,
        Some(("viewer".into(), "oidc".into()))
    );

    // Another organization's connection to the same IdP (another domain)
    // reaches none of these accounts.
    let (owner_b, org_b) = app.outside_owner(&owner, &org, "owner@b.test", "B").await;
    let conn_b = app
        .ok(
            &owner_b,
            "save_oidc_connection",
            &[
                ("org_id", &org_b),
                ("connection_id", ""),
                ("name", "Same IdP"),
                ("issuer", &idp.url),
                ("client_id", "tollgate"),
                ("client_secret", "tollgate-secret"),
                ("scopes", "openid email profile groups"),
                ("domains", "b.test"),
                ("default_role", "owner"),
                ("groups_claim", "groups"),
                ("mapping", ""),
                ("enabled", "on"),
            ],
        )
        .await;
    let intruder = browser();
    let ended = oidc_sign_in(
        &app,
        &idp,
        &intruder,
        conn_b["id"].as_str().unwrap(),
        "alice",
        "alice-pw",
    )
    .await;
    assert!(ended.starts_with("/login?sso_error="), "{ended}");
    assert!(signed_in(&app, &intruder).await.is_none());
    assert_eq!(role_in(&app, &org_b, "alice@corp.test").await, None);

    // The callback replayed (state used once): refused, no session.
    let to_idp = location(&bob, &format!("{}/sso/{conn}/start", app.url)).await;
    let back = idp.login(&to_idp, "bob", "bob-pw").await;
    let stranger = browser();
    let refused = location(&stranger, &back).await;
    assert!(refused.starts_with("/login?sso_error="), "{refused}");
    assert!(signed_in(&app, &stranger).await.is_none());
    location(&bob, &back).await;
    let again = location(&bob, &back).await;
    assert!(
        again.starts_with("/login?sso_error="),
        "a state works once: {again}"
    );
    let reason = url::form_urlencoded::parse(again.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "sso_error")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        reason.contains("already used") || reason.contains("not started"),
        "{reason}"
    );

    // The mapping is applied again at each sign-in.
    app.ok(
        &owner,
        "save_oidc_connection",
        &[
            ("org_id", &org),
            ("connection_id", &conn),
            ("name", "Corp IdP"),
            ("issuer", &idp.url),
            ("client_id", "tollgate"),
            ("client_secret", ""),
            ("scopes", "openid email profile groups"),
            ("domains", "corp.test"),
            ("default_role", "viewer"),
            ("groups_claim", "groups"),
            (
                "mapping",
                "tollgate-admins => owner\nengineering => billing",
            ),
            ("enabled", "on"),
        ],
    )
    .await;
    let carol = browser();
    oidc_sign_in(&app, &idp, &carol, &conn, "carol", "carol-pw").await;
    assert_eq!(
        role_in(&app, &org, "carol@corp.test").await.unwrap().0,
        "billing"
    );
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM project_members WHERE project_id = $1")
            .bind(&project)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(left, 0, "a billing manager holds no project");

    // A password account of this organization is linked (the IdP verified
    // the email); it keeps one account.
    let [dave] = app
        .add_members(&owner, &org, [("dave@corp.test", "member")])
        .await;
    let dave_id = app.user_id(&dave).await;
    let b = browser();
    oidc_sign_in(&app, &idp, &b, &conn, "dave", "dave-pw").await;
    assert_eq!(signed_in(&app, &b).await.unwrap()["id"], dave_id.as_str());

    // Enforced SSO: a member's password is refused, the break-glass owner's is not.
    let owner_id = app.user_id(&owner).await;
    let form = [
        ("org_id", org.as_str()),
        ("enforced", "on"),
        ("break_glass_user_id", ""),
    ];
    app.bad_field(&owner, "set_sso_enforcement", &form, "break_glass_user_id")
        .await;
    let form = [
        ("org_id", org.as_str()),
        ("enforced", "on"),
        ("break_glass_user_id", owner_id.as_str()),
    ];
    assert_eq!(app.call(&dave, "set_sso_enforcement", &form).await.0, 403);
    app.ok(&owner, "set_sso_enforcement", &form).await;
    let (s, body) = app
        .call(
            &app.client(),
            "sign_in",
            &[
                ("email", "dave@corp.test"),
                ("password", crate::helpers::MEMBER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("single sign-on"),
        "{body}"
    );
    app.sign_in("owner@a.test", OWNER_PASSWORD).await;

    // Audited, and the audit names the connection.
    let audit = app
        .ok(&owner, "list_audit_events", &[("org_id", &org)])
        .await
        .to_string();
    for action in [
        "sso.connection_created",
        "sso.connection_updated",
        "sso.signed_in",
        "sso.enforcement_changed",
    ] {
        assert!(audit.contains(action), "{action}");
    }
}
both!(oidc_signs_people_in_with_their_mapped_role);

/// The relying party's checks, each against nanoidp's real answers or tokens
/// signed with its own key: a wrong nonce, a replayed code or state, an
/// expired, tampered, foreign-key or wrong-audience ID token.
#[test]
fn oidc_refuses_forged_and_replayed_answers() {
    use tollgate_server::sso::oidc::{
        build_http_client, OidcConfig, OidcProvider, TgTokenResponse,
    };
    crate::helpers::run(async {
        let idp = NanoIdp::start().await;
        let cfg = OidcConfig {
            issuer: idp.url.clone(),
            client_id: "tollgate".into(),
            client_secret: Some("tollgate-secret".into()),
            redirect_url: "http://127.0.0.1:9/sso/oidc/callback".into(),
            scopes: vec!["email".into(), "groups".into()],
            groups_claim: "groups".into(),
        };
        let p = OidcProvider::discover(build_http_client(true).unwrap(), cfg)
            .await
            .unwrap();
        let code_of = |back: &str| -> (String, String) {
            let q = back.split_once('?').unwrap().1;
            let get = |k: &str| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
                    .unwrap()
            };
            (get("code"), get("state"))
        };
        // A good one first.
        let pending = p.start_login();
        let (code, state) = code_of(&idp.login(&pending.authorize_url, "alice", "alice-pw").await);
        let ok = p.finish_login(&pending, &state, &code).await.unwrap();
        assert_eq!(ok.claims.subject().as_str(), "alice");
        // The same code again: the IdP refuses it.
        let e = p.finish_login(&pending, &state, &code).await.err().unwrap();
        assert!(e.contains("invalid_grant"), "{e}");
        // Another state than the one we sent.
        let pending = p.start_login();
        let (code, _) = code_of(&idp.login(&pending.authorize_url, "alice", "alice-pw").await);
        let e = p
            .finish_login(&pending, "forged", &code)
            .await
            .err()
            .unwrap();
        assert!(e.contains("state mismatch"), "{e}");
        // A wrong nonce.
        let pending = p.start_login();
        let (code, state) = code_of(&idp.login(&pending.authorize_url, "alice", "alice-pw").await);
        let mut wrong = pending.clone();
        wrong.nonce = "not-the-nonce".into();
        let e = p.finish_login(&wrong, &state, &code).await.err().unwrap();
        assert!(e.contains("nonce"), "{e}");

        // ID tokens signed with nanoidp's own key (its keys dir), but wrong.
        let key_pem = std::fs::read(idp.dir.path().join("keys/rsa_private.pem")).unwrap();
        let kid = std::fs::read_to_string(idp.dir.path().join("keys/kid.txt")).unwrap();
        let idp_key = jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).unwrap();
        let now = tollgate_app::core::now_ms() / 1000;
        let claims = |aud: &str, exp: i64, nonce: &str| {
            json!({ "iss": idp.url, "sub": "alice", "aud": aud, "iat": now - 10, "exp": exp, "nonce": nonce,
                    "email": "alice@corp.test" })
        };
        let sign = |key: &jsonwebtoken::EncodingKey, c: &Value| {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some(kid.trim().to_owned());
            jsonwebtoken::encode(&h, c, key).unwrap()
        };
        let verify = |jwt: String, nonce: &str| {
            let p = &p;
            let nonce = openidconnect::Nonce::new(nonce.to_owned());
            async move {
                let tr: TgTokenResponse = serde_json::from_value(json!({
                    "access_token": "at", "token_type": "Bearer", "id_token": jwt,
                }))
                .unwrap();
                p.verify_id_token(&tr, &nonce).await
            }
        };
        // Well made: accepted (so the refusals below are for their own reason).
        verify(sign(&idp_key, &claims("tollgate", now + 300, "n1")), "n1")
            .await
            .unwrap();
        let e = verify(sign(&idp_key, &claims("tollgate", now - 60, "n1")), "n1")
            .await
            .err()
            .unwrap();
        assert!(e.contains("expired"), "{e}");
        let e = verify(
            sign(&idp_key, &claims("someone-else", now + 300, "n1")),
            "n1",
        )
        .await
        .err()
        .unwrap();
        assert!(e.contains("another client"), "{e}");
        let e = verify(sign(&idp_key, &claims("tollgate", now + 300, "n1")), "n2")
            .await
            .err()
            .unwrap();
        assert!(e.contains("nonce"), "{e}");
        // Tampered: the payload changed after signing.
        let good = sign(&idp_key, &claims("tollgate", now + 300, "n1"));
        let parts: Vec<&str> = good.split('.').collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("mallory");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(payload.to_string()),
            parts[2]
        );
        let e = verify(forged, "n1").await.err().unwrap();
        assert!(e.contains("signature"), "{e}");
        // Signed by another key under nanoidp's key id.
        let other = samael::idp::IdentityProvider::generate_new(samael::idp::KeyType::Rsa(
            samael::idp::Rsa::Rsa2048,
        ))
        .unwrap()
        .export_private_key_der()
        .unwrap();
        let other_key = jsonwebtoken::EncodingKey::from_rsa_der(&other);
        let e = verify(sign(&other_key, &claims("tollgate", now + 300, "n1")), "n1")
            .await
            .err()
            .unwrap();
        assert!(e.contains("signature"), "{e}");
    });
}

/// Every single sign-on and template mutation, from a member of the
/// organization (403) and from another organization's owner (404): nothing
/// changes.
async fn identity_settings_are_owners_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let [member, billing] = app
        .add_members(
            &owner,
            &org,
            [("m@a.test", "member"), ("b@a.test", "billing")],
        )
        .await;
    let (other, _) = app.outside_owner(&owner, &org, "other@b.test", "B").await;
    let conn = oidc_connection(&app, &owner, &org, "http://127.0.0.1:9/", "").await;
    let t = app
        .ok(
            &owner,
            "save_role_template",
            &[
                ("org_id", &org),
                ("template_id", ""),
                ("name", "T"),
                ("role", "member"),
                ("max_budget", ""),
                ("budget_reset", "never"),
                ("rpm", ""),
                ("tpm", ""),
                ("expires_in_days", ""),
            ],
        )
        .await;
    let template = t["id"].as_str().unwrap().to_owned();
    let owner_id = app.user_id(&owner).await;
    let oidc = |id: &str| {
        vec![
            ("org_id", org.clone()),
            ("connection_id", id.to_owned()),
            ("name", "X".into()),
            ("issuer", "http://127.0.0.1:9/".into()),
            ("client_id", "x".into()),
            ("client_secret", "y".into()),
            ("scopes", String::new()),
            ("domains", "x.test".into()),
            ("default_role", "member".into()),
            ("groups_claim", "groups".into()),
            ("mapping", String::new()),
            ("enabled", "on".into()),
        ]
    };
    let calls: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("save_oidc_connection", oidc("")),
        ("save_oidc_connection", oidc(&conn)),
        (
            "save_saml_connection",
            vec![
                ("org_id", org.clone()),
                ("connection_id", String::new()),
                ("name", "S".into()),
                ("domains", String::new()),
                ("default_role", "member".into()),
                ("groups_claim", "groups".into()),
                ("mapping", String::new()),
                ("metadata_url", "http://127.0.0.1:9/md".into()),
                ("metadata_xml", String::new()),
            ],
        ),
        (
            "delete_connection",
            vec![("org_id", org.clone()), ("connection_id", conn.clone())],
        ),
        (
            "set_sso_enforcement",
            vec![
                ("org_id", org.clone()),
                ("enforced", "on".into()),
                ("break_glass_user_id", owner_id.clone()),
            ],
        ),
        (
            "create_scim_token",
            vec![
                ("org_id", org.clone()),
                ("name", "t".into()),
                ("connection_id", String::new()),
            ],
        ),
        ("sso_overview", vec![("org_id", org.clone())]),
        (
            "delete_role_template",
            vec![("org_id", org.clone()), ("template_id", template.clone())],
        ),
        (
            "invite_members",
            vec![
                ("org_id", org.clone()),
                ("emails", "x@new.test".into()),
                ("role", "member".into()),
                ("template_id", String::new()),
            ],
        ),
        ("list_role_templates", vec![("org_id", org.clone())]),
    ];
    for (name, form) in &calls {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (who, want) in [(&member, 403), (&billing, 403), (&other, 404)] {
            let (s, body) = app.call(who, name, &form).await;
            assert_eq!(s, want, "{name}: {body}");
        }
    }
    // Nothing changed.
    let page = app.ok(&owner, "sso_overview", &[("org_id", &org)]).await;
    assert_eq!(page["connections"].as_array().unwrap().len(), 1);
    assert_eq!(page["connections"][0]["name"], "Corp IdP");
    assert_eq!(page["enforced"], false);
    assert_eq!(page["tokens"].as_array().unwrap().len(), 0);
    let templates = app
        .ok(&owner, "list_role_templates", &[("org_id", &org)])
        .await;
    assert_eq!(templates.as_array().unwrap().len(), 1);
    let invitations = app
        .ok(&owner, "list_invitations", &[("org_id", &org)])
        .await;
    assert!(!invitations.to_string().contains("x@new.test"));
}
both!(identity_settings_are_owners_only);
