//! The audit log page's data: one organization's events, newest first.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

pub const PAGE_SIZE: i64 = 25;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// The cursor for the next (older) page, if there is one.
    pub next_before: Option<i64>,
    pub actors: Vec<String>,
    pub actions: Vec<String>,
}

#[server(prefix = "/api/console", endpoint = "list_audit_events")]
pub async fn list_audit_events(
    org_id: String,
    actor: Option<String>,
    action: Option<String>,
    before: Option<i64>,
) -> Result<AuditPage, AppError> {
    use super::ssr::*;
    use crate::core::audit::{self, Filter};
    use crate::policy::Action;
    in_org(&org_id, Action::ViewAuditLog, |c| async move {
        let nonempty =
            |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let (actor, action) = (nonempty(&actor), nonempty(&action));
        let mut conn = c.state.db.pool.acquire().await?;
        let mut rows = audit::list(
            &mut conn,
            &c.scope,
            &Filter {
                actor: actor.as_deref(),
                action: action.as_deref(),
                before_seq: before,
                limit: PAGE_SIZE + 1,
            },
        )
        .await?;
        let more = rows.len() > usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX));
        let next_before = if more {
            rows.last().map(|r| r.seq)
        } else {
            None
        };
        let (actors, actions) = audit::facets(&mut conn, &c.scope).await?;
        Ok(AuditPage {
            events: rows
                .into_iter()
                .map(|r| AuditEventView {
                    seq: r.seq,
                    at: r.at,
                    actor: r.actor_label,
                    action: r.action,
                    resource: format!("{} {}", r.resource_type, r.resource_id),
                    before: r.before,
                    after: r.after,
                })
                .collect(),
            next_before,
            actors,
            actions,
        })
    })
    .await
}
