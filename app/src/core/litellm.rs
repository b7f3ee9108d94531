//! What LiteLLM's admin API keeps beside Tollgate's own fields: the ids a
//! caller chose (a team's `team_id`, a user's `user_id`, a model's
//! `model_info.id`), the values LiteLLM reads back exactly as written (a
//! `budget_duration`, a model's `litellm_params.model`, a credential's
//! `credential_info`), and named budgets that teams and keys point at.

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::catalogue::Model;
use super::db::{text_as, usd_opt};
use super::limits::ResetInterval;
use crate::format::Usd;
use crate::policy::{OrgRole, OrgScope};

/// A named budget (`/budget/*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub id: String,
    pub max_budget: Option<Usd>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub reset: ResetInterval,
    /// The duration as written (`30d`), while it names `reset`.
    pub duration: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn budget_of(r: &sqlx::any::AnyRow) -> Result<Budget, sqlx::Error> {
    Ok(Budget {
        id: r.try_get("id")?,
        max_budget: usd_opt(r, "max_budget_micros")?,
        tpm_limit: r.try_get("tpm_limit")?,
        rpm_limit: r.try_get("rpm_limit")?,
        reset: text_as(&r.try_get::<String, _>("budget_reset")?)?,
        duration: r.try_get("budget_duration")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const BUDGET_COLUMNS: &str =
    "id, max_budget_micros, tpm_limit, rpm_limit, budget_reset, budget_duration, created_at, updated_at";

pub async fn budgets(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<Budget>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE org_id = $1 ORDER BY id"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(budget_of)
    .collect()
}

pub async fn budget(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Budget>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(budget_of)
    .transpose()
}

/// Writes a budget (new or changed) and the limits of every team and key
/// that points at it.
pub async fn put_budget(
    conn: &mut AnyConnection,
    org_id: &str,
    b: &Budget,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO budgets (org_id, id, max_budget_micros, tpm_limit, rpm_limit, budget_reset, budget_duration, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (org_id, id) DO UPDATE \
         SET max_budget_micros = $3, tpm_limit = $4, rpm_limit = $5, budget_reset = $6, budget_duration = $7, updated_at = $9",
    )
    .bind(org_id)
    .bind(&b.id)
    .bind(b.max_budget.map(Usd::micros))
    .bind(b.tpm_limit)
    .bind(b.rpm_limit)
    .bind(b.reset.as_str())
    .bind(b.duration.as_deref())
    .bind(b.created_at)
    .bind(b.updated_at)
    .execute(&mut *conn)
    .await?;
    for table in ["projects", "api_keys"] {
        sqlx::query(&format!(
            "UPDATE {table} SET budget_micros = $1, tpm_limit = $2, rpm_limit = $3, budget_reset = $4, \
             budget_duration = $5, updated_at = $6 WHERE org_id = $7 AND budget_id = $8"
        ))
        .bind(b.max_budget.map(Usd::micros))
        .bind(b.tpm_limit)
        .bind(b.rpm_limit)
        .bind(b.reset.as_str())
        .bind(b.duration.as_deref())
        .bind(b.updated_at)
        .bind(org_id)
        .bind(&b.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Deletes a budget; the teams and keys that pointed at it keep its limits.
/// Whether there was one.
pub async fn delete_budget(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    for table in ["projects", "api_keys"] {
        sqlx::query(&format!(
            "UPDATE {table} SET budget_id = NULL WHERE org_id = $1 AND budget_id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    let done = sqlx::query("DELETE FROM budgets WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets what LiteLLM keeps on a project: its caller-chosen id (unchanged
/// where `None`), its duration as written and its named budget.
pub async fn set_project_extras(
    conn: &mut AnyConnection,
    org_id: &str,
    project_id: &str,
    external_id: Option<&str>,
    duration: Option<&str>,
    budget_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projects SET external_id = COALESCE($1, external_id), budget_duration = $2, budget_id = $3 \
         WHERE org_id = $4 AND id = $5",
    )
    .bind(external_id)
    .bind(duration)
    .bind(budget_id)
    .bind(org_id)
    .bind(project_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a key's duration as written, its named budget, and whether its
/// models follow its project's.
pub async fn set_key_extras(
    conn: &mut AnyConnection,
    org_id: &str,
    key_id: &str,
    duration: Option<&str>,
    budget_id: Option<&str>,
    models_follow: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET budget_duration = $1, budget_id = $2, models_follow = $5 WHERE org_id = $3 AND id = $4",
    )
    .bind(duration)
    .bind(budget_id)
    .bind(org_id)
    .bind(key_id)
    .bind(i64::from(models_follow))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An organization member as LiteLLM's `/user/*` shows one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiUser {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: OrgRole,
    /// The id the caller chose, if any (else `user_id` names them).
    pub external_id: Option<String>,
    pub alias: Option<String>,
    /// The LiteLLM role name they were given.
    pub api_role: Option<String>,
    pub created_at: i64,
}

impl ApiUser {
    /// The id LiteLLM's API shows: the caller's, else Tollgate's.
    pub fn shown_id(&self) -> &str {
        self.external_id.as_deref().unwrap_or(&self.user_id)
    }
}

fn api_user_of(r: &sqlx::any::AnyRow) -> Result<ApiUser, sqlx::Error> {
    Ok(ApiUser {
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        role: text_as(&r.try_get::<String, _>("role")?)?,
        external_id: r.try_get("external_id")?,
        alias: r.try_get("alias")?,
        api_role: r.try_get("api_role")?,
        created_at: r.try_get("created_at")?,
    })
}

const USER_SELECT: &str =
    "SELECT om.user_id, u.email, u.name, om.role, om.external_id, om.alias, om.api_role, \
                           om.created_at FROM org_members om JOIN users u ON u.id = om.user_id ";

/// A page of the organization's members (oldest first) and their number.
pub async fn users(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    role: Option<OrgRole>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ApiUser>, i64), sqlx::Error> {
    let role = role.map_or("", OrgRole::as_str);
    let rows = sqlx::query(&format!(
        "{USER_SELECT} WHERE om.org_id = $1 AND ($2 = '' OR om.role = $2) \
         ORDER BY om.created_at, om.user_id LIMIT $3 OFFSET $4"
    ))
    .bind(scope.org_id())
    .bind(role)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM org_members om WHERE om.org_id = $1 AND ($2 = '' OR om.role = $2)",
    )
    .bind(scope.org_id())
    .bind(role)
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        rows.iter().map(api_user_of).collect::<Result<_, _>>()?,
        total,
    ))
}

/// A member named by the id the caller chose, Tollgate's id or their email.
pub async fn user(
    conn: &mut AnyConnection,
    org_id: &str,
    reference: &str,
) -> Result<Option<ApiUser>, sqlx::Error> {
    let reference = reference.trim();
    sqlx::query(&format!(
        "{USER_SELECT} WHERE om.org_id = $1 AND (om.external_id = $2 OR om.user_id = $2 OR u.email = $3) \
         ORDER BY CASE WHEN om.external_id = $2 THEN 0 WHEN om.user_id = $2 THEN 1 ELSE 2 END LIMIT 1"
    ))
    .bind(org_id)
    .bind(reference)
    .bind(reference.to_lowercase())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(api_user_of)
    .transpose()
}

/// Sets what LiteLLM keeps on a member (`None` leaves a field as it is).
pub async fn set_user_extras(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    external_id: Option<&str>,
    alias: Option<&str>,
    api_role: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE org_members SET external_id = COALESCE($1, external_id), alias = COALESCE($2, alias), \
         api_role = COALESCE($3, api_role) WHERE org_id = $4 AND user_id = $5",
    )
    .bind(external_id)
    .bind(alias)
    .bind(api_role)
    .bind(org_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A catalogue model with what LiteLLM keeps on it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiModel {
    pub model: Model,
    /// `model_info.id` as the caller chose it.
    pub external_id: Option<String>,
    /// `{"model", "mode", "base_model", "tier", "custom_llm_provider"}` as written.
    pub litellm: Value,
}

/// The organization's catalogue with LiteLLM's extras.
pub async fn models(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<ApiModel>, sqlx::Error> {
    let catalogue = super::catalogue::list(conn, scope).await?;
    let extras = sqlx::query("SELECT id, external_id, litellm_json FROM models WHERE org_id = $1")
        .bind(scope.org_id())
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(catalogue.len());
    for model in catalogue {
        let row = extras
            .iter()
            .find(|r| r.try_get::<String, _>("id").is_ok_and(|id| id == model.id));
        let (external_id, litellm) = match row {
            Some(r) => (
                r.try_get("external_id")?,
                r.try_get::<Option<String>, _>("litellm_json")?
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null),
            ),
            None => (None, Value::Null),
        };
        out.push(ApiModel {
            model,
            external_id,
            litellm,
        });
    }
    Ok(out)
}

/// Sets a model's `model_info.id` and LiteLLM extras.
pub async fn set_model_extras(
    conn: &mut AnyConnection,
    org_id: &str,
    model_id: &str,
    external_id: Option<&str>,
    litellm: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE models SET external_id = $1, litellm_json = $2 WHERE org_id = $3 AND id = $4",
    )
    .bind(external_id)
    .bind(litellm.to_string())
    .bind(org_id)
    .bind(model_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Each provider's `credential_info` as written, by provider name.
pub async fn credential_infos(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, litellm_json FROM providers WHERE org_id = $1 AND litellm_json IS NOT NULL",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let raw: String = r.try_get("litellm_json")?;
            Ok((
                r.try_get("name")?,
                serde_json::from_str(&raw).unwrap_or(Value::Null),
            ))
        })
        .collect()
}

pub async fn set_credential_info(
    conn: &mut AnyConnection,
    org_id: &str,
    name: &str,
    info: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE providers SET litellm_json = $1 WHERE org_id = $2 AND name = $3")
        .bind(info.to_string())
        .bind(org_id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
