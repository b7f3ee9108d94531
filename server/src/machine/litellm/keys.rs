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
        .route("/key/block", post(key_block))
        .route("/key/unblock", post(key_unblock))
}

with_caps! {
    /// The body of `/key/generate` and `/key/update` (the fields of LiteLLM's
    /// `GenerateKeyRequest` that Tollgate keeps).
    struct KeyBody {
        /// The key to change (its token or its `token` hash); update only.
        key: Option<String>,
        key_alias: Option<String>,
        team_id: Option<String>,
        /// The member who holds the key (their `user_id`); none: a service key.
        user_id: Option<String>,
        /// A named budget whose limits the key takes (`/budget/new`).
        #[serde(default, deserialize_with = "nullable")]
        budget_id: Option<Option<String>>,
        #[serde(default, deserialize_with = "nullable")]
        duration: Option<Option<String>>,
        metadata: Option<Value>,
        tags: Option<Vec<String>>,
        /// Tollgate keys call `/v1` only: refused unless empty.
        allowed_routes: Option<Vec<String>>,
    }
}

/// What LiteLLM keeps on a key beside its limits: the duration as written,
/// the named budget, whether its models follow its team's.
struct Extras {
    duration: Option<Option<String>>,
    budget_id: Option<Option<String>>,
    models_follow: Option<bool>,
}

impl Extras {
    /// The extras of `before` (if any) after this change.
    fn over(self, before: Option<&KeyRow>) -> (Option<String>, Option<String>, bool) {
        let duration = match self.duration {
            Some(d) => d,
            None => before.and_then(|k| k.budget_duration.clone()),
        };
        let budget_id = match self.budget_id {
            Some(b) => b,
            None => before.and_then(|k| k.budget_id.clone()),
        };
        let follow = self
            .models_follow
            .unwrap_or_else(|| before.is_none_or(|k| k.models_follow));
        (duration, budget_id, follow)
    }
}

/// Takes a named budget's limits where the body does not set its own.
async fn with_budget(caller: &Caller, b: &mut KeyBody) -> ApiResult<()> {
    let caps = super::budgets::Caps {
        max_budget: &mut b.max_budget,
        budget_duration: &mut b.budget_duration,
        tpm_limit: &mut b.tpm_limit,
        rpm_limit: &mut b.rpm_limit,
    };
    super::budgets::fill(caller, b.budget_id.as_ref(), caps).await
}

/// The settings a KeyBody asks for, and what LiteLLM keeps beside them.
fn key_spec(b: KeyBody, now: i64) -> ApiResult<(KeySpec, Extras)> {
    if b.allowed_routes.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::invalid(
            "allowed_routes",
            "Tollgate keys call the /v1 model routes only; remove it",
        ));
    }
    let extras = Extras {
        duration: b.budget_duration.clone(),
        budget_id: b.budget_id.clone(),
        models_follow: b
            .models
            .as_ref()
            .map(|m| m.iter().all(|x| x.trim().is_empty())),
    };
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
    Ok((
        KeySpec {
            name: b.key_alias.map(|a| ("key_alias", a)),
            budget_micros,
            budget_reset,
            expires_at,
            ..shared
        },
        extras,
    ))
}

/// The organization's keys named `alias` (newest first, at most `limit`).
async fn aliased(caller: &Caller, alias: &str, limit: i64) -> ApiResult<Vec<KeyRow>> {
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let query = keys::OrgKeyQuery {
        name: Some(alias.trim()),
        limit,
        ..Default::default()
    };
    Ok(keys::page_in_org(&mut conn, &org, &query).await?.0)
}

/// A key alias is unique in the organization, as LiteLLM makes it.
async fn alias_free(caller: &Caller, alias: &str, except: Option<&str>) -> ApiResult<()> {
    let same = aliased(caller, alias, 2).await?;
    if same.iter().any(|k| Some(k.id.as_str()) != except) {
        return Err(ApiError::invalid(
            "key_alias",
            format!("'{}' is already the alias of another key", alias.trim()),
        ));
    }
    Ok(())
}

