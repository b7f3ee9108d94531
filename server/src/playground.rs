//! The console's playground chat: a signed-in member's request, sent through
//! the proxy as their playground key (by its id: the console never holds
//! its token), with every rule of `/v1` applied and the answer streamed back.

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tollgate_app::api::playground::CHAT_PATH;
use tollgate_app::core::forwarded::client_ip;
use tollgate_app::core::state::AppState;
use tower_sessions::Session;
use tracing::field::display;
use tracing::Span;

use crate::proxy::upstream::Endpoint;
use crate::proxy::{self, Gateway};

#[derive(serde::Deserialize)]
struct ChatQuery {
    org_id: String,
    key_id: String,
}

pub fn router(state: AppState, gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(CHAT_PATH, post(chat))
        .with_state((state, gw))
}

/// The console's paths for the authentication walk.
pub fn paths() -> Vec<String> {
    vec![CHAT_PATH.to_owned()]
}

async fn chat(
    State((state, gw)): State<(AppState, Arc<Gateway>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Query(q): Query<ChatQuery>,
    h: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if let Err(e) =
        tollgate_app::api::authorize_playground(&state, &session, &q.org_id, &q.key_id).await
    {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "message": e.to_string(), "type": "console", "code": status.as_u16() } });
        return (status, axum::Json(body)).into_response();
    }
    let trusted = state.trusted_proxies.clone();
    let g = gw.clone();
    proxy::answer(gw, Endpoint::Chat, move |request_id| async move {
        let caller = g
            .memory
            .caller_by_key_id(&q.key_id, tollgate_app::core::now_ms())?;
        let span = Span::current();
        span.record("org", display(caller.key.org_id()));
        span.record("project", display(caller.key.project_id()));
        span.record("key_id", display(&caller.key.public_id));
        caller.check_ip(client_ip(peer.ip(), &h, &trusted))?;
        let body = proxy::read_body(&h, body).await?;
        let input = proxy::Input {
            endpoint: Endpoint::Chat,
            body,
            headers: Vec::new(),
        };
        proxy::serve(g, input, caller, &request_id, started).await
    })
    .await
}
