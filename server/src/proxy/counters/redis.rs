//! Counters shared by every instance, in Redis.
//!
//! One Lua script per admission checks RPM (GCRA on Redis's clock), TPM,
//! the budgets of key, project and organization and the prepaid balance,
//! and reserves at all of them or refuses without changing any: Redis runs
//! a script alone, so two instances cannot both take the last dollar. A
//! reservation is a lease: settling swaps it for the actual; one whose
//! settlement never arrives (the instance died) expires after
//! `reservation_ttl_ms`.
//!
//! Spend is rebuilt from the ledger when Redis restarts or loses the keys
//! (the `epoch` key is gone). When Redis is unreachable requests are
//! refused with a 503 naming it, or, with `redis_fail_open`, admitted by an
//! in-process fallback holding this instance's share of what remained.
//!
//! Keys (all under the configured prefix): `epoch`; `rpm:{k|p}:{id}` (the
//! GCRA's theoretical arrival time); `tpm:{k|p}:{id}:{minute}`;
//! `acct:{k|p|o}:{id}` (a hash: spend this day `d`, week `w`, month `m`,
//! ever `t`, the periods' ends `de` `we` `me`, reserved `r`);
//! `lease:{k|p|o}:{id}` (reservations by deadline); `instances`; `rebuild`.

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;
use tollgate_app::core::db::Db;
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::usage::{self, Level};

use super::{
    bounded, budget_refused, credits_refused, h, rate_headers, rpm_refused, tpm_refused, Admission,
    CounterStatus, Counters, Headers, Limits, LocalCounters, Ticket,
};
use crate::metrics::Metrics;
use crate::proxy::error::ProxyError;

/// How the shared counters are reached and behave.
#[derive(Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Every key starts with this and a colon (several deployments, or
    /// tests, may share one Redis).
    pub prefix: String,
    /// One command's bound, connecting included.
    pub timeout: Duration,
    /// Admit from this instance's share when Redis is unreachable.
    pub fail_open: bool,
    /// How long a reservation holds without its settlement.
    pub reservation_ttl: Duration,
    /// How long a rebuild waits for every instance's ledger to write what
    /// it metered before Redis lost the counters.
    pub ledger_flush: Duration,
}

/// Rolls an account's periods forward and expires its lapsed leases.
const PRELUDE: &str = r#"
local function num(v) return tonumber(v) or 0 end
local function int(x) return string.format('%d', x) end
local function roll(acct, de, we, me)
  local cur = redis.call('HMGET', acct, 'de', 'we', 'me')
  local ends = {{'d', de}, {'w', we}, {'m', me}}
  for j = 1, 3 do
    if num(cur[j]) < tonumber(ends[j][2]) then
      redis.call('HSET', acct, ends[j][1], 0, ends[j][1] .. 'e', ends[j][2])
    end
  end
