//! The organization's model catalogue and its upstream providers (BYOK).

use serde_json::{json, Value};

use super::{audited, org_notice, Audited};
use crate::core::audit::Actor;
use crate::core::catalogue::{self, Model};
use crate::core::providers::{self, NewProvider, Provider};
use crate::core::state::AppState;
use crate::error::AppError;
use crate::policy::OrgScope;

/// Adds a model to the catalogue or changes the one with its id.
pub async fn upsert_model(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    m: &Model,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = catalogue::upsert(&mut op.tx, scope, m, op.now).await?;
    let json = |m: &Model| {
        json!({
            "provider": m.provider, "upstream": m.upstream, "input_price": m.input_price.micros(),
            "output_price": m.output_price.micros(), "context_window": m.context_window,
            "fallbacks": m.fallbacks,
        })
    };
    let change = audited(
        scope,
        "model.upserted",
        "model",
        &m.id,
        before.as_ref().map(json),
        Some(json(m)),
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// Removes a model from the catalogue.
pub async fn delete_model(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let found = catalogue::delete(&mut op.tx, scope, id).await?;
    finish_delete(op, actor, scope, found, ("model", "model.deleted"), id).await
}

/// The end of a delete: 404 naming `what` when nothing was there, else the
/// event (no before or after) and the organization's notice.
async fn finish_delete(
    op: Audited<'_>,
    actor: &Actor,
    scope: &OrgScope,
    found: bool,
    (what, action): (&str, &str),
    id: &str,
) -> Result<(), AppError> {
    if !found {
        return Err(AppError::not_found(what));
    }
    let change = audited(scope, action, what, id, None, None);
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
    let mut op = Audited::begin(state).await?;
    let before = providers::upsert(&mut op.tx, scope, &state.secret, p, op.now).await?;
    let after = providers::list(&mut op.tx, scope)
        .await?
        .into_iter()
        .find(|x| x.name == p.name)
        .ok_or_else(|| AppError::not_found("provider"))?;
    let change = audited(
        scope,
        "provider.upserted",
        "provider",
        &p.name,
        before.as_ref().map(provider_json),
        Some(provider_json(&after)),
    );
    op.finish(actor, change, Some(org_notice(scope))).await?;
    Ok(after)
}

fn provider_json(p: &Provider) -> Value {
    json!({
        "kind": p.kind.as_str(), "base_url": p.base_url, "key_hint": p.key_hint,
        "latency_ms": p.latency_ms,
    })
}

/// Removes a provider.
pub async fn delete_provider(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    name: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let found = providers::delete(&mut op.tx, scope, name).await?;
    finish_delete(
        op,
        actor,
        scope,
        found,
        ("provider", "provider.deleted"),
        name,
    )
    .await
}
