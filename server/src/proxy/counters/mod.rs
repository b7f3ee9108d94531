//! Rate limits and budget reservations, behind one interface with two
//! implementations: in this process ([`LocalCounters`], exact for one
//! instance) and in Redis ([`RedisCounters`], shared by every instance).
//!
//! Admission checks RPM (GCRA), TPM and the budgets of key, project and
//! organization, and reserves tokens and worst-case cost at all of them at
//! once or at none; settling swaps the reservation for the actual.

mod grants;
mod local;
mod redis;

pub use local::LocalCounters;
pub use redis::{RedisCounters, RedisSettings};

use axum::http::HeaderName;
use futures::future::BoxFuture;
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::usage::Level;
use tollgate_app::format::format_usd;

use super::error::ProxyError;
use super::memory::Caller;

/// What one request asks for.
pub struct Admission<'a> {
    pub caller: &'a Caller,
    /// Input estimate plus the most output it may produce.
    pub tokens: i64,
    /// Worst-case cost in micro-USD.
    pub cost: i64,
    pub now: i64,
}

/// What an admitted request holds until it settles.
#[derive(Clone, Debug)]
pub struct Ticket {
    key_id: String,
    project_id: String,
    org_id: String,
    tokens: i64,
    cost: i64,
    minute: i64,
    /// The lease its reservation is part of in a shared backend (empty
    /// in-process), and the grant it was admitted from.
    id: String,
    gen: u64,
    /// Admitted by the in-process fallback while Redis was unreachable.
    fallback: bool,
}

pub type Headers = Vec<(HeaderName, String)>;

/// What `/readyz` says about the counters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CounterStatus {
    /// `local` (this process only) or `redis` (shared).
    pub backend: &'static str,
    /// `ok`, `unreachable`, `rebuilding` (from the ledger) or `fail_open`
    /// (Redis unreachable, admitting from this instance's share).
    pub state: &'static str,
    /// Instances seen sharing the counters (1 for local).
    pub instances: u32,
    /// Whether requests are admitted now.
    pub admitting: bool,
}

pub trait Counters: Send + Sync {
    /// Admits and reserves, or refuses with 429, 402 or (the backend
    /// unreachable) 503. The headers report the rate limits that apply
    /// (`x-ratelimit-*`).
    fn admit<'a>(
        &'a self,
        a: Admission<'a>,
    ) -> BoxFuture<'a, Result<(Ticket, Headers), ProxyError>>;
    /// Replaces the reservation with what was used (zero to release it).
    fn settle(&self, ticket: Ticket, tokens: i64, cost: i64, now: i64);
    fn status(&self) -> CounterStatus;
}

/// The largest token count or micro-USD amount a backend counts at once:
/// far above any real request, and exact in Redis's Lua numbers (2^53).
const MAX_AMOUNT: i64 = 1 << 50;

fn bounded(v: i64) -> i64 {
    v.clamp(0, MAX_AMOUNT)
}

fn label(level: Level) -> &'static str {
    match level {
        Level::Key => "key",
        Level::Project => "project",
        Level::Org => "organization",
    }
}

fn h(name: &'static str, v: impl ToString) -> (HeaderName, String) {
    (HeaderName::from_static(name), v.to_string())
}

/// What requests in flight hold, for a refusal's message (nothing if none).
fn in_flight(reserved: i64) -> String {
    if reserved > 0 {
        format!(", {} reserved by requests in flight", format_usd(reserved))
    } else {
        String::new()
    }
}

/// The RPM and TPM headers of an admitted request.
fn rate_headers(rpm: Option<(i64, i64)>, tpm: Option<(i64, i64)>) -> Headers {
    let mut hs = Vec::new();
    if let Some((limit, remaining)) = rpm {
        hs.push(h("x-ratelimit-limit-requests", limit));
        hs.push(h("x-ratelimit-remaining-requests", remaining.max(0)));
    }
    if let Some((limit, remaining)) = tpm {
        hs.push(h("x-ratelimit-limit-tokens", limit));
        hs.push(h("x-ratelimit-remaining-tokens", remaining.max(0)));
    }
    hs
}

