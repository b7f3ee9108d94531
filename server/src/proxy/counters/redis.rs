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

use super::grants::{Flush, Granted, Grants, Need, Terms};
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

/// Rolls an account's periods forward, and gives back the leases that
/// lapsed (their instance stopped renewing them).
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
local function expire(acct, lease, amounts, now)
  local old = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
  if #old > 0 then
    local sum = 0
    for _, m in ipairs(old) do
      sum = sum + num(redis.call('HGET', amounts, m))
      redis.call('HDEL', amounts, m)
    end
    redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
    redis.call('HSET', acct, 'r', int(math.max(num(redis.call('HGET', acct, 'r')) - sum, 0)))
  end
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"#;

/// Grants an instance permits, tokens and money for one key (with its
/// project and organization), its request's need at least, or refuses
/// without granting anything.
/// KEYS: epoch, rpm k, rpm p, tpm k, tpm p, acct k, acct p, acct o,
/// lease k, lease p, lease o, amounts k, amounts p, amounts o.
/// ARGV: rpm k, rpm p, permits wanted k, permits wanted p, tpm k, tpm p,
/// tokens needed, tokens wanted, budget k, budget p, budget o, field k,
/// field p, field o, credits, money needed, money wanted, day end, week
/// end, month end, lease, lease ms, divisor. A limit of -1 is none; no
/// grant takes more than 1/divisor of what remains (past the need).
/// Returns {0, permits k, permits p, tokens k, tokens p, money, requests
/// left, tokens left}, or a refusal: {1, level, limit, wait ms} (RPM),
/// {2, level, limit, left} (TPM), {3, level, limit, spent, reserved},
/// {4, balance, reserved} (credits), {5} (the counters are lost).
const GRANT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {5} end
local now = clock()
local div = math.max(tonumber(ARGV[23]), 1)
local function share(need, want, avail)
  return math.max(need, math.min(want, math.floor(avail / div)))
end
local permits, tats, rpm_left = {0, 0}, {}, -1
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local step = 60000 / math.max(limit, 1)
    local tat = math.max(tonumber(redis.call('GET', KEYS[1 + i])) or now, now)
    local avail = math.floor((now + 60000 - tat) / step + 1e-9)
    if avail < 1 then return {1, i, limit, math.ceil(tat + step - 60000 - now)} end
    permits[i] = share(1, tonumber(ARGV[2 + i]), avail)
    tats[i] = tat + permits[i] * step
    if rpm_left < 0 then rpm_left = avail - permits[i] end
  end
end
local need, want = tonumber(ARGV[7]), tonumber(ARGV[8])
local tokens, tpm_left = {0, 0}, -1
for i = 1, 2 do
  local limit = tonumber(ARGV[4 + i])
  if limit >= 0 then
    local avail = limit - num(redis.call('GET', KEYS[3 + i]))
    if avail < need then return {2, i, limit, math.max(avail, 0)} end
    tokens[i] = share(need, want, avail)
    if tpm_left < 0 then tpm_left = avail - tokens[i] end
  end
end
local cost, more = tonumber(ARGV[16]), tonumber(ARGV[17])
local avail, limited = 0, false
for i = 1, 3 do
  roll(KEYS[5 + i], ARGV[18], ARGV[19], ARGV[20])
  expire(KEYS[5 + i], KEYS[8 + i], KEYS[11 + i], now)
  local limit = tonumber(ARGV[8 + i])
  if limit >= 0 then
    local v = redis.call('HMGET', KEYS[5 + i], ARGV[11 + i], 'r')
    local free = limit - num(v[1]) - num(v[2])
    if free < cost then return {3, i, limit, num(v[1]), num(v[2])} end
    if not limited or free < avail then avail, limited = free, true end
  end
end
local credits = tonumber(ARGV[15])
if credits >= 0 then
  local v = redis.call('HMGET', KEYS[8], 't', 'r')
  local balance = credits - num(v[1])
  local left = balance - num(v[2])
  if left <= 0 or cost > left then return {4, balance, num(v[2])} end
  if not limited or left < avail then avail, limited = left, true end
