//! SCIM 2.0 at `/scim/v2`: scim2-tester's whole suite, Okta- and
//! Entra-shaped bodies replayed from their documentation, deprovisioning
//! measured on two instances, and one organization's token against another's
//! resources on every route.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Backend, Binary, Console, TestApp, TestDb, OWNER_PASSWORD};

/// A SCIM client: the base URL and a token.
pub struct Scim {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Scim {
    pub fn new(url: &str, token: &str) -> Scim {
        Scim {
            base: format!("{url}/scim/v2"),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A request as IdPs send it (`application/scim+json`); the status and
    /// the JSON body (null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
        };
        (status, json)
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }
}

/// A fixture with its placeholders filled in.
fn fixture(name: &str, subs: &[(&str, &str)]) -> Value {
    let path = format!(
        "{}/tests/api/fixtures/scim/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in subs {
        text = text.replace(k, v);
    }
    serde_json::from_str(&text).unwrap()
}

/// An owner's organization with project "P", a connection mapping the
/// group "Tollgate Engineers" to P, and a SCIM token of that connection.
async fn provisioned(app: &TestApp) -> (reqwest::Client, String, String, Scim) {
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let project = app.create_project(&owner, &org, "P").await;
    let conn = app
        .ok(
            &owner,
            "save_oidc_connection",
            &[
                ("org_id", &org),
                ("connection_id", ""),
                ("name", "Okta"),
                ("issuer", "http://127.0.0.1:9/"),
                ("client_id", "tollgate"),
                ("client_secret", "client-secret-value"),
                ("scopes", "openid email profile"),
                ("domains", "example.com, contoso.com"),
                ("default_role", "member"),
                ("groups_claim", "groups"),
                (
                    "mapping",
                    "Tollgate Engineers => project:P\nTollgate Admins => owner",
                ),
                ("enabled", "on"),
            ],
        )
        .await;
    let issued = app
        .ok(
            &owner,
            "create_scim_token",
            &[
                ("org_id", &org),
                ("name", "okta"),
                ("connection_id", conn["id"].as_str().unwrap()),
            ],
        )
        .await;
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("sk-tgs-"), "{issued}");
    (owner, org, project, Scim::new(&app.url, token))
}

async fn one(app: &TestApp, sql: &str, binds: &[&str]) -> i64 {
    let mut db = app.sql().await;
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_one(&mut db).await.unwrap()
}

