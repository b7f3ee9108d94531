//! API keys: create (token revealed once), list, edit, revoke, rotate, and a
//! builder's own keys across projects.

// Not `expect`: the server macro makes a client stub on the wasm target and a
// handler on the server, and only some of them trip the lint.
#![allow(
    clippy::too_many_arguments,
    reason = "a server function takes one argument per form field"
)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    /// The stable identifier for APIs (`api_key_id_hash`).
    pub id_hash: String,
    pub name: String,
    /// `sk-tg-…a91c`: all that is ever shown again of a token.
    pub hint: String,
    pub project_id: String,
    pub project_name: String,
    /// The owner's email, or `None` for a service key.
    pub owner: Option<String>,
    pub owner_id: Option<String>,
    /// active, expired or revoked.
    pub status: String,
    pub spend_micros: i64,
    pub budget_micros: Option<i64>,
    pub budget_reset: String,
    pub next_reset: Option<i64>,
    pub expires_at: Option<i64>,
    pub models: Vec<String>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub no_content_logging: bool,
    pub tags: Vec<String>,
    pub created_at: i64,
    /// The key's narrowing of its project's MCP servers, as the form writes
    /// it (`None`: the project's; `none`: no server).
    pub mcp: Option<String>,
}

/// The answer to create and rotate: the one response that carries the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyIssued {
    pub key: KeyView,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPage {
    pub keys: Vec<KeyView>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

pub const PAGE_SIZE: i64 = 50;

#[cfg(feature = "ssr")]
pub(crate) fn view_of(k: crate::core::keys::KeyRow, now: i64) -> KeyView {
    let status = k.status(now).as_str();
    let next_reset = k.limits.caps.budget_reset.next_reset(now);
    KeyView {
        id: k.id,
        id_hash: k.id_hash,
        name: k.limits.name,
        hint: k.hint,
        project_id: k.project_id,
        project_name: k.project_name,
        owner: k.owner_email,
        owner_id: k.owner_id,
        status: status.to_owned(),
        spend_micros: k.spend.micros(),
        budget_micros: k.limits.caps.budget.map(crate::format::Usd::micros),
        budget_reset: k.limits.caps.budget_reset.as_str().to_owned(),
        next_reset,
        expires_at: k.limits.expires_at,
        models: k.limits.caps.models,
        tpm_limit: k.limits.caps.tpm_limit,
        rpm_limit: k.limits.caps.rpm_limit,
        no_content_logging: k.limits.no_content_logging,
        tags: k.limits.tags,
        created_at: k.created_at,
        mcp: k.mcp.map(|g| {
            if g.is_empty() {
                "none".to_owned()
            } else {
                crate::core::mcp::grants_text(&g)
            }
        }),
    }
}

/// The form fields of a key (`create_key` and `update_key` take them flat,
/// as the key form sends them), parsed and held within the project's caps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyForm {
    pub name: String,
    pub max_budget: String,
    pub budget_reset: String,
    pub models: Option<Vec<String>>,
    pub tpm: String,
    pub rpm: String,
    pub expires_at: String,
    pub no_content_logging: Option<String>,
    pub tags: String,
}

#[cfg(feature = "ssr")]
impl KeyForm {
    pub(crate) fn parse(
        self,
        project: &crate::core::projects::Project,
        now: i64,
    ) -> Result<crate::core::keys::KeyLimits, AppError> {
        use crate::core::limits::*;
        let mut models = self.models.unwrap_or_default();
        models.retain(|m| !m.trim().is_empty());
        models.dedup();
        if models.is_empty() {
            models = project.caps.models.clone();
        }
        let caps = Caps::parse(
            models,
            &self.tpm,
            &self.rpm,
            &self.max_budget,
            &self.budget_reset,
        )?;
        check_models_within("models", &caps.models, &project.caps.models)?;
        check_rate_within("tpm", caps.tpm_limit, project.caps.tpm_limit)?;
        check_rate_within("rpm", caps.rpm_limit, project.caps.rpm_limit)?;
        Ok(crate::core::keys::KeyLimits {
            name: crate::core::domain::name("name", &self.name, 100)?,
            caps,
            expires_at: parse_expiry("expires_at", &self.expires_at, now)?,
            no_content_logging: super::checkbox(
                "no_content_logging",
                self.no_content_logging.as_deref(),
            )?,
            tags: parse_tags("tags", &self.tags)?,
            metadata: serde_json::json!({}),
        })
    }
}

#[cfg(feature = "ssr")]
impl KeyForm {
    /// The form parsed against the key's project as it stands now.
    async fn limits_in(
        self,
        c: &super::ssr::Ctx<crate::policy::ProjectScope>,
        now: i64,
    ) -> Result<crate::core::keys::KeyLimits, AppError> {
        let mut conn = c.state.db.pool.acquire().await?;
        let project = crate::core::projects::get(&mut conn, &c.scope).await?;
        drop(conn);
        self.parse(&project, now)
    }
}

/// Creates the caller's own key in a project (or, for those who manage all its
/// keys, a service key owned by no one); the answer holds the token once.
#[server(prefix = "/api/console", endpoint = "create_key")]
pub async fn create_key(
    org_id: String,
    project_id: String,
    #[server(flatten)] form: KeyForm,
    service: Option<String>,
) -> Result<KeyIssued, AppError> {
    use super::ssr::*;
    use crate::core::keys::Holder;
    use crate::core::ops;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::ManageOwnKeys,
        |c| async move {
            let now = crate::core::now_ms();
            let limits = form.limits_in(&c, now).await?;
            // A service key belongs to no one: only whoever manages all the
            // project's keys may make one.
            let mut limits = limits;
            let holder = if super::checkbox("service", service.as_deref())? {
                crate::policy::authorize_key(&c.scope, None)?;
                Holder::Service
            } else {
                // A member's own key carries their role template's limits.
                let mut conn = c.state.db.pool.acquire().await?;
                let template =
                    crate::core::templates::of_member(&mut conn, c.scope.org_id(), &c.user.id)
                        .await?;
                if let Some(t) = template {
                    t.apply(&mut limits, now);
                }
                Holder::User(&c.user.id)
            };
            let (row, token) =
                ops::create_key(&c.state, &c.actor, &c.scope, holder, &limits).await?;
            Ok(KeyIssued {
                key: view_of(row, now),
                token: token.expose().to_owned(),
            })
        },
    )
    .await
}

