//! Organization members and invitations.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::OrgRole;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: OrgRole,
    pub joined_at: i64,
    /// password, invitation, oidc, saml or scim.
    pub joined_via: String,
    pub scim_managed: bool,
    pub template: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub role: OrgRole,
    /// Dollars, or empty.
    pub max_budget: String,
    pub budget_reset: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub expires_in_days: Option<i64>,
}

/// What a bulk invitation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkInvited {
    pub created: Vec<InvitationCreated>,
    /// (email, why it was left out)
    pub skipped: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub role: OrgRole,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The answer to an invitation: the link carries the token, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationCreated {
    pub invitation: InvitationView,
    pub link: String,
}

/// What an invitation link shows before it is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationDetails {
    pub org_name: String,
    pub email: String,
    pub role: OrgRole,
    pub expires_at: i64,
}

#[cfg(feature = "ssr")]
fn view_of(i: crate::core::invitations::Invitation) -> InvitationView {
    InvitationView {
        id: i.id,
        email: i.email,
        role: i.role,
        created_at: i.created_at,
        expires_at: i.expires_at,
    }
}

#[cfg(feature = "ssr")]
fn member_view(m: crate::core::members::MemberRow) -> MemberView {
    MemberView {
        user_id: m.user_id,
        email: m.email,
        name: m.name,
        role: m.role,
        joined_at: m.joined_at,
        joined_via: m.joined_via,
        scim_managed: m.scim_managed,
        template: m.template,
    }
}

#[cfg(feature = "ssr")]
fn template_view(t: crate::core::templates::RoleTemplate) -> TemplateView {
    TemplateView {
        id: t.id,
        name: t.name,
        role: t.role,
        max_budget: t.budget.map(|b| b.to_string()).unwrap_or_default(),
        budget_reset: t.budget_reset.as_str().to_owned(),
        rpm: t.rpm_limit,
        tpm: t.tpm_limit,
        expires_in_days: t.expires_in_days,
    }
}

#[cfg(feature = "ssr")]
fn parse_role(raw: &str) -> Result<OrgRole, AppError> {
    raw.parse()
        .map_err(|e: String| AppError::invalid("role", e))
}

#[server(prefix = "/api/console", endpoint = "list_members")]
pub async fn list_members(org_id: String) -> Result<Vec<MemberView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let rows = crate::core::members::list(&mut conn, &c.scope).await?;
        Ok(rows.into_iter().map(member_view).collect())
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "list_invitations")]
pub async fn list_invitations(org_id: String) -> Result<Vec<InvitationView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let rows =
            crate::core::invitations::pending(&mut conn, &c.scope, crate::core::now_ms()).await?;
        Ok(rows.into_iter().map(view_of).collect())
    })
    .await
}

/// Invites an email with a role; the answer holds the one link that accepts it.
#[server(prefix = "/api/console", endpoint = "invite_member")]
pub async fn invite_member(
    org_id: String,
    email: String,
    role: String,
) -> Result<InvitationCreated, AppError> {
    use super::ssr::*;
    use crate::core::domain::Email;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let email = Email::parse("email", &email)?;
        let role = parse_role(&role)?;
        let (inv, token) =
            crate::core::ops::invite(&c.state, &c.actor, &c.scope, &email, role, None).await?;
        Ok(InvitationCreated {
            link: format!("{}/invite/{}", c.state.public_url, token.expose()),
            invitation: view_of(inv),
        })
    })
    .await
}

/// Invites many people at once: addresses separated by new lines, commas or
/// spaces (a pasted list or an uploaded file's text), one role or a role
/// template. Every address is checked first: one that is not an email
/// refuses the whole list, naming it and its line.
#[server(prefix = "/api/console", endpoint = "invite_members")]
pub async fn invite_members(
    org_id: String,
    emails: String,
    role: String,
    template_id: String,
) -> Result<BulkInvited, AppError> {
    use super::ssr::*;
    use crate::core::domain::Email;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let max = crate::core::ops::MAX_BULK;
        let mut list: Vec<Email> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (n, line) in emails.lines().enumerate() {
            for raw in line
                .split([',', ';', ' ', '\t'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let email = Email::parse("emails", raw).map_err(|_| {
                    AppError::invalid(
                        "emails",
                        format!("line {}: '{raw}' is not an email address", n + 1),
                    )
                })?;
                if seen.insert(email.as_str().to_owned()) {
                    list.push(email);
                }
                if list.len() > max {
                    return Err(AppError::invalid(
                        "emails",
                        format!("at most {max} addresses at once"),
                    ));
                }
            }
        }
        if list.is_empty() {
            return Err(AppError::invalid(
                "emails",
                "give at least one email address",
            ));
        }
        let template = match Some(template_id.trim()).filter(|s| !s.is_empty()) {
            Some(id) => {
                let mut conn = c.state.db.pool.acquire().await?;
                Some(
                    crate::core::templates::get(&mut conn, c.scope.org_id(), id)
                        .await?
                        .ok_or_else(|| {
                            AppError::invalid(
                                "template_id",
                                "no such role template in this organization",
                            )
                        })?,
                )
            }
            None => None,
        };
        let role = match &template {
            Some(t) => t.role,
            None => parse_role(&role)?,
        };
        let done = crate::core::ops::invite_many(
            &c.state,
            &c.actor,
            &c.scope,
            &list,
            role,
            template.as_ref(),
        )
        .await?;
        Ok(BulkInvited {
            created: done
                .created
                .into_iter()
                .map(|(inv, token)| InvitationCreated {
                    link: format!("{}/invite/{}", c.state.public_url, token.expose()),
                    invitation: view_of(inv),
                })
                .collect(),
            skipped: done.skipped,
        })
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "list_role_templates")]
pub async fn list_role_templates(org_id: String) -> Result<Vec<TemplateView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let list = crate::core::templates::list(&mut conn, c.scope.org_id()).await?;
        Ok(list.into_iter().map(template_view).collect())
    })
    .await
}

