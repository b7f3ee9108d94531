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
