//! Billing: the credit ledger and balance, the prepaid switch, monthly
//! statements (also as CSV), and alert settings with the alerts sent. Owners
//! and billing managers; every member learns only whether `/v1` is stopped.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

pub use crate::billing_report::{CreditEntry, Standing, Statement};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingView {
    pub standing: Standing,
    /// The credit ledger, newest first.
    pub entries: Vec<CreditEntry>,
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
        Ok(BillingView {
            standing: billing::standing(&mut conn, &c.scope, now_ms()).await?,
            entries: billing::credits(&mut conn, &c.scope).await?,
            months: billing::months(&mut conn, &c.scope).await?,
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
pub struct StatementView {
    pub statement: Statement,
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
        let statement = billing::statement(&mut conn, &c.scope, &month).await?;
        Ok(StatementView {
            csv: billing::statement_csv(&statement),
            statement,
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
