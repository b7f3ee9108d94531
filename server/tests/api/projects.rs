//! Projects, project members, the model catalogue and API keys through the
//! real server functions: the matrix rows cell by cell, every validation with
//! its text, and the key lifecycle.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use serde_json::Value;

struct World {
    app: TestApp,
    org: String,
    project: String,
    other_project: String,
    owner: reqwest::Client,
    admin: reqwest::Client,
    member: reqwest::Client,
    outsider: reqwest::Client,
    billing: reqwest::Client,
    other_owner: reqwest::Client,
    anonymous: reqwest::Client,
    admin_id: String,
    member_id: String,
    newcomer_id: String,
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

async fn world(backend: Backend) -> World {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let [admin, member, outsider, billing, newcomer] = app
        .add_members(
            &owner,
            &org,
            [
                ("admin@a.test", "member"),
                ("member@a.test", "member"),
                ("outsider@a.test", "member"),
                ("billing@a.test", "billing"),
                ("newcomer@a.test", "member"),
            ],
        )
        .await;
    let (other_owner, _) = app
        .outside_owner(&owner, &org, "owner@b.test", "Beta")
        .await;
    let project = s(&app
        .ok(
            &owner,
            "create_project",
            &[("org_id", &org), ("name", "Alpha")],
        )
        .await["id"]);
    let other_project = s(&app
        .ok(
            &owner,
            "create_project",
            &[("org_id", &org), ("name", "Secret Bravo")],
        )
        .await["id"]);
    let admin_id = app.user_id(&admin).await;
    let member_id = app.user_id(&member).await;
    let newcomer_id = app.user_id(&newcomer).await;
    for (id, role) in [(&admin_id, "admin"), (&member_id, "member")] {
        app.ok(
            &owner,
            "add_project_member",
            &[
                ("org_id", &org),
                ("project_id", &project),
                ("user_id", id),
                ("role", role),
            ],
        )
        .await;
    }
    World {
        anonymous: app.client(),
        app,
        org,
        project,
        other_project,
        owner,
        admin,
        member,
        outsider,
        billing,
        other_owner,
        admin_id,
        member_id,
        newcomer_id,
    }
}

/// Expected outcome per seat: owner, project admin, project member, org member
/// without the project, billing manager, owner of another organization. A
/// billing manager sees every project's name in usage, so is refused (403)
/// rather than kept from knowing the project (404).
#[derive(Clone, Copy)]
enum E {
    Ok,
    Forbidden,
    Hidden,
}
use E::{Forbidden, Hidden, Ok as Yes};

/// A row: the function, its extra arguments, the outcome per seat, the permission.
type Row<'a> = (&'a str, Vec<(&'a str, String)>, [E; 6], &'a str);
/// A form, the field its error must name, and the message.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

fn check(who: &str, function: &str, expect: E, (status, body): (u16, Value), permission: &str) {
    match expect {
        Yes => assert_eq!(status, 200, "{who} should be allowed {function}: {body}"),
        Forbidden => {
            assert_eq!(status, 403, "{who} should be denied {function}: {body}");
            assert_eq!(body["permission"], permission, "{who} {function}: {body}");
        }
        Hidden => {
            assert_eq!(
                status, 404,
                "{who} should not see the project in {function}: {body}"
            );
            assert!(!body.to_string().contains("Alpha"), "{body}");
        }
    }
}

async fn project_rows_cell_by_cell(backend: Backend) {
    let w = world(backend).await;
    let (o, p) = (w.org.as_str(), w.project.as_str());
    let seats: [(&str, &reqwest::Client); 6] = [
        ("owner", &w.owner),
        ("project admin", &w.admin),
        ("project member", &w.member),
        ("org member without the project", &w.outsider),
        ("billing manager", &w.billing),
        ("owner of another org", &w.other_owner),
    ];
    let rows: Vec<Row> = vec![
        (
            "get_project",
            vec![],
            [Yes, Yes, Yes, Hidden, Forbidden, Hidden],
            "view project",
        ),
        (
            "list_project_members",
            vec![],
            [Yes, Yes, Forbidden, Hidden, Forbidden, Hidden],
            "view project members",
        ),
        (
            "update_project",
            vec![
                ("name", "Alpha".into()),
                ("models[0]", "mock/echo".into()),
                ("models[1]", "mock/fast".into()),
                ("tpm", "100000".into()),
                ("rpm", "100".into()),
                ("max_budget", "50".into()),
                ("budget_reset", "monthly".into()),
                ("ip_allowlist", "".into()),
            ],
            [Yes, Yes, Forbidden, Hidden, Forbidden, Hidden],
            "edit project settings",
        ),
        (
            "add_project_member",
            vec![
                ("user_id", w.newcomer_id.clone()),
                ("role", "member".into()),
            ],
            [Yes, Yes, Forbidden, Hidden, Forbidden, Hidden],
            "add project members",
        ),
        (
            "change_project_member_role",
            vec![
                ("user_id", w.newcomer_id.clone()),
                ("role", "member".into()),
            ],
            [Yes, Yes, Forbidden, Hidden, Forbidden, Hidden],
            "edit member roles",
        ),
        (
            "create_key",
            vec![
                ("name", "k".into()),
                ("max_budget", "".into()),
                ("budget_reset", "never".into()),
                ("tpm", "".into()),
                ("rpm", "".into()),
                ("expires_at", "".into()),
                ("tags", "".into()),
            ],
            [Yes, Yes, Yes, Hidden, Forbidden, Hidden],
            "create & manage own keys",
        ),
        (
            "list_keys",
            vec![],
            [Yes, Yes, Yes, Hidden, Forbidden, Hidden],
            "create & manage own keys",
        ),
    ];
    for (function, extra, expect, permission) in &rows {
        let mut args: Vec<(&str, &str)> = vec![("org_id", o), ("project_id", p)];
        args.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let (status, _) = w.app.call(&w.anonymous, function, &args).await;
        assert_eq!(status, 401, "anonymous {function}");
        // The newcomer row is added by the first allowed seat, then re-added:
        // run `add` from the most privileged seat last.
        for (i, (who, client)) in seats.iter().enumerate().rev() {
            if *function == "add_project_member" && matches!(expect[i], Yes) {
                // Not a member before this call.
                let _ = w
                    .app
                    .call(
                        &w.owner,
                        "remove_project_member",
                        &[
                            ("org_id", o),
                            ("project_id", p),
                            ("user_id", &w.newcomer_id),
                        ],
                    )
                    .await;
            }
            check(
                who,
                function,
                expect[i],
                w.app.call(client, function, &args).await,
                permission,
            );
        }
    }
    // Creating and deleting projects: owners only.
    for (i, (who, client)) in seats.iter().enumerate() {
        let expect = if i == 0 {
            Yes
        } else if i == 5 {
            Hidden
        } else {
            Forbidden
        };
        let res = w
            .app
            .call(
                client,
                "create_project",
                &[("org_id", o), ("name", &format!("New {i}"))],
            )
            .await;
        match expect {
            Yes => assert_eq!(res.0, 200, "{who}: {}", res.1),
            Forbidden => {
                assert_eq!(res.0, 403, "{who}: {}", res.1);
                assert_eq!(res.1["permission"], "create project");
            }
            Hidden => assert_eq!(res.0, 404, "{who}: {}", res.1),
        }
    }
    let delete = [("org_id", o), ("project_id", p), ("confirm", "Alpha")];
    for (i, (who, client)) in seats.iter().enumerate().skip(1) {
        // Billing managers know every project from usage: 403, not 404.
        let expect = if i <= 2 || i == 4 { Forbidden } else { Hidden };
        check(
            who,
            "delete_project",
            expect,
            w.app.call(client, "delete_project", &delete).await,
            "delete project",
        );
    }
    // The member of Alpha cannot learn Bravo exists.
    let listed = w.app.ok(&w.member, "list_projects", &[("org_id", o)]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "Alpha");
    assert_eq!(listed[0]["my_seat"], "ProjectMember");
    let (status, body) = w
        .app
        .call(
            &w.member,
            "get_project",
            &[("org_id", o), ("project_id", &w.other_project)],
        )
        .await;
    assert_eq!(status, 404);
    assert!(!body.to_string().contains("Bravo"), "{body}");
    let (_, body) = w
        .app
        .call(
            &w.member,
            "list_keys",
            &[("org_id", o), ("project_id", &w.other_project)],
        )
        .await;
    assert!(!body.to_string().contains("Bravo"), "{body}");
    assert!(w
        .app
        .ok(&w.outsider, "list_projects", &[("org_id", o)])
        .await
        .as_array()
        .unwrap()
        .is_empty());
    let owners_view = w.app.ok(&w.owner, "list_projects", &[("org_id", o)]).await;
    assert_eq!(
        owners_view.as_array().unwrap().len(),
        3,
        "Alpha, Bravo and the owner's New 0"
    );
    // Members and owners of the project: owners shown as implicit admins.
    let people = w
        .app
        .ok(
            &w.admin,
            "list_project_members",
            &[("org_id", o), ("project_id", p)],
        )
        .await;
    let owner_row = people
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "owner@a.test")
        .unwrap();
    assert_eq!(owner_row["role"], Value::Null);
    assert_eq!(owner_row["org_role"], "owner");
    // Finally the owner deletes it, and is told how many keys that revoked.
    let (status, body) = w
        .app
        .call(
            &w.owner,
            "delete_project",
            &[("org_id", o), ("project_id", p), ("confirm", "Alpa")],
        )
        .await;
    assert_eq!((status, s(&body["field"])), (400, "confirm".to_owned()));
    assert_eq!(
        w.app.ok(&w.owner, "delete_project", &delete).await,
        serde_json::json!(3)
    );
}
both!(project_rows_cell_by_cell);

