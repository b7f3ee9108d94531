//! Usage analytics and the request log. Reports are built from the daily
//! rollup; what a caller sees of it is the policy's `UsageScope` (the whole
//! organization, or the projects they administer and their own keys).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

pub use crate::usage_report::*;

#[server(prefix = "/api/console", endpoint = "get_usage")]
pub async fn get_usage(
    org_id: String,
    days: Option<i64>,
    project_id: Option<String>,
    key_id: Option<String>,
) -> Result<UsageReport, AppError> {
    use super::ssr::*;
    use crate::core::{now_ms, projects, usage};
    use crate::policy::{self, Action};
    answer(
        async {
            let (state, _, member) = member_of(&org_id).await?;
            let org = policy::authorize_org(&member, Action::ViewOrganization)?;
            let mut conn = state.db.pool.acquire().await?;
            let standings: Vec<(String, policy::ProjectRole)> = projects::visible(&mut conn, &org)
                .await?
                .into_iter()
                .filter_map(|(p, r)| r.map(|r| (p.id, r)))
                .collect();
            let scope = policy::authorize_usage(&member, &standings)?;
            let days = days.unwrap_or(30);
            if !PERIODS.contains(&days) {
                return Err(AppError::invalid(
                    "days",
                    format!("{days} is not one of 7, 30, 90 or 365"),
                ));
            }
            let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
            let filter = usage::ReportFilter {
                days,
                project_id: nonempty(project_id),
                key_id: nonempty(key_id),
            };
            Ok(usage::report(&mut conn, &scope, &standings, &filter, now_ms()).await?)
        }
        .await,
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPage {
    pub project_name: String,
    pub requests: Vec<crate::usage_report::LoggedRequest>,
    /// The cursor of the next (older) page: `at:request_id`.
    pub next: Option<String>,
}

pub const REQUEST_PAGE: i64 = 50;

#[server(prefix = "/api/console", endpoint = "list_requests")]
pub async fn list_requests(
    org_id: String,
    project_id: String,
    before: Option<String>,
) -> Result<RequestPage, AppError> {
    use super::ssr::*;
    use crate::core::{projects, usage};
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::ViewRequestLog,
        |c| async move {
            let cursor = match before.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(c) => {
                    let bad = || AppError::invalid("before", "not a cursor from this page");
                    let (at, id) = c.split_once(':').ok_or_else(bad)?;
                    Some((at.parse::<i64>().map_err(|_| bad())?, id.to_owned()))
                }
            };
            let mut conn = c.state.db.pool.acquire().await?;
            let project = projects::get(&mut conn, &c.scope).await?;
            let mut rows = usage::requests(
                &mut conn,
                &c.scope,
                cursor.as_ref().map(|(a, i)| (*a, i.as_str())),
                REQUEST_PAGE + 1,
            )
            .await?;
            let page = usize::try_from(REQUEST_PAGE).unwrap_or(50);
            let more = rows.len() > page;
            rows.truncate(page);
            Ok(RequestPage {
                project_name: project.name,
                next: more
                    .then(|| rows.last().map(|r| format!("{}:{}", r.at, r.request_id)))
                    .flatten(),
                requests: rows,
            })
        },
    )
    .await
}

/// The kept bodies of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestBodies {
    pub request: String,
    pub response: String,
    pub truncated: bool,
}

#[server(prefix = "/api/console", endpoint = "get_request_bodies")]
pub async fn get_request_bodies(
    org_id: String,
    project_id: String,
    request_id: String,
) -> Result<RequestBodies, AppError> {
    use super::ssr::*;
    use crate::core::usage;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::ViewRequestLog,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let (request, response, truncated) =
                usage::request_bodies(&mut conn, &c.scope, &request_id)
                    .await?
                    .ok_or_else(|| AppError::not_found("request body"))?;
            Ok(RequestBodies {
                request,
                response,
                truncated,
            })
        },
    )
    .await
}
