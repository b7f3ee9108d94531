//! The `users` table.

use sqlx::{AnyConnection, Row};

use super::domain::{Email, PersonName};

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_changed_at: i64,
    /// Sessions that began at or before this (ms) are ended (deprovisioning).
    pub signed_out_at: i64,
}

/// A user row with the password hash, for sign-in only. Not `Debug`.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

fn user_of(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_changed_at: row.try_get("password_changed_at")?,
        signed_out_at: row.try_get("signed_out_at")?,
    })
}

pub async fn insert(
    conn: &mut AnyConnection,
    email: &Email,
    name: &PersonName,
    password_hash: &str,
    now: i64,
) -> Result<User, sqlx::Error> {
    let id = super::new_id();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, password_changed_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(email.as_str())
    .bind(name.as_str())
    .bind(password_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(User {
        id,
        email: email.as_str().to_owned(),
        name: name.as_str().to_owned(),
        password_changed_at: now,
        signed_out_at: 0,
    })
}

pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = "SELECT id, email, name, password_changed_at, signed_out_at FROM users WHERE id = $1";
    user_where(conn, sql, id).await
}

pub async fn by_email(
    conn: &mut AnyConnection,
    email: &Email,
) -> Result<Option<User>, sqlx::Error> {
    let sql =
        "SELECT id, email, name, password_changed_at, signed_out_at FROM users WHERE email = $1";
    user_where(conn, sql, email.as_str()).await
}

/// The user that `sql` finds by `$1`, if any.
async fn user_where(
    conn: &mut AnyConnection,
    sql: &'static str,
    key: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query(sql)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(user_of)
        .transpose()
}

pub async fn credentials(
    conn: &mut AnyConnection,
    email: &Email,
) -> Result<Option<Credentials>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, email, name, password_changed_at, signed_out_at, password_hash FROM users WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(Credentials {
            user: user_of(&r)?,
            password_hash: r.try_get("password_hash")?,
        })
    })
    .transpose()
}

pub async fn password_hash(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
}

pub async fn set_password(
    conn: &mut AnyConnection,
    id: &str,
    password_hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn count(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut *conn)
        .await
}
