//! The `provisioning_keys` table: an organization's keys for the machine
//! APIs (managing service keys). They never call models.

use sqlx::{AnyConnection, Row};

use super::keys::token::{self, Token};
use crate::error::AppError;
use crate::policy::OrgScope;

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProvisioningKey {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// `sk-tgp-…abcd`: all that is shown again of a token.
    pub hint: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who is calling a machine API: the organization is the key's, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub org_id: String,
    pub name: String,
}

macro_rules! columns {
    () => {
        "id, org_id, name, hint, created_by, created_at, last_used_at, revoked_at"
    };
}

/// Stores a new key of `org_id`; the token is the only copy of its secret.
/// `created_by` is `None` when the operator CLI made it.
pub async fn create(
    conn: &mut AnyConnection,
    org_id: &str,
    name: &str,
    created_by: Option<&str>,
    now: i64,
) -> Result<(ProvisioningKey, Token), sqlx::Error> {
    let token = Token::mint_provisioning();
    let id = super::new_id();
    sqlx::query(
        "INSERT INTO provisioning_keys (id, org_id, public_id, secret_hash, hint, name, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(token.public_id())
    .bind(token.secret_hash())
    .bind(token.hint())
    .bind(name)
    .bind(created_by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let key = ProvisioningKey {
        id,
        org_id: org_id.to_owned(),
        name: name.to_owned(),
        hint: token.hint().to_owned(),
        created_by: created_by.map(str::to_owned),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    Ok((key, token))
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<ProvisioningKey>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM provisioning_keys WHERE org_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await
}

/// Revokes a key of the scoped organization at once; returns it as it was.
pub async fn revoke(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    id: &str,
    now: i64,
) -> Result<ProvisioningKey, AppError> {
    let before: ProvisioningKey = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM provisioning_keys WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(scope.org_id())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| AppError::not_found("provisioning key"))?;
    if before.revoked_at.is_some() {
        return Err(AppError::conflict(
            "the provisioning key is already revoked",
        ));
    }
    sqlx::query("UPDATE provisioning_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3")
        .bind(now)
        .bind(id)
        .bind(scope.org_id())
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// The live provisioning key behind a presented token, if any; notes its use.
pub async fn authenticate(
    conn: &mut AnyConnection,
    presented: &str,
    now: i64,
) -> Result<Option<Principal>, sqlx::Error> {
    let Some(parsed) = token::parse_provisioning(presented) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, org_id, name, secret_hash, revoked_at FROM provisioning_keys WHERE public_id = $1",
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
    let key_id: String = r.try_get("id")?;
    sqlx::query("UPDATE provisioning_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&key_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(Principal {
        key_id,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
    }))
}
