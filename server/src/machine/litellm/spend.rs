//! LiteLLM's spend reports and `/config/update`: daily spend and grouped
//! reports from the usage tables.

use crate::machine::input::days;
use crate::machine::input::Input;
use crate::machine::input::Params;
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
use tollgate_app::core::ops;
use tollgate_app::core::orgs;
use tollgate_app::core::usage;
use tollgate_app::core::usage::GroupBy;
use tollgate_app::policy::Action;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/billing/daily-spend", get(daily_spend))
        .route("/global/spend/report", get(spend_report))
        .route("/config/update", post(config_update))
}

/// The query of `/billing/daily-spend` and `/global/spend/report`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    group_by: Option<String>,
}

fn date_of(day: i64) -> String {
    iso(day * 86_400_000)
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

async fn daily_spend(caller: Caller, Params(q): Params<SpendQuery>) -> ApiResult<Json<Value>> {
    if q.group_by.is_some() {
        return Err(ApiError::invalid(
            "group_by",
            "use /global/spend/report to group",
        ));
    }
    let org = caller.org(None, Action::ViewUsage)?;
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let days = usage::daily(&mut conn, &org, from, to, None).await?;
    Ok(Json(Value::Array(
        days.iter()
            .map(|d| {
                json!({
                    "date": date_of(d.day), "spend": d.cost_micros as f64 / 1e6,
                    "api_requests": d.requests, "prompt_tokens": d.tokens_in,
                    "completion_tokens": d.tokens_out, "total_tokens": d.tokens_in.saturating_add(d.tokens_out),
                })
            })
            .collect(),
    )))
}

async fn spend_report(caller: Caller, Params(q): Params<SpendQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewUsage)?;
    let (group, label) = match q.group_by.as_deref().unwrap_or("team") {
        "team" => (GroupBy::Project, "teams"),
        "api_key" => (GroupBy::Key, "api_keys"),
        "model" => (GroupBy::Model, "models"),
        other => {
            return Err(ApiError::invalid(
                "group_by",
                format!("'{other}' is not one of team, api_key, model"),
            ))
        }
    };
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let rows = usage::daily(&mut conn, &org, from, to, Some(group)).await?;
    let mut out: Vec<Value> = Vec::new();
    for r in &rows {
        let date = date_of(r.day);
        if out.last().is_none_or(|d| d["group_by_day"] != json!(date)) {
            out.push(json!({ "group_by_day": date, label: [] }));
        }
        let entry = json!({
            "id": r.group, "name": r.label, "total_spend": r.cost_micros as f64 / 1e6,
            "api_requests": r.requests, "prompt_tokens": r.tokens_in, "completion_tokens": r.tokens_out,
        });
        if let Some(Value::Array(list)) = out.last_mut().and_then(|d| d.get_mut(label)) {
            list.push(entry);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// The body of `/config/update` (only what Tollgate honours).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigUpdate {
    general_settings: Option<GeneralSettings>,
    environment_variables: Option<EnvVars>,
}

/// `general_settings` of `/config/update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneralSettings {
    alerting: Option<Vec<String>>,
    alert_types: Option<Vec<String>>,
}

/// `environment_variables` of `/config/update`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVars {
    #[serde(rename = "WEBHOOK_URL")]
    webhook_url: Option<String>,
    #[serde(rename = "SLACK_WEBHOOK_URL")]
    slack_webhook_url: Option<String>,
}

const ALERT_TYPES: &[&str] = &["budget_alerts", "spend_reports", "daily_reports"];

/// The alerting settings: where (a webhook URL) and about what.
async fn config_update(caller: Caller, Input(b): Input<ConfigUpdate>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::EditOrganization)?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let mut alerting = orgs::alerting(&mut conn, &org).await?;
    drop(conn);
    if let Some(env) = b.environment_variables {
        let parse = |field: &str, url: &str| {
            url::Url::parse(url.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(|u| u.to_string())
                .ok_or_else(|| ApiError::invalid(field, "not an http(s) URL".to_owned()))
        };
        if let Some(url) = env.webhook_url {
            alerting.webhook_url = Some(parse("environment_variables.WEBHOOK_URL", &url)?);
        }
        if let Some(url) = env.slack_webhook_url {
            alerting.slack_url = Some(parse("environment_variables.SLACK_WEBHOOK_URL", &url)?);
        }
    }
    if let Some(g) = b.general_settings {
        if let Some(channels) = g.alerting {
            for (i, c) in channels.iter().enumerate() {
                if !matches!(c.as_str(), "webhook" | "slack") {
                    return Err(ApiError::invalid(
                        &format!("general_settings.alerting[{i}]"),
                        format!("'{c}' is not a channel Tollgate sends to: use webhook or slack"),
                    ));
                }
            }
            if !channels.iter().any(|c| c == "webhook") {
                alerting.webhook_url = None;
            }
            if !channels.iter().any(|c| c == "slack") {
                alerting.slack_url = None;
            }
        }
        if let Some(types) = g.alert_types {
            for (i, t) in types.iter().enumerate() {
                if !ALERT_TYPES.contains(&t.as_str()) {
                    return Err(ApiError::invalid(
                        &format!("general_settings.alert_types[{i}]"),
                        format!("'{t}' is not one of {}", ALERT_TYPES.join(", ")),
                    ));
                }
            }
            alerting.alert_types = types;
        }
    }
    ops::set_alerting(&caller.state, &caller.actor, &org, &alerting).await?;
    Ok(Json(json!({
        "message": "alerting settings updated",
        "alerting": {
            "webhook": alerting.webhook_url.as_deref().map(orgs::url_hint),
            "slack": alerting.slack_url.as_deref().map(orgs::url_hint),
            "alert_types": alerting.alert_types,
        },
    })))
}
