//! The usage report and the request log as the console shows them: built by `core::usage` on the
//! server, drawn by the usage page in the browser, so both targets compile it.

use serde::{Deserialize, Serialize};

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
    /// By the model that served (and priced) the requests.
    pub by_model: Vec<Slice>,
    /// By the model the requests asked for (a virtual model's id, or the served one).
    pub by_requested_model: Vec<Slice>,
    /// By the endpoint the requests were made to (the API the client spoke).
    pub by_endpoint: Vec<Slice>,
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

/// One request in the log: metadata, the key by name, and whether its bodies
/// were kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub request_id: String,
    pub at: i64,
    /// The key's name, or `(deleted key <id>)`.
    pub key: String,
    pub model: String,
    pub endpoint: String,
    /// The HTTP status the client got, and Tollgate's error code if refused.
    pub status: i64,
    pub error_code: Option<String>,
    pub latency_ms: i64,
    pub stream: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_micros: i64,
    pub has_body: bool,
}
