//! The Tollgate server: configuration, startup and routing of the console, its
//! server functions and health checks; the operator CLI lives in `cli`.

pub mod alerts;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod csrf;
pub mod machine;
pub mod mcp;
pub mod metrics;
pub mod net_guard;
pub mod playground;
pub mod proxy;
pub mod scim;
pub mod sso;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{
    generate_route_list, handle_server_fns_with_context, AxumRouteListing, LeptosRoutes,
};
use secrecy::ExposeSecret;
use std::num::NonZeroU32;
use std::sync::Arc;
use tollgate_app::core::auth::Throttle;
use tollgate_app::core::db::{self, Db, SessionStore};
use tollgate_app::core::state::AppState;
use tollgate_app::{shell, App};
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::config::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot load the proxy's state: {0}")]
    Proxy(#[source] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Opens the database and builds the shared state.
pub async fn state(config: &Config) -> Result<AppState, StartError> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        config.ensure_data_dir()?;
    }
    let db = db::connect(&url).await?;
    let mut leptos_options = LeptosOptions::builder()
        .output_name("tollgate")
        .site_root(config.site_root.to_string_lossy().as_ref())
        .build();
    leptos_options.site_addr = config.listen;
    assets::use_hashed_names(&mut leptos_options);
    let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Ok(AppState {
        db,
        public_url: config.public_url(),
        secret: Arc::new(config.secret()?),
        throttle: Throttle::new(
            nz(config.login_attempts_per_account),
            nz(config.login_attempts_per_ip),
        ),
        session_idle_secs: i64::try_from(config.session_idle_secs).unwrap_or(i64::MAX),
        session_absolute_ms: i64::try_from(config.session_absolute_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
        leptos_options,
        changes: tollgate_app::core::changes::Changes::default(),
        allow_private_networks: config.allow_private_networks,
        org_creation: config.org_creation,
        trusted_proxies: config.proxy.trusted_proxies.clone().into(),
        // A blank token is no token: `/metrics` stays off rather than open.
        metrics_token: config
            .metrics_token
            .clone()
            .filter(|t| !t.expose_secret().trim().is_empty())
            .map(Arc::new),
        saml_metadata: sso::saml::parse_metadata,
        route_health: Arc::default(),
    })
}

/// The largest console request body (server functions take small forms).
pub const CONSOLE_BODY_LIMIT: usize = 1 << 20;

/// The whole HTTP surface: the proxy on `/v1` (no Leptos), the machine APIs,
/// the console and its server functions, health checks; all of it behind the
/// one authentication layer (`auth`), sessions around all but `/v1`.
pub fn router(state: AppState, gateway: Arc<proxy::Gateway>) -> Router {
    let pages = generate_route_list(App);
    let page_paths = paths_of(&pages);
    let secure = state.public_url.starts_with("https://");
    let idle = time::Duration::seconds(state.session_idle_secs);
    // The console's calls are small forms: a body past 1 MiB is refused
    // (413) before it is buffered, also on the public sign-in calls.
    let console = console(&state, pages)
        .merge(playground::router(state.clone(), gateway.clone()))
        .layer(axum::middleware::from_fn_with_state(
            csrf::ConsoleOrigin::of_public_url(&state.public_url),
            csrf::same_origin,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            CONSOLE_BODY_LIMIT,
        ));
    let sessioned = Router::new()
        .route("/healthz", get(healthz))
        .with_state(state.clone())
        .merge(machine::router(state.clone()))
        .merge(scim::router(state.clone()))
        .merge(sso::router(state.clone()))
        .merge(console);
    let sessioned = auth::require(sessioned, state.clone(), page_paths.clone());
    let sessioned = with_sessions(sessioned, &state.db, secure, idle);
    // `/v1` and `/metrics` never pass through the session layer or Leptos;
    // the same authentication layer guards them.
    let outside = proxy::router(gateway.clone())
        .merge(mcp::router(gateway.clone()))
        .merge(
            Router::new()
                .route("/metrics", get(metrics::handler))
                .with_state(gateway.clone()),
        )
        .merge(
            Router::new()
                .route("/readyz", get(readyz))
                .with_state((state.db.clone(), gateway)),
        );
    auth::require(outside, state, page_paths)
        .fallback_service(sessioned)
        // The path only: a query string may carry a key (LiteLLM's `/key/info?key=`).
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        }))
}

