//! Single sign-on settings: connections saved and deleted, SSO enforced,
//! and sign-ins through an IdP (just-in-time accounts, the mapped role
//! applied at every sign-in).

use serde_json::json;

use super::{audited, Audited};
use crate::core::audit::{Actor, Change};
use crate::core::changes::Change as Notice;
use crate::core::domain::{Email, PersonName};
use crate::core::identity::{self, Connection, Saved, Synced};
use crate::core::state::AppState;
use crate::core::users::{self, User};
use crate::core::{members, orgs, scim};
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope};

pub async fn save_connection(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: Option<&str>,
    saved: &Saved<'_>,
) -> Result<String, AppError> {
    let mut op = Audited::begin(state).await?;
    let before = match id {
        Some(id) => Some(
            identity::get(&mut op.tx, scope.org_id(), id)
                .await?
                .ok_or_else(|| AppError::not_found("connection"))?,
        ),
        None => None,
    };
    if let Some(b) = &before {
        if b.kind != saved.kind {
            return Err(AppError::invalid(
                "connection_id",
                format!("is a {} connection", b.kind.as_str().to_uppercase()),
            ));
        }
    }
    let id = identity::save(&mut op.tx, scope.org_id(), id, saved, op.now).await?;
    let (enforced, _) = identity::enforcement(&mut op.tx, scope.org_id()).await?;
    if enforced
        && identity::list(&mut op.tx, scope.org_id())
            .await?
            .iter()
            .all(|c| !c.enabled)
    {
        return Err(AppError::invalid(
            "enabled",
            "single sign-on is enforced: keep one connection enabled, or stop enforcing it first",
        ));
    }
    let after = json!({
        "kind": saved.kind, "name": saved.name, "issuer": saved.issuer, "client_id": saved.client_id,
        "client_secret_changed": saved.client_secret.is_some(), "idp_entity_id": saved.idp_entity_id,
        "domains": saved.domains, "default_role": saved.mapping.default_role, "groups_claim": saved.groups_claim,
        "mapping": saved.mapping.rules, "enabled": saved.enabled, "allow_idp_initiated": saved.allow_idp_initiated,
    });
    let change = audited(
        scope,
        if before.is_some() {
            "sso.connection_updated"
        } else {
            "sso.connection_created"
        },
        "sso_connection",
        &id,
        before.map(|b| json!({ "name": b.name, "domains": b.domains, "mapping": b.mapping.rules, "enabled": b.enabled })),
        Some(after),
    );
    op.finish(actor, change, None).await?;
    Ok(id)
}

pub async fn delete_connection(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = identity::get(&mut op.tx, scope.org_id(), id)
        .await?
        .ok_or_else(|| AppError::not_found("connection"))?;
    identity::delete(&mut op.tx, scope.org_id(), id).await?;
    let (enforced, _) = identity::enforcement(&mut op.tx, scope.org_id()).await?;
    if enforced
        && identity::list(&mut op.tx, scope.org_id())
            .await?
            .iter()
            .all(|c| !c.enabled)
    {
        return Err(AppError::conflict(
            "single sign-on is enforced and this is the last enabled connection; stop enforcing it first",
        ));
    }
    let change = audited(
        scope,
        "sso.connection_deleted",
        "sso_connection",
        id,
        Some(json!({ "name": before.name, "kind": before.kind, "domains": before.domains })),
        None,
    );
    op.finish(actor, change, None).await
}

/// Turns enforced SSO on or off; on, it names the owner who keeps their password.
pub async fn set_enforcement(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    enforced: bool,
    break_glass: Option<&str>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = identity::enforcement(&mut op.tx, scope.org_id()).await?;
    if enforced {
        let who = break_glass.ok_or_else(|| {
            AppError::invalid(
                "break_glass_user_id",
                "name the owner who may still sign in with a password when SSO is down",
            )
        })?;
        let member = members::membership(&mut op.tx, who, scope.org_id()).await?;
        if member.map(|m| m.role) != Some(OrgRole::Owner) {
            return Err(AppError::invalid(
                "break_glass_user_id",
                "must be an owner of this organization",
            ));
        }
        if !identity::list(&mut op.tx, scope.org_id())
            .await?
            .iter()
            .any(|c| c.enabled)
        {
            return Err(AppError::invalid(
                "enforced",
                "add and enable a connection before enforcing single sign-on",
            ));
        }
    }
    let break_glass = if enforced { break_glass } else { None };
    identity::set_enforcement(&mut op.tx, scope.org_id(), enforced, break_glass).await?;
    let change = audited(
        scope,
        "sso.enforcement_changed",
        "organization",
        scope.org_id(),
        Some(json!({ "enforced": before.0, "break_glass_user_id": before.1 })),
        Some(json!({ "enforced": enforced, "break_glass_user_id": break_glass })),
    );
    op.finish(actor, change, None).await
}