async fn role_of(app: &TestApp, org: &str, email: &str) -> Option<String> {
    let mut db = app.sql().await;
    sqlx::query_scalar(
        "SELECT m.role FROM org_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email = $2",
    )
    .bind(org)
    .bind(email)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

async fn in_project(app: &TestApp, project: &str, email: &str) -> bool {
    one(
        app,
        "SELECT COUNT(*) FROM project_members pm JOIN users u ON u.id = pm.user_id WHERE pm.project_id = $1 AND u.email = $2",
        &[project, email],
    )
    .await
        == 1
}

async fn okta_and_entra_bodies_provision_users_and_groups(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org, project, scim) = provisioned(&app).await;
    let grace = "grace.hopper@example.com";

    // Okta: looks the user up, creates, reads, replaces.
    let found = scim
        .ok(
            "GET",
            "/Users?filter=userName%20eq%20%22grace.hopper%40example.com%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!(found["totalResults"], 0, "{found}");
    let (s, created) = scim
        .call(
            "POST",
            "/Users",
            Some(&fixture("okta/create_user.json", &[])),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let gid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["userName"], grace);
    assert_eq!(created["active"], true);
    assert_eq!(created["externalId"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(role_of(&app, &org, grace).await.as_deref(), Some("member"));
    let (s, dup) = scim
        .call(
            "POST",
            "/Users",
            Some(&fixture("okta/create_user.json", &[])),
        )
        .await;
    assert_eq!(
        (s, dup["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{dup}"
    );
    let subs = [("{{USER_ID}}", gid.as_str())];
    let replaced = scim
        .ok(
            "PUT",
            &format!("/Users/{gid}"),
            Some(&fixture("okta/replace_user.json", &subs)),
        )
        .await;
    assert_eq!(replaced["name"]["familyName"], "Hopper-Murray");
    assert_eq!(replaced["displayName"], "Grace Hopper-Murray");

    // Okta groups: push, add the member (the mapping puts her in P), rename
    // (the mapping no longer matches: she leaves P), then remove her.
    let (s, group) = scim
        .call(
            "POST",
            "/Groups",
            Some(&fixture("okta/create_group.json", &[])),
        )
        .await;
    assert_eq!(s, 201, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();
    let gsubs = [
        ("{{USER_ID}}", gid.as_str()),
        ("{{GROUP_ID}}", group_id.as_str()),
    ];
    let g = scim
        .ok(
            "PATCH",
            &format!("/Groups/{group_id}"),
            Some(&fixture("okta/group_add_member.json", &gsubs)),
        )
        .await;
    assert_eq!(g["members"][0]["value"], gid.as_str(), "{g}");
    assert!(
        in_project(&app, &project, grace).await,
        "mapped group → project"
    );
    let u = scim.ok("GET", &format!("/Users/{gid}"), None).await;
    assert_eq!(u["groups"][0]["display"], "Tollgate Engineers", "{u}");
    let g = scim
        .ok(
            "PATCH",
            &format!("/Groups/{group_id}"),
            Some(&fixture("okta/group_rename.json", &gsubs)),
        )
        .await;
    assert_eq!(g["displayName"], "Tollgate Platform Engineers");
    assert!(
        !in_project(&app, &project, grace).await,
        "renamed: unmapped"
    );
    scim.ok(
        "PATCH",
        &format!("/Groups/{group_id}"),
        Some(&json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "path": "displayName", "value": "Tollgate Engineers" }] })),
    )
    .await;
    assert!(in_project(&app, &project, grace).await);
    let g = scim
        .ok(
            "PATCH",
            &format!("/Groups/{group_id}"),
            Some(&fixture("okta/group_remove_member.json", &gsubs)),
        )
        .await;
    assert!(g.get("members").is_none(), "{g}");
    assert!(
        !in_project(&app, &project, grace).await,
        "removed from the mapped group"
    );

    // Okta deactivates and reactivates: membership goes, then comes back.
    let u = scim
        .ok(
            "PATCH",
            &format!("/Users/{gid}"),
            Some(&fixture("okta/deactivate_user.json", &subs)),
        )
        .await;
    assert_eq!(u["active"], false);
    assert_eq!(role_of(&app, &org, grace).await, None);
    let filtered = scim
        .ok("GET", "/Users?filter=active%20eq%20false", None)
        .await;
    assert_eq!(
        filtered["totalResults"], 1,
        "a deactivated user is still served"
    );
    let u = scim
        .ok(
            "PATCH",
            &format!("/Users/{gid}"),
            Some(&fixture("okta/reactivate_user.json", &subs)),
        )
        .await;
    assert_eq!(u["active"], true);
    assert_eq!(role_of(&app, &org, grace).await.as_deref(), Some("member"));

    // Entra: Test Connection, the matching queries, create, update, disable.
    let probe = scim
        .ok(
            "GET",
            "/Users?filter=userName%20eq%20%229a0e1f6c-3b0e-4c4e-9a57-3f5d0f6c2b11%22",
            None,
        )
        .await;
    assert_eq!(probe["totalResults"], 0);
    let (s, ada) = scim
        .call(
            "POST",
            "/Users",
            Some(&fixture(
                "entra/create_user.json",
                &[("{{MANAGER_ID}}", &gid)],
            )),
        )
        .await;
    assert_eq!(s, 201, "{ada}");
    let aid = ada["id"].as_str().unwrap().to_owned();
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    assert_eq!(
        ada[ext]["manager"]["value"],
        gid.as_str(),
        "a bare manager id"
    );
    assert_eq!(ada[ext]["department"], "Research");
    assert_eq!(
        role_of(&app, &org, "ada.lovelace@contoso.com")
            .await
            .as_deref(),
        Some("member")
    );
    for q in [
        "/Users?filter=userName%20eq%20%22ada.lovelace%40contoso.onmicrosoft.com%22",
        "/Users?filter=externalId%20eq%20%22alovelace%22",
        "/Users?filter=externalId%20eq%20alovelace",
        "/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22ada.lovelace%40contoso.com%22",
    ] {
        let r = scim.ok("GET", q, None).await;
        assert_eq!(r["totalResults"], 1, "{q}: {r}");
        assert_eq!(r["Resources"][0]["id"], aid.as_str(), "{q}");
    }
    let asubs = [("{{USER_ID}}", aid.as_str())];
    let u = scim
        .ok(
            "PATCH",
            &format!("/Users/{aid}"),
            Some(&fixture("entra/update_user.json", &asubs)),
        )
        .await;
    assert_eq!(u["displayName"], "Ada King");
    assert_eq!(u["emails"][0]["value"], "ada.king@contoso.com");
    assert_eq!(u["name"]["familyName"], "King");
    assert_eq!(u[ext]["department"], "Analytical Engines");
    assert_eq!(u["title"], "Countess of Lovelace");

    // Entra groups: the pre-create query, create, add, remove, rename, delete.
    let q = scim
        .ok(
            "GET",
            "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22Tollgate%20Finance%22",
            None,
        )
        .await;
    assert_eq!(q["totalResults"], 0);
    let (s, fin) = scim
        .call(
            "POST",
            "/Groups",
            Some(&fixture("entra/create_group.json", &[])),
        )
        .await;
    assert_eq!(s, 201, "{fin}");
    let fid = fin["id"].as_str().unwrap().to_owned();
    let fsubs = [
        ("{{USER_ID}}", aid.as_str()),
        ("{{GROUP_ID}}", fid.as_str()),
    ];
    scim.ok(
        "PATCH",
        &format!("/Groups/{fid}"),
        Some(&fixture("entra/group_add_member.json", &fsubs)),
    )
    .await;
    let g = scim
        .ok(
            "GET",
            &format!("/Groups/{fid}?excludedAttributes=members"),
            None,
        )
        .await;
    assert!(g.get("members").is_none(), "{g}");
    let g = scim.ok("GET", &format!("/Groups/{fid}"), None).await;
    assert_eq!(g["members"][0]["value"], aid.as_str(), "{g}");
    let g = scim
        .ok(
            "PATCH",
            &format!("/Groups/{fid}"),
            Some(&fixture("entra/group_remove_member.json", &fsubs)),
        )
        .await;
    assert!(g.get("members").is_none(), "{g}");
    let g = scim
        .ok(
            "PATCH",
            &format!("/Groups/{fid}"),
            Some(&fixture("entra/group_rename.json", &fsubs)),
        )
        .await;
    assert_eq!(g["displayName"], "Tollgate Finance Team");
    let (s, _) = scim.call("DELETE", &format!("/Groups/{fid}"), None).await;
    assert_eq!(s, 204);
    assert_eq!(
        scim.call("GET", &format!("/Groups/{fid}"), None).await.0,
        404
    );

    let u = scim
        .ok(
            "PATCH",
            &format!("/Users/{aid}"),
            Some(&fixture("entra/deactivate_user.json", &asubs)),
        )
        .await;
    assert_eq!(u["active"], false, "\"False\" as a string");
    assert_eq!(role_of(&app, &org, "ada.lovelace@contoso.com").await, None);

    // Hard delete: gone from SCIM and from the organization.
    let (s, body) = scim.call("DELETE", &format!("/Users/{gid}"), None).await;
    assert_eq!((s, body), (204, Value::Null));
    let (s, err) = scim.call("GET", &format!("/Users/{gid}"), None).await;
    assert_eq!(s, 404);
    assert_eq!(err["status"], "404");
    assert_eq!(
        err["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(role_of(&app, &org, grace).await, None);

    // Bad input names the field.
    let (s, e) = scim
        .call(
            "POST",
            "/Users",
            Some(&json!({ "schemas": [], "userName": "x@example.com", "active": "maybe" })),
        )
        .await;
    assert_eq!(
        (s, e["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{e}"
    );
    assert!(e["detail"].as_str().unwrap().contains("active"), "{e}");
    let (s, e) = scim.call("GET", "/Users?filter=userName%20eq", None).await;
    assert_eq!(
        (s, e["scimType"].as_str()),
        (400, Some("invalidFilter")),
        "{e}"
    );
    let (s, e) = scim
        .call(
            "PATCH",
            &format!("/Users/{aid}"),
            Some(
                &json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "jump", "path": "title", "value": "x" }] }),
            ),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("Operations[0].op"),
        "{e}"
    );
}
both!(okta_and_entra_bodies_provision_users_and_groups);

/// scim2-tester (PyPI) runs its whole suite, mutating checks included,
/// against `/scim/v2`: no errors.
async fn scim2_tester_reports_no_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, _, _, scim) = provisioned(&app).await;
    let script = format!(
        "{}/../end2end/sdk/scim_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let base = scim.base.clone();
    let token = scim.token.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::sdk::python())
            .args([script.as_str(), base.as_str(), token.as_str(), "--verbose"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("scim:"))
        .unwrap_or_default();
    eprintln!("scim2-tester on {backend:?}: {summary}");
    assert!(
        out.status.success(),
        "scim2-tester failed:\n{stdout}\n{stderr}"
    );
    assert!(summary.contains(" 0 failed"), "{summary}");
}
both!(scim2_tester_reports_no_errors);

/// Org A's token on every SCIM route against org B's user and group: 404,
/// and B is unchanged; a revoked token, a provisioning key and no token are
/// 401; only an owner of the organization manages its tokens.
async fn one_organizations_token_reaches_no_other(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner_a, org_a, _, scim_a) = provisioned(&app).await;
    let (owner_b, org_b) = app
        .outside_owner(&owner_a, &org_a, "owner@b.test", "B")
        .await;
    let issued = app
        .ok(
            &owner_b,
            "create_scim_token",
            &[("org_id", &org_b), ("name", "b"), ("connection_id", "")],
        )
        .await;
    let scim_b = Scim::new(&app.url, issued["token"].as_str().unwrap());
    let bu = scim_b
        .ok("POST", "/Users", Some(&json!({ "userName": "bob@b.test", "emails": [{ "value": "bob@b.test", "primary": true }] })))
        .await;
    let bu = bu["id"].as_str().unwrap().to_owned();
    let bg = scim_b
        .ok(
            "POST",
            "/Groups",
            Some(&json!({ "displayName": "B team", "members": [{ "value": bu }] })),
        )
        .await;
    let bg = bg["id"].as_str().unwrap().to_owned();
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "path": "active", "value": false }] });
    let gpatch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "replace", "path": "displayName", "value": "stolen" }] });
    let user = json!({ "userName": "bob@b.test", "active": false });
    let group = json!({ "displayName": "stolen", "members": [] });
    for (method, path, body) in [
        ("GET", format!("/Users/{bu}"), None),
        ("PUT", format!("/Users/{bu}"), Some(&user)),
        ("PATCH", format!("/Users/{bu}"), Some(&patch)),
        ("DELETE", format!("/Users/{bu}"), None),
        ("GET", format!("/Groups/{bg}"), None),
        ("PUT", format!("/Groups/{bg}"), Some(&group)),
        ("PATCH", format!("/Groups/{bg}"), Some(&gpatch)),
        ("DELETE", format!("/Groups/{bg}"), None),
    ] {
        let (s, e) = scim_a.call(method, &path, body).await;
        assert_eq!(s, 404, "{method} {path}: {e}");
        assert_eq!(e["status"], "404");
    }
    for path in [
        "/Users",
        "/Groups",
        "/Users?filter=userName%20eq%20%22bob%40b.test%22",
    ] {
        let list = scim_a.ok("GET", path, None).await;
        assert_eq!(list["totalResults"], 0, "{path}: {list}");
    }
    for path in ["/Users/.search", "/Groups/.search"] {
        let list = scim_a
            .ok(
                "POST",
                path,
                Some(
                    &json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"] }),
                ),
            )
            .await;
        assert_eq!(list["totalResults"], 0, "{path}: {list}");
    }
    // A's SCIM client cannot take over an account of B by its email.
    for email in ["owner@b.test", "bob@b.test"] {
        let (s, e) = scim_a
            .call(
                "POST",
                "/Users",
                Some(
                    &json!({ "userName": email, "emails": [{ "value": email, "primary": true }] }),
                ),
            )
            .await;
        assert_eq!(
            (s, e["scimType"].as_str()),
            (409, Some("uniqueness")),
            "{email}: {e}"
        );
    }
    assert_eq!(role_of(&app, &org_a, "owner@b.test").await, None);
    // A's group cannot take B's user as a member.
    let (s, e) = scim_a
        .call(
            "POST",
            "/Groups",
            Some(&json!({ "displayName": "A team", "members": [{ "value": bu }] })),
        )
        .await;
    assert_eq!(
        (s, e["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{e}"
    );
    // B is as it was.
    let b = scim_b.ok("GET", &format!("/Users/{bu}"), None).await;
    assert_ne!(b["active"], false, "{b}");
    let g = scim_b.ok("GET", &format!("/Groups/{bg}"), None).await;
    assert_eq!(
        (
            g["displayName"].as_str(),
            g["members"].as_array().map(Vec::len)
        ),
        (Some("B team"), Some(1))
    );
    assert_eq!(
        role_of(&app, &org_b, "bob@b.test").await.as_deref(),
        Some("member")
    );

    // Tokens: only an owner of the organization makes, lists or revokes them.
    let [member] = app
        .add_members(&owner_a, &org_a, [("m@a.test", "member")])
        .await;
    let form = [
        ("org_id", org_a.as_str()),
        ("name", "x"),
        ("connection_id", ""),
    ];
    assert_eq!(app.call(&member, "create_scim_token", &form).await.0, 403);
    assert_eq!(app.call(&owner_b, "create_scim_token", &form).await.0, 404);
    assert_eq!(
        app.call(&member, "sso_overview", &[("org_id", &org_a)])
            .await
            .0,
        403
    );
    assert_eq!(
        app.call(&owner_b, "sso_overview", &[("org_id", &org_a)])
            .await
            .0,
        404
    );
    let page = app
        .ok(&owner_a, "sso_overview", &[("org_id", &org_a)])
        .await;
    let token_id = page["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        !page.to_string().contains(&scim_a.token[7..20]),
        "only the hint is listed"
    );
    let revoke = [("org_id", org_a.as_str()), ("token_id", token_id.as_str())];
    assert_eq!(app.call(&member, "revoke_scim_token", &revoke).await.0, 403);
    let revoke_b = [("org_id", org_b.as_str()), ("token_id", token_id.as_str())];
    assert_eq!(
        app.call(&owner_b, "revoke_scim_token", &revoke_b).await.0,
        404
    );
    assert_eq!(
        scim_a.call("GET", "/Users", None).await.0,
        200,
        "still live"
    );
    app.ok(&owner_a, "revoke_scim_token", &revoke).await;
    let (s, e) = scim_a.call("GET", "/Users", None).await;
    assert_eq!((s, e["status"].as_str()), (401, Some("401")), "{e}");
    let prov = app
        .ok(
            &owner_a,
            "create_provisioning_key",
            &[("org_id", &org_a), ("name", "p")],
        )
        .await;
    for token in [prov["token"].as_str().unwrap(), "", "sk-tgs-nonsense"] {
        let (s, _) = Scim::new(&app.url, token)
            .call("GET", "/ServiceProviderConfig", None)
            .await;
        assert_eq!(s, 401, "{token}");
    }
    // The audit log has the token's steps, named by the token.
    let n = one(
        &app,
        "SELECT COUNT(*) FROM audit_events WHERE org_id = $1 AND action = 'scim_token.revoked'",
        &[&org_a],
    )
    .await;
    assert_eq!(n, 1);
}
both!(one_organizations_token_reaches_no_other);

/// A member with two keys is deactivated through SCIM on instance A: both
/// keys are refused on A and on B (delays printed), their sessions end,
/// their service-key colleague's and other people's keys still work, and
/// the audit log shows each step with the SCIM token as actor.
#[test]
fn deactivation_through_scim_cuts_access_on_every_instance() {
    crate::helpers::run(async {
        sqlx::any::install_default_drivers();
        let env = [
            ("TOLLGATE_PROXY__CHANGE_POLL_MS", "60000"),
            ("TOLLGATE_LOGIN_ATTEMPTS_PER_IP", "100000"),
        ];
        let db = TestDb::new(Backend::Postgres).await;
        let a = Binary::start(&db, &env).await;
        let b = Binary::start(&db, &env).await;
        let o = Console::set_up(&a.url).await;
        let conn = o
            .call(
                "save_oidc_connection",
                &[
                    ("org_id", &o.org),
                    ("connection_id", ""),
                    ("name", "Entra"),
                    ("issuer", "http://127.0.0.1:9/"),
                    ("client_id", "tollgate"),
                    ("client_secret", "client-secret-value"),
                    ("scopes", ""),
                    ("domains", "a.test"),
                    ("default_role", "member"),
                    ("groups_claim", "groups"),
                    ("mapping", ""),
                    ("enabled", "on"),
                ],
            )
            .await;
        let issued = o
            .call(
                "create_scim_token",
                &[
                    ("org_id", &o.org),
                    ("name", "entra"),
                    ("connection_id", conn["id"].as_str().unwrap()),
                ],
            )
            .await;
        let scim = Scim::new(&a.url, issued["token"].as_str().unwrap());

        // Two members who joined by invitation; SCIM then takes them over.
        let mut people = Vec::new();
        for name in ["leaver", "stayer"] {
            let email = format!("{name}@a.test");
            let invited = o
                .call(
                    "invite_member",
                    &[("org_id", &o.org), ("email", &email), ("role", "member")],
                )
                .await;
            let link = invited["link"].as_str().unwrap();
            let member = Console {
                url: a.url.clone(),
                http: reqwest::Client::builder()
                    .cookie_store(true)
                    .build()
                    .unwrap(),
                org: o.org.clone(),
                project: o.project.clone(),
            };
            member
                .call(
                    "accept_invitation",
                    &[
                        ("token", link.rsplit('/').next().unwrap()),
                        ("name", name),
                        ("password", "member-password-1234"),
                    ],
                )
                .await;
            let me = member.call("current_user", &[]).await;
            o.call(
                "add_project_member",
                &[
                    ("org_id", &o.org),
                    ("project_id", &o.project),
                    ("user_id", me["id"].as_str().unwrap()),
                    ("role", "member"),
                ],
            )
            .await;
            let created = scim
                .ok("POST", "/Users", Some(&json!({ "userName": email, "emails": [{ "value": email, "primary": true }] })))
                .await;
            people.push((member, created["id"].as_str().unwrap().to_owned()));
        }
        let (leaver, leaver_scim) = &people[0];
        let (stayer, _) = &people[1];
        let (_, k1) = leaver.key(&[("name", "one")]).await;
        let (_, k2) = leaver.key(&[("name", "two")]).await;
        let (_, theirs) = stayer.key(&[]).await;
        let (_, service) = o.key(&[("service", "on"), ("name", "svc")]).await;
        for k in [&k1, &k2, &theirs, &service] {
            for url in [&a.url, &b.url] {
                assert_eq!(chat(url, k).await, 200);
            }
        }

        let started = Instant::now();
        let u = scim
            .ok(
                "PATCH",
                &format!("/Users/{leaver_scim}"),
                Some(
                    &json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{ "op": "Replace", "path": "active", "value": "False" }] }),
                ),
            )
            .await;
        assert_eq!(u["active"], false);
        let answered = started.elapsed();
        let mut delays = Vec::new();
        for k in [&k1, &k2] {
            for url in [&a.url, &b.url] {
                delays.push((url == &b.url, until_refused(url, k).await + answered));
            }
        }
        for (on_b, d) in &delays {
            eprintln!(
                "SCIM deactivation: key refused on {} {:?} after the PATCH was sent",
                if *on_b { "B" } else { "A" },
                d
            );
            assert!(*d < Duration::from_secs(1), "{d:?}");
        }
        for k in [&theirs, &service] {
            for url in [&a.url, &b.url] {
                assert_eq!(chat(url, k).await, 200, "other keys keep working");
            }
        }
        // Their session is over; the stayer's is not.
        let res = leaver
            .http
            .post(format!("{}/api/console/current_user", a.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
        stayer.call("current_user", &[]).await;

        // The audit log: the deactivation, by the SCIM token.
        let audit = o
            .call("list_audit_events", &[("org_id", &o.org)])
            .await
            .to_string();
        assert!(audit.contains("scim.user_deactivated"), "{audit}");
        assert!(audit.contains("SCIM token 'entra'"), "{audit}");
        let mut pg = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let row: (String, String) = sqlx::query_as(
            "SELECT actor_label, after_json FROM audit_events WHERE action = 'scim.user_deactivated'",
        )
        .fetch_one(&mut pg)
        .await
        .unwrap();
        assert_eq!(row.0, "SCIM token 'entra'");
        let after: Value = serde_json::from_str(&row.1).unwrap();
        assert_eq!(after["keys_revoked"], 2, "{after}");
        assert_eq!(after["sessions_ended"], true);
        let revoked: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL")
                .fetch_one(&mut pg)
                .await
                .unwrap();
        assert_eq!(revoked, 2, "only the leaver's two keys");

        // Reactivated: a member again, the keys stay revoked.
        scim.ok(
            "PATCH",
            &format!("/Users/{leaver_scim}"),
            Some(
                &json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "replace", "value": { "active": true } }] }),
            ),
        )
        .await;
        assert_eq!(chat(&a.url, &k1).await, 401);
    });
}