/// The key a body names by `key` (its token or `token` hash), else by
/// `key_alias`.
async fn key_of_body(caller: &Caller, b: &mut KeyBody) -> ApiResult<(ProjectScope, KeyRow)> {
    if let Some(reference) = b.key.take() {
        return named_key(caller, "key", &reference).await;
    }
    let alias = b.key_alias.clone().ok_or_else(|| {
        ApiError::invalid("key", "is required: the key to update (or its key_alias)")
    })?;
    let key = aliased(caller, &alias, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError {
            field: Some("key_alias".to_owned()),
            ..ApiError::not_found(format!("key_alias: key '{alias}'"))
        })?;
    named_key(caller, "key_alias", &key.id_hash).await
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
    let supplied = b.key.take();
    let team = b.team_id.take().ok_or_else(|| {
        ApiError::invalid(
            "team_id",
            "is required: every key lives in a team (project)",
        )
    })?;
    let (scope, project) = caller
        .project("team_id", &team, Action::ManageProjectKeys)
        .await?;
    match &b.key_alias {
        Some(alias) => alias_free(&caller, alias, None).await?,
        None => b.key_alias = Some("litellm key".to_owned()),
    }
    let holder = match b.user_id.take() {
        Some(u) => Some(team_member(&caller, &scope, &u).await?),
        None => None,
    };
    with_budget(&caller, &mut b).await?;
    let (spec, extras) = key_spec(b, now_ms())?;
    let limits = spec.apply(None, &project)?;
    let holder = match &holder {
        Some(user_id) => keys::Holder::User(user_id),
        None => keys::Holder::Service,
    };
    let (row, token) = match supplied {
        Some(raw) => {
            let token =
                keys::token::Token::imported(&raw).map_err(|why| ApiError::invalid("key", why))?;
            ops::create_key_with(&caller.state, &caller.actor, &scope, holder, &limits, token)
                .await?
        }
        None => ops::create_key(&caller.state, &caller.actor, &scope, holder, &limits).await?,
    };
    let (duration, budget_id, follow) = extras.over(None);
    ops::litellm::set_key_extras(
        &caller.state,
        &caller.actor,
        &caller.org(None, Action::ManageProjectKeys)?,
        &row.id,
        duration.as_deref(),
        budget_id.as_deref(),
        follow,
    )
    .await?;
    let row = reread(&caller, &row).await?;
    let mut body = key_view(&row);
    body["key"] = json!(token.expose());
    Ok(Json(body))
}

/// A key as stored now.
async fn reread(caller: &Caller, row: &KeyRow) -> ApiResult<KeyRow> {
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    Ok(keys::find(&mut conn, &org, &row.id_hash).await?)
}

/// The member `reference` names (their `user_id` or email), who must be in
/// the key's team: Tollgate's id of them.
async fn team_member(caller: &Caller, scope: &ProjectScope, reference: &str) -> ApiResult<String> {
    let mut conn = caller.state.db.pool.acquire().await?;
    let user = tollgate_app::core::litellm::user(&mut conn, scope.org_id(), reference)
        .await?
        .ok_or_else(|| ApiError {
            field: Some("user_id".to_owned()),
            ..ApiError::not_found(format!("user_id: member '{reference}'"))
        })?;
    let members = projects::members(&mut conn, scope).await?;
    if !members
        .iter()
        .any(|m| m.user_id == user.user_id && m.role.is_some())
    {
        return Err(ApiError::invalid(
            "user_id",
            format!(
                "'{reference}' is not a member of this team; add them with /team/member_add first"
            ),
        ));
    }
    Ok(user.user_id)
}

