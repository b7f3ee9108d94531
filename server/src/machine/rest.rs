//! The native REST API under `/api/v1` — the organization, its projects,
//! members, keys and usage — and its OpenAPI document at `/api/openapi.json`,
//! generated from these handlers and types.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_app::core::keys::{self, KeyKind, KeyRow};
use tollgate_app::core::limits::Caps;
use tollgate_app::core::projects::{self, Project, Settings};
use tollgate_app::core::state::AppState;
use tollgate_app::core::usage::{self, GroupBy};
use tollgate_app::core::{members, now_ms, ops, orgs};
use tollgate_app::format::Usd;
use tollgate_app::policy::{Action, ProjectRole, ProjectScope};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::input::{budget_change, expiry, limit_change, nullable, reset, Input, KeySpec, Params};
use super::{iso, ApiError, ApiResult, Caller, Routes};

/// Each route once: the router and the OpenAPI document both come from the
/// handlers' `#[utoipa::path]` declarations.
pub fn routes() -> Routes {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(organization))
        .routes(routes!(org_members))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(project_members))
        .routes(routes!(set_project_member, remove_project_member))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, delete_key))
        .routes(routes!(rotate_key))
        .routes(routes!(usage_report))
        .split_for_parts();
    let paths = doc.paths.paths.keys().cloned().collect();
    Routes::declared(router, paths).route(
        "/api/openapi.json",
        get(move || std::future::ready(Json(doc.clone()))),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate API",
        description = "Manage an organization's projects, members, keys and usage with a provisioning key \
                       (`Authorization: Bearer sk-tgp-…`). Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("provisioning_key" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "provisioning_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: invalid_field, malformed_json, unauthorized, forbidden, not_found, conflict, internal.
    code: String,
    /// Names the field where one is at fault.
    message: String,
    field: Option<String>,
}

// ---- organization and members ----

#[derive(Serialize, ToSchema)]
pub struct OrganizationOut {
    id: String,
    name: String,
    /// USD per period; null: no cap.
    spend_cap: Option<f64>,
    spend_cap_reset: String,
    content_logging: bool,
}

#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    responses((status = 200, body = OrganizationOut), (status = 401, body = ErrorBody)))]
async fn organization(caller: Caller) -> ApiResult<Json<OrganizationOut>> {
    let scope = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let org = orgs::get(&mut conn, &scope)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let s = orgs::spending(&mut conn, &scope).await?;
    Ok(Json(OrganizationOut {
        id: org.id,
        name: org.name,
        spend_cap: s.spend_cap.map(Usd::dollars),
        spend_cap_reset: s.spend_cap_reset.as_str().to_owned(),
        content_logging: s.content_logging,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MemberOut {
    user_id: String,
    email: String,
    name: String,
    /// owner, member, billing or viewer; in a project: admin or member.
    role: String,
}

impl MemberOut {
    fn new(user_id: String, email: String, name: String, role: &str) -> MemberOut {
        MemberOut {
            user_id,
            email,
            name,
            role: role.to_owned(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/members", tag = "organization",
    responses((status = 200, body = [MemberOut]), (status = 401, body = ErrorBody)))]
async fn org_members(caller: Caller) -> ApiResult<Json<Vec<MemberOut>>> {
    let scope = caller.org(None, Action::ManageOrgMembers)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = members::list(&mut conn, &scope).await?;
    Ok(Json(
        all.into_iter()
            .map(|m| MemberOut::new(m.user_id, m.email, m.name, m.role.as_str()))
            .collect(),
    ))
}

// ---- projects ----

#[derive(Serialize, ToSchema)]
pub struct ProjectOut {
    id: String,
    name: String,
    models: Vec<String>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    /// USD per period; null: no budget.
    max_budget: Option<f64>,
    /// never, daily, weekly or monthly (calendar-aligned, UTC).
    budget_reset: String,
    ip_allowlist: Vec<String>,
    content_logging: bool,
    created_at: String,
}

fn project_out(p: Project) -> ProjectOut {
    ProjectOut {
        id: p.id,
        name: p.name,
        models: p.caps.models,
        tpm_limit: p.caps.tpm_limit,
        rpm_limit: p.caps.rpm_limit,
        max_budget: p.caps.budget.map(Usd::dollars),
        budget_reset: p.caps.budget_reset.as_str().to_owned(),
        ip_allowlist: p.ip_allowlist,
        content_logging: p.content_logging,
        created_at: iso(p.created_at),
    }
}

/// The body of a REST route that sets a project's or a key's limits: its own
/// fields, then the caps both carry (`null` clears one; absent keeps it).
macro_rules! with_caps {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$f:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$f])* $field: $ty,)*
            /// Model ids from the organization's catalogue.
            models: Option<Vec<String>>,
            #[serde(default, deserialize_with = "nullable")]
            #[schema(value_type = Option<f64>)]
            max_budget: Option<Option<f64>>,
            /// never, daily, weekly or monthly.
            budget_reset: Option<String>,
            #[serde(default, deserialize_with = "nullable")]
            #[schema(value_type = Option<i64>)]
            tpm_limit: Option<Option<i64>>,
            #[serde(default, deserialize_with = "nullable")]
            #[schema(value_type = Option<i64>)]
            rpm_limit: Option<Option<i64>>,
        }
    };
}

with_caps! {
    /// A project's settings; on update, absent fields stay and `null` clears.
    pub struct ProjectIn {
        name: Option<String>,
        ip_allowlist: Option<Vec<String>>,
        content_logging: Option<bool>,
    }
}

impl ProjectIn {
    fn settings(self, p: &Project) -> ApiResult<Settings> {
        Ok(Settings {
            name: match self.name {
                Some(n) => tollgate_app::core::domain::name("name", &n, 100)?,
                None => p.name.clone(),
            },
            caps: Caps {
                models: self.models.unwrap_or_else(|| p.caps.models.clone()),
                tpm_limit: limit_change("tpm_limit", self.tpm_limit)?
                    .map_or(p.caps.tpm_limit, |(_, n)| n),
                rpm_limit: limit_change("rpm_limit", self.rpm_limit)?
                    .map_or(p.caps.rpm_limit, |(_, n)| n),
                budget: budget_change("max_budget", self.max_budget)?.unwrap_or(p.caps.budget),
                budget_reset: match self.budget_reset {
                    Some(r) => reset("budget_reset", &r)?,
                    None => p.caps.budget_reset,
                },
            },
            ip_allowlist: match self.ip_allowlist {
                Some(l) => {
                    tollgate_app::core::limits::parse_ip_allowlist("ip_allowlist", &l.join(","))?
                }
                None => p.ip_allowlist.clone(),
            },
            content_logging: self.content_logging.unwrap_or(p.content_logging),
        })
    }
}

/// `{project}`: a project of the caller's organization.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectAt {
    /// The project's id or name.
    project: String,
}

