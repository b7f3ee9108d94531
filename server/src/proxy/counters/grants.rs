//! What this instance holds of the shared counters: per key, permits (RPM),
//! tokens (TPM, for one minute) and money (micro-USD at key, project and
//! organization at once) that Redis granted it, so that most requests are
//! admitted from memory and Redis is asked only for the next chunk.
//!
//! Redis counts a grant's money as reserved (the lease) until this instance
//! flushes: then what was spent moves to spend, and what an idle grant did
//! not use goes back. So at every moment, across instances, settled spend +
//! leases ≤ limit, the same invariant as one reservation per request.

use std::collections::{BTreeMap, HashMap};
use tollgate_app::core::limits::ResetInterval;

/// The limits a grant was given under: when the caller's change (a budget
/// lowered, a limit set), the grant is given back and asked for again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub rpm: [Option<i64>; 2],
    pub tpm: [Option<i64>; 2],
    pub budgets: [Option<i64>; 3],
    pub resets: [ResetInterval; 3],
    pub credits: Option<i64>,
}

impl Terms {
    /// Whether requests reserve money (a budget or prepaid credits).
    pub fn money(&self) -> bool {
        self.budgets.iter().any(Option::is_some) || self.credits.is_some()
    }
}

/// One request's needs.
pub struct Need {
    pub tokens: i64,
    pub cost: i64,
    pub minute: i64,
}

/// What Redis granted on a request's behalf (the request's need included).
pub struct Granted {
    pub permits: [i64; 2],
    pub tokens: [i64; 2],
    pub money: i64,
    /// Redis's own remaining requests and tokens after the grant, for the
    /// rate-limit headers.
    pub rpm_left: i64,
    pub tpm_left: i64,
}

/// Spend, settled here, that Redis has not counted yet: by the day the
/// request was admitted in (weeks and months start on days).
pub type Days = BTreeMap<i64, i64>;

#[derive(Debug)]
pub struct Grant {
    /// Tickets admitted from this grant carry it; a ticket whose grant is
    /// gone settles on its own.
    pub gen: u64,
    pub lease: String,
    pub project_id: String,
    pub org_id: String,
    pub terms: Terms,
    pub minute: i64,
    pub permits: [i64; 2],
    pub tokens: [i64; 2],
    /// Money granted and free (negative after a request cost more than it
    /// reserved: the next grant fills it first).
    pub money: i64,
    /// Money reserved by requests in flight.
    pub held: i64,
    /// What Redis holds as this grant's lease (money + held + unflushed,
    /// and what is being flushed).
    pub leased: i64,
    pub unflushed: Days,
    pub used_at: i64,
    pub settled_at: i64,
    pub renewed_at: i64,
    pub rpm_left: i64,
    pub tpm_left: i64,
    /// The last message's number: Redis applies each number once, in order.
    pub seq: u64,
    /// A message sent and not acknowledged: sent again, as is, until it is.
    pub sending: Option<Flush>,
    /// The last message: the grant is forgotten once it is applied.
    pub closing: bool,
}

/// One message to Redis for a grant (or a settlement without one).
#[derive(Clone, Debug)]
pub struct Flush {
    /// Applied once: by `seq` for a lease's own messages, else by this id.
    pub id: String,
    pub seq: u64,
    pub key_id: String,
    pub project_id: String,
    pub org_id: String,
    /// The lease to reduce (none: spend only).
    pub lease: Option<String>,
    pub days: Vec<(i64, i64)>,
    /// Free money given back.
    pub returned: i64,
    /// The most the lease keeps afterwards (what requests in flight
    /// hold), whatever Redis holds of it.
    pub trim_to: Option<i64>,
    /// Spend of grants Redis lost: skipped when the rebuild's ledger read
    /// already holds it.
    pub after_loss: bool,
    /// The latest settlement in it.
    pub settled_at: i64,
}

impl Flush {
    pub fn spent(&self) -> i64 {
        self.days
            .iter()
            .fold(0_i64, |s, (_, v)| s.saturating_add(*v))
    }

