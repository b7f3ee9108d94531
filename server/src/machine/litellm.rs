//! LiteLLM-compatible management API: a LiteLLM "team" is a Tollgate
//! project, its "organization" the provisioning key's organization. Field
//! names are LiteLLM's; `team_id` takes a project's id or its name (alias).

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_app::core::domain::Email;
use tollgate_app::core::keys::{self, Holder, KeyRow};
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::projects::{self, Project, Settings};
use tollgate_app::core::state::AppState;
use tollgate_app::core::usage::{self, GroupBy};
use tollgate_app::core::{invitations, members, now_ms, ops, orgs};
use tollgate_app::format::Usd;
use tollgate_app::policy::{Action, OrgRole, ProjectRole, ProjectScope};

use super::input::{
    days, duration_ms, nullable, rate, reset_of_duration, usd, Input, KeySpec, Params,
};
use super::{iso, renamed, ApiError, ApiResult, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/key/generate", post(key_generate))
        .route("/key/update", post(key_update))
        .route("/key/regenerate", post(key_regenerate))
        .route("/key/delete", post(key_delete).delete(key_delete))
        .route("/key/info", get(key_info))
        .route("/key/list", get(key_list))
        .route("/team/new", post(team_new))
        .route("/team/update", post(team_update))
        .route("/team/info", get(team_info))
        .route("/team/list", get(team_list))
        .route("/team/delete", post(team_delete).delete(team_delete))
        .route("/team/member_add", post(member_add))
        .route("/team/member_delete", post(member_delete))
        .route(
            "/organization/member_permission_update",
            post(member_permission_update).patch(member_permission_update),
        )
        .route("/user/new", post(user_new))
        .route("/user/info", get(user_info))
        .route("/billing/daily-spend", get(daily_spend))
        .route("/global/spend/report", get(spend_report))
        .route("/config/update", post(config_update))
}

/// LiteLLM's name for a calendar reset.
fn duration_of(reset: &str) -> Value {
    match reset {
        "daily" => json!("1d"),
        "weekly" => json!("7d"),
        "monthly" => json!("1mo"),
        _ => Value::Null,
    }
}

fn key_view(k: &KeyRow) -> Value {
    json!({
        "token": k.id_hash,
        "key_name": k.hint,
        "key_alias": k.limits.name,
        "team_id": k.project_id,
        "team_alias": k.project_name,
        "user_id": k.owner_id,
        "models": k.limits.models,
        "spend": k.spend.dollars(),
        "max_budget": k.limits.budget.map(Usd::dollars),
        "budget_duration": duration_of(k.limits.budget_reset.as_str()),
        "expires": k.limits.expires_at.map(iso),
        "tpm_limit": k.limits.tpm_limit,
        "rpm_limit": k.limits.rpm_limit,
        "metadata": k.limits.metadata,
        "tags": k.limits.tags,
        "blocked": k.revoked_at.is_some(),
        "key_type": k.kind.as_str(),
        "created_at": iso(k.created_at),
    })
}

fn team_view(p: &Project) -> Value {
    json!({
        "team_id": p.id,
        "team_alias": p.name,
        "organization_id": p.org_id,
        "models": p.models,
        "max_budget": p.budget.map(Usd::dollars),
        "budget_duration": duration_of(p.budget_reset.as_str()),
        "tpm_limit": p.tpm_limit,
        "rpm_limit": p.rpm_limit,
        "created_at": iso(p.created_at),
    })
}

// ---- keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// The key to change (its token or its `token` hash); update only.
    key: Option<String>,
    key_alias: Option<String>,
    team_id: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm_limit: Option<Option<i64>>,
    metadata: Option<Value>,
    tags: Option<Vec<String>>,
}