async fn key_update(caller: Caller, Input(mut b): Input<KeyBody>) -> ApiResult<Json<Value>> {
    let (scope, before) = key_of_body(&caller, &mut b).await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let project = projects::get(&mut conn, &scope).await?;
    drop(conn);
    // A reconciler sends the whole key back: its own team and holder pass.
    if let Some(team) = b.team_id.take() {
        if team != project.id && Some(&team) != project.external_id.as_ref() && team != project.name
        {
            return Err(ApiError::invalid(
                "team_id",
                "a key cannot move between teams; create one in the other team",
            ));
        }
    }
    if let Some(user) = b.user_id.take() {
        let holds = before.owner_ref.as_deref() == Some(user.as_str())
            || before.owner_id.as_deref() == Some(user.as_str())
            || before.owner_email.as_deref() == Some(user.as_str());
        if !holds {
            return Err(ApiError::invalid(
                "user_id",
                "a key cannot change holder; create one for the other member",
            ));
        }
    }
    if let Some(alias) = &b.key_alias {
        alias_free(&caller, alias, Some(&before.id)).await?;
    }
    with_budget(&caller, &mut b).await?;
    let (spec, extras) = key_spec(b, now_ms())?;
    let limits = spec.apply(Some(&before.limits), &project)?;
    let row = ops::update_key(&caller.state, &caller.actor, &scope, &before, &limits).await?;
    let (duration, budget_id, follow) = extras.over(Some(&before));
    ops::litellm::set_key_extras(
        &caller.state,
        &caller.actor,
        &caller.org(None, Action::ManageProjectKeys)?,
        &row.id,
        duration.as_deref(),
        budget_id.as_deref(),
        follow,
    )
    .await?;
    Ok(Json(key_view(&reread(&caller, &row).await?)))
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
    caller.org(None, Action::ManageProjectKeys)?;
    let mut targets = Vec::new();
    for (i, k) in b.keys.iter().enumerate() {
        targets.push(named_key(&caller, &format!("keys[{i}]"), k).await?);
    }
    for (i, alias) in b.key_aliases.iter().enumerate() {
        let k = aliased(&caller, alias, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError {
                field: Some(format!("key_aliases[{i}]")),
                ..ApiError::not_found(format!("key with alias '{alias}'"))
            })?;
        targets.push(named_key(&caller, "key_aliases", &k.id_hash).await?);
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
    user_id: Option<String>,
    page: Option<i64>,
    size: Option<i64>,
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
    let page = q.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::invalid("page", "must be from 1 to 1000000"));
    }
    let mut conn = caller.state.db.pool.acquire().await?;
    let owner = match &q.user_id {
        Some(u) => Some(
            tollgate_app::core::litellm::user(&mut conn, org.org_id(), u)
                .await?
                .ok_or_else(|| ApiError {
                    field: Some("user_id".to_owned()),
                    ..ApiError::not_found(format!("user_id: member '{u}'"))
                })?
                .user_id,
        ),
        None => None,
    };
    let (shown, total) = keys::page_in_org(
        &mut conn,
        &org,
        &keys::OrgKeyQuery {
            project_id: project.as_ref().map(|p| p.id.as_str()),
            name: q.key_alias.as_deref(),
            owner_id: owner.as_deref(),
            limit: size,
            offset: (page - 1).saturating_mul(size),
            ..Default::default()
        },
    )
    .await?;
    let shown: Vec<Value> = shown
        .iter()
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
        "total_count": total,
        "current_page": page,
        "total_pages": (total + size - 1) / size,
    })))
}

/// The body of `/key/block` and `/key/unblock`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockKey {
    key: String,
}

async fn key_block(caller: Caller, Input(b): Input<BlockKey>) -> ApiResult<Json<Value>> {
    set_blocked(caller, &b.key, true).await
}

async fn key_unblock(caller: Caller, Input(b): Input<BlockKey>) -> ApiResult<Json<Value>> {
    set_blocked(caller, &b.key, false).await
}

async fn set_blocked(caller: Caller, reference: &str, blocked: bool) -> ApiResult<Json<Value>> {
    let (scope, key) = named_key(&caller, "key", reference).await?;
    ops::litellm::set_key_blocked(&caller.state, &caller.actor, &scope, &key, blocked).await?;
    Ok(Json(key_view(&reread(&caller, &key).await?)))
}