    /// A settlement of its own (its grant is gone): the spend, and what
    /// the request reserved beyond it back to the lease it names.
    #[expect(clippy::too_many_arguments, reason = "one settlement's parts")]
    pub fn alone(
        key_id: String,
        project_id: String,
        org_id: String,
        lease: Option<String>,
        day: i64,
        spent: i64,
        returned: i64,
        settled_at: i64,
    ) -> Flush {
        Flush {
            id: new_id(),
            seq: 0,
            key_id,
            project_id,
            org_id,
            returned: if lease.is_some() { returned.max(0) } else { 0 },
            lease,
            days: if spent > 0 {
                vec![(day, spent)]
            } else {
                Vec::new()
            },
            trim_to: None,
            after_loss: false,
            settled_at,
        }
    }
}

/// How long a grant may sit unused before its free money goes back.
pub const IDLE_MS: i64 = 1_000;

#[derive(Default)]
pub struct Grants {
    by_key: HashMap<String, Grant>,
    next_gen: u64,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Grant {
    fn covers(&self, terms: &Terms, need: &Need) -> bool {
        let rpm = (0..2).all(|i| terms.rpm[i].is_none() || self.permits[i] >= 1);
        let tpm = (0..2).all(|i| terms.tpm[i].is_none() || self.tokens[i] >= need.tokens);
        rpm && tpm && (!terms.money() || self.money >= need.cost)
    }

    fn take(&mut self, terms: &Terms, need: &Need, now: i64) {
        for i in 0..2 {
            if terms.rpm[i].is_some() {
                self.permits[i] = self.permits[i].saturating_sub(1);
                self.rpm_left = self.rpm_left.saturating_sub(1);
            }
            if terms.tpm[i].is_some() {
                self.tokens[i] = self.tokens[i].saturating_sub(need.tokens);
            }
        }
        if terms.money() {
            self.money = self.money.saturating_sub(need.cost);
            self.held = self.held.saturating_add(need.cost);
        }
        self.used_at = now;
    }

    /// The headers' figures: Redis's remaining at the last grant plus what
    /// this grant still holds.
    pub fn left(&self) -> (i64, i64) {
        (
            self.rpm_left
                .saturating_add(self.permits[0].max(self.permits[1])),
            self.tpm_left
                .saturating_add(self.tokens[0].max(self.tokens[1])),
        )
    }

    /// The next message: the spend since the last, `returned` of the free
    /// money, and the lease trimmed to `trim_to`.
    fn message(&mut self, key_id: &str, returned: i64, trim_to: Option<i64>) -> Flush {
        self.seq += 1;
        self.money = self.money.saturating_sub(returned);
        Flush {
            id: new_id(),
            seq: self.seq,
            key_id: key_id.to_owned(),
            project_id: self.project_id.clone(),
            org_id: self.org_id.clone(),
            lease: Some(self.lease.clone()),
            days: std::mem::take(&mut self.unflushed).into_iter().collect(),
            returned,
            trim_to,
            after_loss: false,
            settled_at: self.settled_at,
        }
    }
}

impl Grants {
    /// Admits from what this instance holds, if it holds enough under the
    /// same terms and its lease was renewed within `fresh_ms`; returns the
    /// grant's generation and lease.
    pub fn admit(
        &mut self,
        key_id: &str,
        terms: &Terms,
        need: &Need,
        now: i64,
        fresh_ms: i64,
    ) -> Option<(u64, String, (i64, i64))> {
        let g = self.by_key.get_mut(key_id)?;
        if g.terms != *terms || g.closing || now.saturating_sub(g.renewed_at) >= fresh_ms {
            return None;
        }
        if g.minute != need.minute {
            (g.minute, g.tokens) = (need.minute, [0, 0]);
        }
        if !g.covers(terms, need) {
            return None;
        }
        g.take(terms, need, now);
        Some((g.gen, g.lease.clone(), g.left()))
    }

