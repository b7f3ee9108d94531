//! LiteLLM's team members, organization roles and `/user/*`: people are
//! organization members (or invitations) and project members.

use super::key_view;
use crate::machine::input::Input;
use crate::machine::input::Params;
use crate::machine::iso;
use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tollgate_app::core::domain::Email;
use tollgate_app::core::invitations;
use tollgate_app::core::keys;
use tollgate_app::core::members;
use tollgate_app::core::now_ms;
use tollgate_app::core::ops;
use tollgate_app::core::projects;
use tollgate_app::core::projects::Project;
use tollgate_app::policy::Action;
use tollgate_app::policy::OrgRole;
use tollgate_app::policy::OrgScope;
use tollgate_app::policy::ProjectRole;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/team/member_add", post(member_add))
        .route("/team/member_delete", post(member_delete))
        .route(
            "/organization/member_permission_update",
            post(member_permission_update).patch(member_permission_update),
        )
        .route("/user/new", post(user_new))
        .route("/user/info", get(user_info))
}

/// A member as LiteLLM names one: by user id or email, with a role.
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

/// The body of `/team/member_add`.
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

/// The body of `/team/member_delete`.
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

/// The body of `/organization/member_permission_update`.
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
            let mut out =
                invite(&caller, &org, &email, role, team.as_ref().map(|(_, p)| p)).await?;
            out["user_role"] = json!(b.user_role);
            out["team_id"] = json!(team.as_ref().map(|(_, p)| p.id.clone()));
            Ok((StatusCode::CREATED, Json(out)))
        }
    }
}

/// The body of `/user/new`.
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
    let mut out = invite(&caller, &org, &email, role, team.as_ref()).await?;
    out["user_role"] = json!(role_name);
    out["teams"] = json!(team.map(|p| vec![p.id]).unwrap_or_default());
    Ok((StatusCode::CREATED, Json(out)))
}

/// Invites `email` to the organization (into `team` as a member, if any):
/// the answer's invitation fields.
async fn invite(
    caller: &Caller,
    org: &OrgScope,
    email: &Email,
    role: OrgRole,
    team: Option<&Project>,
) -> ApiResult<Value> {
    let (inv, token) = ops::invite(
        &caller.state,
        &caller.actor,
        org,
        email,
        role,
        team.map(|p| (p.id.as_str(), ProjectRole::Member)),
    )
    .await?;
    Ok(json!({
        "user_email": inv.email, "status": "invited",
        "invitation_link": format!("{}/invite/{}", caller.state.public_url, token.expose()),
        "expires": iso(inv.expires_at),
    }))
}

/// The query of `/user/info`.
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
