//! One function per administrative change: its transaction, its audit event
//! and its change notice. The console's server functions, the machine APIs and
//! the CLI authorize, parse, then call these, so a change reads the same from each.

use serde_json::{json, Value};
use sqlx::{Any, AnyPool, Transaction};

use super::audit::{self, Actor, Change};
use super::changes::{Change as Notice, Changes};
use super::keys::token::Token;
use super::keys::{self, Holder, KeyLimits, KeyRow};
use super::now_ms;
use super::projects::{self, Project, Settings};
use super::state::AppState;
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::{OrgScope, ProjectRole, ProjectScope, TenantScope};

mod billing;
mod catalogue;
pub mod litellm;
mod mcp;
mod members;
mod orgs;
mod prompts;
mod provisioning;
pub mod scim;
pub mod sso;

pub use billing::*;
pub use catalogue::*;
pub use mcp::*;
pub use members::*;
pub use orgs::*;
pub use prompts::*;
pub use provisioning::*;

/// A change in flight: its transaction and clock. The "before" is read through
/// `tx`; `finish` records the event, commits, then publishes the notice.
pub struct Audited<'s> {
    pub tx: Transaction<'static, Any>,
    pub now: i64,
    changes: Option<&'s Changes>,
}

impl<'s> Audited<'s> {
    pub async fn begin(state: &'s AppState) -> Result<Audited<'s>, AppError> {
        Ok(Audited {
            tx: state.db.pool.begin().await?,
            now: now_ms(),
            changes: Some(&state.changes),
        })
    }

    /// For the CLI, which has no listeners: its changes reach a running
    /// server through the database.
    pub async fn offline(pool: &AnyPool) -> Result<Audited<'static>, AppError> {
        Ok(Audited {
            tx: pool.begin().await?,
            now: now_ms(),
            changes: None,
        })
    }

    pub async fn record(&mut self, actor: &Actor, change: Change<'_>) -> Result<(), AppError> {
        audit::record(&mut self.tx, actor, change, self.now).await?;
        Ok(())
    }

    pub async fn commit(mut self, notice: Option<Notice>) -> Result<(), AppError> {
        if let Some(n) = &notice {
            super::changes::append(&mut self.tx, n, self.now).await?;
        }
        self.tx.commit().await?;
        if let (Some(changes), Some(notice)) = (self.changes, notice) {
            changes.publish(notice).await;
        }
        Ok(())
    }

    pub async fn finish(
        mut self,
        actor: &Actor,
        change: Change<'_>,
        notice: Option<Notice>,
    ) -> Result<(), AppError> {
        self.record(actor, change).await?;
        self.commit(notice).await
    }
}

fn org_notice(scope: &TenantScope) -> Notice {
    Notice::Org(scope.org_id().to_owned())
}

fn project_notice(scope: &ProjectScope) -> Notice {
    Notice::Project(scope.project_id().to_owned())
}

fn audited<'a>(
    scope: &'a TenantScope,
    action: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    before: Option<Value>,
    after: Option<Value>,
) -> Change<'a> {
    Change {
        org_id: Some(scope.org_id()),
        action,
        resource_type,
        resource_id,
        before,
        after,
    }
}

pub fn settings_json(p: &Project) -> Value {
    json!({
        "name": p.name, "models": p.caps.models, "tpm_limit": p.caps.tpm_limit, "rpm_limit": p.caps.rpm_limit,
        "budget_micros": p.caps.budget.map(Usd::micros), "budget_reset": p.caps.budget_reset, "ip_allowlist": p.ip_allowlist,
        "content_logging": p.content_logging,
    })
}

pub fn limits_json(l: &KeyLimits) -> Value {
    json!({
        "name": l.name, "models": l.caps.models, "tpm_limit": l.caps.tpm_limit, "rpm_limit": l.caps.rpm_limit,
        "budget_micros": l.caps.budget.map(Usd::micros), "budget_reset": l.caps.budget_reset, "expires_at": l.expires_at,
        "no_content_logging": l.no_content_logging, "tags": l.tags, "metadata": l.metadata,
    })
}

