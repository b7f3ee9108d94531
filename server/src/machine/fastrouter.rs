//! FastRouter-compatible provisioning of service keys: `POST
//! /prod/createServiceKey`, `GET /prod/getServiceKeys`, `POST
//! /prod/updateServiceKey`, `POST /prod/deleteServiceKey`.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_app::core::keys::{self, KeyKind, KeyRow};
use tollgate_app::core::{now_ms, ops};
use tollgate_app::format::Usd;
use tollgate_app::policy::Action;

use super::input::{budget_change, expiry, nullable, rate, reset, usd, Input, KeySpec, Params};
use super::{iso, ApiError, ApiResult, Caller, Routes};

pub fn routes() -> Routes {
    Routes::new()
        .route("/prod/createServiceKey", post(create))
        .route("/prod/getServiceKeys", get(list))
        .route("/prod/updateServiceKey", post(update))
        .route("/prod/deleteServiceKey", post(delete))
}

/// A service key as these endpoints show it: never its secret.
fn view(k: &KeyRow) -> Value {
    json!({
        "api_key_id_hash": k.id_hash,
        "api_key_name": k.limits.name,
        "key_hint": k.hint,
        "org_id": k.org_id,
        "project_id": k.project_id,
        "project_name": k.project_name,
        "credit_limit": k.limits.caps.budget.map(Usd::dollars),
        "reset_budget_interval": k.limits.caps.budget_reset,
        "expire_key": k.limits.expires_at.map(iso),
        "models": k.limits.caps.models,
        "tpm_limit": k.limits.caps.tpm_limit,
        "rpm_limit": k.limits.caps.rpm_limit,
        "metadata": k.limits.metadata,
        "tags": k.limits.tags,
        "usage": k.spend.dollars(),
        "status": if k.revoked_at.is_some() { "revoked" } else { "active" },
        "created_at": iso(k.created_at),
    })
}

/// The body of `POST /prod/createServiceKey`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    org_id: Option<String>,
    project_id: Option<String>,
    project_name: Option<String>,
    api_key_name: String,
    credit_limit: Option<f64>,
    reset_budget_interval: Option<String>,
    expire_key: Option<String>,
    models: Option<Vec<String>>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    metadata: Option<Value>,
    tags: Option<Vec<String>>,
}

/// The body of `POST /prod/updateServiceKey`: the key, then what changes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    org_id: Option<String>,
    api_key_id_hash: String,
    api_key_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    credit_limit: Option<Option<f64>>,
    reset_budget_interval: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    expire_key: Option<Option<String>>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm_limit: Option<Option<i64>>,
    metadata: Option<Value>,
    tags: Option<Vec<String>>,
}

/// The body of `POST /prod/deleteServiceKey`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    org_id: Option<String>,
    api_key_id_hash: String,
}

