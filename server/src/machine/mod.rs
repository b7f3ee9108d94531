//! The machine APIs, each authenticated by a provisioning key that acts in its
//! own organization only: FastRouter-compatible `/prod/*`, LiteLLM-compatible
//! `/key/*`, `/team/*`…, and the native REST API under `/api/v1` with its
//! OpenAPI document. Handlers extract, authorize through the policy module,
//! call `core::ops`, and map the answer.

pub mod fastrouter;
pub mod input;
pub mod litellm;
pub mod rest;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use serde_json::json;
use tollgate_app::core::audit::Actor;
use tollgate_app::core::keys::token::Token;
use tollgate_app::core::keys::{Holder, KeyRow};
use tollgate_app::core::provisioning::{self, Principal};
use tollgate_app::core::state::AppState;
use tollgate_app::core::{now_ms, ops, projects};
use tollgate_app::error::AppError;
use tollgate_app::policy::{self, Action, Machine, OrgScope, ProjectScope};

/// Every machine route; none passes through Leptos.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A known path asked with a method it does not take: a JSON 405 naming it.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} does not take {method}", uri.path()),
        field: None,
    }
}

/// The path of every machine route, from the declarations that build the
/// router (the authentication walk test requests each one).
pub fn paths() -> Vec<String> {
    routes().paths
}

fn routes() -> Routes {
    fastrouter::routes()
        .merge(litellm::routes())
        .merge(rest::routes())
}

/// A router that remembers the paths it was given.
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    pub fn route(mut self, path: &str, method: MethodRouter<AppState>) -> Routes {
        self.router = self.router.route(path, method);
        self.paths.push(path.to_owned());
        self
    }

    /// Routes already declared elsewhere (an OpenAPI router), with their paths.
    pub fn declared(router: Router<AppState>, paths: Vec<String>) -> Routes {
        Routes { router, paths }
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }
}

impl Default for Routes {
    fn default() -> Routes {
        Routes::new()
    }
}

/// The one error type of the machine APIs:
/// `{"error": {"code", "message", "field"}}` with the matching status. The
/// message names the field; it never holds SQL, a stack or a secret.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_owned()),
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("{} not found", what.into()),
            field: None,
        }
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.to_owned(),
            field: None,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match e {
            AppError::Invalid { field, message } => ApiError::invalid(&field, message),
            AppError::NotFound { resource } => ApiError::not_found(resource),
            other => {
                let code = match &other {
                    AppError::Unauthenticated => "unauthorized",
                    AppError::Forbidden { .. } => "forbidden",
                    AppError::Conflict { .. } => "conflict",
                    AppError::RateLimited { .. } => "rate_limited",
                    AppError::Request { .. } => "invalid_request",
                    _ => "internal",
                };
                ApiError {
                    status,
                    code,
                    message: other.to_string(),
                    field: None,
                }
            }
        }
    }
}

impl From<policy::Denied> for ApiError {
    fn from(d: policy::Denied) -> ApiError {
        AppError::from(d).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        AppError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            error["field"] = json!(f);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An error about one of our field names, put under the API's own name.
pub fn renamed(mut e: ApiError, ours: &str, theirs: &str) -> ApiError {
    if e.field.as_deref() == Some(ours) {
        e.message = e.message.replacen(ours, theirs, 1);
        e.field = Some(theirs.to_owned());
    }
    e
}

/// Unix milliseconds as RFC 3339 (UTC).
pub fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The caller of a machine API: a live provisioning key, and through it one
/// organization. Anything else is 401 before any handler runs.
pub struct Caller {
    pub state: AppState,
    pub machine: Machine,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        // The authentication layer has checked the key already; without the
        // layer (a router assembled elsewhere) the check happens here.
        let principal = match parts.extensions.get::<Principal>() {
            Some(p) => p.clone(),
            None => authenticate(state, &parts.headers).await?,
        };
        Ok(Caller {
            state: state.clone(),
            actor: Actor::provisioning(&principal.key_id, &principal.name),
            machine: Machine {
                key_id: principal.key_id,
                org_id: principal.org_id,
            },
        })
    }
}

/// The live provisioning key presented as `Authorization: Bearer sk-tgp-…`;
/// anything else is 401.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let presented = crate::auth::bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("send a provisioning key as 'Authorization: Bearer sk-tgp-…'")
    })?;
    let mut conn = state.db.pool.acquire().await?;
    provisioning::authenticate(&mut conn, presented, now_ms())
        .await?
        .ok_or_else(|| ApiError::unauthorized("the provisioning key is unknown or revoked"))
}

