//! LiteLLM's `/model/*` and `/credentials`: a model is an entry of the
//! organization's catalogue, a credential a provider (its base URL and its
//! sealed key). What LiteLLM reads back unchanged (`litellm_params.model`,
//! `mode`, `base_model`, `tier`, `credential_info`) is kept as written.

use crate::machine::input::{Input, Params};
use crate::machine::renamed;
use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::extract::Path;
use axum::routing::{get, patch, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_app::core::catalogue::Model;
use tollgate_app::core::litellm::{self, ApiModel};
use tollgate_app::core::ops;
use tollgate_app::core::providers::{self, NewProvider};
use tollgate_app::format::Usd;
use tollgate_app::policy::Action;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/model/new", post(model_new))
        .route("/model/info", get(model_info))
        .route("/model/{id}/update", patch(model_update).post(model_update))
        .route("/model/delete", post(model_delete))
        .route("/credentials", get(credential_list).post(credential_new))
        .route(
            "/credentials/{name}",
            patch(credential_update).delete(credential_delete),
        )
}

/// `litellm_params` of a model (what Tollgate keeps).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LitellmParams {
    model: Option<String>,
    litellm_credential_name: Option<String>,
    custom_llm_provider: Option<String>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    /// Provider keys live in a credential: refused here.
    api_key: Option<Value>,
    api_base: Option<Value>,
}

/// `model_info` of a model (what Tollgate keeps).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Info {
    id: Option<String>,
    mode: Option<String>,
    base_model: Option<String>,
    tier: Option<String>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    input_cost_per_million_tokens: Option<f64>,
    output_cost_per_million_tokens: Option<f64>,
    max_input_tokens: Option<i64>,
    max_tokens: Option<i64>,
    /// Read back on every model (all are in the database); ignored.
    #[serde(rename = "db_model")]
    _db_model: Option<bool>,
}

/// The body of `/model/new` and `/model/{id}/update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelBody {
    model_name: Option<String>,
    #[serde(default)]
    litellm_params: Option<LitellmParams>,
    #[serde(default)]
    model_info: Option<Info>,
}

const MAX_CONTEXT_WINDOW: i64 = 100_000_000;
/// $1,000,000 per million tokens, as the console allows.
const MAX_PRICE_MICROS: i64 = 1_000_000_000_000;

/// A price in micro-USD per million tokens, from per-million dollars or
/// else per-token dollars.
fn price(field: &str, per_million: Option<f64>, per_token: Option<f64>) -> ApiResult<Option<Usd>> {
    let micros = match (per_million, per_token) {
        (Some(m), _) => m * 1e6,
        (None, Some(t)) => t * 1e12,
        (None, None) => return Ok(None),
    };
    if !micros.is_finite() || micros < 0.0 || micros > MAX_PRICE_MICROS as f64 {
        return Err(ApiError::invalid(
            field,
            "must be a price from 0 to $1,000,000 per million tokens",
        ));
    }
    Ok(Some(Usd::from_micros(micros.round() as i64)))
}

