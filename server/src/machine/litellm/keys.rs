//! LiteLLM's `/key/*`: generate, update, regenerate, delete, info and list
//! a team's keys; a key body becomes a `KeySpec` checked against its project.

use super::key_view;
use super::reset_change;
use crate::machine::input::budget_change;
use crate::machine::input::duration_ms;
use crate::machine::input::nullable;
use crate::machine::input::Input;
use crate::machine::input::KeySpec;
use crate::machine::input::Params;
use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tollgate_app::core::keys;
use tollgate_app::core::keys::KeyRow;
use tollgate_app::core::now_ms;
use tollgate_app::core::ops;
use tollgate_app::core::projects;
use tollgate_app::policy::Action;
use tollgate_app::policy::ProjectScope;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/key/generate", post(key_generate))
        .route("/key/update", post(key_update))
        .route("/key/regenerate", post(key_regenerate))
        .route("/key/delete", post(key_delete).delete(key_delete))
        .route("/key/info", get(key_info))
        .route("/key/list", get(key_list))
}

with_caps! {
    /// The body of `/key/generate` and `/key/update` (the fields of LiteLLM's
    /// `GenerateKeyRequest` that Tollgate keeps).
    struct KeyBody {
        /// The key to change (its token or its `token` hash); update only.
        key: Option<String>,
        key_alias: Option<String>,
        team_id: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        duration: Option<Option<String>>,
        metadata: Option<Value>,
        tags: Option<Vec<String>>,
    }
}

/// The settings a KeyBody asks for.
fn key_spec(b: KeyBody, now: i64) -> ApiResult<KeySpec> {
    let budget_micros = budget_change("max_budget", b.max_budget)?;
    let budget_reset = reset_change("budget_duration", b.budget_duration)?;
    let shared = KeySpec::shared(b.models, b.tpm_limit, b.rpm_limit, b.metadata, b.tags)?;
    let expires_at = b
        .duration
        .map(|d| {
            d.map(|d| duration_ms("duration", &d).map(|ms| now.saturating_add(ms)))
                .transpose()
        })
        .transpose()?;
    Ok(KeySpec {
        name: b.key_alias.map(|a| ("key_alias", a)),
        budget_micros,
        budget_reset,
        expires_at,
        ..shared
    })
}

/// The key a LiteLLM request names, with the policy's decision in its project.
async fn named_key(
    caller: &Caller,
    field: &str,
    reference: &str,
) -> ApiResult<(ProjectScope, KeyRow)> {
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let key = keys::find(&mut conn, &org, reference)
        .await
        .map_err(|_| ApiError {
            field: Some(field.to_owned()),
            ..ApiError::not_found(format!("{field}: key"))
        })?;
    drop(conn);
    let (scope, _) = caller
        .project("team_id", &key.project_id, Action::ManageProjectKeys)
        .await?;
    Ok((scope, key))
}

async fn key_generate(caller: Caller, Input(mut b): Input<KeyBody>) -> ApiResult<Json<Value>> {
    if b.key.is_some() {
        return Err(ApiError::invalid("key", "is set by Tollgate; remove it"));
    }
    let team = b.team_id.take().ok_or_else(|| {
        ApiError::invalid(
            "team_id",
            "is required: every key lives in a team (project)",
        )
    })?;
    let (scope, project) = caller
        .project("team_id", &team, Action::ManageProjectKeys)
        .await?;
    if b.key_alias.is_none() {
        b.key_alias = Some("litellm key".to_owned());
    }
    let (row, token) = caller
        .create_service_key(&scope, &project, key_spec(b, now_ms())?)
        .await?;
    let mut body = key_view(&row);
    body["key"] = json!(token.expose());
    Ok(Json(body))
}

async fn key_update(caller: Caller, Input(mut b): Input<KeyBody>) -> ApiResult<Json<Value>> {
    let reference = b
        .key
        .take()
        .ok_or_else(|| ApiError::invalid("key", "is required: the key to update"))?;
    if b.team_id.is_some() {
        return Err(ApiError::invalid(
            "team_id",
            "a key cannot move between teams; create one in the other team",
        ));
    }
    let (scope, before) = named_key(&caller, "key", &reference).await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let project = projects::get(&mut conn, &scope).await?;
    drop(conn);
    let limits = key_spec(b, now_ms())?.apply(Some(&before.limits), &project)?;
    let row = ops::update_key(&caller.state, &caller.actor, &scope, &before, &limits).await?;
    Ok(Json(key_view(&row)))
}

