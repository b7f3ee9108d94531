//! The `usage_events` ledger and the `request_logs` content log: written
//! behind in batches by the proxy, idempotent by request id; and the spend
//! sums the proxy's budget counters start from.

use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// One proxied attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    pub request_id: String,
    pub at: i64,
    pub org_id: String,
    pub project_id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub endpoint: &'static str,
    pub stream: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
    /// The HTTP status the client got (499: it went away mid-answer).
    pub status: i64,
    pub error_code: Option<String>,
    pub latency_ms: i64,
}

/// The bodies of one attempt, truncated; only where content logging is on.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentLog {
    pub request_id: String,
    pub at: i64,
    pub org_id: String,
    pub project_id: String,
    pub key_id: String,
    pub request_body: String,
    pub response_body: String,
    pub truncated: bool,
}

/// Writes a batch in one transaction; events already stored (a retried
/// batch) are skipped, and only new ones add to their key's lifetime spend.
pub async fn write_batch(
    conn: &mut AnyConnection,
    events: &[UsageEvent],
    logs: &[ContentLog],
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let mut spend: HashMap<&str, i64> = HashMap::new();
    for e in events {
        let done = sqlx::query(
            "INSERT INTO usage_events (request_id, at, org_id, project_id, key_id, model, provider, endpoint, \
             stream, tokens_in, tokens_out, cost_micros, status, error_code, latency_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&e.request_id)
        .bind(e.at)
        .bind(&e.org_id)
        .bind(&e.project_id)
        .bind(&e.key_id)
        .bind(&e.model)
        .bind(&e.provider)
        .bind(e.endpoint)
        .bind(i64::from(e.stream))
        .bind(e.tokens_in)
        .bind(e.tokens_out)
        .bind(e.cost_micros)
        .bind(e.status)
        .bind(e.error_code.as_deref())
        .bind(e.latency_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 && e.cost_micros != 0 {
            *spend.entry(&e.key_id).or_default() += e.cost_micros;
        }
    }
    for (key_id, micros) in spend {
        sqlx::query("UPDATE api_keys SET spend_micros = spend_micros + $1 WHERE id = $2")
            .bind(micros)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
    }
    for l in logs {
        sqlx::query(
            "INSERT INTO request_logs (request_id, at, org_id, project_id, key_id, request_body, response_body, truncated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&l.request_id)
        .bind(l.at)
        .bind(&l.org_id)
        .bind(&l.project_id)
        .bind(&l.key_id)
        .bind(&l.request_body)
        .bind(&l.response_body)
        .bind(i64::from(l.truncated))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Whose spend to sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Key,
    Project,
    Org,
}

/// Spend since the start of today, this week, this month, and ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    pub day: i64,
    pub week: i64,
    pub month: i64,
    pub total: i64,
}

impl Spend {
    pub fn for_interval(&self, reset: super::limits::ResetInterval) -> i64 {
        use super::limits::ResetInterval::*;
        match reset {
            Never => self.total,
            Daily => self.day,
            Weekly => self.week,
            Monthly => self.month,
        }
    }
}

macro_rules! sums {
    ($col:literal) => {
        concat!(
            "SELECT ", $col, " AS id, \
             CAST(COALESCE(SUM(CASE WHEN at >= $1 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS day, \
             CAST(COALESCE(SUM(CASE WHEN at >= $2 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS week, \
             CAST(COALESCE(SUM(CASE WHEN at >= $3 THEN cost_micros ELSE 0 END), 0) AS BIGINT) AS month, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS total \
             FROM usage_events WHERE ($4 IS NULL OR ", $col, " = $4) GROUP BY ", $col
        )
    };
}

/// Spend per key, project or organization (all of them, or the one `only`),
/// by calendar period in UTC at `now`.
pub async fn spend(
    conn: &mut AnyConnection,
    level: Level,
    only: Option<&str>,
    now: i64,
) -> Result<HashMap<String, Spend>, sqlx::Error> {
    use super::limits::ResetInterval;
    let sql = match level {
        Level::Key => sums!("key_id"),
        Level::Project => sums!("project_id"),
        Level::Org => sums!("org_id"),
    };
    let start = |r: ResetInterval| r.period_start(now).unwrap_or(0);
    let rows = sqlx::query(sql)
        .bind(start(ResetInterval::Daily))
        .bind(start(ResetInterval::Weekly))
        .bind(start(ResetInterval::Monthly))
        .bind(only)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                Spend {
                    day: r.try_get("day")?,
                    week: r.try_get("week")?,
                    month: r.try_get("month")?,
                    total: r.try_get("total")?,
                },
            ))
        })
        .collect()
}