impl KeyBody {
    fn spec(self, now: i64) -> ApiResult<KeySpec> {
        Ok(KeySpec {
            name: self.key_alias.map(|a| ("key_alias", a)),
            models: self.models.map(|m| ("models", m)),
            budget_micros: self
                .max_budget
                .map(|b| b.map(|d| usd("max_budget", d)).transpose())
                .transpose()?,
            budget_reset: self
                .budget_duration
                .map(|d| {
                    d.map_or(Ok(ResetInterval::Never), |d| {
                        reset_of_duration("budget_duration", &d)
                    })
                })
                .transpose()?,
            tpm: self
                .tpm_limit
                .map(|n| {
                    n.map(|n| rate("tpm_limit", n))
                        .transpose()
                        .map(|n| ("tpm_limit", n))
                })
                .transpose()?,
            rpm: self
                .rpm_limit
                .map(|n| {
                    n.map(|n| rate("rpm_limit", n))
                        .transpose()
                        .map(|n| ("rpm_limit", n))
                })
                .transpose()?,
            expires_at: self
                .duration
                .map(|d| {
                    d.map(|d| duration_ms("duration", &d).map(|ms| now.saturating_add(ms)))
                        .transpose()
                })
                .transpose()?,
            metadata: self.metadata.map(|m| ("metadata", m)),
            tags: self.tags.map(|t| ("tags", t)),
        })
    }
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
    let limits = b.spec(now_ms())?.apply(None, &project)?;
    let (row, token) = ops::create_key(
        &caller.state,
        &caller.actor,
        &scope,
        Holder::Service,
        &limits,
    )
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
    let limits = b.spec(now_ms())?.apply(Some(&before.limits), &project)?;
    let row = ops::update_key(&caller.state, &caller.actor, &scope, &before, &limits).await?;
    Ok(Json(key_view(&row)))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInfoQuery {
    key: String,
}

async fn key_info(caller: Caller, Params(q): Params<KeyInfoQuery>) -> ApiResult<Json<Value>> {
    let (_, key) = named_key(&caller, "key", &q.key).await?;
    Ok(Json(json!({ "key": key.id_hash, "info": key_view(&key) })))
}

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
    let project = match &q.team_id {
        Some(t) => Some(
            caller
                .project("team_id", t, Action::ManageProjectKeys)
                .await?
                .1,
        ),
        None => None,
    };
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

// ---- teams ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamBody {
    team_id: Option<String>,
    team_alias: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm_limit: Option<Option<i64>>,
    organization_id: Option<String>,
}

impl TeamBody {
    /// The project's settings after this change.
    fn settings(self, p: &Project) -> ApiResult<Settings> {
        Ok(Settings {
            name: match self.team_alias {
                Some(a) => tollgate_app::core::domain::name("team_alias", &a, 100)?,
                None => p.name.clone(),
            },
            models: match self.models {
                Some(mut m) if !m.is_empty() => {
                    m.dedup();
                    m
                }
                _ => p.models.clone(),
            },
            tpm_limit: match self.tpm_limit {
                Some(n) => n.map(|n| rate("tpm_limit", n)).transpose()?,
                None => p.tpm_limit,
            },
            rpm_limit: match self.rpm_limit {
                Some(n) => n.map(|n| rate("rpm_limit", n)).transpose()?,
                None => p.rpm_limit,
            },
            budget: match self.max_budget {
                Some(b) => b.map(|d| usd("max_budget", d)).transpose()?,
                None => p.budget,
            },
            budget_reset: match self.budget_duration {
                Some(Some(d)) => reset_of_duration("budget_duration", &d)?,
                Some(None) => ResetInterval::Never,
                None => p.budget_reset,
            },
            ip_allowlist: p.ip_allowlist.clone(),
            content_logging: p.content_logging,
        })
    }
}

async fn team_new(caller: Caller, Input(b): Input<TeamBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(b.organization_id.as_deref(), Action::CreateProject)?;
    if b.team_id.is_some() {
        return Err(ApiError::invalid(
            "team_id",
            "Tollgate assigns team ids; name the team with team_alias and refer to it by either",
        ));
    }
    let alias = b
        .team_alias
        .clone()
        .ok_or_else(|| ApiError::invalid("team_alias", "is required"))?;
    let p = caller
        .create_project(&org, "team_alias", &alias, |draft| b.settings(draft))
        .await?;
    Ok(Json(team_view(&p)))
}

