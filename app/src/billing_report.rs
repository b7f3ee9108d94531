//! An organization's billing as the console shows it (its standing, credit
//! ledger and monthly statements): built by
//! `core::billing` on the server, drawn by the billing page in the browser,
//! so both targets compile it.

use serde::{Deserialize, Serialize};

use crate::format::{ResetInterval, Usd};

/// Where the organization stands: credits, spend, cap, and what stops `/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Whether the credit balance is enforced.
    pub prepaid: bool,
    pub credits: Usd,
    /// Everything metered, ever.
    pub spent: Usd,
    /// Credits minus metered spend (saturating).
    pub balance: Usd,
    pub cap: Option<Usd>,
    pub cap_reset: ResetInterval,
    /// Spend in the cap's current period.
    pub cap_spent: Usd,
    /// When the cap's period ends (`None`: never).
    pub cap_resets_at: Option<i64>,
    pub credits_exhausted: bool,
    pub cap_exhausted: bool,
}

/// One entry of the credit ledger; amounts are signed micro-USD (only an
/// adjustment may be negative).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct CreditEntry {
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub amount_micros: i64,
    pub note: String,
    pub reference: String,
    pub entered_by: String,
}

/// A month of spend for one project and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub project_id: String,
    pub project_name: String,
    pub model: String,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost: Usd,
}

/// A calendar month (UTC) of an organization's spend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// `YYYY-MM`.
    pub month: String,
    pub from: i64,
    pub to: i64,
    pub lines: Vec<StatementLine>,
    pub total: Usd,
    /// Credits entered during the month.
    pub credits: Usd,
}
