//! The one authentication layer, on the whole router: a request reaches a
//! route only if its path is in `PUBLIC` or it carries the credentials its
//! kind of route needs. Handlers keep their own checks; a forgotten one is harmless.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::server_fn::error::{FromServerFnError, SERVER_FN_ERROR_HEADER};
use secrecy::ExposeSecret;
use std::collections::HashSet;
use std::sync::Arc;
use tollgate_app::api::{PREFIX, PUBLIC_SERVER_FNS};
use tollgate_app::core::state::AppState;
use tollgate_app::error::AppError;
use tower_sessions::Session;

use crate::machine::{self, ApiError};
use crate::proxy::error::ProxyError;

/// What answers without credentials.
pub enum Public {
    /// One path, any method.
    Path(&'static str),
    /// Every path under a prefix.
    Under(&'static str),
    /// The console's pages, GET and HEAD: a page shell renders without a
    /// session; its data comes from server functions, which check their own.
    Pages,
    /// These console server functions.
    ServerFns(&'static [&'static str]),
    /// A path no route declares, outside the API roots: the console's static
    /// files and its "not found" page. Under an API root it is a JSON 404.
    Unrouted,
}

/// Everything that answers without credentials. Nothing else does.
pub const PUBLIC: &[Public] = &[
    Public::Path("/healthz"),
    Public::Path("/readyz"),
    // LiteLLM's probes, as its deployments call them.
    Public::Path("/health/liveliness"),
    Public::Path("/health/readiness"),
    Public::Path("/api/openapi.json"),
    Public::Under("/pkg/"),
    // Single sign-on: the IdP sends people back here; each route checks its
    // own state (the session's pending sign-in, a signed assertion).
    Public::Under("/sso/"),
    Public::Pages,
    Public::ServerFns(PUBLIC_SERVER_FNS),
    Public::Unrouted,
];

/// Where a signed-in session keeps its user id (`USER_KEY` in
/// `tollgate_app::api`); every console test that signs in depends on the two agreeing.
const SESSION_USER_KEY: &str = "uid";

/// The `/v1` root, where an API key is needed; the proxy checks the key itself.
const PROXY_ROOT: &str = "v1";

/// The metrics scrape: the operator's `metrics_token`, or 404 where none is set.
const METRICS_PATH: &str = "/metrics";

/// What a request needs before it reaches its route.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    /// A session with a signed-in user (console server functions).
    Session,
    /// A presented `/v1` key (bearer or `x-api-key`).
    ApiKey,
    /// A live provisioning key (machine routes).
    ProvisioningKey,
    /// A live SCIM token (`/scim/v2`).
    ScimToken,
    /// The operator's metrics token (`/metrics`).
    MetricsToken,
    /// No route, under an API root.
    NoRoute,
}

/// The layer's view of the router: its page paths and the first segments of
/// the API routes, both taken from the route declarations.
#[derive(Clone)]
struct Gate {
    state: AppState,
    pages: Arc<HashSet<String>>,
    api_roots: Arc<HashSet<String>>,
}

/// `router` behind the authentication layer; its console pages are `pages`.
pub fn require(router: Router, state: AppState, pages: impl IntoIterator<Item = String>) -> Router {
    let api_roots = machine::paths()
        .iter()
        .map(|p| root(p).to_owned())
        .chain([
            PROXY_ROOT.to_owned(),
            crate::mcp::ROOT.to_owned(),
            root(PREFIX).to_owned(),
            root(crate::scim::ROOT).to_owned(),
        ])
        .collect();
    let gate = Gate {
        state,
        pages: Arc::new(pages.into_iter().collect()),
        api_roots: Arc::new(api_roots),
    };
    router.layer(middleware::from_fn_with_state(gate, check))
}

/// The first segment of a path: `key` for `/key/info`.
fn root(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

impl Gate {
    fn is_public(
        &self,
        public: &Public,
        matched: Option<&str>,
        path: &str,
        method: &Method,
    ) -> bool {
        match public {
            Public::Path(p) => path == *p,
            Public::Under(prefix) => path.starts_with(prefix),
            Public::Pages => {
                (method == Method::GET || method == Method::HEAD)
                    && matched.is_some_and(|m| self.pages.contains(m))
            }
            Public::ServerFns(fns) => fns.contains(&path),
            Public::Unrouted => matched.is_none() && !self.api_roots.contains(root(path)),
        }
    }

    fn need(&self, matched: Option<&str>, path: &str, method: &Method) -> Need {
        if PUBLIC
            .iter()
            .any(|p| self.is_public(p, matched, path, method))
        {
            Need::Nothing
        } else if matched.is_none() {
            Need::NoRoute
        } else if path
            .strip_prefix(PREFIX)
            .is_some_and(|f| f.starts_with('/'))
        {
            Need::Session
        } else if root(path) == PROXY_ROOT || root(path) == crate::mcp::ROOT {
            Need::ApiKey
        } else if root(path) == root(crate::scim::ROOT) {
            Need::ScimToken
        } else if path == METRICS_PATH {
            Need::MetricsToken
        } else {
            Need::ProvisioningKey
        }
    }
}

async fn check(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    match gate.need(matched.as_deref(), &path, req.method()) {
        Need::Nothing => next.run(req).await,
        Need::Session => match signed_in(req.extensions().get::<Session>()).await {
            Ok(()) => next.run(req).await,
            Err(e) => console_error(&path, &e),
        },
        Need::ApiKey if presents_api_key(req.headers()) => next.run(req).await,
        Need::ApiKey => ProxyError::unauthorized(
            "missing_api_key",
            "send an API key as 'Authorization: Bearer sk-tg-…'",
        )
        .into_response(),
        Need::ProvisioningKey => match machine::authenticate(&gate.state, req.headers()).await {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                next.run(req).await
            }
            Err(e) => e.into_response(),
        },
        Need::ScimToken => match crate::scim::authenticate(&gate.state, req.headers()).await {
            Ok(token) => {
                req.extensions_mut().insert(token);
                next.run(req).await
            }
            Err(e) => e.into_response(),
        },
        Need::MetricsToken => match &gate.state.metrics_token {
            None => StatusCode::NOT_FOUND.into_response(),
            Some(t) if bearer(req.headers()).is_some_and(|p| same_secret(p, t.expose_secret())) => {
                next.run(req).await
            }
            Some(_) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "send the metrics token as 'Authorization: Bearer <token>'",
            )
                .into_response(),
        },
        Need::NoRoute => ApiError::not_found(format!("route '{path}'")).into_response(),
    }
}

/// Compared as digests: the time taken says nothing about the secret.
fn same_secret(presented: &str, secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(presented.as_bytes()) == Sha256::digest(secret.as_bytes())
}

/// The session names a user; the server function checks the rest (its
/// lifetime, the password stamp). The session is loaded once per request.
async fn signed_in(session: Option<&Session>) -> Result<(), AppError> {
    let session = session.ok_or_else(|| AppError::internal("session layer", &"missing"))?;
    match session.get::<String>(SESSION_USER_KEY).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(AppError::Unauthenticated),
        Err(e) => Err(AppError::internal("session store", &e)),
    }
}

/// The error as the server function itself would have answered it.
fn console_error(path: &str, e: &AppError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static(SERVER_FN_ERROR_HEADER),
                path,
            ),
        ],
        e.ser(),
    )
        .into_response()
}

fn presents_api_key(h: &HeaderMap) -> bool {
    bearer(h).is_some() || h.contains_key("x-api-key")
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}