async fn chat(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({ "model": "mock/echo", "max_tokens": 16,
            "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn until_refused(url: &str, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        if chat(url, token).await == 401 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} still serves the key"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A method a SCIM path does not take is a SCIM error (405); and an
/// address of this organization's SSO domain is never made an account by
/// another organization's LiteLLM `/user/new`: it is invited instead, so
/// the people of this organization still sign in through its SSO.
async fn scim_405_and_sso_addresses_stay_with_their_organization(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org, _, scim) = provisioned(&app).await;
    let (status, body) = scim
        .call(
            "PATCH",
            "/ServiceProviderConfig",
            Some(&serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["status"], "405", "{body}");
    assert!(body["schemas"].to_string().contains("Error"), "{body}");

    let other = app.add_member(&owner, &org, "owner@b.test", "member").await;
    let b_org = app.ok(&other, "create_org", &[("name", "Beta")]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pk = app
        .ok(
            &other,
            "create_provisioning_key",
            &[("org_id", &b_org), ("name", "ci")],
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = reqwest::Client::new()
        .post(format!("{}/user/new", app.url))
        .bearer_auth(&pk)
        .json(&serde_json::json!({ "user_id": "squat", "user_email": "ceo@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "invited", "{body}");
    assert_eq!(
        one(
            &app,
            "SELECT COUNT(*) FROM users WHERE email = $1",
            &["ceo@example.com"]
        )
        .await,
        0
    );
}
both!(scim_405_and_sso_addresses_stay_with_their_organization);
