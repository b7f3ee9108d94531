//! The organization rows of the permission matrix, cell by cell, through the
//! real server functions over HTTP; and the 401 wall around every server function.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use serde_json::Value;

/// The people of the matrix, all in org A, plus an owner of org B and nobody.
struct World {
    app: TestApp,
    org_a: String,
    org_b: String,
    owner: reqwest::Client,
    member: reqwest::Client,
    billing: reqwest::Client,
    viewer: reqwest::Client,
    other_owner: reqwest::Client,
    anonymous: reqwest::Client,
    target_id: String,
    invitation_id: String,
}

async fn world(backend: Backend) -> World {
    let app = TestApp::spawn(backend).await;
    let (owner, org_a) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let [member, billing, viewer, target] = app
        .add_members(
            &owner,
            &org_a,
            [
                ("member@a.test", "member"),
                ("billing@a.test", "billing"),
                ("viewer@a.test", "viewer"),
                ("target@a.test", "member"),
            ],
        )
        .await;
    let target_id = app.user_id(&target).await;
    // The owner of org B: joins A, creates B, then leaves A.
    let (other_owner, org_b) = app
        .outside_owner(&owner, &org_a, "owner@b.test", "Beta")
        .await;
    app.invite(&owner, &org_a, "pending@a.test", "viewer").await;
    let invitation_id = app
        .ok(&owner, "list_invitations", &[("org_id", &org_a)])
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anonymous = app.client();
    World {
        app,
        org_a,
        org_b,
        owner,
        member,
        billing,
        viewer,
        other_owner,
        anonymous,
        target_id,
        invitation_id,
    }
}

/// One row: a server function with its arguments, the permission it needs,
/// and whether each role (owner, member without project, billing, viewer) may.
struct Row {
    function: &'static str,
    permission: &'static str,
    allowed: [bool; 4],
}