    /// The lease to ask Redis to grow for `key_id`, and what must be
    /// given back first (a grant under other terms, or one not renewed
    /// within `fresh_ms`). A grant that holds nothing yet is made at once,
    /// so that requests asking together grow one lease.
    ///
    /// Only a lease renewed within `fresh_ms` (half its life) grows: it
    /// cannot have lapsed in Redis, so every grant Redis makes adds to
    /// what the lease holds, in whatever order the answers are read.
    #[expect(clippy::too_many_arguments, reason = "one lease's parts")]
    pub fn lease_for(
        &mut self,
        key_id: &str,
        project_id: &str,
        org_id: &str,
        terms: &Terms,
        minute: i64,
        now: i64,
        fresh_ms: i64,
    ) -> (String, Vec<Flush>) {
        let old = match self.by_key.get(key_id) {
            Some(g)
                if g.terms == *terms
                    && !g.closing
                    && now.saturating_sub(g.renewed_at) < fresh_ms =>
            {
                return (g.lease.clone(), Vec::new())
            }
            Some(_) => self.forget(key_id),
            None => Vec::new(),
        };
        let lease = new_id();
        self.next_gen += 1;
        self.by_key.insert(
            key_id.to_owned(),
            Grant {
                gen: self.next_gen,
                lease: lease.clone(),
                project_id: project_id.to_owned(),
                org_id: org_id.to_owned(),
                terms: terms.clone(),
                minute,
                permits: [0, 0],
                tokens: [0, 0],
                money: 0,
                held: 0,
                leased: 0,
                unflushed: Days::new(),
                used_at: now,
                settled_at: 0,
                renewed_at: now,
                rpm_left: 0,
                tpm_left: 0,
                seq: 0,
                sending: None,
                closing: false,
            },
        );
        (lease, old)
    }

    /// Records what Redis granted for `lease` and admits the request from
    /// it; returns the generation. `None`: the grant was given back
    /// meanwhile. Requests that asked together may be answered in any
    /// order: each answer only adds (see [`Grants::lease_for`]).
    pub fn granted(
        &mut self,
        key_id: &str,
        lease: &str,
        terms: &Terms,
        need: &Need,
        g: &Granted,
        now: i64,
    ) -> Option<(u64, (i64, i64))> {
        let grant = match self.by_key.get_mut(key_id) {
            Some(g) if g.lease == lease && !g.closing => g,
            _ => return None,
        };
        if grant.minute != need.minute {
            (grant.minute, grant.tokens) = (need.minute, [0, 0]);
        }
        for i in 0..2 {
            grant.permits[i] = grant.permits[i].saturating_add(g.permits[i]);
            grant.tokens[i] = grant.tokens[i].saturating_add(g.tokens[i]);
        }
        grant.money = grant.money.saturating_add(g.money);
        grant.leased = grant.leased.saturating_add(g.money);
        (grant.rpm_left, grant.tpm_left) = (g.rpm_left, g.tpm_left);
        grant.renewed_at = now;
        grant.take(terms, need, now);
        Some((grant.gen, grant.left()))
    }

    /// A request admitted from grant `gen` ended: its unused tokens and
    /// money go back to the grant, its cost waits for the next flush.
    /// `Err(())`: the grant is gone; count the spend on its own.
    pub fn settle(
        &mut self,
        key_id: &str,
        gen: u64,
        minute: i64,
        reserved: (i64, i64),
        used: (i64, i64),
        now: i64,
    ) -> Result<(), ()> {
        let Some(g) = self.by_key.get_mut(key_id).filter(|g| g.gen == gen) else {
            return Err(());
        };
        if g.minute == minute {
            for i in 0..2 {
                if g.terms.tpm[i].is_some() {
                    g.tokens[i] = g.tokens[i].saturating_add(reserved.0.saturating_sub(used.0));
                }
            }
        }
        if g.terms.money() {
            g.held = g.held.saturating_sub(reserved.1).max(0);
            g.money = g.money.saturating_add(reserved.1.saturating_sub(used.1));
        }
        if used.1 > 0 {
            let day = minute.div_euclid(1_440);
            let v = g.unflushed.entry(day).or_insert(0);
            *v = v.saturating_add(used.1);
        }
        g.settled_at = now;
        Ok(())
    }