async fn keys_rows_cell_by_cell(backend: Backend) {
    let w = world(backend).await;
    let (o, p) = (w.org.as_str(), w.project.as_str());
    let create = |client: &reqwest::Client, name: &str| {
        let c = client.clone();
        let name = name.to_owned();
        let app = &w.app;
        async move { app.create_key(&c, o, p, &[("name", &name)]).await.0 }
    };
    let admins_key = create(&w.admin, "admin's").await;
    let members_key = create(&w.member, "member's").await;
    // A member lists only their own keys; an admin sees all.
    let mine = w
        .app
        .ok(&w.member, "list_keys", &[("org_id", o), ("project_id", p)])
        .await;
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["keys"][0]["name"], "member's");
    let all = w
        .app
        .ok(&w.admin, "list_keys", &[("org_id", o), ("project_id", p)])
        .await;
    assert_eq!(all["total"], 2);
    // Per key: the member on the admin's key is refused; strangers see nothing.
    for function in ["revoke_key", "rotate_key", "update_key"] {
        let mut args = vec![("org_id", o), ("key_id", admins_key.as_str())];
        if function == "update_key" {
            args.push(("name", "x"));
            args.extend(crate::helpers::NO_LIMITS);
        }
        let (status, body) = w.app.call(&w.member, function, &args).await;
        assert_eq!(status, 403, "member {function} on another's key: {body}");
        assert_eq!(body["permission"], "manage all keys in a project");
        assert_eq!(
            body["message"],
            "your role 'project member' lacks the permission 'manage all keys in a project'"
        );
        for (who, client) in [
            ("outsider", &w.outsider),
            ("other org owner", &w.other_owner),
        ] {
            let (status, _) = w.app.call(client, function, &args).await;
            assert_eq!(status, 404, "{who} {function}");
        }
        // A billing manager knows the project (from usage), not its keys.
        let (status, body) = w.app.call(&w.billing, function, &args).await;
        assert_eq!(status, 403, "billing {function}: {body}");
        assert_eq!(body["permission"], "create & manage own keys");
        assert_eq!(w.app.call(&w.anonymous, function, &args).await.0, 401);
    }
    // The member manages their own key; the admin and the owner any key.
    w.app
        .ok(
            &w.member,
            "rotate_key",
            &[("org_id", o), ("key_id", &members_key)],
        )
        .await;
    w.app
        .ok(
            &w.admin,
            "rotate_key",
            &[("org_id", o), ("key_id", &members_key)],
        )
        .await;
    w.app
        .ok(
            &w.owner,
            "revoke_key",
            &[("org_id", o), ("key_id", &admins_key)],
        )
        .await;
    let (status, body) = w
        .app
        .call(
            &w.owner,
            "revoke_key",
            &[("org_id", o), ("key_id", &admins_key)],
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // My keys: across projects, only one's own.
    let other = s(&w
        .app
        .ok(
            &w.owner,
            "create_project",
            &[("org_id", o), ("name", "Charlie")],
        )
        .await["id"]);
    w.app
        .ok(
            &w.owner,
            "add_project_member",
            &[
                ("org_id", o),
                ("project_id", &other),
                ("user_id", &w.member_id),
                ("role", "admin"),
            ],
        )
        .await;
    w.app
        .create_key(&w.member, o, &other, &[("name", "in charlie")])
        .await;
    let mine = w.app.ok(&w.member, "my_keys", &[("org_id", o)]).await;
    let names: Vec<_> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|k| s(&k["name"]))
        .collect();
    assert_eq!(names, ["in charlie", "member's"]);
    assert_eq!(mine[0]["project_name"], "Charlie");
    // Leaving the project revokes one's keys there.
    let revoked = w
        .app
        .ok(
            &w.admin,
            "remove_project_member",
            &[("org_id", o), ("project_id", p), ("user_id", &w.member_id)],
        )
        .await;
    assert_eq!(revoked, serde_json::json!(1));
    let mine = w.app.ok(&w.member, "my_keys", &[("org_id", o)]).await;
    let statuses: Vec<_> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|k| s(&k["status"]))
        .collect();
    assert_eq!(statuses, ["active", "revoked"]);
    // Leaving the organization revokes the rest.
    w.app
        .ok(
            &w.owner,
            "remove_member",
            &[("org_id", o), ("user_id", &w.member_id)],
        )
        .await;
    let (status, _) = w.app.call(&w.member, "my_keys", &[("org_id", o)]).await;
    assert_eq!(status, 404);
    let mut db = w.app.sql().await;
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE owner_id = $1 AND revoked_at IS NULL",
    )
    .bind(&w.member_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(live, 0);
    let _ = w.admin_id;
}
both!(keys_rows_cell_by_cell);