/// One page of a project's keys: everyone's for admins and owners, one's own
/// for members. Sort: newest (default), name, expiry.
#[server(prefix = "/api/console", endpoint = "list_keys")]
pub async fn list_keys(
    org_id: String,
    project_id: String,
    search: Option<String>,
    tag: Option<String>,
    sort: Option<String>,
    page: Option<i64>,
) -> Result<KeyPage, AppError> {
    use super::ssr::*;
    use crate::core::keys::{self, ListQuery, Sort};
    use crate::policy::{allows, Action};
    in_project_of(
        &org_id,
        &project_id,
        Action::ManageOwnKeys,
        |c| async move {
            let sort = match sort.as_deref().unwrap_or("newest") {
                "" | "newest" => Sort::Newest,
                "name" => Sort::Name,
                "expiry" => Sort::Expiry,
                other => {
                    return Err(AppError::invalid(
                        "sort",
                        format!("'{other}' is not one of newest, name, expiry"),
                    ))
                }
            };
            let page = page.unwrap_or(1).max(1);
            let all = allows(Action::ManageProjectKeys, c.scope.seat());
            let tag = tag
                .map(|t| t.trim().to_lowercase())
                .filter(|t| !t.is_empty());
            let mut conn = c.state.db.pool.acquire().await?;
            let (rows, total) = keys::list(
                &mut conn,
                &c.scope,
                &ListQuery {
                    search: search.as_deref(),
                    tag: tag.as_deref(),
                    owner: (!all).then_some(c.user.id.as_str()),
                    sort,
                    offset: (page - 1).saturating_mul(PAGE_SIZE),
                    limit: PAGE_SIZE,
                },
            )
            .await?;
            let now = crate::core::now_ms();
            Ok(KeyPage {
                keys: rows.into_iter().map(|k| view_of(k, now)).collect(),
                total,
                page,
                page_size: PAGE_SIZE,
            })
        },
    )
    .await
}

/// Changes a key's name and limits, with the same rules as creating it.
#[server(prefix = "/api/console", endpoint = "update_key")]
pub async fn update_key(
    org_id: String,
    key_id: String,
    #[server(flatten)] form: KeyForm,
) -> Result<KeyView, AppError> {
    use super::ssr::*;
    use crate::core::ops;
    on_key(&org_id, &key_id, |c, before| async move {
        let now = crate::core::now_ms();
        let mut limits = crate::core::keys::KeyLimits {
            metadata: before.limits.metadata.clone(),
            ..form.limits_in(&c, now).await?
        };
        // A member editing their own key stays within their role template
        // (an admin or owner editing it may go past it).
        if before.owner_id.as_deref() == Some(c.user.id.as_str()) {
            let mut conn = c.state.db.pool.acquire().await?;
            let template =
                crate::core::templates::of_member(&mut conn, c.scope.org_id(), &c.user.id).await?;
            if let Some(t) = template {
                t.apply(&mut limits, now);
            }
        }
        let row = ops::update_key(&c.state, &c.actor, &c.scope, &before, &limits).await?;
        Ok(view_of(row, now))
    })
    .await
}

/// Revokes a key; the next request with it is refused.
#[server(prefix = "/api/console", endpoint = "revoke_key")]
pub async fn revoke_key(org_id: String, key_id: String) -> Result<KeyView, AppError> {
    use super::ssr::*;
    use crate::core::ops;
    on_key(&org_id, &key_id, |c, before| async move {
        let row = ops::revoke_key(&c.state, &c.actor, &c.scope, &before).await?;
        let now = crate::core::now_ms();
        Ok(view_of(row, now))
    })
    .await
}

/// A new token for the key, revealed once; the old one stops working at once,
/// or after `grace_minutes` (at most a week).
#[server(prefix = "/api/console", endpoint = "rotate_key")]
pub async fn rotate_key(
    org_id: String,
    key_id: String,
    grace_minutes: Option<String>,
) -> Result<KeyIssued, AppError> {
    use super::ssr::*;
    use crate::core::ops;
    on_key(&org_id, &key_id, |c, before| async move {
        let grace = match grace_minutes
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => 0,
            Some(s) => match s.parse::<i64>() {
                Ok(m) if (0..=10_080).contains(&m) => m,
                _ => {
                    return Err(AppError::invalid(
                        "grace_minutes",
                        "must be a whole number of minutes from 0 to 10080",
                    ))
                }
            },
        };
        let (row, token) =
            ops::rotate_key(&c.state, &c.actor, &c.scope, &before, grace * 60_000).await?;
        let now = crate::core::now_ms();
        Ok(KeyIssued {
            key: view_of(row, now),
            token: token.expose().to_owned(),
        })
    })
    .await
}

/// The caller's own keys across every project of the organization.
#[server(prefix = "/api/console", endpoint = "my_keys")]
pub async fn my_keys(org_id: String) -> Result<Vec<KeyView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let rows = crate::core::keys::of_owner(&mut conn, &c.scope).await?;
        let now = crate::core::now_ms();
        Ok(rows.into_iter().map(|k| view_of(k, now)).collect())
    })
    .await
}
