//! Alerts: raised when a key, project or organization budget crosses one of
//! the organization's thresholds, when a key expires within a week, and when
//! a project is paused by its budget. A unique row per (subject, threshold,
//! period) makes each alert happen once however often or wherever this runs;
//! each destination's delivery is retried with backoff until it lands.

use serde_json::json;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

use super::limits::ResetInterval;
use super::orgs::{self, Alerting};
use super::usage::{self, Level, Spend};
use crate::format::{format_time, format_usd, Usd};
use crate::policy::OrgScope;

const WEEK_MS: i64 = 7 * 86_400_000;

/// A destination of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Slack,
    Webhook,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Slack => "slack",
            Target::Webhook => "webhook",
        }
    }
}

struct Candidate {
    org_id: String,
    kind: &'static str,
    subject_type: &'static str,
    subject_id: String,
    subject_name: String,
    threshold: i64,
    period_start: i64,
    message: String,
    spent: Option<i64>,
    budget: Option<i64>,
}

fn budget_alerts(a: &Alerting) -> bool {
    a.alert_types.is_empty() || a.alert_types.iter().any(|t| t == "budget_alerts")
}

/// Threshold alerts for one budget: every threshold the spend has reached.
#[allow(clippy::too_many_arguments)]
fn crossed(
    out: &mut Vec<Candidate>,
    a: &Alerting,
    org_id: &str,
    subject_type: &'static str,
    subject_id: &str,
    name: &str,
    budget: i64,
    reset: ResetInterval,
    spend: Spend,
    now: i64,
) {
    if budget <= 0 {
        return;
    }
    let spent = spend.for_interval(reset);
    let period_start = reset.period_start(now).unwrap_or(0);
    for &t in &a.thresholds {
        if i128::from(spent) * 100 >= i128::from(t) * i128::from(budget) {
            out.push(Candidate {
                org_id: org_id.to_owned(),
                kind: "budget",
                subject_type,
                subject_id: subject_id.to_owned(),
                subject_name: name.to_owned(),
                threshold: t,
                period_start,
                message: format!(
                    "{subject_type} '{name}' has used {t}% of its {} budget ({}): spent {} since {}",
                    reset.as_str(),
                    format_usd(budget),
                    format_usd(spent),
                    format_time(period_start),
                ),
                spent: Some(spent),
                budget: Some(budget),
            });
        }
    }
    if subject_type == "project" && spent >= budget {
        out.push(Candidate {
            org_id: org_id.to_owned(),
            kind: "project_paused",
            subject_type,
            subject_id: subject_id.to_owned(),
            subject_name: name.to_owned(),
            threshold: 100,
            period_start,
            message: format!(
                "project '{name}' is paused: its {} budget of {} is spent ({}); its keys get 402 until {}",
                reset.as_str(),
                format_usd(budget),
                format_usd(spent),
                reset
                    .next_reset(now)
                    .map_or_else(|| "the budget is raised".to_owned(), format_time),
            ),
            spent: Some(spent),
            budget: Some(budget),
        });
    }
}

