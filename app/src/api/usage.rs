//! Usage analytics and the request log. Reports are built from the daily
//! rollup; what a caller sees of it is the policy's `UsageScope` (the whole
//! organization, or the projects they administer and their own keys).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// Requests, errors, tokens and cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsView {
    pub requests: i64,
    pub errors: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

/// One day of the period (days since 1970-01-01, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayPoint {
    pub day: i64,
    pub totals: TotalsView,
}

/// Usage of one project, key or model over the period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub id: String,
    pub name: String,
    /// The project a key belongs to (keys only).
    pub project: Option<String>,
    pub totals: TotalsView,
}

/// A key's spend against its budget, with when it resets and when, at the
/// last seven days' rate, the budget runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBudget {
    pub key_id: String,
    pub name: String,
    pub project: String,
    pub budget_micros: i64,
    pub reset: String,
    pub spent_micros: i64,
    pub next_reset: Option<i64>,
    /// Average daily spend over the last seven days.
    pub daily_rate_micros: i64,
    /// When the budget runs out at that rate; `None` when it does not before
    /// the reset (or nothing is being spent).
    pub runs_out: Option<i64>,
}

/// A stacked series: one value per day of the period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub values: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub days: Vec<DayPoint>,
    /// Spend per day by model (for a stacked chart), in `days` order.
    pub spend_by_model: Vec<Series>,
    pub totals: TotalsView,
    pub by_project: Vec<Slice>,
    pub by_key: Vec<Slice>,
    pub by_model: Vec<Slice>,
    pub key_budgets: Vec<KeyBudget>,
    /// Whether the whole organization is shown (else: the caller's share).
    pub whole: bool,
    /// The projects the caller may filter by: (id, name).
    pub projects: Vec<(String, String)>,
    /// The keys the caller may filter by: (id, name).
    pub keys: Vec<(String, String)>,
}

/// The periods a report may cover, in days.
pub const PERIODS: [i64; 4] = [7, 30, 90, 365];

#[server(prefix = "/api/console", endpoint = "get_usage")]
pub async fn get_usage(
    org_id: String,
    days: Option<i64>,
    project_id: Option<String>,
    key_id: Option<String>,
) -> Result<UsageReport, AppError> {
    use super::ssr::*;
    use crate::core::limits::ResetInterval;
    use crate::core::usage::{self, Totals, DAY_MS};
    use crate::core::{now_ms, projects};
    use crate::policy::{self, Action};
    use std::collections::{BTreeMap, HashMap};
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
            let (project_id, key_id) = (nonempty(project_id), nonempty(key_id));
            let now = now_ms();
            let today = now.div_euclid(DAY_MS);
            let from = today - days + 1;
            let (project_names, keys) = usage::names(&mut conn, scope.org()).await?;
            let key_of: HashMap<&str, &usage::KeyInfo> =
                keys.iter().map(|k| (k.id.as_str(), k)).collect();
            let project_name: HashMap<&str, &str> = project_names
                .iter()
                .map(|(i, n)| (i.as_str(), n.as_str()))
                .collect();
            let sees = |project: &str, key: &str| {
                scope.sees(project, key_of.get(key).and_then(|k| k.owner_id.as_deref()))
            };
            let rows = usage::rollup(
                &mut conn,
                scope.org(),
                from,
                today + 1,
                project_id.as_deref(),
                key_id.as_deref(),
            )
            .await?;
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| sees(&r.project_id, &r.key_id))
                .collect();
            let view = |t: &Totals| TotalsView {
                requests: t.requests,
                errors: t.errors,
                tokens_in: t.tokens_in,
                tokens_out: t.tokens_out,
                cost_micros: t.cost_micros,
            };
            let n = usize::try_from(days).unwrap_or(0);
            let mut per_day = vec![Totals::default(); n];
            let mut total = Totals::default();
            let mut by_project: HashMap<&str, Totals> = HashMap::new();
            let mut by_key: HashMap<&str, Totals> = HashMap::new();
            let mut by_model: BTreeMap<&str, (Totals, Vec<i64>)> = BTreeMap::new();
            for r in &rows {
                let i = usize::try_from(r.day - from)
                    .unwrap_or(0)
                    .min(n.saturating_sub(1));
                per_day[i].add(&r.totals);
                total.add(&r.totals);
                by_project.entry(&r.project_id).or_default().add(&r.totals);
                by_key.entry(&r.key_id).or_default().add(&r.totals);
                let m = by_model
                    .entry(&r.model)
                    .or_insert_with(|| (Totals::default(), vec![0; n]));
                m.0.add(&r.totals);
                m.1[i] += r.totals.cost_micros;
            }
            let sorted = |mut v: Vec<Slice>| {
                v.sort_by(|a, b| {
                    b.totals
                        .cost_micros
                        .cmp(&a.totals.cost_micros)
                        .then(a.name.cmp(&b.name))
                });
                v
            };
            let name_of_project = |id: &str| {
                project_name
                    .get(id)
                    .map_or_else(|| format!("(deleted project {id})"), |n| (*n).to_owned())
            };
            // Budgets of the keys in view: spent this period, and the rate of
            // the last seven days.
            let spend = usage::spend(
                &mut conn,
                usage::Level::Key,
                key_id.as_deref(),
                Some(scope.org().org_id()),
                now,
            )
            .await?;
            let week = usage::rollup(
                &mut conn,
                scope.org(),
                today - 6,
                today + 1,
                project_id.as_deref(),
                key_id.as_deref(),
            )
            .await?;
            let mut week_by_key: HashMap<&str, i64> = HashMap::new();
            for r in &week {
                *week_by_key.entry(&r.key_id).or_default() += r.totals.cost_micros;
            }
            let key_budgets = keys
                .iter()
                .filter(|k| !k.revoked && sees(&k.project_id, &k.id))
                .filter(|k| project_id.as_deref().is_none_or(|p| p == k.project_id))
                .filter(|k| key_id.as_deref().is_none_or(|i| i == k.id))
                .filter_map(|k| {
                    let budget = k.budget_micros?;
                    let reset = ResetInterval::parse("budget_reset", &k.budget_reset)
                        .unwrap_or(ResetInterval::Never);
                    let spent = spend.get(&k.id).map_or(0, |s| s.for_interval(reset));
                    let rate = week_by_key.get(k.id.as_str()).copied().unwrap_or(0) / 7;
                    let next_reset = reset.next_reset(now);
                    let runs_out = (rate > 0)
                        .then(|| {
                            let left = (budget - spent).max(0);
                            now + i64::try_from(
                                i128::from(left) * i128::from(DAY_MS) / i128::from(rate),
                            )
                            .unwrap_or(i64::MAX)
                        })
                        .filter(|t| next_reset.is_none_or(|r| *t < r));
                    Some(KeyBudget {
                        key_id: k.id.clone(),
                        name: k.name.clone(),
                        project: name_of_project(&k.project_id),
                        budget_micros: budget,
                        reset: reset.as_str().to_owned(),
                        spent_micros: spent,
                        next_reset,
                        daily_rate_micros: rate,
                        runs_out,
                    })
                })
                .collect();
            let visible_projects: Vec<(String, String)> = project_names
                .iter()
                .filter(|(id, _)| scope.whole() || standings.iter().any(|(p, _)| p == id))
                .cloned()
                .collect();
            let visible_keys: Vec<(String, String)> = keys
                .iter()
                .filter(|k| sees(&k.project_id, &k.id))
                .map(|k| (k.id.clone(), k.name.clone()))
                .collect();
            Ok(UsageReport {
                days: per_day
                    .iter()
                    .enumerate()
                    .map(|(i, t)| DayPoint {
                        day: from + i64::try_from(i).unwrap_or(0),
                        totals: view(t),
                    })
                    .collect(),
                spend_by_model: by_model
                    .iter()
                    .map(|(m, (_, values))| Series {
                        name: (*m).to_owned(),
                        values: values.clone(),
                    })
                    .collect(),
                totals: view(&total),
                by_project: sorted(
                    by_project
                        .iter()
                        .map(|(id, t)| Slice {
                            id: (*id).to_owned(),
                            name: name_of_project(id),
                            project: None,
                            totals: view(t),
                        })
                        .collect(),
                ),
                by_key: sorted(
                    by_key
                        .iter()
                        .map(|(id, t)| Slice {
                            id: (*id).to_owned(),
                            name: key_of
                                .get(id)
                                .map_or_else(|| format!("(deleted key {id})"), |k| k.name.clone()),
                            project: key_of.get(id).map(|k| name_of_project(&k.project_id)),
                            totals: view(t),
                        })
                        .collect(),
                ),
                by_model: sorted(
                    by_model
                        .iter()
                        .map(|(m, (t, _))| Slice {
                            id: (*m).to_owned(),
                            name: (*m).to_owned(),
                            project: None,
                            totals: view(t),
                        })
                        .collect(),
                ),
                key_budgets,
                whole: scope.whole(),
                projects: visible_projects,
                keys: visible_keys,
            })
        }
        .await,
    )
}

