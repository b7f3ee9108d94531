//! Two real `tollgate` processes on one PostgreSQL database: what one
//! instance commits, the other applies through the change feed. Each trial
//! changes something on A, then calls B until B refuses; the delays are
//! printed (p50/p99/max) and each must stay under a second. B polls the log
//! only every minute here, so a delay under a second is the notification's.

use std::time::{Duration, Instant};

use crate::helpers::{paid_project, Backend, Binary, Console, Relay, TestDb};
use serde_json::json;

/// What the issue asks: refused on B within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// B reads the log without a notification only once a minute; the many
/// invitations accepted from one address are not throttled.
const INSTANCE_ENV: [(&str, &str); 2] = [
    ("TOLLGATE_PROXY__CHANGE_POLL_MS", "60000"),
    ("TOLLGATE_LOGIN_ATTEMPTS_PER_IP", "100000"),
];

struct Pair {
    _db: TestDb,
    a: Binary,
    b: Binary,
    owner: Console,
}

async fn pair() -> Pair {
    sqlx::any::install_default_drivers();
    let db = TestDb::new(Backend::Postgres).await;
    let a = Binary::start(&db, &INSTANCE_ENV).await;
    let b = Binary::start(&db, &INSTANCE_ENV).await;
    let owner = Console::set_up(&a.url).await;
    Pair {
        _db: db,
        a,
        b,
        owner,
    }
}

async fn chat_status(url: &str, token: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({ "model": model, "max_tokens": 16,
            "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Calls `url` until it answers `want` (at most 30 s, a guard against a
/// hang); returns how long that took.
async fn until_status(url: &str, token: &str, model: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = chat_status(url, token, model).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} still answers {got}, not {want}, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Prints the delays and checks every one is under [`WITHIN`].
fn report(what: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index"
        )]
        let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
        delays[i]
    };
    eprintln!(
        "{what}: {} trials, refused on B after p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let late = delays.iter().filter(|d| **d >= WITHIN).count();
    assert_eq!(late, 0, "{what}: {late} trials took a second or more");
}

/// A key created on A works on B; revoked on A, B refuses it.
#[test]
fn revocation_on_a_reaches_b_within_a_second() {
    crate::helpers::run(async {
        let p = pair().await;
        let mut delays = Vec::new();
        for _ in 0..100 {
            let (id, token) = p.owner.key(&[]).await;
            until_status(&p.b.url, &token, "mock/echo", 200).await;
            p.owner
                .call("revoke_key", &[("org_id", &p.owner.org), ("key_id", &id)])
                .await;
            delays.push(until_status(&p.b.url, &token, "mock/echo", 401).await);
        }
        report("revocation", delays);
    });
}

/// Rotation without grace: the old token stops on B, the new one works.
#[test]
fn rotation_without_grace_reaches_b_within_a_second() {
    crate::helpers::run(async {
        let p = pair().await;
        let mut delays = Vec::new();
        for _ in 0..100 {
            let (id, old) = p.owner.key(&[]).await;
            until_status(&p.b.url, &old, "mock/echo", 200).await;
            let issued = p
                .owner
                .call(
                    "rotate_key",
                    &[
                        ("org_id", &p.owner.org),
                        ("key_id", &id),
                        ("grace_minutes", "0"),
                    ],
                )
                .await;
            delays.push(until_status(&p.b.url, &old, "mock/echo", 401).await);
            let new = issued["token"].as_str().unwrap();
            until_status(&p.b.url, new, "mock/echo", 200).await;
        }
        report("rotation without grace", delays);
    });
}

/// A key spends on B; its budget lowered below that spend on A, B refuses.
#[test]
fn a_budget_lowered_below_spend_reaches_b_within_a_second() {
    crate::helpers::run(async {
        let p = pair().await;
        let o = &p.owner;
        paid_project(o, &[]).await;
        let mut delays = Vec::new();
        for _ in 0..100 {
            let (id, token) = o.key(&[("models[0]", "paid/echo")]).await;
            until_status(&p.b.url, &token, "paid/echo", 200).await;
            let mut form = vec![("org_id", o.org.as_str()), ("key_id", id.as_str())];
            form.extend(crate::helpers::NO_LIMITS);
            form.retain(|(f, _)| *f != "max_budget");
            form.extend([
                ("name", "k"),
                ("models[0]", "paid/echo"),
                ("max_budget", "0.000001"),
            ]);
            o.call("update_key", &form).await;
            delays.push(until_status(&p.b.url, &token, "paid/echo", 402).await);
        }
        report("budget lowered below spend", delays);
    });
}

/// A model removed from the project on A: B refuses it, and serves the rest.
#[test]
fn a_model_removed_from_a_project_reaches_b_within_a_second() {
    crate::helpers::run(async {
        let p = pair().await;
        let o = &p.owner;
        let (_, token) = o.key(&[]).await;
        let models = |list: &'static [&'static str]| {
            let mut form = vec![
                ("org_id", o.org.clone()),
                ("project_id", o.project.clone()),
                ("name", "P".to_owned()),
            ];
            for (i, m) in list.iter().enumerate() {
                form.push((["models[0]", "models[1]"][i], (*m).to_owned()));
            }
            form.extend(
                crate::helpers::OPEN_PROJECT
                    .iter()
                    .map(|(k, v)| (*k, (*v).to_owned())),
            );
            form
        };
        let call = |form: Vec<(&'static str, String)>| async move {
            let borrowed: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            o.call("update_project", &borrowed).await;
        };
        let mut delays = Vec::new();
        for _ in 0..100 {
            call(models(&["mock/echo", "mock/fast"])).await;
            until_status(&p.b.url, &token, "mock/echo", 200).await;
            call(models(&["mock/fast"])).await;
            delays.push(until_status(&p.b.url, &token, "mock/echo", 403).await);
            assert_eq!(chat_status(&p.b.url, &token, "mock/fast").await, 200);
        }
        report("model removed from a project", delays);
    });
}

