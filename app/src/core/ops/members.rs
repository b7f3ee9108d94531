//! Organization members and invitations: invite, accept, revoke, change a
//! role, remove.

use serde_json::json;

use super::{audited, Audited};
use crate::core::audit::{Actor, Change};
use crate::core::changes::Change as Notice;
use crate::core::domain::{Email, PersonName};
use crate::core::invitations::{self, Invitation, InvitationToken};
use crate::core::members::{self, MemberRow};
use crate::core::state::AppState;
use crate::core::users::{self, User};
use crate::core::{orgs, projects};
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope, ProjectRole};

/// Invites an email with a role, optionally into a project on acceptance.
pub async fn invite(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    email: &Email,
    role: OrgRole,
    project: Option<(&str, ProjectRole)>,
) -> Result<(Invitation, InvitationToken), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    if let Some(existing) = users::by_email(&mut op.tx, email).await? {
        if members::membership(&mut op.tx, &existing.id, scope.org_id())
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
    members::check_room_for(&mut op.tx, scope.org_id(), role)
        .await
        .map_err(|e| AppError::invalid("role", e.to_string()))?;
    let (inv, token) =
        invitations::create(&mut op.tx, scope, email, role, project, None, op.now).await?;
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
    op.finish(actor, change, None).await?;
    Ok((inv, token))
}

/// What a bulk invitation did: the invitations made (each with its one
/// link), and the addresses left out with the reason.
pub struct Invited {
    pub created: Vec<(Invitation, InvitationToken)>,
    pub skipped: Vec<(String, String)>,
}

/// The most addresses one bulk invitation takes.
pub const MAX_BULK: usize = 1000;

/// Invites many addresses at once, in one transaction, with a role and
/// optionally a role template (whose role then applies). Members already
/// there and addresses already invited are skipped, and said so.
pub async fn invite_many(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    emails: &[Email],
    role: OrgRole,
    template: Option<&crate::core::templates::RoleTemplate>,
) -> Result<Invited, AppError> {
    let role = template.map_or(role, |t| t.role);
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    members::check_room_for(&mut op.tx, scope.org_id(), role)
        .await
        .map_err(|e| AppError::invalid("role", e.to_string()))?;
    let mut out = Invited {
        created: Vec::with_capacity(emails.len()),
        skipped: Vec::new(),
    };
    let pending: Vec<String> = invitations::pending(&mut op.tx, scope, op.now)
        .await?
        .into_iter()
        .map(|i| i.email)
        .collect();
    for email in emails {
        if pending.iter().any(|p| p == email.as_str()) {
            out.skipped
                .push((email.as_str().to_owned(), "already invited".into()));
            continue;
        }
        if let Some(existing) = users::by_email(&mut op.tx, email).await? {
            if members::membership(&mut op.tx, &existing.id, scope.org_id())
                .await?
                .is_some()
            {
                out.skipped
                    .push((email.as_str().to_owned(), "already a member".into()));
                continue;
            }
        }
        let made = invitations::create(
            &mut op.tx,
            scope,
            email,
            role,
            None,
            template.map(|t| t.id.as_str()),
            op.now,
        )
        .await?;
        let change = audited(
            scope,
            "invitation.created",
            "invitation",
            &made.0.id,
            None,
            Some(
                json!({ "email": made.0.email, "role": role, "template": template.map(|t| &t.name), "bulk": true }),
            ),
        );
        op.record(actor, change).await?;
        out.created.push(made);
    }
    op.commit(None).await?;
    Ok(out)
}

/// Revokes a pending invitation; its link stops working.
pub async fn revoke_invitation(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    invitation_id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let inv = invitations::revoke(&mut op.tx, scope, invitation_id, op.now).await?;
    let change = audited(
        scope,
        "invitation.revoked",
        "invitation",
        &inv.id,
        Some(json!({ "email": inv.email, "role": inv.role })),
        None,
    );
    op.finish(actor, change, None).await
}

/// Who accepts an invitation: an account that proved its password, or a new
/// one with its name and password hash.
pub enum Invitee {
    Existing(User),
    New(PersonName, String),
}

