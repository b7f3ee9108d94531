//! Seeds 100,000 keys into one project and times the console's key list over
//! HTTP (the first page, a tag search, a name search, a deep page), then the
//! machine APIs' lists with a provisioning key (LiteLLM's `/key/list`,
//! FastRouter's `getServiceKeys`, the REST `/api/v1/keys`, the user and team
//! lists). Prints figures; asserts nothing.
//!
//! cargo run --release -p tollgate-server --example key_list_bench -- [sqlite|postgres] [keys]

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a bench script")]

use std::time::{Duration, Instant};

mod bench_support;

#[tokio::main]
async fn main() {
    let (bench, org_id, n) = bench_support::from_args::<usize>(100_000).await;
    let started = Instant::now();
    let project_id = bench.seed_keys(&org_id, n).await;
    println!(
        "backend {}: seeded {n} keys in {:.1} s",
        bench.backend,
        started.elapsed().as_secs_f64()
    );

    let base = vec![
        ("org_id", org_id.clone()),
        ("project_id", project_id.clone()),
    ];
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("first page (newest)", base.clone()),
        (
            "tag search (team-42, 1% of keys)",
            [base.clone(), vec![("tag", "team-42".into())]].concat(),
        ),
        (
            "name search (key-0999)",
            [base.clone(), vec![("search", "key-0999".into())]].concat(),
        ),
        (
            "page 1000 (offset 49,950)",
            [base.clone(), vec![("page", "1000".into())]].concat(),
        ),
    ];
    for (label, form) in cases {
        let mut times: Vec<Duration> = Vec::new();
        let mut total = 0;
        for _ in 0..25 {
            let t = Instant::now();
            let page = bench.post("list_keys", form.clone()).await;
            times.push(t.elapsed());
            total = page["total"].as_i64().unwrap();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  {label:<34} total {total:>6}  p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms",
            ms(times[12]),
            ms(times[23]),
            ms(times[24])
        );
    }

    let pk = bench
        .post(
            "create_provisioning_key",
            vec![("org_id", org_id.clone()), ("name", "bench".into())],
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = bench.url.trim_end_matches("/api/console").to_owned();
    let machine = [
        (
            "/key/list full objects, first page",
            "/key/list?return_full_object=true",
        ),
        (
            "/key/list page 1000 (size 50)",
            "/key/list?return_full_object=true&page=1000&size=50",
        ),
        ("/key/list key_alias=key-500", "/key/list?key_alias=key-500"),
        (
            "/prod/getServiceKeys (no service keys)",
            "/prod/getServiceKeys",
        ),
        ("/api/v1/keys first page (100)", "/api/v1/keys"),
        ("/api/v1/keys tag=team-42", "/api/v1/keys?tag=team-42"),
        ("/user/list", "/user/list"),
        ("/v2/team/list", "/v2/team/list"),
    ];
    for (label, path) in machine {
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..25 {
            let t = Instant::now();
            let res = bench
                .http
                .get(format!("{root}{path}"))
                .bearer_auth(&pk)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.status());
            res.bytes().await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  {label:<40} p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms",
            ms(times[12]),
            ms(times[23]),
            ms(times[24])
        );
    }
}