/// A member removed from the organization on A: their key stops on B.
#[test]
fn a_member_removed_from_the_organization_reaches_b_within_a_second() {
    crate::helpers::run(async {
        let p = pair().await;
        let o = &p.owner;
        let mut delays = Vec::new();
        for i in 0..100 {
            let email = format!("m{i}@a.test");
            let invited = o
                .call(
                    "invite_member",
                    &[("org_id", &o.org), ("email", &email), ("role", "member")],
                )
                .await;
            let link = invited["link"].as_str().unwrap();
            let token = link.rsplit('/').next().unwrap();
            let member = Console {
                url: p.a.url.clone(),
                http: reqwest::Client::builder()
                    .cookie_store(true)
                    .build()
                    .unwrap(),
                org: o.org.clone(),
                project: o.project.clone(),
            };
            member
                .call(
                    "accept_invitation",
                    &[
                        ("token", token),
                        ("name", &email),
                        ("password", "member-password-1234"),
                    ],
                )
                .await;
            let me = member.call("current_user", &[]).await;
            let user_id = me["id"].as_str().unwrap();
            o.call(
                "add_project_member",
                &[
                    ("org_id", &o.org),
                    ("project_id", &o.project),
                    ("user_id", user_id),
                    ("role", "member"),
                ],
            )
            .await;
            let (_, key) = member.key(&[]).await;
            until_status(&p.b.url, &key, "mock/echo", 200).await;
            o.call("remove_member", &[("org_id", &o.org), ("user_id", user_id)])
                .await;
            delays.push(until_status(&p.b.url, &key, "mock/echo", 401).await);
        }
        report("member removed from the organization", delays);
    });
}

