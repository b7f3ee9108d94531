//! The `invitations` table. The token is shown once, in the link; only its
//! SHA-256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use super::domain::Email;
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope, ProjectRole};

pub const VALID_FOR_MS: i64 = 7 * 24 * 60 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: OrgRole,
    pub created_at: i64,
    pub expires_at: i64,
    /// A project the invitee joins on acceptance, with their role there.
    pub project: Option<(String, ProjectRole)>,
    /// The role template whose limits the member's keys carry.
    pub template_id: Option<String>,
}

/// The secret half of an invitation, to be put in a link and forgotten.
pub struct InvitationToken(String);

impl InvitationToken {
    fn generate() -> InvitationToken {
        let mut bytes = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        InvitationToken(hex::encode(bytes))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn invitation_of(r: &sqlx::any::AnyRow) -> Result<Invitation, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(Invitation {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        email: r.try_get("email")?,
        role: super::db::text_as::<OrgRole>(&role)?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        project: match (
            r.try_get::<Option<String>, _>("project_id")?,
            r.try_get::<Option<String>, _>("project_role")?,
        ) {
            (Some(p), Some(role)) => Some((p, super::db::text_as::<ProjectRole>(&role)?)),
            _ => None,
        },
        template_id: r.try_get("template_id")?,
    })
}

pub async fn create(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    email: &Email,
    role: OrgRole,
    project: Option<(&str, ProjectRole)>,
    template_id: Option<&str>,
    now: i64,
) -> Result<(Invitation, InvitationToken), AppError> {
    let token = InvitationToken::generate();
    let inv = Invitation {
        id: super::new_id(),
        org_id: scope.org_id().to_owned(),
        email: email.as_str().to_owned(),
        role,
        created_at: now,
        expires_at: now + VALID_FOR_MS,
        project: project.map(|(p, r)| (p.to_owned(), r)),
        template_id: template_id.map(str::to_owned),
    };
    sqlx::query(
        "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at, \
         project_id, project_role, template_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&inv.id)
    .bind(&inv.org_id)
    .bind(&inv.email)
    .bind(role.as_str())
    .bind(hash_token(token.expose()))
    .bind(scope.user_id())
    .bind(inv.created_at)
    .bind(inv.expires_at)
    .bind(project.map(|p| p.0))
    .bind(project.map(|p| p.1.as_str()))
    .bind(template_id)
    .execute(&mut *conn)
    .await?;
    Ok((inv, token))
}

/// Invitations not yet accepted, revoked or expired.
pub async fn pending(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    now: i64,
) -> Result<Vec<Invitation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, org_id, email, role, created_at, expires_at, project_id, project_role, template_id FROM invitations \
         WHERE org_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC",
    )
    .bind(scope.org_id())
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(invitation_of).collect()
}

/// Revokes a pending invitation of the scoped organization.
pub async fn revoke(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    id: &str,
    now: i64,
) -> Result<Invitation, AppError> {
    let row = sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND org_id = $3 \
         AND accepted_at IS NULL AND revoked_at IS NULL \
         RETURNING id, org_id, email, role, created_at, expires_at, project_id, project_role, template_id",
    )
    .bind(now)
    .bind(id)
    .bind(scope.org_id())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(invitation_of(&r)?),
        None => Err(AppError::not_found("pending invitation")),
    }
}

/// The invitation a token opens, if it is still pending and unexpired.
pub async fn by_token(
    conn: &mut AnyConnection,
    token: &str,
    now: i64,
) -> Result<Option<Invitation>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, org_id, email, role, created_at, expires_at, project_id, project_role, template_id FROM invitations \
         WHERE token_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(hash_token(token))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(invitation_of).transpose()
}

/// Marks an invitation used; fails if it was used or revoked meanwhile.
pub async fn mark_accepted(
    conn: &mut AnyConnection,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<(), AppError> {
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
         WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(AppError::not_found("invitation"))
    }
}
