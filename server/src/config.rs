//! Configuration: built-in defaults, then an optional TOML file, then
//! `TOLLGATE_*` environment variables (and `DATABASE_URL`). Nothing is required.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use rand::RngCore;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tollgate_app::core::state::OrgCreation;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Address the console and APIs listen on.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; default: a SQLite file in the data dir.
    pub database_url: Option<String>,
    /// Where the SQLite file and the generated server secret live.
    pub data_dir: PathBuf,
    /// Where the console is reached from outside (links, secure cookies).
    pub public_url: Option<String>,
    /// Where the built browser bundle is (`pkg/`).
    pub site_root: PathBuf,
    /// Sign-in attempts a minute per account from one client address, and
    /// per client address.
    pub login_attempts_per_account: u32,
    pub login_attempts_per_ip: u32,
    /// A session ends after this many seconds unused, and this many after
    /// sign-in however active.
    pub session_idle_secs: u64,
    pub session_absolute_secs: u64,
    /// The server secret; generated into the data dir when not given.
    /// Redacted in `Debug`, never serialized.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// The bearer token `GET /metrics` asks for; without one it is off
    /// (404). Redacted in `Debug`, never serialized.
    #[serde(skip_serializing)]
    pub metrics_token: Option<SecretString>,
    /// The `/v1` proxy (`[proxy]` in TOML, `TOLLGATE_PROXY__*` in the environment).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Budget and expiry alerts (`[alerts]`, `TOLLGATE_ALERTS__*`).
    #[serde(default)]
    pub alerts: AlertConfig,
    /// Whether providers, webhooks and MCP servers may be on loopback,
    /// private, link-local or CGNAT addresses. Off: a tenant could otherwise
    /// read internal services through the proxy.
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Who creates organizations from the console: `anyone` signed in, or
    /// `operators` only (the CLI and the first-run setup).
    #[serde(default)]
    pub org_creation: OrgCreation,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertConfig {
    /// How often budgets and expiries are looked at, and due deliveries sent.
    pub interval_ms: u64,
    /// A failed delivery is retried after this, doubling each time (at most
    /// an hour), up to `max_attempts` attempts.
    pub retry_base_ms: u64,
    pub max_attempts: u32,
    /// One delivery's timeout.
    pub timeout_ms: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            interval_ms: 30_000,
            retry_base_ms: 10_000,
            max_attempts: 8,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Upstream timeouts: connecting, a whole answer, and the gap between
    /// two chunks of a stream (or before its first).
    pub connect_timeout_ms: u64,
    pub upstream_timeout_ms: u64,
    pub stream_idle_timeout_ms: u64,
    /// Bodies kept in the content log are cut after this many bytes each.
    pub content_log_max_bytes: usize,
    /// The usage ledger: events waiting in memory at most, a batch at most,
    /// and how long an event waits before it is written.
    pub ledger_queue: usize,
    pub ledger_batch: usize,
    pub ledger_flush_ms: u64,
    /// How often the change log is read even without a notification (the
    /// safety net under PostgreSQL's LISTEN).
    pub change_poll_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (IPs or CIDRs;
    /// `TOLLGATE_TRUSTED_PROXIES`, comma-separated). Empty: none is, and the
    /// IP allowlist sees the TCP peer.
    #[serde(
        serialize_with = "nets::serialize",
        deserialize_with = "nets::deserialize"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Redis for counters shared by every instance (`TOLLGATE_REDIS_URL`,
    /// e.g. `redis://127.0.0.1:6379/0`). Unset: each process counts alone.
    /// Redacted in `Debug` (it may hold a password), never serialized.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// Every Tollgate key in Redis starts with this and a colon.
    pub redis_prefix: String,
    /// One Redis command's bound; past it the request is refused (or, with
    /// `redis_fail_open`, admitted from this instance's share).
    pub redis_timeout_ms: u64,
    /// With Redis unreachable: refuse with 503 (false, the default) or
    /// admit within this instance's share of every rate and of what the
    /// ledger says remains of every budget.
    pub redis_fail_open: bool,
    /// How long a reservation in Redis holds without its settlement (an
    /// instance that died mid-request gives it back after this).
    pub reservation_ttl_ms: u64,
    /// A virtual model's target that fails this many times in a row is
    /// taken out of its routes for `breaker_cool_down_ms`, then tried again.
    pub breaker_failures: u32,
    pub breaker_cool_down_ms: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            default_max_tokens: 4096,
            connect_timeout_ms: 5_000,
            upstream_timeout_ms: 600_000,
            stream_idle_timeout_ms: 60_000,
            content_log_max_bytes: 16 * 1024,
            ledger_queue: 100_000,
            ledger_batch: 5_000,
            ledger_flush_ms: 1_000,
            change_poll_ms: 2_000,
            trusted_proxies: Vec::new(),
            redis_url: None,
            redis_prefix: "tollgate".into(),
            redis_timeout_ms: 1_000,
            redis_fail_open: false,
            reservation_ttl_ms: 15 * 60_000,
            breaker_failures: 3,
            breaker_cool_down_ms: 30_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: None,
            data_dir: PathBuf::from("data"),
            public_url: None,
            site_root: PathBuf::from("target/site"),
            login_attempts_per_account: 5,
            login_attempts_per_ip: 60,
            session_idle_secs: 12 * 60 * 60,
            session_absolute_secs: 7 * 24 * 60 * 60,
            secret_key: None,
            metrics_token: None,
            proxy: ProxyConfig::default(),
            alerts: AlertConfig::default(),
            allow_private_networks: false,
            org_creation: OrgCreation::Anyone,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Reads `file` if given (or `TOLLGATE_CONFIG`, or `./tollgate.toml` if it
    /// exists), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("tollgate.toml")).filter(|p| p.exists()));
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["TOLLGATE_TRUSTED_PROXIES"])
                    .map(|_| "proxy.trusted_proxies".into()),
            )
            .merge(
                Env::raw()
                    .only(&["TOLLGATE_REDIS_URL"])
                    .map(|_| "proxy.redis_url".into()),
            )
            .merge(
                Env::prefixed("TOLLGATE_")
                    .ignore(&["CONFIG", "TRUSTED_PROXIES", "REDIS_URL"])
                    .split("__"),
            );
        fig.extract().map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("tollgate.db").display()))
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Creates the data dir (and tightens an existing one) for its owner
    /// only: it holds the database and the server secret.
    pub fn ensure_data_dir(&self) -> Result<(), ConfigError> {
        let io = |source| ConfigError::DataDir {
            path: self.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io)?;
        // A directory that is new, empty, or Tollgate's own from an older
        // version is made private; one the operator shares with other things
        // is left as it is (the database and secret files are 0600 themselves).
        let empty = std::fs::read_dir(&self.data_dir)
            .map_err(io)?
            .next()
            .is_none();
        let ours = ["tollgate.db", "secret.key"]
            .iter()
            .any(|f| self.data_dir.join(f).exists());
        #[cfg(unix)]
        if empty || ours {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        Ok(())
    }

    /// The configured secret, or the one kept in the data dir (made on first start).
    pub fn secret(&self) -> Result<SecretString, ConfigError> {
        if let Some(s) = &self.secret_key {
            return Ok(s.clone());
        }
        self.ensure_data_dir()?;
        let path = self.data_dir.join("secret.key");
        let io = |source| ConfigError::DataDir {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(SecretString::from(s.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut bytes = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        write_private(&path, &secret).map_err(io)?;
        Ok(SecretString::from(secret))
    }
}

/// A list of addresses and networks: a TOML list, or one comma-separated
/// string (as an environment variable is). A bare address is a /32 (/128).
mod nets {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("trusted_proxies: '{s}' is not an IP address or CIDR"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        let items = match Raw::deserialize(d)? {
            Raw::One(s) => s.split(',').map(str::to_owned).collect(),
            Raw::Many(v) => v,
        };
        items
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse(s).map_err(serde::de::Error::custom))
            .collect()
    }

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(ToString::to_string))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure type is figment's"
)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file_and_env_overrides() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
            assert_eq!(c.database_url(), "sqlite://data/tollgate.db");
            jail.set_env("TOLLGATE_LISTEN", "127.0.0.1:4000");
            jail.set_env("DATABASE_URL", "postgres://x@127.0.0.1/y");
            jail.create_file("tollgate.toml", "public_url = \"https://gw.example.com/\"")?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
            assert_eq!(c.database_url(), "postgres://x@127.0.0.1/y");
            assert_eq!(c.public_url(), "https://gw.example.com");
            assert!(!c.allow_private_networks);
            assert_eq!(c.org_creation, OrgCreation::Anyone);
            jail.set_env("TOLLGATE_ALLOW_PRIVATE_NETWORKS", "true");
            jail.set_env("TOLLGATE_ORG_CREATION", "operators");
            jail.set_env("TOLLGATE_PROXY__DEFAULT_MAX_TOKENS", "512");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.proxy.default_max_tokens, 512);
            assert_eq!(c.proxy.ledger_batch, 5_000);
            assert!(c.allow_private_networks);
            assert_eq!(c.org_creation, OrgCreation::Operators);
            assert!(c.proxy.trusted_proxies.is_empty());
            assert!(c.proxy.redis_url.is_none());
            jail.set_env("TOLLGATE_REDIS_URL", "redis://:pw@127.0.0.1:6379/2");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let url = c
                .proxy
                .redis_url
                .as_ref()
                .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned());
            assert_eq!(url.as_deref(), Some("redis://:pw@127.0.0.1:6379/2"));
            assert!(
                !format!("{c:?}").contains(":pw@"),
                "the URL's password is redacted"
            );
            jail.set_env("TOLLGATE_REDIS_URL", "");
            jail.create_file(
                "tollgate.toml",
                "[proxy]\ntrusted_proxies = [\"::1\", \"172.16.0.0/12\"]",
            )?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.proxy.trusted_proxies.len(), 2);
            jail.set_env("TOLLGATE_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let nets: Vec<String> = c
                .proxy
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(nets, ["10.0.0.1/32", "192.168.0.0/16"]);
            jail.set_env("TOLLGATE_TRUSTED_PROXIES", "10.0.0.1,nonsense");
            let e = Config::load(None).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains("nonsense"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_configured_secret_is_redacted_in_debug() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_SECRET_KEY", "very-secret-value");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(!format!("{c:?}").contains("very-secret-value"));
            use secrecy::ExposeSecret;
            assert_eq!(
                c.secret().map_err(|e| e.to_string())?.expose_secret(),
                "very-secret-value"
            );
            Ok(())
        });
    }

    #[test]
    fn the_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        use secrecy::ExposeSecret;
        let a = c.secret().unwrap().expose_secret().to_owned();
        let b = c.secret().unwrap().expose_secret().to_owned();
        assert_eq!(a.len(), 64);
        assert_eq!(a, b);
    }
}
