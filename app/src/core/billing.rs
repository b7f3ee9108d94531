//! The money side of an organization: the prepaid credit ledger and its
//! balance, whether `/v1` is stopped (credits or the spend cap exhausted),
//! and monthly statements by project and model, read from the daily rollup.

use sqlx::{AnyConnection, Row};

pub use crate::billing_report::{CreditEntry, Standing, Statement, StatementLine};

use super::limits::ResetInterval;
use super::usage::{sat_sum, usage_sums, DAY_MS};
use crate::format::Usd;
use crate::policy::OrgScope;

/// What a credit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditKind {
    Grant,
    Purchase,
    Adjustment,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Grant => "grant",
            CreditKind::Purchase => "purchase",
            CreditKind::Adjustment => "adjustment",
        }
    }

    /// Parses a kind; the error names `field`.
    pub fn parse(field: &str, s: &str) -> Result<CreditKind, crate::error::AppError> {
        match s.trim() {
            "grant" => Ok(CreditKind::Grant),
            "purchase" => Ok(CreditKind::Purchase),
            "adjustment" => Ok(CreditKind::Adjustment),
            other => Err(crate::error::AppError::invalid(
                field,
                format!("'{other}' is not grant, purchase or adjustment"),
            )),
        }
    }
}

pub async fn add_credit(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    e: &CreditEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credit_entries (id, org_id, at, kind, amount_micros, note, reference, entered_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&e.id)
    .bind(scope.org_id())
    .bind(e.at)
    .bind(&e.kind)
    .bind(e.amount_micros)
    .bind(&e.note)
    .bind(&e.reference)
    .bind(&e.entered_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The ledger, newest first.
pub async fn credits(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<CreditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, kind, amount_micros, note, reference, entered_by FROM credit_entries \
         WHERE org_id = $1 ORDER BY at DESC, id DESC",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await
}

pub async fn set_prepaid(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    prepaid: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE organizations SET prepaid = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(prepaid))
        .bind(now)
        .bind(scope.org_id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn standing(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    now: i64,
) -> Result<Standing, sqlx::Error> {
    let r = sqlx::query(
        "SELECT o.prepaid, o.spend_cap_micros, o.spend_cap_reset, \
         (SELECT CAST(COALESCE(SUM(c.amount_micros), 0) AS BIGINT) FROM credit_entries c WHERE c.org_id = o.id) AS credits \
         FROM organizations o WHERE o.id = $1",
    )
    .bind(scope.org_id())
    .fetch_one(&mut *conn)
    .await?;
    let prepaid = r.try_get::<i64, _>("prepaid")? != 0;
    let credits = super::db::usd(&r, "credits")?;
    let cap = super::db::usd_opt(&r, "spend_cap_micros")?;
    let reset: ResetInterval = super::db::text_as(&r.try_get::<String, _>("spend_cap_reset")?)?;
    let start_day = reset.period_start(now).unwrap_or(0).div_euclid(DAY_MS);
    let s = sqlx::query(concat!(
        "SELECT ",
        sat_sum!("cost_micros"),
        " AS total, ",
        sat_sum!("CASE WHEN day >= $2 THEN cost_micros ELSE 0 END"),
        " AS period FROM usage_daily WHERE org_id = $1"
    ))
    .bind(scope.org_id())
    .bind(start_day)
    .fetch_one(&mut *conn)
    .await?;
    let spent = super::db::usd(&s, "total")?;
    let cap_spent = super::db::usd(&s, "period")?;
    let balance = credits.saturating_sub(spent);
    Ok(Standing {
        prepaid,
        credits,
        spent,
        balance,
        cap_exhausted: cap.is_some_and(|c| cap_spent >= c),
        cap,
        cap_reset: reset,
        cap_spent,
        cap_resets_at: reset.next_reset(now),
        credits_exhausted: prepaid && balance <= Usd::ZERO,
    })
}

/// The first instant of the month `YYYY-MM` and of the month after, in ms.
pub fn month_bounds(field: &str, month: &str) -> Result<(i64, i64), crate::error::AppError> {
    let bad =
        || crate::error::AppError::invalid(field, format!("'{month}' is not a month like 2026-11"));
    let (y, m) = month.trim().split_once('-').ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let start = |y: i32, m: u8| -> Result<i64, crate::error::AppError> {
        let month = time::Month::try_from(m).map_err(|_| bad())?;
        let d = time::Date::from_calendar_date(y, month, 1).map_err(|_| bad())?;
        Ok(d.midnight().assume_utc().unix_timestamp() * 1000)
    };
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Ok((start(y, m)?, start(ny, nm)?))
}

pub async fn statement(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    month: &str,
) -> Result<Statement, crate::error::AppError> {
    let (from, to) = month_bounds("month", month)?;
    let rows = sqlx::query(concat!(
        "SELECT u.project_id, MAX(p.name) AS project_name, u.model, ",
        usage_sums!("cost"),
        " FROM usage_daily u LEFT JOIN projects p ON p.id = u.project_id \
         WHERE u.org_id = $1 AND u.day >= $2 AND u.day < $3 \
         GROUP BY u.project_id, u.model ORDER BY project_name, u.project_id, u.model",
    ))
    .bind(scope.org_id())
    .bind(from / DAY_MS)
    .bind(to / DAY_MS)
    .fetch_all(&mut *conn)
    .await?;
    let mut lines = Vec::with_capacity(rows.len());
    for r in &rows {
        let project_id: String = r.try_get("project_id")?;
        lines.push(StatementLine {
            project_name: r
                .try_get::<Option<String>, _>("project_name")?
                .unwrap_or_else(|| format!("(deleted project {project_id})")),
            project_id,
            model: r.try_get("model")?,
            requests: r.try_get("requests")?,
            tokens_in: r.try_get("tokens_in")?,
            tokens_out: r.try_get("tokens_out")?,
            cost: super::db::usd(r, "cost")?,
        });
    }
    let credits: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM credit_entries \
         WHERE org_id = $1 AND at >= $2 AND at < $3",
    )
    .bind(scope.org_id())
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Statement {
        month: month.trim().to_owned(),
        from,
        to,
        total: lines
            .iter()
            .fold(Usd::ZERO, |sum, l| sum.saturating_add(l.cost)),
        lines,
        credits: Usd::from_micros(credits),
    })
}

/// The statement as CSV: one line per project and model, then the total.
pub fn statement_csv(s: &Statement) -> String {
    let field = |v: &str| {
        if v.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    };
    let mut out =
        String::from("month,project_id,project,model,requests,tokens_in,tokens_out,cost_usd\n");
    for l in &s.lines {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            s.month,
            field(&l.project_id),
            field(&l.project_name),
            field(&l.model),
            l.requests,
            l.tokens_in,
            l.tokens_out,
            l.cost.plain()
        ));
    }
    let sums = s.lines.iter().fold([0i64; 3], |mut a, l| {
        a[0] = a[0].saturating_add(l.requests);
        a[1] = a[1].saturating_add(l.tokens_in);
        a[2] = a[2].saturating_add(l.tokens_out);
        a
    });
    out.push_str(&format!(
        "{},,TOTAL,,{},{},{},{}\n",
        s.month,
        sums[0],
        sums[1],
        sums[2],
        s.total.plain()
    ));
    out
}

/// Months that have usage or credits, newest first (for the statement list).
pub async fn months(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<String>, sqlx::Error> {
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(d) FROM (SELECT MIN(day) * 86400000 AS d FROM usage_daily WHERE org_id = $1 \
         UNION ALL SELECT MIN(at) AS d FROM credit_entries WHERE org_id = $1) x",
    )
    .bind(scope.org_id())
    .fetch_one(&mut *conn)
    .await?;
    let now = super::now_ms();
    let mut out = Vec::new();
    let mut at = now;
    let first = first.unwrap_or(now).min(now);
    // Walk back month by month from this one to the first.
    loop {
        let m = crate::format::month_of(at);
        let (start, _) =
            month_bounds("month", &m).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        out.push(m);
        if start <= first || out.len() >= 120 {
            break;
        }
        at = start - 1;
    }
    Ok(out)
}