    /// The messages due now: each grant's spend since its last message, a
    /// lease renewal every `renew_ms`, and for a grant idle a second its
    /// free money — all of its lease once nothing is in flight, after which
    /// it is forgotten. A message not yet acknowledged is sent again.
    ///
    /// A lease that reserves money is given back even when this instance
    /// counts nothing in it: a request dropped while Redis granted it (its
    /// client left) never read what Redis added, which stays leased until
    /// the lease expires unless it is trimmed here.
    pub fn due(&mut self, now: i64, renew_ms: i64) -> Vec<Flush> {
        let mut out = Vec::new();
        self.by_key.retain(|key_id, g| {
            if let Some(f) = &g.sending {
                out.push(f.clone());
                return true;
            }
            let idle = now.saturating_sub(g.used_at) >= IDLE_MS;
            if idle && g.held == 0 {
                if !g.terms.money() && g.leased == 0 && g.unflushed.is_empty() {
                    return false;
                }
                let f = g.message(key_id, g.money.max(0), Some(0));
                g.closing = true;
                g.sending = Some(f.clone());
                out.push(f);
                return true;
            }
            let renew = g.leased > 0 && now.saturating_sub(g.renewed_at) >= renew_ms;
            let give = if idle { g.money.max(0) } else { 0 };
            if g.unflushed.is_empty() && give == 0 && !renew {
                return true;
            }
            let f = g.message(key_id, give, None);
            g.sending = Some(f.clone());
            out.push(f);
            true
        });
        out
    }

    /// Redis applied `f`: the lease is smaller by what it moved.
    pub fn flushed(&mut self, f: &Flush, now: i64) {
        let Some(g) = self.by_key.get_mut(&f.key_id) else {
            return;
        };
        if g.sending.as_ref().is_some_and(|s| s.id == f.id) {
            g.sending = None;
            let mut leased = g
                .leased
                .saturating_sub(f.spent())
                .saturating_sub(f.returned)
                .max(0);
            if let Some(t) = f.trim_to {
                leased = leased.min(t);
            }
            g.leased = leased;
            g.renewed_at = now;
            if g.closing {
                self.by_key.remove(&f.key_id);
            }
        }
    }

    /// Drops `key_id`'s grant; what it held, as messages giving it back:
    /// the one being sent (again, as is: applied once), then the spend
    /// since and the free money, the lease trimmed to what requests in
    /// flight hold (they give it back as they settle: their tickets name
    /// the lease).
    pub fn forget(&mut self, key_id: &str) -> Vec<Flush> {
        let Some(mut g) = self.by_key.remove(key_id) else {
            return Vec::new();
        };
        let mut out: Vec<Flush> = g.sending.take().into_iter().collect();
        let held = g.held;
        out.push(g.message(key_id, g.money.max(0), Some(held)));
        out
    }

    /// [`Grants::forget`], only if the grant still has `lease`.
    pub fn forget_lease(&mut self, key_id: &str, lease: &str) -> Vec<Flush> {
        if self.by_key.get(key_id).is_some_and(|g| g.lease == lease) {
            self.forget(key_id)
        } else {
            Vec::new()
        }
    }

    /// Drops every grant (Redis lost them and their leases): their spend
    /// not yet counted, as messages counting spend only.
    pub fn forget_all(&mut self) -> Vec<Flush> {
        self.drop_all()
            .into_iter()
            .map(|mut f| {
                (f.lease, f.seq, f.returned, f.trim_to, f.after_loss) = (None, 0, 0, None, true);
                f
            })
            .filter(|f| !f.days.is_empty())
            .collect()
    }