end
local money = 0
if limited then money = share(cost, more, avail) end
for i = 1, 2 do
  if tats[i] then
    redis.call('SET', KEYS[1 + i], string.format('%.17g', tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
  end
  if tonumber(ARGV[4 + i]) >= 0 then
    redis.call('INCRBY', KEYS[3 + i], int(tokens[i]))
    redis.call('PEXPIRE', KEYS[3 + i], 120000)
  end
end
if money > 0 then
  for i = 1, 3 do
    redis.call('HINCRBY', KEYS[5 + i], 'r', int(money))
    redis.call('HINCRBY', KEYS[11 + i], ARGV[21], int(money))
    redis.call('ZADD', KEYS[8 + i], now + tonumber(ARGV[22]), ARGV[21])
  end
end
return {0, permits[1], permits[2], tokens[1], tokens[2], money, rpm_left, tpm_left}
"#;

/// Counts spend and shrinks a lease, once per message: a lease's own
/// messages by their number (in order), others by their id.
/// KEYS: epoch, acct k, acct p, acct o, lease k, lease p, lease o,
/// amounts k, amounts p, amounts o, done, seq.
/// ARGV: lease ('' for none), money given back, the most the lease keeps
/// (-1: no bound), lease ms, day end, week end, month end (now), how long
/// `done` is kept (ms), the message's number (0: by id), then per day
/// spent in: its day end, week end, month end and amount.
/// Spend counts in the periods it was admitted in, if they are current.
/// Returns 0 when the counters are lost, 2 when the lease had lapsed (the
/// spend still counts), else 1.
const FLUSH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = tonumber(ARGV[9])
if seq > 0 then
  if num(redis.call('GET', KEYS[12])) >= seq then return 1 end
  redis.call('SET', KEYS[12], ARGV[9], 'PX', 2 * tonumber(ARGV[4]))
elseif not redis.call('SET', KEYS[11], 1, 'NX', 'PX', ARGV[8]) then
  return 1
end
local now = clock()
local spent = 0
for b = 10, #ARGV, 4 do spent = spent + tonumber(ARGV[b + 3]) end
local trim = tonumber(ARGV[3])
local gone = false
for i = 1, 3 do
  local acct = KEYS[1 + i]
  roll(acct, ARGV[5], ARGV[6], ARGV[7])
  expire(acct, KEYS[4 + i], KEYS[7 + i], now)
  for b = 10, #ARGV, 4 do
    local amount = tonumber(ARGV[b + 3])
    local ends = redis.call('HMGET', acct, 'de', 'we', 'me')
    for j, f in ipairs({'d', 'w', 'm'}) do
      if num(ends[j]) == tonumber(ARGV[b + j - 1]) then redis.call('HINCRBY', acct, f, int(amount)) end
    end
    redis.call('HINCRBY', acct, 't', int(amount))
  end
  if ARGV[1] ~= '' then
    local held = redis.call('HGET', KEYS[7 + i], ARGV[1])
    if held then
      local left = math.max(tonumber(held) - spent - tonumber(ARGV[2]), 0)
      if trim >= 0 then left = math.min(left, trim) end
      local r = num(redis.call('HGET', acct, 'r')) - (tonumber(held) - left)
      redis.call('HSET', acct, 'r', int(math.max(r, 0)))
      if left > 0 then
        redis.call('HSET', KEYS[7 + i], ARGV[1], int(left))
        redis.call('ZADD', KEYS[4 + i], now + tonumber(ARGV[4]), ARGV[1])
      else
        redis.call('HDEL', KEYS[7 + i], ARGV[1])
        redis.call('ZREM', KEYS[4 + i], ARGV[1])
      end
    else
      gone = true
    end
  end
end
if gone then return 2 end
return 1
"#;

/// KEYS: epoch, instances. ARGV: this instance. Marks it alive on Redis's
/// clock and returns the epoch (`run_id:read_at`, empty if none), the
/// running server's run id and the instances alive in the last 15 s.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 15000)
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
return {redis.call('GET', KEYS[1]) or '', run, redis.call('ZCARD', KEYS[2])}
"#;

/// KEYS: lock. ARGV: holder. Deletes the lock only if it is still ours.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

static GRANT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[PRELUDE, GRANT].concat()));
static FLUSH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[PRELUDE, FLUSH].concat()));
static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT));
static UNLOCK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNLOCK));