/// Accepts an invitation for `email` (the invited one): creates the account
/// where needed, joins the organization (and the project, if one was named).
pub async fn accept_invitation(
    state: &AppState,
    inv: &Invitation,
    email: &Email,
    invitee: Invitee,
) -> Result<User, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, &inv.org_id).await?;
    let user = match invitee {
        Invitee::Existing(existing) => existing,
        Invitee::New(name, hash) => users::insert(&mut op.tx, email, &name, &hash, op.now)
            .await
            .map_err(|e| {
                if crate::core::db::is_unique_violation(&e) {
                    AppError::conflict(
                        "an account with this email was just created; sign in and open the link again",
                    )
                } else {
                    e.into()
                }
            })?,
    };
    invitations::mark_accepted(&mut op.tx, &inv.id, &user.id, op.now).await?;
    members::insert(&mut op.tx, &inv.org_id, &user.id, inv.role, op.now).await?;
    sqlx::query(
        "UPDATE org_members SET joined_via = 'invitation', template_id = $1 WHERE org_id = $2 AND user_id = $3",
    )
    .bind(inv.template_id.as_deref())
    .bind(&inv.org_id)
    .bind(&user.id)
    .execute(&mut *op.tx)
    .await?;
    if let Some((project_id, role)) = &inv.project {
        projects::join_invited(
            &mut op.tx,
            &inv.org_id,
            &user.id,
            inv.role,
            (project_id, *role),
            op.now,
        )
        .await?;
    }
    let change = Change {
        org_id: Some(&inv.org_id),
        action: "invitation.accepted",
        resource_type: "invitation",
        resource_id: &inv.id,
        before: None,
        after: Some(json!({ "email": user.email, "role": inv.role, "user_id": user.id })),
    };
    op.finish(&Actor::user(&user.id, &user.email), change, None)
        .await?;
    Ok(user)
}

/// Changes a member's organization role; returns them as they were.
pub async fn change_member_role(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    user_id: &str,
    role: OrgRole,
) -> Result<MemberRow, AppError> {
    let mut op = Audited::begin(state).await?;
    let before = members::set_role(&mut op.tx, scope, user_id, role).await?;
    if before.role != role {
        // Roles that may hold no keys (billing managers, viewers) leave projects too.
        if !crate::policy::may_hold_keys(role) {
            projects::forget_member(&mut op.tx, scope, user_id, op.now).await?;
        }
        let change = audited(
            scope,
            "member.role_changed",
            "user",
            &before.user_id,
            Some(json!({ "email": before.email, "role": before.role })),
            Some(json!({ "email": before.email, "role": role })),
        );
        op.record(actor, change).await?;
    }
    op.commit(Some(Notice::OrgAll(scope.org_id().to_owned())))
        .await?;
    Ok(before)
}

/// Removes a member; the keys they hold in the organization are revoked.
pub async fn remove_member(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    user_id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = members::remove(&mut op.tx, scope, user_id).await?;
    projects::forget_member(&mut op.tx, scope, user_id, op.now).await?;
    let change = audited(
        scope,
        "member.removed",
        "user",
        &before.user_id,
        Some(json!({ "email": before.email, "role": before.role })),
        None,
    );
    op.finish(
        actor,
        change,
        Some(Notice::OrgAll(scope.org_id().to_owned())),
    )
    .await
}

pub async fn save_role_template(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: Option<&str>,
    parsed: &(String, OrgRole, crate::core::limits::Caps, Option<i64>),
) -> Result<String, AppError> {
    let mut op = Audited::begin(state).await?;
    let id = crate::core::templates::save(&mut op.tx, scope.org_id(), id, parsed, op.now).await?;
    let (name, role, caps, days) = parsed;
    let change = audited(
        scope,
        "role_template.saved",
        "role_template",
        &id,
        None,
        Some(json!({
            "name": name, "role": role, "budget_micros": caps.budget.map(crate::format::Usd::micros),
            "budget_reset": caps.budget_reset, "rpm_limit": caps.rpm_limit, "tpm_limit": caps.tpm_limit,
            "expires_in_days": days,
        })),
    );
    op.finish(actor, change, None).await?;
    Ok(id)
}

pub async fn delete_role_template(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = crate::core::templates::get(&mut op.tx, scope.org_id(), id)
        .await?
        .ok_or_else(|| AppError::not_found("role template"))?;
    crate::core::templates::delete(&mut op.tx, scope.org_id(), id).await?;
    let change = audited(
        scope,
        "role_template.deleted",
        "role_template",
        id,
        Some(json!({ "name": before.name, "role": before.role })),
        None,
    );
    op.finish(actor, change, None).await
}