    /// Drops every grant, each given back as [`Grants::forget`] does.
    pub fn drop_all(&mut self) -> Vec<Flush> {
        let keys: Vec<String> = self.by_key.keys().cloned().collect();
        keys.iter().flat_map(|k| self.forget(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(budget: Option<i64>) -> Terms {
        Terms {
            rpm: [Some(600), None],
            tpm: [None, Some(10_000)],
            budgets: [budget, None, None],
            resets: [ResetInterval::Never; 3],
            credits: None,
        }
    }

    fn need(cost: i64) -> Need {
        Need {
            tokens: 100,
            cost,
            minute: 10,
        }
    }

    const FRESH: i64 = 60_000;

    fn grant(g: &mut Grants, t: &Terms, money: i64, now: i64) -> (String, u64) {
        let (lease, back) = g.lease_for("k", "p", "o", t, 10, now, FRESH);
        assert!(back.is_empty());
        let granted = Granted {
            permits: [3, 0],
            tokens: [0, 300],
            money,
            rpm_left: 50,
            tpm_left: 900,
        };
        let (gen, _) = g.granted("k", &lease, t, &need(40), &granted, now).unwrap();
        (lease, gen)
    }

    #[test]
    fn a_grant_admits_until_any_of_its_parts_runs_out() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        grant(&mut g, &t, 100, 0);
        // The grant took the first request's 40 of 100, 1 of 3 permits and
        // 100 of 300 tokens: two more fit, then the permits are gone.
        assert!(g.admit("k", &t, &need(30), 1, FRESH).is_some());
        assert!(g.admit("k", &t, &need(30), 2, FRESH).is_some());
        assert!(
            g.admit("k", &t, &need(0), 3, FRESH).is_none(),
            "no permit left"
        );
        // Other terms (a budget lowered): not admitted from this grant.
        assert!(g
            .admit("k", &terms(Some(500)), &need(0), 3, FRESH)
            .is_none());
    }

    #[test]
    fn a_grant_not_renewed_lately_admits_nothing() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        grant(&mut g, &t, 100, 0);
        assert!(g.admit("k", &t, &need(1), FRESH, FRESH).is_none());
    }

    #[test]
    fn settling_returns_the_unused_part_and_flushing_moves_spend_out_of_the_lease() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        let (lease, gen) = grant(&mut g, &t, 100, 0);
        g.settle("k", gen, 10, (100, 40), (60, 15), 5).unwrap();
        let due = g.due(6, 60_000);
        assert_eq!(due.len(), 1);
        let f = &due[0];
        assert_eq!(f.lease.as_deref(), Some(lease.as_str()));
        assert_eq!((f.spent(), f.returned, f.trim_to, f.seq), (15, 0, None, 1));
        assert_eq!(f.days, vec![(0, 15)]);
        // Not acknowledged: the same message again, not a second one.
        assert_eq!(g.due(7, 60_000)[0].id, f.id);
        g.flushed(f, 8);
        // Idle past IDLE_MS with nothing in flight: the free 85 and the
        // whole lease go back, and once applied the grant is forgotten.
        let idle = g.due(IDLE_MS + 10, 60_000);
        assert_eq!(
            (
                idle[0].spent(),
                idle[0].returned,
                idle[0].trim_to,
                idle[0].seq
            ),
            (0, 85, Some(0), 2)
        );
        g.flushed(&idle[0], IDLE_MS + 11);
        assert!(g.due(IDLE_MS + 20, 60_000).is_empty());
        assert!(g.admit("k", &t, &need(1), IDLE_MS + 21, FRESH).is_none());
    }