/// How many connections of B's (`application_name` tollgate-b) listen.
async fn b_listens(admin: &mut sqlx::PgConnection, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 \
         AND application_name = 'tollgate-b' AND query LIKE 'LISTEN %'",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// B reaches PostgreSQL through a relay. The relay stops taking new
/// connections and every connection of B is killed (`pg_terminate_backend`):
/// its listener, its log reader, its pool. A revokes a key in that gap; B,
/// cut off, still admits it. Once B can connect again it applies the
/// revocation from the log (its poll is a minute away, and the
/// notification was lost), then listens again: the next revocation arrives
/// within a second.
#[test]
fn a_listener_killed_mid_run_misses_nothing() {
    crate::helpers::run(async {
        sqlx::any::install_default_drivers();
        let db = TestDb::new(Backend::Postgres).await;
        let mut direct = url::Url::parse(&db.url).unwrap();
        let upstream = format!(
            "{}:{}",
            direct.host_str().unwrap(),
            direct.port().unwrap_or(5432)
        );
        let relay = Relay::start(&upstream).await;
        direct.set_port(Some(relay.port)).unwrap();
        direct.set_query(Some("application_name=tollgate-b"));
        let a = Binary::start(&db, &INSTANCE_ENV).await;
        let mut env = INSTANCE_ENV.to_vec();
        env.push(("TOLLGATE_DATABASE_URL", direct.as_str()));
        let b = Binary::start(&db, &env).await;
        let o = Console::set_up(&a.url).await;
        let (first, first_token) = o.key(&[]).await;
        let (second, second_token) = o.key(&[]).await;
        until_status(&b.url, &first_token, "mock/echo", 200).await;
        until_status(&b.url, &second_token, "mock/echo", 200).await;
        let name = db.pg_name().unwrap();
        let mut admin =
            <sqlx::PgConnection as sqlx::Connection>::connect(&crate::helpers::pg_admin_url())
                .await
                .unwrap();
        assert_eq!(b_listens(&mut admin, name).await, 1, "B listens");

        relay.pause(true);
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'tollgate-b'",
        )
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(killed.len() >= 2, "B's listener and log reader at least");
        o.call("revoke_key", &[("org_id", &o.org), ("key_id", &first)])
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            chat_status(&b.url, &first_token, "mock/echo").await,
            200,
            "cut off, B has not seen the revocation"
        );

        relay.pause(false);
        let caught_up = until_status(&b.url, &first_token, "mock/echo", 401).await;
        eprintln!("revoked in the gap: refused on B {caught_up:?} after it could connect again");
        for _ in 0..300 {
            if b_listens(&mut admin, name).await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(b_listens(&mut admin, name).await, 1, "B listens again");
        o.call("revoke_key", &[("org_id", &o.org), ("key_id", &second)])
            .await;
        report(
            "revocation after B listens again",
            vec![until_status(&b.url, &second_token, "mock/echo", 401).await],
        );
        assert!(
            b.log()
                .contains("the change feed's listener lost its connection"),
            "B logged losing its listener"
        );
    });
}

/// Both instances meter one key at once (eight callers, 200 requests split
/// over A and B); once both have stopped (SIGTERM flushes each ledger), the
/// ledger holds every request once, and the daily rollup and the key's
/// lifetime spend equal it.
#[test]
fn two_ledgers_write_one_truth() {
    crate::helpers::run(async {
        let mut p = pair().await;
        let o = &p.owner;
        paid_project(o, &[]).await;
        let (id, token) = o.key(&[("models[0]", "paid/echo")]).await;
        until_status(&p.b.url, &token, "paid/echo", 200).await;
        let urls = [p.a.url.clone(), p.b.url.clone()];
        let callers: Vec<_> = (0..8)
            .map(|c| {
                let (url, token) = (urls[c % 2].clone(), token.clone());
                tokio::spawn(async move {
                    let mut ok = 0;
                    for _ in 0..25 {
                        ok += i64::from(chat_status(&url, &token, "paid/echo").await == 200);
                    }
                    ok
                })
            })
            .collect();
        let mut admitted = 1; // the probe above
        for c in callers {
            admitted += c.await.unwrap();
        }
        assert_eq!(admitted, 201);
        assert_eq!(p.a.stop(), Some(0));
        assert_eq!(p.b.stop(), Some(0));
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&p._db.url)
            .await
            .unwrap();
        let (events, cost): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(SUM(cost_micros) AS BIGINT) FROM usage_events WHERE key_id = $1",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap();
        let (rolled, rolled_cost): (i64, i64) = sqlx::query_as(
            "SELECT CAST(SUM(requests) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT) \
             FROM usage_daily WHERE key_id = $1",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap();
        let spend: i64 =
            sqlx::query_scalar("SELECT CAST(spend_micros AS BIGINT) FROM api_keys WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut db)
                .await
                .unwrap();
        eprintln!("two ledgers: {events} events, {cost} micro-USD; rollup {rolled}, {rolled_cost}; key spend {spend}");
        assert_eq!(events, admitted);
        assert_eq!((rolled, rolled_cost), (events, cost));
        assert_eq!(spend, cost);
        assert!(cost > 0);
    });
}

/// Both instances evaluate alerts every 100 ms: a key past 50% of its budget
/// raises each threshold's alert once, and the receiver gets each once.
#[test]
fn two_alerters_send_each_alert_once() {
    crate::helpers::run(async {
        use std::sync::{Arc, Mutex};
        sqlx::any::install_default_drivers();
        let db = TestDb::new(Backend::Postgres).await;
        let mut env = INSTANCE_ENV.to_vec();
        env.push(("TOLLGATE_ALERTS__INTERVAL_MS", "100"));
        let a = Binary::start(&db, &env).await;
        let b = Binary::start(&db, &env).await;
        let o = Console::set_up(&a.url).await;
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let s = seen.clone();
        let receiver = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, receiver).await });
        o.call(
            "update_alerting",
            &[
                ("org_id", &o.org),
                ("webhook_url", &hook),
                ("slack_url", ""),
                ("thresholds", "50, 80, 100"),
            ],
        )
        .await;
        paid_project(&o, &[]).await;
        let (_, token) = o
            .key(&[
                ("models[0]", "paid/echo"),
                ("max_budget", "0.001"),
                ("budget_reset", "monthly"),
            ])
            .await;
        until_status(&b.url, &token, "paid/echo", 200).await;
        for i in 0..30 {
            let url = if i % 2 == 0 { &a.url } else { &b.url };
            if chat_status(url, &token, "paid/echo").await != 200 {
                break;
            }
        }
        // Both evaluate about 40 times meanwhile, after both ledgers wrote.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let got = seen.lock().unwrap().clone();
        let mut thresholds: Vec<i64> = got
            .iter()
            .filter(|v| v["type"] == "budget")
            .map(|v| v["threshold_percent"].as_i64().unwrap())
            .collect();
        thresholds.sort_unstable();
        eprintln!("two alerters: the receiver got thresholds {thresholds:?}");
        assert_eq!(thresholds, vec![50, 80, 100], "each once: {got:?}");
    });
}

