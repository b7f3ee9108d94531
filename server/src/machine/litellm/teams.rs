//! LiteLLM's `/team/*`: a team is a Tollgate project of the provisioning
//! key's organization; a team body becomes the project's settings.

use super::key_view;
use super::reset_change;
use super::team_view;
use crate::machine::input::Input;
use crate::machine::input::Params;
use crate::machine::input::{budget_change, limit_change};
use crate::machine::renamed;
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
use tollgate_app::core::limits::Caps;
use tollgate_app::core::ops;
use tollgate_app::core::projects;
use tollgate_app::core::projects::Project;
use tollgate_app::core::projects::Settings;
use tollgate_app::policy::Action;
use tollgate_app::policy::ProjectRole;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/team/new", post(team_new))
        .route("/team/update", post(team_update))
        .route("/team/info", get(team_info))
        .route("/team/list", get(team_list))
        .route("/team/delete", post(team_delete).delete(team_delete))
}

with_caps! {
    /// The body of `/team/new` and `/team/update` (a team is a project).
    struct TeamBody {
        team_id: Option<String>,
        team_alias: Option<String>,
        organization_id: Option<String>,
    }
}

impl TeamBody {
    /// The project's settings after this change.
    fn settings(self, p: &Project) -> ApiResult<Settings> {
        Ok(Settings {
            name: match self.team_alias {
                Some(a) => tollgate_app::core::domain::name("team_alias", &a, 100)?,
                None => p.name.clone(),
            },
            caps: Caps {
                models: match self.models {
                    Some(mut m) if !m.is_empty() => {
                        m.dedup();
                        m
                    }
                    _ => p.caps.models.clone(),
                },
                tpm_limit: limit_change("tpm_limit", self.tpm_limit)?
                    .map_or(p.caps.tpm_limit, |(_, n)| n),
                rpm_limit: limit_change("rpm_limit", self.rpm_limit)?
                    .map_or(p.caps.rpm_limit, |(_, n)| n),
                budget: budget_change("max_budget", self.max_budget)?.unwrap_or(p.caps.budget),
                budget_reset: reset_change("budget_duration", self.budget_duration)?
                    .unwrap_or(p.caps.budget_reset),
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
