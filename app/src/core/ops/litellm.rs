//! Changes only LiteLLM's admin API makes: named budgets, members it
//! provisions under ids it chose, and the extras it keeps on teams, keys,
//! models and credentials. Each is audited and announced like the rest.

use serde_json::{json, Value};

use super::{audited, org_notice, Audited};
use crate::core::audit::Actor;
use crate::core::changes::Change as Notice;
use crate::core::domain::{Email, PersonName};
use crate::core::litellm::{self, ApiUser, Budget};
use crate::core::state::AppState;
use crate::core::{members, orgs, users};
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope};

fn budget_json(b: &Budget) -> Value {
    json!({
        "max_budget_micros": b.max_budget.map(crate::format::Usd::micros), "tpm_limit": b.tpm_limit,
        "rpm_limit": b.rpm_limit, "reset": b.reset.as_str(), "duration": b.duration,
    })
}

/// Creates (`create`) or changes a named budget; every team and key that
/// points at it takes its limits in the same transaction.
pub async fn save_budget(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    b: &Budget,
    create: bool,
) -> Result<Budget, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let before = litellm::budget(&mut op.tx, scope.org_id(), &b.id).await?;
    match (&before, create) {
        (Some(_), true) => {
            return Err(AppError::invalid(
                "budget_id",
                format!(
                    "a budget '{}' already exists; change it with /budget/update",
                    b.id
                ),
            ))
        }
        (None, false) => return Err(AppError::not_found(&format!("budget '{}'", b.id))),
        _ => {}
    }
    let saved = Budget {
        created_at: before.as_ref().map_or(op.now, |x| x.created_at),
        updated_at: op.now,
        ..b.clone()
    };
    litellm::put_budget(&mut op.tx, scope.org_id(), &saved).await?;
    let change = audited(
        scope,
        if create {
            "budget.created"
        } else {
            "budget.updated"
        },
        "budget",
        &b.id,
        before.as_ref().map(budget_json),
        Some(budget_json(&saved)),
    );
    op.finish(
        actor,
        change,
        Some(Notice::OrgAll(scope.org_id().to_owned())),
    )
    .await?;
    Ok(saved)
}

pub async fn delete_budget(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    if !litellm::delete_budget(&mut op.tx, scope.org_id(), id).await? {
        return Err(AppError::not_found(&format!("budget '{id}'")));
    }
    let change = audited(scope, "budget.deleted", "budget", id, None, None);
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// A member LiteLLM's `/user/new` asks for.
pub struct NewApiUser<'a> {
    pub email: &'a Email,
    pub name: &'a PersonName,
    pub role: OrgRole,
    pub external_id: Option<&'a str>,
    pub alias: Option<&'a str>,
    pub api_role: &'a str,
}

/// What `/user/new` did.
pub enum Provisioned {
    /// A new account, a member at once (it signs in through the
    /// organization's SSO, or after an operator sets a password).
    Created(ApiUser),
    /// Someone already a member: now also known by the caller's id.
    Linked(ApiUser),
    /// An account that exists elsewhere (or an address of another
    /// organization's SSO domain): it is never joined or made without its
    /// owner's consent, so the caller invites it instead.
    Elsewhere,
}