/// One request of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    pub request_id: String,
    pub at: i64,
    pub key: String,
    pub model: String,
    pub endpoint: String,
    pub stream: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
    pub status: i64,
    pub error_code: Option<String>,
    pub latency_ms: i64,
    pub has_body: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPage {
    pub project_name: String,
    pub requests: Vec<RequestView>,
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
    answer(
        async {
            let (state, _, scope) =
                authorize_project(&org_id, &project_id, Action::ViewRequestLog).await?;
            let cursor = match before.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(c) => {
                    let bad = || AppError::invalid("before", "not a cursor from this page");
                    let (at, id) = c.split_once(':').ok_or_else(bad)?;
                    Some((at.parse::<i64>().map_err(|_| bad())?, id.to_owned()))
                }
            };
            let mut conn = state.db.pool.acquire().await?;
            let project = projects::get(&mut conn, &scope).await?;
            let mut rows = usage::requests(
                &mut conn,
                &scope,
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
                requests: rows
                    .into_iter()
                    .map(|r| RequestView {
                        key: r
                            .key_name
                            .unwrap_or_else(|| format!("(deleted key {})", r.key_id)),
                        request_id: r.request_id,
                        at: r.at,
                        model: r.model,
                        endpoint: r.endpoint,
                        stream: r.stream,
                        tokens_in: r.tokens_in,
                        tokens_out: r.tokens_out,
                        cost_micros: r.cost_micros,
                        status: r.status,
                        error_code: r.error_code,
                        latency_ms: r.latency_ms,
                        has_body: r.has_body,
                    })
                    .collect(),
            })
        }
        .await,
    )
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
    answer(
        async {
            let (state, _, scope) =
                authorize_project(&org_id, &project_id, Action::ViewRequestLog).await?;
            let mut conn = state.db.pool.acquire().await?;
            let (request, response, truncated) =
                usage::request_bodies(&mut conn, &scope, &request_id)
                    .await?
                    .ok_or_else(|| AppError::not_found("request body"))?;
            Ok(RequestBodies {
                request,
                response,
                truncated,
            })
        }
        .await,
    )
}
