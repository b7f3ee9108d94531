//! Upstream providers (BYOK): owners add them with an API key that is sealed
//! at rest and never shown again, only its last four characters.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    /// `…abcd`, or `None` when no key is stored.
    pub key_hint: Option<String>,
    pub latency_ms: i64,
    /// Where it processes data; empty where unstated.
    pub region: String,
}

#[cfg(feature = "ssr")]
fn view_of(p: crate::core::providers::Provider) -> ProviderView {
    ProviderView {
        name: p.name,
        kind: p.kind.as_str().to_owned(),
        base_url: p.base_url,
        key_hint: p.key_hint,
        latency_ms: p.latency_ms,
        region: p.region,
    }
}

#[server(prefix = "/api/console", endpoint = "list_providers")]
pub async fn list_providers(org_id: String) -> Result<Vec<ProviderView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ExternalKeys, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let list = crate::core::providers::list(&mut conn, &c.scope).await?;
        Ok(list.into_iter().map(view_of).collect())
    })
    .await
}

/// Adds a provider or changes the one of that name; a blank `api_key` keeps
/// the stored key.
#[server(prefix = "/api/console", endpoint = "upsert_provider")]
pub async fn upsert_provider(
    org_id: String,
    name: String,
    kind: String,
    base_url: String,
    api_key: String,
    latency_ms: Option<String>,
    region: Option<String>,
) -> Result<ProviderView, AppError> {
    use super::ssr::*;
    use crate::core::providers::NewProvider;
    use crate::policy::Action;
    in_org(&org_id, Action::ExternalKeys, |c| async move {
        let p = NewProvider::parse(
            &name,
            &kind,
            &base_url,
            &api_key,
            latency_ms.as_deref().unwrap_or(""),
            region.as_deref().unwrap_or(""),
        )?;
        p.check_network(c.state.allow_private_networks).await?;
        let after = crate::core::ops::upsert_provider(&c.state, &c.actor, &c.scope, &p).await?;
        Ok(view_of(after))
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "delete_provider")]
pub async fn delete_provider(org_id: String, name: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::ops::{delete_entry, Entry};
    use crate::policy::Action;
    in_org(&org_id, Action::ExternalKeys, |c| async move {
        delete_entry(&c.state, &c.actor, &c.scope, Entry::Provider, &name).await
    })
    .await
}
