//! The `usage_events` ledger and the `request_logs` content log: written
//! behind in batches by the proxy, idempotent by request id; and the spend
//! sums the proxy's budget counters start from.

use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::policy::{ProjectRole, UsageScope};
use crate::usage_report::{DayPoint, KeyBudget, Series, Slice, TotalsView, UsageReport};

/// `a + b` in SQL for a non-negative `b`, saturating at the BIGINT maximum
/// instead of failing (PostgreSQL) or turning into a REAL (SQLite).
macro_rules! sat_add {
    ($a:literal, $b:literal) => {
        concat!(
            "CASE WHEN ",
            $a,
            " > 9223372036854775807 - ",
            $b,
            " THEN 9223372036854775807 ELSE ",
            $a,
            " + ",
            $b,
            " END"
        )
    };
}

/// `SUM(expr)` as a BIGINT that saturates rather than fails on extreme
/// stored values: summed in double precision (exact below 2^53), clamped
/// to the BIGINT range; 0 over no rows.
macro_rules! sat_sum {
    ($e:literal) => {
        concat!(
            "CASE WHEN COALESCE(SUM(CAST(",
            $e,
            " AS DOUBLE PRECISION)), 0) >= 9.2e18 \
             THEN CAST(9223372036854775807 AS BIGINT) \
             WHEN COALESCE(SUM(CAST(",
            $e,
            " AS DOUBLE PRECISION)), 0) <= -9.2e18 \
             THEN CAST(-9223372036854775807 AS BIGINT) \
             ELSE CAST(COALESCE(SUM(CAST(",
            $e,
            " AS DOUBLE PRECISION)), 0) AS BIGINT) END"
        )
    };
}
pub(crate) use sat_sum;

/// The rollup's four sums over `usage_daily u`, saturating; the cost named `$cost`.
macro_rules! usage_sums {
    ($cost:literal) => {
        concat!(
            sat_sum!("u.requests"),
            " AS requests, ",
            sat_sum!("u.tokens_in"),
            " AS tokens_in, ",
            sat_sum!("u.tokens_out"),
            " AS tokens_out, ",
            sat_sum!("u.cost_micros"),
            " AS ",
            $cost
        )
    };
}
pub(crate) use usage_sums;

/// One proxied attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    pub request_id: String,
    pub at: i64,
    pub org_id: String,
    pub project_id: String,
    pub key_id: String,
    /// The model that served the request and priced it.
    pub model: String,
    /// The model the client asked for: a virtual model's id, else `model`.
    pub requested_model: String,
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
    /// The prompt template the request was rendered from ('' none), and
    /// its version (0 none).
    pub prompt_id: String,
    pub prompt_version: i64,
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

/// A UTC day in milliseconds; the rollup's days are `at / DAY_MS`.
pub const DAY_MS: i64 = 86_400_000;

/// Requests, errors, tokens and cost, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

impl Totals {
    /// Saturating: an extreme stored value caps a sum rather than wrapping it.
    pub fn add(&mut self, o: &Totals) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.tokens_in = self.tokens_in.saturating_add(o.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(o.tokens_out);
        self.cost_micros = self.cost_micros.saturating_add(o.cost_micros);
    }
}

/// Usage events one INSERT writes at most: 16 parameters each, within
/// SQLite's limit of 32,766 and PostgreSQL's of 65,535.
const EVENTS_A_STATEMENT: usize = 512;

/// The columns of one usage event in the INSERT.
const EVENT_COLUMNS: usize = 18;

