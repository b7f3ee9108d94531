//! Rate limits and budget reservations, behind one interface so that a
//! shared (Redis) implementation can replace the in-process one.
//!
//! Admission checks RPM (GCRA), then under one lock TPM and the budgets of
//! key, project and organization, and reserves tokens and worst-case cost at
//! all of them at once; settling swaps the reservation for the actual.

use axum::http::HeaderName;
use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::usage::{Level, Spend};
use tollgate_app::format::{format_usd, Usd};

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
}

pub type Headers = Vec<(HeaderName, String)>;

pub trait Counters: Send + Sync {
    /// Admits and reserves, or refuses with 429 or 402. The headers report
    /// the rate limits that apply (`x-ratelimit-*`).
    fn admit<'a>(
        &'a self,
        a: Admission<'a>,
    ) -> BoxFuture<'a, Result<(Ticket, Headers), ProxyError>>;
    /// Replaces the reservation with what was used (zero to release it).
    fn settle(&self, ticket: Ticket, tokens: i64, cost: i64, now: i64);
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
/// A GCRA limiter per key or project, with the RPM it was made for.
type Limiters = HashMap<(Level, String), (i64, Arc<Limiter>)>;

/// Spend per calendar period of one key, project or organization, and what
/// requests in flight have reserved.
struct Account {
    spend: Spend,
    day_end: i64,
    week_end: i64,
    month_end: i64,
    reserved: i64,
}

impl Account {
    fn new(spend: Spend, as_of: i64) -> Account {
        let end = |r: ResetInterval| r.next_reset(as_of).unwrap_or(i64::MAX);
        Account {
            spend,
            day_end: end(ResetInterval::Daily),
            week_end: end(ResetInterval::Weekly),
            month_end: end(ResetInterval::Monthly),
            reserved: 0,
        }
    }

    /// Starts the periods that have ended since.
    fn roll(&mut self, now: i64) {
        let end = |r: ResetInterval| r.next_reset(now).unwrap_or(i64::MAX);
        if now >= self.day_end {
            self.spend.day = 0;
            self.day_end = end(ResetInterval::Daily);
        }
        if now >= self.week_end {
            self.spend.week = 0;
            self.week_end = end(ResetInterval::Weekly);
        }
        if now >= self.month_end {
            self.spend.month = 0;
            self.month_end = end(ResetInterval::Monthly);
        }
    }
}

/// Tokens counted in one clock minute.
struct Window {
    minute: i64,
    used: i64,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<(Level, String), Account>,
    windows: HashMap<(Level, String), Window>,
}

/// The in-process counters: exact for one instance.
pub struct LocalCounters {
    inner: Mutex<Inner>,
    /// Spend from the ledger at start, taken when an account is first used.
    base: Mutex<HashMap<(Level, String), Spend>>,
    base_at: i64,
    rpm: RwLock<Limiters>,
}

impl LocalCounters {
    pub fn new(base: HashMap<(Level, String), Spend>, base_at: i64) -> LocalCounters {
        LocalCounters {
            inner: Mutex::new(Inner::default()),
            base: Mutex::new(base),
            base_at,
            rpm: RwLock::new(HashMap::new()),
        }
    }

    fn limiter(&self, level: Level, id: &str, rpm: i64) -> Arc<Limiter> {
        let k = (level, id.to_owned());
        if let Some((n, l)) = self.rpm.read().ok().and_then(|m| m.get(&k).cloned()) {
            if n == rpm {
                return l;
            }
        }
        let fresh = || {
            let per_minute =
                NonZeroU32::new(u32::try_from(rpm).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
            Arc::new(
                RateLimiter::direct(Quota::per_minute(per_minute))
                    .with_middleware::<StateInformationMiddleware>(),
            )
        };
        let mut m = self.rpm.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the write lock: two first requests racing here
        // must share one limiter, or each would get a fresh burst.
        match m.get(&k) {
            Some((n, l)) if *n == rpm => l.clone(),
            _ => {
                let l = fresh();
                m.insert(k, (rpm, l.clone()));
                l
            }
        }
    }

    /// RPM for one level: `Ok(remaining)` or a 429.
    fn check_rpm(
        &self,
        level: Level,
        id: &str,
        rpm: Option<i64>,
    ) -> Result<Option<(i64, u32)>, (i64, u64)> {
        let Some(rpm) = rpm else { return Ok(None) };
        let l = self.limiter(level, id, rpm);
        match l.check() {
            Ok(snap) => Ok(Some((rpm, snap.remaining_burst_capacity()))),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err((rpm, wait.as_secs().max(1)))
            }
        }
    }

