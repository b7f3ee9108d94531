//! The server every benchmark starts: its configuration and its state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tollgate_app::core::state::AppState;
use tollgate_server::config::Config;
use tollgate_server::proxy::Gateway;

/// The configuration for `addr` and `database_url`; fake upstreams listen on
/// 127.0.0.1, so private networks are allowed.
pub fn config(addr: SocketAddr, database_url: String, data_dir: PathBuf) -> Config {
    Config {
        listen: addr,
        database_url: Some(database_url),
        data_dir,
        public_url: Some(format!("http://{addr}")),
        allow_private_networks: true,
        ..Config::default()
    }
}

/// The state and the proxy gateway for `config`.
pub async fn state(config: &Config) -> (AppState, Arc<Gateway>) {
    let state = tollgate_server::state(config).await.unwrap();
    let gateway = Gateway::start(&state, &config.proxy).await.unwrap();
    (state, gateway)
}