/// The INSERT of `n` usage events (a power of two up to
/// [`EVENTS_A_STATEMENT`]), returning the request ids that were new. Ten
/// statements for each backend, made once: a batch is written as the
/// powers of two its length is made of, so prepared statements are reused.
/// SQLite's are written with `?`: it looks up a numbered parameter's name
/// by a scan of all of them, which for thousands of them cost more than
/// the insert.
fn insert_events_sql(n: usize, postgres: bool) -> &'static str {
    type Made = std::sync::OnceLock<Vec<String>>;
    static MADE: [Made; 2] = [Made::new(), Made::new()];
    let made = MADE[usize::from(postgres)].get_or_init(|| {
        std::iter::successors(Some(1_usize), |n| (*n < EVENTS_A_STATEMENT).then(|| n * 2))
            .map(|n| {
                let rows: Vec<String> = (0..n)
                    .map(|i| {
                        let p: Vec<String> = (1..=EVENT_COLUMNS)
                            .map(|c| match postgres {
                                true => format!("${}", i * EVENT_COLUMNS + c),
                                false => "?".to_owned(),
                            })
                            .collect();
                        format!("({})", p.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO usage_events (request_id, at, org_id, project_id, key_id, model, provider, \
                     endpoint, stream, tokens_in, tokens_out, cost_micros, status, error_code, latency_ms, \
                     requested_model, prompt_id, prompt_version) \
                     VALUES {} ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
                    rows.join(", ")
                )
            })
            .collect()
    });
    made.get(n.trailing_zeros() as usize)
        .map_or("", String::as_str)
}

/// `events` cut into runs of powers of two, largest first, each at most
/// [`EVENTS_A_STATEMENT`].
fn power_runs<T>(mut events: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = events.len().min(EVENTS_A_STATEMENT);
        if n == 0 {
            return None;
        }
        let run = 1 << n.ilog2();
        let (head, rest) = events.split_at(run);
        events = rest;
        Some(head)
    })
}

/// A rollup row's key: organization, day, project, key, served model,
/// requested model and endpoint.
type RollupKey<'e> = (&'e str, i64, &'e str, &'e str, &'e str, &'e str, &'e str);

/// Writes a batch in one transaction, adding each new event to the daily
/// rollup; events already stored (a retried batch, another instance's
/// retry) are skipped, and only new ones add to their key's lifetime spend.
pub async fn write_batch(
    conn: &mut AnyConnection,
    events: &[UsageEvent],
    logs: &[ContentLog],
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    // Rows are updated in key order: two instances writing batches that
    // share rows then lock them in the same order (no deadlock).
    let mut spend: BTreeMap<&str, i64> = BTreeMap::new();
    let mut rollup: BTreeMap<RollupKey<'_>, Totals> = BTreeMap::new();
    // Many events a statement: each statement is a round trip (and, on
    // SQLite, two hand-overs between threads). RETURNING names the events
    // that were new.
    let postgres = tx.backend_name().eq_ignore_ascii_case("postgresql");
    let mut fresh: HashSet<String> = HashSet::new();
    for chunk in power_runs(events) {
        let mut q = sqlx::query_scalar::<_, String>(insert_events_sql(chunk.len(), postgres));
        for e in chunk {
            q = q
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
                .bind(&e.requested_model)
                .bind(&e.prompt_id)
                .bind(e.prompt_version);
        }
        fresh.extend(q.fetch_all(&mut *tx).await?);
    }
    for e in events {
        // Once each, whatever a batch repeats.
        if fresh.remove(&e.request_id) {
            if e.cost_micros != 0 {
                let s = spend.entry(&e.key_id).or_default();
                *s = s.saturating_add(e.cost_micros.max(0));
            }
            let r = rollup
                .entry((
                    e.org_id.as_str(),
                    e.at.div_euclid(DAY_MS),
                    e.project_id.as_str(),
                    e.key_id.as_str(),
                    e.model.as_str(),
                    e.requested_model.as_str(),
                    e.endpoint,
                ))
                .or_default();
            r.requests = r.requests.saturating_add(1);
            r.errors = r.errors.saturating_add(i64::from(e.status >= 400));
            r.tokens_in = r.tokens_in.saturating_add(e.tokens_in.max(0));
            r.tokens_out = r.tokens_out.saturating_add(e.tokens_out.max(0));
            r.cost_micros = r.cost_micros.saturating_add(e.cost_micros.max(0));
        }
    }
    for ((org, day, project, key, model, requested, endpoint), r) in rollup {
        sqlx::query(concat!(
            "INSERT INTO usage_daily (org_id, day, project_id, key_id, model, requests, errors, tokens_in, \
             tokens_out, cost_micros, requested_model, endpoint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (org_id, day, project_id, key_id, model, requested_model, endpoint) DO UPDATE SET \
             requests = ",
            sat_add!("usage_daily.requests", "excluded.requests"),
            ", errors = ",
            sat_add!("usage_daily.errors", "excluded.errors"),
            ", tokens_in = ",
            sat_add!("usage_daily.tokens_in", "excluded.tokens_in"),
            ", tokens_out = ",
            sat_add!("usage_daily.tokens_out", "excluded.tokens_out"),
            ", cost_micros = ",
            sat_add!("usage_daily.cost_micros", "excluded.cost_micros")
        ))
        .bind(org)
        .bind(day)
        .bind(project)
        .bind(key)
        .bind(model)
        .bind(r.requests)
        .bind(r.errors)
        .bind(r.tokens_in)
        .bind(r.tokens_out)
        .bind(r.cost_micros)
        .bind(requested)
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
    }
    for (key_id, micros) in spend {
        sqlx::query(concat!(
            "UPDATE api_keys SET spend_micros = ",
            sat_add!("spend_micros", "$1"),
            " WHERE id = $2"
        ))
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
            "SELECT ",
            $col,
            " AS id, ",
            sat_sum!("CASE WHEN day >= $1 THEN cost_micros ELSE 0 END"),
            " AS d, ",
            sat_sum!("CASE WHEN day >= $2 THEN cost_micros ELSE 0 END"),
            " AS w, ",
            sat_sum!("CASE WHEN day >= $3 THEN cost_micros ELSE 0 END"),
            " AS m, ",
            sat_sum!("cost_micros"),
            " AS total \
             FROM usage_daily WHERE ($4 IS NULL OR ",
            $col,
            " = $4) AND ($5 IS NULL OR org_id = $5) \
             GROUP BY ",
            $col
        )
    };
}

