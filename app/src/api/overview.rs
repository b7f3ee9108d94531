//! An organization's first page at a glance: this month's spend against the
//! cap and the credits, spend per day, projects near their budget, keys that
//! expire soon, recent audit events and how to call the proxy. Each part is
//! there only where the policy lets the caller see it (a plain member sees
//! no organization-wide figure).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::{OrgRole, Seat};
use crate::usage_report::DayPoint;

pub use super::audit::AuditEventView;
pub use super::keys::KeyView;

/// Days the spend chart covers.
pub const CHART_DAYS: i64 = 30;
/// A key that expires within this many days expires soon.
pub const EXPIRING_DAYS: i64 = 14;
/// At or past this share of its budget a project is near it.
pub const NEAR_BUDGET_PERCENT: i64 = 80;
/// Expiring keys and audit events shown at most.
pub const EXPIRING_SHOWN: i64 = 10;
pub const EVENTS_SHOWN: i64 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub name: String,
    pub role: OrgRole,
    /// The organization's spend: seats that read its whole usage.
    pub spend: Option<OrgSpend>,
    /// Spend per day, the whole organization's or the caller's share;
    /// `None` where the caller may read no usage at all.
    pub chart: Option<SpendChart>,
    /// The projects the caller sees, most used budget first.
    pub projects: Vec<ProjectBudget>,
    /// Keys that expire within [`EXPIRING_DAYS`], soonest first: every key of
    /// the organization for those who manage them all, else the caller's own
    /// and those of the projects they administer.
    pub expiring: Vec<KeyView>,
    /// Whether `expiring` covers the whole organization.
    pub expiring_all: bool,
    /// The latest audit events: only for seats that read the audit log.
    pub events: Option<Vec<AuditEventView>>,
    pub proxy: ProxySnippet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSpend {
    /// Since the 1st of this month (UTC).
    pub month_micros: i64,
    pub cap_micros: Option<i64>,
    pub cap_reset: String,
    /// Spend in the cap's current period.
    pub cap_spent_micros: i64,
    pub cap_resets_at: Option<i64>,
    /// Credits: only for seats with billing & credits.
    pub credits: Option<Credits>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credits {
    /// Whether the balance is enforced.
    pub prepaid: bool,
    pub balance_micros: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendChart {
    /// The whole organization (else the caller's own keys and the projects
    /// they administer).
    pub whole: bool,
    pub days: Vec<DayPoint>,
    pub total_micros: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectBudget {
    pub id: String,
    pub name: String,
    pub my_seat: Seat,
    pub budget_micros: Option<i64>,
    pub budget_reset: String,
    /// Spent in the budget's period; `None` where the caller does not read
    /// the whole project's usage (a project member sees their own keys only).
    pub spent_micros: Option<i64>,
}

impl ProjectBudget {
    /// How much of the budget is spent, in percent (where both are known).
    pub fn used_percent(&self) -> Option<i64> {
        let (budget, spent) = (self.budget_micros?, self.spent_micros?);
        if budget <= 0 {
            return Some(if spent > 0 { 100 } else { 0 });
        }
        Some(i64::try_from(i128::from(spent) * 100 / i128::from(budget)).unwrap_or(i64::MAX))
    }

    /// Over its budget (the proxy pauses it), near it, or neither.
    pub fn standing(&self) -> BudgetStanding {
        match self.used_percent() {
            Some(p) if p >= 100 => BudgetStanding::Over,
            Some(p) if p >= NEAR_BUDGET_PERCENT => BudgetStanding::Near,
            _ => BudgetStanding::Within,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BudgetStanding {
    Over,
    Near,
    Within,
}

/// What the "call the proxy" snippet needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySnippet {
    /// The OpenAI-compatible base URL, `<public URL>/v1`.
    pub base_url: String,
    /// A model the caller may call, from a project where they may hold keys:
    /// `(project id, project name, model)`.
    pub model: Option<(String, String, String)>,
}

#[server(prefix = "/api/console", endpoint = "get_overview")]
pub async fn get_overview(org_id: String) -> Result<Overview, AppError> {
    use super::ssr::*;
    use crate::policy::{self, Action};
    answer(
        async {
            let (state, _, member) = member_of(&org_id).await?;
            let org = policy::authorize_org(&member, Action::ViewOrganization)?;
            let mut conn = state.db.pool.acquire().await?;
            parts::gather(
                &mut conn,
                &member,
                &org,
                &state.public_url,
                crate::core::now_ms(),
            )
            .await
        }
        .await,
    )
}

#[cfg(feature = "ssr")]
mod parts {
    use sqlx::AnyConnection;

    use super::*;
    use crate::core::keys::{self, KeyRow, KeysOf};
    use crate::core::limits::ResetInterval;
    use crate::core::usage::{self, Level, DAY_MS};
    use crate::core::{audit, billing, orgs, projects};
    use crate::policy::{self, Action, OrgMember, OrgScope, ProjectMember, ProjectRole};

    /// Every part of the overview, each read under the grant the policy
    /// gives this member for it (and left out where it gives none).
    pub(super) async fn gather(
        conn: &mut AnyConnection,
        member: &OrgMember,
        org: &OrgScope,
        public_url: &str,
        now: i64,
    ) -> Result<Overview, AppError> {
        let name = orgs::get(conn, org)
            .await?
            .ok_or_else(|| AppError::not_found("organization"))?
            .name;
        let visible = projects::visible(conn, org).await?;
        let standings: Vec<(String, ProjectRole)> = visible
            .iter()
            .filter_map(|(p, r)| r.map(|r| (p.id.clone(), r)))
            .collect();

        let spend = match policy::authorize_org(member, Action::ViewUsage) {
            Ok(whole) => Some(org_spend(conn, &whole, now).await?),
            Err(_) => None,
        };

        let usage_scope = policy::authorize_usage(member, &standings).ok();
        let chart = match &usage_scope {
            Some(scope) => {
                let filter = usage::ReportFilter {
                    days: CHART_DAYS,
                    project_id: None,
                    key_id: None,
                };
                let r = usage::report(conn, scope, &standings, &filter, now).await?;
                Some(SpendChart {
                    whole: r.whole,
                    days: r.days,
                    total_micros: r.totals.cost_micros,
                })
            }
            None => None,
        };

        let spent = usage::spend(conn, Level::Project, None, Some(org.org_id()), now).await?;
        let mut budgets: Vec<ProjectBudget> = visible
            .iter()
            .map(|(p, role)| ProjectBudget {
                id: p.id.clone(),
                name: p.name.clone(),
                my_seat: org.seat().with_project(*role),
                budget_micros: p.caps.budget.map(crate::format::Usd::micros),
                budget_reset: p.caps.budget_reset.as_str().to_owned(),
                spent_micros: usage_scope
                    .as_ref()
                    .filter(|s| s.sees_project(&p.id))
                    .map(|_| {
                        spent
                            .get(&p.id)
                            .map_or(0, |s| s.for_interval(p.caps.budget_reset))
                    }),
            })
            .collect();
        budgets.sort_by(|a, b| {
            (a.standing(), std::cmp::Reverse(a.used_percent()), &a.name).cmp(&(
                b.standing(),
                std::cmp::Reverse(b.used_percent()),
                &b.name,
            ))
        });

        let (expiring, expiring_all) = expiring(conn, member, org, &standings, now).await?;

        let events = match policy::authorize_org(member, Action::ViewAuditLog) {
            Ok(scope) => {
                let filter = audit::Filter {
                    actor: None,
                    action: None,
                    before_seq: None,
                    limit: EVENTS_SHOWN,
                };
                let rows = audit::list(conn, &scope, &filter).await?;
                Some(
                    rows.into_iter()
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
                )
            }
            Err(_) => None,
        };

        // A model from the first project where the caller may hold keys.
        let model = visible.iter().find_map(|(p, role)| {
            let seat = org.seat().with_project(*role);
            policy::allows(Action::ManageOwnKeys, seat)
                .then(|| p.caps.models.first())
                .flatten()
                .map(|m| (p.id.clone(), p.name.clone(), m.clone()))
        });

        Ok(Overview {
            name,
            role: member.role,
            spend,
            chart,
            projects: budgets,
            expiring,
            expiring_all,
            events,
            proxy: ProxySnippet {
                base_url: format!("{public_url}/v1"),
                model,
            },
        })
    }

    /// This month's spend, the cap's period and, for billing seats, the
    /// credit balance. `whole` grants reading the organization's usage.
    async fn org_spend(
        conn: &mut AnyConnection,
        whole: &OrgScope,
        now: i64,
    ) -> Result<OrgSpend, AppError> {
        let standing = billing::standing(conn, whole, now).await?;
        let month_start = ResetInterval::Monthly
            .period_start(now)
            .unwrap_or(0)
            .div_euclid(DAY_MS);
        let (_, month) = usage::org_spent(conn, whole, month_start).await?;
        let credits = whole
            .also(Action::BillingAndCredits)
            .is_ok()
            .then(|| Credits {
                prepaid: standing.prepaid,
                balance_micros: standing.balance.micros(),
            });
        Ok(OrgSpend {
            month_micros: month,
            cap_micros: standing.cap.map(crate::format::Usd::micros),
            cap_reset: standing.cap_reset.as_str().to_owned(),
            cap_spent_micros: standing.cap_spent.micros(),
            cap_resets_at: standing.cap_resets_at,
            credits,
        })
    }

    /// Keys that expire soon: the organization's (for those who manage every
    /// key), else the caller's own and those of the projects whose keys they
    /// manage. Also whether that is the whole organization.
    async fn expiring(
        conn: &mut AnyConnection,
        member: &OrgMember,
        org: &OrgScope,
        standings: &[(String, ProjectRole)],
        now: i64,
    ) -> Result<(Vec<KeyView>, bool), AppError> {
        let until = now.saturating_add(EXPIRING_DAYS.saturating_mul(DAY_MS));
        let view = |rows: Vec<KeyRow>| -> Vec<KeyView> {
            rows.into_iter()
                .map(|k| super::super::keys::view_of(k, now))
                .collect()
        };
        if let Ok(all) = policy::authorize_org(member, Action::ManageAllKeys) {
            let rows = keys::expiring(conn, KeysOf::Org(&all), now, until, EXPIRING_SHOWN).await?;
            return Ok((view(rows), true));
        }
        let mut found = keys::expiring(conn, KeysOf::Mine(org), now, until, EXPIRING_SHOWN).await?;
        for (project_id, role) in standings {
            let standing = ProjectMember {
                org: member.clone(),
                project_id: project_id.clone(),
                role: Some(*role),
            };
            let Ok(scope) = policy::authorize_project(&standing, Action::ManageProjectKeys) else {
                continue;
            };
            let rows =
                keys::expiring(conn, KeysOf::Project(&scope), now, until, EXPIRING_SHOWN).await?;
            found.extend(
                rows.into_iter()
                    .filter(|k| k.owner_id.as_deref() != Some(org.actor_id())),
            );
        }
        found.sort_by(|a, b| (a.limits.expires_at, &a.id).cmp(&(b.limits.expires_at, &b.id)));
        found.truncate(usize::try_from(EXPIRING_SHOWN).unwrap_or(usize::MAX));
        Ok((view(found), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(budget: Option<i64>, spent: Option<i64>) -> ProjectBudget {
        ProjectBudget {
            id: "p".to_owned(),
            name: "P".to_owned(),
            my_seat: Seat::OrgOwner,
            budget_micros: budget,
            budget_reset: "monthly".to_owned(),
            spent_micros: spent,
        }
    }

    #[test]
    fn a_project_is_near_its_budget_from_80_percent_and_over_it_from_100() {
        use BudgetStanding::*;
        let standing = |b, s| project(b, s).standing();
        assert_eq!(standing(Some(100), Some(79)), Within);
        assert_eq!(standing(Some(100), Some(80)), Near);
        assert_eq!(standing(Some(100), Some(100)), Over);
        assert_eq!(standing(Some(1), Some(i64::MAX)), Over, "no overflow");
        assert_eq!(standing(Some(0), Some(1)), Over);
        assert_eq!(standing(None, Some(5)), Within, "no budget");
        // Spend the caller may not read: no share, no standing.
        assert_eq!(project(Some(100), None).used_percent(), None);
        assert_eq!(standing(Some(100), None), Within);
    }
}
