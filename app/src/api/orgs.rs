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

/// Any signed-in user may create an organization and becomes its owner.
#[server(prefix = "/api/console", endpoint = "create_org")]
pub async fn create_org(name: String) -> Result<OrgView, AppError> {
    use super::ssr::*;
    use crate::core::audit::{self, Actor, Change};
    use crate::core::domain::OrgName;
    use crate::core::{members, now_ms, orgs};
    answer(
        async {
            let (state, _, user) = signed_in().await?;
            let name = OrgName::parse("name", &name)?;
            let now = now_ms();
            let mut tx = state.db.pool.begin().await?;
            let org = orgs::insert(&mut tx, &name, now).await?;
            members::insert(&mut tx, &org.id, &user.id, OrgRole::Owner, now).await?;
            audit::record(
                &mut tx,
                &Actor::user(&user.id, &user.email),
                Change {
                    org_id: Some(&org.id),
                    action: "org.created",
                    resource_type: "organization",
                    resource_id: &org.id,
                    before: None,
                    after: Some(serde_json::json!({ "name": org.name })),
                },
                now,
            )
            .await?;
            tx.commit().await?;
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
            let (state, _, scope) = authorize(&org_id, Action::ViewOrganization).await?;
            let mut conn = state.db.pool.acquire().await?;
            let org = crate::core::orgs::get(&mut conn, &scope)
                .await?
                .ok_or_else(|| AppError::not_found("organization"))?;
            Ok(OrgView {
                id: org.id,
                name: org.name,
                role: scope.role(),
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "rename_org")]
pub async fn rename_org(org_id: String, name: String) -> Result<OrgView, AppError> {
    use super::ssr::*;
    use crate::core::audit::{self, Actor, Change};
    use crate::core::domain::OrgName;
    use crate::core::{now_ms, orgs};
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) = authorize(&org_id, Action::EditOrganization).await?;
            let name = OrgName::parse("name", &name)?;
            let now = now_ms();
            let mut tx = state.db.pool.begin().await?;
            orgs::lock(&mut tx, scope.org_id()).await?;
            let before = orgs::get(&mut tx, &scope)
                .await?
                .ok_or_else(|| AppError::not_found("organization"))?;
            orgs::rename(&mut tx, &scope, &name, now).await?;
            audit::record(
                &mut tx,
                &Actor::user(&user.id, &user.email),
                Change {
                    org_id: Some(scope.org_id()),
                    action: "org.renamed",
                    resource_type: "organization",
                    resource_id: scope.org_id(),
                    before: Some(serde_json::json!({ "name": before.name })),
                    after: Some(serde_json::json!({ "name": name.as_str() })),
                },
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(OrgView {
                id: before.id,
                name: name.as_str().to_owned(),
                role: scope.role(),
            })
        }
        .await,
    )
}
