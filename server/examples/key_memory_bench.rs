//! What the proxy's key table costs: seeds keys (as the console makes
//! them), then loads them into a fresh proxy memory the way an instance
//! does at start, and prints the resident memory before and after and how
//! long the load took. Prints figures; asserts nothing.
//!
//! cargo run --release -p tollgate-server --example key_memory_bench -- [sqlite|postgres] [keys]

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a bench script")]

use std::time::Instant;
use tollgate_server::proxy::memory::Memory;

mod bench_support;

/// As in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's resident memory in MiB (Linux).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let (bench, org_id, n) = bench_support::from_args::<usize>(100_000).await;
    let started = Instant::now();
    bench.seed_keys(&org_id, n).await;
    println!(
        "backend {}: seeded {n} keys in {:.1} s",
        bench.backend,
        started.elapsed().as_secs_f64()
    );
    let memory = Memory::new(
        bench.state.db.clone(),
        bench.state.secret.clone(),
        bench.state.route_health.clone(),
    );
    let before = rss_mib();
    let started = Instant::now();
    memory.load_all().await.unwrap();
    let took = started.elapsed();
    let after = rss_mib();
    println!(
        "loaded {} keys in {:.2} s; resident {before:.0} MiB before, {after:.0} MiB after: {:.0} MiB for the keys, {:.0} bytes a key",
        memory.key_count(),
        took.as_secs_f64(),
        after - before,
        (after - before) * 1024.0 * 1024.0 / n.max(1) as f64,
    );
}
