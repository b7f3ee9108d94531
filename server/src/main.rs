//! `tollgate`: serve the gateway, or run an operator command.

use clap::Parser;
use std::process::ExitCode;
use tollgate_server::cli::{Cli, Command};
use tollgate_server::config::Config;

/// The proxy allocates per request (JSON bodies, headers); mimalloc keeps
/// that cheap under many threads (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_sessions=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Admin(cmd) => tollgate_server::cli::admin(&config, cmd).await,
    }
}

async fn run(config: Config) -> Result<(), tollgate_server::StartError> {
    let state = tollgate_server::state(&config).await?;
    tollgate_server::spawn_session_cleanup(&state.db);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| tollgate_server::StartError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_or(config.listen, |a| a);
    tracing::info!(backend = ?state.db.backend, "Tollgate console: http://{addr}");
    let gateway = tollgate_server::proxy::Gateway::start(&state, &config.proxy)
        .await
        .map_err(tollgate_server::StartError::Proxy)?;
    tollgate_server::alerts::Alerter::new(
        state.db.clone(),
        config.alerts.clone(),
        config.allow_private_networks,
    )
    .spawn();
    let app = tollgate_server::router(state, gateway.clone());
    let served = tollgate_server::serve(listener, app, shutdown_signal())
        .await
        .map_err(|source| tollgate_server::StartError::Listen {
            addr: addr.to_string(),
            source,
        });
    // Every request has finished: write the usage events still queued.
    gateway.shutdown().await;
    tracing::info!("usage ledger flushed; stopped");
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