/// Provisions a member under the id the caller chose.
pub async fn provision_user(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    u: &NewApiUser<'_>,
) -> Result<Provisioned, AppError> {
    let org_id = scope.org_id();
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org_id).await?;
    if let Some(id) = u.external_id {
        if let Some(taken) = litellm::user(&mut op.tx, org_id, id).await? {
            if taken.email != u.email.as_str() {
                return Err(AppError::invalid(
                    "user_id",
                    format!("'{id}' already names another member of this organization"),
                ));
            }
        }
    }
    let (account, created) = match users::by_email(&mut op.tx, u.email).await? {
        Some(existing) => {
            if members::membership(&mut op.tx, &existing.id, org_id)
                .await?
                .is_none()
            {
                return Ok(Provisioned::Elsewhere);
            }
            (existing, false)
        }
        None => {
            // An address another organization signs in through its SSO is
            // never taken here (its people could not sign in there after).
            let theirs: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sso_domains WHERE domain = $1 AND org_id <> $2",
            )
            .bind(u.email.as_str().rsplit_once('@').map_or("", |(_, d)| d))
            .bind(org_id)
            .fetch_one(&mut *op.tx)
            .await?;
            if theirs > 0 {
                return Ok(Provisioned::Elsewhere);
            }
            let account = users::insert(&mut op.tx, u.email, u.name, "", op.now).await?;
            members::insert(&mut op.tx, org_id, &account.id, u.role, op.now).await?;
            sqlx::query(
                "UPDATE org_members SET joined_via = 'api' WHERE org_id = $1 AND user_id = $2",
            )
            .bind(org_id)
            .bind(&account.id)
            .execute(&mut *op.tx)
            .await?;
            (account, true)
        }
    };
    litellm::set_user_extras(
        &mut op.tx,
        org_id,
        &account.id,
        u.external_id,
        u.alias,
        Some(u.api_role),
    )
    .await
    .map_err(|e| {
        if crate::core::db::is_unique_violation(&e) {
            AppError::invalid(
                "user_id",
                "already names another member of this organization",
            )
        } else {
            e.into()
        }
    })?;
    let shown = litellm::user(&mut op.tx, org_id, &account.id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    let change = audited(
        scope,
        if created {
            "member.provisioned"
        } else {
            "member.linked"
        },
        "user",
        &account.id,
        None,
        Some(json!({
            "email": shown.email, "role": shown.role, "user_id": shown.external_id, "alias": shown.alias,
        })),
    );
    op.finish(actor, change, Some(Notice::OrgAll(org_id.to_owned())))
        .await?;
    Ok(if created {
        Provisioned::Created(shown)
    } else {
        Provisioned::Linked(shown)
    })
}

/// Changes a member's alias and LiteLLM role name (the organization role
/// itself changes through `change_member_role`).
pub async fn set_user_extras(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    user: &ApiUser,
    alias: Option<&str>,
    api_role: Option<&str>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    litellm::set_user_extras(
        &mut op.tx,
        scope.org_id(),
        &user.user_id,
        None,
        alias,
        api_role,
    )
    .await?;
    let change = audited(
        scope,
        "member.updated",
        "user",
        &user.user_id,
        Some(json!({ "alias": user.alias, "api_role": user.api_role })),
        Some(
            json!({ "alias": alias.or(user.alias.as_deref()), "api_role": api_role.or(user.api_role.as_deref()) }),
        ),
    );
    op.finish(actor, change, None).await
}

/// What LiteLLM keeps on a team: its id, duration as written, budget.
pub async fn set_project_extras(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    project_id: &str,
    external_id: Option<&str>,
    duration: Option<&str>,
    budget_id: Option<&str>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    litellm::set_project_extras(
        &mut op.tx,
        scope.org_id(),
        project_id,
        external_id,
        duration,
        budget_id,
    )
    .await
    .map_err(|e| {
        if crate::core::db::is_unique_violation(&e) {
            AppError::invalid("team_id", "already names another team of this organization")
        } else {
            e.into()
        }
    })?;
    let change = audited(
        scope,
        "project.extras_set",
        "project",
        project_id,
        None,
        Some(
            json!({ "team_id": external_id, "budget_duration": duration, "budget_id": budget_id }),
        ),
    );
    op.finish(actor, change, None).await
}

/// What LiteLLM keeps on a key: its duration as written and its budget.
pub async fn set_key_extras(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    key_id: &str,
    duration: Option<&str>,
    budget_id: Option<&str>,
    models_follow: bool,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    litellm::set_key_extras(
        &mut op.tx,
        scope.org_id(),
        key_id,
        duration,
        budget_id,
        models_follow,
    )
    .await?;
    let change = audited(
        scope,
        "key.extras_set",
        "key",
        key_id,
        None,
        Some(
            json!({ "budget_duration": duration, "budget_id": budget_id, "models_follow": models_follow }),
        ),
    );
    op.finish(actor, change, None).await
}