async fn every_validation_names_its_field(backend: Backend) {
    let w = world(backend).await;
    let (o, p) = (w.org.as_str(), w.project.as_str());
    w.app
        .ok(
            &w.owner,
            "update_project",
            &[
                ("org_id", o),
                ("project_id", p),
                ("name", "Alpha"),
                ("models[0]", "mock/echo"),
                ("models[1]", "mock/fast"),
                ("models[2]", "openai/gpt-4o-mini"),
                ("tpm", "100000"),
                ("rpm", "100"),
                ("max_budget", "50"),
                ("budget_reset", "monthly"),
                ("ip_allowlist", "10.0.0.0/8, 192.168.1.7"),
            ],
        )
        .await;
    let project = w
        .app
        .ok(
            &w.member,
            "get_project",
            &[("org_id", o), ("project_id", p)],
        )
        .await;
    assert_eq!(
        project["ip_allowlist"],
        serde_json::json!(["10.0.0.0/8", "192.168.1.7/32"])
    );
    assert_eq!(project["budget_micros"], 50_000_000);
    let base: Vec<(&str, &str)> = vec![
        ("org_id", o),
        ("project_id", p),
        ("name", "ci"),
        ("max_budget", "5"),
        ("budget_reset", "weekly"),
        ("models[0]", "mock/echo"),
        ("tpm", "1000"),
        ("rpm", "10"),
        ("expires_at", ""),
        ("tags", "ci"),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut a = base.clone();
        if let Some(slot) = a.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            a.push((k, v));
        }
        a
    };
    let cases: Vec<Case> = vec![
        (with("rpm", "120"), "rpm", "rpm 120 exceeds the project's cap of 100"),
        (with("tpm", "100001"), "tpm", "tpm 100001 exceeds the project's cap of 100000"),
        (with("rpm", "0"), "rpm", "must be a positive whole number"),
        (with("tpm", "lots"), "tpm", "'lots' is not a whole number"),
        (with("models[0]", "openai/gpt-4o"), "models", "model 'openai/gpt-4o' is not among the project's models (mock/echo, mock/fast, openai/gpt-4o-mini)"),
        (with("max_budget", "-5"), "max_budget", "must not be negative"),
        (with("max_budget", "five"), "max_budget", "'five' is not an amount in USD such as 5 or 12.50"),
        (with("budget_reset", "hourly"), "budget_reset", "'hourly' is not one of never, daily, weekly, monthly"),
        (with("expires_at", "2020-01-01T00:00"), "expires_at", "must be in the future"),
        (with("expires_at", "tomorrow"), "expires_at", "'tomorrow' is not a date and time such as 2026-12-31T23:59 (UTC)"),
        (with("name", "  "), "name", "must not be empty"),
        (with("tags", "has space"), "tags", "tag 'has space' may only hold letters, digits, '-', '_', ':' and '.'"),
    ];
    for (args, field, message) in cases {
        let (status, body) = w.app.call(&w.member, "create_key", &args).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["code"], "invalid");
        assert_eq!(body["field"], field, "{body}");
        assert_eq!(body["message"], message, "{body}");
    }
    // Editing checks the same rules.
    let key = w.app.ok(&w.member, "create_key", &base).await;
    assert_eq!(key["key"]["budget_micros"], 5_000_000);
    assert_eq!(key["key"]["budget_reset"], "weekly");
    assert!(key["key"]["next_reset"].as_i64().is_some());
    let id = s(&key["key"]["id"]);
    let mut edit: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| *k != "project_id")
        .copied()
        .collect();
    edit.push(("key_id", &id));
    edit.iter_mut().find(|(k, _)| *k == "rpm").unwrap().1 = "101";
    let (status, body) = w.app.call(&w.member, "update_key", &edit).await;
    assert_eq!(
        (status, s(&body["message"])),
        (400, "rpm 101 exceeds the project's cap of 100".to_owned())
    );
    edit.iter_mut().find(|(k, _)| *k == "rpm").unwrap().1 = "50";
    let updated = w.app.ok(&w.member, "update_key", &edit).await;
    assert_eq!(updated["rpm_limit"], 50);
    // Project settings are checked too.
    let project_cases: Vec<(&str, &str, &str)> = vec![
        (
            "models[0]",
            "nope/model",
            "every model must be in the organization's catalogue",
        ),
        (
            "ip_allowlist",
            "10.0.0.0/33",
            "'10.0.0.0/33' is not an IP address or CIDR such as 10.0.0.0/8",
        ),
        ("tpm", "-1", "must be a positive whole number"),
        (
            "name",
            "Secret Bravo",
            "a project with this name already exists in the organization",
        ),
    ];
    for (field, value, message) in project_cases {
        let mut args = vec![
            ("org_id", o),
            ("project_id", p),
            ("name", "Alpha"),
            ("models[0]", "mock/echo"),
            ("tpm", ""),
            ("rpm", ""),
            ("max_budget", ""),
            ("budget_reset", "never"),
            ("ip_allowlist", ""),
        ];
        args.iter_mut().find(|(k, _)| *k == field).unwrap().1 = value;
        let (status, body) = w.app.call(&w.admin, "update_project", &args).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["field"], field.trim_end_matches("[0]"), "{body}");
        assert_eq!(body["message"], message);
    }
    // Lowering the project's cap lowers the keys above it.
    w.app
        .ok(
            &w.owner,
            "update_project",
            &[
                ("org_id", o),
                ("project_id", p),
                ("name", "Alpha"),
                ("models[0]", "mock/echo"),
                ("tpm", ""),
                ("rpm", "20"),
                ("max_budget", ""),
                ("budget_reset", "never"),
                ("ip_allowlist", ""),
            ],
        )
        .await;
    let keys = w
        .app
        .ok(&w.member, "list_keys", &[("org_id", o), ("project_id", p)])
        .await;
    assert_eq!(keys["keys"][0]["rpm_limit"], 20);
    // Billing managers and viewers stay out of projects; owners are in already.
    let billing_id = w.app.user_id(&w.billing).await;
    let owner_id = w.app.user_id(&w.owner).await;
    for (uid, msg) in [
        (
            &billing_id,
            "a billing manager has no access to projects; make them a member first",
        ),
        (
            &owner_id,
            "organization owners are admins of every project already",
        ),
    ] {
        let (status, body) = w
            .app
            .call(
                &w.owner,
                "add_project_member",
                &[
                    ("org_id", o),
                    ("project_id", p),
                    ("user_id", uid),
                    ("role", "member"),
                ],
            )
            .await;
        assert_eq!((status, s(&body["message"])), (400, msg.to_owned()));
    }
}
both!(every_validation_names_its_field);

