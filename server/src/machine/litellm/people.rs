//! LiteLLM's team members, organization roles and `/user/*`: people are
//! organization members (or invitations) and project members.

use super::key_view;
use super::Members;
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
use tollgate_app::core::domain::{Email, PersonName};
use tollgate_app::core::invitations;
use tollgate_app::core::keys;
use tollgate_app::core::litellm::{self, ApiUser};
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
        .route("/user/list", get(user_list))
        .route("/user/update", post(user_update))
        .route("/user/delete", post(user_delete))
}

/// The body of `/team/member_add`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberAdd {
    team_id: String,
    member: Members,
}

pub(super) fn project_role(field: &str, raw: Option<&str>) -> ApiResult<ProjectRole> {
    match raw.unwrap_or("user") {
        "user" | "member" => Ok(ProjectRole::Member),
        "admin" => Ok(ProjectRole::Admin),
        other => Err(ApiError::invalid(
            field,
            format!("'{other}' is not a team role: use user or admin"),
        )),
    }
}

/// An organization member named by the id the caller chose, Tollgate's id
/// or email, if there is one.
async fn find_member(
    caller: &Caller,
    user_id: Option<&str>,
    email: Option<&str>,
) -> ApiResult<Option<ApiUser>> {
    let org = caller.org(None, Action::ManageOrgMembers)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    for reference in [user_id, email].into_iter().flatten() {
        if let Some(u) = litellm::user(&mut conn, org.org_id(), reference).await? {
            return Ok(Some(u));
        }
    }
    Ok(None)
}

/// Puts `members` in a team with their roles (`/team/new` and
/// `/team/update` with `members_with_roles`): missing ones are added, the
/// others given the role named; nobody is removed.
pub(super) async fn put_members(
    caller: &Caller,
    scope: &tollgate_app::policy::ProjectScope,
    members: &[super::Member],
) -> ApiResult<()> {
    let mut conn = caller.state.db.pool.acquire().await?;
    let current = projects::members(&mut conn, scope).await?;
    drop(conn);
    for (i, m) in members.iter().enumerate() {
        let field = format!("members_with_roles[{i}]");
        let role = project_role(&format!("{field}.role"), m.role.as_deref())?;
        let found = find_member(caller, m.user_id.as_deref(), m.user_email.as_deref())
            .await?
            .ok_or_else(|| ApiError {
                field: Some(format!("{field}.user_id")),
                ..ApiError::not_found(format!(
                    "{field}.user_id: no member '{}'",
                    m.user_id
                        .as_deref()
                        .or(m.user_email.as_deref())
                        .unwrap_or("")
                ))
            })?;
        let now = current
            .iter()
            .find(|c| c.user_id == found.user_id)
            .and_then(|c| c.role);
        if now != Some(role) {
            set_team_role(
                caller,
                scope,
                &found,
                role,
                now.is_none(),
                &format!("{field}.role"),
            )
            .await?;
        }
    }
    Ok(())
}

/// Gives a member a role in a team (`adding` them, or changing it). An
/// organization owner administers every team: they are recorded as admin,
/// and refused any other role.
pub(super) async fn set_team_role(
    caller: &Caller,
    scope: &tollgate_app::policy::ProjectScope,
    user: &ApiUser,
    role: ProjectRole,
    adding: bool,
    field: &str,
) -> ApiResult<()> {
    if tollgate_app::policy::sees_all_projects(user.role) {
        if role != ProjectRole::Admin {
            return Err(ApiError::invalid(
                field,
                format!(
                    "'{}' owns the organization and administers every team: give them role admin",
                    user.shown_id()
                ),
            ));
        }
        ops::litellm::record_team_owner(&caller.state, &caller.actor, scope, &user.user_id).await?;
        return Ok(());
    }
    ops::set_project_member(
        &caller.state,
        &caller.actor,
        scope,
        &user.user_id,
        role,
        adding,
    )
    .await?;
    Ok(())
}

