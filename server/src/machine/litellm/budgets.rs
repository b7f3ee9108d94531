//! LiteLLM's `/budget/*`: named budgets (a spend limit with its reset and
//! rate limits) that teams and keys point at with `budget_id`; a change to
//! one reaches every team and key that points at it.

use super::shown_duration;
use crate::machine::input::{
    budget_change, limit_change, nullable, reset_of_duration, Input, Params,
};
use crate::machine::iso;
use crate::machine::ApiError;
use crate::machine::ApiResult;
use crate::machine::Caller;
use crate::machine::Routes;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::litellm::{self, Budget};
use tollgate_app::core::ops;
use tollgate_app::format::Usd;
use tollgate_app::policy::Action;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/budget/new", post(budget_new))
        .route("/budget/update", post(budget_update))
        .route("/budget/delete", post(budget_delete))
        .route("/budget/list", get(budget_list))
        .route("/budget/info", post(budget_info).get(budget_info_query))
}

/// The body of `/budget/new` and `/budget/update` (LiteLLM's
/// `BudgetNewRequest`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    budget_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_duration: Option<Option<String>>,
    /// Not kept by Tollgate: refused unless empty.
    soft_budget: Option<Value>,
    max_parallel_requests: Option<Value>,
    model_max_budget: Option<Value>,
    budget_reset_at: Option<Value>,
}

impl BudgetBody {
    /// The budget after this change (of `base`, or a new one).
    fn apply(self, id: String, base: Option<&Budget>) -> ApiResult<Budget> {
        for (field, why, v) in [
            (
                "soft_budget",
                "Tollgate alerts on every budget at fixed thresholds (set a webhook with /config/update)",
                &self.soft_budget,
            ),
            (
                "max_parallel_requests",
                "Tollgate limits requests per minute (rpm_limit), not in flight",
                &self.max_parallel_requests,
            ),
            (
                "model_max_budget",
                "Tollgate budgets cover every model together; give a model its own team to budget it apart",
                &self.model_max_budget,
            ),
            (
                "budget_reset_at",
                "Tollgate resets budgets at the start of each UTC day, week or month",
                &self.budget_reset_at,
            ),
        ] {
            if v.as_ref().is_some_and(|v| !v.is_null() && *v != json!({})) {
                return Err(ApiError::invalid(field, format!("is not kept: {why}")));
            }
        }
        let mut b = base.cloned().unwrap_or(Budget {
            id,
            max_budget: None,
            tpm_limit: None,
            rpm_limit: None,
            reset: ResetInterval::Never,
            duration: None,
            created_at: 0,
            updated_at: 0,
        });
        if let Some(m) = budget_change("max_budget", self.max_budget)? {
            b.max_budget = m;
        }
        if let Some((_, n)) = limit_change("tpm_limit", self.tpm_limit)? {
            b.tpm_limit = n;
        }
        if let Some((_, n)) = limit_change("rpm_limit", self.rpm_limit)? {
            b.rpm_limit = n;
        }
        if let Some(d) = self.budget_duration {
            b.reset = match &d {
                Some(d) => reset_of_duration("budget_duration", d)?,
                None => ResetInterval::Never,
            };
            b.duration = d;
        }
        Ok(b)
    }
}

/// A budget id: what a spec names it by.
fn budget_id(raw: Option<String>) -> ApiResult<String> {
    let id = raw.map(|s| s.trim().to_owned()).unwrap_or_default();
    if id.is_empty() || id.len() > 100 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(
            "budget_id",
            "is required: 1 to 100 characters without spaces",
        ));
    }
    Ok(id)
}

pub(super) fn budget_view(b: &Budget) -> Value {
    json!({
        "budget_id": b.id,
        "max_budget": b.max_budget.map(Usd::dollars),
        "soft_budget": null,
        "max_parallel_requests": null,
        "tpm_limit": b.tpm_limit,
        "rpm_limit": b.rpm_limit,
        "model_max_budget": null,
        "budget_duration": if b.reset == ResetInterval::Never { Value::Null } else { shown_duration(b.duration.as_deref(), b.reset) },
        "created_at": iso(b.created_at),
        "updated_at": iso(b.updated_at),
    })
}