    #[test]
    fn a_forgotten_grant_keeps_only_what_is_in_flight() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        let (lease, gen) = grant(&mut g, &t, 100, 0);
        let back = g.forget("k");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].lease.as_deref(), Some(lease.as_str()));
        // 60 free goes back; the lease keeps the 40 the request holds.
        assert_eq!((back[0].returned, back[0].trim_to), (60, Some(40)));
        assert!(g.settle("k", gen, 10, (100, 40), (50, 10), 1).is_err());
        // Redis lost everything: spend only, no lease named.
        let (_, gen) = grant(&mut g, &t, 100, 2);
        g.settle("k", gen, 10, (100, 40), (50, 10), 3).unwrap();
        let lost = g.forget_all();
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].lease.as_ref(), lost[0].spent()), (None, 10));
        assert!(lost[0].after_loss);
    }

    #[test]
    fn a_lease_not_renewed_lately_is_given_back_not_grown() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        let (lease, gen) = grant(&mut g, &t, 100, 0);
        // Renewed within half its life: requests asking together grow it.
        let (same, back) = g.lease_for("k", "p", "o", &t, 10, FRESH - 1, FRESH);
        assert_eq!((same.as_str(), back.len()), (lease.as_str(), 0));
        // Older: it may have lapsed in Redis, so it is given back (all but
        // what the request in flight holds) and a new lease is asked for.
        let (new, back) = g.lease_for("k", "p", "o", &t, 10, FRESH, FRESH);
        assert_ne!(new, lease);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].lease.as_deref(), Some(lease.as_str()));
        assert_eq!((back[0].returned, back[0].trim_to), (60, Some(40)));
        assert!(g.settle("k", gen, 10, (100, 40), (50, 10), FRESH).is_err());
    }

    /// What Redis's lease holds after it applies `f` to `held` (the
    /// arithmetic of the FLUSH script).
    fn applied(held: i64, f: &Flush) -> i64 {
        let left = (held - f.spent() - f.returned).max(0);
        f.trim_to.map_or(left, |t| left.min(t))
    }

    /// Sends every due message at `now` to a lease holding `redis`, as the
    /// flush task does; returns what the lease holds afterwards.
    fn tick(g: &mut Grants, redis: i64, now: i64) -> i64 {
        let mut redis = redis;
        for f in g.due(now, 60_000) {
            redis = applied(redis, &f);
            g.flushed(&f, now);
        }
        redis
    }

    #[test]
    fn grants_answered_out_of_order_give_the_whole_lease_back() {
        let mut g = Grants::default();
        let t = terms(Some(100_000));
        // Two requests find nothing free and ask Redis together, for one
        // lease. Redis runs A's script first (the lease held nothing: A
        // gets 100), then B's (it held 100: B gets 200); B's answer is
        // read first (both are woken at once, and a worker runs the task
        // it woke last first).
        let (lease, _) = g.lease_for("k", "p", "o", &t, 10, 0, FRESH);
        assert_eq!(g.lease_for("k", "p", "o", &t, 10, 0, FRESH).0, lease);
        let mut redis = 300;
        let more = |money| Granted {
            permits: [3, 0],
            tokens: [0, 300],
            money,
            rpm_left: 50,
            tpm_left: 900,
        };
        let (b, _) = g
            .granted("k", &lease, &t, &need(40), &more(200), 1)
            .unwrap();
        let (a, _) = g
            .granted("k", &lease, &t, &need(40), &more(100), 1)
            .unwrap();
        let leased = |g: &Grants| g.by_key.get("k").map_or(0, |g| g.leased);
        assert_eq!(leased(&g), redis, "the grant counts all Redis leased");
        // Both spend all they reserved, and so does a third request
        // admitted from what the grant holds.
        g.settle("k", a, 10, (100, 40), (100, 40), 2).unwrap();
        g.settle("k", b, 10, (100, 40), (100, 40), 2).unwrap();
        redis = tick(&mut g, redis, 3);
        let (c, _, _) = g.admit("k", &t, &need(40), 4, FRESH).unwrap();
        g.settle("k", c, 10, (100, 40), (100, 40), 5).unwrap();
        redis = tick(&mut g, redis, 6);
        assert_eq!(redis, 300 - 120, "the spend left the lease");
        assert_eq!(leased(&g), redis);
        // Idle with nothing in flight: everything the lease holds in
        // Redis goes back (the instance's share must not stay held).
        redis = tick(&mut g, redis, IDLE_MS + 10);
        assert!(g.due(IDLE_MS + 20, 60_000).is_empty(), "forgotten");
        assert_eq!(redis, 0, "Redis still holds part of the lease");
    }

    #[test]
    fn a_grant_whose_answer_was_never_read_still_gives_its_lease_back() {
        let mut g = Grants::default();
        let t = terms(Some(1_000));
        // A request asked Redis to grow the lease and was dropped (its
        // client left) before it read the answer: Redis may hold money
        // for the lease that this instance never saw.
        let (lease, _) = g.lease_for("k", "p", "o", &t, 10, 0, FRESH);
        let idle = g.due(IDLE_MS + 10, 60_000);
        assert_eq!(idle.len(), 1, "the lease is given back all the same");
        assert_eq!(
            (idle[0].lease.as_deref(), idle[0].trim_to),
            (Some(lease.as_str()), Some(0))
        );
        g.flushed(&idle[0], IDLE_MS + 11);
        assert!(g.due(IDLE_MS + 20, 60_000).is_empty(), "forgotten");
    }
}