/// The body of `/key/regenerate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Regenerate {
    key: String,
}

async fn key_regenerate(caller: Caller, Input(b): Input<Regenerate>) -> ApiResult<Json<Value>> {
    let (scope, before) = named_key(&caller, "key", &b.key).await?;
    let (row, token) = ops::rotate_key(&caller.state, &caller.actor, &scope, &before, 0).await?;
    let mut body = key_view(&row);
    body["key"] = json!(token.expose());
    Ok(Json(body))
}

/// The body of `/key/delete`: keys by token or by alias.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteKeys {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_aliases: Vec<String>,
}

async fn key_delete(caller: Caller, Input(b): Input<DeleteKeys>) -> ApiResult<Json<Value>> {
    if b.keys.is_empty() && b.key_aliases.is_empty() {
        return Err(ApiError::invalid(
            "keys",
            "name at least one key (or key_aliases)",
        ));
    }
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let mut targets = Vec::new();
    for (i, k) in b.keys.iter().enumerate() {
        targets.push(named_key(&caller, &format!("keys[{i}]"), k).await?);
    }
    if !b.key_aliases.is_empty() {
        let mut conn = caller.state.db.pool.acquire().await?;
        let all = keys::in_org(&mut conn, &org, None, false).await?;
        drop(conn);
        for (i, alias) in b.key_aliases.iter().enumerate() {
            let k = all
                .iter()
                .find(|k| &k.limits.name == alias)
                .ok_or_else(|| ApiError {
                    field: Some(format!("key_aliases[{i}]")),
                    ..ApiError::not_found(format!("key with alias '{alias}'"))
                })?;
            targets.push(named_key(&caller, "key_aliases", &k.id_hash).await?);
        }
    }
    let mut deleted = Vec::new();
    for (scope, key) in &targets {
        if deleted.contains(&key.id_hash) {
            continue;
        }
        ops::delete_key(&caller.state, &caller.actor, scope, key).await?;
        deleted.push(key.id_hash.clone());
    }
    Ok(Json(json!({ "deleted_keys": deleted })))
}

/// The query of `/key/info`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInfoQuery {
    key: String,
}

async fn key_info(caller: Caller, Params(q): Params<KeyInfoQuery>) -> ApiResult<Json<Value>> {
    let (_, key) = named_key(&caller, "key", &q.key).await?;
    Ok(Json(json!({ "key": key.id_hash, "info": key_view(&key) })))
}

/// The query of `/key/list`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyListQuery {
    team_id: Option<String>,
    key_alias: Option<String>,
    page: Option<usize>,
    size: Option<usize>,
    return_full_object: Option<bool>,
}

async fn key_list(caller: Caller, Params(q): Params<KeyListQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let project = caller
        .filter_project("team_id", q.team_id.as_deref(), Action::ManageProjectKeys)
        .await?;
    let size = q.size.unwrap_or(10);
    if !(1..=100).contains(&size) {
        return Err(ApiError::invalid("size", "must be from 1 to 100"));
    }
    let page = q.page.unwrap_or(1).max(1);
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = keys::in_org(
        &mut conn,
        &org,
        project.as_ref().map(|p| p.id.as_str()),
        false,
    )
    .await?;
    let matching: Vec<&KeyRow> = all
        .iter()
        .filter(|k| q.key_alias.as_ref().is_none_or(|a| &k.limits.name == a))
        .collect();
    let shown: Vec<Value> = matching
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|k| {
            if q.return_full_object == Some(true) {
                key_view(k)
            } else {
                json!(k.id_hash)
            }
        })
        .collect();
    Ok(Json(json!({
        "keys": shown,
        "total_count": matching.len(),
        "current_page": page,
        "total_pages": matching.len().div_ceil(size),
    })))
}