impl ModelBody {
    /// The model and its extras after this body (over `base`, or new).
    fn apply(self, base: Option<&ApiModel>, name: &str) -> ApiResult<(Model, String, Value)> {
        let lp = self.litellm_params.unwrap_or_default();
        let mi = self.model_info.unwrap_or_default();
        for (field, v) in [
            ("litellm_params.api_key", &lp.api_key),
            ("litellm_params.api_base", &lp.api_base),
        ] {
            if v.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(ApiError::invalid(
                    field,
                    "keep a provider's address and key in a credential (POST /credentials) and name it with litellm_params.litellm_credential_name",
                ));
            }
        }
        if let Some(t) = &mi.tier {
            if !matches!(t.as_str(), "free" | "paid") {
                return Err(ApiError::invalid("model_info.tier", "must be free or paid"));
            }
        }
        let mut extras = match base {
            Some(b) if b.litellm.is_object() => b.litellm.clone(),
            _ => json!({}),
        };
        let mut m = match base {
            Some(b) => b.model.clone(),
            None => Model {
                id: name.to_owned(),
                provider: String::new(),
                upstream: String::new(),
                input_price: Usd::from_micros(0),
                output_price: Usd::from_micros(0),
                context_window: 128_000,
                fallbacks: Vec::new(),
            },
        };
        if let Some(raw) = &lp.model {
            let raw = raw.trim();
            if raw.is_empty() || raw.len() > 200 || raw.chars().any(char::is_whitespace) {
                return Err(ApiError::invalid(
                    "litellm_params.model",
                    "is the provider's model, such as openai/gpt-4o or hosted_vllm/my-model",
                ));
            }
            let (prefix, upstream) = match raw.split_once('/') {
                Some((p, u)) if !u.is_empty() => (Some(p), u),
                _ => (None, raw),
            };
            m.upstream = upstream.to_owned();
            let provider = lp
                .litellm_credential_name
                .as_deref()
                .or(prefix.filter(|p| matches!(*p, "mock" | "openai" | "anthropic")))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "litellm_params.litellm_credential_name",
                        format!(
                            "name the credential (POST /credentials) that serves '{raw}': its address and key"
                        ),
                    )
                })?;
            m.provider = tollgate_app::core::domain::name(
                "litellm_params.litellm_credential_name",
                provider,
                60,
            )?;
            extras["model"] = json!(raw);
        } else if base.is_none() {
            return Err(ApiError::invalid(
                "litellm_params.model",
                "is required: the provider's model, such as openai/gpt-4o",
            ));
        } else if let Some(c) = &lp.litellm_credential_name {
            m.provider =
                tollgate_app::core::domain::name("litellm_params.litellm_credential_name", c, 60)?;
        }
        if let Some(p) = &lp.custom_llm_provider {
            extras["custom_llm_provider"] = json!(p);
        }
        for (key, v) in [
            ("mode", &mi.mode),
            ("base_model", &mi.base_model),
            ("tier", &mi.tier),
        ] {
            if let Some(v) = v {
                extras[key] = json!(v);
            }
        }
        if let Some(p) = price(
            "model_info.input_cost_per_million_tokens",
            mi.input_cost_per_million_tokens,
            mi.input_cost_per_token.or(lp.input_cost_per_token),
        )? {
            m.input_price = p;
        }
        if let Some(p) = price(
            "model_info.output_cost_per_million_tokens",
            mi.output_cost_per_million_tokens,
            mi.output_cost_per_token.or(lp.output_cost_per_token),
        )? {
            m.output_price = p;
        }
        if let Some(n) = mi.max_input_tokens.or(mi.max_tokens) {
            if !(1..=MAX_CONTEXT_WINDOW).contains(&n) {
                return Err(ApiError::invalid(
                    "model_info.max_input_tokens",
                    format!("must be from 1 to {MAX_CONTEXT_WINDOW}"),
                ));
            }
            m.context_window = n;
        }
        let id = match (&mi.id, base) {
            (Some(id), _) => {
                let id = id.trim();
                if id.is_empty() || id.len() > 100 || id.chars().any(char::is_whitespace) {
                    return Err(ApiError::invalid(
                        "model_info.id",
                        "1 to 100 characters without spaces",
                    ));
                }
                id.to_owned()
            }
            (None, Some(b)) => b.external_id.clone().unwrap_or_else(|| b.model.id.clone()),
            (None, None) => tollgate_app::core::new_id(),
        };
        Ok((m, id, extras))
    }
}

