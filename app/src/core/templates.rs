//! Role templates: a role and the limits the keys of a member who joined
//! with it carry (budget and its reset, RPM, TPM, expiry). A member's own key
//! takes them as ceilings; an invitation, an SSO connection or a SCIM token
//! names the template a new member joins with.

use sqlx::{AnyConnection, Row};

use super::db::text_as;
use super::keys::KeyLimits;
use super::limits::Caps;
use crate::error::AppError;
use crate::format::{ResetInterval, Usd};
use crate::policy::OrgRole;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleTemplate {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: OrgRole,
    pub budget: Option<Usd>,
    pub budget_reset: ResetInterval,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub expires_in_days: Option<i64>,
}

/// The longest a template may give a key to live.
pub const MAX_DAYS: i64 = 3650;

impl RoleTemplate {
    /// Holds a member's new key within the template: each limit the template
    /// sets is the most the key gets (a key without one gets the template's).
    pub fn apply(&self, limits: &mut KeyLimits, now: i64) {
        let lower = |mine: Option<i64>, cap: Option<i64>| match (mine, cap) {
            (Some(m), Some(c)) => Some(m.min(c)),
            (None, c) => c,
            (m, None) => m,
        };
        limits.caps.rpm_limit = lower(limits.caps.rpm_limit, self.rpm_limit);
        limits.caps.tpm_limit = lower(limits.caps.tpm_limit, self.tpm_limit);
        if let Some(cap) = self.budget {
            limits.caps.budget = Some(limits.caps.budget.map_or(cap, |b| b.min(cap)));
            limits.caps.budget_reset = self.budget_reset;
        }
        if let Some(days) = self.expires_in_days {
            let until = now.saturating_add(days.saturating_mul(86_400_000));
            limits.expires_at = Some(limits.expires_at.map_or(until, |e| e.min(until)));
        }
    }
}

fn template_of(r: &sqlx::any::AnyRow) -> Result<RoleTemplate, sqlx::Error> {
    let role: String = r.try_get("role")?;
    let reset: String = r.try_get("budget_reset")?;
    Ok(RoleTemplate {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        role: text_as::<OrgRole>(&role)?,
        budget: r
            .try_get::<Option<i64>, _>("budget_micros")?
            .map(Usd::from_micros),
        budget_reset: text_as::<ResetInterval>(&reset)?,
        rpm_limit: r.try_get("rpm_limit")?,
        tpm_limit: r.try_get("tpm_limit")?,
        expires_in_days: r.try_get("expires_in_days")?,
    })
}

macro_rules! columns {
    () => {
        "id, org_id, name, role, budget_micros, budget_reset, rpm_limit, tpm_limit, expires_in_days"
    };
}

pub async fn list(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<RoleTemplate>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM role_templates WHERE org_id = $1 ORDER BY name_lower"
    ))
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(template_of).collect()
}

pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<RoleTemplate>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM role_templates WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(template_of)
    .transpose()
}

/// The template a member joined with, if any (and if it still exists).
pub async fn of_member(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
) -> Result<Option<RoleTemplate>, sqlx::Error> {
    sqlx::query(
        "SELECT t.id, t.org_id, t.name, t.role, t.budget_micros, t.budget_reset, t.rpm_limit, t.tpm_limit, \
         t.expires_in_days FROM org_members m JOIN role_templates t ON t.id = m.template_id \
         WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(template_of)
    .transpose()
}

/// A template as a form sends it, parsed (fields named as the form names them).
pub fn parse(
    name: &str,
    role: &str,
    max_budget: &str,
    budget_reset: &str,
    rpm: &str,
    tpm: &str,
    expires_in_days: &str,
) -> Result<(String, OrgRole, Caps, Option<i64>), AppError> {
    let name = super::domain::name("name", name, 100)?;
    let role = role
        .parse::<OrgRole>()
        .map_err(|e| AppError::invalid("role", e))?;
    let caps = Caps::parse(Vec::new(), tpm, rpm, max_budget, budget_reset)?;
    let days = match expires_in_days.trim() {
        "" => None,
        d => match d.parse::<i64>() {
            Ok(n) if (1..=MAX_DAYS).contains(&n) => Some(n),
            _ => {
                return Err(AppError::invalid(
                    "expires_in_days",
                    format!("a whole number of days from 1 to {MAX_DAYS}, or empty for keys that do not expire"),
                ))
            }
        },
    };
    Ok((name, role, caps, days))
}

/// Inserts (no `id`) or updates a template; a name used twice is refused.
pub async fn save(
    conn: &mut AnyConnection,
    org_id: &str,
    id: Option<&str>,
    (name, role, caps, days): &(String, OrgRole, Caps, Option<i64>),
    now: i64,
) -> Result<String, AppError> {
    let new_id = super::new_id();
    let id = id.unwrap_or(&new_id);
    let q = if id == new_id {
        "INSERT INTO role_templates (name, name_lower, role, budget_micros, budget_reset, rpm_limit, tpm_limit, \
         expires_in_days, updated_at, id, org_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9)"
    } else {
        "UPDATE role_templates SET name = $1, name_lower = $2, role = $3, budget_micros = $4, budget_reset = $5, \
         rpm_limit = $6, tpm_limit = $7, expires_in_days = $8, updated_at = $9 WHERE id = $10 AND org_id = $11"
    };
    let done = sqlx::query(q)
        .bind(name)
        .bind(name.to_lowercase())
        .bind(role.as_str())
        .bind(caps.budget.map(Usd::micros))
        .bind(caps.budget_reset.as_str())
        .bind(caps.rpm_limit)
        .bind(caps.tpm_limit)
        .bind(*days)
        .bind(now)
        .bind(id)
        .bind(org_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if super::db::is_unique_violation(&e) {
                AppError::invalid("name", "another template has this name")
            } else {
                e.into()
            }
        })?;
    if done.rows_affected() == 0 {
        return Err(AppError::not_found("role template"));
    }
    Ok(id.to_owned())
}

pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM role_templates WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            == 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_caps_a_members_key() {
        let t = RoleTemplate {
            id: "t".into(),
            org_id: "o".into(),
            name: "Intern".into(),
            role: OrgRole::Member,
            budget: Some(Usd::from_micros(5_000_000)),
            budget_reset: ResetInterval::Monthly,
            rpm_limit: Some(60),
            tpm_limit: None,
            expires_in_days: Some(30),
        };
        let mut open = KeyLimits {
            name: "k".into(),
            caps: Caps::open(vec!["m".into()]),
            expires_at: None,
            no_content_logging: false,
            tags: Vec::new(),
            metadata: serde_json::json!({}),
        };
        t.apply(&mut open, 0);
        assert_eq!(open.caps.budget, Some(Usd::from_micros(5_000_000)));
        assert_eq!(open.caps.budget_reset, ResetInterval::Monthly);
        assert_eq!((open.caps.rpm_limit, open.caps.tpm_limit), (Some(60), None));
        assert_eq!(open.expires_at, Some(30 * 86_400_000));
        let mut tight = open.clone();
        tight.caps.rpm_limit = Some(10);
        tight.caps.budget = Some(Usd::from_micros(1));
        tight.expires_at = Some(5);
        t.apply(&mut tight, 0);
        assert_eq!(
            (tight.caps.rpm_limit, tight.caps.budget, tight.expires_at),
            (Some(10), Some(Usd::from_micros(1)), Some(5))
        );
    }
}
