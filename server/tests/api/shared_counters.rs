//! Two real `tollgate` processes on one PostgreSQL database and the
//! machine's Redis (each test under its own key prefix, deleted after):
//! rate limits and budgets hold across both as they hold in one, Redis
//! going away is a clear 503, and counters Redis lost are rebuilt from the
//! ledger.

use std::time::{Duration, Instant};

use crate::helpers::{paid_project, Backend, Binary, Console, Relay, TestDb};
use serde_json::{json, Value};

const REDIS: &str = "127.0.0.1:6379";

/// A key prefix of this test's own in the machine's Redis, and its keys
/// deleted when the test ends (never anything else: Redis is shared).
struct Prefix(String);

impl Prefix {
    fn new() -> Prefix {
        Prefix(format!("tollgate-test-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Deletes every key under the prefix; returns how many there were.
    fn delete_all(&self) -> usize {
        let client = redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut conn)
            .unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut conn).unwrap();
        }
        keys.len()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        self.delete_all();
    }
}

struct Pair {
    db: TestDb,
    a: Binary,
    b: Binary,
    owner: Console,
    _prefix: Prefix,
    /// The relay both instances reach Redis through.
    relay: Relay,
}

/// Both instances share counters in Redis through a relay the test can cut.
async fn pair(extra: &[(&str, &str)]) -> Pair {
    pair_on(REDIS, extra).await
}

async fn pair_on(redis: &str, extra: &[(&str, &str)]) -> Pair {
    sqlx::any::install_default_drivers();
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = Prefix::new();
    let relay = Relay::start(redis).await;
    let url = format!("redis://127.0.0.1:{}/0", relay.port);
    let mut env = vec![
        ("TOLLGATE_REDIS_URL", url.as_str()),
        ("TOLLGATE_PROXY__REDIS_PREFIX", prefix.0.as_str()),
        ("TOLLGATE_PROXY__LEDGER_FLUSH_MS", "100"),
    ];
    env.extend_from_slice(extra);
    let a = Binary::start(&db, &env).await;
    let b = Binary::start(&db, &env).await;
    let owner = Console::set_up(&a.url).await;
    Pair {
        db,
        a,
        b,
        owner,
        _prefix: prefix,
        relay,
    }
}

