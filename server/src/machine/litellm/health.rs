//! LiteLLM's health checks: `/health/liveliness` and `/health/readiness`
//! answer without credentials, as load balancers call them; `/health` (a
//! provisioning key) says which of the organization's models have the
//! provider they name configured. No upstream is called.

use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use tollgate_app::core::state::AppState;
use tollgate_app::core::{catalogue, providers};
use tollgate_app::policy::Action;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/health", get(health))
        .route("/health/liveliness", get(liveliness))
        .route("/health/readiness", get(readiness))
}

async fn liveliness() -> Json<Value> {
    Json(json!("I'm alive!"))
}

async fn readiness(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db = match state.db.pool.acquire().await {
        Ok(mut conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        Err(_) => false,
    };
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if db { "healthy" } else { "unhealthy" },
            "db": if db { "connected" } else { "disconnected" },
        })),
    )
}

async fn health(caller: Caller) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let models = catalogue::list(&mut conn, &org).await?;
    let configured: Vec<String> = providers::list(&mut conn, &org)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = models
        .iter()
        .partition(|m| configured.contains(&m.provider));
    let view = |m: &&catalogue::Model| json!({ "model": m.id, "provider": m.provider });
    Ok(Json(json!({
        "healthy_endpoints": healthy.iter().map(view).collect::<Vec<_>>(),
        "unhealthy_endpoints": unhealthy.iter().map(|m| json!({
            "model": m.id, "provider": m.provider,
            "error": format!("the provider '{}' is not configured", m.provider),
        })).collect::<Vec<_>>(),
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    })))
}
