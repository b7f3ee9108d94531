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
        .route("/spend/logs", get(spend_logs))
        .route("/global/spend/keys", get(spend_keys))
        .route("/global/spend/teams", get(spend_teams))
}

/// The query of `/spend/logs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    api_key: Option<String>,
    team_id: Option<String>,
    limit: Option<i64>,
}

/// The attempts of the organization (or of one key or team), newest first.
async fn spend_logs(caller: Caller, Params(q): Params<LogsQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewUsage)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 1000"));
    }
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let key = match &q.api_key {
        Some(k) => {
            let mut conn = caller.state.db.pool.acquire().await?;
            let keys_org = caller.org(None, Action::ManageProjectKeys)?;
            Some(
                tollgate_app::core::keys::find(&mut conn, &keys_org, k)
                    .await
                    .map_err(|_| ApiError {
                        field: Some("api_key".to_owned()),
                        ..ApiError::not_found("api_key: key")
                    })?,
            )
        }
        None => None,
    };
    let project = caller
        .filter_project("team_id", q.team_id.as_deref(), Action::ViewProject)
        .await?;
    let mut conn = caller.state.db.pool.acquire().await?;
    let logs = usage::spend_logs(
        &mut conn,
        &org,
        (from, to),
        key.as_ref().map(|k| k.id.as_str()),
        project.as_ref().map(|p| p.id.as_str()),
        limit,
    )
    .await?;
    Ok(Json(Value::Array(
        logs.iter()
            .map(|l| {
                json!({
                    "request_id": l.request_id, "call_type": l.endpoint, "api_key": l.key_hash,
                    "key_alias": l.key_name, "team_id": l.project_id, "model": l.model,
                    "spend": l.cost_micros as f64 / 1e6, "prompt_tokens": l.tokens_in,
                    "completion_tokens": l.tokens_out, "total_tokens": l.tokens_in.saturating_add(l.tokens_out),
                    "startTime": iso(l.at), "endTime": iso(l.at.saturating_add(l.latency_ms)),
                    "status": if l.status < 400 { "success" } else { "failure" }, "http_status": l.status,
                })
            })
            .collect(),
    )))
}

/// The query of `/global/spend/keys` and `/global/spend/teams`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    limit: Option<i64>,
    start_date: Option<String>,
    end_date: Option<String>,
}

/// The keys that spent the most, all time.
async fn spend_keys(caller: Caller, Params(q): Params<TopQuery>) -> ApiResult<Json<Value>> {
    caller.org(None, Action::ViewUsage)?;
    let org = caller.org(None, Action::ManageProjectKeys)?;
    if q.start_date.is_some() || q.end_date.is_some() {
        return Err(ApiError::invalid(
            "start_date",
            "key totals are all-time; use /spend/logs or /global/spend/report for a period",
        ));
    }
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 1000"));
    }
    let mut conn = caller.state.db.pool.acquire().await?;
    let top = tollgate_app::core::keys::top_spenders(&mut conn, &org, limit).await?;
    Ok(Json(Value::Array(
        top.iter()
            .map(|k| json!({ "api_key": k.id_hash, "key_alias": k.limits.name, "key_name": k.hint, "total_spend": k.spend.dollars() }))
            .collect(),
    )))
}

/// Each team's spend over a period (the last 30 days unless given).
async fn spend_teams(caller: Caller, Params(q): Params<TopQuery>) -> ApiResult<Json<Value>> {
    let org = caller.org(None, Action::ViewUsage)?;
    let (from, to) = days(
        ("start_date", q.start_date.as_deref()),
        ("end_date", q.end_date.as_deref()),
    )?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 1000"));
    }
    let mut conn = caller.state.db.pool.acquire().await?;
    let rows = usage::spend_by_project(&mut conn, &org, from / 86_400_000, to / 86_400_000).await?;
    let all =
        tollgate_app::core::projects::load_for_proxy(&mut conn, Some(org.org_id()), None).await?;
    let teams: Vec<Value> = rows
        .iter()
        .take(usize::try_from(limit).unwrap_or(100))
        .map(|(id, micros)| {
            let p = all.iter().find(|p| &p.id == id);
            json!({
                "team_id": p.map_or(id.as_str(), super::team_id_of),
                "team_alias": p.map(|p| p.name.clone()),
                "total_spend": *micros as f64 / 1e6,
            })
        })
        .collect();
    Ok(Json(json!({ "total_spend_per_team": teams })))
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