const ROWS: &[Row] = &[
    Row {
        function: "get_org",
        permission: "view organization",
        allowed: [true, true, true, true],
    },
    Row {
        function: "rename_org",
        permission: "edit organization",
        allowed: [true, false, false, false],
    },
    Row {
        function: "list_members",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
    Row {
        function: "list_invitations",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
    Row {
        function: "invite_member",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
    Row {
        function: "change_member_role",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
    Row {
        function: "list_audit_events",
        permission: "view audit log",
        allowed: [true, false, false, false],
    },
    // Destructive rows last: the owner's successful call removes its target.
    Row {
        function: "revoke_invitation",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
    Row {
        function: "remove_member",
        permission: "manage organization members",
        allowed: [true, false, false, false],
    },
];

fn args<'a>(w: &'a World, function: &str, org: &'a str) -> Vec<(&'static str, &'a str)> {
    match function {
        "get_org" | "list_members" | "list_invitations" | "list_audit_events" => {
            vec![("org_id", org)]
        }
        "rename_org" => vec![("org_id", org), ("name", "Renamed")],
        "invite_member" => vec![("org_id", org), ("email", "new@a.test"), ("role", "member")],
        "change_member_role" => vec![
            ("org_id", org),
            ("user_id", &w.target_id),
            ("role", "member"),
        ],
        "revoke_invitation" => vec![("org_id", org), ("invitation_id", &w.invitation_id)],
        "remove_member" => vec![("org_id", org), ("user_id", &w.target_id)],
        other => panic!("no arguments for {other}"),
    }
}

async fn org_rows_cell_by_cell(backend: Backend) {
    let w = world(backend).await;
    let roles: [(&str, &reqwest::Client); 4] = [
        ("owner", &w.owner),
        ("member", &w.member),
        ("billing", &w.billing),
        ("viewer", &w.viewer),
    ];
    for row in ROWS {
        let a = args(&w, row.function, &w.org_a);
        // Nobody signed in: 401.
        let (status, body) = w.app.call(&w.anonymous, row.function, &a).await;
        assert_eq!(
            (status, &body["code"]),
            (401, &Value::from("unauthenticated")),
            "anonymous {}",
            row.function
        );
        // The owner of another organization: 404, as if org A did not exist.
        let (status, body) = w.app.call(&w.other_owner, row.function, &a).await;
        assert_eq!(status, 404, "other org's owner on {}: {body}", row.function);
        assert_eq!(body["code"], "not_found");
        // Each role of org A; the owner last, since some rows change things.
        for (i, (role, client)) in roles.iter().enumerate().rev() {
            let (status, body) = w.app.call(client, row.function, &a).await;
            if row.allowed[i] {
                assert_eq!(
                    status, 200,
                    "{role} should be allowed {}: {body}",
                    row.function
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{role} should be denied {}: {body}",
                    row.function
                );
                assert_eq!(body["code"], "forbidden");
                assert_eq!(
                    body["permission"], row.permission,
                    "{role} {}",
                    row.function
                );
                let msg = body["message"].as_str().unwrap();
                assert!(
                    msg.contains(&format!("'{}'", row.permission))
                        && msg.contains(&format!("'{role}'")),
                    "a denial names the role and the missing permission: {msg}"
                );
            }
        }
    }
    // The owner of B is fully at home in B, and A's people are strangers there.
    w.app
        .ok(&w.other_owner, "list_members", &[("org_id", &w.org_b)])
        .await;
    let (status, _) = w
        .app
        .call(&w.owner, "list_members", &[("org_id", &w.org_b)])
        .await;
    assert_eq!(status, 404);
    // A member of A cannot learn B's name through get_org either.
    let (status, body) = w
        .app
        .call(&w.member, "get_org", &[("org_id", &w.org_b)])
        .await;
    assert_eq!(status, 404);
    assert!(!body.to_string().contains("Beta"));
}
both!(org_rows_cell_by_cell);

/// Every other org-role action in the table is denied to the roles DESIGN.md
/// denies it to; the server functions for them arrive with later issues, and
/// their endpoints will be tested through this same table.
#[test]
fn the_table_matches_design_for_org_roles() {
    use tollgate_app::policy::{allows, Action, Seat};
    let expect = [
        (Action::CreateProject, [true, false, false, false]),
        (Action::BillingAndCredits, [true, false, true, false]),
        (Action::ManageOrgMembers, [true, false, false, false]),
        (Action::ExternalKeys, [true, false, false, false]),
        (Action::VirtualModels, [true, false, false, false]),
        (Action::McpServers, [true, false, false, false]),
        (Action::PromptManagement, [true, false, false, false]),
        (Action::ManageAllKeys, [true, false, false, false]),
        (Action::ViewUsage, [true, false, true, true]),
    ];
    let seats = [
        Seat::OrgOwner,
        Seat::OrgMemberNoProject,
        Seat::BillingManager,
        Seat::Viewer,
    ];
    for (action, row) in expect {
        for (seat, want) in seats.iter().zip(row) {
            assert_eq!(allows(action, *seat), want, "{action:?} for {seat:?}");
        }
    }
}

/// Arguments good enough for any server function to get past decoding (with
/// `NO_LIMITS`), so that what answers is the function's own session check.
const ANY_ARGS: &[(&str, &str)] = &[
    ("org_id", "x"),
    ("user_id", "x"),
    ("invitation_id", "x"),
    ("role", "member"),
    ("email", "x@example.com"),
    ("name", "x"),
    ("org_name", "x"),
    ("password", "x"),
    ("current_password", "x"),
    ("new_password", "x"),
    ("token", "x"),
    ("project_id", "x"),
    ("key_id", "x"),
    ("confirm", "x"),
    ("ip_allowlist", ""),
    ("id", "x/y"),
    ("provider", "x"),
    ("upstream", "x"),
    ("input_price", "0"),
    ("output_price", "0"),
    ("context_window", "1"),
    ("spend_cap", ""),
    ("spend_cap_reset", "never"),
    ("kind", "mock"),
    ("base_url", ""),
    ("api_key", ""),
    ("request_id", "x"),
    ("amount", "1"),
    ("note", ""),
    ("reference", ""),
    ("month", "2026-11"),
    ("webhook_url", ""),
    ("slack_url", ""),
    ("thresholds", ""),
];

async fn every_server_function_needs_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anonymous = app.client();
    let mut paths: Vec<&str> = leptos::server_fn::axum::server_fn_paths()
        .map(|(p, _)| p)
        .collect();
    paths.sort_unstable();
    paths.dedup();
    assert!(
        paths.len() >= 35,
        "the server functions were not all registered: {paths:?}"
    );
    for known in [
        "/api/console/invite_member",
        "/api/console/list_audit_events",
        "/api/console/change_password",
    ] {
        assert!(paths.contains(&known), "{known} missing from {paths:?}");
    }
    let any_args = [ANY_ARGS, &crate::helpers::NO_LIMITS].concat();
    for path in &paths {
        assert!(
            path.starts_with("/api/console/"),
            "{path} is outside the console prefix"
        );
        let name = path.trim_start_matches("/api/console/");
        let (status, body) = app.call(&anonymous, name, &any_args).await;
        if tollgate_app::api::PUBLIC_SERVER_FNS.contains(path) {
            assert_ne!(status, 401, "{path} is public but answered 401");
        } else {
            assert_eq!(
                status, 401,
                "{path} answered {status} without a session: {body}"
            );
        }
    }
}
both!(every_server_function_needs_a_session);