/// What an IdP said about the person signing in.
pub struct Asserted {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
    /// `None`: the IdP sent no groups claim (the role is then left as it is
    /// for an existing member).
    pub groups: Option<Vec<String>>,
}

/// Signs in through a connection: finds the account by (issuer, subject),
/// else links the account with that email when the IdP verified it and the
/// account belongs to no other organization, else creates it (just in
/// time); then applies the mapping. A user SCIM deactivated is refused.
pub async fn sign_in(
    state: &AppState,
    c: &Connection,
    a: &Asserted,
) -> Result<(User, Synced), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, &c.org_id).await?;
    let email = Email::parse("email", &a.email).map_err(|_| {
        AppError::invalid(
            "email",
            "the identity provider sent no usable email address",
        )
    })?;
    let known = identity::user_of_identity(&mut op.tx, c, &a.issuer, &a.subject).await?;
    let (user, created, linked) = match known {
        Some(id) => (
            users::by_id(&mut op.tx, &id)
                .await?
                .ok_or_else(|| AppError::not_found("account"))?,
            false,
            false,
        ),
        None => {
            // A first sign-in: only for an email domain this organization's
            // connections cover (an IdP cannot mint accounts for others').
            if !identity::covers(&mut op.tx, &c.org_id, email.as_str()).await? {
                return Err(AppError::invalid(
                    "email",
                    "the identity provider's email is not in a domain this organization's single sign-on covers",
                ));
            }
            match users::by_email(&mut op.tx, &email).await? {
                Some(existing) => {
                    // Linked when this organization's SCIM client made or
                    // manages the account, or the IdP verified the email;
                    // never an account bound to another organization.
                    if identity::belongs_elsewhere(&mut op.tx, &existing.id, &c.org_id).await? {
                        return Err(AppError::invalid(
                            "email",
                            "an account with this email belongs to another organization; sign in with its password",
                        ));
                    }
                    let provisioned = scim::user_for_account(&mut op.tx, &c.org_id, &existing.id)
                        .await?
                        .is_some();
                    if !a.email_verified && !provisioned {
                        return Err(AppError::invalid(
                            "email",
                            "an account with this email exists, and the identity provider did not say the email is verified; it cannot be linked",
                        ));
                    }
                    (existing, false, true)
                }
                None => {
                    let name = a
                        .name
                        .as_deref()
                        .and_then(|n| PersonName::parse("name", n).ok())
                        .map_or_else(|| PersonName::parse("name", email.as_str()), Ok)?;
                    (
                        users::insert(&mut op.tx, &email, &name, "", op.now).await?,
                        true,
                        false,
                    )
                }
            }
        }
    };
    if let Some(s) = scim::user_for_account(&mut op.tx, &c.org_id, &user.id).await? {
        if !s.active {
            return Err(AppError::Forbidden {
                permission: "sign in".into(),
                message:
                    "your access to this organization was deactivated by its identity provider"
                        .into(),
            });
        }
    }
    identity::link_identity(&mut op.tx, c, &a.issuer, &a.subject, &user.id, op.now).await?;
    let member = members::membership(&mut op.tx, &user.id, &c.org_id).await?;
    let synced = match (&a.groups, member) {
        // An existing member and no groups claim: their role stays.
        (None, Some(m)) => Synced {
            role_before: Some(m.role),
            role: Some(m.role),
            ..Synced::default()
        },
        (groups, _) => {
            let groups = groups.clone().unwrap_or_default();
            let granted = c.mapping.resolve(&groups);
            identity::sync_member(
                &mut op.tx,
                &c.org_id,
                &user.id,
                &c.mapping,
                &granted,
                c.kind.as_str(),
                op.now,
            )
            .await?
        }
    };
    let actor = Actor::user(&user.id, &user.email);
    let change = Change {
        org_id: Some(&c.org_id),
        action: "sso.signed_in",
        resource_type: "user",
        resource_id: &user.id,
        before: synced.role_before.map(|r| json!({ "role": r })),
        after: Some(json!({
            "connection": c.name, "kind": c.kind, "issuer": a.issuer, "created": created, "linked": linked,
            "role": synced.role, "projects_joined": synced.projects_joined, "projects_left": synced.projects_left,
            "keys_revoked": synced.keys_revoked, "kept_role": synced.kept_role,
        })),
    };
    let notice = (synced.keys_revoked > 0 || synced.role_before != synced.role)
        .then(|| Notice::OrgAll(c.org_id.clone()));
    op.finish(&actor, change, notice).await?;
    Ok((user, synced))
}
