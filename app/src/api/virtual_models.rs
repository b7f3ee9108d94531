//! Virtual models: stable names an organization routes over its catalogue.
//! Every member reads them (projects and keys pick from them, with the
//! catalogue); owners change them.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualModelView {
    pub id: String,
    pub description: String,
    pub strategy: String,
    /// Empty: any region.
    pub region: String,
    /// One target a line: `model [@provider] [weight]`.
    pub targets: String,
}

/// How one place a model is served from has been answering on the
/// instance that answered this call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceHealthView {
    pub provider: String,
    pub upstream: String,
    pub failures: u32,
    /// Until when (Unix ms) it is out of its routes (circuit open).
    pub cooling_until: Option<i64>,
    pub latency_ms: Option<u64>,
    pub answered: u64,
}

#[cfg(feature = "ssr")]
fn view_of(v: crate::core::virtual_models::VirtualModel) -> VirtualModelView {
    VirtualModelView {
        targets: v.targets_text(),
        id: v.id,
        description: v.description,
        strategy: v.strategy.as_str().to_owned(),
        region: v.region,
    }
}

#[server(prefix = "/api/console", endpoint = "list_virtual_models")]
pub async fn list_virtual_models(org_id: String) -> Result<Vec<VirtualModelView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let list = crate::core::virtual_models::list(&mut conn, &c.scope).await?;
        Ok(list.into_iter().map(view_of).collect())
    })
    .await
}

/// Adds a virtual model or changes one (by id).
#[server(prefix = "/api/console", endpoint = "save_virtual_model")]
pub async fn save_virtual_model(
    org_id: String,
    id: String,
    description: Option<String>,
    strategy: String,
    region: Option<String>,
    targets: String,
) -> Result<VirtualModelView, AppError> {
    use super::ssr::*;
    use crate::core::virtual_models::VirtualModel;
    use crate::policy::Action;
    in_org(&org_id, Action::VirtualModels, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let catalogue = crate::core::catalogue::model_ids(&mut conn, &c.scope).await?;
        drop(conn);
        let v = VirtualModel::parse(
            &id,
            description.as_deref().unwrap_or(""),
            &strategy,
            region.as_deref().unwrap_or(""),
            &targets,
            &catalogue,
        )?;
        crate::core::ops::upsert_virtual_model(&c.state, &c.actor, &c.scope, &v).await?;
        Ok(view_of(v))
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "delete_virtual_model")]
pub async fn delete_virtual_model(org_id: String, id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::ops::{delete_entry, Entry};
    use crate::policy::Action;
    in_org(&org_id, Action::VirtualModels, |c| async move {
        delete_entry(&c.state, &c.actor, &c.scope, Entry::VirtualModel, &id).await
    })
    .await
}

/// The health of the organization's places on this instance: failures in
/// a row, whether one is cooling down, recent latency.
#[server(prefix = "/api/console", endpoint = "route_health")]
pub async fn route_health(org_id: String) -> Result<Vec<PlaceHealthView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let now = crate::core::now_ms();
        Ok(c.state
            .route_health
            .of_org(c.scope.org_id(), now)
            .into_iter()
            .map(|((provider, upstream), h)| PlaceHealthView {
                provider,
                upstream,
                failures: h.failures,
                cooling_until: h.open_until,
                latency_ms: h.latency_ms,
                answered: h.answered,
            })
            .collect())
    })
    .await
}