impl Caller {
    /// Mints a service key in the scope's project with `spec` applied to a
    /// new key's limits: the machine APIs make no other kind of key.
    pub async fn create_service_key(
        &self,
        scope: &ProjectScope,
        project: &projects::Project,
        spec: input::KeySpec,
    ) -> ApiResult<(KeyRow, Token)> {
        let limits = spec.apply(None, project)?;
        let holder = Holder::Service;
        Ok(ops::create_key(&self.state, &self.actor, scope, holder, &limits).await?)
    }

    /// Refuses models outside the organization's catalogue before anything
    /// is stored (so a bad field leaves no half-made project behind).
    pub async fn check_catalogue(&self, field: &str, models: &[String]) -> ApiResult<()> {
        let org = self.org(None, Action::ViewOrganization)?;
        let mut conn = self.state.db.pool.acquire().await?;
        let known = tollgate_app::core::catalogue::ids(&mut conn, &org).await?;
        match models.iter().find(|m| !known.contains(m)) {
            Some(m) => Err(ApiError::invalid(
                field,
                format!("'{m}' is not in the organization's catalogue"),
            )),
            None => Ok(()),
        }
    }

    /// The policy's decision on changing the role of (or removing) a member
    /// who is `role` now: never an owner.
    pub fn member(&self, role: tollgate_app::policy::OrgRole) -> ApiResult<OrgScope> {
        policy::authorize_machine_member(&self.machine, role).map_err(|_| ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "a provisioning key does not change or remove an organization's owners; an owner does, in the console"
                .to_owned(),
            field: None,
        })
    }

    /// The policy's decision for an action on the caller's organization. A
    /// request that names another organization gets 404, as if it did not exist.
    pub fn org(&self, named: Option<&str>, action: Action) -> ApiResult<OrgScope> {
        if let Some(other) = named.filter(|o| !o.is_empty() && *o != self.machine.org_id) {
            return Err(ApiError::not_found(format!("organization '{other}'")));
        }
        Ok(policy::authorize_machine(&self.machine, action)?)
    }

    /// Creates a project named `name` (the API calls it `field`) with the
    /// settings `settings_of` derives from a new project's. Everything is
    /// checked before anything is stored, so a bad field leaves no half project.
    pub async fn create_project(
        &self,
        org: &OrgScope,
        field: &str,
        name: &str,
        settings_of: impl FnOnce(&projects::Project) -> ApiResult<projects::Settings>,
    ) -> ApiResult<projects::Project> {
        let name = tollgate_app::core::domain::name(field, name, 100)?;
        let draft = projects::Project::new(String::new(), org.org_id(), &name, 0);
        let settings = settings_of(&draft)?;
        self.check_catalogue("models", &settings.caps.models)
            .await?;
        let created = ops::create_project(&self.state, &self.actor, org, &name)
            .await
            .map_err(|e| renamed(e.into(), "name", field))?;
        let scope = policy::authorize_machine_project(
            &self.machine,
            &created.id,
            Action::EditProjectSettings,
        )?;
        Ok(ops::update_project(&self.state, &self.actor, &scope, &settings).await?)
    }

    /// A project of the caller's organization, named by id or by name, with
    /// the policy's decision for `action` in it.
    pub async fn project(
        &self,
        field: &str,
        reference: &str,
        action: Action,
    ) -> ApiResult<(ProjectScope, projects::Project)> {
        let org = self.org(None, Action::ViewOrganization)?;
        let mut conn = self.state.db.pool.acquire().await?;
        let found = projects::find(&mut conn, &org, reference.trim())
            .await?
            .ok_or_else(|| ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("{field}: no project '{reference}' in this organization"),
                field: Some(field.to_owned()),
            })?;
        let scope = policy::authorize_machine_project(&self.machine, &found.id, action)?;
        Ok((scope, found))
    }

    /// The project a list is filtered by, if the query names one.
    pub async fn filter_project(
        &self,
        field: &str,
        reference: Option<&str>,
        action: Action,
    ) -> ApiResult<Option<projects::Project>> {
        match reference {
            Some(r) => Ok(Some(self.project(field, r, action).await?.1)),
            None => Ok(None),
        }
    }
}
