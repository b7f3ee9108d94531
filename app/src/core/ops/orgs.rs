//! Organizations: create one (its creator owns it), rename it, set what
//! limits and logs its traffic.

use serde_json::json;

use super::{audited, org_notice, Audited};
use crate::core::audit::{Actor, Change};
use crate::core::changes::Change as Notice;
use crate::core::domain::OrgName;
use crate::core::members;
use crate::core::orgs::{self, Org, Spending};
use crate::core::state::AppState;
use crate::core::users::User;
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::{Action, OrgRole, OrgScope};

/// A new organization owned by `owner`, who also made it.
pub async fn create_org(state: &AppState, owner: &User, name: &OrgName) -> Result<Org, AppError> {
    let mut op = Audited::begin(state).await?;
    let org = orgs::insert(&mut op.tx, name, op.now).await?;
    members::insert(&mut op.tx, &org.id, &owner.id, OrgRole::Owner, op.now).await?;
    let change = Change {
        org_id: Some(&org.id),
        action: "org.created",
        resource_type: "organization",
        resource_id: &org.id,
        before: None,
        after: Some(json!({ "name": org.name })),
    };
    let actor = Actor::user(&owner.id, &owner.email);
    op.finish(&actor, change, Some(Notice::Org(org.id.clone())))
        .await?;
    Ok(org)
}

/// Renames the organization; returns it as it was.
pub async fn rename_org(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    name: &OrgName,
) -> Result<Org, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let before = orgs::get(&mut op.tx, scope)
        .await?
        .ok_or_else(|| AppError::not_found("organization"))?;
    orgs::rename(&mut op.tx, scope, name, op.now).await?;
    let change = audited(
        scope,
        "org.renamed",
        "organization",
        scope.org_id(),
        Some(json!({ "name": before.name })),
        Some(json!({ "name": name.as_str() })),
    );
    op.finish(actor, change, None).await?;
    Ok(before)
}

/// The spend cap and content logging. Each needs its own permission, asked
/// only when that setting changes: the cap is billing's, logging the owner's.
pub async fn update_spending(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    wanted: &Spending,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let before = orgs::spending(&mut op.tx, scope).await?;
    if before.spend_cap != wanted.spend_cap || before.spend_cap_reset != wanted.spend_cap_reset {
        scope.also(Action::BillingAndCredits)?;
    }
    if before.content_logging != wanted.content_logging {
        scope.also(Action::EditOrganization)?;
    }
    if before == *wanted {
        return Ok(());
    }
    orgs::set_spending(&mut op.tx, scope, wanted, op.now).await?;
    let json = |s: &Spending| {
        json!({
            "spend_cap_micros": s.spend_cap.map(Usd::micros), "spend_cap_reset": s.spend_cap_reset,
            "content_logging": s.content_logging,
        })
    };
    let change = audited(
        scope,
        "org.spending_changed",
        "organization",
        scope.org_id(),
        Some(json(&before)),
        Some(json(wanted)),
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}