impl ProjectAt {
    async fn open(&self, caller: &Caller, action: Action) -> ApiResult<(ProjectScope, Project)> {
        caller.project("project", &self.project, action).await
    }
}

/// `{project}/members/{user_id}`: one member of a project.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberAt {
    /// The project's id or name.
    project: String,
    /// The member's user id.
    user_id: String,
}

impl MemberAt {
    async fn open(&self, caller: &Caller, action: Action) -> ApiResult<ProjectScope> {
        let (scope, _) = caller.project("project", &self.project, action).await?;
        Ok(scope)
    }
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses((status = 200, body = [ProjectOut]), (status = 401, body = ErrorBody)))]
async fn list_projects(caller: Caller) -> ApiResult<Json<Vec<ProjectOut>>> {
    let scope = caller.org(None, Action::ViewProject)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = projects::visible(&mut conn, &scope).await?;
    Ok(Json(all.into_iter().map(|(p, _)| project_out(p)).collect()))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = ProjectIn,
    responses((status = 201, body = ProjectOut), (status = 400, body = ErrorBody)))]
async fn create_project(
    caller: Caller,
    Input(b): Input<ProjectIn>,
) -> ApiResult<(StatusCode, Json<ProjectOut>)> {
    let org = caller.org(None, Action::CreateProject)?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    let p = caller
        .create_project(&org, "name", &name, |draft| b.settings(draft))
        .await?;
    Ok((StatusCode::CREATED, Json(project_out(p))))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects",
    params(ProjectAt),
    responses((status = 200, body = ProjectOut), (status = 404, body = ErrorBody)))]
async fn get_project(caller: Caller, Path(at): Path<ProjectAt>) -> ApiResult<Json<ProjectOut>> {
    let (_, p) = at.open(&caller, Action::ViewProject).await?;
    Ok(Json(project_out(p)))
}

