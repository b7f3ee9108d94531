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
}

#[cfg(feature = "ssr")]
fn view_of(p: crate::core::providers::Provider) -> ProviderView {
    ProviderView {
        name: p.name,
        kind: p.kind.as_str().to_owned(),
        base_url: p.base_url,
        key_hint: p.key_hint,
        latency_ms: p.latency_ms,
    }
}

#[server(prefix = "/api/console", endpoint = "list_providers")]
pub async fn list_providers(org_id: String) -> Result<Vec<ProviderView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    answer(
        async {
            let (state, _, scope) = authorize(&org_id, Action::ExternalKeys).await?;
            let mut conn = state.db.pool.acquire().await?;
            let list = crate::core::providers::list(&mut conn, &scope).await?;
            Ok(list.into_iter().map(view_of).collect())
        }
        .await,
    )
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
) -> Result<ProviderView, AppError> {
    use super::ssr::*;
    use crate::core::audit::{self, Actor, Change};
    use crate::core::providers::{self, NewProvider};
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) = authorize(&org_id, Action::ExternalKeys).await?;
            let p = NewProvider::parse(
                &name,
                &kind,
                &base_url,
                &api_key,
                latency_ms.as_deref().unwrap_or(""),
            )?;
            p.check_network(state.allow_private_networks).await?;
            let now = crate::core::now_ms();
            let mut tx = state.db.pool.begin().await?;
            let before = providers::upsert(&mut tx, &scope, &state.secret, &p, now).await?;
            let json = |kind: &str, url: &str, hint: Option<&str>, latency: i64| {
                serde_json::json!({ "kind": kind, "base_url": url, "key_hint": hint, "latency_ms": latency })
            };
            let after = providers::list(&mut tx, &scope)
                .await?
                .into_iter()
                .find(|x| x.name == p.name)
                .ok_or_else(|| AppError::not_found("provider"))?;
            audit::record(
                &mut tx,
                &Actor::user(&user.id, &user.email),
                Change {
                    org_id: Some(scope.org_id()),
                    action: "provider.upserted",
                    resource_type: "provider",
                    resource_id: &p.name,
                    before: before.as_ref().map(|b| {
                        json(b.kind.as_str(), &b.base_url, b.key_hint.as_deref(), b.latency_ms)
                    }),
                    after: Some(json(
                        after.kind.as_str(),
                        &after.base_url,
                        after.key_hint.as_deref(),
                        after.latency_ms,
                    )),
                },
                now,
            )
            .await?;
            tx.commit().await?;
            state
                .changes
                .publish(crate::core::changes::Change::Org(org_id.clone()))
                .await;
            Ok(view_of(after))
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "delete_provider")]
pub async fn delete_provider(org_id: String, name: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::audit::{self, Actor, Change};
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) = authorize(&org_id, Action::ExternalKeys).await?;
            let now = crate::core::now_ms();
            let mut tx = state.db.pool.begin().await?;
            if !crate::core::providers::delete(&mut tx, &scope, &name).await? {
                return Err(AppError::not_found("provider"));
            }
            audit::record(
                &mut tx,
                &Actor::user(&user.id, &user.email),
                Change {
                    org_id: Some(scope.org_id()),
                    action: "provider.deleted",
                    resource_type: "provider",
                    resource_id: &name,
                    before: None,
                    after: None,
                },
                now,
            )
            .await?;
            tx.commit().await?;
            state
                .changes
                .publish(crate::core::changes::Change::Org(org_id.clone()))
                .await;
            Ok(())
        }
        .await,
    )
}