/// A 429 for requests per minute.
fn rpm_refused(level: Level, limit: i64, wait_secs: u64, tpm: Option<i64>) -> ProxyError {
    let msg = format!(
        "{} rate limit of {limit} requests per minute reached; retry in {wait_secs}s",
        label(level)
    );
    let mut hs = vec![
        h("retry-after", wait_secs),
        h("x-ratelimit-limit-requests", limit),
        h("x-ratelimit-remaining-requests", 0),
    ];
    if let Some(t) = tpm {
        hs.push(h("x-ratelimit-limit-tokens", t));
    }
    ProxyError::rate_limited(msg, hs)
}

/// A 429 for tokens per minute; `rpm` is the RPM report already made.
fn tpm_refused(
    level: Level,
    limit: i64,
    remaining: i64,
    tokens: i64,
    now: i64,
    rpm: Option<(i64, i64)>,
) -> ProxyError {
    let minute = now.div_euclid(60_000);
    let retry = ((minute + 1) * 60_000 - now + 999) / 1000;
    let msg = format!(
        "{} rate limit of {limit} tokens per minute reached: this request needs up to {tokens} tokens and {remaining} remain; retry in {retry}s",
        label(level),
    );
    let mut hs = vec![
        h("retry-after", retry),
        h("x-ratelimit-limit-tokens", limit),
        h("x-ratelimit-remaining-tokens", remaining),
    ];
    hs.extend(rate_headers(rpm, None));
    ProxyError::rate_limited(msg, hs)
}

/// A 402 for a budget or the organization's spend cap.
fn budget_refused(
    level: Level,
    limit: i64,
    reset: ResetInterval,
    spent: i64,
    reserved: i64,
    cost: i64,
) -> ProxyError {
    let what = if level == Level::Org {
        "spend cap"
    } else {
        "budget"
    };
    let msg = format!(
        "{} {what} {} ({}) exhausted: spent {}{}; this request may cost up to {}",
        label(level),
        format_usd(limit),
        reset.as_str(),
        format_usd(spent),
        in_flight(reserved),
        format_usd(cost),
    );
    let code = match level {
        Level::Key => "key_budget_exceeded",
        Level::Project => "project_budget_exceeded",
        Level::Org => "org_spend_cap_exceeded",
    };
    ProxyError::budget(code, msg)
}

/// A 402 for the prepaid credit balance.
fn credits_refused(balance: i64, credits: i64, reserved: i64, cost: i64) -> ProxyError {
    ProxyError::budget(
        "org_credits_exhausted",
        format!(
            "organization credit balance exhausted: {} left of {} in credits{}; this request may cost up to {}",
            format_usd(balance),
            format_usd(credits),
            in_flight(reserved),
            format_usd(cost),
        ),
    )
}

/// The limits one admission checks, read from the caller.
struct Limits {
    key_rpm: Option<i64>,
    project_rpm: Option<i64>,
    key_tpm: Option<i64>,
    project_tpm: Option<i64>,
    /// Key, project, organization: the limit in micro-USD and its period.
    budgets: [(Level, Option<i64>, ResetInterval); 3],
    /// The prepaid credit balance, if the organization is prepaid.
    credits: Option<i64>,
}

impl Limits {
    fn of(c: &Caller) -> Limits {
        use tollgate_app::format::Usd;
        let (key, project, org) = (&c.key, &c.project.project, &c.org.org);
        Limits {
            key_rpm: key.rpm_limit(),
            project_rpm: project.caps.rpm_limit,
            key_tpm: key.tpm_limit(),
            project_tpm: project.caps.tpm_limit,
            budgets: [
                (Level::Key, key.budget_micros(), c.key.budget_reset),
                (
                    Level::Project,
                    project.caps.budget.map(Usd::micros),
                    c.project.reset,
                ),
                (
                    Level::Org,
                    org.spending.spend_cap.map(Usd::micros),
                    c.org.reset,
                ),
            ],
            credits: org.prepaid.then_some(org.credits_micros),
        }
    }
}

impl Ticket {
    fn new(c: &Caller, tokens: i64, cost: i64, now: i64) -> Ticket {
        Ticket {
            key_id: c.key.id.to_string(),
            project_id: c.project.project.id.clone(),
            org_id: c.org.org.id.clone(),
            tokens,
            cost,
            minute: now.div_euclid(60_000),
            id: String::new(),
            gen: 0,
            fallback: false,
        }
    }
}
