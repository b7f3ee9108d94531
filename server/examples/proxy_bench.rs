//! What the proxy adds: a fast fake upstream (OpenAI-shaped, usage included,
//! streams of 8 chunks), Tollgate in front of it with every check on (key,
//! project and org budgets, RPM and TPM limits set high enough not to refuse,
//! an IP allowlist, the ledger writing to SQLite), and an open-loop load
//! generator at fixed rates. Latency is measured for the same requests sent
//! directly and through Tollgate; the difference is what Tollgate adds.
//! Also one request at a time (c=1), and the most requests a second each
//! path completes with 16 and 64 in flight, and for comparison through a
//! bare forwarder (reqwest behind axum, nothing else). Prints figures; asserts
//! nothing. All of it shares this machine's cores.
//!
//! cargo run --release -p tollgate-server --example proxy_bench -- [seconds per run, default 10] [local|redis|two]
//!
//! `local` (the default): one instance on SQLite, counters in process.
//! `redis`: the same with counters in the machine's Redis (127.0.0.1:6379,
//! under a prefix of its own, deleted after). `two`: two instances on a
//! fresh PostgreSQL database (127.0.0.1:5432) sharing counters in Redis;
//! requests through Tollgate alternate between them.

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

/// The least any proxy does, for comparison: an HTTP server that sends each
/// request's body to the upstream with reqwest and passes the answer back
/// as it comes (no key, no limits, no metering, no ledger). On its own
/// runtime of 2 workers, as Tollgate's.
fn start_bare_forwarder(upstream: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("bare")
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                .build()
                .unwrap();
            let url = format!("{upstream}/chat/completions");
            let app = axum::Router::new().route(
                "/v1/chat/completions",
                post(move |body: axum::body::Bytes| {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        let res = http
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        let kind = res.headers().get("content-type").cloned().unwrap();
                        (
                            [("content-type", kind)],
                            axum::body::Body::from_stream(res.bytes_stream()),
                        )
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

/// How the instances under test are set up.
#[derive(Clone)]
struct Setup {
    database_url: Option<String>,
    redis_prefix: Option<String>,
}

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// Tollgate on a runtime of its own (2 workers), with a fresh SQLite file
/// unless `setup` names a database.
fn start_tollgate(dir: &std::path::Path, setup: &Setup) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    let setup = setup.clone();
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
            let mut config = bench_server::config(
                addr,
                setup
                    .database_url
                    .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display())),
                dir.join("data"),
            );
            if let Some(prefix) = setup.redis_prefix {
                config.proxy.redis_url = Some(REDIS.into());
                config.proxy.redis_prefix = prefix;
            }
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

/// Where requests go: one URL, or several taken in turn.
/// The API a request speaks: chat, or the Responses or Messages API
/// (which Tollgate translates for the chat-only upstream).
#[derive(Clone, Copy)]
enum Api {
    Chat,
    Responses,
    Messages,
}

#[derive(Clone)]
struct Target {
    urls: Arc<Vec<String>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    model: &'static str,
    api: Api,
}

impl Target {
    fn new(urls: Vec<String>, token: String, model: &'static str) -> Target {
        Target {
            urls: Arc::new(urls),
            next: Arc::default(),
            token,
            model,
            api: Api::Chat,
        }
    }

    fn speaking(&self, api: Api) -> Target {
        Target {
            api,
            ..self.clone()
        }
    }

    fn url(&self) -> &str {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.urls[i % self.urls.len()]
    }
}

async fn one(http: &reqwest::Client, t: &Target, body: &bytes::Bytes) -> bool {
    let path = match t.api {
        Api::Chat => "chat/completions",
        Api::Responses => "responses",
        Api::Messages => "messages",
    };
    let res = http
        .post(format!("{}/{path}", t.url()))
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

fn body(t: &Target, stream: bool) -> bytes::Bytes {
    let model = t.model;
    let v = match t.api {
        Api::Chat => json!({ "model": model, "stream": stream, "max_tokens": 64,
            "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Tell me about foxes." }] }),
        Api::Responses => json!({ "model": model, "stream": stream, "max_output_tokens": 64,
            "instructions": "Be brief.", "input": "Tell me about foxes." }),
        Api::Messages => json!({ "model": model, "stream": stream, "max_tokens": 64,
            "system": "Be brief.", "messages": [{ "role": "user", "content": "Tell me about foxes." }] }),
    };
    bytes::Bytes::from(v.to_string())
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
    let body = body(t, stream);
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

/// One request at a time for `secs`: latencies in microseconds.
async fn serial(http: &reqwest::Client, t: &Target, stream: bool, secs: u64) -> Vec<u64> {
    let body = body(t, stream);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    while Instant::now() < until {
        let began = Instant::now();
        if one(http, t, &body).await {
            lat.push(u64::try_from(began.elapsed().as_micros()).unwrap());
        }
    }
    lat.sort_unstable();
    lat
}

/// Closed loop: `workers` in flight for `secs`; completed requests a second.
async fn max_rps(
    http: &reqwest::Client,
    t: &Target,
    stream: bool,
    workers: usize,
    secs: u64,
) -> f64 {
    let body = body(t, stream);
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

/// A fresh PostgreSQL database for the `two` setup.
async fn fresh_pg() -> String {
    use sqlx::Connection;
    let name = format!("tollgate_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Deletes the bench's keys from Redis (its prefix only).
fn clean_redis(prefix: &str) {
    let mut conn = redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).query::<()>(&mut conn).unwrap();
    }
}

fn main() {
    let secs: u64 = std::env::args().nth(1).map_or(10, |s| s.parse().unwrap());
    let which = std::env::args().nth(2).unwrap_or_else(|| "local".into());
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream();
    let prefix = format!("tollgate-bench-{}", uuid::Uuid::new_v4().simple());
    let setup = match which.as_str() {
        "local" => Setup {
            database_url: None,
            redis_prefix: None,
        },
        "redis" => Setup {
            database_url: None,
            redis_prefix: Some(prefix.clone()),
        },
        "two" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            Setup {
                database_url: Some(rt.block_on(fresh_pg())),
                redis_prefix: Some(prefix.clone()),
            }
        }
        other => panic!("setup {other}: one of local, redis, two"),
    };
    let instances = if which == "two" { 2 } else { 1 };
    let shared = which != "local";
    let bare = start_bare_forwarder(upstream.clone());
    let tollgates: Vec<String> = (0..instances)
        .map(|i| start_tollgate(&dir.path().join(i.to_string()), &setup))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let token = configure(&tollgates[0], &upstream).await;
        let direct = Target::new(vec![upstream.clone()], "unused".into(), "up");
        let through = Target::new(
            tollgates.iter().map(|t| format!("{t}/v1")).collect(),
            token,
            "bench/fast",
        );
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap();
        // Every instance knows the key (the change feed) before the run.
        let probe = body(&through, false);
        while !(one(&http, &through, &probe).await && one(&http, &through, &probe).await) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Warm up every path (connections, tokenizer, caches; the upstream's
        // 404 to the Responses API, after which it is sent chat).
        let responses = through.speaking(Api::Responses);
        let messages = through.speaking(Api::Messages);
        for t in [&direct, &through, &responses, &messages] {
            for stream in [false, true] {
                let (_, failed) = fixed_rate(&http, t, stream, 500, 2).await;
                assert_eq!(failed, 0, "warm-up failed against {:?}", t.urls);
            }
        }
        println!("machine: {}; {secs} s per run; setup {which} ({instances} instance(s)); load generator, Tollgate and upstream share it", machine());
        println!();
        println!("| load | mode | direct p50 / p99 (ms) | through Tollgate p50 / p99 (ms) | added p50 / p99 (ms) | through p99.9 / max (ms) | failed |");
        println!("|---|---|---|---|---|---|---|");
        let row = |load: &str, stream: bool, d: &[u64], g: &[u64], failed: usize| {
            println!(
                "| {load} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.2} / {:.2} | {failed} |",
                if stream { "stream" } else { "plain" },
                pct(d, 0.5),
                pct(d, 0.99),
                pct(g, 0.5),
                pct(g, 0.99),
                pct(g, 0.5) - pct(d, 0.5),
                pct(g, 0.99) - pct(d, 0.99),
                pct(g, 0.999),
                pct(g, 1.0),
            );
        };
        for stream in [false, true] {
            let d = serial(&http, &direct, stream, secs).await;
            let g = serial(&http, &through, stream, secs).await;
            row("c=1", stream, &d, &g, 0);
        }
        // The Responses and Messages APIs, translated to chat and back,
        // against the same direct chat request.
        for (t, name) in [(&responses, "responses"), (&messages, "messages")] {
            for stream in [false, true] {
                let d = serial(&http, &direct, stream, secs).await;
                let g = serial(&http, t, stream, secs).await;
                row(&format!("c=1, {name}"), stream, &d, &g, 0);
            }
        }
        for stream in [false, true] {
            let (d, df) = fixed_rate(&http, &direct, stream, 1000, secs).await;
            let (g, gf) = fixed_rate(&http, &through, stream, 1000, secs).await;
            row("1000/s", stream, &d, &g, df + gf);
        }
        println!();
        let bare = Target::new(vec![bare], "unused".into(), "up");
        println!("| mode | in flight | most requests/s direct | through a bare forwarder | through Tollgate | through / direct | bare / direct |");
        println!("|---|---|---|---|---|---|---|");
        for workers in [16, 64] {
            for stream in [false, true] {
                let d = max_rps(&http, &direct, stream, workers, secs).await;
                let b = max_rps(&http, &bare, stream, workers, secs).await;
                let g = max_rps(&http, &through, stream, workers, secs).await;
                println!(
                    "| {} | {workers} | {d:.0} | {b:.0} | {g:.0} | {:.3} | {:.3} |",
                    if stream { "stream" } else { "plain" },
                    g / d,
                    b / d
                );
            }
        }
    });
    if shared {
        clean_redis(&prefix);
    }
}