/// A key revoked behind the instance's back (straight in the database, as
/// if its entry had been pruned or written by a version it cannot read),
/// and then a log entry that tells it so: `change` writes that entry.
async fn reloads_when(change: &str) {
    let app = crate::helpers::TestApp::spawn_with(Backend::Postgres, |c| {
        c.proxy.change_poll_ms = 3_600_000;
    })
    .await;
    let (owner, org) = app
        .setup("owner@a.test", crate::helpers::OWNER_PASSWORD)
        .await;
    let project = app.create_project(&owner, &org, "P").await;
    let (id, token) = app.create_key(&owner, &org, &project, &[]).await;
    assert_eq!(chat_status(&app.url, &token, "mock/echo").await, 200);
    app.feed_caught_up().await;
    let mut db = app.sql().await;
    sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::raw_sql(change).execute(&mut db).await.unwrap();
    sqlx::query("SELECT pg_notify('tollgate_changes', 'test')")
        .execute(&mut db)
        .await
        .unwrap();
    until_status(&app.url, &token, "mock/echo", 401).await;
}

/// Entries it never applied were pruned: it reloads everything.
#[test]
fn an_instance_behind_the_retention_reloads_everything() {
    crate::helpers::run(reloads_when(
        "INSERT INTO change_log (kind, ref_id, created_at) VALUES ('org', 'x', 0), ('org', 'y', 0); \
         DELETE FROM change_log WHERE seq < (SELECT MAX(seq) FROM change_log)",
    ));
}

/// An entry of a kind this version does not know: it reloads everything.
#[test]
fn a_change_of_an_unknown_kind_reloads_everything() {
    crate::helpers::run(reloads_when(
        "INSERT INTO change_log (kind, ref_id, created_at) VALUES ('from_a_newer_version', 'x', 0)",
    ));
}

/// Pruning never deletes the newest entry, however old: a reader that
/// missed pruned entries must still find one past them.
#[test]
fn pruning_keeps_the_newest_entry() {
    crate::helpers::run(async {
        let app = crate::helpers::TestApp::spawn(Backend::Postgres).await;
        let mut db = app.sql().await;
        sqlx::raw_sql(
            "INSERT INTO change_log (kind, ref_id, created_at) VALUES ('org', 'a', 0), ('org', 'b', 0)",
        )
        .execute(&mut db)
        .await
        .unwrap();
        let pruned = tollgate_app::core::changes::prune(&mut db, i64::MAX)
            .await
            .unwrap();
        let left: Vec<(String,)> = sqlx::query_as("SELECT ref_id FROM change_log")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(pruned, 1);
        assert_eq!(left, vec![("b".to_owned(),)]);
    });
}
