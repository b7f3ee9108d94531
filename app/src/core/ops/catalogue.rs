//! The organization's model catalogue and its upstream providers (BYOK).

use serde_json::{json, Value};

use super::{audited, org_notice, Audited};
use crate::core::audit::Actor;
use crate::core::catalogue::{self, Model};
use crate::core::providers::{self, NewProvider, Provider};
use crate::core::state::AppState;
use crate::core::virtual_models::{self, VirtualModel};
use crate::error::AppError;
use crate::policy::OrgScope;

/// Adds a model to the catalogue or changes the one with its id.
pub async fn upsert_model(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    m: &Model,
) -> Result<(), AppError> {
    upsert_model_with(state, actor, scope, m, None).await
}

/// [`upsert_model`] with what LiteLLM's API keeps on the model: its
/// `model_info.id` (unique in the organization) and its echoed fields.
pub async fn upsert_model_with(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    m: &Model,
    extras: Option<(Option<&str>, &Value)>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    // The organization locked: a virtual model of this name being saved at
    // the same moment waits for this transaction, and then sees this model.
    crate::core::orgs::lock(&mut op.tx, scope.org_id()).await?;
    if virtual_models::list(&mut op.tx, scope)
        .await?
        .iter()
        .any(|v| v.id == m.id)
    {
        return Err(AppError::invalid(
            "id",
            format!("'{}' is a virtual model's name", m.id),
        ));
    }
    let before = catalogue::upsert(&mut op.tx, scope, m, op.now).await?;
    if let Some((external_id, litellm)) = extras {
        crate::core::litellm::set_model_extras(
            &mut op.tx,
            scope.org_id(),
            &m.id,
            external_id,
            litellm,
        )
        .await
        .map_err(|e| {
            if crate::core::db::is_unique_violation(&e) {
                AppError::invalid(
                    "model_info.id",
                    "already names another model of this organization",
                )
            } else {
                e.into()
            }
        })?;
    }
    let (before, after) = (before.as_ref().map(model_json), Some(model_json(m)));
    let change = audited(scope, "model.upserted", "model", &m.id, before, after);
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// What an owner removes from the organization's catalogue.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// A model, by its id.
    Model,
    /// A virtual model, by its id.
    VirtualModel,
    /// A provider, by its name.
    Provider,
}

/// Removes a model or a provider: 404 naming it when nothing was there, else
/// the event (no before or after) and the organization's notice.
pub async fn delete_entry(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    entry: Entry,
    id: &str,
) -> Result<(), AppError> {
    let (sql, what, action) = match entry {
        Entry::Model => (catalogue::DELETE, "model", "model.deleted"),
        Entry::VirtualModel => (
            virtual_models::DELETE,
            "virtual_model",
            "virtual_model.deleted",
        ),
        Entry::Provider => (providers::DELETE, "provider", "provider.deleted"),
    };
    let mut op = Audited::begin(state).await?;
    if !crate::core::db::delete_in_org(&mut op.tx, sql, scope, id).await? {
        return Err(AppError::not_found(what));
    }
    let change = audited(scope, action, what, id, None, None);
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// Adds a virtual model or changes the one with its id (checked against
/// the catalogue by `VirtualModel::parse`).
pub async fn upsert_virtual_model(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    v: &VirtualModel,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    // Again inside the transaction, the organization locked (as
    // `upsert_model` does): a catalogue model of this name would shadow the
    // virtual model (and its region) in the proxy.
    crate::core::orgs::lock(&mut op.tx, scope.org_id()).await?;
    if catalogue::model_ids(&mut op.tx, scope)
        .await?
        .contains(&v.id)
    {
        return Err(AppError::invalid(
            "id",
            format!(
                "'{}' is a model of the catalogue; a virtual model needs its own name",
                v.id
            ),
        ));
    }
    let before = virtual_models::upsert(&mut op.tx, scope, v, op.now).await?;
    let (before, after) = (before.as_ref().map(virtual_json), Some(virtual_json(v)));
    let change = audited(
        scope,
        "virtual_model.upserted",
        "virtual_model",
        &v.id,
        before,
        after,
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// Adds a provider or changes the one of that name (a blank key keeps the
/// stored one); returns it as stored. The audit event keeps its key's hint only.
pub async fn upsert_provider(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    p: &NewProvider,
) -> Result<Provider, AppError> {
    upsert_provider_with(state, actor, scope, p, None).await
}

/// [`upsert_provider`] keeping LiteLLM's `credential_info` as written.
pub async fn upsert_provider_with(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    p: &NewProvider,
    credential_info: Option<&Value>,
) -> Result<Provider, AppError> {
    let mut op = Audited::begin(state).await?;
    let before = providers::upsert(&mut op.tx, scope, &state.secret, p, op.now).await?;
    if let Some(info) = credential_info {
        crate::core::litellm::set_credential_info(&mut op.tx, scope.org_id(), &p.name, info)
            .await?;
    }
    let after = providers::list(&mut op.tx, scope)
        .await?
        .into_iter()
        .find(|x| x.name == p.name)
        .ok_or_else(|| AppError::not_found("provider"))?;
    let logged = (
        before.as_ref().map(provider_json),
        Some(provider_json(&after)),
    );
    let change = audited(
        scope,
        "provider.upserted",
        "provider",
        &p.name,
        logged.0,
        logged.1,
    );
    op.finish(actor, change, Some(org_notice(scope))).await?;
    Ok(after)
}

fn model_json(m: &Model) -> Value {
    json!({
        "provider": m.provider, "upstream": m.upstream, "input_price": m.input_price.micros(),
        "output_price": m.output_price.micros(), "context_window": m.context_window,
        "fallbacks": m.fallbacks,
    })
}

fn virtual_json(v: &VirtualModel) -> Value {
    json!({
        "description": v.description, "strategy": v.strategy.as_str(), "region": v.region,
        "targets": v.targets,
    })
}

fn provider_json(p: &Provider) -> Value {
    json!({
        "kind": p.kind.as_str(), "base_url": p.base_url, "key_hint": p.key_hint,
        "latency_ms": p.latency_ms, "region": p.region,
    })
}