/// A model as `/model/info` shows it.
fn model_view(m: &ApiModel) -> Value {
    let x = &m.litellm;
    let per_token = |u: Usd| u.micros() as f64 / 1e12;
    let per_million = |u: Usd| u.micros() as f64 / 1e6;
    let mut params = Map::new();
    params.insert(
        "model".into(),
        x.get("model")
            .cloned()
            .unwrap_or_else(|| json!(format!("{}/{}", m.model.provider, m.model.upstream))),
    );
    params.insert("litellm_credential_name".into(), json!(m.model.provider));
    if let Some(p) = x.get("custom_llm_provider") {
        params.insert("custom_llm_provider".into(), p.clone());
    }
    json!({
        "model_name": m.model.id,
        "litellm_params": params,
        "model_info": {
            "id": m.external_id.as_deref().unwrap_or(&m.model.id),
            "mode": x.get("mode"),
            "base_model": x.get("base_model"),
            "tier": x.get("tier"),
            "input_cost_per_token": per_token(m.model.input_price),
            "output_cost_per_token": per_token(m.model.output_price),
            "input_cost_per_million_tokens": per_million(m.model.input_price),
            "output_cost_per_million_tokens": per_million(m.model.output_price),
            "max_input_tokens": m.model.context_window,
            "fallbacks": m.model.fallbacks,
            "db_model": true,
        },
    })
}

fn model_name(raw: Option<&str>) -> ApiResult<String> {
    let name = raw.map(str::trim).unwrap_or_default();
    if name.is_empty() || name.len() > 120 || name.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            "model_name",
            "is required: the name clients call, 1 to 120 characters without spaces",
        ));
    }
    Ok(name.to_owned())
}

async fn catalogue(caller: &Caller) -> ApiResult<Vec<ApiModel>> {
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    Ok(litellm::models(&mut conn, &org).await?)
}

/// The model a path or body names: by `model_info.id` or by name.
async fn model_named(caller: &Caller, field: &str, id: &str) -> ApiResult<ApiModel> {
    catalogue(caller)
        .await?
        .into_iter()
        .find(|m| m.external_id.as_deref() == Some(id) || m.model.id == id)
        .ok_or_else(|| ApiError {
            field: Some(field.to_owned()),
            ..ApiError::not_found(format!("{field}: model '{id}'"))
        })
}

async fn save(caller: &Caller, m: &Model, id: &str, extras: &Value) -> ApiResult<()> {
    let org = caller.org(None, Action::ModelCatalogue)?;
    ops::upsert_model_with(
        &caller.state,
        &caller.actor,
        &org,
        m,
        Some((Some(id), extras)),
    )
    .await
    .map_err(|e| renamed(e.into(), "id", "model_name"))?;
    Ok(())
}

async fn model_new(caller: Caller, Input(b): Input<ModelBody>) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ModelCatalogue)?;
    let name = model_name(b.model_name.as_deref())?;
    let all = catalogue(&caller).await?;
    if all.iter().any(|m| m.model.id == name) {
        return Err(ApiError::invalid(
            "model_name",
            format!(
                "'{name}' is already in the catalogue; change it with PATCH /model/{{id}}/update"
            ),
        ));
    }
    let (m, id, extras) = b.apply(None, &name)?;
    if all
        .iter()
        .any(|x| x.external_id.as_deref() == Some(id.as_str()))
    {
        return Err(ApiError::invalid(
            "model_info.id",
            format!("'{id}' already names another model"),
        ));
    }
    save(&caller, &m, &id, &extras).await?;
    Ok(Json(model_view(
        &model_named(&caller, "model_name", &name).await?,
    )))
}

async fn model_update(
    caller: Caller,
    Path(id): Path<String>,
    Input(b): Input<ModelBody>,
) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ModelCatalogue)?;
    let before = model_named(&caller, "id", &id).await?;
    if let Some(n) = &b.model_name {
        if n.trim() != before.model.id {
            return Err(ApiError::invalid(
                "model_name",
                "a model keeps its name; add one under the new name and delete this one",
            ));
        }
    }
    let name = before.model.id.clone();
    let (m, new_id, extras) = b.apply(Some(&before), &name)?;
    save(&caller, &m, &new_id, &extras).await?;
    Ok(Json(model_view(
        &model_named(&caller, "id", &new_id).await?,
    )))
}

