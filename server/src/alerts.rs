//! The alert job: every interval it raises what budgets and expiries call
//! for, then sends due deliveries (Slack-compatible `{"text": …}` or the
//! generic JSON payload), retrying failures with exponential backoff.

use std::time::Duration;
use tollgate_app::core::alerts::{self, Due, Target};
use tollgate_app::core::db::Db;
use tollgate_app::core::now_ms;

use crate::config::AlertConfig;

/// Sends alerts; one per server, several servers may share a database.
#[derive(Clone)]
pub struct Alerter {
    db: Db,
    /// None when it could not be built: a default client would lack the
    /// timeout and the private-network guard, so deliveries fail instead.
    http: Option<reqwest::Client>,
    config: AlertConfig,
    allow_private: bool,
}

/// How long a claimed delivery is someone's before another instance may retry it.
const LEASE_MS: i64 = 60_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;

impl Alerter {
    /// `allow_private`: the operator's `allow_private_networks`.
    pub fn new(db: Db, config: AlertConfig, allow_private: bool) -> Alerter {
        let builder = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms));
        let http = crate::net_guard::guard(builder, allow_private)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the alert HTTP client"))
            .ok();
        Alerter {
            db,
            http,
            config,
            allow_private,
        }
    }

    /// Runs forever at the configured interval.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(self.config.interval_ms.max(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.run_once(now_ms()).await {
                    tracing::warn!(error = %e, "alert job failed; trying again next interval");
                }
            }
        })
    }

    /// One round at `now`: (alerts raised, deliveries attempted).
    pub async fn run_once(&self, now: i64) -> Result<(usize, usize), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let raised = alerts::evaluate(&mut conn, now).await?;
        drop(conn);
        let sent = self.deliver(now).await?;
        Ok((raised, sent))
    }

    /// Sends every delivery due at `now`.
    pub async fn deliver(&self, now: i64) -> Result<usize, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let due = alerts::due(&mut conn, now, 100).await?;
        let mut tried = 0;
        for d in due {
            if !alerts::claim(&mut conn, &d, now, LEASE_MS).await? {
                continue;
            }
            tried += 1;
            let outcome = match self.send(&d).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let attempts = d.attempts + 1;
                    let retry = (attempts < i64::from(self.config.max_attempts)).then(|| {
                        let base = i64::try_from(self.config.retry_base_ms).unwrap_or(i64::MAX);
                        let factor = 1i64 << (attempts - 1).clamp(0, 20);
                        now + base.saturating_mul(factor).min(MAX_BACKOFF_MS)
                    });
                    if retry.is_none() {
                        tracing::warn!(alert = %d.alert_id, target = d.target.as_str(), error = %e, "alert delivery given up");
                    }
                    Err((e, retry))
                }
            };
            alerts::attempted(&mut conn, &d, now_ms().max(now), outcome).await?;
        }
        Ok(tried)
    }

    /// One POST; the error names what happened, never the URL (it holds a token).
    async fn send(&self, d: &Due) -> Result<(), String> {
        let Some(url) = d.url.as_deref() else {
            return Err("no URL is configured for this destination".to_owned());
        };
        let url = reqwest::Url::parse(url).map_err(|_| "the URL is not valid".to_owned())?;
        if !self.allow_private && crate::net_guard::is_private_literal(&url) {
            return Err("the URL is a private address (allow_private_networks)".to_owned());
        }
        let Some(http) = &self.http else {
            return Err("no HTTP client (the server log says why)".to_owned());
        };
        let req = http.post(url);
        let req = match d.target {
            Target::Slack => req.json(&serde_json::json!({ "text": d.message })),
            Target::Webhook => req
                .header("content-type", "application/json")
                .body(d.payload.clone()),
        };
        match req.send().await {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("the receiver answered {}", res.status().as_u16())),
            Err(e) => Err(describe(&e.without_url())),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        format!("request failed: {e}")
    }
}