/// Records an organization owner as an admin of a team, as LiteLLM's
/// `members_with_roles` names them: owners administer every project
/// already, so this changes no access; it lets the team's member list (and
/// a reconciler reading it) show them.
pub async fn record_team_owner(
    state: &AppState,
    actor: &Actor,
    scope: &crate::policy::ProjectScope,
    user_id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let role = members::membership(&mut op.tx, user_id, scope.org_id())
        .await?
        .map(|m| m.role);
    if !role.is_some_and(crate::policy::sees_all_projects) {
        return Err(AppError::invalid(
            "user_id",
            "is not an owner of this organization",
        ));
    }
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id, role, created_at) SELECT id, $1, 'admin', $2 \
         FROM projects WHERE id = $3 AND org_id = $4 ON CONFLICT (project_id, user_id) DO UPDATE SET role = 'admin'",
    )
    .bind(user_id)
    .bind(op.now)
    .bind(scope.project_id())
    .bind(scope.org_id())
    .execute(&mut *op.tx)
    .await?;
    let change = audited(
        scope.org(),
        "project.owner_recorded",
        "project",
        scope.project_id(),
        None,
        Some(json!({ "user_id": user_id, "role": "admin" })),
    );
    op.finish(actor, change, None).await
}

/// LiteLLM's `/key/block` (`blocked`) and `/key/unblock`: a blocked key is
/// revoked, and only a blocked one comes back.
pub async fn set_key_blocked(
    state: &AppState,
    actor: &Actor,
    scope: &crate::policy::ProjectScope,
    key: &crate::core::keys::KeyRow,
    blocked: bool,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let sql = if blocked {
        "UPDATE api_keys SET revoked_at = $1, blocked = 1 WHERE id = $2 AND project_id = $3 AND org_id = $4 AND revoked_at IS NULL"
    } else {
        "UPDATE api_keys SET revoked_at = NULL, blocked = 0 WHERE id = $2 AND project_id = $3 AND org_id = $4 AND blocked = 1 AND $1 > 0"
    };
    let done = sqlx::query(sql)
        .bind(op.now)
        .bind(&key.id)
        .bind(scope.project_id())
        .bind(scope.org_id())
        .execute(&mut *op.tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::conflict(if blocked {
            "the key is already revoked or blocked"
        } else {
            "the key is not blocked (a revoked key stays revoked)"
        }));
    }
    let change = audited(
        scope.org(),
        if blocked {
            "key.blocked"
        } else {
            "key.unblocked"
        },
        "api_key",
        &key.id_hash,
        Some(json!({ "name": key.limits.name, "hint": key.hint })),
        Some(json!({ "blocked": blocked })),
    );
    op.finish(actor, change, Some(Notice::Key(key.id.clone())))
        .await
}

/// LiteLLM's `/team/block` and `/team/unblock`: every key of a blocked
/// project is refused until it is unblocked.
pub async fn set_project_blocked(
    state: &AppState,
    actor: &Actor,
    scope: &crate::policy::ProjectScope,
    blocked: bool,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    sqlx::query(
        "UPDATE projects SET blocked_at = $1, updated_at = $2 WHERE id = $3 AND org_id = $4",
    )
    .bind(blocked.then_some(op.now))
    .bind(op.now)
    .bind(scope.project_id())
    .bind(scope.org_id())
    .execute(&mut *op.tx)
    .await?;
    let change = audited(
        scope.org(),
        if blocked {
            "project.blocked"
        } else {
            "project.unblocked"
        },
        "project",
        scope.project_id(),
        None,
        Some(json!({ "blocked": blocked })),
    );
    op.finish(
        actor,
        change,
        Some(Notice::Project(scope.project_id().to_owned())),
    )
    .await
}
