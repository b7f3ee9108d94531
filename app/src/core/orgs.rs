//! The `organizations` table.

use sqlx::{AnyConnection, Row};

use super::domain::OrgName;
use crate::policy::{OrgRole, OrgScope};

#[derive(Clone, Debug, PartialEq, Eq)]
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
    Ok(Org {
        id,
        name: name.as_str().to_owned(),
    })
}

pub async fn get(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Option<Org>, sqlx::Error> {
    let row = sqlx::query("SELECT id, name FROM organizations WHERE id = $1")
        .bind(scope.org_id())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| {
        Ok(Org {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
        })
    })
    .transpose()
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
                role: super::members::role_of(&role)?,
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
    pub spend_cap_micros: Option<i64>,
    pub spend_cap_reset: String,
    /// Whether any of its projects may keep request and response bodies.
    pub content_logging: bool,
}

/// An organization as the proxy holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOrg {
    pub id: String,
    pub spending: Spending,
}

fn spending_of(r: &sqlx::any::AnyRow) -> Result<Spending, sqlx::Error> {
    Ok(Spending {
        spend_cap_micros: r.try_get("spend_cap_micros")?,
        spend_cap_reset: r.try_get("spend_cap_reset")?,
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
    .bind(s.spend_cap_micros)
    .bind(&s.spend_cap_reset)
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
        "SELECT id, spend_cap_micros, spend_cap_reset, content_logging FROM organizations \
         WHERE $1 IS NULL OR id = $1",
    )
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ProxyOrg {
                id: r.try_get("id")?,
                spending: spending_of(r)?,
            })
        })
        .collect()
}

/// Organizations whose id is `s`, or else whose name is `s` (the operator
/// CLI names them either way; names need not be unique).
pub async fn find(conn: &mut AnyConnection, s: &str) -> Result<Vec<Org>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name FROM organizations WHERE id = $1 OR (name = $1 AND NOT EXISTS \
         (SELECT 1 FROM organizations WHERE id = $1)) ORDER BY id",
    )
    .bind(s)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Org {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            })
        })
        .collect()
}

/// Where and what the organization is alerted about (budget and spend alerts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alerting {
    pub webhook_url: Option<String>,
    pub alert_types: Vec<String>,
}

pub async fn alerting(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Alerting, sqlx::Error> {
    let r =
        sqlx::query("SELECT alert_webhook_url, alert_types_json FROM organizations WHERE id = $1")
            .bind(scope.org_id())
            .fetch_one(&mut *conn)
            .await?;
    Ok(Alerting {
        webhook_url: r.try_get("alert_webhook_url")?,
        alert_types: super::projects::json_list(&r.try_get::<String, _>("alert_types_json")?)?,
    })
}

pub async fn set_alerting(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    a: &Alerting,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE organizations SET alert_webhook_url = $1, alert_types_json = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(a.webhook_url.as_deref())
    .bind(super::projects::to_json(&a.alert_types))
    .bind(now)
    .bind(scope.org_id())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
