//! Organizations: create, view, rename.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::OrgRole;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    /// The caller's role, from which the console decides what to show.
    pub role: OrgRole,
}

/// A signed-in user creates an organization and becomes its owner (unless
/// the operator keeps that to operators: `org_creation`).
#[server(prefix = "/api/console", endpoint = "create_org")]
pub async fn create_org(name: String) -> Result<OrgView, AppError> {
    use super::ssr::*;
    use crate::core::domain::OrgName;
    answer(
        async {
            let (state, _, user) = signed_in().await?;
            state.org_creation.check()?;
            let name = OrgName::parse("name", &name)?;
            let org = crate::core::ops::create_org(&state, &user, &name).await?;
            Ok(OrgView {
                id: org.id,
                name: org.name,
                role: OrgRole::Owner,
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "get_org")]
pub async fn get_org(org_id: String) -> Result<OrgView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    answer(
        async {
            let (state, _, member) = member_of(&org_id).await?;
            let scope = crate::policy::authorize_org(&member, Action::ViewOrganization)?;
            let mut conn = state.db.pool.acquire().await?;
            let org = crate::core::orgs::get(&mut conn, &scope)
                .await?
                .ok_or_else(|| AppError::not_found("organization"))?;
            Ok(OrgView {
                id: org.id,
                name: org.name,
                role: member.role,
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "rename_org")]
pub async fn rename_org(org_id: String, name: String) -> Result<OrgView, AppError> {
    use super::ssr::*;
    use crate::core::domain::OrgName;
    use crate::policy::Action;
    answer(
        async {
            let (state, user, member) = member_of(&org_id).await?;
            let scope = crate::policy::authorize_org(&member, Action::EditOrganization)?;
            let name = OrgName::parse("name", &name)?;
            let actor = crate::core::audit::Actor::user(&user.id, &user.email);
            let before = crate::core::ops::rename_org(&state, &actor, &scope, &name).await?;
            Ok(OrgView {
                id: before.id,
                name: name.as_str().to_owned(),
                role: member.role,
            })
        }
        .await,
    )
}

/// What limits and logs the organization's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendingView {
    /// The spend cap: only for seats that set it or read the organization's
    /// usage (a member without those sees whether bodies are kept, not it).
    #[serde(flatten)]
    pub cap: Option<SpendCapView>,
    pub content_logging: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendCapView {
    pub spend_cap_micros: Option<i64>,
    pub spend_cap_reset: String,
}

#[cfg(feature = "ssr")]
fn spending_view(s: crate::core::orgs::Spending, scope: &crate::policy::OrgScope) -> SpendingView {
    use crate::policy::Action;
    let sees_cap = [
        Action::EditOrganization,
        Action::BillingAndCredits,
        Action::ViewUsage,
    ]
    .into_iter()
    .any(|a| scope.also(a).is_ok());
    SpendingView {
        cap: sees_cap.then(|| SpendCapView {
            spend_cap_micros: s.spend_cap.map(crate::format::Usd::micros),
            spend_cap_reset: s.spend_cap_reset.as_str().to_owned(),
        }),
        content_logging: s.content_logging,
    }
}

#[server(prefix = "/api/console", endpoint = "get_spending")]
pub async fn get_spending(org_id: String) -> Result<SpendingView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        Ok(spending_view(
            crate::core::orgs::spending(&mut conn, &c.scope).await?,
            &c.scope,
        ))
    })
    .await
}

/// Both settings go through here; each needs its own permission, and only a
/// setting that changes is checked: the spend cap is billing's, content
/// logging the owner's.
#[server(prefix = "/api/console", endpoint = "update_spending")]
pub async fn update_spending(
    org_id: String,
    spend_cap: String,
    spend_cap_reset: String,
    content_logging: Option<String>,
) -> Result<SpendingView, AppError> {
    use super::ssr::*;
    use crate::core::limits::ResetInterval;
    use crate::core::orgs::Spending;
    use crate::format::Usd;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let wanted = Spending {
            spend_cap: Usd::parse_optional("spend_cap", &spend_cap)?,
            spend_cap_reset: ResetInterval::parse("spend_cap_reset", &spend_cap_reset)?,
            content_logging: super::checkbox("content_logging", content_logging.as_deref())?,
        };
        crate::core::ops::update_spending(&c.state, &c.actor, &c.scope, &wanted).await?;
        Ok(spending_view(wanted, &c.scope))
    })
    .await
}