    fn account<'a>(
        &self,
        inner: &'a mut Inner,
        level: Level,
        id: &str,
        now: i64,
    ) -> &'a mut Account {
        let acc = inner
            .accounts
            .entry((level, id.to_owned()))
            .or_insert_with(|| {
                let base = self
                    .base
                    .lock()
                    .ok()
                    .and_then(|mut b| b.remove(&(level, id.to_owned())))
                    .unwrap_or_default();
                Account::new(base, self.base_at)
            });
        acc.roll(now);
        acc
    }
}

/// What requests in flight hold, for a refusal's message (nothing if none).
fn in_flight(reserved: i64) -> String {
    if reserved > 0 {
        format!(", {} reserved by requests in flight", format_usd(reserved))
    } else {
        String::new()
    }
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

impl Counters for LocalCounters {
    fn admit<'a>(
        &'a self,
        a: Admission<'a>,
    ) -> BoxFuture<'a, Result<(Ticket, Headers), ProxyError>> {
        Box::pin(std::future::ready(self.admit_now(a)))
    }

    fn settle(&self, t: Ticket, tokens: i64, cost: i64, now: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for (level, id) in [(Level::Key, &t.key_id), (Level::Project, &t.project_id)] {
            if let Some(w) = inner.windows.get_mut(&(level, id.clone())) {
                if w.minute == t.minute {
                    w.used = w
                        .used
                        .saturating_add(tokens)
                        .saturating_sub(t.tokens)
                        .max(0);
                }
            }
        }
        for (level, id) in [
            (Level::Key, &t.key_id),
            (Level::Project, &t.project_id),
            (Level::Org, &t.org_id),
        ] {
            let acc = self.account(&mut inner, level, id, now);
            acc.reserved = acc.reserved.saturating_sub(t.cost).max(0);
            let cost = cost.max(0);
            for spent in [
                &mut acc.spend.day,
                &mut acc.spend.week,
                &mut acc.spend.month,
                &mut acc.spend.total,
            ] {
                *spent = spent.saturating_add(cost);
            }
        }
    }
}