/// Spend per key, project or organization (all of them, or the one `only`,
/// or those of the organization `org`),
/// by calendar period in UTC at `now`, from the daily rollup (every period
/// starts at a UTC midnight).
pub async fn spend(
    conn: &mut AnyConnection,
    level: Level,
    only: Option<&str>,
    org: Option<&str>,
    now: i64,
) -> Result<HashMap<String, Spend>, sqlx::Error> {
    use super::limits::ResetInterval;
    let sql = match level {
        Level::Key => sums!("key_id"),
        Level::Project => sums!("project_id"),
        Level::Org => sums!("org_id"),
    };
    let start = |r: ResetInterval| r.period_start(now).unwrap_or(0).div_euclid(DAY_MS);
    let rows = sqlx::query(sql)
        .bind(start(ResetInterval::Daily))
        .bind(start(ResetInterval::Weekly))
        .bind(start(ResetInterval::Monthly))
        .bind(only)
        .bind(org)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                Spend {
                    day: r.try_get("d")?,
                    week: r.try_get("w")?,
                    month: r.try_get("m")?,
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
    /// The model that served (and priced) each request.
    Model,
    /// The model each request asked for: a virtual model's id, or the served one.
    RequestedModel,
    /// The API each request spoke (`chat.completions`, `responses`, `messages`, …).
    Endpoint,
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
        concat!("SELECT u.day AS day, ", usage_sums!("cost_micros"))
    };
}