/// Saves a role template (new when `template_id` is empty): a role and the
/// most a member's keys get (budget and reset, RPM, TPM, days to expiry).
#[server(prefix = "/api/console", endpoint = "save_role_template")]
pub async fn save_role_template(
    org_id: String,
    template_id: String,
    name: String,
    role: String,
    max_budget: String,
    budget_reset: String,
    #[server(flatten)] limits: TemplateLimits,
) -> Result<TemplateView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let parsed = crate::core::templates::parse(
            &name,
            &role,
            &max_budget,
            &budget_reset,
            &limits.rpm,
            &limits.tpm,
            &limits.expires_in_days,
        )?;
        let editing = Some(template_id.trim()).filter(|s| !s.is_empty());
        let id =
            crate::core::ops::save_role_template(&c.state, &c.actor, &c.scope, editing, &parsed)
                .await?;
        let mut conn = c.state.db.pool.acquire().await?;
        let t = crate::core::templates::get(&mut conn, c.scope.org_id(), &id)
            .await?
            .ok_or_else(|| AppError::not_found("role template"))?;
        Ok(template_view(t))
    })
    .await
}

/// A template's per-key numbers, as the form names them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TemplateLimits {
    pub rpm: String,
    pub tpm: String,
    pub expires_in_days: String,
}

#[server(prefix = "/api/console", endpoint = "delete_role_template")]
pub async fn delete_role_template(org_id: String, template_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        crate::core::ops::delete_role_template(&c.state, &c.actor, &c.scope, &template_id).await
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "revoke_invitation")]
pub async fn revoke_invitation(org_id: String, invitation_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        crate::core::ops::revoke_invitation(&c.state, &c.actor, &c.scope, &invitation_id).await
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "change_member_role")]
pub async fn change_member_role(
    org_id: String,
    user_id: String,
    role: String,
) -> Result<MemberView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        let role = parse_role(&role)?;
        let before =
            crate::core::ops::change_member_role(&c.state, &c.actor, &c.scope, &user_id, role)
                .await?;
        Ok(MemberView {
            role,
            ..member_view(before)
        })
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "remove_member")]
pub async fn remove_member(org_id: String, user_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageOrgMembers, |c| async move {
        crate::core::ops::remove_member(&c.state, &c.actor, &c.scope, &user_id).await
    })
    .await
}

/// What an invitation link opens; public, since the invitee has no session yet.
#[server(prefix = "/api/console", endpoint = "invitation_info")]
pub async fn invitation_info(token: String) -> Result<InvitationDetails, AppError> {
    use super::ssr::*;
    use crate::core::{invitations, now_ms};
    answer(
        async {
            let state = state()?;
            let mut conn = state.db.pool.acquire().await?;
            let inv = invitations::by_token(&mut conn, &token, now_ms())
                .await?
                .ok_or_else(|| {
                    AppError::not_found(
                        "invitation (it may have expired, been revoked or been used)",
                    )
                })?;
            let org_name = crate::core::orgs::name_for_invitation(&mut conn, &inv).await?;
            // Whether the email has an account is not said: the inviter holds
            // this link too. Accepting works either way.
            Ok(InvitationDetails {
                org_name,
                email: inv.email,
                role: inv.role,
                expires_at: inv.expires_at,
            })
        }
        .await,
    )
}

/// Accepts an invitation: joins the invited account (its password proves it is
/// theirs) or creates it, then signs in.
#[server(prefix = "/api/console", endpoint = "accept_invitation")]
pub async fn accept_invitation(
    token: String,
    name: String,
    password: String,
) -> Result<super::auth::SignedIn, AppError> {
    use super::ssr::*;
    use crate::core::domain::{Email, Password, PersonName};
    use crate::core::ops::Invitee;
    use crate::core::{auth, invitations, now_ms};
    answer(
        async {
            let state = state()?;
            let now = now_ms();
            let inv = {
                let mut conn = state.db.pool.acquire().await?;
                invitations::by_token(&mut conn, &token, now).await?
            }
            .ok_or_else(|| {
                AppError::not_found("invitation (it may have expired, been revoked or been used)")
            })?;
            let email = Email::parse("email", &inv.email)?;
            let creds = password_attempt(&state, &email).await?;
            // Either prove the existing account, or hash the new one's password.
            let invitee = match creds {
                Some(c) => {
                    if !auth::verify_password(Password::for_check(password), Some(c.password_hash))
                        .await?
                    {
                        return Err(AppError::invalid(
                            "password",
                            "wrong password for this account",
                        ));
                    }
                    Invitee::Existing(c.user)
                }
                None => {
                    let name = PersonName::parse("name", &name)?;
                    let password = Password::parse("password", password)?;
                    Invitee::New(name, auth::hash_password(password).await?)
                }
            };
            let user = crate::core::ops::accept_invitation(&state, &inv, &email, invitee).await?;
            start_session(&session().await?, &user).await?;
            Ok(super::auth::SignedIn {
                org_id: Some(inv.org_id),
            })
        }
        .await,
    )
}
