//! The `org_members` table and the rules on it: at most 5 owners, at most 3
//! billing managers, never zero owners.

use sqlx::{AnyConnection, Row};

use crate::error::AppError;
use crate::policy::{OrgMember, OrgRole, OrgScope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: OrgRole,
    pub joined_at: i64,
    /// password, invitation, oidc, saml or scim.
    pub joined_via: String,
    /// Whether the organization's SCIM client manages this member.
    pub scim_managed: bool,
    /// The role template their keys follow.
    pub template: Option<String>,
}

/// The membership that the policy decides on; `None` when the user is not a
/// member (the caller answers 404, so other tenants learn nothing).
pub async fn membership(
    conn: &mut AnyConnection,
    user_id: &str,
    org_id: &str,
) -> Result<Option<OrgMember>, sqlx::Error> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    role.map(|r| {
        Ok(OrgMember {
            user_id: user_id.to_owned(),
            org_id: org_id.to_owned(),
            role: super::db::text_as::<OrgRole>(&r)?,
        })
    })
    .transpose()
}

/// A member with how they joined, whether SCIM manages them, their template.
macro_rules! member_select {
    () => {
        "SELECT u.id, u.email, u.name, m.role, m.created_at, m.joined_via, s.id AS scim_id, \
         t.name AS template_name FROM org_members m JOIN users u ON u.id = m.user_id \
         LEFT JOIN scim_users s ON s.org_id = m.org_id AND s.user_id = m.user_id \
         LEFT JOIN role_templates t ON t.id = m.template_id"
    };
}

fn member_of_row(r: &sqlx::any::AnyRow) -> Result<MemberRow, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(MemberRow {
        user_id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        role: super::db::text_as::<OrgRole>(&role)?,
        joined_at: r.try_get("created_at")?,
        joined_via: r.try_get("joined_via")?,
        scim_managed: r.try_get::<Option<String>, _>("scim_id")?.is_some(),
        template: r.try_get("template_name")?,
    })
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        member_select!(),
        " WHERE m.org_id = $1 ORDER BY u.email"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(member_of_row).collect()
}

pub async fn get(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    user_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    let row = sqlx::query(concat!(
        member_select!(),
        " WHERE m.org_id = $1 AND m.user_id = $2"
    ))
    .bind(scope.org_id())
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(member_of_row).transpose()
}

async fn count_role(
    conn: &mut AnyConnection,
    org_id: &str,
    role: OrgRole,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = $2")
        .bind(org_id)
        .bind(role.as_str())
        .fetch_one(&mut *conn)
        .await
}

/// Fails when one more holder of `role` would break its per-organization cap.
/// Call inside a transaction that holds `orgs::lock`.
pub async fn check_room_for(
    conn: &mut AnyConnection,
    org_id: &str,
    role: OrgRole,
) -> Result<(), AppError> {
    if let Some(max) = role.max_per_org() {
        let n = count_role(conn, org_id, role).await?;
        if usize::try_from(n).unwrap_or(usize::MAX) >= max {
            return Err(AppError::conflict(format!(
                "an organization has at most {max} {}s; this one has {n}",
                role.as_str()
            )));
        }
    }
    Ok(())
}

/// Fails when taking the owner role away from `current` would leave none.
async fn check_not_last_owner(
    conn: &mut AnyConnection,
    org_id: &str,
    current: OrgRole,
) -> Result<(), AppError> {
    if current == OrgRole::Owner && count_role(conn, org_id, OrgRole::Owner).await? <= 1 {
        return Err(AppError::conflict(
            "an organization always keeps at least one owner; make someone else owner first",
        ));
    }
    Ok(())
}

/// Adds a member (organization locked by the caller).
pub async fn insert(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    role: OrgRole,
    now: i64,
) -> Result<(), AppError> {
    check_room_for(conn, org_id, role).await?;
    let res = sqlx::query(
        "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if super::db::is_unique_violation(&e) => Err(AppError::conflict(
            "that user is already a member of this organization",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Changes a member's role, keeping the caps and the last owner. Returns the
/// row before the change. The caller takes a role that may hold no keys out of
/// the projects (`projects::forget_member`).
pub async fn set_role(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    user_id: &str,
    role: OrgRole,
) -> Result<MemberRow, AppError> {
    super::orgs::lock(conn, scope.org_id()).await?;
    let before = get(conn, scope, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("member"))?;
    if before.role == role {
        return Ok(before);
    }
    check_not_last_owner(conn, scope.org_id(), before.role).await?;
    check_room_for(conn, scope.org_id(), role).await?;
    sqlx::query("UPDATE org_members SET role = $1 WHERE org_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(scope.org_id())
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// Removes a member, keeping the last owner. Returns the removed row. The
/// caller takes them out of the projects (`projects::forget_member`).
pub async fn remove(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    user_id: &str,
) -> Result<MemberRow, AppError> {
    super::orgs::lock(conn, scope.org_id()).await?;
    let before = get(conn, scope, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("member"))?;
    check_not_last_owner(conn, scope.org_id(), before.role).await?;
    sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
        .bind(scope.org_id())
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(before)
}