async fn member_add(caller: Caller, Input(b): Input<MemberAdd>) -> ApiResult<Json<Value>> {
    let (scope, p) = caller
        .project("team_id", &b.team_id, Action::AddProjectMembers)
        .await?;
    let list = b.member.into_vec();
    let mut added = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let field = format!("member[{i}]");
        let role = project_role(&format!("{field}.role"), m.role.as_deref())?;
        match find_member(&caller, m.user_id.as_deref(), m.user_email.as_deref()).await? {
            Some(found) => {
                set_team_role(
                    &caller,
                    &scope,
                    &found,
                    role,
                    true,
                    &format!("{field}.role"),
                )
                .await?;
                added.push(json!({ "user_id": found.shown_id(), "user_email": found.email, "status": "added" }));
            }
            None => {
                let raw = m.user_email.as_deref().ok_or_else(|| {
                    ApiError::not_found(format!(
                        "{field}.user_id: member '{}'",
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
        json!({ "team_id": super::team_id_of(&p), "team_alias": p.name, "members": added }),
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
        "team_id": super::team_id_of(&p), "user_id": found.shown_id(), "user_email": found.email, "keys_revoked": revoked,
    })))
}

/// LiteLLM's user roles, as organization roles.
pub(super) fn org_role(field: &str, raw: &str) -> ApiResult<OrgRole> {
    match raw {
        "internal_user" | "org_member" => Ok(OrgRole::Member),
        "internal_viewer" | "internal_user_viewer" | "proxy_admin_viewer" => Ok(OrgRole::Viewer),
        "admin" | "proxy_admin" | "org_admin" => Ok(OrgRole::Owner),
        other => Err(ApiError::invalid(
            field,
            format!(
                "'{other}' is not one of proxy_admin, admin, internal_user, internal_user_viewer"
            ),
        )),
    }
}

/// The LiteLLM role a member shows: the one they were given while it still
/// names their role, else their role's own.
pub(super) fn shown_role(u: &ApiUser) -> &str {
    match u.api_role.as_deref() {
        Some(r) if org_role("user_role", r).ok() == Some(u.role) => r,
        _ => match u.role {
            OrgRole::Owner => "proxy_admin",
            OrgRole::Member => "internal_user",
            OrgRole::Viewer | OrgRole::Billing => "internal_user_viewer",
        },
    }
}

fn user_view(u: &ApiUser) -> Value {
    json!({
        "user_id": u.shown_id(),
        "user_alias": u.alias,
        "user_email": u.email,
        "user_role": shown_role(u),
        "tollgate_role": u.role,
        "tollgate_user_id": u.user_id,
        "created_at": iso(u.created_at),
    })
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
            if found.role != role {
                let org = caller.member(found.role)?;
                ops::change_member_role(&caller.state, &caller.actor, &org, &found.user_id, role)
                    .await?;
            }
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
                    "user_id": found.shown_id(), "user_email": found.email, "user_role": b.user_role,
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

/// The body of `/user/new` and `/user/update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user_id: Option<String>,
    user_email: Option<String>,
    user_alias: Option<String>,
    user_role: Option<String>,
    teams: Option<Vec<String>>,
    organization_id: Option<String>,
    /// LiteLLM makes a key with a new user; Tollgate keys live in a team, so
    /// only `false` is accepted (make keys with /key/generate).
    auto_create_key: Option<Value>,
}

impl UserBody {
    fn check_auto_create_key(&self) -> ApiResult<()> {
        match &self.auto_create_key {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(()),
            Some(_) => Err(ApiError::invalid(
                "auto_create_key",
                "Tollgate keys live in a team: set it to false and make keys with /key/generate",
            )),
        }
    }
}

/// A user id a caller chooses: 1 to 100 characters without spaces.
fn chosen_user_id(raw: &str) -> ApiResult<String> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 100 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(
            "user_id",
            "1 to 100 characters without spaces",
        ));
    }
    Ok(id.to_owned())
}