pub async fn create_project(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    name: &str,
) -> Result<Project, AppError> {
    let mut op = Audited::begin(state).await?;
    let p = projects::insert(&mut op.tx, scope, name, op.now).await?;
    let after = json!({ "name": p.name, "models": p.caps.models });
    let change = audited(
        scope,
        "project.created",
        "project",
        &p.id,
        None,
        Some(after),
    );
    op.finish(actor, change, Some(Notice::Project(p.id.clone())))
        .await?;
    Ok(p)
}

/// New settings for a project; its models must be in the catalogue. Lower
/// caps bind the keys above them at once (the proxy takes the lower).
pub async fn update_project(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    settings: &Settings,
) -> Result<Project, AppError> {
    let mut op = Audited::begin(state).await?;
    let catalogue_ids = super::catalogue::ids(&mut op.tx, scope.org()).await?;
    if settings
        .caps
        .models
        .iter()
        .any(|m| !catalogue_ids.contains(m))
    {
        return Err(AppError::invalid(
            "models",
            "every model must be in the organization's catalogue",
        ));
    }
    let before = projects::get(&mut op.tx, scope).await?;
    projects::update(&mut op.tx, scope, settings, op.now).await?;
    let after = projects::get(&mut op.tx, scope).await?;
    let change = audited(
        scope.org(),
        "project.updated",
        "project",
        scope.project_id(),
        Some(settings_json(&before)),
        Some(settings_json(&after)),
    );
    op.finish(actor, change, Some(project_notice(scope)))
        .await?;
    Ok(after)
}

/// Deletes a project with its keys; returns how many keys still worked.
pub async fn delete_project(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &Project,
) -> Result<i64, AppError> {
    let mut op = Audited::begin(state).await?;
    let revoked = projects::delete(&mut op.tx, scope, op.now).await?;
    let change = audited(
        scope.org(),
        "project.deleted",
        "project",
        scope.project_id(),
        Some(settings_json(before)),
        Some(json!({ "keys_revoked": revoked })),
    );
    op.finish(actor, change, Some(project_notice(scope)))
        .await?;
    Ok(revoked)
}

/// Adds someone to a project (`adding`) or changes their role there.
pub async fn set_project_member(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    user_id: &str,
    role: ProjectRole,
    adding: bool,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let org_role = crate::core::members::membership(&mut op.tx, user_id, scope.org_id()).await?;
    let org_role = org_role.map(|m| m.role);
    let before = projects::set_member(&mut op.tx, scope, user_id, org_role, role, op.now).await?;
    match (adding, before) {
        (true, Some(_)) => {
            return Err(AppError::conflict(
                "already a member of this project; change their role instead",
            ))
        }
        (false, None) => return Err(AppError::not_found("project member")),
        _ => {}
    }
    let action = if adding {
        "project.member_added"
    } else {
        "project.member_role_changed"
    };
    let change = audited(
        scope.org(),
        action,
        "project",
        scope.project_id(),
        before.map(|r| json!({ "user_id": user_id, "role": r })),
        Some(json!({ "user_id": user_id, "role": role })),
    );
    op.finish(actor, change, None).await
}

/// Removes someone from a project; the keys they own there are revoked.
pub async fn remove_project_member(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    user_id: &str,
) -> Result<u64, AppError> {
    let mut op = Audited::begin(state).await?;
    let (role, revoked) = projects::remove_member(&mut op.tx, scope, user_id, op.now).await?;
    let change = audited(
        scope.org(),
        "project.member_removed",
        "project",
        scope.project_id(),
        Some(json!({ "user_id": user_id, "role": role })),
        Some(json!({ "keys_revoked": revoked })),
    );
    op.finish(actor, change, Some(project_notice(scope)))
        .await?;
    Ok(revoked)
}

/// Stores a new key; the token is the only copy of its secret.
pub async fn create_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    holder: Holder<'_>,
    limits: &KeyLimits,
) -> Result<(KeyRow, Token), AppError> {
    create_key_with(state, actor, scope, holder, limits, Token::mint()).await
}

