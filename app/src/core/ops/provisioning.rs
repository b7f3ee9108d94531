//! Provisioning keys, and the operator's changes from the CLI (the first
//! owner, a password reset), which have no console session behind them.

use serde_json::json;
use sqlx::AnyPool;

use super::{audited, Audited};
use crate::core::audit::{Actor, Change};
use crate::core::auth::{self, SetupDone};
use crate::core::domain::{Email, OrgName, PersonName};
use crate::core::keys::token::Token;
use crate::core::orgs;
use crate::core::provisioning::{self, ProvisioningKey};
use crate::core::state::AppState;
use crate::core::users::{self, User};
use crate::error::AppError;
use crate::policy::OrgScope;

/// A new provisioning key of `org_id` (the console's scope, or the operator's
/// choice on the CLI); the token is the only copy of its secret.
pub async fn create_provisioning_key(
    pool: &AnyPool,
    actor: &Actor,
    org_id: &str,
    name: &str,
    created_by: Option<&str>,
) -> Result<(ProvisioningKey, Token), AppError> {
    let mut op = Audited::offline(pool).await?;
    let (key, token) = provisioning::create(&mut op.tx, org_id, name, created_by, op.now).await?;
    let change = Change {
        org_id: Some(org_id),
        action: "provisioning_key.created",
        resource_type: "provisioning_key",
        resource_id: &key.id,
        before: None,
        after: Some(json!({ "name": key.name, "hint": key.hint })),
    };
    op.finish(actor, change, None).await?;
    Ok((key, token))
}

/// Revokes a provisioning key at once.
pub async fn revoke_provisioning_key(
    pool: &AnyPool,
    actor: &Actor,
    scope: &OrgScope,
    key_id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::offline(pool).await?;
    let before = provisioning::revoke(&mut op.tx, scope, key_id, op.now).await?;
    let change = audited(
        scope,
        "provisioning_key.revoked",
        "provisioning_key",
        &before.id,
        Some(json!({ "name": before.name, "hint": before.hint })),
        Some(json!({ "revoked_at": op.now })),
    );
    op.finish(actor, change, None).await
}

/// The CLI's `create-owner`: a user owning a new organization. The instance
/// counts as set up once an owner exists.
pub async fn create_owner(
    pool: &AnyPool,
    email: &Email,
    name: &PersonName,
    password_hash: &str,
    org_name: &OrgName,
) -> Result<SetupDone, AppError> {
    let mut op = Audited::offline(pool).await?;
    auth::claim_instance(&mut op.tx, op.now).await?;
    let done = auth::create_owner(
        &mut op.tx,
        email,
        name,
        password_hash,
        org_name,
        Some(Actor::cli()),
        op.now,
    )
    .await?;
    op.commit(None).await?;
    Ok(done)
}

/// Resets the password of the account with `email` (the CLI's recovery);
/// `None` if there is no such account.
pub async fn reset_password(
    pool: &AnyPool,
    actor: &Actor,
    email: &Email,
    password_hash: &str,
) -> Result<Option<User>, AppError> {
    let mut op = Audited::offline(pool).await?;
    let Some(user) = users::by_email(&mut op.tx, email).await? else {
        return Ok(None);
    };
    let action = "user.password_reset";
    set_password(op, actor, &user.id, password_hash, action).await?;
    Ok(Some(user))
}

/// A signed-in user's own new password; returns when it was set (the
/// stamp that keeps their current session valid).
pub async fn change_password(
    state: &AppState,
    actor: &Actor,
    user_id: &str,
    password_hash: &str,
) -> Result<i64, AppError> {
    let op = Audited::begin(state).await?;
    let now = op.now;
    let action = "user.password_changed";
    set_password(op, actor, user_id, password_hash, action).await?;
    Ok(now)
}

/// Stores a new password hash for `user_id` and records `action` once in
/// each of the user's organizations, so that their owners see it (once
/// without an organization if they have none).
async fn set_password(
    mut op: Audited<'_>,
    actor: &Actor,
    user_id: &str,
    password_hash: &str,
    action: &'static str,
) -> Result<(), AppError> {
    users::set_password(&mut op.tx, user_id, password_hash, op.now).await?;
    let orgs = orgs::of_user(&mut op.tx, user_id).await?;
    let org_ids: Vec<Option<&str>> = if orgs.is_empty() {
        vec![None]
    } else {
        orgs.iter().map(|o| Some(o.id.as_str())).collect()
    };
    for org_id in org_ids {
        let change = Change {
            org_id,
            action,
            resource_type: "user",
            resource_id: user_id,
            before: None,
            after: None,
        };
        op.record(actor, change).await?;
    }
    op.commit(None).await
}