/// A new person. With a `user_id`, they become a member at once under that
/// id (like a SCIM user: they sign in through the organization's SSO, or
/// after an operator sets a password); without one, or when their account
/// already belongs to another organization, they are invited.
async fn user_new(
    caller: Caller,
    Input(b): Input<UserBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let org = caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    b.check_auto_create_key()?;
    let raw_email = b.user_email.as_deref().ok_or_else(|| {
        ApiError::invalid(
            "user_email",
            "is required: people sign in to Tollgate by email",
        )
    })?;
    let email = Email::parse("user_email", raw_email)?;
    let explicit_role = b.user_role.is_some();
    let role_name = b
        .user_role
        .clone()
        .unwrap_or_else(|| "internal_user".to_owned());
    let role = org_role("user_role", &role_name)?;
    let mut teams = Vec::new();
    for (i, t) in b.teams.iter().flatten().enumerate() {
        teams.push(
            caller
                .project(&format!("teams[{i}]"), t, Action::AddProjectMembers)
                .await?,
        );
    }
    if let Some(raw_id) = &b.user_id {
        let id = chosen_user_id(raw_id)?;
        let name = PersonName::parse(
            "user_alias",
            b.user_alias.as_deref().unwrap_or_else(|| email.as_str()),
        )?;
        let new = ops::litellm::NewApiUser {
            email: &email,
            name: &name,
            role,
            external_id: Some(&id),
            alias: b.user_alias.as_deref(),
            api_role: &role_name,
        };
        match ops::litellm::provision_user(&caller.state, &caller.actor, &org, &new).await? {
            ops::litellm::Provisioned::Created(u) | ops::litellm::Provisioned::Linked(u) => {
                // Someone already a member keeps their role unless one is named.
                if explicit_role && u.role != role {
                    let org = caller.member(u.role)?;
                    ops::change_member_role(&caller.state, &caller.actor, &org, &u.user_id, role)
                        .await?;
                }
                let mut joined = Vec::new();
                for (scope, p) in &teams {
                    let already = {
                        let mut conn = caller.state.db.pool.acquire().await?;
                        projects::members(&mut conn, scope)
                            .await?
                            .iter()
                            .any(|m| m.user_id == u.user_id && m.role.is_some())
                    };
                    if !already {
                        ops::set_project_member(
                            &caller.state,
                            &caller.actor,
                            scope,
                            &u.user_id,
                            ProjectRole::Member,
                            true,
                        )
                        .await?;
                    }
                    joined.push(super::team_id_of(p).to_owned());
                }
                let mut out = user_view(&u);
                out["user_role"] = json!(role_name);
                out["teams"] = json!(joined);
                out["key"] = Value::Null;
                out["status"] = json!("created");
                return Ok((StatusCode::OK, Json(out)));
            }
            ops::litellm::Provisioned::Elsewhere => {}
        }
    }
    if teams.len() > 1 {
        return Err(ApiError::invalid(
            "teams",
            "an invitation names at most one team; add more with /team/member_add once they have joined",
        ));
    }
    let team = teams.first().map(|(_, p)| p);
    let mut out = invite(&caller, &org, &email, role, team).await?;
    out["user_role"] = json!(role_name);
    out["teams"] = json!(team.map(|p| vec![super::team_id_of(p)]).unwrap_or_default());
    Ok((StatusCode::CREATED, Json(out)))
}