#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", request_body = ProjectIn,
    params(ProjectAt),
    responses((status = 200, body = ProjectOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_project(
    caller: Caller,
    Path(at): Path<ProjectAt>,
    Input(b): Input<ProjectIn>,
) -> ApiResult<Json<ProjectOut>> {
    let (scope, before) = at.open(&caller, Action::EditProjectSettings).await?;
    let settings = b.settings(&before)?;
    let p = ops::update_project(&caller.state, &caller.actor, &scope, &settings).await?;
    Ok(Json(project_out(p)))
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    id: String,
    /// How many keys still worked when it went (they are gone with it).
    keys_revoked: i64,
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects",
    params(ProjectAt),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
async fn delete_project(caller: Caller, Path(at): Path<ProjectAt>) -> ApiResult<Json<Deleted>> {
    let (scope, p) = at.open(&caller, Action::DeleteProject).await?;
    let revoked = ops::delete_project(&caller.state, &caller.actor, &scope, &p).await?;
    Ok(Json(Deleted {
        id: p.id,
        keys_revoked: revoked,
    }))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/members", tag = "projects",
    params(ProjectAt),
    responses((status = 200, body = [MemberOut]), (status = 404, body = ErrorBody)))]
async fn project_members(
    caller: Caller,
    Path(at): Path<ProjectAt>,
) -> ApiResult<Json<Vec<MemberOut>>> {
    let (scope, _) = at.open(&caller, Action::ViewProjectMembers).await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = projects::members(&mut conn, &scope).await?;
    let role = |r: Option<ProjectRole>| r.map_or("admin", ProjectRole::as_str);
    Ok(Json(
        all.into_iter()
            .map(|m| MemberOut::new(m.user_id, m.email, m.name, role(m.role)))
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleIn {
    /// admin or member.
    role: String,
}

#[utoipa::path(put, path = "/api/v1/projects/{project}/members/{user_id}", tag = "projects",
    request_body = RoleIn,
    params(MemberAt),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_project_member(
    caller: Caller,
    Path(at): Path<MemberAt>,
    Input(b): Input<RoleIn>,
) -> ApiResult<StatusCode> {
    let role: ProjectRole = b
        .role
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    let scope = at.open(&caller, Action::AddProjectMembers).await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let present = projects::members(&mut conn, &scope)
        .await?
        .iter()
        .any(|m| m.user_id == at.user_id && m.role.is_some());
    drop(conn);
    ops::set_project_member(
        &caller.state,
        &caller.actor,
        &scope,
        &at.user_id,
        role,
        !present,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{user_id}", tag = "projects",
    params(MemberAt),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_project_member(caller: Caller, Path(at): Path<MemberAt>) -> ApiResult<StatusCode> {
    let scope = at.open(&caller, Action::EditProjectMemberRoles).await?;
    ops::remove_project_member(&caller.state, &caller.actor, &scope, &at.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- keys ----

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    /// `api_key_id_hash`: names the key in this API; never the secret.
    id: String,
    name: String,
    /// `sk-tg-…a91c`.
    hint: String,
    project_id: String,
    project_name: String,
    /// user or service.
    kind: String,
    owner_id: Option<String>,
    models: Vec<String>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_budget: Option<f64>,
    budget_reset: String,
    /// Spent since the key was made, USD.
    spend: f64,
    expires_at: Option<String>,
    #[schema(value_type = Object)]
    metadata: Value,
    tags: Vec<String>,
    /// active, expired or revoked.
    status: String,
    created_at: String,
}

fn key_out(k: KeyRow) -> KeyOut {
    let now = now_ms();
    let status = k.status(now).as_str();
    KeyOut {
        id: k.id_hash,
        name: k.limits.name,
        hint: k.hint,
        project_id: k.project_id,
        project_name: k.project_name,
        kind: k.kind.as_str().to_owned(),
        owner_id: k.owner_id,
        models: k.limits.caps.models,
        tpm_limit: k.limits.caps.tpm_limit,
        rpm_limit: k.limits.caps.rpm_limit,
        max_budget: k.limits.caps.budget.map(Usd::dollars),
        budget_reset: k.limits.caps.budget_reset.as_str().to_owned(),
        spend: k.spend.dollars(),
        expires_at: k.limits.expires_at.map(iso),
        metadata: k.limits.metadata,
        tags: k.limits.tags,
        status: status.to_owned(),
        created_at: iso(k.created_at),
    }
}

/// The answer to create and rotate: the only time the token is shown.
#[derive(Serialize, ToSchema)]
pub struct KeyIssued {
    token: String,
    key: KeyOut,
}

with_caps! {
    /// A service key's settings; on update, absent fields stay and `null` clears.
    pub struct KeyIn {
        /// The project's id or name (create only).
        project: Option<String>,
        name: Option<String>,
        /// RFC 3339, or a duration from now such as 90d.
        #[serde(default, deserialize_with = "nullable")]
        #[schema(value_type = Option<String>)]
        expires_at: Option<Option<String>>,
        #[schema(value_type = Option<Object>)]
        metadata: Option<Value>,
        tags: Option<Vec<String>>,
    }
}

/// The settings a KeyIn asks for.
fn key_spec(b: KeyIn, now: i64) -> ApiResult<KeySpec> {
    let budget_micros = budget_change("max_budget", b.max_budget)?;
    let budget_reset = b
        .budget_reset
        .map(|r| reset("budget_reset", &r))
        .transpose()?;
    let shared = KeySpec::shared(b.models, b.tpm_limit, b.rpm_limit, b.metadata, b.tags)?;
    let expires_at = b
        .expires_at
        .map(|e| e.map(|e| expiry("expires_at", &e, now)).transpose())
        .transpose()?;
    Ok(KeySpec {
        name: b.name.map(|n| ("name", n)),
        budget_micros,
        budget_reset,
        expires_at,
        ..shared
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyFilter {
    /// A project's id or name.
    project: Option<String>,
    tag: Option<String>,
    /// user or service.
    kind: Option<String>,
    /// At most this many keys, newest first (100 unless given, 1 to 1,000);
    /// `X-Total-Count` says how many match in all.
    limit: Option<i64>,
    /// Keys to skip first (0 unless given).
    offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(KeyFilter),
    responses((status = 200, body = [KeyOut],
        headers(("X-Total-Count" = i64, description = "how many keys match in all"))),
        (status = 400, body = ErrorBody)))]
async fn list_keys(
    caller: Caller,
    Params(q): Params<KeyFilter>,
) -> ApiResult<([(&'static str, String); 1], Json<Vec<KeyOut>>)> {
    let org = caller.org(None, Action::ManageAllKeys)?;
    let project = caller
        .filter_project("project", q.project.as_deref(), Action::ManageProjectKeys)
        .await?;
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some("service") => Some(KeyKind::Service),
        Some("user") => Some(KeyKind::User),
        Some(other) => {
            return Err(ApiError::invalid(
                "kind",
                format!("'{other}' is not one of user, service"),
            ))
        }
    };
    let (limit, offset) = super::input::page("limit", q.limit, "offset", q.offset)?;
    let tag = q.tag.map(|t| t.trim().to_lowercase());
    let mut conn = caller.state.db.pool.acquire().await?;
    let (page, total) = keys::page_in_org(
        &mut conn,
        &org,
        &keys::OrgKeyQuery {
            project_id: project.as_ref().map(|p| p.id.as_str()),
            kind,
            tag: tag.as_deref(),
            limit,
            offset,
            ..Default::default()
        },
    )
    .await?;
    Ok((
        [("x-total-count", total.to_string())],
        Json(page.into_iter().map(key_out).collect()),
    ))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = KeyIn,
    responses((status = 201, body = KeyIssued), (status = 400, body = ErrorBody)))]
async fn create_key(
    caller: Caller,
    Input(mut b): Input<KeyIn>,
) -> ApiResult<(StatusCode, Json<KeyIssued>)> {
    let project = b
        .project
        .take()
        .ok_or_else(|| ApiError::invalid("project", "is required: the project's id or name"))?;
    let (scope, p) = caller
        .project("project", &project, Action::ManageProjectKeys)
        .await?;
    let (row, token) = caller
        .create_service_key(&scope, &p, key_spec(b, now_ms())?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyIssued {
            token: token.expose().to_owned(),
            key: key_out(row),
        }),
    ))
}

/// `{key}`: a key of the caller's organization (for the OpenAPI document;
/// handlers take [`OpenKey`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyAt {
    /// The key's `api_key_id_hash`.
    key: String,
}

/// The key a `/api/v1/keys/{key}` route names, opened for a caller who may
/// manage keys in its project; 404 for any other key.
pub struct OpenKey {
    caller: Caller,
    scope: ProjectScope,
    key: KeyRow,
}

impl FromRequestParts<AppState> for OpenKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<OpenKey> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(KeyAt { key: id }) = Path::<KeyAt>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("key", e.body_text()))?;
        let org = caller.org(None, Action::ManageAllKeys)?;
        let mut conn = caller.state.db.pool.acquire().await?;
        let key = keys::find(&mut conn, &org, &id)
            .await
            .ok()
            .filter(|k| k.id_hash == id)
            .ok_or_else(|| ApiError::not_found(format!("key '{id}'")))?;
        drop(conn);
        let (scope, _) = caller
            .project("project", &key.project_id, Action::ManageProjectKeys)
            .await?;
        Ok(OpenKey { caller, scope, key })
    }
}

#[utoipa::path(get, path = "/api/v1/keys/{key}", tag = "keys",
    params(KeyAt),
    responses((status = 200, body = KeyOut), (status = 404, body = ErrorBody)))]
async fn get_key(k: OpenKey) -> Json<KeyOut> {
    Json(key_out(k.key))
}

#[utoipa::path(patch, path = "/api/v1/keys/{key}", tag = "keys", request_body = KeyIn,
    params(KeyAt),
    responses((status = 200, body = KeyOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_key(k: OpenKey, Input(b): Input<KeyIn>) -> ApiResult<Json<KeyOut>> {
    if b.project.is_some() {
        return Err(ApiError::invalid(
            "project",
            "a key cannot move between projects; create one in the other project",
        ));
    }
    let OpenKey { caller, scope, key } = k;
    let mut conn = caller.state.db.pool.acquire().await?;
    let p = projects::get(&mut conn, &scope).await?;
    drop(conn);
    let limits = key_spec(b, now_ms())?.apply(Some(&key.limits), &p)?;
    let row = ops::update_key(&caller.state, &caller.actor, &scope, &key, &limits).await?;
    Ok(Json(key_out(row)))
}

#[utoipa::path(delete, path = "/api/v1/keys/{key}", tag = "keys",
    params(KeyAt),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_key(k: OpenKey) -> ApiResult<StatusCode> {
    ops::delete_key(&k.caller.state, &k.caller.actor, &k.scope, &k.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// Minutes the old token keeps working (0 to 10080); 0 by default.
    grace_minutes: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/keys/{key}/rotate", tag = "keys", request_body = RotateIn,
    params(KeyAt),
    responses((status = 200, body = KeyIssued), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rotate_key(k: OpenKey, Input(b): Input<RotateIn>) -> ApiResult<Json<KeyIssued>> {
    let grace = b.grace_minutes.unwrap_or(0);
    if !(0..=10_080).contains(&grace) {
        return Err(ApiError::invalid(
            "grace_minutes",
            "must be from 0 to 10080",
        ));
    }
    let OpenKey { caller, scope, key } = k;
    let (row, token) =
        ops::rotate_key(&caller.state, &caller.actor, &scope, &key, grace * 60_000).await?;
    Ok(Json(KeyIssued {
        token: token.expose().to_owned(),
        key: key_out(row),
    }))
}

// ---- usage ----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC); 30 days before `to` by default.
    from: Option<String>,
    /// Last day, inclusive; today by default.
    to: Option<String>,
    /// project, key, model (the one that served), requested_model (a
    /// virtual model's id where one was asked for) or endpoint
    /// (chat.completions, responses, messages, …); the whole organization when absent.
    group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageDay {
    date: String,
    /// The project's or key's id, or the model; absent for the whole organization.
    group: Option<String>,
    name: Option<String>,
    requests: i64,
    tokens_in: i64,
    tokens_out: i64,
    /// USD.
    cost: f64,
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = [UsageDay]), (status = 400, body = ErrorBody)))]
async fn usage_report(
    caller: Caller,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Json<Vec<UsageDay>>> {
    let org = caller.org(None, Action::ViewUsage)?;
    let group = match q.group_by.as_deref() {
        None | Some("") => None,
        Some("project") => Some(GroupBy::Project),
        Some("key") => Some(GroupBy::Key),
        Some("model") => Some(GroupBy::Model),
        Some("requested_model") => Some(GroupBy::RequestedModel),
        Some("endpoint") => Some(GroupBy::Endpoint),
        Some(other) => {
            return Err(ApiError::invalid(
                "group_by",
                format!("'{other}' is not one of project, key, model, requested_model, endpoint"),
            ))
        }
    };
    let (from, to) = super::input::days(("from", q.from.as_deref()), ("to", q.to.as_deref()))?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let rows = usage::daily(&mut conn, &org, from, to, group).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| UsageDay {
                date: iso(r.day * 86_400_000)
                    .get(..10)
                    .unwrap_or_default()
                    .to_owned(),
                group: group.map(|_| r.group),
                name: r.label,
                requests: r.requests,
                tokens_in: r.tokens_in,
                tokens_out: r.tokens_out,
                cost: Usd::from_micros(r.cost_micros).dollars(),
            })
            .collect(),
    ))
}
