//! The SCIM tables: an organization's SCIM tokens, its SCIM users (each an
//! organization's view of one account), groups, group members and the log
//! of recent SCIM requests.

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::db::text_as;
use super::keys::token::{self, Token};
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope, ScimClient};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ScimToken {
    pub id: String,
    pub org_id: String,
    pub connection_id: Option<String>,
    pub name: String,
    /// `sk-tgs-…abcd`: all that is shown again of a token.
    pub hint: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An authenticated SCIM token: its organization and connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub client: ScimClient,
    pub name: String,
    pub connection_id: Option<String>,
}

macro_rules! token_columns {
    () => {
        "id, org_id, connection_id, name, hint, created_by, created_at, last_used_at, revoked_at"
    };
}

pub async fn create_token(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    connection_id: Option<&str>,
    name: &str,
    now: i64,
) -> Result<(ScimToken, Token), sqlx::Error> {
    let token = Token::mint_scim();
    let id = super::new_id();
    sqlx::query(
        "INSERT INTO scim_tokens (id, org_id, connection_id, public_id, secret_hash, hint, name, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(scope.org_id())
    .bind(connection_id)
    .bind(token.public_id())
    .bind(token.secret_hash())
    .bind(token.hint())
    .bind(name)
    .bind(scope.user_id())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((
        ScimToken {
            id,
            org_id: scope.org_id().to_owned(),
            connection_id: connection_id.map(str::to_owned),
            name: name.to_owned(),
            hint: token.hint().to_owned(),
            created_by: scope.user_id().map(str::to_owned),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        },
        token,
    ))
}

pub async fn list_tokens(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<ScimToken>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM scim_tokens WHERE org_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await
}

/// Revokes a token of the scoped organization; returns it as it was.
pub async fn revoke_token(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    id: &str,
    now: i64,
) -> Result<ScimToken, AppError> {
    let before: ScimToken = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM scim_tokens WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(scope.org_id())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| AppError::not_found("SCIM token"))?;
    if before.revoked_at.is_some() {
        return Err(AppError::conflict("the SCIM token is already revoked"));
    }
    sqlx::query("UPDATE scim_tokens SET revoked_at = $1 WHERE id = $2 AND org_id = $3")
        .bind(now)
        .bind(id)
        .bind(scope.org_id())
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// The live token behind a presented bearer, if any; notes its use.
pub async fn authenticate(
    conn: &mut AnyConnection,
    presented: &str,
    now: i64,
) -> Result<Option<Authenticated>, sqlx::Error> {
    let Some(parsed) = token::parse_scim(presented) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, org_id, connection_id, name, secret_hash, revoked_at FROM scim_tokens WHERE public_id = $1",
    )
    .bind(parsed.public_id.as_ref())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let stored: String = r.try_get("secret_hash")?;
    if stored != token::hash_secret(parsed.secret)
        || r.try_get::<Option<i64>, _>("revoked_at")?.is_some()
    {
        return Ok(None);
    }
    let id: String = r.try_get("id")?;
    sqlx::query("UPDATE scim_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(Authenticated {
        client: ScimClient {
            token_id: id,
            org_id: r.try_get("org_id")?,
        },
        name: r.try_get("name")?,
        connection_id: r.try_get("connection_id")?,
    }))
}

/// A SCIM user: the organization's record of one account.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimUser {
    pub id: String,
    pub org_id: String,
    pub user_id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    /// The role given back on reactivation (the member's role while active).
    pub role: OrgRole,
    /// The stored attributes (name, emails, …), as the schema keeps them.
    pub attributes: Value,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn json_col(r: &sqlx::any::AnyRow, col: &str) -> Result<Value, sqlx::Error> {
    let raw: String = r.try_get(col)?;
    serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: Box::new(e),
    })
}

fn user_of(r: &sqlx::any::AnyRow) -> Result<ScimUser, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(ScimUser {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        user_id: r.try_get("user_id")?,
        user_name: r.try_get("user_name")?,
        external_id: r.try_get("external_id")?,
        active: r.try_get::<i64, _>("active")? != 0,
        role: text_as::<OrgRole>(&role)?,
        attributes: json_col(r, "attributes_json")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

macro_rules! user_columns {
    () => {
        "id, org_id, user_id, user_name, external_id, active, role, attributes_json, version, created_at, updated_at"
    };
}

pub async fn users(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<ScimUser>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM scim_users WHERE org_id = $1 ORDER BY created_at, id"
    ))
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(user_of).collect()
}

pub async fn user(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<ScimUser>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM scim_users WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(user_of)
    .transpose()
}

/// The SCIM user of an account in an organization, if SCIM manages it.
pub async fn user_for_account(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
) -> Result<Option<ScimUser>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM scim_users WHERE org_id = $1 AND user_id = $2"
    ))
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(user_of)
    .transpose()
}

fn unique_user(e: sqlx::Error) -> AppError {
    if super::db::is_unique_violation(&e) {
        AppError::conflict("a user with this userName already exists in this organization")
    } else {
        e.into()
    }
}

pub async fn insert_user(conn: &mut AnyConnection, u: &ScimUser) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO scim_users (id, org_id, user_id, user_name, user_name_lower, external_id, active, role, \
         attributes_json, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&u.id)
    .bind(&u.org_id)
    .bind(&u.user_id)
    .bind(&u.user_name)
    .bind(u.user_name.to_lowercase())
    .bind(u.external_id.as_deref())
    .bind(i64::from(u.active))
    .bind(u.role.as_str())
    .bind(u.attributes.to_string())
    .bind(u.version)
    .bind(u.created_at)
    .bind(u.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unique_user)?;
    Ok(())
}