async fn chat(url: &str, token: &str, max_tokens: u32) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({ "model": "paid/echo", "max_tokens": max_tokens,
            "messages": [{ "role": "user", "content": "hello there" }] }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until the instance at `url` knows the key (its change feed has
/// brought it), asking `/v1/models`, which spends no rate or budget.
async fn knows_key(url: &str, token: &str) {
    let started = Instant::now();
    loop {
        let res = reqwest::Client::new()
            .get(format!("{url}/v1/models"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} does not know the key after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls until `want` comes back (at most 30 s); returns the answers seen.
async fn until(url: &str, token: &str, want: u16) -> Vec<(u16, Value)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (s, v) = chat(url, token, 16).await;
        seen.push((s, v));
        if s == want {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} still answers {:?}, not {want}",
            seen.last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pair with `extra` in its environment, and a key of $0.02 (never
/// reset) in the owner's project of `paid/echo`.
async fn with_budget(redis: &str, extra: &[(&str, &str)]) -> (Pair, String) {
    let p = pair_on(redis, extra).await;
    paid_project(&p.owner, &[]).await;
    let (_, token) = p
        .owner
        .key(&[("max_budget", "0.02"), ("budget_reset", "never")])
        .await;
    knows_key(&p.b.url, &token).await;
    (p, token)
}

/// `n` requests at once with `max_tokens` 100, split over both URLs: how
/// many got each status.
async fn burst(urls: &[String; 2], token: &str, n: usize) -> std::collections::BTreeMap<u16, i32> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (url, token) = (urls[i % 2].clone(), token.to_owned());
            tokio::spawn(async move { chat(&url, &token, 100).await.0 })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in calls {
        *statuses.entry(c.await.unwrap()).or_insert(0) += 1;
    }
    statuses
}

/// Calls A and B in turn, one request at a time, until both refuse with
/// 402 twice in a row, also after waiting (three times) past the time an idle
/// instance gives back the budget it holds: the budget binds where the next
/// request's worst case (1080 micro-USD) no longer fits. Returns how many
/// were admitted.
async fn exhaust(urls: &[String; 2], token: &str) -> i64 {
    // Each instance may hold part of what is left as a lease, so both can
    // refuse while money remains; an instance gives back what it holds
    // unused a second after its last request, at its next quarter-second
    // tick. So: alternate until both refuse, wait (the margin is for a
    // loaded machine), and go on until a round after a wait admits nothing.
    // Three waits in a row that admit nothing (3, 6 and 9 s) end it: a
    // lease given back late by a busy machine (its flush behind) does not.
    let (mut admitted, mut this_round, mut refusals_in_a_row, mut dry_waits) = (0, 0, 0, 0);
    for i in 0..4000 {
        match chat(&urls[i % 2], token, 100).await {
            (200, _) => {
                (admitted, this_round, refusals_in_a_row) = (admitted + 1, this_round + 1, 0)
            }
            (402, _) => refusals_in_a_row += 1,
            // Redis was restarted (unreachable a moment) or lost the
            // counters (being rebuilt): retry, as Retry-After says.
            (503, v)
                if ["counters_rebuilding", "counters_unavailable"]
                    .contains(&v["error"]["code"].as_str().unwrap_or_default()) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
        if refusals_in_a_row == 2 {
            if this_round == 0 && i > 1 {
                dry_waits += 1;
                if dry_waits == 3 {
                    return admitted;
                }
            } else {
                dry_waits = 0;
            }
            tokio::time::sleep(Duration::from_millis(3_000 * (dry_waits + 1))).await;
            (refusals_in_a_row, this_round) = (0, 0);
        }
    }
    panic!("the budget never bound");
}

/// Stops both instances (their ledgers written) and reads the org's
/// admitted requests and their cost from the ledger.
async fn ledger(p: &mut Pair) -> (i64, i64) {
    assert_eq!(p.a.stop(), Some(0));
    assert_eq!(p.b.stop(), Some(0));
    for log in [p.a.log(), p.b.log()] {
        assert!(!log.contains("panicked"), "{log}");
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&p.db.url)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_events \
         WHERE org_id = $1 AND status = 200",
    )
    .bind(&p.owner.org)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

/// A key with RPM 60: 200 requests alternating between A and B admit 60
/// plus what GCRA gives back in the time taken (one a second), as one
/// instance would — not 120.
#[test]
fn rpm_holds_across_two_instances() {
    crate::helpers::run(async {
        let p = pair(&[]).await;
        paid_project(&p.owner, &[]).await;
        let (_, token) = p.owner.key(&[("rpm", "60")]).await;
        knows_key(&p.b.url, &token).await;
        let started = Instant::now();
        let (mut admitted, mut refused) = (0, 0);
        for i in 0..200 {
            let url = if i % 2 == 0 { &p.a.url } else { &p.b.url };
            match chat(url, &token, 16).await {
                (200, _) => admitted += 1,
                (429, v) => {
                    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        let elapsed = started.elapsed();
        #[expect(clippy::cast_possible_truncation, reason = "seconds")]
        let replenished = elapsed.as_secs_f64().ceil() as i32;
        eprintln!(
            "RPM 60 over two instances: {admitted} admitted, {refused} refused in {elapsed:?} (at most {} allowed)",
            60 + replenished
        );
        assert!(admitted >= 60, "{admitted}");
        assert!(admitted <= 60 + replenished, "{admitted} in {elapsed:?}");
        assert_eq!(admitted + refused, 200);
    });
}

/// 500 concurrent requests with `max_tokens`, split over A and B, against
/// a $0.05 budget at `level`: total spend stays within it and every
/// admitted request is in the ledger.
async fn budget_holds(level: &str) {
    let mut p = pair(&[]).await;
    let budget = [("max_budget", "0.05"), ("budget_reset", "monthly")];
    let key_extra: &[(&str, &str)] = match level {
        "key" => {
            paid_project(&p.owner, &[]).await;
            &budget
        }
        "project" => {
            paid_project(&p.owner, &budget).await;
            &[]
        }
        _ => {
            paid_project(&p.owner, &[]).await;
            p.owner
                .call(
                    "update_spending",
                    &[
                        ("org_id", &p.owner.org),
                        ("spend_cap", "0.05"),
                        ("spend_cap_reset", "monthly"),
                    ],
                )
                .await;
            &[]
        }
    };
    let (_, token) = p.owner.key(key_extra).await;
    // B knows the key (and the limits) before the run.
    until(&p.b.url, &token, 200).await;
    let urls = [p.a.url.clone(), p.b.url.clone()];
    let calls: Vec<_> = (0..500)
        .map(|i| {
            let (url, token) = (urls[i % 2].clone(), token.clone());
            tokio::spawn(async move { chat(&url, &token, 100).await })
        })
        .collect();
    let (mut admitted, mut refused) = (1, 0); // the probe on B
    for c in calls {
        match c.await.unwrap() {
            (200, _) => admitted += 1,
            (402, v) => {
                assert!(
                    v["error"]["code"].as_str().unwrap().ends_with("exceeded"),
                    "{v}"
                );
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let burst = (admitted, refused);
    admitted += exhaust(&urls, &token).await;
    let (events, spent) = ledger(&mut p).await;
    eprintln!(
        "{level} budget $0.05 over two instances: 500 concurrent admitted {} and refused {}; then one at a time until refused, {admitted} admitted in all; ledger {events} requests, {spent} micro-USD",
        burst.0, burst.1
    );
    assert!(burst.1 > 0, "the budget never bound the burst");
    assert_eq!(events, admitted, "every admitted request is in the ledger");
    assert!(spent <= 50_000, "spent {spent} micro-USD of 50000");
    assert!(
        spent >= 48_000,
        "the budget binds only near its end: {spent}"
    );
}

#[test]
fn a_key_budget_holds_across_two_instances() {
    crate::helpers::run(budget_holds("key"));
}

#[test]
fn a_project_budget_holds_across_two_instances() {
    crate::helpers::run(budget_holds("project"));
}

#[test]
fn an_org_spend_cap_holds_across_two_instances() {
    crate::helpers::run(budget_holds("org"));
}

/// A request whose client leaves while the provider is still working
/// gives its reservation back: the other instance can then spend it. The
/// key's $0.002 fits one worst case (1080 micro-USD) at a time.
#[test]
fn a_request_whose_client_left_gives_its_reservation_back() {
    crate::helpers::run(async {
        let mut p = pair(&[]).await;
        paid_project(&p.owner, &[]).await;
        // The provider answers after a minute: long after the client left.
        let org = p.owner.org.clone();
        p.owner
            .call(
                "upsert_provider",
                &[
                    ("org_id", org.as_str()),
                    ("name", "mock"),
                    ("kind", "mock"),
                    ("base_url", ""),
                    ("api_key", ""),
                    ("latency_ms", "60000"),
                ],
            )
            .await;
        let (_, token) = p
            .owner
            .key(&[("max_budget", "0.002"), ("budget_reset", "never")])
            .await;
        // The key came after the provider's change: knowing it, both know
        // the latency.
        for url in [&p.a.url, &p.b.url] {
            knows_key(url, &token).await;
        }
        let body = |stream: bool| {
            json!({ "model": "paid/echo", "max_tokens": 100, "stream": stream,
                "messages": [{ "role": "user", "content": "hello there" }] })
        };
        let left = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .post(format!("{}/v1/chat/completions", p.a.url))
            .bearer_auth(&token)
            .json(&body(false))
            .send()
            .await;
        assert!(
            left.as_ref().is_err_and(reqwest::Error::is_timeout),
            "{left:?}"
        );
        // B admits the same worst case once A gave it back (streamed: the
        // 200 comes before the provider's first chunk).
        let started = Instant::now();
        loop {
            let res = reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", p.b.url))
                .bearer_auth(&token)
                .json(&body(true))
                .send()
                .await
                .unwrap();
            match res.status().as_u16() {
                200 => break,
                402 => {
                    let v: Value = res.json().await.unwrap();
                    assert!(
                        started.elapsed() < Duration::from_secs(15),
                        "the reservation of the request whose client left is still held: {v}"
                    );
                }
                other => panic!("{other}: {}", res.text().await.unwrap()),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "a reservation given back by a request whose client left: B admits after {:?}",
            started.elapsed()
        );
        // A's ledger says why it billed nothing.
        assert_eq!(p.a.stop(), Some(0));
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&p.db.url)
            .await
            .unwrap();
        let left: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, error_code, cost_micros FROM usage_events \
             WHERE org_id = $1 AND stream = 0",
        )
        .bind(&p.owner.org)
        .fetch_all(&mut db)
        .await
        .unwrap();
        assert_eq!(left, [(499, Some("client_disconnected".to_owned()), 0)]);
    });
}

/// Redis cut mid-run: both instances refuse with a 503 naming it, report
/// it on /readyz, and after it is back count correctly again (the key's
/// budget still holds over everything spent before, during and after).
#[test]
fn redis_going_away_is_a_clear_503_and_counts_resume() {
    crate::helpers::run(async {
        let (mut p, token) = with_budget(REDIS, &[]).await;
        for url in [&p.a.url, &p.b.url] {
            until(url, &token, 200).await;
        }
        p.relay.cut();
        for url in [&p.a.url, &p.b.url] {
            let seen = until(url, &token, 503).await;
            let (_, v) = seen.last().unwrap();
            assert_eq!(v["error"]["code"], "counters_unavailable", "{v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("Redis"),
                "{v}"
            );
            let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
            assert_eq!(ready.status(), 503);
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["counters"]["backend"], "redis", "{body}");
            assert_eq!(body["counters"]["state"], "unreachable", "{body}");
        }
        let refused = (0..20)
            .map(|i| {
                let (url, token) = (
                    if i % 2 == 0 {
                        p.a.url.clone()
                    } else {
                        p.b.url.clone()
                    },
                    token.clone(),
                );
                tokio::spawn(async move { chat(&url, &token, 16).await.0 })
            })
            .collect::<Vec<_>>();
        for r in refused {
            assert_eq!(r.await.unwrap(), 503);
        }
        p.relay.pause(false);
        let started = Instant::now();
        for url in [&p.a.url, &p.b.url] {
            until(url, &token, 200).await;
        }
        eprintln!("Redis back: both admit again after {:?}", started.elapsed());
        // Spend the rest from both, concurrently: the budget binds once.
        let urls = [p.a.url.clone(), p.b.url.clone()];
        let statuses = burst(&urls, &token, 300).await;
        let then = exhaust(&urls, &token).await;
        let (events, spent) = ledger(&mut p).await;
        eprintln!("after the outage: 300 concurrent {statuses:?}, then {then} more one at a time; ledger {events} admitted, {spent} micro-USD of 20000");
        assert!(statuses.get(&402).copied().unwrap_or(0) > 0, "{statuses:?}");
        assert!((18_000..=20_000).contains(&spent), "{spent}");
    });
}

/// Tollgate's keys deleted from Redis (its prefix only): the counters are
/// rebuilt from the ledger, and the budget holds over what was spent before.
#[test]
fn lost_counters_are_rebuilt_from_the_ledger() {
    crate::helpers::run(async {
        let (mut p, token) = with_budget(REDIS, &[]).await;
        until(&p.b.url, &token, 200).await;
        let mut before = 1;
        for i in 0..40 {
            let url = if i % 2 == 0 { &p.a.url } else { &p.b.url };
            if chat(url, &token, 16).await.0 == 200 {
                before += 1;
            }
        }
        // Each instance's ledger writes within its flush interval (100 ms).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let deleted = p._prefix.delete_all();
        let started = Instant::now();
        let seen = until(&p.a.url, &token, 200).await;
        let rebuilding = seen
            .iter()
            .filter(|(s, v)| *s == 503 && v["error"]["code"] == "counters_rebuilding")
            .count();
        eprintln!(
            "{deleted} keys deleted after {before} requests; admitting again after {:?} ({rebuilding} answered 'rebuilding')",
            started.elapsed()
        );
        assert_eq!(rebuilding + 1, seen.len(), "{seen:?}");
        // What an instance held before the loss may answer first; the
        // rebuild follows within a second.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        for url in [&p.a.url, &p.b.url] {
            until(url, &token, 200).await;
        }
        let urls = [p.a.url.clone(), p.b.url.clone()];
        let refused = burst(&urls, &token, 300)
            .await
            .get(&402)
            .copied()
            .unwrap_or(0);
        let then = exhaust(&urls, &token).await;
        let (events, spent) = ledger(&mut p).await;
        eprintln!("after the rebuild: 300 concurrent, {refused} refused, then {then} more one at a time; ledger {events} admitted, {spent} micro-USD of 20000");
        assert!(refused > 0);
        // Without what was spent before the loss, about 4000 more would pass.
        assert!((18_000..=20_000).contains(&spent), "{spent}");
    });
}

/// Fail-open: with Redis cut, each instance admits from its share (a half
/// here) of what the ledger says remains, and the budget still holds.
#[test]
fn fail_open_admits_each_instance_its_share() {
    crate::helpers::run(async {
        let (mut p, token) =
            with_budget(REDIS, &[("TOLLGATE_PROXY__REDIS_FAIL_OPEN", "true")]).await;
        for url in [&p.a.url, &p.b.url] {
            until(url, &token, 200).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.relay.cut();
        for url in [&p.a.url, &p.b.url] {
            let started = Instant::now();
            loop {
                let body: Value = reqwest::get(format!("{url}/readyz"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if body["counters"]["state"] == "fail_open" {
                    assert_eq!(body["counters"]["instances"], 2, "{body}");
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "{body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            until(url, &token, 200).await;
        }
        let urls = [p.a.url.clone(), p.b.url.clone()];
        let statuses = burst(&urls, &token, 300).await;
        // Back: what the fallbacks metered reaches Redis, which refuses more.
        p.relay.pause(false);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A worst case of about 10000 micro-USD: it fits in what remained
        // before the outage, not in what remains after it.
        let after = chat(&p.a.url, &token, 1000).await;
        let (events, spent) = ledger(&mut p).await;
        eprintln!(
            "fail-open: {statuses:?} during the outage; after it {}; ledger {events} admitted, {spent} micro-USD of 20000",
            after.0
        );
        assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
        assert!(statuses.get(&402).copied().unwrap_or(0) > 0, "{statuses:?}");
        assert_eq!(after.0, 402, "{:?}", after.1);
        assert!(spent <= 20_000, "{spent}");
    });
}

/// A `redis-server` of the test's own, on a free port, with its snapshot
/// file in a directory of its own.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.run();
        r
    }

    fn run(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (Debian's package) is needed: {e}"));
        self.child = Some(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).unwrap();
        for _ in 0..200 {
            if let Ok(mut c) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn cli(&self, args: &[&str]) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).unwrap();
        let mut c = client.get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _ = cmd.query::<redis::Value>(&mut c);
    }

    /// Stops without saving and starts again on the same port and
    /// directory: Redis comes back with its last snapshot.
    fn restart(&mut self) {
        self.cli(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.run();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Redis restarted from a snapshot older than the spend since: the
/// instances notice the new server and rebuild from the ledger instead of
/// trusting the stale counters, so the budget still holds.
#[test]
fn a_redis_restarted_from_an_old_snapshot_is_rebuilt() {
    crate::helpers::run(async {
        let mut redis = OwnRedis::start();
        let (mut p, token) = with_budget(&format!("127.0.0.1:{}", redis.port), &[]).await;
        until(&p.b.url, &token, 200).await;
        redis.cli(&["SAVE"]);
        // Spent after the snapshot: 40 requests, about 4000 micro-USD.
        let mut after_snapshot = 0;
        for i in 0..40 {
            let url = if i % 2 == 0 { &p.a.url } else { &p.b.url };
            after_snapshot += i32::from(chat(url, &token, 16).await.0 == 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart();
        let started = Instant::now();
        for url in [&p.a.url, &p.b.url] {
            until(url, &token, 200).await;
        }
        eprintln!(
            "Redis restarted from a snapshot {after_snapshot} requests old: both admit again after {:?}",
            started.elapsed()
        );
        let urls = [p.a.url.clone(), p.b.url.clone()];
        let then = exhaust(&urls, &token).await;
        let (events, spent) = ledger(&mut p).await;
        eprintln!(
            "after the restart {then} more; ledger {events} admitted, {spent} micro-USD of 20000"
        );
        assert!((18_000..=20_000).contains(&spent), "{spent}");
    });
}
