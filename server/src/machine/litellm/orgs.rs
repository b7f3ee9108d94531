//! LiteLLM's `/organization/*` for the provisioning key's own organization:
//! its name, its members and their roles. Another organization is 404, and
//! new ones are made by people in the console (or by an operator).

use super::people::org_role;
use super::{Member, Members};
use crate::machine::input::{Input, Params};
use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_app::core::domain::OrgName;
use tollgate_app::core::litellm::{self, ApiUser};
use tollgate_app::core::{ops, orgs};
use tollgate_app::policy::{Action, OrgRole};

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/organization/new", post(org_new))
        .route("/organization/list", get(org_list))
        .route("/organization/info", get(org_info).post(org_info_body))
        .route("/organization/update", patch(org_update).post(org_update))
        .route("/organization/member_add", post(member_add))
        .route(
            "/organization/member_update",
            patch(member_update).post(member_update),
        )
        .route(
            "/organization/member_delete",
            delete(member_delete).post(member_delete),
        )
}

/// The role name an organization member shows in LiteLLM's org APIs.
fn org_member_role(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "org_admin",
        OrgRole::Member => "internal_user",
        OrgRole::Viewer | OrgRole::Billing => "internal_user_viewer",
    }
}

fn member_view(u: &ApiUser) -> Value {
    json!({ "user_id": u.shown_id(), "user_email": u.email, "user_role": org_member_role(u.role) })
}

async fn org_view(caller: &Caller) -> ApiResult<Value> {
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let o = orgs::get(&mut conn, &org)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let members = caller.org(None, Action::ManageOrgMembers)?;
    let (people, _) = litellm::users(&mut conn, &members, None, 1000, 0).await?;
    Ok(json!({
        "organization_id": o.id,
        "organization_alias": o.name,
        "models": [],
        "members": people.iter().map(member_view).collect::<Vec<_>>(),
    }))
}

async fn org_new(caller: Caller) -> ApiResult<Json<Value>> {
    caller.org(None, Action::EditOrganization)?;
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: "forbidden",
        message: "a provisioning key manages its own organization only; organizations are created in the console"
            .to_owned(),
        field: None,
    })
}

/// `/organization/list` takes no parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

async fn org_list(caller: Caller, Params(_): Params<NoQuery>) -> ApiResult<Json<Value>> {
    Ok(Json(json!([org_view(&caller).await?])))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoQuery {
    organization_id: String,
}

async fn org_info(caller: Caller, Params(q): Params<InfoQuery>) -> ApiResult<Json<Value>> {
    caller.org(Some(&q.organization_id), Action::ViewOrganization)?;
    Ok(Json(org_view(&caller).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoBody {
    organizations: Vec<String>,
}

async fn org_info_body(caller: Caller, Input(b): Input<InfoBody>) -> ApiResult<Json<Value>> {
    if b.organizations.is_empty() {
        return Err(ApiError::invalid(
            "organizations",
            "name at least one organization",
        ));
    }
    for o in &b.organizations {
        caller.org(Some(o), Action::ViewOrganization)?;
    }
    Ok(Json(json!([org_view(&caller).await?])))
}

/// The body of `/organization/update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    organization_id: Option<String>,
    organization_alias: Option<String>,
    models: Option<Vec<String>>,
    members_with_roles: Option<Vec<Member>>,
}

async fn org_update(caller: Caller, Input(b): Input<UpdateBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(b.organization_id.as_deref(), Action::EditOrganization)?;
    if b.models.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::invalid(
            "models",
            "an organization may use every model of its catalogue; limit models per team",
        ));
    }
    if let Some(alias) = &b.organization_alias {
        let name = OrgName::parse("organization_alias", alias)?;
        ops::rename_org(&caller.state, &caller.actor, &org, &name).await?;
    }
    if let Some(members) = &b.members_with_roles {
        put_members(&caller, members).await?;
    }
    Ok(Json(org_view(&caller).await?))
}

/// The body of `/organization/member_add`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberAdd {
    organization_id: Option<String>,
    member: Members,
}

/// Gives each named member the role named; a member must exist already
/// (made by `/user/new`, an invitation, SSO or SCIM).
async fn put_members(caller: &Caller, members: &[Member]) -> ApiResult<Vec<Value>> {
    let org = caller.org(None, Action::ManageOrgMembers)?;
    let mut out = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let field = format!("member[{i}]");
        let role = org_role(
            &format!("{field}.role"),
            m.role.as_deref().unwrap_or("internal_user"),
        )?;
        let reference = m
            .user_id
            .as_deref()
            .or(m.user_email.as_deref())
            .ok_or_else(|| {
                ApiError::invalid(
                    &format!("{field}.user_id"),
                    "name the member by user_id or user_email",
                )
            })?;
        let mut conn = caller.state.db.pool.acquire().await?;
        let u = litellm::user(&mut conn, org.org_id(), reference)
            .await?
            .ok_or_else(|| ApiError {
                field: Some(format!("{field}.user_id")),
                ..ApiError::not_found(format!("{field}.user_id: no member '{reference}'"))
            })?;
        drop(conn);
        if u.role != role {
            let org = caller.member(u.role)?;
            ops::change_member_role(&caller.state, &caller.actor, &org, &u.user_id, role).await?;
        }
        out.push(json!({ "user_id": u.shown_id(), "user_email": u.email, "user_role": org_member_role(role) }));
    }
    Ok(out)
}

async fn member_add(caller: Caller, Input(b): Input<MemberAdd>) -> ApiResult<Json<Value>> {
    caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    let list = b.member.into_vec();
    let added = put_members(&caller, &list).await?;
    Ok(Json(
        json!({ "organization_id": caller.machine.org_id, "updated_members": added }),
    ))
}

/// The body of `/organization/member_update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberUpdate {
    organization_id: Option<String>,
    user_id: Option<String>,
    user_email: Option<String>,
    role: String,
}

async fn member_update(caller: Caller, Input(b): Input<MemberUpdate>) -> ApiResult<Json<Value>> {
    caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    let m = Member {
        user_id: b.user_id,
        user_email: b.user_email,
        role: Some(b.role),
    };
    let mut out = put_members(&caller, &[m]).await?;
    Ok(Json(out.pop().unwrap_or(Value::Null)))
}

/// The body of `/organization/member_delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDelete {
    organization_id: Option<String>,
    user_id: Option<String>,
    user_email: Option<String>,
}

async fn member_delete(caller: Caller, Input(b): Input<MemberDelete>) -> ApiResult<Json<Value>> {
    let org = caller.org(b.organization_id.as_deref(), Action::ManageOrgMembers)?;
    let reference = b
        .user_id
        .as_deref()
        .or(b.user_email.as_deref())
        .ok_or_else(|| ApiError::invalid("user_id", "name the member by user_id or user_email"))?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let u = litellm::user(&mut conn, org.org_id(), reference)
        .await?
        .ok_or_else(|| ApiError {
            field: Some("user_id".to_owned()),
            ..ApiError::not_found(format!("user_id: member '{reference}'"))
        })?;
    drop(conn);
    ops::remove_member(
        &caller.state,
        &caller.actor,
        &caller.member(u.role)?,
        &u.user_id,
    )
    .await?;
    Ok(Json(
        json!({ "organization_id": org.org_id(), "deleted_user_id": u.shown_id() }),
    ))
}
