//! Seeds millions of usage events (default 10,000,000, over 90 days, 30 keys
//! in 3 projects, 4 models), rolls them up as the migration does, and times
//! the usage page's and the statement's server functions over HTTP; then,
//! for comparison, the same daily sums read straight off the event ledger.
//! Prints figures; asserts nothing.
//!
//! cargo run --release -p tollgate-server --example usage_bench -- [sqlite|postgres] [events]

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a bench script")]

use std::time::{Duration, Instant};

mod bench_support;

#[tokio::main]
async fn main() {
    let (bench, org, n) = bench_support::from_args::<i64>(10_000_000).await;
    let mut conn = bench.state.db.pool.acquire().await.unwrap();
    sqlx::query("CREATE TABLE bench_keys (i BIGINT PRIMARY KEY, key_id TEXT NOT NULL, project_id TEXT NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut projects = Vec::new();
    for p in 0..3 {
        let id = bench
            .post(
                "create_project",
                vec![("org_id", org.clone()), ("name", format!("Project {p}"))],
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        projects.push(id);
    }
    for k in 0..30i64 {
        let p = &projects[usize::try_from(k % 3).unwrap()];
        let issued = bench
            .post(
                "create_key",
                vec![
                    ("org_id", org.clone()),
                    ("project_id", p.clone()),
                    ("name", format!("key-{k:02}")),
                    ("max_budget", "1000".into()),
                    ("budget_reset", "monthly".into()),
                    ("tpm", String::new()),
                    ("rpm", String::new()),
                    ("expires_at", String::new()),
                    ("tags", String::new()),
                ],
            )
            .await;
        sqlx::query("INSERT INTO bench_keys (i, key_id, project_id) VALUES ($1, $2, $3)")
            .bind(k)
            .bind(issued["key"]["id"].as_str().unwrap())
            .bind(p)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let now = tollgate_app::core::now_ms();
    let started = Instant::now();
    // Events every ~0.78 s over 90 days, seeded in chunks of a million.
    let series = if bench.backend == "postgres" {
        "SELECT g AS x FROM generate_series($1::BIGINT, $2::BIGINT) g"
    } else {
        "WITH RECURSIVE s(x) AS (SELECT $1 UNION ALL SELECT x + 1 FROM s WHERE x < $2) SELECT x FROM s"
    };
    let chunk = 1_000_000i64;
    let mut from = 1;
    while from <= n {
        let to = (from + chunk - 1).min(n);
        let sql = format!(
            "INSERT INTO usage_events (request_id, at, org_id, project_id, key_id, model, provider, endpoint, \
             stream, tokens_in, tokens_out, cost_micros, status, error_code, latency_ms, requested_model) \
             SELECT 'r' || CAST(g.x AS TEXT), $3 - (g.x % 7776000) * 1000, $4, k.project_id, k.key_id, \
             CASE g.x % 4 WHEN 0 THEN 'mock/echo' WHEN 1 THEN 'mock/fast' WHEN 2 THEN 'mock/priced' ELSE 'mock/embed' END, \
             'mock', 'chat', 0, 100 + g.x % 50, 20 + g.x % 30, (120 + g.x % 80) * 10, \
             CASE WHEN g.x % 50 = 0 THEN 429 ELSE 200 END, NULL, 5, \
             CASE g.x % 4 WHEN 0 THEN 'mock/echo' WHEN 1 THEN 'mock/fast' WHEN 2 THEN 'mock/priced' ELSE 'mock/embed' END \
             FROM ({series}) g JOIN bench_keys k ON k.i = g.x % 30"
        );
        sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(&org)
            .execute(&mut *conn)
            .await
            .unwrap();
        from = to + 1;
    }
    let seeded = started.elapsed();
    let started = Instant::now();
    // The rollup, built as migration 0006 builds it from an existing ledger.
    sqlx::query("DELETE FROM usage_daily")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO usage_daily (org_id, day, project_id, key_id, model, requested_model, endpoint, requests, errors, tokens_in, tokens_out, cost_micros) \
         SELECT org_id, CAST(at / 86400000 AS BIGINT), project_id, key_id, model, model, endpoint, COUNT(*), \
         CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT), CAST(SUM(tokens_in) AS BIGINT), \
         CAST(SUM(tokens_out) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT) FROM usage_events \
         GROUP BY org_id, CAST(at / 86400000 AS BIGINT), project_id, key_id, model, endpoint",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let rolled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_daily")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    println!(
        "backend {}: seeded {n} usage events in {:.1} s; rolled up into {rolled} rows in {:.1} s",
        bench.backend,
        seeded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let month = tollgate_app::format::month_of(now);
    let base = vec![("org_id", org.clone())];
    type Form<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, &str, Form)> = vec![
        ("usage page, 30 days", "get_usage", base.clone()),
        (
            "usage page, 90 days",
            "get_usage",
            [base.clone(), vec![("days", "90".into())]].concat(),
        ),
        (
            "usage page, 365 days",
            "get_usage",
            [base.clone(), vec![("days", "365".into())]].concat(),
        ),
        (
            "usage page, 30 days, one project",
            "get_usage",
            [base.clone(), vec![("project_id", projects[0].clone())]].concat(),
        ),
        (
            "statement, this month",
            "get_statement",
            [base.clone(), vec![("month", month.clone())]].concat(),
        ),
        ("billing standing (banner)", "get_stop", base.clone()),
    ];
    for (label, f, form) in cases {
        let mut times: Vec<Duration> = Vec::new();
        let mut requests = 0;
        for _ in 0..15 {
            let t = Instant::now();
            let r = bench.post(f, form.clone()).await;
            times.push(t.elapsed());
            requests = r["totals"]["requests"].as_i64().unwrap_or(0);
        }
        times.sort();
        println!(
            "  {label:<36} requests {requests:>9}  p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms",
            ms(times[7]),
            ms(times[13]),
            ms(times[14])
        );
    }
    // For comparison: 30 days of daily sums read off the events themselves.
    let t = Instant::now();
    let rows = sqlx::query(
        "SELECT CAST(at / 86400000 AS BIGINT) AS day, COUNT(*) AS n, CAST(SUM(cost_micros) AS BIGINT) AS cost FROM usage_events \
         WHERE org_id = $1 AND at >= $2 GROUP BY CAST(at / 86400000 AS BIGINT)",
    )
    .bind(&org)
    .bind(now - 30 * 86_400_000)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    println!(
        "  {:<36} {} days in {:.1} ms (what the rollup avoids)",
        "daily sums off the ledger, 30 days",
        rows.len(),
        ms(t.elapsed())
    );
}