async fn team_update(caller: Caller, Input(mut b): Input<TeamBody>) -> ApiResult<Json<Value>> {
    caller.org(b.organization_id.as_deref(), Action::EditProjectSettings)?;
    let team = b
        .team_id
        .take()
        .ok_or_else(|| ApiError::invalid("team_id", "is required: the team to update"))?;
    let (scope, before) = caller
        .project("team_id", &team, Action::EditProjectSettings)
        .await?;
    let settings = b.settings(&before)?;
    let p = ops::update_project(&caller.state, &caller.actor, &scope, &settings)
        .await
        .map_err(|e| renamed(e.into(), "name", "team_alias"))?;
    Ok(Json(team_view(&p)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamQuery {
    team_id: String,
}

async fn team_info(caller: Caller, Params(q): Params<TeamQuery>) -> ApiResult<Json<Value>> {
    let (scope, p) = caller
        .project("team_id", &q.team_id, Action::ViewProjectMembers)
        .await?;
    let org = caller.org(None, Action::ManageProjectKeys)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let people = projects::members(&mut conn, &scope).await?;
    let team_keys = keys::in_org(&mut conn, &org, Some(&p.id), false).await?;
    Ok(Json(json!({
        "team_id": p.id,
        "team_info": team_view(&p),
        "members_with_roles": people.iter().map(|m| json!({
            "user_id": m.user_id, "user_email": m.email,
            "role": if m.role == Some(ProjectRole::Member) { "user" } else { "admin" },
        })).collect::<Vec<_>>(),
        "keys": team_keys.iter().map(key_view).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {
    organization_id: Option<String>,
}

async fn team_list(caller: Caller, Params(q): Params<NoQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(q.organization_id.as_deref(), Action::ViewProject)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = projects::visible(&mut conn, &org).await?;
    Ok(Json(Value::Array(
        all.iter().map(|(p, _)| team_view(p)).collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteTeams {
    team_ids: Vec<String>,
}

async fn team_delete(caller: Caller, Input(b): Input<DeleteTeams>) -> ApiResult<Json<Value>> {
    if b.team_ids.is_empty() {
        return Err(ApiError::invalid("team_ids", "name at least one team"));
    }
    let mut targets = Vec::new();
    for (i, t) in b.team_ids.iter().enumerate() {
        targets.push(
            caller
                .project(&format!("team_ids[{i}]"), t, Action::DeleteProject)
                .await?,
        );
    }
    let mut deleted = Vec::new();
    for (scope, p) in &targets {
        ops::delete_project(&caller.state, &caller.actor, scope, p).await?;
        deleted.push(p.id.clone());
    }
    Ok(Json(json!({ "deleted_teams": deleted })))
}

// ---- people ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    user_id: Option<String>,
    user_email: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Members {
    One(Member),
    Many(Vec<Member>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberAdd {
    team_id: String,
    member: Members,
}

fn project_role(field: &str, raw: Option<&str>) -> ApiResult<ProjectRole> {
    match raw.unwrap_or("user") {
        "user" | "member" => Ok(ProjectRole::Member),
        "admin" => Ok(ProjectRole::Admin),
        other => Err(ApiError::invalid(
            field,
            format!("'{other}' is not a team role: use user or admin"),
        )),
    }
}

/// An organization member named by id or email, if there is one.
async fn find_member(
    caller: &Caller,
    user_id: Option<&str>,
    email: Option<&str>,
) -> ApiResult<Option<members::MemberRow>> {
    let org = caller.org(None, Action::ManageOrgMembers)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = members::list(&mut conn, &org).await?;
    Ok(all.into_iter().find(|m| {
        user_id.is_some_and(|u| u == m.user_id)
            || email.is_some_and(|e| e.trim().eq_ignore_ascii_case(&m.email))
    }))
}

async fn member_add(caller: Caller, Input(b): Input<MemberAdd>) -> ApiResult<Json<Value>> {
    let (scope, p) = caller
        .project("team_id", &b.team_id, Action::AddProjectMembers)
        .await?;
    let list = match b.member {
        Members::One(m) => vec![m],
        Members::Many(v) => v,
    };
    let mut added = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let field = format!("member[{i}]");
        let role = project_role(&format!("{field}.role"), m.role.as_deref())?;
        match find_member(&caller, m.user_id.as_deref(), m.user_email.as_deref()).await? {
            Some(found) => {
                ops::set_project_member(
                    &caller.state,
                    &caller.actor,
                    &scope,
                    &found.user_id,
                    role,
                    true,
                )
                .await?;
                added.push(json!({ "user_id": found.user_id, "user_email": found.email, "status": "added" }));
            }
            None => {
                let raw = m.user_email.as_deref().ok_or_else(|| {
                    ApiError::not_found(format!(
                        "{field}.user_id: no member '{}' in this organization",
                        m.user_id.as_deref().unwrap_or("")
                    ))
                })?;
                let email = Email::parse(&format!("{field}.user_email"), raw)?;
                let org = caller.org(None, Action::ManageOrgMembers)?;
                let (_, token) = ops::invite(
                    &caller.state,
                    &caller.actor,
                    &org,
                    &email,
                    OrgRole::Member,
                    Some((&p.id, role)),
                )
                .await?;
                added.push(json!({
                    "user_email": email.as_str(), "status": "invited",
                    "invitation_link": format!("{}/invite/{}", caller.state.public_url, token.expose()),
                }));
            }
        }
    }
    Ok(Json(
        json!({ "team_id": p.id, "team_alias": p.name, "members": added }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDelete {
    team_id: String,
    user_id: Option<String>,
    user_email: Option<String>,
}

async fn member_delete(caller: Caller, Input(b): Input<MemberDelete>) -> ApiResult<Json<Value>> {
    let (scope, p) = caller
        .project("team_id", &b.team_id, Action::EditProjectMemberRoles)
        .await?;
    if b.user_id.is_none() && b.user_email.is_none() {
        return Err(ApiError::invalid(
            "user_email",
            "name the member by user_email or user_id",
        ));
    }
    let found = find_member(&caller, b.user_id.as_deref(), b.user_email.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("user_email: team member"))?;
    let revoked =
        ops::remove_project_member(&caller.state, &caller.actor, &scope, &found.user_id).await?;
    Ok(Json(json!({
        "team_id": p.id, "user_id": found.user_id, "user_email": found.email, "keys_revoked": revoked,
    })))
}

fn org_role(field: &str, raw: &str) -> ApiResult<OrgRole> {
    match raw {
        "internal_user" => Ok(OrgRole::Member),
        "internal_viewer" => Ok(OrgRole::Viewer),
        "admin" => Ok(OrgRole::Owner),
        other => Err(ApiError::invalid(
            field,
            format!("'{other}' is not one of internal_user, internal_viewer, admin"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionUpdate {
    user_email: String,
    user_role: String,
    team_id: Option<String>,
    organization_id: Option<String>,
}

/// Sets a person's organization role (and puts them in a team): a member's
/// role changes at once; anyone else gets a pending invitation.
async fn member_permission_update(
    caller: Caller,
    Input(b): Input<PermissionUpdate>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let org = caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    let email = Email::parse("user_email", &b.user_email)?;
    let role = org_role("user_role", &b.user_role)?;
    let team = match &b.team_id {
        Some(t) => Some(
            caller
                .project("team_id", t, Action::AddProjectMembers)
                .await?,
        ),
        None => None,
    };
    match find_member(&caller, None, Some(email.as_str())).await? {
        Some(found) => {
            ops::change_member_role(&caller.state, &caller.actor, &org, &found.user_id, role)
                .await?;
            if let Some((scope, _)) = &team {
                if tollgate_app::policy::joins_projects(role) {
                    let mut conn = caller.state.db.pool.acquire().await?;
                    let already = projects::members(&mut conn, scope)
                        .await?
                        .iter()
                        .any(|m| m.user_id == found.user_id);
                    drop(conn);
                    if !already {
                        ops::set_project_member(
                            &caller.state,
                            &caller.actor,
                            scope,
                            &found.user_id,
                            ProjectRole::Member,
                            true,
                        )
                        .await?;
                    }
                }
            }
            Ok((
                StatusCode::OK,
                Json(json!({
                    "user_id": found.user_id, "user_email": found.email, "user_role": b.user_role,
                    "team_id": team.as_ref().map(|(_, p)| p.id.clone()), "status": "updated",
                })),
            ))
        }
        None => {
            let (inv, token) = ops::invite(
                &caller.state,
                &caller.actor,
                &org,
                &email,
                role,
                team.as_ref()
                    .map(|(_, p)| (p.id.as_str(), ProjectRole::Member)),
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "user_email": inv.email, "user_role": b.user_role,
                    "team_id": team.as_ref().map(|(_, p)| p.id.clone()), "status": "invited",
                    "invitation_link": format!("{}/invite/{}", caller.state.public_url, token.expose()),
                    "expires": iso(inv.expires_at),
                })),
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserNew {
    user_email: String,
    user_role: Option<String>,
    teams: Option<Vec<String>>,
    organization_id: Option<String>,
}

/// A new person: Tollgate accounts are made by their owners, so this
/// invites them (into the first team named, if any).
async fn user_new(
    caller: Caller,
    Input(b): Input<UserNew>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let org = caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    let email = Email::parse("user_email", &b.user_email)?;
    let role_name = b.user_role.unwrap_or_else(|| "internal_user".to_owned());
    let role = org_role("user_role", &role_name)?;
    let teams = b.teams.unwrap_or_default();
    if teams.len() > 1 {
        return Err(ApiError::invalid(
            "teams",
            "name at most one team; add more with /team/member_add once they have joined",
        ));
    }
    let team = match teams.first() {
        Some(t) => Some(
            caller
                .project("teams[0]", t, Action::AddProjectMembers)
                .await?
                .1,
        ),
        None => None,
    };
    let (inv, token) = ops::invite(
        &caller.state,
        &caller.actor,
        &org,
        &email,
        role,
        team.as_ref().map(|p| (p.id.as_str(), ProjectRole::Member)),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "user_email": inv.email, "user_role": role_name, "status": "invited",
            "teams": team.map(|p| vec![p.id]).unwrap_or_default(),
            "invitation_link": format!("{}/invite/{}", caller.state.public_url, token.expose()),
            "expires": iso(inv.expires_at),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    user_id: Option<String>,
    user_email: Option<String>,
}

async fn user_info(caller: Caller, Params(q): Params<UserQuery>) -> ApiResult<Json<Value>> {
    if q.user_id.is_none() && q.user_email.is_none() {
        return Err(ApiError::invalid(
            "user_id",
            "name the user by user_id or user_email",
        ));
    }
    let org = caller.org(None, Action::ManageOrgMembers)?;
    if let Some(m) = find_member(&caller, q.user_id.as_deref(), q.user_email.as_deref()).await? {
        let mut conn = caller.state.db.pool.acquire().await?;
        let mut teams = Vec::new();
        for (p, _) in projects::visible(&mut conn, &org).await? {
            let scope = tollgate_app::policy::authorize_machine_project(
                &caller.machine,
                &p.id,
                Action::ViewProjectMembers,
            )?;
            if projects::members(&mut conn, &scope)
                .await?
                .iter()
                .any(|x| x.user_id == m.user_id && x.role.is_some())
            {
                teams.push(p.id);
            }
        }
        let own: Vec<Value> = keys::in_org(&mut conn, &org, None, false)
            .await?
            .iter()
            .filter(|k| k.owner_id.as_deref() == Some(m.user_id.as_str()))
            .map(key_view)
            .collect();
        let litellm_role = match m.role {
            OrgRole::Owner => "admin",
            OrgRole::Viewer | OrgRole::Billing => "internal_viewer",
            OrgRole::Member => "internal_user",
        };
        return Ok(Json(json!({
            "user_id": m.user_id,
            "user_info": {
                "user_id": m.user_id, "user_email": m.email, "user_name": m.name,
                "user_role": litellm_role, "tollgate_role": m.role, "teams": teams,
            },
            "keys": own,
            "status": "active",
        })));
    }
    let mut conn = caller.state.db.pool.acquire().await?;
    let pending = invitations::pending(&mut conn, &org, now_ms()).await?;
    let inv = q
        .user_email
        .as_deref()
        .and_then(|e| {
            pending
                .iter()
                .find(|i| i.email.eq_ignore_ascii_case(e.trim()))
        })
        .ok_or_else(|| ApiError::not_found("user in this organization"))?;
    Ok(Json(json!({
        "user_id": null,
        "user_info": { "user_email": inv.email, "tollgate_role": inv.role },
        "keys": [],
        "status": "invited",
    })))
}

// ---- spend and settings ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    group_by: Option<String>,
}

fn date_of(day: i64) -> String {
    iso(day * 86_400_000)
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

async fn daily_spend(caller: Caller, Params(q): Params<SpendQuery>) -> ApiResult<Json<Value>> {
    if q.group_by.is_some() {
        return Err(ApiError::invalid(
            "group_by",
            "use /global/spend/report to group",
        ));
    }
    let org = caller.org(None, Action::ViewUsage)?;
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let days = usage::daily(&mut conn, &org, from, to, None).await?;
    Ok(Json(Value::Array(
        days.iter()
            .map(|d| {
                json!({
                    "date": date_of(d.day), "spend": d.cost_micros as f64 / 1e6,
                    "api_requests": d.requests, "prompt_tokens": d.tokens_in,
                    "completion_tokens": d.tokens_out, "total_tokens": d.tokens_in + d.tokens_out,
                })
            })
            .collect(),
    )))
}

async fn spend_report(caller: Caller, Params(q): Params<SpendQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewUsage)?;
    let (group, label) = match q.group_by.as_deref().unwrap_or("team") {
        "team" => (GroupBy::Project, "teams"),
        "api_key" => (GroupBy::Key, "api_keys"),
        "model" => (GroupBy::Model, "models"),
        other => {
            return Err(ApiError::invalid(
                "group_by",
                format!("'{other}' is not one of team, api_key, model"),
            ))
        }
    };
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let rows = usage::daily(&mut conn, &org, from, to, Some(group)).await?;
    let mut out: Vec<Value> = Vec::new();
    for r in &rows {
        let date = date_of(r.day);
        if out.last().is_none_or(|d| d["group_by_day"] != json!(date)) {
            out.push(json!({ "group_by_day": date, label: [] }));
        }
        let entry = json!({
            "id": r.group, "name": r.label, "total_spend": r.cost_micros as f64 / 1e6,
            "api_requests": r.requests, "prompt_tokens": r.tokens_in, "completion_tokens": r.tokens_out,
        });
        if let Some(Value::Array(list)) = out.last_mut().and_then(|d| d.get_mut(label)) {
            list.push(entry);
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigUpdate {
    general_settings: Option<GeneralSettings>,
    environment_variables: Option<EnvVars>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneralSettings {
    alerting: Option<Vec<String>>,
    alert_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVars {
    #[serde(rename = "WEBHOOK_URL")]
    webhook_url: Option<String>,
    #[serde(rename = "SLACK_WEBHOOK_URL")]
    slack_webhook_url: Option<String>,
}

const ALERT_TYPES: &[&str] = &["budget_alerts", "spend_reports", "daily_reports"];

/// The alerting settings: where (a webhook URL) and about what.
async fn config_update(caller: Caller, Input(b): Input<ConfigUpdate>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::EditOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let mut alerting = orgs::alerting(&mut conn, &org).await?;
    drop(conn);
    if let Some(env) = b.environment_variables {
        let parse = |field: &str, url: &str| {
            url::Url::parse(url.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(|u| u.to_string())
                .ok_or_else(|| ApiError::invalid(field, "not an http(s) URL".to_owned()))
        };
        if let Some(url) = env.webhook_url {
            alerting.webhook_url = Some(parse("environment_variables.WEBHOOK_URL", &url)?);
        }
        if let Some(url) = env.slack_webhook_url {
            alerting.slack_url = Some(parse("environment_variables.SLACK_WEBHOOK_URL", &url)?);
        }
    }
    if let Some(g) = b.general_settings {
        if let Some(channels) = g.alerting {
            for (i, c) in channels.iter().enumerate() {
                if !matches!(c.as_str(), "webhook" | "slack") {
                    return Err(ApiError::invalid(
                        &format!("general_settings.alerting[{i}]"),
                        format!("'{c}' is not a channel Tollgate sends to: use webhook or slack"),
                    ));
                }
            }
            if !channels.iter().any(|c| c == "webhook") {
                alerting.webhook_url = None;
            }
            if !channels.iter().any(|c| c == "slack") {
                alerting.slack_url = None;
            }
        }
        if let Some(types) = g.alert_types {
            for (i, t) in types.iter().enumerate() {
                if !ALERT_TYPES.contains(&t.as_str()) {
                    return Err(ApiError::invalid(
                        &format!("general_settings.alert_types[{i}]"),
                        format!("'{t}' is not one of {}", ALERT_TYPES.join(", ")),
                    ));
                }
            }
            alerting.alert_types = types;
        }
    }
    ops::set_alerting(&caller.state, &caller.actor, &org, &alerting).await?;
    Ok(Json(json!({
        "message": "alerting settings updated",
        "alerting": {
            "webhook": alerting.webhook_url.as_deref().map(orgs::url_hint),
            "slack": alerting.slack_url.as_deref().map(orgs::url_hint),
            "alert_types": alerting.alert_types,
        },
    })))
}
