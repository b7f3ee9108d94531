//! The organization's model catalogue: every member reads it (projects and
//! keys pick from it), owners edit it.

// Not `expect`: the server macro makes a client stub on the wasm target and a
// handler on the server, and only some of them trip the lint.
#![allow(
    clippy::too_many_arguments,
    reason = "a server function takes one argument per form field"
)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelView {
    pub id: String,
    pub provider: String,
    pub upstream: String,
    /// Micro-USD per million tokens.
    pub input_price: i64,
    pub output_price: i64,
    pub context_window: i64,
    pub fallbacks: Vec<String>,
}

#[cfg(feature = "ssr")]
fn view_of(m: crate::core::catalogue::Model) -> ModelView {
    ModelView {
        id: m.id,
        provider: m.provider,
        upstream: m.upstream,
        input_price: m.input_price.micros(),
        output_price: m.output_price.micros(),
        context_window: m.context_window,
        fallbacks: m.fallbacks,
    }
}

#[server(prefix = "/api/console", endpoint = "list_models")]
pub async fn list_models(org_id: String) -> Result<Vec<ModelView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let models = crate::core::catalogue::list(&mut conn, &c.scope).await?;
        Ok(models.into_iter().map(view_of).collect())
    })
    .await
}

/// Adds a model to the catalogue or changes one (by id).
#[server(prefix = "/api/console", endpoint = "upsert_model")]
pub async fn upsert_model(
    org_id: String,
    id: String,
    provider: String,
    upstream: String,
    input_price: String,
    output_price: String,
    context_window: String,
    fallbacks: Option<String>,
) -> Result<ModelView, AppError> {
    use super::ssr::*;
    use crate::core::catalogue::Model;
    use crate::core::domain::name;
    use crate::core::limits::parse_rate;
    use crate::policy::Action;
    in_org(&org_id, Action::ModelCatalogue, |c| async move {
        let model_id = name("id", &id, 120)?;
        if !model_id.contains('/') || model_id.chars().any(char::is_whitespace) {
            return Err(AppError::invalid(
                "id",
                "must look like provider/model, without spaces",
            ));
        }
        let m = Model {
            id: model_id,
            provider: name("provider", &provider, 60)?,
            upstream: name("upstream", &upstream, 120)?,
            input_price: price("input_price", &input_price)?,
            output_price: price("output_price", &output_price)?,
            context_window: parse_rate("context_window", &context_window)?
                .filter(|n| *n <= MAX_CONTEXT_WINDOW)
                .ok_or_else(|| {
                    AppError::invalid(
                        "context_window",
                        format!("is required, a whole number up to {MAX_CONTEXT_WINDOW}"),
                    )
                })?,
            fallbacks: parse_fallbacks(fallbacks.as_deref().unwrap_or(""))?,
        };
        crate::core::ops::upsert_model(&c.state, &c.actor, &c.scope, &m).await?;
        Ok(view_of(m))
    })
    .await
}

/// Bounds on what an owner may enter, so that a request's worst case
/// (context window x price) stays far inside the ledger's integers.
#[cfg(feature = "ssr")]
const MAX_CONTEXT_WINDOW: i64 = 100_000_000;
#[cfg(feature = "ssr")]
const MAX_PRICE_MICROS: i64 = 1_000_000 * 1_000_000;

/// A price per million tokens, at most $1,000,000.
#[cfg(feature = "ssr")]
fn price(field: &str, raw: &str) -> Result<crate::format::Usd, AppError> {
    let p = crate::format::Usd::parse(field, raw)?;
    if p.micros() > MAX_PRICE_MICROS {
        return Err(AppError::invalid(
            field,
            "at most $1,000,000 per million tokens",
        ));
    }
    Ok(p)
}

#[server(prefix = "/api/console", endpoint = "delete_model")]
pub async fn delete_model(org_id: String, id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::ops::{delete_entry, Entry};
    use crate::policy::Action;
    in_org(&org_id, Action::ModelCatalogue, |c| async move {
        delete_entry(&c.state, &c.actor, &c.scope, Entry::Model, &id).await
    })
    .await
}

/// `provider:upstream` deployments, separated by commas or new lines.
#[cfg(feature = "ssr")]
fn parse_fallbacks(raw: &str) -> Result<Vec<String>, AppError> {
    let mut out = Vec::new();
    for d in raw
        .split([',', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match d.split_once(':') {
            Some((p, u))
                if !p.trim().is_empty()
                    && !u.trim().is_empty()
                    && !d.contains(char::is_whitespace) =>
            {
                out.push(d.to_owned());
            }
            _ => {
                return Err(AppError::invalid(
                    "fallbacks",
                    format!("'{d}' is not provider:upstream, such as openai-eu:gpt-4o-mini"),
                ))
            }
        }
    }
    if out.len() > 5 {
        return Err(AppError::invalid(
            "fallbacks",
            "at most 5 further deployments",
        ));
    }
    Ok(out)
}