pub async fn update_user(conn: &mut AnyConnection, u: &ScimUser) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE scim_users SET user_name = $1, user_name_lower = $2, external_id = $3, active = $4, role = $5, \
         attributes_json = $6, version = $7, updated_at = $8 WHERE id = $9 AND org_id = $10",
    )
    .bind(&u.user_name)
    .bind(u.user_name.to_lowercase())
    .bind(u.external_id.as_deref())
    .bind(i64::from(u.active))
    .bind(u.role.as_str())
    .bind(u.attributes.to_string())
    .bind(u.version)
    .bind(u.updated_at)
    .bind(&u.id)
    .bind(&u.org_id)
    .execute(&mut *conn)
    .await
    .map_err(unique_user)?;
    Ok(())
}

pub async fn delete_user(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scim_group_members WHERE scim_user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM scim_users WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A SCIM group with its members' SCIM user ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimGroup {
    pub id: String,
    pub org_id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn group_of(r: &sqlx::any::AnyRow) -> Result<ScimGroup, sqlx::Error> {
    Ok(ScimGroup {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        display_name: r.try_get("display_name")?,
        external_id: r.try_get("external_id")?,
        members: Vec::new(),
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Every group of the organization with its members.
pub async fn groups(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<ScimGroup>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, org_id, display_name, external_id, version, created_at, updated_at \
         FROM scim_groups WHERE org_id = $1 ORDER BY created_at, id",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut groups: Vec<ScimGroup> = rows.iter().map(group_of).collect::<Result<_, _>>()?;
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "SELECT gm.group_id, gm.scim_user_id FROM scim_group_members gm \
         JOIN scim_groups g ON g.id = gm.group_id WHERE g.org_id = $1 ORDER BY gm.scim_user_id",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for (g, u) in pairs {
        if let Some(group) = groups.iter_mut().find(|x| x.id == g) {
            group.members.push(u);
        }
    }
    Ok(groups)
}

pub async fn group(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<ScimGroup>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, org_id, display_name, external_id, version, created_at, updated_at \
         FROM scim_groups WHERE org_id = $1 AND id = $2",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let mut g = group_of(&r)?;
    g.members = sqlx::query_scalar(
        "SELECT scim_user_id FROM scim_group_members WHERE group_id = $1 ORDER BY scim_user_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(g))
}

/// The display names of the groups a SCIM user is in.
pub async fn groups_of_user(
    conn: &mut AnyConnection,
    scim_user_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.id, g.display_name FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id \
         WHERE gm.scim_user_id = $1 ORDER BY g.display_name",
    )
    .bind(scim_user_id)
    .fetch_all(&mut *conn)
    .await
}

fn unique_group(e: sqlx::Error) -> AppError {
    if super::db::is_unique_violation(&e) {
        AppError::conflict("a group with this displayName already exists in this organization")
    } else {
        e.into()
    }
}

/// Inserts or updates a group row (not its members).
pub async fn save_group(
    conn: &mut AnyConnection,
    g: &ScimGroup,
    new: bool,
) -> Result<(), AppError> {
    let q = if new {
        "INSERT INTO scim_groups (display_name, display_lower, external_id, version, updated_at, id, org_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    } else {
        "UPDATE scim_groups SET display_name = $1, display_lower = $2, external_id = $3, version = $4, \
         updated_at = $5 WHERE id = $6 AND org_id = $7 AND created_at = $8"
    };
    sqlx::query(q)
        .bind(&g.display_name)
        .bind(g.display_name.to_lowercase())
        .bind(g.external_id.as_deref())
        .bind(g.version)
        .bind(g.updated_at)
        .bind(&g.id)
        .bind(&g.org_id)
        .bind(g.created_at)
        .execute(&mut *conn)
        .await
        .map_err(unique_group)?;
    Ok(())
}

/// Sets a group's members to exactly `members` (SCIM user ids of the same
/// organization; the caller checked them).
pub async fn set_members(
    conn: &mut AnyConnection,
    group_id: &str,
    members: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1")
        .bind(group_id)
        .execute(&mut *conn)
        .await?;
    for m in members {
        sqlx::query("INSERT INTO scim_group_members (group_id, scim_user_id) VALUES ($1, $2)")
            .bind(group_id)
            .bind(m)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub async fn delete_group(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM scim_groups WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One SCIM request as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ScimEvent {
    pub at: i64,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub summary: String,
}

/// How many SCIM requests an organization keeps in its log.
const EVENTS_KEPT: i64 = 200;

pub async fn record_event(
    conn: &mut AnyConnection,
    org_id: &str,
    token_id: &str,
    e: &ScimEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scim_events (id, org_id, token_id, at, method, path, status, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(super::new_id())
    .bind(org_id)
    .bind(token_id)
    .bind(e.at)
    .bind(&e.method)
    .bind(&e.path)
    .bind(e.status)
    .bind(&e.summary)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM scim_events WHERE org_id = $1 AND id NOT IN \
         (SELECT id FROM scim_events WHERE org_id = $1 ORDER BY at DESC, id DESC LIMIT $2)",
    )
    .bind(org_id)
    .bind(EVENTS_KEPT)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn recent_events(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    limit: i64,
) -> Result<Vec<ScimEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, method, path, status, summary FROM scim_events WHERE org_id = $1 \
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(scope.org_id())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}