/// The body of `/model/delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteModel {
    id: String,
}

async fn model_delete(caller: Caller, Input(b): Input<DeleteModel>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ModelCatalogue)?;
    let m = model_named(&caller, "id", b.id.trim()).await?;
    ops::delete_entry(
        &caller.state,
        &caller.actor,
        &org,
        ops::Entry::Model,
        &m.model.id,
    )
    .await?;
    Ok(Json(
        json!({ "message": "model deleted", "id": b.id.trim() }),
    ))
}

/// The query of `/model/info`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoQuery {
    litellm_model_id: Option<String>,
}

async fn model_info(caller: Caller, Params(q): Params<InfoQuery>) -> ApiResult<Json<Value>> {
    let all = catalogue(&caller).await?;
    let shown: Vec<Value> = all
        .iter()
        .filter(|m| {
            q.litellm_model_id
                .as_deref()
                .is_none_or(|id| m.external_id.as_deref() == Some(id) || m.model.id == id)
        })
        .map(model_view)
        .collect();
    if q.litellm_model_id.is_some() && shown.is_empty() {
        return Err(ApiError {
            field: Some("litellm_model_id".to_owned()),
            ..ApiError::not_found("litellm_model_id: model")
        });
    }
    Ok(Json(json!({ "data": shown })))
}

/// `credential_values` Tollgate keeps.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Values {
    api_base: Option<String>,
    api_key: Option<String>,
}

/// The body of `POST /credentials` and `PATCH /credentials/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    credential_name: Option<String>,
    credential_info: Option<Map<String, Value>>,
    credential_values: Option<Values>,
    /// LiteLLM copies a model's values with it; Tollgate takes them as given.
    model_id: Option<Value>,
}

/// The provider kind a `custom_llm_provider` names.
fn kind_of(info: &Map<String, Value>) -> ApiResult<(providers::Kind, &'static str)> {
    match info.get("custom_llm_provider").and_then(Value::as_str) {
        Some("anthropic") => Ok((providers::Kind::Anthropic, "https://api.anthropic.com")),
        Some("mock") => Ok((providers::Kind::Mock, "")),
        Some("openai") | None => Ok((providers::Kind::OpenAi, "https://api.openai.com/v1")),
        Some(_) => Ok((providers::Kind::OpenAi, "")),
    }
}

impl CredentialBody {
    /// The provider after this body (over `base`, or new), and the
    /// `credential_info` to keep.
    fn apply(
        self,
        name: &str,
        base: Option<&providers::Provider>,
        base_info: Option<&Value>,
    ) -> ApiResult<(NewProvider, Value)> {
        if self.model_id.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "model_id",
                "Tollgate does not copy a credential from a model; give credential_values",
            ));
        }
        let info = match (self.credential_info, base_info) {
            (Some(i), _) => i,
            (None, Some(Value::Object(i))) => i.clone(),
            (None, _) => Map::new(),
        };
        if Value::Object(info.clone()).to_string().len() > 4096 {
            return Err(ApiError::invalid("credential_info", "at most 4 KB"));
        }
        let (kind, default_base) = kind_of(&info)?;
        let values = self.credential_values.unwrap_or_default();
        let base_url = values
            .api_base
            .clone()
            .or_else(|| base.map(|b| b.base_url.clone()))
            .or_else(|| {
                (!default_base.is_empty() || kind == providers::Kind::Mock)
                    .then(|| default_base.to_owned())
            })
            .ok_or_else(|| {
                ApiError::invalid(
                    "credential_values.api_base",
                    format!(
                        "is required for {}",
                        info.get("custom_llm_provider")
                            .and_then(Value::as_str)
                            .unwrap_or("this provider")
                    ),
                )
            })?;
        let p = NewProvider::parse(
            name,
            kind.as_str(),
            &base_url,
            values.api_key.as_deref().unwrap_or(""),
            &base.map_or(0, |b| b.latency_ms).to_string(),
            base.map_or("", |b| b.region.as_str()),
        )
        .map_err(|e| {
            let e = renamed(e.into(), "name", "credential_name");
            renamed(e, "base_url", "credential_values.api_base")
        })?;
        Ok((p, Value::Object(info)))
    }
}

