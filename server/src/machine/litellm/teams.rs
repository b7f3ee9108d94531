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
        .route("/v2/team/list", get(team_list_v2))
        .route("/team/delete", post(team_delete).delete(team_delete))
        .route("/team/member_update", post(member_update))
        .route("/team/block", post(team_block))
        .route("/team/unblock", post(team_unblock))
}

with_caps! {
    /// The body of `/team/new` and `/team/update` (a team is a project).
    struct TeamBody {
        team_id: Option<String>,
        team_alias: Option<String>,
        organization_id: Option<String>,
        /// A named budget whose limits the team takes (`/budget/new`).
        #[serde(default, deserialize_with = "crate::machine::input::nullable")]
        budget_id: Option<Option<String>>,
        /// Members to add (or give this role); `/team/member_delete` removes.
        members_with_roles: Option<Vec<super::Member>>,
    }
}

/// A team id a caller chooses: 1 to 100 characters without spaces.
fn chosen_id(raw: &str) -> ApiResult<String> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 100 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(
            "team_id",
            "1 to 100 characters without spaces",
        ));
    }
    Ok(id.to_owned())
}

/// Takes a named budget's limits where the body does not set its own.
async fn with_budget(caller: &Caller, b: &mut TeamBody) -> ApiResult<()> {
    let caps = super::budgets::Caps {
        max_budget: &mut b.max_budget,
        budget_duration: &mut b.budget_duration,
        tpm_limit: &mut b.tpm_limit,
        rpm_limit: &mut b.rpm_limit,
    };
    super::budgets::fill(caller, b.budget_id.as_ref(), caps).await
}