/// The day sums split by `$grp` (named by `$label`, from the tables `$join`
/// adds): one static statement per grouping.
macro_rules! grouped_day_sums {
    ($grp:literal, $label:literal, $join:literal) => {
        concat!(
            day_sums!(),
            ", ",
            $grp,
            " AS grp, MAX(",
            $label,
            ") AS label FROM usage_daily u ",
            $join,
            "WHERE u.org_id = $1 AND u.day >= $2 AND u.day < $3 GROUP BY u.day, ",
            $grp,
            " ORDER BY day, grp"
        )
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

/// The organization's usage per UTC day for the days that `[from, to)`
/// (Unix ms) touches, whole or split by `group`, oldest first; from the
/// daily rollup.
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
            " FROM usage_daily u WHERE u.org_id = $1 AND u.day >= $2 AND u.day < $3 \
             GROUP BY u.day ORDER BY day"
        ),
        Some(GroupBy::Project) => grouped_day_sums!(
            "u.project_id",
            "p.name",
            "LEFT JOIN projects p ON p.id = u.project_id "
        ),
        Some(GroupBy::Key) => grouped_day_sums!(
            "u.key_id",
            "k.name",
            "LEFT JOIN api_keys k ON k.id = u.key_id "
        ),
        Some(GroupBy::Model) => grouped_day_sums!("u.model", "u.model", ""),
        Some(GroupBy::RequestedModel) => {
            grouped_day_sums!("u.requested_model", "u.requested_model", "")
        }
        Some(GroupBy::Endpoint) => grouped_day_sums!("u.endpoint", "u.endpoint", ""),
    };
    let rows = sqlx::query(sql)
        .bind(scope.org_id())
        .bind(from.div_euclid(DAY_MS))
        .bind((to + DAY_MS - 1).div_euclid(DAY_MS))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| day_of(r, group.is_some())).collect()
}

/// One row of the daily rollup.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RollupRow {
    pub day: i64,
    pub project_id: String,
    pub key_id: String,
    pub model: String,
    pub requested_model: String,
    /// The endpoint the requests were made to ('' where not recorded).
    pub endpoint: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

/// The rollup rows of an organization for days `[from_day, to_day)`, of one
/// project or key where given. What the caller may see of them is the
/// usage scope's to filter.
pub async fn rollup(
    conn: &mut AnyConnection,
    scope: &crate::policy::TenantScope,
    from_day: i64,
    to_day: i64,
    project: Option<&str>,
    key: Option<&str>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT day, project_id, key_id, model, requested_model, endpoint, requests, errors, tokens_in, \
         tokens_out, cost_micros FROM usage_daily WHERE org_id = $1 AND day >= $2 AND day < $3 \
         AND ($4 IS NULL OR project_id = $4) AND ($5 IS NULL OR key_id = $5) ORDER BY day",
    )
    .bind(scope.org_id())
    .bind(from_day)
    .bind(to_day)
    .bind(project)
    .bind(key)
    .fetch_all(&mut *conn)
    .await
}

/// Everything an organization has spent, and since `month_start_day`.
pub async fn org_spent(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    month_start_day: i64,
) -> Result<(i64, i64), sqlx::Error> {
    let r = sqlx::query(concat!(
        "SELECT ",
        sat_sum!("cost_micros"),
        " AS total, ",
        sat_sum!("CASE WHEN day >= $2 THEN cost_micros ELSE 0 END"),
        " AS month FROM usage_daily WHERE org_id = $1"
    ))
    .bind(scope.org_id())
    .bind(month_start_day)
    .fetch_one(&mut *conn)
    .await?;
    Ok((r.try_get("total")?, r.try_get("month")?))
}