/// Looks at every organization that has somewhere to send alerts and raises
/// what is due; returns how many alerts are new.
pub async fn evaluate(conn: &mut AnyConnection, now: i64) -> Result<usize, sqlx::Error> {
    let orgs_ = orgs::alerting_all(conn).await?;
    if orgs_.is_empty() {
        return Ok(0);
    }
    let settings: HashMap<&str, &Alerting> =
        orgs_.iter().map(|(id, a, _)| (id.as_str(), a)).collect();
    let spend_of = |m: &HashMap<String, Spend>, id: &str| m.get(id).copied().unwrap_or_default();
    let key_spend = usage::spend(conn, Level::Key, None, None, now).await?;
    let project_spend = usage::spend(conn, Level::Project, None, None, now).await?;
    let org_spend = usage::spend(conn, Level::Org, None, None, now).await?;
    let mut out = Vec::new();
    for (org_id, a, spending) in &orgs_ {
        if let (Some(cap), true) = (spending.spend_cap.map(Usd::micros), budget_alerts(a)) {
            let reset = spending.spend_cap_reset;
            crossed(
                &mut out,
                a,
                org_id,
                "organization",
                org_id,
                "spend cap",
                cap,
                reset,
                spend_of(&org_spend, org_id),
                now,
            );
        }
    }
    let projects = sqlx::query(
        "SELECT id, org_id, name, budget_micros, budget_reset FROM projects WHERE budget_micros IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in &projects {
        let org_id: String = r.try_get("org_id")?;
        let Some(a) = settings.get(org_id.as_str()).filter(|a| budget_alerts(a)) else {
            continue;
        };
        let id: String = r.try_get("id")?;
        let reset = super::db::text_as(&r.try_get::<String, _>("budget_reset")?)?;
        crossed(
            &mut out,
            a,
            &org_id,
            "project",
            &id,
            &r.try_get::<String, _>("name")?,
            r.try_get("budget_micros")?,
            reset,
            spend_of(&project_spend, &id),
            now,
        );
    }
    let keys = sqlx::query(
        "SELECT id, org_id, name, budget_micros, budget_reset, expires_at FROM api_keys \
         WHERE revoked_at IS NULL AND (budget_micros IS NOT NULL OR (expires_at > $1 AND expires_at <= $2))",
    )
    .bind(now)
    .bind(now + WEEK_MS)
    .fetch_all(&mut *conn)
    .await?;
    for r in &keys {
        let org_id: String = r.try_get("org_id")?;
        let Some(a) = settings.get(org_id.as_str()) else {
            continue;
        };
        let id: String = r.try_get("id")?;
        let name: String = r.try_get("name")?;
        if let Some(budget) = r
            .try_get::<Option<i64>, _>("budget_micros")?
            .filter(|_| budget_alerts(a))
        {
            let reset = super::db::text_as(&r.try_get::<String, _>("budget_reset")?)?;
            crossed(
                &mut out,
                a,
                &org_id,
                "key",
                &id,
                &name,
                budget,
                reset,
                spend_of(&key_spend, &id),
                now,
            );
        }
        if let Some(at) = r
            .try_get::<Option<i64>, _>("expires_at")?
            .filter(|at| *at > now && *at <= now + WEEK_MS)
        {
            out.push(Candidate {
                org_id: org_id.clone(),
                kind: "key_expiring",
                subject_type: "key",
                subject_id: id.clone(),
                subject_name: name.clone(),
                threshold: 0,
                period_start: at,
                message: format!("key '{name}' expires at {}", format_time(at)),
                spent: None,
                budget: None,
            });
        }
    }
    let mut raised = 0;
    for c in out {
        if let Some(a) = settings.get(c.org_id.as_str()) {
            raised += usize::from(raise(conn, a, &c, now).await?);
        }
    }
    Ok(raised)
}