async fn the_catalogue_is_seeded_and_owners_edit_it(backend: Backend) {
    let w = world(backend).await;
    let o = w.org.as_str();
    let models = w.app.ok(&w.member, "list_models", &[("org_id", o)]).await;
    let ids: Vec<_> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["id"]))
        .collect();
    assert!(
        ids.contains(&"mock/echo".to_owned()) && ids.contains(&"openai/gpt-4o-mini".to_owned()),
        "{ids:?}"
    );
    let mini = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "openai/gpt-4o-mini")
        .unwrap();
    assert_eq!(
        (mini["input_price"].as_i64(), mini["output_price"].as_i64()),
        (Some(150_000), Some(600_000))
    );
    let args = [
        ("org_id", o),
        ("id", "vllm/llama-3.1-8b"),
        ("provider", "vllm"),
        ("upstream", "meta-llama/Llama-3.1-8B"),
        ("input_price", "0.05"),
        ("output_price", "0.08"),
        ("context_window", "131072"),
    ];
    for (who, client) in [("admin", &w.admin), ("billing", &w.billing)] {
        let (status, body) = w.app.call(client, "upsert_model", &args).await;
        assert_eq!(status, 403, "{who}");
        assert_eq!(body["permission"], "model catalogue");
    }
    assert_eq!(
        w.app.call(&w.other_owner, "upsert_model", &args).await.0,
        404
    );
    let added = w.app.ok(&w.owner, "upsert_model", &args).await;
    assert_eq!(added["input_price"], 50_000);
    let (status, body) = w
        .app
        .call(
            &w.owner,
            "upsert_model",
            &[
                ("org_id", o),
                ("id", "no slash"),
                ("provider", "x"),
                ("upstream", "x"),
                ("input_price", "0"),
                ("output_price", "0"),
                ("context_window", "1"),
            ],
        )
        .await;
    assert_eq!((status, s(&body["field"])), (400, "id".to_owned()));
    w.app
        .ok(
            &w.owner,
            "delete_model",
            &[("org_id", o), ("id", "vllm/llama-3.1-8b")],
        )
        .await;
    assert_eq!(
        w.app
            .call(
                &w.owner,
                "delete_model",
                &[("org_id", o), ("id", "vllm/llama-3.1-8b")]
            )
            .await
            .0,
        404
    );
}
both!(the_catalogue_is_seeded_and_owners_edit_it);