/// A project's requests, newest first, `limit` of them before the cursor
/// `(at, request_id)`.
pub async fn requests(
    conn: &mut AnyConnection,
    scope: &crate::policy::ProjectScope,
    before: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<crate::usage_report::LoggedRequest>, sqlx::Error> {
    let (at, id) = before.unzip();
    let rows = sqlx::query(
        "SELECT u.request_id, u.at, u.key_id, k.name AS key_name, u.model, u.endpoint, u.stream, \
         u.tokens_in, u.tokens_out, u.cost_micros, u.status, u.error_code, u.latency_ms, \
         CASE WHEN l.request_id IS NULL THEN 0 ELSE 1 END AS has_body \
         FROM usage_events u LEFT JOIN api_keys k ON k.id = u.key_id \
         LEFT JOIN request_logs l ON l.request_id = u.request_id \
         WHERE u.project_id = $1 AND u.org_id = $2 \
         AND ($3 IS NULL OR u.at < $3 OR (u.at = $3 AND u.request_id < $4)) \
         ORDER BY u.at DESC, u.request_id DESC LIMIT $5",
    )
    .bind(scope.project_id())
    .bind(scope.org_id())
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let key_name: Option<String> = r.try_get("key_name")?;
            let key_id: String = r.try_get("key_id")?;
            Ok(crate::usage_report::LoggedRequest {
                request_id: r.try_get("request_id")?,
                at: r.try_get("at")?,
                key: key_name.unwrap_or_else(|| format!("(deleted key {key_id})")),
                model: r.try_get("model")?,
                endpoint: r.try_get("endpoint")?,
                stream: r.try_get::<i64, _>("stream")? != 0,
                tokens_in: r.try_get("tokens_in")?,
                tokens_out: r.try_get("tokens_out")?,
                cost_micros: r.try_get("cost_micros")?,
                status: r.try_get("status")?,
                error_code: r.try_get("error_code")?,
                latency_ms: r.try_get("latency_ms")?,
                has_body: r.try_get::<i64, _>("has_body")? != 0,
            })
        })
        .collect()
}

/// The kept bodies of one request of the project: (request, response, truncated).
pub async fn request_bodies(
    conn: &mut AnyConnection,
    scope: &crate::policy::ProjectScope,
    request_id: &str,
) -> Result<Option<(String, String, bool)>, sqlx::Error> {
    let r = sqlx::query(
        "SELECT request_body, response_body, truncated FROM request_logs \
         WHERE request_id = $1 AND project_id = $2 AND org_id = $3",
    )
    .bind(request_id)
    .bind(scope.project_id())
    .bind(scope.org_id())
    .fetch_optional(&mut *conn)
    .await?;
    r.map(|r| {
        Ok((
            r.try_get("request_body")?,
            r.try_get("response_body")?,
            r.try_get::<i64, _>("truncated")? != 0,
        ))
    })
    .transpose()
}

/// A key as usage reports name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub owner_id: Option<String>,
    pub budget_micros: Option<i64>,
    pub budget_reset: String,
    pub revoked: bool,
}

