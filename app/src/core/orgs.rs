//! The `organizations` table.

use sqlx::{AnyConnection, Row};

use super::domain::OrgName;
use super::limits::ResetInterval;
use crate::format::Usd;
use crate::policy::{OrgRole, OrgScope};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Org {
    pub id: String,
    pub name: String,
}

/// An organization together with the caller's role in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyOrg {
    pub id: String,
    pub name: String,
    pub role: OrgRole,
}

pub async fn insert(
    conn: &mut AnyConnection,
    name: &OrgName,
    now: i64,
) -> Result<Org, sqlx::Error> {
    let id = super::new_id();
    sqlx::query(
        "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(&id)
    .bind(name.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    super::catalogue::seed(conn, &id, now).await?;
    super::providers::seed(conn, &id, now).await?;
    super::virtual_models::seed(conn, &id, now).await?;
    Ok(Org {
        id,
        name: name.as_str().to_owned(),
    })
}

pub async fn get(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Option<Org>, sqlx::Error> {
    sqlx::query_as("SELECT id, name FROM organizations WHERE id = $1")
        .bind(scope.org_id())
        .fetch_optional(&mut *conn)
        .await
}

pub async fn rename(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    name: &OrgName,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE organizations SET name = $1, updated_at = $2 WHERE id = $3")
        .bind(name.as_str())
        .bind(now)
        .bind(scope.org_id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Takes the organization's write lock for the rest of the transaction, so
/// that checks on its membership (owner and billing limits) cannot race.
/// An UPDATE locks the row on PostgreSQL and takes the write lock on SQLite.
pub async fn lock(conn: &mut AnyConnection, org_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE organizations SET updated_at = updated_at WHERE id = $1")
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The organizations a user belongs to, by name.
pub async fn of_user(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<MyOrg>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.name, m.role FROM organizations o \
         JOIN org_members m ON m.org_id = o.id WHERE m.user_id = $1 ORDER BY o.name, o.id",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(MyOrg {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: super::db::text_as::<OrgRole>(&role)?,
            })
        })
        .collect()
}

/// The name of the organization an invitation is for, shown to the invitee
/// (who is not a member yet, so there is no scope to ask with).
pub async fn name_for_invitation(
    conn: &mut AnyConnection,
    inv: &super::invitations::Invitation,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(&inv.org_id)
        .fetch_one(&mut *conn)
        .await
}

/// What limits and logs an organization's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spending {
    /// The most the organization may spend per period; `None`: no cap.
    pub spend_cap: Option<Usd>,
    pub spend_cap_reset: ResetInterval,
    /// Whether any of its projects may keep request and response bodies.
    pub content_logging: bool,
}

/// An organization as the proxy holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOrg {
    pub id: String,
    pub spending: Spending,
    /// Whether the prepaid credit balance is enforced, and the credits entered.
    pub prepaid: bool,
    pub credits_micros: i64,
}

fn spending_of(r: &sqlx::any::AnyRow) -> Result<Spending, sqlx::Error> {
    Ok(Spending {
        spend_cap: super::db::usd_opt(r, "spend_cap_micros")?,
        spend_cap_reset: super::db::text_as(&r.try_get::<String, _>("spend_cap_reset")?)?,
        content_logging: r.try_get::<i64, _>("content_logging")? != 0,
    })
}