end
local function expire(acct, lease, now)
  local old = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
  if #old > 0 then
    local sum = 0
    for _, m in ipairs(old) do sum = sum + num(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
    redis.call('HSET', acct, 'r', int(math.max(num(redis.call('HGET', acct, 'r')) - sum, 0)))
  end
end
"#;

/// KEYS: epoch, rpm k, rpm p, tpm k, tpm p, acct k, acct p, acct o,
/// lease k, lease p, lease o.
/// ARGV: rpm k, rpm p, tpm k, tpm p, tokens, cost, budget k, budget p,
/// budget o, field k, field p, field o, day end, week end, month end,
/// credits (-1: not prepaid), ticket, lease ms. A limit of -1 is none.
const ADMIT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {5} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tats, rpm, tpm = {}, {-1, -1}, {-1, -1}
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local step = 60000 / math.max(limit, 1)
    local tat = math.max(tonumber(redis.call('GET', KEYS[1 + i])) or now, now)
    local new = tat + step
    if new - 60000 > now then return {1, i, limit, math.ceil(new - 60000 - now)} end
    tats[i] = new
    if rpm[1] < 0 then rpm = {limit, math.floor((now + 60000 - new) / step)} end
  end
end
local tokens, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 1, 2 do
  local limit = tonumber(ARGV[2 + i])
  if limit >= 0 then
    local used = num(redis.call('GET', KEYS[3 + i]))
    if used + tokens > limit then return {2, i, limit, math.max(limit - used, 0)} end
    if tpm[1] < 0 then tpm = {limit, limit - used - tokens} end
  end
end
for i = 1, 3 do
  roll(KEYS[5 + i], ARGV[13], ARGV[14], ARGV[15])
  expire(KEYS[5 + i], KEYS[8 + i], now)
  local limit = tonumber(ARGV[6 + i])
  if limit >= 0 then
    local v = redis.call('HMGET', KEYS[5 + i], ARGV[9 + i], 'r')
    if num(v[1]) + num(v[2]) + cost > limit then return {3, i, limit, num(v[1]), num(v[2])} end
  end
end
local credits = tonumber(ARGV[16])
if credits >= 0 then
  local v = redis.call('HMGET', KEYS[8], 't', 'r')
  local balance = credits - num(v[1])
  local left = balance - num(v[2])
  if left <= 0 or cost > left then return {4, balance, num(v[2])} end
end
for i = 1, 2 do
  if tats[i] then
    redis.call('SET', KEYS[1 + i], tostring(tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
  end
  if tonumber(ARGV[2 + i]) >= 0 then
    redis.call('INCRBY', KEYS[3 + i], int(tokens))
    redis.call('PEXPIRE', KEYS[3 + i], 120000)
  end
end
if cost > 0 then
  local member = ARGV[17] .. ':' .. int(cost)
  for i = 1, 3 do
    redis.call('HINCRBY', KEYS[5 + i], 'r', int(cost))
    redis.call('ZADD', KEYS[8 + i], now + tonumber(ARGV[18]), member)
  end
end
return {0, rpm[1], rpm[2], tpm[1], tpm[2]}
"#;

/// KEYS: epoch, tpm k, tpm p, acct k, acct p, acct o, lease k, lease p,
/// lease o. ARGV: reserved tokens, used tokens, reserved cost, used cost,
/// day end, week end, month end, ticket. Nothing happens once the
/// counters are lost (the rebuild reads the ledger, which has it).
const SETTLE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local back = tonumber(ARGV[2]) - tonumber(ARGV[1])
for i = 1, 2 do
  if back ~= 0 and redis.call('EXISTS', KEYS[1 + i]) == 1 then
    local v = math.max(num(redis.call('GET', KEYS[1 + i])) + back, 0)
    redis.call('SET', KEYS[1 + i], int(v), 'KEEPTTL')
  end
end
local member = ARGV[8] .. ':' .. ARGV[3]
local used = tonumber(ARGV[4])
for i = 1, 3 do
  roll(KEYS[3 + i], ARGV[5], ARGV[6], ARGV[7])
  if redis.call('ZREM', KEYS[6 + i], member) == 1 then
    local r = num(redis.call('HGET', KEYS[3 + i], 'r')) - tonumber(ARGV[3])
    redis.call('HSET', KEYS[3 + i], 'r', int(math.max(r, 0)))
  end
  if used > 0 then
    for _, f in ipairs({'d', 'w', 'm', 't'}) do redis.call('HINCRBY', KEYS[3 + i], f, int(used)) end
  end
end
return 1
"#;

static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[PRELUDE, ADMIT].concat()));
static SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[PRELUDE, SETTLE].concat()));

const UP: u8 = 0;
const DOWN: u8 = 1;
const REBUILDING: u8 = 2;

/// Settlements waiting for Redis to come back, at most this many.
const PENDING_MAX: usize = 100_000;

pub struct RedisCounters {
    conn: ConnectionManager,
    settings: RedisSettings,
    db: Db,
    metrics: Arc<Metrics>,
    me: Weak<RedisCounters>,
    /// This process in the `instances` set.
    instance: String,
    state: AtomicU8,
    instances: AtomicU32,
    rebuilding: AtomicBool,
    /// The in-process counters admitting while Redis is unreachable
    /// (fail-open only), and whether one is being made.
    fallback: RwLock<Option<Arc<LocalCounters>>>,
    making_fallback: AtomicBool,
    /// Settlements (and a fallback's spend) Redis has not taken yet.
    pending: Mutex<VecDeque<(Ticket, i64, i64, i64)>>,
}

