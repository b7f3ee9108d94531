//! Provisioning keys: owners create (token once), list and revoke them; every
//! other role and every other organization is refused; they authenticate the
//! machine APIs of their own organization only, and never call models.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use tollgate_app::core::provisioning;

async fn owners_issue_and_revoke_provisioning_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let [member, billing] = app
        .add_members(
            &owner,
            &org,
            [("member@a.test", "member"), ("billing@a.test", "billing")],
        )
        .await;
    let (other, other_org) = app
        .outside_owner(&owner, &org, "other@b.test", "Other")
        .await;

    // Only the owner of this organization may create one.
    let form = [("org_id", org.as_str()), ("name", "ci-pipeline")];
    for (who, status) in [(&member, 403), (&billing, 403), (&other, 404)] {
        let (s, body) = app.call(who, "create_provisioning_key", &form).await;
        assert_eq!(s, status, "{body}");
    }
    app.bad_field(
        &owner,
        "create_provisioning_key",
        &[("org_id", &org), ("name", " ")],
        "name",
    )
    .await;
    let issued = app.ok(&owner, "create_provisioning_key", &form).await;
    let token = issued["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk-tgp-"), "{token}");
    let key_id = issued["key"]["id"].as_str().unwrap().to_owned();

    // Listed by hint only; others may not list.
    let list = app
        .ok(&owner, "list_provisioning_keys", &[("org_id", &org)])
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&token[7..20]), "{list}");
    assert_eq!(
        list[0]["hint"],
        format!("sk-tgp-…{}", &token[token.len() - 4..])
    );
    assert_eq!(
        app.call(&member, "list_provisioning_keys", &[("org_id", &org)])
            .await
            .0,
        403
    );
    assert_eq!(
        app.call(&other, "list_provisioning_keys", &[("org_id", &org)])
            .await
            .0,
        404
    );
    assert_eq!(
        app.ok(&other, "list_provisioning_keys", &[("org_id", &other_org)])
            .await,
        serde_json::json!([]),
        "another organization sees none of them"
    );

    // It authenticates its own organization, and never calls models.
    let mut conn = app.sql().await;
    let now = tollgate_app::core::now_ms();
    let who = provisioning::authenticate(&mut conn, &token, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who.org_id, org);
    assert_eq!(who.name, "ci-pipeline");
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "model": "mock/echo", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provisioning_key");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("provisioning keys cannot call models"));

    // Revoking: the wrong role and the wrong organization are refused.
    let revoke = [("org_id", org.as_str()), ("key_id", key_id.as_str())];
    assert_eq!(
        app.call(&member, "revoke_provisioning_key", &revoke)
            .await
            .0,
        403
    );
    assert_eq!(
        app.call(&other, "revoke_provisioning_key", &revoke).await.0,
        404
    );
    assert_eq!(
        app.call(
            &other,
            "revoke_provisioning_key",
            &[("org_id", &other_org), ("key_id", &key_id)]
        )
        .await
        .0,
        404,
        "another organization cannot reach it by id"
    );
    app.ok(&owner, "revoke_provisioning_key", &revoke).await;
    assert_eq!(
        app.call(&owner, "revoke_provisioning_key", &revoke).await.0,
        409
    );
    assert!(provisioning::authenticate(&mut conn, &token, now)
        .await
        .unwrap()
        .is_none());
    let list = app
        .ok(&owner, "list_provisioning_keys", &[("org_id", &org)])
        .await;
    assert_eq!(list[0]["status"], "revoked");

    let audit = app
        .ok(&owner, "list_audit_events", &[("org_id", &org)])
        .await
        .to_string();
    assert!(
        audit.contains("provisioning_key.created") && audit.contains("provisioning_key.revoked")
    );
    assert!(
        !audit.contains(&token[7..20]),
        "the audit log holds no token"
    );
}
both!(owners_issue_and_revoke_provisioning_keys);