const UP: u8 = 0;
const DOWN: u8 = 1;
const REBUILDING: u8 = 2;

/// Settlements waiting for Redis to come back, at most this many.
const PENDING_MAX: usize = 100_000;
/// How long one instance may hold the rebuild.
const REBUILD_LOCK: Duration = Duration::from_secs(120);

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
    /// What Redis granted this instance, by key.
    grants: Mutex<Grants>,
    /// Messages (spend, leases given back) Redis has not taken yet.
    pending: Mutex<VecDeque<Flush>>,
    /// Whether Redis ever answered this instance (its share is known).
    seen: AtomicBool,
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
        let p = &settings.prefix;
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "redis_prefix {p:?}: use letters, digits, '-', '_' and '.' only (it names Tollgate's keys, and patterns match them)"
            ));
        }
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
            grants: Mutex::new(Grants::default()),
            pending: Mutex::new(VecDeque::new()),
            seen: AtomicBool::new(false),
        });
        counters.tick().await;
        if counters.state.load(Ordering::Relaxed) == DOWN {
            tracing::warn!("Redis is unreachable at start: the proxy refuses requests until it is");
        }
        let me = Arc::downgrade(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(c) = me.upgrade() else { return };
                c.tick().await;
            }
        });
        Ok(counters)
    }

    /// A grant admits only while its lease was renewed this recently: well
    /// inside the lease's life, so an instance cut off from Redis stops
    /// before its leases lapse and another instance is granted the same.
    fn fresh_ms(&self) -> i64 {
        i64::try_from(self.lease_ms() / 2).unwrap_or(i64::MAX)
    }

    /// A lease's life in milliseconds, at most a day (Redis refuses
    /// expiry times past its range; a longer lease protects nothing more).
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.settings.reservation_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1_000, 86_400_000)
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{parts}", self.settings.prefix)
    }

    fn account_keys(&self, kind: &str, key: &str, project: &str, org: &str) -> [String; 3] {
        [
            self.key(format_args!("{kind}:k:{key}")),
            self.key(format_args!("{kind}:p:{project}")),
            self.key(format_args!("{kind}:o:{org}")),
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
    /// counters of the server now running (a restart, even one that
    /// restored a snapshot, rebuilds them), this instance's heartbeat, and
    /// the settlements Redis missed, handed over before admitting again.
    async fn tick(&self) {
        let mut inv = HEARTBEAT_SCRIPT.prepare_invoke();
        inv.key(self.key(format_args!("epoch")))
            .key(self.key(format_args!("instances")))
            .arg(&self.instance);
        let mut conn = self.conn.clone();
        let answer: Result<(String, String, u32), String> =
            match tokio::time::timeout(self.settings.timeout, inv.invoke_async(&mut conn)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
        let (epoch, run_id, instances) = match answer {
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
        self.seen.store(true, Ordering::Relaxed);
        let Some(read_at) = epoch
            .split_once(':')
            .filter(|(run, _)| *run == run_id)
            .and_then(|(_, at)| at.parse::<i64>().ok())
        else {
            self.state.store(REBUILDING, Ordering::Relaxed);
            self.lost();
            self.rebuild(&run_id).await;
            return;
        };
        if self.state.load(Ordering::Relaxed) == REBUILDING {
            // Rebuilt (here or by another instance): grants from before
            // the loss hold nothing in Redis any more.
            self.lost();
        }
        if self.state.load(Ordering::Relaxed) != UP {
            if !self.hand_over(read_at).await {
                return;
            }
            self.state.store(UP, Ordering::Relaxed);
            tracing::info!("the counter backend (Redis) holds the counters and answers");
        } else {
            self.hand_over(read_at).await;
        }
        self.flush_grants().await;
    }

    /// Redis lost the counters: every grant goes; what they metered waits
    /// (as spend only) for the rebuild.
    fn lost(&self) {
        let msgs = self.grants().forget_all();
        self.keep_all(msgs);
    }

    /// Sends each grant's due message (spend, idle money, a renewal), all
    /// at once.
    async fn flush_grants(&self) {
        let now = tollgate_app::core::now_ms();
        let renew = i64::try_from(self.lease_ms() / 4).unwrap_or(60_000);
        let due = self.grants().due(now, renew);
        let sent = futures::future::join_all(due.iter().map(|f| self.send_flush(f))).await;
        for (f, r) in due.iter().zip(sent) {
            let mut grants = self.grants();
            match r {
                Ok(1) => grants.flushed(f, now),
                Ok(2) => {
                    // The lease lapsed: what the grant still holds is not
                    // reserved in Redis; give it all back and start anew.
                    grants.flushed(f, now);
                    let msgs = match &f.lease {
                        Some(lease) => grants.forget_lease(&f.key_id, lease),
                        None => Vec::new(),
                    };
                    drop(grants);
                    self.keep_all(msgs);
                }
                Ok(_) => self.state.store(REBUILDING, Ordering::Relaxed),
                Err(()) => {}
            }
        }
    }

    /// Builds the counters from the ledger: one instance does it (a lock
    /// in Redis), the others refuse requests until it is done.
    async fn rebuild(&self, run_id: &str) {
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
                    .arg(REBUILD_LOCK.as_millis() as u64),
            )
            .await;
        if let Ok(Some(_)) = won {
            // Bounded well inside the lock, so no second rebuild can start
            // while this one still writes.
            match tokio::time::timeout(REBUILD_LOCK / 2, self.seed(run_id)).await {
                Ok(Ok(accounts)) => {
                    tracing::warn!(accounts, "counters rebuilt in Redis from the usage ledger")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "rebuilding the counters failed"),
                Err(_) => tracing::error!("rebuilding the counters timed out"),
            }
            let mut inv = UNLOCK_SCRIPT.prepare_invoke();
            inv.key(&lock).arg(&self.instance);
            let _ = self.run::<i64>(inv).await;
        }
        self.rebuilding.store(false, Ordering::SeqCst);
    }

    async fn seed(&self, run_id: &str) -> Result<usize, String> {
        // What instances settled before the loss reaches the ledger within
        // a flush interval. Settlements after it wait in their instance
        // and are replayed unless the ledger read below has them.
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
        // What remains of the old counters (a snapshot restored, or only
        // the epoch gone) is replaced whole: reservations and spend both.
        for pattern in ["acct", "lease", "amounts"] {
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
            .arg(format!("{run_id}:{now}"))
            .query_async::<()>(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
        Ok(spend.len())
    }

    /// Fail-open: this instance's counters for the outage, holding its
    /// share (one of the instances last seen) of every rate and of what
    /// the ledger says remains of every budget. None for an instance that
    /// never reached Redis: it cannot know its share.
    fn make_fallback(&self) {
        let has = self
            .fallback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if has
            || !self.seen.load(Ordering::Relaxed)
            || self.making_fallback.swap(true, Ordering::SeqCst)
        {
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
                    // From now on the fallback admits; what the grants
                    // hold goes back to Redis once it answers.
                    let held = me.grants().drop_all();
                    me.keep_all(held);
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

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep_all(&self, msgs: Vec<Flush>) {
        for f in msgs {
            self.keep(f);
        }
    }

    /// Keeps a message for Redis to take later; the oldest is dropped
    /// (and counted as a backend error) past [`PENDING_MAX`].
    fn keep(&self, f: Flush) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if p.len() >= PENDING_MAX {
            p.pop_front();
            self.metrics.counter_error();
            tracing::error!("a settlement waiting for Redis was dropped: too many wait");
        }
        p.push_back(f);
    }

    /// Hands Redis the messages it missed (the fallback's spend among
    /// them), except the spend of grants Redis lost that was settled long
    /// enough before the rebuild (`read_at`) for its ledger read to hold
    /// it; then drops the fallback. Whether everything was handed over.
    async fn hand_over(&self, read_at: i64) -> bool {
        let flush = i64::try_from(self.settings.ledger_flush.as_millis()).unwrap_or(i64::MAX);
        loop {
            let next = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some(f) = next else { break };
            if f.after_loss && f.settled_at.saturating_add(flush) < read_at {
                continue;
            }
            match self.send_flush(&f).await {
                Ok(1 | 2) => {}
                _ => {
                    self.pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_front(f);
                    return false;
                }
            }
        }
        let fallback = self
            .fallback
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if fallback.is_some() {
            tracing::info!("Redis is back: the fallback's spend is handed over");
        }
        true
    }

    /// Sends one message: `Ok(1)` applied (now or before), `Ok(2)` applied
    /// but its lease had lapsed, `Ok(0)` Redis lost the counters.
    async fn send_flush(&self, f: &Flush) -> Result<i64, ()> {
        let now = tollgate_app::core::now_ms();
        let [de, we, me] = period_ends(now);
        let mut inv = FLUSH_SCRIPT.prepare_invoke();
        inv.key(self.key(format_args!("epoch")));
        for kind in ["acct", "lease", "amounts"] {
            for k in self.account_keys(kind, &f.key_id, &f.project_id, &f.org_id) {
                inv.key(k);
            }
        }
        inv.key(self.key(format_args!("done:{}", f.id)))
            .key(self.key(format_args!("seq:{}", f.lease.as_deref().unwrap_or("none"))))
            .arg(f.lease.as_deref().unwrap_or(""))
            .arg(bounded(f.returned))
            .arg(f.trim_to.map_or(-1, bounded))
            .arg(self.lease_ms())
            .arg(de)
            .arg(we)
            .arg(me)
            // A message without a number is remembered as long as a lease
            // lives, twice: it is not sent again after that.
            .arg(self.lease_ms().saturating_mul(2))
            .arg(f.seq);
        for (day, amount) in &f.days {
            let [de, we, me] = period_ends(day.saturating_mul(86_400_000));
            inv.arg(de).arg(we).arg(me).arg(bounded(*amount));
        }
        self.run::<i64>(inv).await
    }

    fn fallback(&self) -> Option<Arc<LocalCounters>> {
        self.fallback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refused or, fail-open and Redis down, admitted by the fallback.
    fn without_redis(&self, a: Admission<'_>) -> Result<(Ticket, Headers), ProxyError> {
        if !self.settings.fail_open || self.state.load(Ordering::Relaxed) != DOWN {
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
        let state = self.state.load(Ordering::Relaxed);
        if state == REBUILDING {
            return Err(rebuilding());
        }
        let limits = Limits::of(a.caller);
        let terms = Terms {
            rpm: [limits.key_rpm, limits.project_rpm].map(|l| l.map(bounded)),
            tpm: [limits.key_tpm, limits.project_tpm].map(|l| l.map(bounded)),
            budgets: limits.budgets.map(|(_, l, _)| l.map(bounded)),
            resets: limits.budgets.map(|(_, _, r)| r),
            credits: limits.credits.map(bounded),
        };
        let (tokens, cost) = (bounded(a.tokens), bounded(a.cost));
        let mut ticket = Ticket::new(a.caller, tokens, cost, a.now);
        let need = Need {
            tokens,
            cost,
            minute: ticket.minute,
        };
        let headers = |left: (i64, i64)| {
            let rpm = terms.rpm[0].or(terms.rpm[1]).map(|l| (l, left.0));
            let tpm = terms.tpm[0].or(terms.tpm[1]).map(|l| (l, left.1));
            rate_headers(rpm, tpm)
        };
        // What this instance holds already: no round trip.
        let held = self
            .grants()
            .admit(&ticket.key_id, &terms, &need, a.now, self.fresh_ms());
        if let Some((gen, lease, left)) = held {
            (ticket.gen, ticket.id) = (gen, lease);
            return Ok((ticket, headers(left)));
        }
        if state == DOWN {
            return self.without_redis(a);
        }
        let (lease, old) = self.grants().lease_for(
            &ticket.key_id,
            &ticket.project_id,
            &ticket.org_id,
            &terms,
            ticket.minute,
            a.now,
            self.fresh_ms(),
        );
        self.keep_all(old);
        // A chunk for the requests to come: up to 32 like this one, and a
        // hundredth of the RPM per instance (permits granted and unused
        // lapse: a small limit is granted one at a time, so it admits
        // exactly what it says); Redis caps it at a share of what remains.
        let instances = i64::from(self.instances.load(Ordering::Relaxed).max(1));
        let permits = terms
            .rpm
            .map(|l| l.map_or(1, |l| (l / (100 * instances)).clamp(1, 32)));
        let [de, we, me] = period_ends(a.now);
        let mut inv = GRANT_SCRIPT.prepare_invoke();
        inv.key(self.key(format_args!("epoch")))
            .key(self.key(format_args!("rpm:k:{}", ticket.key_id)))
            .key(self.key(format_args!("rpm:p:{}", ticket.project_id)))
            .key(self.key(format_args!("tpm:k:{}:{}", ticket.key_id, ticket.minute)))
            .key(self.key(format_args!(
                "tpm:p:{}:{}",
                ticket.project_id, ticket.minute
            )));
        for kind in ["acct", "lease", "amounts"] {
            for k in self.account_keys(kind, &ticket.key_id, &ticket.project_id, &ticket.org_id) {
                inv.key(k);
            }
        }
        inv.arg(limit_arg(terms.rpm[0]))
            .arg(limit_arg(terms.rpm[1]))
            .arg(permits[0])
            .arg(permits[1])
            .arg(limit_arg(terms.tpm[0]))
            .arg(limit_arg(terms.tpm[1]))
            .arg(tokens)
            .arg(bounded(tokens.saturating_mul(32)));
        for l in terms.budgets {
            inv.arg(limit_arg(l));
        }
        for (_, _, reset) in &limits.budgets {
            inv.arg(field(*reset));
        }
        inv.arg(limit_arg(terms.credits))
            .arg(cost)
            .arg(bounded(cost.saturating_mul(32)))
            .arg(de)
            .arg(we)
            .arg(me)
            .arg(&lease)
            .arg(self.lease_ms())
            .arg(4 * instances);
        let Ok(v) = self.run::<Vec<i64>>(inv).await else {
            // The grant may have happened (an answer lost or late): the
            // lease is trimmed to what requests in flight hold, whatever
            // Redis holds of it.
            let mut back = self.grants().forget_lease(&ticket.key_id, &lease);
            if back.is_empty() {
                let mut f = Flush::alone(
                    ticket.key_id.clone(),
                    ticket.project_id.clone(),
                    ticket.org_id.clone(),
                    Some(lease),
                    0,
                    0,
                    0,
                    a.now,
                );
                f.trim_to = Some(0);
                back.push(f);
            }
            self.keep_all(back);
            return self.without_redis(a);
        };
        let at = |i: usize| v.get(i).copied().unwrap_or(-1);
        match at(0) {
            0 => {
                let granted = Granted {
                    permits: [at(1), at(2)],
                    tokens: [at(3), at(4)],
                    money: at(5),
                    rpm_left: at(6),
                    tpm_left: at(7),
                };
                let admitted =
                    self.grants()
                        .granted(&ticket.key_id, &lease, &terms, &need, &granted, a.now);
                let left = match admitted {
                    Some((gen, left)) => {
                        ticket.gen = gen;
                        left
                    }
                    None => {
                        // Its grant was given back meanwhile: what Redis
                        // granted beyond this request goes back with it.
                        self.keep(Flush::alone(
                            ticket.key_id.clone(),
                            ticket.project_id.clone(),
                            ticket.org_id.clone(),
                            Some(lease.clone()),
                            0,
                            0,
                            granted.money.saturating_sub(cost),
                            a.now,
                        ));
                        (granted.rpm_left, granted.tpm_left)
                    }
                };
                ticket.id = lease;
                Ok((ticket, headers(left)))
            }
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
                // The next heartbeat (within a quarter second) rebuilds.
                self.state.store(REBUILDING, Ordering::Relaxed);
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
        let (tokens, cost) = (bounded(tokens), bounded(cost));
        if ticket.fallback {
            if let Some(local) = self.fallback() {
                local.settle(ticket.clone(), tokens, cost, now);
            }
        } else {
            let settled = self.grants().settle(
                &ticket.key_id,
                ticket.gen,
                ticket.minute,
                (ticket.tokens, ticket.cost),
                (tokens, cost),
                now,
            );
            if settled.is_ok() {
                return;
            }
        }
        // Its grant is gone (or it came from the fallback): the spend goes
        // to Redis on its own, and its part of the lease back.
        let lease = (!ticket.id.is_empty() && !ticket.fallback).then(|| ticket.id.clone());
        self.keep(Flush::alone(
            ticket.key_id,
            ticket.project_id,
            ticket.org_id,
            lease,
            ticket.minute.div_euclid(1_440),
            cost,
            ticket.cost.saturating_sub(cost),
            now,
        ));
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