fn code(level: Level) -> char {
    match level {
        Level::Key => 'k',
        Level::Project => 'p',
        Level::Org => 'o',
    }
}

fn field(reset: ResetInterval) -> &'static str {
    match reset {
        ResetInterval::Daily => "d",
        ResetInterval::Weekly => "w",
        ResetInterval::Monthly => "m",
        ResetInterval::Never => "t",
    }
}

fn level_at(i: i64) -> Level {
    match i {
        1 => Level::Key,
        2 => Level::Project,
        _ => Level::Org,
    }
}

/// The ends of the day, week and month `now` is in (UTC).
fn period_ends(now: i64) -> [i64; 3] {
    [
        ResetInterval::Daily,
        ResetInterval::Weekly,
        ResetInterval::Monthly,
    ]
    .map(|r| r.next_reset(now).unwrap_or(i64::MAX))
}

fn limit_arg(v: Option<i64>) -> i64 {
    v.map_or(-1, bounded)
}

fn unreachable() -> ProxyError {
    let mut e = ProxyError::unavailable(
        "counters_unavailable",
        "the counter backend (Redis) is unreachable: requests are refused until it is back, so that no limit or budget is passed",
    );
    e.headers = vec![h("retry-after", 1)];
    e
}

fn rebuilding() -> ProxyError {
    let mut e = ProxyError::unavailable(
        "counters_rebuilding",
        "the counter backend (Redis) lost Tollgate's counters: they are being rebuilt from the usage ledger; retry in a second",
    );
    e.headers = vec![h("retry-after", 1)];
    e
}