/// The console: its pages, its server functions, its static files.
fn console(state: &AppState, pages: Vec<AxumRouteListing>) -> Router {
    let ctx = state.clone();
    let shell_opts = state.leptos_options.clone();
    Router::new()
        .leptos_routes_with_context(
            state,
            pages,
            move || provide_context(ctx.clone()),
            move || shell(shell_opts.clone()),
        )
        .layer(axum::middleware::from_fn(render_to_the_end))
        .route(
            &format!("{}/{{*fn_name}}", tollgate_app::api::PREFIX),
            get(server_fn_handler).post(server_fn_handler),
        )
        .fallback(assets::files_or(
            &state.leptos_options,
            leptos_axum::file_and_error_handler::<AppState, _>(shell),
        ))
        .layer(axum::middleware::from_fn(assets::pages_not_kept))
        .with_state(state.clone())
}

/// A page renders to its end in a task of its own, even when the client
/// leaves: its body is forwarded while someone reads it and drained after.
/// Dropping a Leptos render midway can deadlock the worker running it
/// (reactive_graph 0.2.16: a spawned resource reading a context upgrades an
/// owner the drop released, and then drops the last reference while holding
/// its child's lock; leptos#4673), which a client that hangs up could repeat
/// until no worker is left for `/v1` either.
async fn render_to_the_end(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::{SinkExt, StreamExt};
    let (head_tx, head) = futures::channel::oneshot::channel();
    let (mut chunks_tx, chunks) = futures::channel::mpsc::channel(8);
    tokio::spawn(async move {
        let (parts, body) = next.run(req).await.into_parts();
        let _ = head_tx.send(parts);
        let mut body = body.into_data_stream();
        let mut reader_left = false;
        while let Some(chunk) = body.next().await {
            reader_left = reader_left || chunks_tx.send(chunk).await.is_err();
        }
    });
    match head.await {
        Ok(parts) => Response::from_parts(parts, Body::from_stream(chunks)),
        // The render panicked (and was logged).
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Every route of the assembled router, from the declarations that build it:
/// the console's pages and server functions, the machine APIs, the proxy and
/// the health checks (the authentication walk test requests each one).
pub fn route_paths() -> Vec<String> {
    let server_fns = leptos::server_fn::axum::server_fn_paths().map(|(p, _)| p.to_owned());
    ["/healthz", "/readyz", "/metrics"]
        .into_iter()
        .map(str::to_owned)
        .chain(page_paths())
        .chain(server_fns)
        .chain(machine::paths())
        .chain(scim::paths())
        .chain(sso::paths())
        .chain(playground::paths())
        .chain(PROXY_PATHS.iter().map(|p| (*p).to_owned()))
        .chain(mcp::PATHS.iter().map(|p| (*p).to_owned()))
        .collect()
}

/// The proxy's routes (`proxy::router`); its `/v1/{*rest}` makes every path
/// under `/v1` one of its routes, all behind the same key check.
const PROXY_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/model/info",
    "/v1/prompts",
    "/v1/prompts/{*prompt_id}",
    "/v1/{*rest}",
];

/// The console's page paths, in axum's syntax (`/orgs/{org_id}`).
pub fn page_paths() -> Vec<String> {
    paths_of(&generate_route_list(App))
}

/// Page paths in axum's syntax (`/orgs/{org_id}`).
fn paths_of(pages: &[AxumRouteListing]) -> Vec<String> {
    pages.iter().map(|r| r.path().to_owned()).collect()
}

fn with_sessions(router: Router, db: &Db, secure: bool, idle: time::Duration) -> Router {
    match &db.sessions {
        SessionStore::Sqlite(s) => router.layer(session_layer(s.clone(), secure, idle)),
        SessionStore::Postgres(s) => router.layer(session_layer(s.clone(), secure, idle)),
    }
}

/// HttpOnly, SameSite=Lax, Secure behind https, ended after `idle` unused.
fn session_layer<S: tower_sessions::SessionStore + Clone>(
    store: S,
    secure: bool,
    idle: time::Duration,
) -> SessionManagerLayer<S> {
    SessionManagerLayer::new(store)
        .with_name("tollgate_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(secure)
        .with_expiry(Expiry::OnInactivity(idle))
}

async fn server_fn_handler(State(state): State<AppState>, req: Request<Body>) -> impl IntoResponse {
    handle_server_fns_with_context(move || provide_context(state.clone()), req).await
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and the change feed has read the log
/// lately (else this instance may serve revoked keys): 503 otherwise. The
/// body says which, with the counter backend and where the feed stands.
async fn readyz(State((db, gw)): State<(Db, Arc<proxy::Gateway>)>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let database = match sqlx::query("SELECT 1").execute(&db.pool).await {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            "unreachable"
        }
    };
    let feed = &gw.feed;
    let (applied, head) = (
        feed.applied.load(Ordering::Relaxed),
        feed.head.load(Ordering::Relaxed),
    );
    let read_at = feed.read_at.load(Ordering::Relaxed);
    let age_ms = tollgate_app::core::now_ms().saturating_sub(read_at);
    let stale = read_at == 0 || age_ms > gw.feed_stale_after_ms();
    let counters = gw.counters();
    let ready = database == "ok" && !stale && counters.admitting;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "database": database,
        "counters": counters,
        "change_feed": {
            "state": if stale { "stale" } else { "ok" },
            "applied": applied,
            "head": head,
            "behind": head.saturating_sub(applied).max(0),
            "read_age_ms": if read_at == 0 { None } else { Some(age_ms) },
            "listening": feed.listening.load(Ordering::Relaxed),
        },
    });
    (status, axum::Json(body))
}