/// Stores what LiteLLM keeps on team `p` (as it was before the change) after
/// a body changed it: its id (on create), the duration as written and the
/// named budget, each kept where the body did not name it.
async fn keep_extras(
    caller: &Caller,
    p: &Project,
    external_id: Option<&str>,
    duration: Option<Option<String>>,
    budget_id: Option<Option<String>>,
) -> ApiResult<()> {
    let org = caller.org(None, Action::EditProjectSettings)?;
    let duration = duration.unwrap_or_else(|| p.budget_duration.clone());
    let budget_id = budget_id.unwrap_or_else(|| p.budget_id.clone());
    ops::litellm::set_project_extras(
        &caller.state,
        &caller.actor,
        &org,
        &p.id,
        external_id,
        duration.as_deref(),
        budget_id.as_deref(),
    )
    .await?;
    Ok(())
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

async fn team_new(caller: Caller, Input(mut b): Input<TeamBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(b.organization_id.as_deref(), Action::CreateProject)?;
    let chosen = b.team_id.take().map(|t| chosen_id(&t)).transpose()?;
    if let Some(id) = &chosen {
        let mut conn = caller.state.db.pool.acquire().await?;
        if projects::find(&mut conn, &org, id).await?.is_some() {
            return Err(ApiError::invalid(
                "team_id",
                format!("'{id}' already names a team of this organization"),
            ));
        }
    }
    let alias = b
        .team_alias
        .clone()
        .or_else(|| chosen.clone())
        .ok_or_else(|| ApiError::invalid("team_alias", "is required (or a team_id)"))?;
    with_budget(&caller, &mut b).await?;
    let members = b.members_with_roles.take();
    let (duration, budget_id) = (b.budget_duration.clone(), b.budget_id.clone());
    let p = caller
        .create_project(&org, "team_alias", &alias, |draft| b.settings(draft))
        .await?;
    keep_extras(&caller, &p, chosen.as_deref(), duration, budget_id).await?;
    if let Some(members) = members {
        let (scope, _) = caller
            .project("team_id", &p.id, Action::AddProjectMembers)
            .await?;
        super::people::put_members(&caller, &scope, &members).await?;
    }
    let (_, p) = caller
        .project("team_id", &p.id, Action::ViewProject)
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
    with_budget(&caller, &mut b).await?;
    let members = b.members_with_roles.take();
    let (duration, budget_id) = (b.budget_duration.clone(), b.budget_id.clone());
    let settings = b.settings(&before)?;
    caller
        .check_catalogue("models", &settings.caps.models)
        .await?;
    let p = ops::update_project(&caller.state, &caller.actor, &scope, &settings)
        .await
        .map_err(|e| renamed(e.into(), "name", "team_alias"))?;
    keep_extras(&caller, &before, None, duration, budget_id).await?;
    if let Some(members) = members {
        super::people::put_members(&caller, &scope, &members).await?;
    }
    let (_, p) = caller
        .project("team_id", &p.id, Action::ViewProject)
        .await?;
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
    let mut shown = std::collections::HashMap::new();
    for m in &people {
        let u = tollgate_app::core::litellm::user(&mut conn, org.org_id(), &m.user_id).await?;
        shown.insert(m.user_id.clone(), u.and_then(|u| u.external_id));
    }
    let (team_keys, _) = keys::page_in_org(
        &mut conn,
        &org,
        &keys::OrgKeyQuery {
            project_id: Some(&p.id),
            name: None,
            owner_id: None,
            limit: 100,
            offset: 0,
            ..Default::default()
        },
    )
    .await?;
    let members: Vec<Value> = people
        .iter()
        .filter(|m| m.role.is_some())
        .map(|m| {
            json!({
                "user_id": shown.get(&m.user_id).cloned().flatten().unwrap_or_else(|| m.user_id.clone()),
                "user_email": m.email,
                "role": if m.role == Some(ProjectRole::Member) { "user" } else { "admin" },
            })
        })
        .collect();
    let mut info = team_view(&p);
    info["members_with_roles"] = json!(members);
    Ok(Json(json!({
        "team_id": super::team_id_of(&p),
        "team_info": info,
        "members_with_roles": members,
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

/// The query of `/v2/team/list`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamListQuery {
    organization_id: Option<String>,
    team_alias: Option<String>,
    team_id: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

async fn team_list_v2(caller: Caller, Params(q): Params<TeamListQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(q.organization_id.as_deref(), Action::ViewProject)?;
    let size = q.page_size.unwrap_or(100);
    if !(1..=100).contains(&size) {
        return Err(ApiError::invalid("page_size", "must be from 1 to 100"));
    }
    let page = q.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::invalid("page", "must be from 1 to 1000000"));
    }
    let mut conn = caller.state.db.pool.acquire().await?;
    let (shown, total) = projects::page(
        &mut conn,
        &org,
        q.team_alias.as_deref(),
        q.team_id.as_deref(),
        size,
        (page - 1).saturating_mul(size),
    )
    .await?;
    Ok(Json(json!({
        "teams": shown.iter().map(team_view).collect::<Vec<_>>(),
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": (total + size - 1) / size,
    })))
}

/// The body of `/team/member_update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberUpdate {
    team_id: String,
    user_id: Option<String>,
    user_email: Option<String>,
    role: String,
    /// Per-member budgets are not kept: refused unless null.
    max_budget_in_team: Option<f64>,
}

async fn member_update(caller: Caller, Input(b): Input<MemberUpdate>) -> ApiResult<Json<Value>> {
    if b.max_budget_in_team.is_some() {
        return Err(ApiError::invalid(
            "max_budget_in_team",
            "is not kept: give the member's keys a max_budget instead",
        ));
    }
    let (scope, p) = caller
        .project("team_id", &b.team_id, Action::EditProjectMemberRoles)
        .await?;
    let reference = b
        .user_id
        .as_deref()
        .or(b.user_email.as_deref())
        .ok_or_else(|| ApiError::invalid("user_id", "name the member by user_id or user_email"))?;
    let role = super::people::project_role("role", Some(&b.role))?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let user = tollgate_app::core::litellm::user(&mut conn, scope.org_id(), reference)
        .await?
        .ok_or_else(|| ApiError {
            field: Some("user_id".to_owned()),
            ..ApiError::not_found(format!("user_id: member '{reference}'"))
        })?;
    drop(conn);
    super::people::set_team_role(&caller, &scope, &user, role, false, "role").await?;
    Ok(Json(json!({
        "team_id": super::team_id_of(&p), "user_id": user.shown_id(), "user_email": user.email, "role": b.role,
    })))
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
        deleted.push(super::team_id_of(p).to_owned());
    }
    Ok(Json(json!({ "deleted_teams": deleted })))
}

/// The body of `/team/block` and `/team/unblock`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockTeam {
    team_id: String,
}

async fn team_block(caller: Caller, Input(b): Input<BlockTeam>) -> ApiResult<Json<Value>> {
    set_blocked(caller, &b.team_id, true).await
}

async fn team_unblock(caller: Caller, Input(b): Input<BlockTeam>) -> ApiResult<Json<Value>> {
    set_blocked(caller, &b.team_id, false).await
}

async fn set_blocked(caller: Caller, team: &str, blocked: bool) -> ApiResult<Json<Value>> {
    let (scope, _) = caller
        .project("team_id", team, Action::EditProjectSettings)
        .await?;
    ops::litellm::set_project_blocked(&caller.state, &caller.actor, &scope, blocked).await?;
    let (_, p) = caller.project("team_id", team, Action::ViewProject).await?;
    Ok(Json(team_view(&p)))
}