fn credential_view(p: &providers::Provider, info: Option<&Value>) -> Value {
    json!({
        "credential_name": p.name,
        "credential_info": info.cloned().unwrap_or_else(|| json!({ "custom_llm_provider": p.kind.as_str() })),
        "credential_values": { "api_base": p.base_url, "api_key": p.key_hint },
    })
}

async fn credentials(caller: &Caller) -> ApiResult<Vec<(providers::Provider, Option<Value>)>> {
    let org = caller.org(None, Action::ExternalKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = providers::list(&mut conn, &org).await?;
    let infos = litellm::credential_infos(&mut conn, &org).await?;
    Ok(all
        .into_iter()
        .map(|p| {
            let info = infos
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, v)| v.clone());
            (p, info)
        })
        .collect())
}

async fn credential_list(caller: Caller) -> ApiResult<Json<Value>> {
    let all = credentials(&caller).await?;
    Ok(Json(json!({
        "credentials": all.iter().map(|(p, i)| credential_view(p, i.as_ref())).collect::<Vec<_>>(),
    })))
}

async fn store(caller: &Caller, p: &NewProvider, info: &Value) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ExternalKeys)?;
    p.check_network(caller.state.allow_private_networks)
        .await
        .map_err(|e| renamed(e.into(), "base_url", "credential_values.api_base"))?;
    let saved =
        ops::upsert_provider_with(&caller.state, &caller.actor, &org, p, Some(info)).await?;
    Ok(Json(credential_view(&saved, Some(info))))
}

async fn credential_new(caller: Caller, Input(b): Input<CredentialBody>) -> ApiResult<Json<Value>> {
    let name = b
        .credential_name
        .clone()
        .ok_or_else(|| ApiError::invalid("credential_name", "is required"))?;
    if credentials(&caller)
        .await?
        .iter()
        .any(|(p, _)| p.name == name.trim())
    {
        return Err(ApiError::invalid(
            "credential_name",
            format!(
                "'{}' already exists; change it with PATCH /credentials/{{name}}",
                name.trim()
            ),
        ));
    }
    let (p, info) = b.apply(name.trim(), None, None)?;
    store(&caller, &p, &info).await
}

async fn credential_named(
    caller: &Caller,
    name: &str,
) -> ApiResult<(providers::Provider, Option<Value>)> {
    credentials(caller)
        .await?
        .into_iter()
        .find(|(p, _)| p.name == name)
        .ok_or_else(|| ApiError {
            field: Some("credential_name".to_owned()),
            ..ApiError::not_found(format!("credential_name: credential '{name}'"))
        })
}

async fn credential_update(
    caller: Caller,
    Path(name): Path<String>,
    Input(b): Input<CredentialBody>,
) -> ApiResult<Json<Value>> {
    let (before, info) = credential_named(&caller, &name).await?;
    if b.credential_name
        .as_deref()
        .is_some_and(|n| n.trim() != name)
    {
        return Err(ApiError::invalid(
            "credential_name",
            "a credential keeps its name; add one under the new name",
        ));
    }
    let (p, info) = b.apply(&name, Some(&before), info.as_ref())?;
    store(&caller, &p, &info).await
}

async fn credential_delete(caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ExternalKeys)?;
    credential_named(&caller, &name).await?;
    ops::delete_entry(
        &caller.state,
        &caller.actor,
        &org,
        ops::Entry::Provider,
        &name,
    )
    .await?;
    Ok(Json(
        json!({ "message": "credential deleted", "credential_name": name }),
    ))
}
