//! LiteLLM's guardrails and policies: Tollgate has none (content rules are
//! model allowlists, budgets and content logging), so the lists are empty
//! and a new one is refused naming the field.

use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use tollgate_app::policy::Action;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/v2/guardrails/list", get(guardrails))
        .route("/guardrails/list", get(guardrails))
        .route("/guardrails", post(new_guardrail))
        .route("/policies/list", get(policies))
        .route("/policies", post(new_policy))
}

async fn guardrails(caller: Caller) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ViewOrganization)?;
    Ok(Json(json!({ "guardrails": [] })))
}

async fn policies(caller: Caller) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ViewOrganization)?;
    Ok(Json(json!({ "policies": [] })))
}

async fn new_guardrail(caller: Caller) -> ApiResult<Json<Value>> {
    caller.org(None, Action::EditOrganization)?;
    Err(ApiError::invalid(
        "guardrail",
        "Tollgate runs no guardrails; limit what a key may do with its models, budget and content logging",
    ))
}

async fn new_policy(caller: Caller) -> ApiResult<Json<Value>> {
    caller.org(None, Action::EditOrganization)?;
    Err(ApiError::invalid(
        "policy_name",
        "Tollgate has no guardrail policies; limit what a key may do with its models, budget and content logging",
    ))
}