async fn budget_new(caller: Caller, Input(b): Input<BudgetBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::EditOrganization)?;
    let id = budget_id(b.budget_id.clone())?;
    let budget = b.apply(id, None)?;
    let saved =
        ops::litellm::save_budget(&caller.state, &caller.actor, &org, &budget, true).await?;
    Ok(Json(budget_view(&saved)))
}

async fn budget_update(caller: Caller, Input(b): Input<BudgetBody>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::EditOrganization)?;
    let id = budget_id(b.budget_id.clone())?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let before = litellm::budget(&mut conn, org.org_id(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    drop(conn);
    let budget = b.apply(id, Some(&before))?;
    let saved =
        ops::litellm::save_budget(&caller.state, &caller.actor, &org, &budget, false).await?;
    Ok(Json(budget_view(&saved)))
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        field: Some("budget_id".to_owned()),
        ..ApiError::not_found(format!("budget_id: budget '{id}'"))
    }
}

/// The body of `/budget/delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBudget {
    id: String,
}

async fn budget_delete(caller: Caller, Input(b): Input<DeleteBudget>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::EditOrganization)?;
    ops::litellm::delete_budget(&caller.state, &caller.actor, &org, b.id.trim())
        .await
        .map_err(|e| match e {
            tollgate_app::error::AppError::NotFound { .. } => ApiError {
                field: Some("id".to_owned()),
                ..ApiError::not_found(format!("id: budget '{}'", b.id.trim()))
            },
            other => other.into(),
        })?;
    Ok(Json(json!({ "deleted": b.id.trim() })))
}

/// `/budget/list` takes no parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

async fn budget_list(caller: Caller, Params(_): Params<NoQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let all = litellm::budgets(&mut conn, &org).await?;
    Ok(Json(Value::Array(all.iter().map(budget_view).collect())))
}

/// The body of `/budget/info`: the budgets to show.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetInfo {
    budgets: Vec<String>,
}

async fn budget_info(caller: Caller, Input(b): Input<BudgetInfo>) -> ApiResult<Json<Value>> {
    info_of(&caller, &b.budgets).await
}

/// `GET /budget/info?budget_id=…`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetInfoQuery {
    budget_id: String,
}

async fn budget_info_query(
    caller: Caller,
    Params(q): Params<BudgetInfoQuery>,
) -> ApiResult<Json<Value>> {
    info_of(&caller, &[q.budget_id]).await
}

async fn info_of(caller: &Caller, ids: &[String]) -> ApiResult<Json<Value>> {
    if ids.is_empty() {
        return Err(ApiError::invalid("budgets", "name at least one budget"));
    }
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let mut out = Vec::new();
    for id in ids {
        let b = litellm::budget(&mut conn, org.org_id(), id.trim())
            .await?
            .ok_or_else(|| not_found(id))?;
        out.push(budget_view(&b));
    }
    Ok(Json(Value::Array(out)))
}

/// The limits a team or key takes from the budget it names (`field`).
pub(super) async fn named(caller: &Caller, field: &str, id: &str) -> ApiResult<Budget> {
    let org = caller.org(None, Action::ViewOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    litellm::budget(&mut conn, org.org_id(), id.trim())
        .await?
        .ok_or_else(|| ApiError {
            field: Some(field.to_owned()),
            ..ApiError::not_found(format!("{field}: budget '{id}'"))
        })
}

/// The caps of a team or key body (`with_caps!`), as changes.
pub(super) struct Caps<'a> {
    pub max_budget: &'a mut Option<Option<f64>>,
    pub budget_duration: &'a mut Option<Option<String>>,
    pub tpm_limit: &'a mut Option<Option<i64>>,
    pub rpm_limit: &'a mut Option<Option<i64>>,
}

/// Fills the caps a body leaves unset from the budget its `budget_id`
/// names (none: nothing changes).
pub(super) async fn fill(
    caller: &Caller,
    budget_id: Option<&Option<String>>,
    c: Caps<'_>,
) -> ApiResult<()> {
    let Some(Some(id)) = budget_id else {
        return Ok(());
    };
    let budget = named(caller, "budget_id", id).await?;
    c.max_budget
        .get_or_insert(budget.max_budget.map(Usd::dollars));
    c.budget_duration.get_or_insert(budget.duration);
    c.tpm_limit.get_or_insert(budget.tpm_limit);
    c.rpm_limit.get_or_insert(budget.rpm_limit);
    Ok(())
}