impl LocalCounters {
    fn admit_now(&self, a: Admission<'_>) -> Result<(Ticket, Headers), ProxyError> {
        let key = &a.caller.key.key;
        let project = &a.caller.project.project;
        let org = &a.caller.org.org;
        let mut headers: Headers = Vec::new();
        let minute = a.now.div_euclid(60_000);
        let retry_tokens = ((minute + 1) * 60_000 - a.now + 999) / 1000;

        // Requests per minute: the key, then the project.
        let mut reported_rpm = false;
        for (level, id, rpm) in [
            (Level::Key, &key.id, key.limits.caps.rpm_limit),
            (Level::Project, &project.id, project.caps.rpm_limit),
        ] {
            match self.check_rpm(level, id, rpm) {
                Ok(Some((limit, remaining))) if !reported_rpm => {
                    headers.push(h("x-ratelimit-limit-requests", limit));
                    headers.push(h("x-ratelimit-remaining-requests", remaining));
                    reported_rpm = true;
                }
                Ok(_) => {}
                Err((limit, wait)) => {
                    let msg = format!(
                        "{} rate limit of {limit} requests per minute reached; retry in {wait}s",
                        label(level)
                    );
                    let mut hs = vec![
                        h("retry-after", wait),
                        h("x-ratelimit-limit-requests", limit),
                        h("x-ratelimit-remaining-requests", 0),
                    ];
                    if let Some(t) = key.limits.caps.tpm_limit.or(project.caps.tpm_limit) {
                        hs.push(h("x-ratelimit-limit-tokens", t));
                    }
                    return Err(ProxyError::rate_limited(msg, hs));
                }
            }
        }

        let mut inner = self.inner.lock().map_err(|_| {
            ProxyError::unavailable("counters", "the gateway's counters are unavailable")
        })?;
        // Tokens per minute, reserved now and settled after.
        let mut tpm_report = None;
        for (level, id, tpm) in [
            (Level::Key, &key.id, key.limits.caps.tpm_limit),
            (Level::Project, &project.id, project.caps.tpm_limit),
        ] {
            let Some(limit) = tpm else { continue };
            let w = inner
                .windows
                .entry((level, id.clone()))
                .or_insert(Window { minute, used: 0 });
            if w.minute != minute {
                *w = Window { minute, used: 0 };
            }
            if w.used.saturating_add(a.tokens) > limit {
                let remaining = limit.saturating_sub(w.used).max(0);
                let msg = format!(
                    "{} rate limit of {limit} tokens per minute reached: this request needs up to {} tokens and {remaining} remain; retry in {retry_tokens}s",
                    label(level),
                    a.tokens
                );
                let mut hs = vec![
                    h("retry-after", retry_tokens),
                    h("x-ratelimit-limit-tokens", limit),
                    h("x-ratelimit-remaining-tokens", remaining),
                ];
                hs.extend(headers.iter().cloned());
                return Err(ProxyError::rate_limited(msg, hs));
            }
            if tpm_report.is_none() {
                tpm_report = Some((limit, limit.saturating_sub(w.used).saturating_sub(a.tokens)));
            }
        }
        // Budgets: key, project, organization.
        let levels = [
            (
                Level::Key,
                &key.id,
                key.limits.caps.budget.map(Usd::micros),
                a.caller.key.reset,
            ),
            (
                Level::Project,
                &project.id,
                project.caps.budget.map(Usd::micros),
                a.caller.project.reset,
            ),
            (
                Level::Org,
                &org.id,
                org.spending.spend_cap.map(Usd::micros),
                a.caller.org.reset,
            ),
        ];
        for (level, id, limit, reset) in levels {
            let Some(limit) = limit else { continue };
            let acc = self.account(&mut inner, level, id, a.now);
            let spent = acc.spend.for_interval(reset);
            if spent.saturating_add(acc.reserved).saturating_add(a.cost) > limit {
                let what = if level == Level::Org {
                    "spend cap"
                } else {
                    "budget"
                };
                let in_flight = in_flight(acc.reserved);
                let msg = format!(
                    "{} {what} {} ({}) exhausted: spent {}{in_flight}; this request may cost up to {}",
                    label(level),
                    format_usd(limit),
                    reset.as_str(),
                    format_usd(spent),
                    format_usd(a.cost),
                );
                let code = match level {
                    Level::Key => "key_budget_exceeded",
                    Level::Project => "project_budget_exceeded",
                    Level::Org => "org_spend_cap_exceeded",
                };
                return Err(ProxyError::budget(code, msg));
            }
        }
        // The prepaid credit balance: credits minus everything metered and
        // what requests in flight have reserved.
        if org.prepaid {
            let acc = self.account(&mut inner, Level::Org, &org.id, a.now);
            let balance = org.credits_micros.saturating_sub(acc.spend.total);
            let left = balance.saturating_sub(acc.reserved);
            if left <= 0 || a.cost > left {
                let in_flight = in_flight(acc.reserved);
                return Err(ProxyError::budget(
                    "org_credits_exhausted",
                    format!(
                        "organization credit balance exhausted: {} left of {} in credits{in_flight}; this request may cost up to {}",
                        format_usd(balance),
                        format_usd(org.credits_micros),
                        format_usd(a.cost),
                    ),
                ));
            }
        }
        // Admitted: reserve everywhere at once.
        for (level, id, tpm) in [
            (Level::Key, &key.id, key.limits.caps.tpm_limit),
            (Level::Project, &project.id, project.caps.tpm_limit),
        ] {
            if tpm.is_some() {
                if let Some(w) = inner.windows.get_mut(&(level, id.clone())) {
                    w.used = w.used.saturating_add(a.tokens);
                }
            }
        }
        for (level, id, _, _) in levels {
            let acc = self.account(&mut inner, level, id, a.now);
            acc.reserved = acc.reserved.saturating_add(a.cost);
        }
        drop(inner);
        if let Some((limit, remaining)) = tpm_report {
            headers.push(h("x-ratelimit-limit-tokens", limit));
            headers.push(h("x-ratelimit-remaining-tokens", remaining.max(0)));
        }
        Ok((
            Ticket {
                key_id: key.id.clone(),
                project_id: project.id.clone(),
                org_id: org.id.clone(),
                tokens: a.tokens,
                cost: a.cost,
                minute,
            },
            headers,
        ))
    }
}