/// The organization's projects `(id, name)` and keys, for naming report rows.
pub async fn names(
    conn: &mut AnyConnection,
    scope: &crate::policy::TenantScope,
) -> Result<(Vec<(String, String)>, Vec<KeyInfo>), sqlx::Error> {
    let projects = sqlx::query("SELECT id, name FROM projects WHERE org_id = $1 ORDER BY name")
        .bind(scope.org_id())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let keys = sqlx::query(
        "SELECT id, name, project_id, owner_id, budget_micros, budget_reset, revoked_at FROM api_keys \
         WHERE org_id = $1 ORDER BY name",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(KeyInfo {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            project_id: r.try_get("project_id")?,
            owner_id: r.try_get("owner_id")?,
            budget_micros: r.try_get("budget_micros")?,
            budget_reset: r.try_get("budget_reset")?,
            revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((projects, keys))
}

/// What a usage report covers: the last `days` days, of one project or key
/// where given.
pub struct ReportFilter {
    pub days: i64,
    pub project_id: Option<String>,
    pub key_id: Option<String>,
}

impl From<&Totals> for TotalsView {
    fn from(t: &Totals) -> TotalsView {
        TotalsView {
            requests: t.requests,
            errors: t.errors,
            tokens_in: t.tokens_in,
            tokens_out: t.tokens_out,
            cost_micros: t.cost_micros,
        }
    }
}

/// Names of the organization's projects and keys, for report rows; a deleted
/// one is named by its id.
struct Names {
    projects: HashMap<String, String>,
    keys: HashMap<String, KeyInfo>,
}

impl Names {
    fn project(&self, id: &str) -> String {
        self.projects
            .get(id)
            .map_or_else(|| format!("(deleted project {id})"), Clone::clone)
    }
    fn key(&self, id: &str) -> String {
        self.keys
            .get(id)
            .map_or_else(|| format!("(deleted key {id})"), |k| k.name.clone())
    }
    fn owner(&self, key: &str) -> Option<&str> {
        self.keys.get(key).and_then(|k| k.owner_id.as_deref())
    }
}

/// The usage report of what `scope` sees over the filter's period, from the
/// daily rollup: per day, per project, key and model, and the budgets of the
/// keys in view. `standings` are the projects the caller belongs to.
pub async fn report(
    conn: &mut AnyConnection,
    scope: &UsageScope,
    standings: &[(String, ProjectRole)],
    filter: &ReportFilter,
    now: i64,
) -> Result<UsageReport, sqlx::Error> {
    let today = now.div_euclid(DAY_MS);
    let from = today.saturating_sub(filter.days).saturating_add(1);
    let (project, key) = (filter.project_id.as_deref(), filter.key_id.as_deref());
    let (project_list, key_list) = names(conn, scope.org()).await?;
    let names = Names {
        projects: project_list.iter().cloned().collect(),
        keys: key_list.iter().map(|k| (k.id.clone(), k.clone())).collect(),
    };
    let sees = |project: &str, key: &str| scope.sees(project, names.owner(key));
    let rows: Vec<RollupRow> = rollup(conn, scope.org(), from, today + 1, project, key)
        .await?
        .into_iter()
        .filter(|r| sees(&r.project_id, &r.key_id))
        .collect();
    let sums = Sums::of(&rows, from, filter.days);
    let key_budgets = key_budgets(conn, scope, &names, &key_list, filter, now).await?;
    let slice = |id: &str, name: String, project: Option<String>, t: &Totals| Slice {
        id: id.to_owned(),
        name,
        project,
        totals: t.into(),
    };
    Ok(UsageReport {
        days: sums
            .per_day
            .iter()
            .zip(from..)
            .map(|(t, day)| DayPoint {
                day,
                totals: t.into(),
            })
            .collect(),
        spend_by_model: sums
            .by_model
            .iter()
            .map(|(m, (_, values))| Series {
                name: (*m).to_owned(),
                values: values.clone(),
            })
            .collect(),
        totals: (&sums.total).into(),
        by_project: by_cost(
            sums.by_project
                .iter()
                .map(|(id, t)| slice(id, names.project(id), None, t))
                .collect(),
        ),
        by_key: by_cost(
            sums.by_key
                .iter()
                .map(|(id, t)| {
                    let project = names.keys.get(*id).map(|k| names.project(&k.project_id));
                    slice(id, names.key(id), project, t)
                })
                .collect(),
        ),
        by_model: by_cost(
            sums.by_model
                .iter()
                .map(|(m, (t, _))| slice(m, (*m).to_owned(), None, t))
                .collect(),
        ),
        by_requested_model: by_cost(
            sums.by_requested
                .iter()
                .map(|(m, t)| slice(m, (*m).to_owned(), None, t))
                .collect(),
        ),
        by_endpoint: by_cost(
            sums.by_endpoint
                .iter()
                .map(|(e, t)| {
                    let name = if e.is_empty() { "(not recorded)" } else { e };
                    slice(e, name.to_owned(), None, t)
                })
                .collect(),
        ),
        key_budgets,
        whole: scope.whole(),
        projects: project_list
            .iter()
            .filter(|(id, _)| scope.whole() || standings.iter().any(|(p, _)| p == id))
            .cloned()
            .collect(),
        keys: key_list
            .iter()
            .filter(|k| sees(&k.project_id, &k.id))
            .map(|k| (k.id.clone(), k.name.clone()))
            .collect(),
    })
}

/// The rollup rows summed per day, in all, per project, key, served model
/// (with the model's spend per day) and requested model.
struct Sums<'r> {
    per_day: Vec<Totals>,
    total: Totals,
    by_project: HashMap<&'r str, Totals>,
    by_key: HashMap<&'r str, Totals>,
    by_model: BTreeMap<&'r str, (Totals, Vec<i64>)>,
    by_requested: HashMap<&'r str, Totals>,
    by_endpoint: HashMap<&'r str, Totals>,
}

impl<'r> Sums<'r> {
    fn of(rows: &'r [RollupRow], from: i64, days: i64) -> Sums<'r> {
        let n = usize::try_from(days).unwrap_or(0);
        let mut s = Sums {
            per_day: vec![Totals::default(); n],
            total: Totals::default(),
            by_project: HashMap::new(),
            by_key: HashMap::new(),
            by_model: BTreeMap::new(),
            by_requested: HashMap::new(),
            by_endpoint: HashMap::new(),
        };
        for r in rows {
            let i = usize::try_from(r.day - from)
                .unwrap_or(0)
                .min(n.saturating_sub(1));
            if let Some(day) = s.per_day.get_mut(i) {
                day.add(&r.totals);
            }
            s.total.add(&r.totals);
            s.by_project
                .entry(&r.project_id)
                .or_default()
                .add(&r.totals);
            s.by_key.entry(&r.key_id).or_default().add(&r.totals);
            s.by_requested
                .entry(&r.requested_model)
                .or_default()
                .add(&r.totals);
            s.by_endpoint.entry(&r.endpoint).or_default().add(&r.totals);
            let m = s
                .by_model
                .entry(&r.model)
                .or_insert_with(|| (Totals::default(), vec![0; n]));
            m.0.add(&r.totals);
            if let Some(v) = m.1.get_mut(i) {
                *v = v.saturating_add(r.totals.cost_micros);
            }
        }
        s
    }
}

/// Most spent first, then by name.
fn by_cost(mut v: Vec<Slice>) -> Vec<Slice> {
    v.sort_by(|a, b| {
        b.totals
            .cost_micros
            .cmp(&a.totals.cost_micros)
            .then(a.name.cmp(&b.name))
    });
    v
}

/// Budgets of the live keys in view: spent this period, the daily rate of the
/// last seven days, and when the budget runs out at that rate (before the
/// reset, else `None`).
async fn key_budgets(
    conn: &mut AnyConnection,
    scope: &UsageScope,
    names: &Names,
    keys: &[KeyInfo],
    filter: &ReportFilter,
    now: i64,
) -> Result<Vec<KeyBudget>, sqlx::Error> {
    use super::limits::ResetInterval;
    let (project, key) = (filter.project_id.as_deref(), filter.key_id.as_deref());
    let spent = spend(conn, Level::Key, key, Some(scope.org().org_id()), now).await?;
    let today = now.div_euclid(DAY_MS);
    let week = rollup(conn, scope.org(), today - 6, today + 1, project, key).await?;
    let mut week_by_key: HashMap<&str, i64> = HashMap::new();
    for r in &week {
        let sum = week_by_key.entry(&r.key_id).or_default();
        *sum = sum.saturating_add(r.totals.cost_micros);
    }
    Ok(keys
        .iter()
        .filter(|k| !k.revoked && scope.sees(&k.project_id, names.owner(&k.id)))
        .filter(|k| project.is_none_or(|p| p == k.project_id))
        .filter(|k| key.is_none_or(|i| i == k.id))
        .filter_map(|k| {
            let budget = k.budget_micros?;
            let reset = ResetInterval::parse("budget_reset", &k.budget_reset)
                .unwrap_or(ResetInterval::Never);
            let spent = spent.get(&k.id).map_or(0, |s| s.for_interval(reset));
            let rate = week_by_key.get(k.id.as_str()).copied().unwrap_or(0) / 7;
            let next_reset = reset.next_reset(now);
            let runs_out = (rate > 0)
                .then(|| {
                    let left = budget.saturating_sub(spent).max(0);
                    let days_left = i128::from(left) * i128::from(DAY_MS) / i128::from(rate);
                    now.saturating_add(i64::try_from(days_left).unwrap_or(i64::MAX))
                })
                .filter(|t| next_reset.is_none_or(|r| *t < r));
            Some(KeyBudget {
                key_id: k.id.clone(),
                name: k.name.clone(),
                project: names.project(&k.project_id),
                budget_micros: budget,
                reset: reset.as_str().to_owned(),
                spent_micros: spent,
                next_reset,
                daily_rate_micros: rate,
                runs_out,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_in_runs_of_powers_of_two() {
        let events: Vec<usize> = (0..1_300).collect();
        let runs: Vec<usize> = power_runs(&events).map(<[usize]>::len).collect();
        assert_eq!(runs, [512, 512, 256, 16, 4]);
        let again: Vec<usize> = power_runs(&events).flatten().copied().collect();
        assert_eq!(again, events, "every event once, in order");
        for n in [1, 2, 256, 512] {
            let sql = insert_events_sql(n, true);
            assert!(
                sql.contains(&format!("${})", n * EVENT_COLUMNS))
                    && !sql.contains(&format!("${}", n * EVENT_COLUMNS + 1)),
                "{n}"
            );
            assert_eq!(
                insert_events_sql(n, false).matches('?').count(),
                n * EVENT_COLUMNS
            );
        }
    }
}

/// One attempt as LiteLLM's `/spend/logs` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendLog {
    pub request_id: String,
    pub at: i64,
    pub latency_ms: i64,
    pub key_hash: Option<String>,
    pub key_name: Option<String>,
    pub project_id: String,
    pub model: String,
    pub endpoint: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
    pub status: i64,
}

/// An organization's attempts in `[from, to)`, newest first, of one key or
/// project where given, at most `limit`.
pub async fn spend_logs(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    (from, to): (i64, i64),
    key_id: Option<&str>,
    project_id: Option<&str>,
    limit: i64,
) -> Result<Vec<SpendLog>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT u.request_id, u.at, u.latency_ms, k.id_hash, k.name AS key_name, u.project_id, u.model, u.endpoint, \
         u.tokens_in, u.tokens_out, u.cost_micros, u.status FROM usage_events u LEFT JOIN api_keys k ON k.id = u.key_id \
         WHERE u.org_id = $1 AND u.at >= $2 AND u.at < $3 AND ($4 = '' OR u.key_id = $4) \
         AND ($5 = '' OR u.project_id = $5) ORDER BY u.at DESC, u.request_id DESC LIMIT $6",
    )
    .bind(scope.org_id())
    .bind(from)
    .bind(to)
    .bind(key_id.unwrap_or(""))
    .bind(project_id.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SpendLog {
                request_id: r.try_get("request_id")?,
                at: r.try_get("at")?,
                latency_ms: r.try_get("latency_ms")?,
                key_hash: r.try_get("id_hash")?,
                key_name: r.try_get("key_name")?,
                project_id: r.try_get("project_id")?,
                model: r.try_get("model")?,
                endpoint: r.try_get("endpoint")?,
                tokens_in: r.try_get("tokens_in")?,
                tokens_out: r.try_get("tokens_out")?,
                cost_micros: r.try_get("cost_micros")?,
                status: r.try_get("status")?,
            })
        })
        .collect()
}

/// Each project's spend over days `[from_day, to_day)`, highest first:
/// (project id, micro-USD).
pub async fn spend_by_project(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT project_id, ",
        sat_sum!("cost_micros"),
        " AS spent FROM usage_daily WHERE org_id = $1 AND day >= $2 AND day < $3 GROUP BY project_id ORDER BY spent DESC"
    ))
    .bind(scope.org_id())
    .bind(from_day)
    .bind(to_day)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("project_id")?, r.try_get("spent")?)))
        .collect()
}