async fn key_list_pages_sorts_and_searches(backend: Backend) {
    let w = world(backend).await;
    let (o, p) = (w.org.as_str(), w.project.as_str());
    for i in 0..60 {
        let tags = if i % 10 == 0 { "batch,ten" } else { "batch" };
        let name = format!("key-{i:02}{}", if i == 7 { " 100%_off" } else { "" });
        w.app
            .ok(
                &w.admin,
                "create_key",
                &[
                    ("org_id", o),
                    ("project_id", p),
                    ("name", &name),
                    ("max_budget", ""),
                    ("budget_reset", "never"),
                    ("tpm", ""),
                    ("rpm", ""),
                    ("expires_at", ""),
                    ("tags", tags),
                ],
            )
            .await;
    }
    let page = |extra: Vec<(&'static str, &'static str)>| {
        let mut args = vec![("org_id", o), ("project_id", p)];
        args.extend(extra);
        let app = &w.app;
        let admin = w.admin.clone();
        async move { app.ok(&admin, "list_keys", &args).await }
    };
    let first = page(vec![]).await;
    assert_eq!(
        (
            first["total"].as_i64(),
            first["keys"].as_array().unwrap().len()
        ),
        (Some(60), 50)
    );
    assert_eq!(first["keys"][0]["name"], "key-59", "newest first");
    let second = page(vec![("page", "2")]).await;
    assert_eq!(second["keys"].as_array().unwrap().len(), 10);
    let by_name = page(vec![("sort", "name")]).await;
    assert_eq!(by_name["keys"][0]["name"], "key-00");
    let search = page(vec![("search", "KEY-1")]).await;
    assert_eq!(search["total"], 10);
    let literal = page(vec![("search", "%_")]).await;
    assert_eq!(literal["total"], 1, "LIKE wildcards are taken literally");
    let tagged = page(vec![("tag", "ten")]).await;
    assert_eq!(tagged["total"], 6);
    assert!(tagged["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["tags"].as_array().unwrap().contains(&Value::from("ten"))));
    let tagged_named = page(vec![("tag", "ten"), ("sort", "name"), ("search", "key-5")]).await;
    assert_eq!(tagged_named["total"], 1);
    assert_eq!(tagged_named["keys"][0]["name"], "key-50");
    let (status, body) = w
        .app
        .call(
            &w.admin,
            "list_keys",
            &[("org_id", o), ("project_id", p), ("sort", "price")],
        )
        .await;
    assert_eq!((status, s(&body["field"])), (400, "sort".to_owned()));
}
both!(key_list_pages_sorts_and_searches);

/// The token is in the create and rotate answers and nowhere else: not in any
/// list or detail answer, not in any database column; rotation and revocation
/// take effect at once (or after the stated grace).
async fn the_token_is_shown_once_and_only_its_hash_is_kept(backend: Backend) {
    use tollgate_app::core::keys::{authenticate, token};
    let w = world(backend).await;
    let (o, p) = (w.org.as_str(), w.project.as_str());
    let issued = w
        .app
        .ok(
            &w.member,
            "create_key",
            &[
                ("org_id", o),
                ("project_id", p),
                ("name", "once"),
                ("max_budget", "5"),
                ("budget_reset", "weekly"),
                ("tpm", ""),
                ("rpm", "10"),
                ("expires_at", ""),
                ("tags", ""),
            ],
        )
        .await;
    let tok = s(&issued["token"]);
    assert!(token::looks_like_tollgate_key(&tok), "{tok}");
    let id = s(&issued["key"]["id"]);
    let hint = s(&issued["key"]["hint"]);
    assert!(tok.ends_with(&hint["sk-tg-…".len()..]), "{hint}");
    let secret = token::parse(&tok).unwrap().secret.to_owned();
    let mut answers = Vec::new();
    answers.push(
        w.app
            .ok(&w.member, "list_keys", &[("org_id", o), ("project_id", p)])
            .await,
    );
    answers.push(
        w.app
            .ok(&w.admin, "list_keys", &[("org_id", o), ("project_id", p)])
            .await,
    );
    answers.push(w.app.ok(&w.member, "my_keys", &[("org_id", o)]).await);
    answers.push(
        w.app
            .ok(
                &w.member,
                "update_key",
                &[
                    ("org_id", o),
                    ("key_id", &id),
                    ("name", "once"),
                    ("max_budget", "5"),
                    ("budget_reset", "weekly"),
                    ("tpm", ""),
                    ("rpm", "10"),
                    ("expires_at", ""),
                    ("tags", ""),
                ],
            )
            .await,
    );
    for a in &answers {
        let text = a.to_string();
        assert!(
            !text.contains(&tok) && !text.contains(&secret),
            "a later answer holds the token: {text}"
        );
        assert!(text.contains(&hint), "but it shows the hint");
    }
    let pool = &w.app.state.db.pool;
    let now = tollgate_app::core::now_ms();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        authenticate(&mut conn, &tok, now).await.unwrap().as_deref(),
        Some(id.as_str())
    );

    // Rotation without grace: the old token is dead at once.
    let rotated = w
        .app
        .ok(&w.member, "rotate_key", &[("org_id", o), ("key_id", &id)])
        .await;
    let tok2 = s(&rotated["token"]);
    assert_ne!(tok2, tok);
    assert_eq!(
        rotated["key"]["id_hash"], issued["key"]["id_hash"],
        "the key keeps its identity"
    );
    assert_eq!(authenticate(&mut conn, &tok, now).await.unwrap(), None);
    assert_eq!(
        authenticate(&mut conn, &tok2, now)
            .await
            .unwrap()
            .as_deref(),
        Some(id.as_str())
    );
    // With grace: both work until it ends.
    let rotated = w
        .app
        .ok(
            &w.member,
            "rotate_key",
            &[("org_id", o), ("key_id", &id), ("grace_minutes", "30")],
        )
        .await;
    let tok3 = s(&rotated["token"]);
    let now = tollgate_app::core::now_ms();
    assert!(authenticate(&mut conn, &tok2, now).await.unwrap().is_some());
    assert!(authenticate(&mut conn, &tok3, now).await.unwrap().is_some());
    assert_eq!(
        authenticate(&mut conn, &tok2, now + 31 * 60_000)
            .await
            .unwrap(),
        None
    );
    let (status, body) = w
        .app
        .call(
            &w.member,
            "rotate_key",
            &[("org_id", o), ("key_id", &id), ("grace_minutes", "20000")],
        )
        .await;
    assert_eq!(
        (status, s(&body["field"])),
        (400, "grace_minutes".to_owned())
    );
    // Revocation: every token of the key is dead at once.
    w.app
        .ok(&w.member, "revoke_key", &[("org_id", o), ("key_id", &id)])
        .await;
    let now = tollgate_app::core::now_ms();
    assert_eq!(authenticate(&mut conn, &tok3, now).await.unwrap(), None);
    assert_eq!(authenticate(&mut conn, &tok2, now).await.unwrap(), None);
    let listed = w
        .app
        .ok(&w.member, "list_keys", &[("org_id", o), ("project_id", p)])
        .await;
    assert_eq!(listed["keys"][0]["status"], "revoked");
    // Every change is in the audit log, with the key's id hash as the resource.
    let log = w
        .app
        .ok(
            &w.owner,
            "list_audit_events",
            &[("org_id", o), ("action", "")],
        )
        .await;
    let id_hash = s(&issued["key"]["id_hash"]);
    let mut key_events: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"].as_str().unwrap().ends_with(&id_hash))
        .map(|e| s(&e["action"]))
        .collect();
    key_events.reverse();
    assert_eq!(
        key_events,
        [
            "key.created",
            "key.updated",
            "key.rotated",
            "key.rotated",
            "key.revoked"
        ]
    );
    let actions: Vec<String> = log["actions"].as_array().unwrap().iter().map(s).collect();
    for a in ["project.created", "project.member_added"] {
        assert!(actions.contains(&a.to_owned()), "{a} in {actions:?}");
    }
    assert!(
        !log.to_string().contains(&tok),
        "the audit log holds no token"
    );
    // No column of any table holds a token or a secret.
    let tables = [
        "api_keys",
        "api_key_tags",
        "audit_events",
        "projects",
        "users",
    ];
    for table in tables {
        let rows: Vec<String> = match backend {
            Backend::Postgres => {
                sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap()
            }
            Backend::Sqlite => {
                let cols: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                let concat = cols
                    .iter()
                    .map(|c| format!("COALESCE(CAST({c} AS TEXT), '')"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                sqlx::query_scalar(&format!("SELECT {concat} FROM {table}"))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap()
            }
        };
        assert!(
            !rows.is_empty() || table == "api_key_tags",
            "{table} was read"
        );
        for row in rows {
            for t in [&tok, &tok2, &tok3] {
                let secret = token::parse(t).unwrap().secret;
                assert!(
                    !row.contains(t.as_str()) && !row.contains(secret),
                    "{table} holds a token: {row}"
                );
            }
        }
    }
}
both!(the_token_is_shown_once_and_only_its_hash_is_kept);

/// A bearer-token JSON POST to a machine API; status and body.
async fn machine_post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", app.url);
    let res = app.client().post(url).bearer_auth(token).json(&body).send();
    let res = res.await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// The actions of one key's audit events, oldest first.
async fn key_actions(app: &TestApp, hash: &str) -> Vec<String> {
    let q = "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY seq";
    let rows = sqlx::query_scalar::<_, String>(q).bind(hash);
    rows.fetch_all(&mut app.sql().await).await.unwrap()
}

/// A key update through the machine APIs never lands on a revoked key: the
/// revoked key answers 409 naming it and stays revoked, and an update racing
/// a revoke either lands before it or is refused, never after it.
async fn machine_updates_never_land_on_a_revoked_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let form = [("org_id", org.as_str()), ("name", "Production")];
    let project = s(&app.ok(&owner, "create_project", &form).await["id"]);
    let form = [("org_id", org.as_str()), ("name", "ci")];
    let pk = s(&app.ok(&owner, "create_provisioning_key", &form).await["token"]);
    let service =
        |name| crate::helpers::key_form(&org, &project, &[("service", "on"), ("name", name)]);

    // Revoked first: both machine APIs refuse, and the key stays revoked.
    let issued = app.ok(&owner, "create_key", &service("first")).await;
    let (id, hash, token) = (
        s(&issued["key"]["id"]),
        s(&issued["key"]["id_hash"]),
        s(&issued["token"]),
    );
    app.ok(&owner, "revoke_key", &[("org_id", &org), ("key_id", &id)])
        .await;
    let update = serde_json::json!({ "api_key_id_hash": hash, "api_key_name": "changed" });
    let (st, body) = machine_post(&app, &pk, "/prod/updateServiceKey", update).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.to_string().contains("revoked"), "{body}");
    let update = serde_json::json!({ "key": token, "max_budget": 1 });
    let (st, body) = machine_post(&app, &pk, "/key/update", update).await;
    assert_eq!(st, 409, "{body}");
    let listed = app
        .ok(
            &owner,
            "list_keys",
            &[("org_id", &org), ("project_id", &project)],
        )
        .await;
    assert_eq!(listed["keys"][0]["name"], "first", "{listed}");
    assert_eq!(listed["keys"][0]["status"], "revoked", "{listed}");
    assert_eq!(
        key_actions(&app, &hash).await,
        ["key.created", "key.revoked"]
    );

    // Racing: each update answers 200 (and is logged before the revoke) or 409.
    for n in 0..20 {
        let issued = app.ok(&owner, "create_key", &service("racing")).await;
        let (id, hash) = (s(&issued["key"]["id"]), s(&issued["key"]["id_hash"]));
        let update = serde_json::json!({ "api_key_id_hash": hash, "rpm_limit": n + 1 });
        let revoke = [("org_id", org.as_str()), ("key_id", id.as_str())];
        let (revoked, (st, body)) = tokio::join!(
            app.call(&owner, "revoke_key", &revoke),
            machine_post(&app, &pk, "/prod/updateServiceKey", update),
        );
        assert_eq!(revoked.0, 200, "{}", revoked.1);
        let actions = key_actions(&app, &hash).await;
        let expected: &[&str] = match st {
            200 => &["key.created", "key.updated", "key.revoked"],
            _ => &["key.created", "key.revoked"],
        };
        assert_eq!(actions, expected, "round {n}: update answered {st} {body}");
        assert!(matches!(st, 200 | 409), "round {n}: {st} {body}");
    }
}
both!(machine_updates_never_land_on_a_revoked_key);