/// [`create_key`] with a token the caller brings (an imported key, checked
/// by `Token::imported`); a token already in use is refused.
pub async fn create_key_with(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    holder: Holder<'_>,
    limits: &KeyLimits,
    token: Token,
) -> Result<(KeyRow, Token), AppError> {
    let mut op = Audited::begin(state).await?;
    let (row, token) = keys::create_with(&mut op.tx, scope, holder, limits, op.now, token).await?;
    let change = audited(
        scope.org(),
        "key.created",
        "api_key",
        &row.id_hash,
        None,
        Some(limits_json(limits)),
    );
    op.finish(actor, change, Some(Notice::Key(row.id.clone())))
        .await?;
    Ok((row, token))
}

/// The key as it is inside `op`'s transaction, refusing a revoked one: a
/// revoke that committed after the caller read the key still counts.
async fn live_key(
    op: &mut Audited<'_>,
    scope: &ProjectScope,
    id: &str,
) -> Result<KeyRow, AppError> {
    let key = keys::get(&mut op.tx, scope, id).await?;
    if key.revoked_at.is_some() {
        return Err(AppError::conflict("a revoked key cannot be changed"));
    }
    Ok(key)
}

/// New limits for a key. `key` names it; the "before" is read again inside the
/// transaction, and the write is refused once the key is revoked.
pub async fn update_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    key: &KeyRow,
    limits: &KeyLimits,
) -> Result<KeyRow, AppError> {
    let mut op = Audited::begin(state).await?;
    // The write lock before the read: SQLite cannot upgrade a read to a write
    // once another writer committed (it answers "database is locked").
    super::orgs::lock(&mut op.tx, scope.org_id()).await?;
    let before = live_key(&mut op, scope, &key.id).await?;
    keys::update(&mut op.tx, scope, &before.id, limits, op.now).await?;
    let row = keys::get(&mut op.tx, scope, &before.id).await?;
    let change = audited(
        scope.org(),
        "key.updated",
        "api_key",
        &before.id_hash,
        Some(limits_json(&before.limits)),
        Some(limits_json(limits)),
    );
    op.finish(actor, change, Some(Notice::Key(row.id.clone())))
        .await?;
    Ok(row)
}

/// Revokes a key; the next request with it is refused.
pub async fn revoke_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
) -> Result<KeyRow, AppError> {
    let mut op = Audited::begin(state).await?;
    keys::revoke(&mut op.tx, scope, &before.id, op.now).await?;
    let change = audited(
        scope.org(),
        "key.revoked",
        "api_key",
        &before.id_hash,
        Some(json!({ "name": before.limits.name, "hint": before.hint })),
        Some(json!({ "revoked_at": op.now })),
    );
    let row = keys::get(&mut op.tx, scope, &before.id).await?;
    op.finish(actor, change, Some(Notice::Key(row.id.clone())))
        .await?;
    Ok(row)
}

/// Deletes a key outright: it stops working at once and leaves the lists;
/// its usage stays in the ledger under its id.
pub async fn delete_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    keys::delete(&mut op.tx, scope, &before.id).await?;
    let change = audited(
        scope.org(),
        "key.deleted",
        "api_key",
        &before.id_hash,
        Some(limits_json(&before.limits)),
        None,
    );
    op.finish(actor, change, Some(Notice::Key(before.id.clone())))
        .await
}

/// A new token for the key; the old one stops at once, or after `grace_ms`.
pub async fn rotate_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
    grace_ms: i64,
) -> Result<(KeyRow, Token), AppError> {
    let mut op = Audited::begin(state).await?;
    let until = op.now.saturating_add(grace_ms);
    let token = keys::rotate(&mut op.tx, scope, &before.id, until, op.now).await?;
    let change = audited(
        scope.org(),
        "key.rotated",
        "api_key",
        &before.id_hash,
        Some(json!({ "hint": before.hint })),
        Some(json!({ "hint": token.hint(), "grace_minutes": grace_ms / 60_000 })),
    );
    let row = keys::get(&mut op.tx, scope, &before.id).await?;
    op.finish(actor, change, Some(Notice::Key(row.id.clone())))
        .await?;
    Ok((row, token))
}
