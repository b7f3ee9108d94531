//! The in-process counters: exact for one instance, and the fallback of a
//! shared backend that is unreachable (then each instance admits its share).

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

use super::{
    budget_refused, credits_refused, rate_headers, rpm_refused, tpm_refused, Admission,
    CounterStatus, Counters, Headers, Limits, Ticket,
};
use crate::proxy::error::ProxyError;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
/// A GCRA limiter per key or project, with the RPM it was made for.
type Limiters = HashMap<(Level, String), (i64, Arc<Limiter>)>;

/// Spend per calendar period of one key, project or organization, and what
/// requests in flight have reserved.
struct Account {
    /// Everything spent this period, the ledger's part included.
    spend: Spend,
    /// What this process metered itself since it started counting.
    own: Spend,
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
            own: Spend::default(),
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
            (self.spend.day, self.own.day) = (0, 0);
            self.day_end = end(ResetInterval::Daily);
        }
        if now >= self.week_end {
            (self.spend.week, self.own.week) = (0, 0);
            self.week_end = end(ResetInterval::Weekly);
        }
        if now >= self.month_end {
            (self.spend.month, self.own.month) = (0, 0);
            self.month_end = end(ResetInterval::Monthly);
        }
    }

    /// Whether `cost` more passes `limit` when this process may use only
    /// `1/share` of what the ledger left: what it metered, holds and asks
    /// for counts `share` times. With a share of 1 this is plain
    /// `spent + reserved + cost > limit`.
    fn passes(&self, spent: i64, own: i64, cost: i64, limit: i64, share: i64) -> bool {
        let before = spent.saturating_sub(own);
        let mine = own.saturating_add(self.reserved).saturating_add(cost);
        before.saturating_add(mine.saturating_mul(share)) > limit
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

/// The in-process counters.
pub struct LocalCounters {
    inner: Mutex<Inner>,
    /// Spend from the ledger at start, taken when an account is first used.
    base: Mutex<HashMap<(Level, String), Spend>>,
    base_at: i64,
    rpm: RwLock<Limiters>,
    /// How many instances share the limits (1: this one holds them whole).
    share: i64,
}

impl LocalCounters {
    pub fn new(base: HashMap<(Level, String), Spend>, base_at: i64) -> LocalCounters {
        LocalCounters::with_share(base, base_at, 1)
    }

    /// Counters that admit `1/share` of every rate and of what remains of
    /// every budget after `base`.
    pub fn with_share(
        base: HashMap<(Level, String), Spend>,
        base_at: i64,
        share: u32,
    ) -> LocalCounters {
        LocalCounters {
            inner: Mutex::new(Inner::default()),
            base: Mutex::new(base),
            base_at,
            rpm: RwLock::new(HashMap::new()),
            share: i64::from(share.max(1)),
        }
    }

    /// This instance's part of a rate limit.
    fn part(&self, limit: i64) -> i64 {
        limit / self.share
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
    ) -> Result<Option<(i64, i64)>, (i64, u64)> {
        let Some(rpm) = rpm else { return Ok(None) };
        let l = self.limiter(level, id, self.part(rpm));
        match l.check() {
            Ok(snap) => Ok(Some((rpm, i64::from(snap.remaining_burst_capacity())))),
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
        let cost = cost.max(0);
        for (level, id) in [
            (Level::Key, &t.key_id),
            (Level::Project, &t.project_id),
            (Level::Org, &t.org_id),
        ] {
            let acc = self.account(&mut inner, level, id, now);
            acc.reserved = acc.reserved.saturating_sub(t.cost).max(0);
            for s in [&mut acc.spend, &mut acc.own] {
                for spent in [&mut s.day, &mut s.week, &mut s.month, &mut s.total] {
                    *spent = spent.saturating_add(cost);
                }
            }
        }
    }

    fn status(&self) -> CounterStatus {
        CounterStatus {
            backend: "local",
            state: "ok",
            instances: 1,
            admitting: true,
        }
    }
}

impl LocalCounters {
    pub(super) fn admit_now(&self, a: Admission<'_>) -> Result<(Ticket, Headers), ProxyError> {
        let key_id = a.caller.key.id.to_string();
        let key = &key_id;
        let project = &a.caller.project.project;
        let org = &a.caller.org.org;
        let limits = Limits::of(a.caller);
        let minute = a.now.div_euclid(60_000);

        // Requests per minute: the key, then the project.
        let mut rpm_report = None;
        for (level, id, rpm) in [
            (Level::Key, key, limits.key_rpm),
            (Level::Project, &project.id, limits.project_rpm),
        ] {
            match self.check_rpm(level, id, rpm) {
                Ok(Some(report)) => {
                    rpm_report.get_or_insert(report);
                }
                Ok(None) => {}
                Err((limit, wait)) => {
                    return Err(rpm_refused(
                        level,
                        limit,
                        wait,
                        limits.key_tpm.or(limits.project_tpm),
                    ));
                }
            }
        }

        let mut inner = self.inner.lock().map_err(|_| {
            ProxyError::unavailable("counters", "the gateway's counters are unavailable")
        })?;
        // Tokens per minute, reserved now and settled after.
        let mut tpm_report = None;
        for (level, id, tpm) in [
            (Level::Key, key, limits.key_tpm),
            (Level::Project, &project.id, limits.project_tpm),
        ] {
            let Some(limit) = tpm else { continue };
            let part = self.part(limit);
            let w = inner
                .windows
                .entry((level, id.clone()))
                .or_insert(Window { minute, used: 0 });
            if w.minute != minute {
                *w = Window { minute, used: 0 };
            }
            if w.used.saturating_add(a.tokens) > part {
                let remaining = part.saturating_sub(w.used).max(0);
                return Err(tpm_refused(
                    level, limit, remaining, a.tokens, a.now, rpm_report,
                ));
            }
            tpm_report.get_or_insert((limit, part.saturating_sub(w.used).saturating_sub(a.tokens)));
        }
        // Budgets: key, project, organization.
        let ids = [key, &project.id, &org.id];
        for ((level, limit, reset), id) in limits.budgets.iter().zip(ids) {
            let Some(limit) = *limit else { continue };
            let share = self.share;
            let acc = self.account(&mut inner, *level, id, a.now);
            let spent = acc.spend.for_interval(*reset);
            if acc.passes(spent, acc.own.for_interval(*reset), a.cost, limit, share) {
                return Err(budget_refused(
                    *level,
                    limit,
                    *reset,
                    spent,
                    acc.reserved,
                    a.cost,
                ));
            }
        }
        // The prepaid credit balance: credits minus everything metered and
        // what requests in flight have reserved.
        if let Some(credits) = limits.credits {
            let share = self.share;
            let acc = self.account(&mut inner, Level::Org, &org.id, a.now);
            let balance = credits.saturating_sub(acc.spend.total);
            let left = balance.saturating_sub(acc.reserved);
            if left <= 0 || acc.passes(acc.spend.total, acc.own.total, a.cost, credits, share) {
                return Err(credits_refused(balance, credits, acc.reserved, a.cost));
            }
        }
        // Admitted: reserve everywhere at once.
        for (level, id, tpm) in [
            (Level::Key, key, limits.key_tpm),
            (Level::Project, &project.id, limits.project_tpm),
        ] {
            if tpm.is_some() {
                if let Some(w) = inner.windows.get_mut(&(level, id.clone())) {
                    w.used = w.used.saturating_add(a.tokens);
                }
            }
        }
        for ((level, _, _), id) in limits.budgets.iter().zip(ids) {
            let acc = self.account(&mut inner, *level, id, a.now);
            acc.reserved = acc.reserved.saturating_add(a.cost);
        }
        drop(inner);
        Ok((
            Ticket::new(a.caller, a.tokens, a.cost, a.now),
            rate_headers(rpm_report, tpm_report),
        ))
    }
}
