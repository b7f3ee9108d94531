//! One function per administrative change: its transaction, its audit event
//! and its change notice. The console's server functions and the machine APIs
//! authorize, parse, then call these, so a change reads the same from either.

use serde_json::{json, Value};

use super::audit::{self, Actor, Change};
use super::changes::Change as Notice;
use super::invitations::{self, Invitation, InvitationToken};
use super::keys::token::Token;
use super::keys::{self, Holder, KeyLimits, KeyRow};
use super::members::{self, MemberRow};
use super::projects::{self, Project, Settings};
use super::state::AppState;
use super::{catalogue, domain::Email, now_ms, orgs, users};
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::{OrgRole, OrgScope, ProjectRole, ProjectScope, TenantScope};

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
        "name": p.name, "models": p.models, "tpm_limit": p.tpm_limit, "rpm_limit": p.rpm_limit,
        "budget_micros": p.budget.map(Usd::micros), "budget_reset": p.budget_reset, "ip_allowlist": p.ip_allowlist,
        "content_logging": p.content_logging,
    })
}

pub fn limits_json(l: &KeyLimits) -> Value {
    json!({
        "name": l.name, "models": l.models, "tpm_limit": l.tpm_limit, "rpm_limit": l.rpm_limit,
        "budget_micros": l.budget.map(Usd::micros), "budget_reset": l.budget_reset, "expires_at": l.expires_at,
        "no_content_logging": l.no_content_logging, "tags": l.tags, "metadata": l.metadata,
    })
}

pub async fn create_project(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    name: &str,
) -> Result<Project, AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let p = projects::insert(&mut tx, scope, name, now).await?;
    let after = json!({ "name": p.name, "models": p.models });
    let change = audited(
        scope,
        "project.created",
        "project",
        &p.id,
        None,
        Some(after),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Project(p.id.clone())).await;
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
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let catalogue_ids = catalogue::ids(&mut tx, scope.org()).await?;
    if settings.models.iter().any(|m| !catalogue_ids.contains(m)) {
        return Err(AppError::invalid(
            "models",
            "every model must be in the organization's catalogue",
        ));
    }
    let before = projects::get(&mut tx, scope).await?;
    projects::update(&mut tx, scope, settings, now).await?;
    let after = projects::get(&mut tx, scope).await?;
    let change = audited(
        scope.org(),
        "project.updated",
        "project",
        scope.project_id(),
        Some(settings_json(&before)),
        Some(settings_json(&after)),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state
        .changes
        .publish(Notice::Project(scope.project_id().to_owned()))
        .await;
    Ok(after)
}

/// Deletes a project with its keys; returns how many keys still worked.
pub async fn delete_project(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &Project,
) -> Result<i64, AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let revoked = projects::delete(&mut tx, scope, now).await?;
    let change = audited(
        scope.org(),
        "project.deleted",
        "project",
        scope.project_id(),
        Some(settings_json(before)),
        Some(json!({ "keys_revoked": revoked })),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state
        .changes
        .publish(Notice::Project(scope.project_id().to_owned()))
        .await;
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
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let before = projects::set_member(&mut tx, scope, user_id, role, now).await?;
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
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes someone from a project; the keys they own there are revoked.
pub async fn remove_project_member(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    user_id: &str,
) -> Result<u64, AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let (role, revoked) = projects::remove_member(&mut tx, scope, user_id, now).await?;
    let change = audited(
        scope.org(),
        "project.member_removed",
        "project",
        scope.project_id(),
        Some(json!({ "user_id": user_id, "role": role })),
        Some(json!({ "keys_revoked": revoked })),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state
        .changes
        .publish(Notice::Project(scope.project_id().to_owned()))
        .await;
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
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let (row, token) = keys::create(&mut tx, scope, holder, limits, now).await?;
    let change = audited(
        scope.org(),
        "key.created",
        "api_key",
        &row.id_hash,
        None,
        Some(limits_json(limits)),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Key(row.id.clone())).await;
    Ok((row, token))
}

pub async fn update_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
    limits: &KeyLimits,
) -> Result<KeyRow, AppError> {
    if before.revoked_at.is_some() {
        return Err(AppError::conflict("a revoked key cannot be changed"));
    }
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    keys::update(&mut tx, scope, &before.id, limits, now).await?;
    let change = audited(
        scope.org(),
        "key.updated",
        "api_key",
        &before.id_hash,
        Some(limits_json(&before.limits)),
        Some(limits_json(limits)),
    );
    audit::record(&mut tx, actor, change, now).await?;
    let row = keys::get(&mut tx, scope, &before.id).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Key(row.id.clone())).await;
    Ok(row)
}