/// Records an alert unless it was raised before, and queues its deliveries.
async fn raise(
    conn: &mut AnyConnection,
    a: &Alerting,
    c: &Candidate,
    now: i64,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    let id = super::new_id();
    let payload = json!({
        "id": id,
        "type": c.kind,
        "organization_id": c.org_id,
        "subject": { "type": c.subject_type, "id": c.subject_id, "name": c.subject_name },
        "threshold_percent": (c.kind == "budget").then_some(c.threshold),
        "spent_usd": c.spent.map(|m| Usd::from_micros(m).plain()),
        "budget_usd": c.budget.map(|m| Usd::from_micros(m).plain()),
        "period_start": format_time(c.period_start),
        "message": c.message,
        "at": format_time(now),
    });
    let mut tx = conn.begin().await?;
    let done = sqlx::query(
        "INSERT INTO alerts (id, org_id, kind, subject_type, subject_id, threshold, period_start, at, \
         message, payload_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(&c.org_id)
    .bind(c.kind)
    .bind(c.subject_type)
    .bind(&c.subject_id)
    .bind(c.threshold)
    .bind(c.period_start)
    .bind(now)
    .bind(&c.message)
    .bind(payload.to_string())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    for (target, url) in [
        (Target::Slack, &a.slack_url),
        (Target::Webhook, &a.webhook_url),
    ] {
        if url.is_some() {
            sqlx::query(
                "INSERT INTO alert_deliveries (alert_id, target, attempts, next_at, delivered_at, last_error) \
                 VALUES ($1, $2, 0, $3, NULL, NULL)",
            )
            .bind(&id)
            .bind(target.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// A delivery that is due, with where it goes (read now: a changed URL is used).
pub struct Due {
    pub alert_id: String,
    pub target: Target,
    pub attempts: i64,
    next_at: i64,
    pub url: Option<String>,
    pub message: String,
    pub payload: String,
}

pub async fn due(conn: &mut AnyConnection, now: i64, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.alert_id, d.target, d.attempts, d.next_at, a.message, a.payload_json, \
         o.alert_webhook_url, o.alert_slack_url FROM alert_deliveries d \
         JOIN alerts a ON a.id = d.alert_id JOIN organizations o ON o.id = a.org_id \
         WHERE d.next_at IS NOT NULL AND d.next_at <= $1 ORDER BY d.next_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let target = if r.try_get::<String, _>("target")? == "slack" {
                Target::Slack
            } else {
                Target::Webhook
            };
            Ok(Due {
                alert_id: r.try_get("alert_id")?,
                attempts: r.try_get("attempts")?,
                next_at: r.try_get("next_at")?,
                url: match target {
                    Target::Slack => r.try_get("alert_slack_url")?,
                    Target::Webhook => r.try_get("alert_webhook_url")?,
                },
                target,
                message: r.try_get("message")?,
                payload: r.try_get("payload_json")?,
            })
        })
        .collect()
}

/// Takes a due delivery for `lease_ms` (another instance then skips it);
/// false when someone else took it first.
pub async fn claim(
    conn: &mut AnyConnection,
    d: &Due,
    now: i64,
    lease_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE alert_deliveries SET next_at = $1 WHERE alert_id = $2 AND target = $3 AND next_at = $4",
    )
    .bind(now + lease_ms)
    .bind(&d.alert_id)
    .bind(d.target.as_str())
    .bind(d.next_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records one attempt: delivered, or failed with `error` and retried at
/// `retry_at` (`None`: given up).
pub async fn attempted(
    conn: &mut AnyConnection,
    d: &Due,
    now: i64,
    outcome: Result<(), (String, Option<i64>)>,
) -> Result<(), sqlx::Error> {
    let (delivered, error, next) = match outcome {
        Ok(()) => (Some(now), None, None),
        Err((e, retry_at)) => (None, Some(e), retry_at),
    };
    sqlx::query(
        "UPDATE alert_deliveries SET attempts = attempts + 1, delivered_at = $1, last_error = $2, \
         next_at = $3 WHERE alert_id = $4 AND target = $5",
    )
    .bind(delivered)
    .bind(error)
    .bind(next)
    .bind(&d.alert_id)
    .bind(d.target.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An alert as the console lists it, with each destination's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentAlert {
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub subject_type: String,
    pub threshold: i64,
    pub message: String,
    pub deliveries: Vec<Delivery>,
}

/// Where one destination's delivery of an alert stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub target: String,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    /// The next attempt; `None` once delivered or given up.
    pub next_at: Option<i64>,
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    limit: i64,
) -> Result<Vec<SentAlert>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, kind, subject_type, threshold, message FROM alerts WHERE org_id = $1 \
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(scope.org_id())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let ds = sqlx::query(
            "SELECT target, attempts, delivered_at, last_error, next_at FROM alert_deliveries \
             WHERE alert_id = $1 ORDER BY target",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
        let deliveries = ds
            .iter()
            .map(|d| {
                Ok(Delivery {
                    target: d.try_get("target")?,
                    attempts: d.try_get("attempts")?,
                    delivered_at: d.try_get("delivered_at")?,
                    last_error: d.try_get("last_error")?,
                    next_at: d.try_get("next_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        out.push(SentAlert {
            id,
            at: r.try_get("at")?,
            kind: r.try_get("kind")?,
            subject_type: r.try_get("subject_type")?,
            threshold: r.try_get("threshold")?,
            message: r.try_get("message")?,
            deliveries,
        });
    }
    Ok(out)
}
