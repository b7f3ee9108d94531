//! Billing: the credit ledger and balance, the prepaid switch, monthly
//! statements (also as CSV), and alert settings with the alerts sent. Owners
//! and billing managers; every member learns only whether `/v1` is stopped.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditView {
    pub at: i64,
    pub kind: String,
    pub amount_micros: i64,
    pub note: String,
    pub reference: String,
    pub entered_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingView {
    pub prepaid: bool,
    pub credits_micros: i64,
    pub spent_micros: i64,
    pub balance_micros: i64,
    pub cap_micros: Option<i64>,
    pub cap_reset: String,
    pub cap_spent_micros: i64,
    pub cap_resets_at: Option<i64>,
    pub credits_exhausted: bool,
    pub cap_exhausted: bool,
    pub entries: Vec<CreditView>,
    /// Months with a statement, newest first (`YYYY-MM`).
    pub months: Vec<String>,
}

#[server(prefix = "/api/console", endpoint = "get_billing")]
pub async fn get_billing(org_id: String) -> Result<BillingView, AppError> {
    use super::ssr::*;
    use crate::core::{billing, now_ms};
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let s = billing::standing(&mut conn, &c.scope, now_ms()).await?;
        let entries = billing::credits(&mut conn, &c.scope).await?;
        let months = billing::months(&mut conn, &c.scope).await?;
        Ok(BillingView {
            prepaid: s.prepaid,
            credits_micros: s.credits.micros(),
            spent_micros: s.spent.micros(),
            balance_micros: s.balance.micros(),
            cap_micros: s.cap.map(crate::format::Usd::micros),
            cap_reset: s.cap_reset.as_str().to_owned(),
            cap_spent_micros: s.cap_spent.micros(),
            cap_resets_at: s.cap_resets_at,
            credits_exhausted: s.credits_exhausted,
            cap_exhausted: s.cap_exhausted,
            entries: entries
                .into_iter()
                .map(|e| CreditView {
                    at: e.at,
                    kind: e.kind,
                    amount_micros: e.amount_micros,
                    note: e.note,
                    reference: e.reference,
                    entered_by: e.entered_by,
                })
                .collect(),
            months,
        })
    })
    .await
}

/// Enters a grant, a purchase (both positive) or an adjustment (either sign).
#[server(prefix = "/api/console", endpoint = "add_credit")]
pub async fn add_credit(
    org_id: String,
    kind: String,
    amount: String,
    note: String,
    reference: String,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::ops::{self, NewCredit};
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let credit = NewCredit::parse(&kind, &amount, &note, &reference)?;
        ops::add_credit(&c.state, &c.actor, &c.scope, credit, &c.user.email).await
    })
    .await
}

/// Turns enforcement of the credit balance on or off.
#[server(prefix = "/api/console", endpoint = "set_prepaid")]
pub async fn set_prepaid(org_id: String, prepaid: Option<String>) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let on = super::checkbox("prepaid", prepaid.as_deref())?;
        crate::core::ops::set_prepaid(&c.state, &c.actor, &c.scope, on).await
    })
    .await
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLineView {
    pub project: String,
    pub model: String,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementView {
    pub month: String,
    pub lines: Vec<StatementLineView>,
    pub by_project: Vec<(String, i64)>,
    pub total_micros: i64,
    pub credits_micros: i64,
    /// The same statement as CSV.
    pub csv: String,
}

#[server(prefix = "/api/console", endpoint = "get_statement")]
pub async fn get_statement(org_id: String, month: String) -> Result<StatementView, AppError> {
    use super::ssr::*;
    use crate::core::billing;
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        // No month: this one.
        let month = match month.trim() {
            "" => crate::format::month_of(crate::core::now_ms()),
            m => m.to_owned(),
        };
        let s = billing::statement(&mut conn, &c.scope, &month).await?;
        Ok(StatementView {
            csv: billing::statement_csv(&s),
            by_project: billing::by_project(&s)
                .into_iter()
                .map(|(name, cost)| (name, cost.micros()))
                .collect(),
            month: s.month,
            total_micros: s.total.micros(),
            credits_micros: s.credits.micros(),
            lines: s
                .lines
                .into_iter()
                .map(|l| StatementLineView {
                    project: l.project_name,
                    model: l.model,
                    requests: l.requests,
                    tokens_in: l.tokens_in,
                    tokens_out: l.tokens_out,
                    cost_micros: l.cost.micros(),
                })
                .collect(),
        })
    })
    .await
}

/// Whether `/v1` is stopped for the organization, for the console's banner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub credits_exhausted: bool,
    pub cap_exhausted: bool,
    pub cap_resets_at: Option<i64>,
}

#[server(prefix = "/api/console", endpoint = "get_stop")]
pub async fn get_stop(org_id: String) -> Result<Stop, AppError> {
    use super::ssr::*;
    use crate::core::{billing, now_ms};
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let s = billing::standing(&mut conn, &c.scope, now_ms()).await?;
        Ok(Stop {
            credits_exhausted: s.credits_exhausted,
            cap_exhausted: s.cap_exhausted,
            cap_resets_at: s.cap_resets_at,
        })
    })
    .await
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub target: String,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    pub next_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub at: i64,
    pub kind: String,
    pub message: String,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertingView {
    /// Where each webhook goes (scheme and host only: the URL holds a token).
    pub webhook: Option<String>,
    pub slack: Option<String>,
    pub thresholds: Vec<i64>,
    pub sent: Vec<AlertView>,
}

#[server(prefix = "/api/console", endpoint = "get_alerting")]
pub async fn get_alerting(org_id: String) -> Result<AlertingView, AppError> {
    use super::ssr::*;
    use crate::core::{alerts, orgs};
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let a = orgs::alerting(&mut conn, &c.scope).await?;
        let sent = alerts::list(&mut conn, &c.scope, 50).await?;
        Ok(AlertingView {
            webhook: a.webhook_url.as_deref().map(orgs::url_hint),
            slack: a.slack_url.as_deref().map(orgs::url_hint),
            thresholds: a.thresholds,
            sent: sent
                .into_iter()
                .map(|s| AlertView {
                    at: s.at,
                    kind: s.kind,
                    message: s.message,
                    deliveries: s
                        .deliveries
                        .into_iter()
                        .map(|d| DeliveryView {
                            target: d.target,
                            attempts: d.attempts,
                            delivered_at: d.delivered_at,
                            last_error: d.last_error,
                            next_at: d.next_at,
                        })
                        .collect(),
                })
                .collect(),
        })
    })
    .await
}

/// Sets where alerts go and at which thresholds. An empty URL keeps the one
/// set before; `clear_webhook` / `clear_slack` remove it.
#[server(prefix = "/api/console", endpoint = "update_alerting")]
pub async fn update_alerting(
    org_id: String,
    webhook_url: String,
    slack_url: String,
    thresholds: String,
    clear_webhook: Option<String>,
    clear_slack: Option<String>,
) -> Result<(), AppError> {
    use super::{checkbox, ssr::*};
    use crate::core::ops::{self, AlertingEdit};
    use crate::policy::Action;
    in_org(&org_id, Action::BillingAndCredits, |c| async move {
        let edit = AlertingEdit::parse(
            (
                &webhook_url,
                checkbox("clear_webhook", clear_webhook.as_deref())?,
            ),
            (&slack_url, checkbox("clear_slack", clear_slack.as_deref())?),
            &thresholds,
        )?;
        ops::update_alerting(&c.state, &c.actor, &c.scope, edit).await
    })
    .await
}