/// The query of `GET /prod/getServiceKeys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    org_id: Option<String>,
    project_id: Option<String>,
    project_name: Option<String>,
    tag: Option<String>,
    /// A JSON object: keys whose metadata holds every one of its entries.
    metadata: Option<String>,
    /// A page: at most `limit` keys (100 unless given, at most 1,000),
    /// newest first, after skipping `offset`.
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn create(caller: Caller, Input(b): Input<Create>) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.org(b.org_id.as_deref(), Action::ManageProjectKeys)?;
    let (field, reference) = match (&b.project_id, &b.project_name) {
        (Some(id), _) => ("project_id", id),
        (None, Some(name)) => ("project_name", name),
        (None, None) => {
            return Err(ApiError::invalid(
                "project_id",
                "name the project by project_id or project_name",
            ))
        }
    };
    let (scope, project) = caller
        .project(field, reference, Action::ManageProjectKeys)
        .await?;
    let now = now_ms();
    let spec = KeySpec {
        name: Some(("api_key_name", b.api_key_name)),
        models: b.models.map(|m| ("models", m)),
        budget_micros: b
            .credit_limit
            .map(|d| usd("credit_limit", d))
            .transpose()?
            .map(Some),
        budget_reset: b
            .reset_budget_interval
            .map(|r| reset("reset_budget_interval", &r))
            .transpose()?,
        tpm: b
            .tpm_limit
            .map(|n| rate("tpm_limit", n).map(|n| ("tpm_limit", Some(n))))
            .transpose()?,
        rpm: b
            .rpm_limit
            .map(|n| rate("rpm_limit", n).map(|n| ("rpm_limit", Some(n))))
            .transpose()?,
        expires_at: b
            .expire_key
            .map(|e| expiry("expire_key", &e, now))
            .transpose()?
            .map(Some),
        metadata: b.metadata.map(|m| ("metadata", m)),
        tags: b.tags.map(|t| ("tags", t)),
    };
    let (row, token) = caller.create_service_key(&scope, &project, spec).await?;
    let mut body = view(&row);
    body["api_key"] = json!(token.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(caller: Caller, Params(q): Params<ListQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(q.org_id.as_deref(), Action::ManageProjectKeys)?;
    let project = match (&q.project_id, &q.project_name) {
        (Some(id), _) => Some(
            caller
                .project("project_id", id, Action::ManageProjectKeys)
                .await?,
        ),
        (None, Some(n)) => Some(
            caller
                .project("project_name", n, Action::ManageProjectKeys)
                .await?,
        ),
        (None, None) => None,
    };
    let wanted: Option<Map<String, Value>> = q
        .metadata
        .as_deref()
        .map(|m| match serde_json::from_str::<Value>(m) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err(ApiError::invalid(
                "metadata",
                "must be a JSON object such as {\"team\":\"search\"}",
            )),
        })
        .transpose()?;
    let tag = q.tag.map(|t| t.trim().to_lowercase());
    let (limit, offset) = super::input::page("limit", q.limit, "offset", q.offset)?;
    let mut query = keys::OrgKeyQuery {
        project_id: project.as_ref().map(|(_, p)| p.id.as_str()),
        kind: Some(KeyKind::Service),
        tag: tag.as_deref(),
        limit,
        offset,
        ..Default::default()
    };
    let mut conn = caller.state.db.pool.acquire().await?;
    // A metadata filter is matched here, over every service key the rest of
    // the query leaves; the page is cut after it.
    if wanted.is_some() {
        query.limit = i64::MAX;
        query.offset = 0;
    }
    let (rows, total) = keys::page_in_org(&mut conn, &org, &query).await?;
    let Some(w) = wanted else {
        return Ok(Json(
            json!({ "total": total, "limit": limit, "offset": offset, "service_keys": rows.iter().map(view).collect::<Vec<_>>() }),
        ));
    };
    let matching: Vec<&KeyRow> = rows
        .iter()
        .filter(|k| {
            w.iter()
                .all(|(key, v)| k.limits.metadata.get(key) == Some(v))
        })
        .collect();
    let shown: Vec<Value> = matching
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|k| view(k))
        .collect();
    Ok(Json(
        json!({ "total": matching.len(), "limit": limit, "offset": offset, "service_keys": shown }),
    ))
}

/// The service key an `api_key_id_hash` names in the caller's organization,
/// with the policy's decision in its project.
async fn service_key(
    caller: &Caller,
    org_id: Option<&str>,
    id_hash: &str,
) -> ApiResult<(tollgate_app::policy::ProjectScope, KeyRow)> {
    let org = caller.org(org_id, Action::ManageProjectKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let key = keys::find(&mut conn, &org, id_hash)
        .await
        .ok()
        .filter(|k| k.kind == KeyKind::Service && k.id_hash == id_hash.trim())
        .ok_or_else(|| ApiError {
            field: Some("api_key_id_hash".to_owned()),
            ..ApiError::not_found(format!("service key '{id_hash}'"))
        })?;
    drop(conn);
    let (scope, _) = caller
        .project("project_id", &key.project_id, Action::ManageProjectKeys)
        .await?;
    Ok((scope, key))
}

async fn update(caller: Caller, Input(b): Input<Update>) -> ApiResult<Json<Value>> {
    let (scope, before) = service_key(&caller, b.org_id.as_deref(), &b.api_key_id_hash).await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let project = tollgate_app::core::projects::get(&mut conn, &scope).await?;
    drop(conn);
    let now = now_ms();
    let budget_micros = budget_change("credit_limit", b.credit_limit)?;
    let budget_reset = b
        .reset_budget_interval
        .map(|r| reset("reset_budget_interval", &r))
        .transpose()?;
    let shared = KeySpec::shared(b.models, b.tpm_limit, b.rpm_limit, b.metadata, b.tags)?;
    let expires_at = b
        .expire_key
        .map(|e| e.map(|e| expiry("expire_key", &e, now)).transpose())
        .transpose()?;
    let spec = KeySpec {
        name: b.api_key_name.map(|n| ("api_key_name", n)),
        budget_micros,
        budget_reset,
        expires_at,
        ..shared
    };
    let limits = spec.apply(Some(&before.limits), &project)?;
    let row = ops::update_key(&caller.state, &caller.actor, &scope, &before, &limits).await?;
    Ok(Json(view(&row)))
}

async fn delete(caller: Caller, Input(b): Input<Delete>) -> ApiResult<Json<Value>> {
    let (scope, before) = service_key(&caller, b.org_id.as_deref(), &b.api_key_id_hash).await?;
    ops::delete_key(&caller.state, &caller.actor, &scope, &before).await?;
    Ok(Json(
        json!({ "deleted": true, "api_key_id_hash": before.id_hash }),
    ))
}