impl RedisCounters {
    /// Connects (lazily: Redis may come later) and, if Redis holds no
    /// counters yet, builds them from the ledger before returning.
    pub async fn start(
        settings: RedisSettings,
        db: Db,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisCounters>, String> {
        let client = redis::Client::open(settings.url.expose_secret())
            .map_err(|e| format!("redis_url is not a Redis URL: {}", e.category()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot use Redis: {}", e.category()))?;
        let counters = Arc::new_cyclic(|me| RedisCounters {
            conn,
            settings,
            db,
            metrics,
            me: me.clone(),
            instance: uuid::Uuid::new_v4().to_string(),
            state: AtomicU8::new(DOWN),
            instances: AtomicU32::new(1),
            rebuilding: AtomicBool::new(false),
            fallback: RwLock::new(None),
            making_fallback: AtomicBool::new(false),
            pending: Mutex::new(VecDeque::new()),
        });
        counters.tick().await;
        if counters.state.load(Ordering::Relaxed) == DOWN {
            tracing::warn!("Redis is unreachable at start: the proxy refuses requests until it is");
        }
        let me = Arc::downgrade(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(c) = me.upgrade() else { return };
                c.tick().await;
            }
        });
        Ok(counters)
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{parts}", self.settings.prefix)
    }

    fn account_keys(&self, kind: &str, t: &Ticket) -> [String; 3] {
        [
            self.key(format_args!("{kind}:k:{}", t.key_id)),
            self.key(format_args!("{kind}:p:{}", t.project_id)),
            self.key(format_args!("{kind}:o:{}", t.org_id)),
        ]
    }

    /// Runs one script within the timeout. A lost connection marks Redis
    /// down (until the next heartbeat finds it back); a slow answer fails
    /// only this call.
    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, ()> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.settings.timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e))
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                self.failed(&e.to_string());
                Err(())
            }
            Ok(Err(e)) => {
                self.metrics.counter_error();
                tracing::error!(error = %e, "a counter script failed");
                Err(())
            }
            Err(_) => {
                self.metrics.counter_error();
                tracing::warn!("a counter script timed out");
                Err(())
            }
        }
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ()> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.settings.timeout, cmd.query_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Err(())
            }
            Err(_) => {
                self.failed("timed out");
                Err(())
            }
        }
    }

    fn failed(&self, why: &str) {
        self.metrics.counter_error();
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            tracing::error!(error = why, "the counter backend (Redis) is unreachable");
        }
    }

    /// Every half second: whether Redis answers and still holds the
    /// counters, this instance's heartbeat, the settlements it missed, and
    /// the fallback's spend once it is back.
    async fn tick(&self) {
        let now = tollgate_app::core::now_ms();
        let epoch = self.key(format_args!("epoch"));
        let members = self.key(format_args!("instances"));
        let mut pipe = redis::pipe();
        pipe.exists(&epoch)
            .zadd(&members, &self.instance, now)
            .ignore()
            .zrembyscore(&members, "-inf", now.saturating_sub(15_000))
            .ignore()
            .zcard(&members);
        let mut conn = self.conn.clone();
        let answer: Result<(bool, u32), _> =
            match tokio::time::timeout(self.settings.timeout, pipe.query_async(&mut conn)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
        let (held, instances) = match answer {
            Ok(a) => a,
            Err(why) => {
                self.failed(&why);
                if self.settings.fail_open {
                    self.make_fallback();
                }
                return;
            }
        };
        self.instances.store(instances.max(1), Ordering::Relaxed);
        if !held {
            self.state.store(REBUILDING, Ordering::Relaxed);
            self.rebuild().await;
            return;
        }
        if self.state.swap(UP, Ordering::Relaxed) != UP {
            tracing::info!("the counter backend (Redis) answers again");
        }
        self.hand_over().await;
    }

    /// Builds the counters from the ledger: one instance does it (a lock
    /// in Redis), the others refuse requests until it is done.
    async fn rebuild(&self) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        let lock = self.key(format_args!("rebuild"));
        let won: Result<Option<String>, ()> = self
            .cmd(
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&self.instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(120_000),
            )
            .await;
        if let Ok(Some(_)) = won {
            match self.seed().await {
                Ok(accounts) => {
                    tracing::warn!(accounts, "counters rebuilt in Redis from the usage ledger")
                }
                Err(e) => tracing::error!(error = %e, "rebuilding the counters failed"),
            }
            let _: Result<(), ()> = self.cmd(redis::cmd("DEL").arg(&lock)).await;
        }
        self.rebuilding.store(false, Ordering::SeqCst);
    }

    async fn seed(&self) -> Result<usize, String> {
        // What instances metered before the loss reaches the ledger within
        // a flush interval; settlements after it are skipped (they are in
        // the ledger too, read below).
        tokio::time::sleep(self.settings.ledger_flush).await;
        let now = tollgate_app::core::now_ms();
        let mut conn = self.db.pool.acquire().await.map_err(|e| e.to_string())?;
        let mut spend = Vec::new();
        for level in [Level::Key, Level::Project, Level::Org] {
            for (id, s) in usage::spend(&mut conn, level, None, None, now)
                .await
                .map_err(|e| e.to_string())?
            {
                spend.push((level, id, s));
            }
        }
        drop(conn);
        let mut redis = self.conn.clone();
        // What remains of the old counters (if only the epoch went) is
        // replaced whole: reservations and spend both.
        for pattern in ["acct", "lease"] {
            let matching = self.key(format_args!("{pattern}:*"));
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&matching)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut redis)
                    .await
                    .map_err(|e| e.to_string())?;
                if !found.is_empty() {
                    redis::cmd("UNLINK")
                        .arg(&found)
                        .query_async::<()>(&mut redis)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let [de, we, me] = period_ends(now);
        for chunk in spend.chunks(1000) {
            let mut pipe = redis::pipe();
            for (level, id, s) in chunk {
                pipe.hset_multiple(
                    self.key(format_args!("acct:{}:{id}", code(*level))),
                    &[
                        ("d", s.day),
                        ("w", s.week),
                        ("m", s.month),
                        ("t", s.total),
                        ("de", de),
                        ("we", we),
                        ("me", me),
                    ],
                )
                .ignore();
            }
            pipe.query_async::<()>(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
        }
        let epoch = self.key(format_args!("epoch"));
        redis::cmd("SET")
            .arg(&epoch)
            .arg(now)
            .query_async::<()>(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
        Ok(spend.len())
    }

    /// Fail-open: this instance's counters for the outage, holding its
    /// share (one of the instances last seen) of every rate and of what
    /// the ledger says remains of every budget.
    fn make_fallback(&self) {
        let has = self
            .fallback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if has || self.making_fallback.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let now = tollgate_app::core::now_ms();
            let mut base = HashMap::new();
            let read = async {
                let mut conn = me.db.pool.acquire().await?;
                for level in [Level::Key, Level::Project, Level::Org] {
                    for (id, spend) in usage::spend(&mut conn, level, None, None, now).await? {
                        base.insert((level, id), spend);
                    }
                }
                Ok::<_, sqlx::Error>(())
            };
            match read.await {
                Ok(()) => {
                    let share = me.instances.load(Ordering::Relaxed);
                    let local = LocalCounters::with_share(base, now, share);
                    *me.fallback.write().unwrap_or_else(PoisonError::into_inner) =
                        Some(Arc::new(local));
                    tracing::warn!(
                        share,
                        "Redis unreachable: admitting from this instance's share (fail-open)"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "no fallback counters: the ledger could not be read")
                }
            }
            me.making_fallback.store(false, Ordering::SeqCst);
        });
    }

    fn keep(&self, entry: (Ticket, i64, i64, i64)) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if p.len() >= PENDING_MAX {
            p.pop_front();
            self.metrics.counter_error();
        }
        p.push_back(entry);
    }

    /// Redis is back: the settlements it missed (the fallback's among
    /// them) go to it, then the fallback is dropped.
    async fn hand_over(&self) {
        let fallback = self
            .fallback
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if fallback.is_some() {
            tracing::info!("Redis is back: the fallback's spend is handed over");
        }
        loop {
            let next = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some(entry) = next else { return };
            if self.send_settle(&entry).await.is_err() {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_front(entry);
                return;
            }
        }
    }

    async fn send_settle(
        &self,
        (t, tokens, cost, now): &(Ticket, i64, i64, i64),
    ) -> Result<(), ()> {
        let [de, we, me] = period_ends(*now);
        let mut inv = SETTLE_SCRIPT.prepare_invoke();
        inv.key(self.key(format_args!("epoch")))
            .key(self.key(format_args!("tpm:k:{}:{}", t.key_id, t.minute)))
            .key(self.key(format_args!("tpm:p:{}:{}", t.project_id, t.minute)));
        for k in self.account_keys("acct", t) {
            inv.key(k);
        }
        for k in self.account_keys("lease", t) {
            inv.key(k);
        }
        inv.arg(t.tokens)
            .arg(bounded(*tokens))
            .arg(t.cost)
            .arg(bounded(*cost))
            .arg(de)
            .arg(we)
            .arg(me)
            .arg(&t.id);
        self.run::<i64>(inv).await.map(|_| ())
    }

    fn fallback(&self) -> Option<Arc<LocalCounters>> {
        self.fallback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refused or, fail-open, admitted by the fallback.
    fn without_redis(&self, a: Admission<'_>) -> Result<(Ticket, Headers), ProxyError> {
        if !self.settings.fail_open {
            return Err(unreachable());
        }
        match self.fallback() {
            Some(local) => {
                let (mut t, hs) = local.admit_now(a)?;
                t.fallback = true;
                Ok((t, hs))
            }
            None => {
                self.make_fallback();
                Err(unreachable())
            }
        }
    }

    async fn admit_shared(&self, a: Admission<'_>) -> Result<(Ticket, Headers), ProxyError> {
        match self.state.load(Ordering::Relaxed) {
            DOWN => return self.without_redis(a),
            REBUILDING => return Err(rebuilding()),
            _ => {}
        }
        let limits = Limits::of(a.caller);
        let (tokens, cost) = (bounded(a.tokens), bounded(a.cost));
        let mut ticket = Ticket::new(a.caller, tokens, cost, a.now);
        ticket.id = uuid::Uuid::new_v4().simple().to_string();
        let [de, we, me] = period_ends(a.now);
        let mut inv = ADMIT_SCRIPT.prepare_invoke();
        inv.key(self.key(format_args!("epoch")))
            .key(self.key(format_args!("rpm:k:{}", ticket.key_id)))
            .key(self.key(format_args!("rpm:p:{}", ticket.project_id)))
            .key(self.key(format_args!("tpm:k:{}:{}", ticket.key_id, ticket.minute)))
            .key(self.key(format_args!(
                "tpm:p:{}:{}",
                ticket.project_id, ticket.minute
            )));
        for k in self.account_keys("acct", &ticket) {
            inv.key(k);
        }
        for k in self.account_keys("lease", &ticket) {
            inv.key(k);
        }
        inv.arg(limit_arg(limits.key_rpm))
            .arg(limit_arg(limits.project_rpm))
            .arg(limit_arg(limits.key_tpm))
            .arg(limit_arg(limits.project_tpm))
            .arg(tokens)
            .arg(cost);
        for (_, limit, _) in &limits.budgets {
            inv.arg(limit_arg(*limit));
        }
        for (_, _, reset) in &limits.budgets {
            inv.arg(field(*reset));
        }
        inv.arg(de)
            .arg(we)
            .arg(me)
            .arg(limit_arg(limits.credits))
            .arg(&ticket.id)
            .arg(i64::try_from(self.settings.reservation_ttl.as_millis()).unwrap_or(i64::MAX));
        let Ok(v) = self.run::<Vec<i64>>(inv).await else {
            return self.without_redis(a);
        };
        let at = |i: usize| v.get(i).copied().unwrap_or(-1);
        let report = |l: i64, r: i64| (l >= 0).then_some((l, r));
        match at(0) {
            0 => Ok((
                ticket,
                rate_headers(report(at(1), at(2)), report(at(3), at(4))),
            )),
            1 => {
                let wait = u64::try_from(at(3).saturating_add(999) / 1000).unwrap_or(1);
                Err(rpm_refused(
                    level_at(at(1)),
                    at(2),
                    wait.max(1),
                    limits.key_tpm.or(limits.project_tpm),
                ))
            }
            2 => Err(tpm_refused(
                level_at(at(1)),
                at(2),
                at(3),
                tokens,
                a.now,
                None,
            )),
            3 => {
                let i = usize::try_from(at(1) - 1).unwrap_or(0).min(2);
                let (level, _, reset) = limits.budgets[i];
                Err(budget_refused(level, at(2), reset, at(3), at(4), cost))
            }
            4 => Err(credits_refused(
                at(1),
                limits.credits.unwrap_or(0),
                at(2),
                cost,
            )),
            _ => {
                self.state.store(REBUILDING, Ordering::Relaxed);
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.rebuild().await });
                }
                Err(rebuilding())
            }
        }
    }
}