/// Deletes expired sessions in the background.
pub fn spawn_session_cleanup(db: &Db) {
    use tower_sessions::ExpiredDeletion;
    let every = tokio::time::Duration::from_secs(3600);
    match &db.sessions {
        SessionStore::Sqlite(s) => {
            tokio::spawn(s.clone().continuously_delete_expired(every));
        }
        SessionStore::Postgres(s) => {
            tokio::spawn(s.clone().continuously_delete_expired(every));
        }
    }
}

/// Serves until `shutdown` resolves. Every connection has `TCP_NODELAY`:
/// a streamed answer is many small writes, and Nagle's algorithm would
/// hold each behind the acknowledgement of the one before.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on a connection");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::ServiceExt;

    /// A client that reads the head and hangs up does not stop the render:
    /// every chunk is still produced (the render drops only at its end).
    #[tokio::test]
    async fn a_render_runs_to_its_end_after_the_client_leaves() {
        const CHUNKS: usize = 20;
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || async move {
                    let chunks = futures::stream::unfold(0, move |i| {
                        let counter = counter.clone();
                        async move {
                            if i == CHUNKS {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            counter.fetch_add(1, Ordering::SeqCst);
                            Some((Ok::<_, std::io::Error>(format!("chunk {i}")), i + 1))
                        }
                    });
                    Body::from_stream(chunks)
                }),
            )
            .layer(axum::middleware::from_fn(render_to_the_end));
        let req = Request::builder().uri("/").body(Body::empty()).unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        drop(res);
        // Waits for the producer, however long this machine takes.
        for _ in 0..1000 {
            if produced.load(Ordering::SeqCst) == CHUNKS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the render stopped after {} of {CHUNKS} chunks",
            produced.load(Ordering::SeqCst)
        );
    }
}