pub async fn spending(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Spending, sqlx::Error> {
    let r = sqlx::query(
        "SELECT spend_cap_micros, spend_cap_reset, content_logging FROM organizations WHERE id = $1",
    )
    .bind(scope.org_id())
    .fetch_one(&mut *conn)
    .await?;
    spending_of(&r)
}

pub async fn set_spending(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    s: &Spending,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE organizations SET spend_cap_micros = $1, spend_cap_reset = $2, content_logging = $3, \
         updated_at = $4 WHERE id = $5",
    )
    .bind(s.spend_cap.map(Usd::micros))
    .bind(s.spend_cap_reset.as_str())
    .bind(i64::from(s.content_logging))
    .bind(now)
    .bind(scope.org_id())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every organization, or one, for the proxy's memory.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    only: Option<&str>,
) -> Result<Vec<ProxyOrg>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.spend_cap_micros, o.spend_cap_reset, o.content_logging, o.prepaid, \
         (SELECT CAST(COALESCE(SUM(c.amount_micros), 0) AS BIGINT) FROM credit_entries c \
         WHERE c.org_id = o.id) AS credits FROM organizations o WHERE $1 IS NULL OR o.id = $1",
    )
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ProxyOrg {
                id: r.try_get("id")?,
                spending: spending_of(r)?,
                prepaid: r.try_get::<i64, _>("prepaid")? != 0,
                credits_micros: r.try_get("credits")?,
            })
        })
        .collect()
}

/// Organizations whose id is `s`, or else whose name is `s` (the operator
/// CLI names them either way; names need not be unique).
pub async fn find(conn: &mut AnyConnection, s: &str) -> Result<Vec<Org>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name FROM organizations WHERE id = $1 OR (name = $1 AND NOT EXISTS \
         (SELECT 1 FROM organizations WHERE id = $1)) ORDER BY id",
    )
    .bind(s)
    .fetch_all(&mut *conn)
    .await
}

/// Where and what the organization is alerted about: a generic JSON
/// webhook and a Slack-compatible one (`{"text": …}`), the alert types a
/// LiteLLM-style client set (empty: all), and the budget thresholds in percent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alerting {
    pub webhook_url: Option<String>,
    pub slack_url: Option<String>,
    pub alert_types: Vec<String>,
    pub thresholds: Vec<i64>,
}

/// The thresholds when none are set: half, most, all of a budget.
pub const DEFAULT_THRESHOLDS: [i64; 3] = [50, 80, 100];

fn thresholds_of(json: &str) -> Vec<i64> {
    serde_json::from_str(json).unwrap_or_else(|_| DEFAULT_THRESHOLDS.to_vec())
}

pub async fn alerting(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Alerting, sqlx::Error> {
    let r = sqlx::query(
        "SELECT alert_webhook_url, alert_slack_url, alert_types_json, alert_thresholds_json \
         FROM organizations WHERE id = $1",
    )
    .bind(scope.org_id())
    .fetch_one(&mut *conn)
    .await?;
    alerting_of(&r)
}

fn alerting_of(r: &sqlx::any::AnyRow) -> Result<Alerting, sqlx::Error> {
    Ok(Alerting {
        webhook_url: r.try_get("alert_webhook_url")?,
        slack_url: r.try_get("alert_slack_url")?,
        alert_types: super::db::json_list(&r.try_get::<String, _>("alert_types_json")?)?,
        thresholds: thresholds_of(&r.try_get::<String, _>("alert_thresholds_json")?),
    })
}

pub async fn set_alerting(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    a: &Alerting,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE organizations SET alert_webhook_url = $1, alert_slack_url = $2, alert_types_json = $3, \
         alert_thresholds_json = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(a.webhook_url.as_deref())
    .bind(a.slack_url.as_deref())
    .bind(super::db::to_json(&a.alert_types))
    .bind(serde_json::to_string(&a.thresholds).unwrap_or_else(|_| "[]".into()))
    .bind(now)
    .bind(scope.org_id())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where a webhook goes, without what makes it a secret (Slack's and most
/// webhooks carry their token in the path): `https://hooks.slack.com/…`.
pub fn url_hint(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Every organization with somewhere to send alerts.
pub async fn alerting_all(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, Alerting, Spending)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, alert_webhook_url, alert_slack_url, alert_types_json, alert_thresholds_json, \
         spend_cap_micros, spend_cap_reset, content_logging FROM organizations \
         WHERE alert_webhook_url IS NOT NULL OR alert_slack_url IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, alerting_of(r)?, spending_of(r)?)))
        .collect()
}