/// Revokes a key; the next request with it is refused.
pub async fn revoke_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
) -> Result<KeyRow, AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    keys::revoke(&mut tx, scope, &before.id, now).await?;
    let change = audited(
        scope.org(),
        "key.revoked",
        "api_key",
        &before.id_hash,
        Some(json!({ "name": before.limits.name, "hint": before.hint })),
        Some(json!({ "revoked_at": now })),
    );
    audit::record(&mut tx, actor, change, now).await?;
    let row = keys::get(&mut tx, scope, &before.id).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Key(row.id.clone())).await;
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
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    keys::delete(&mut tx, scope, &before.id).await?;
    let change = audited(
        scope.org(),
        "key.deleted",
        "api_key",
        &before.id_hash,
        Some(limits_json(&before.limits)),
        None,
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Key(before.id.clone())).await;
    Ok(())
}

/// A new token for the key; the old one stops at once, or after `grace_ms`.
pub async fn rotate_key(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    before: &KeyRow,
    grace_ms: i64,
) -> Result<(KeyRow, Token), AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let token = keys::rotate(&mut tx, scope, &before.id, now + grace_ms, now).await?;
    let change = audited(
        scope.org(),
        "key.rotated",
        "api_key",
        &before.id_hash,
        Some(json!({ "hint": before.hint })),
        Some(json!({ "hint": token.hint(), "grace_minutes": grace_ms / 60_000 })),
    );
    audit::record(&mut tx, actor, change, now).await?;
    let row = keys::get(&mut tx, scope, &before.id).await?;
    tx.commit().await?;
    state.changes.publish(Notice::Key(row.id.clone())).await;
    Ok((row, token))
}

/// Invites an email with a role, optionally into a project on acceptance.
pub async fn invite(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    email: &Email,
    role: OrgRole,
    project: Option<(&str, ProjectRole)>,
) -> Result<(Invitation, InvitationToken), AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    orgs::lock(&mut tx, scope.org_id()).await?;
    if let Some(existing) = users::by_email(&mut tx, email).await? {
        if members::membership(&mut tx, &existing.id, scope.org_id())
            .await?
            .is_some()
        {
            return Err(AppError::invalid(
                "email",
                "is already a member of this organization",
            ));
        }
    }
    // Said now rather than at acceptance, where it is checked again.
    members::check_room_for(&mut tx, scope.org_id(), role)
        .await
        .map_err(|e| AppError::invalid("role", e.to_string()))?;
    let (inv, token) = invitations::create(&mut tx, scope, email, role, project, now).await?;
    let after = json!({
        "email": inv.email, "role": role,
        "project_id": project.map(|p| p.0), "project_role": project.map(|p| p.1),
    });
    let change = audited(
        scope,
        "invitation.created",
        "invitation",
        &inv.id,
        None,
        Some(after),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    Ok((inv, token))
}

/// Changes a member's organization role; returns them as they were.
pub async fn change_member_role(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    user_id: &str,
    role: OrgRole,
) -> Result<MemberRow, AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let before = members::set_role(&mut tx, scope, user_id, role).await?;
    if before.role != role {
        let change = audited(
            scope,
            "member.role_changed",
            "user",
            &before.user_id,
            Some(json!({ "email": before.email, "role": before.role })),
            Some(json!({ "email": before.email, "role": role })),
        );
        audit::record(&mut tx, actor, change, now).await?;
    }
    tx.commit().await?;
    state
        .changes
        .publish(Notice::OrgAll(scope.org_id().to_owned()))
        .await;
    Ok(before)
}

/// New alerting settings for the organization.
pub async fn set_alerting(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    alerting: &orgs::Alerting,
) -> Result<(), AppError> {
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let before = orgs::alerting(&mut tx, scope).await?;
    orgs::set_alerting(&mut tx, scope, alerting, now).await?;
    // Webhook URLs carry their token: the audit log keeps where, not the URL.
    let as_json = |a: &orgs::Alerting| {
        json!({
            "webhook": a.webhook_url.as_deref().map(orgs::url_hint),
            "slack": a.slack_url.as_deref().map(orgs::url_hint),
            "alert_types": a.alert_types, "thresholds": a.thresholds,
        })
    };
    let change = audited(
        scope,
        "org.alerting_updated",
        "organization",
        scope.org_id(),
        Some(as_json(&before)),
        Some(as_json(alerting)),
    );
    audit::record(&mut tx, actor, change, now).await?;
    tx.commit().await?;
    Ok(())
}
