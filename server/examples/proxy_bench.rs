//! What the proxy adds: a fast fake upstream (OpenAI-shaped, usage included,
//! streams of 8 chunks), Tollgate in front of it with every check on (key,
//! project and org budgets, RPM and TPM limits set high enough not to refuse,
//! an IP allowlist, the ledger writing to SQLite), and an open-loop load
//! generator at fixed rates. Latency is measured for the same requests sent
//! directly and through Tollgate; the difference is what Tollgate adds.
//! Then the most requests a second each path completes with 64 in flight.
//! Prints figures; asserts nothing. All three share this machine's cores.
//!
//! cargo run --release -p tollgate-server --example proxy_bench -- [seconds per run, default 10]

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a bench script")]

use axum::routing::post;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "bench_support/server.rs"]
mod bench_server;

/// As in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHAT: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}"#;

fn stream_body() -> String {
    let mut s = String::new();
    for w in [
        "The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "dog.",
    ] {
        s.push_str(&format!(
            "data: {}\n\n",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{"content":w},"finish_reason":null}],"usage":null})
        ));
    }
    s.push_str(&format!(
        "data: {}\n\n",
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}})
    ));
    s.push_str("data: [DONE]\n\n");
    s
}

/// The fake upstream, on its own single-threaded runtime and thread.
fn start_upstream() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .thread_name("upstream")
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let streamed = Arc::new(stream_body());
            let app = axum::Router::new().route(
                "/v1/chat/completions",
                post(move |body: axum::body::Bytes| {
                    let streamed = streamed.clone();
                    async move {
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if v["stream"] == json!(true) {
                            (
                                [("content-type", "text/event-stream")],
                                streamed.as_str().to_owned(),
                            )
                        } else {
                            ([("content-type", "application/json")], CHAT.to_owned())
                        }
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}/v1", l.local_addr().unwrap()))
                .unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Tollgate on a runtime of its own (2 workers), with a fresh SQLite file.
fn start_tollgate(dir: &std::path::Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("tollgate")
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let config = bench_server::config(
                addr,
                format!("sqlite://{}", dir.join("bench.db").display()),
                dir.join("data"),
            );
            let (state, gateway) = bench_server::state(&config).await;
            tx.send(format!("http://{addr}")).unwrap();
            tollgate_server::serve(
                listener,
                tollgate_server::router(state, gateway),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Sets up an organization, a provider pointing at the upstream, a priced
/// model, a project and a key with every limit on; returns the key.
async fn configure(url: &str, upstream: &str) -> String {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let call = |name: &str, form: Vec<(&str, String)>| {
        let req = http.post(format!("{url}/api/console/{name}")).form(&form);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let v: Value = res.json().await.unwrap();
            assert!(status.is_success(), "{v}");
            v
        }
    };
    let org = call(
        "setup",
        vec![
            ("email", "bench@example.com".into()),
            ("name", "Bench".into()),
            ("password", "bench-password-1234".into()),
            ("org_name", "Bench".into()),
        ],
    )
    .await["org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        "upsert_provider",
        vec![
            ("org_id", org.clone()),
            ("name", "fast".into()),
            ("kind", "openai".into()),
            ("base_url", upstream.into()),
            ("api_key", "sk-bench-upstream".into()),
            ("latency_ms", String::new()),
        ],
    )
    .await;
    call(
        "upsert_model",
        vec![
            ("org_id", org.clone()),
            ("id", "bench/fast".into()),
            ("provider", "fast".into()),
            ("upstream", "up".into()),
            ("input_price", "0.15".into()),
            ("output_price", "0.6".into()),
            ("context_window", "128000".into()),
        ],
    )
    .await;
    call(
        "update_spending",
        vec![
            ("org_id", org.clone()),
            ("spend_cap", "1000000".into()),
            ("spend_cap_reset", "monthly".into()),
        ],
    )
    .await;
    let project = call(
        "create_project",
        vec![("org_id", org.clone()), ("name", "Bench".into())],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        "update_project",
        vec![
            ("org_id", org.clone()),
            ("project_id", project.clone()),
            ("name", "Bench".into()),
            ("models[0]", "bench/fast".into()),
            ("tpm", "1000000000".into()),
            ("rpm", "100000000".into()),
            ("max_budget", "1000000".into()),
            ("budget_reset", "daily".into()),
            ("ip_allowlist", "127.0.0.1/32".into()),
        ],
    )
    .await;
    let issued = call(
        "create_key",
        vec![
            ("org_id", org),
            ("project_id", project),
            ("name", "bench".into()),
            ("max_budget", "100000".into()),
            ("budget_reset", "monthly".into()),
            ("tpm", "1000000000".into()),
            ("rpm", "100000000".into()),
            ("expires_at", String::new()),
            ("tags", String::new()),
        ],
    )
    .await;
    issued["token"].as_str().unwrap().to_owned()
}

#[derive(Clone)]
struct Target {
    url: String,
    token: String,
    model: &'static str,
}

async fn one(http: &reqwest::Client, t: &Target, body: &bytes::Bytes) -> bool {
    let res = http
        .post(format!("{}/chat/completions", t.url))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

fn body(model: &str, stream: bool) -> bytes::Bytes {
    bytes::Bytes::from(
        json!({ "model": model, "stream": stream, "max_tokens": 64,
                "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Tell me about foxes." }] })
        .to_string(),
    )
}

/// Open loop: starts `rate` requests a second for `secs`, whatever the
/// answers do; returns latencies in microseconds and the failures.
async fn fixed_rate(
    http: &reqwest::Client,
    t: &Target,
    stream: bool,
    rate: u64,
    secs: u64,
) -> (Vec<u64>, usize) {
    let body = body(t.model, stream);
    let total = rate * secs;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap());
    for i in 0..total {
        tokio::time::sleep_until(start + period * u32::try_from(i).unwrap()).await;
        let http = http.clone();
        let t = t.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let ok = one(&http, &t, &body).await;
            (ok, u64::try_from(began.elapsed().as_micros()).unwrap())
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for task in tasks {
        let (ok, us) = task.await.unwrap();
        if ok {
            lat.push(us);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    (lat, failed)
}

/// Closed loop: `workers` in flight for `secs`; completed requests a second.
async fn max_rps(
    http: &reqwest::Client,
    t: &Target,
    stream: bool,
    workers: usize,
    secs: u64,
) -> f64 {
    let body = body(t.model, stream);
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (http, t, body) = (http.clone(), t.clone(), body.clone());
            tokio::spawn(async move {
                let mut n = 0_u64;
                while Instant::now() < until {
                    if one(&http, &t, &body).await {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n as f64 / secs as f64
}

fn pct(lat: &[u64], p: f64) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[i] as f64 / 1000.0
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!("{cores} cores, {model}")
}

fn main() {
    let secs: u64 = std::env::args().nth(1).map_or(10, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream();
    let tollgate = start_tollgate(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let token = configure(&tollgate, &upstream).await;
        let direct = Target { url: upstream.clone(), token: "unused".into(), model: "up" };
        let through = Target { url: format!("{tollgate}/v1"), token, model: "bench/fast" };
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap();
        // Warm up both paths (connections, tokenizer, caches).
        for t in [&direct, &through] {
            for stream in [false, true] {
                let (_, failed) = fixed_rate(&http, t, stream, 500, 2).await;
                assert_eq!(failed, 0, "warm-up failed against {}", t.url);
            }
        }
        println!("machine: {}; {secs} s per run; load generator, Tollgate and upstream share it", machine());
        println!();
        println!("| rate | mode | direct p50 / p99 (ms) | through Tollgate p50 / p99 (ms) | added p50 / p99 (ms) | through p99.9 / max (ms) | failed |");
        println!("|---|---|---|---|---|---|---|");
        for rate in [1000_u64, 5000] {
            for stream in [false, true] {
                let (d, df) = fixed_rate(&http, &direct, stream, rate, secs).await;
                let (g, gf) = fixed_rate(&http, &through, stream, rate, secs).await;
                println!(
                    "| {rate}/s | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.2} / {:.2} | {} |",
                    if stream { "stream" } else { "plain" },
                    pct(&d, 0.5),
                    pct(&d, 0.99),
                    pct(&g, 0.5),
                    pct(&g, 0.99),
                    pct(&g, 0.5) - pct(&d, 0.5),
                    pct(&g, 0.99) - pct(&d, 0.99),
                    pct(&g, 0.999),
                    pct(&g, 1.0),
                    df + gf,
                );
            }
        }
        println!();
        println!("| mode | most requests/s direct | most requests/s through Tollgate |");
        println!("|---|---|---|");
        for stream in [false, true] {
            let d = max_rps(&http, &direct, stream, 64, secs).await;
            let g = max_rps(&http, &through, stream, 64, secs).await;
            println!("| {} | {d:.0} | {g:.0} |", if stream { "stream" } else { "plain" });
        }
    });
}