/// How a usage report splits each day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Project,
    Key,
    Model,
}

/// One UTC day of spend, whole or for one group (project, key or model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayRow {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// The group's id (a project's or key's id, or a model name); empty when whole.
    pub group: String,
    /// The group's name where it has one (a project's or key's).
    pub label: Option<String>,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

macro_rules! day_sums {
    () => {
        "SELECT CAST(u.at / 86400000 AS BIGINT) AS day, COUNT(*) AS requests, \
         CAST(COALESCE(SUM(u.tokens_in), 0) AS BIGINT) AS tokens_in, \
         CAST(COALESCE(SUM(u.tokens_out), 0) AS BIGINT) AS tokens_out, \
         CAST(COALESCE(SUM(u.cost_micros), 0) AS BIGINT) AS cost_micros"
    };
}

fn day_of(r: &sqlx::any::AnyRow, grouped: bool) -> Result<DayRow, sqlx::Error> {
    Ok(DayRow {
        day: r.try_get("day")?,
        group: if grouped {
            r.try_get("grp")?
        } else {
            String::new()
        },
        label: if grouped { r.try_get("label")? } else { None },
        requests: r.try_get("requests")?,
        tokens_in: r.try_get("tokens_in")?,
        tokens_out: r.try_get("tokens_out")?,
        cost_micros: r.try_get("cost_micros")?,
    })
}

/// The organization's usage per UTC day in `[from, to)` (Unix ms), whole or
/// split by `group`, oldest first.
pub async fn daily(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    from: i64,
    to: i64,
    group: Option<GroupBy>,
) -> Result<Vec<DayRow>, sqlx::Error> {
    let sql = match group {
        None => concat!(
            day_sums!(),
            " FROM usage_events u WHERE u.org_id = $1 AND u.at >= $2 AND u.at < $3 \
             GROUP BY CAST(u.at / 86400000 AS BIGINT) ORDER BY day"
        ),
        Some(GroupBy::Project) => concat!(
            day_sums!(),
            ", u.project_id AS grp, MAX(p.name) AS label FROM usage_events u \
             LEFT JOIN projects p ON p.id = u.project_id \
             WHERE u.org_id = $1 AND u.at >= $2 AND u.at < $3 \
             GROUP BY CAST(u.at / 86400000 AS BIGINT), u.project_id ORDER BY day, grp"
        ),
        Some(GroupBy::Key) => concat!(
            day_sums!(),
            ", u.key_id AS grp, MAX(k.name) AS label FROM usage_events u \
             LEFT JOIN api_keys k ON k.id = u.key_id \
             WHERE u.org_id = $1 AND u.at >= $2 AND u.at < $3 \
             GROUP BY CAST(u.at / 86400000 AS BIGINT), u.key_id ORDER BY day, grp"
        ),
        Some(GroupBy::Model) => concat!(
            day_sums!(),
            ", u.model AS grp, MAX(u.model) AS label FROM usage_events u \
             WHERE u.org_id = $1 AND u.at >= $2 AND u.at < $3 \
             GROUP BY CAST(u.at / 86400000 AS BIGINT), u.model ORDER BY day, grp"
        ),
    };
    let rows = sqlx::query(sql)
        .bind(scope.org_id())
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| day_of(r, group.is_some())).collect()
}