/// Changes a member: their LiteLLM role (and with it their organization
/// role) and alias. Their email is theirs to change.
async fn user_update(caller: Caller, Input(b): Input<UserBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    b.check_auto_create_key()?;
    if b.teams.is_some() {
        return Err(ApiError::invalid(
            "teams",
            "change teams with /team/member_add and /team/member_delete",
        ));
    }
    let u = find_member(&caller, b.user_id.as_deref(), b.user_email.as_deref())
        .await?
        .ok_or_else(|| ApiError {
            field: Some("user_id".to_owned()),
            ..ApiError::not_found(format!(
                "user_id: member '{}'",
                b.user_id
                    .as_deref()
                    .or(b.user_email.as_deref())
                    .unwrap_or("")
            ))
        })?;
    if let Some(e) = &b.user_email {
        if !e.trim().eq_ignore_ascii_case(&u.email) {
            return Err(ApiError::invalid(
                "user_email",
                "a member's email is theirs to change; it cannot be set through the API",
            ));
        }
    }
    if let Some(r) = &b.user_role {
        let role = org_role("user_role", r)?;
        if role != u.role {
            let org = caller.member(u.role)?;
            ops::change_member_role(&caller.state, &caller.actor, &org, &u.user_id, role).await?;
        }
    }
    if let Some(a) = &b.user_alias {
        tollgate_app::core::domain::name("user_alias", a, 100)?;
    }
    ops::litellm::set_user_extras(
        &caller.state,
        &caller.actor,
        &org,
        &u,
        b.user_alias.as_deref(),
        b.user_role.as_deref(),
    )
    .await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let after = litellm::user(&mut conn, org.org_id(), &u.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_view(&after)))
}

/// The body of `/user/delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDelete {
    user_ids: Vec<String>,
}

/// Removes members from the organization; the keys they hold are revoked.
async fn user_delete(caller: Caller, Input(b): Input<UserDelete>) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ManageOrgMembers)?;
    if b.user_ids.is_empty() {
        return Err(ApiError::invalid("user_ids", "name at least one user"));
    }
    let mut found = Vec::new();
    for (i, id) in b.user_ids.iter().enumerate() {
        let u = find_member(&caller, Some(id), None)
            .await?
            .ok_or_else(|| ApiError {
                field: Some(format!("user_ids[{i}]")),
                ..ApiError::not_found(format!("user_ids[{i}]: member '{id}'"))
            })?;
        caller.member(u.role)?;
        found.push(u);
    }
    let mut deleted = Vec::new();
    for u in &found {
        ops::remove_member(
            &caller.state,
            &caller.actor,
            &caller.member(u.role)?,
            &u.user_id,
        )
        .await?;
        deleted.push(u.shown_id().to_owned());
    }
    Ok(Json(json!({ "deleted_users": deleted })))
}

/// The query of `/user/list`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserListQuery {
    role: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

async fn user_list(caller: Caller, Params(q): Params<UserListQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ManageOrgMembers)?;
    let size = q.page_size.unwrap_or(25);
    if !(1..=100).contains(&size) {
        return Err(ApiError::invalid("page_size", "must be from 1 to 100"));
    }
    let page = q.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::invalid("page", "must be from 1 to 1000000"));
    }
    let role = q.role.as_deref().map(|r| org_role("role", r)).transpose()?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let (shown, total) =
        litellm::users(&mut conn, &org, role, size, (page - 1).saturating_mul(size)).await?;
    Ok(Json(json!({
        "users": shown.iter().map(user_view).collect::<Vec<_>>(),
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": (total + size - 1) / size,
    })))
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
                teams.push(super::team_id_of(&p).to_owned());
            }
        }
        let (own, _) = keys::page_in_org(
            &mut conn,
            &org,
            &keys::OrgKeyQuery {
                project_id: None,
                name: None,
                owner_id: Some(&m.user_id),
                limit: 100,
                offset: 0,
                ..Default::default()
            },
        )
        .await?;
        let mut info = user_view(&m);
        info["user_name"] = json!(m.name);
        info["teams"] = json!(teams);
        return Ok(Json(json!({
            "user_id": m.shown_id(),
            "user_info": info,
            "keys": own.iter().map(key_view).collect::<Vec<_>>(),
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