impl Counters for RedisCounters {
    fn admit<'a>(
        &'a self,
        a: Admission<'a>,
    ) -> BoxFuture<'a, Result<(Ticket, Headers), ProxyError>> {
        Box::pin(self.admit_shared(a))
    }

    fn settle(&self, ticket: Ticket, tokens: i64, cost: i64, now: i64) {
        if ticket.fallback {
            if let Some(local) = self.fallback() {
                local.settle(ticket.clone(), tokens, cost, now);
            }
            // Redis gets the spend once it is back, as a settlement that
            // reserved nothing there.
            let mut t = ticket;
            (t.tokens, t.cost, t.id) = (tokens, 0, String::new());
            self.keep((t, tokens, cost, now));
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let entry = (ticket, tokens, cost, now);
            if me.send_settle(&entry).await.is_err() {
                me.keep(entry);
            }
        });
    }

    fn status(&self) -> CounterStatus {
        let fallback = self.fallback().is_some();
        let (state, admitting) = match self.state.load(Ordering::Relaxed) {
            UP => ("ok", true),
            REBUILDING => ("rebuilding", false),
            _ if fallback => ("fail_open", true),
            _ => ("unreachable", false),
        };
        CounterStatus {
            backend: "redis",
            state,
            instances: self.instances.load(Ordering::Relaxed),
            admitting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_end_after_now_and_limits_are_bounded() {
        let now = 1_700_000_000_000;
        for end in period_ends(now) {
            assert!(end > now && end - now <= 31 * 86_400_000, "{end}");
        }
        assert_eq!(field(ResetInterval::Never), "t");
        assert_eq!(limit_arg(Some(i64::MAX)), super::super::MAX_AMOUNT);
        assert_eq!(limit_arg(Some(-5)), 0);
        assert_eq!(limit_arg(None), -1);
    }
}
