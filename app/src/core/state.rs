//! What every server function and handler of the console shares.

use secrecy::SecretString;

use super::auth::Throttle;
use super::db::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Where the console is reached, for links (invitations); no trailing slash.
    pub public_url: String,
    /// Kept in the data dir; for encrypting stored provider keys (later issues).
    pub secret: std::sync::Arc<SecretString>,
    pub throttle: Throttle,
    /// A session ends after this many seconds unused.
    pub session_idle_secs: i64,
    /// A session ends this long after sign-in, however active.
    pub session_absolute_ms: i64,
    pub leptos_options: leptos::config::LeptosOptions,
    /// Writes the proxy must see are published here after they commit.
    pub changes: super::changes::Changes,
}

impl axum::extract::FromRef<AppState> for leptos::config::LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}
