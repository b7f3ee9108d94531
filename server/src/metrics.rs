//! `GET /metrics` in the Prometheus (OpenMetrics) text format: requests by
//! endpoint, model and status (one per usage event, so they add up to the
//! ledger); refusals by rule; upstream and added latency; the ledger's queue
//! and writes; the change feed's lag; counter backend errors.
//!
//! Off unless `metrics_token` is set; then a scrape presents it as
//! `Authorization: Bearer <token>` (checked by the authentication layer).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::Gateway;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub model: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: &'static str,
}

/// Distinct model labels at most: catalogue ids are the organizations' own,
/// so past this many the rest count as `other`.
const MODEL_LABELS: usize = 500;

/// What the proxy counts and times; the gauges are read at each scrape.
pub struct Metrics {
    registry: Registry,
    models: std::sync::RwLock<std::collections::HashSet<String>>,
    requests: Family<RequestLabels, Counter>,
    refusals: Family<RuleLabels, Counter>,
    upstream: Histogram,
    added: Histogram,
    ledger_write: Histogram,
    counter_errors: Counter,
    ledger_queue: Gauge,
    feed_behind: Gauge,
    feed_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Registers each metric under its name (with the `tollgate_` prefix) and help.
macro_rules! register {
    ($m:ident, $($field:ident: $name:literal, $help:literal;)*) => {
        $($m.registry.register($name, $help, $m.$field.clone());)*
    };
}

/// Latency buckets from 50 µs to about 26 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("tollgate"),
            models: std::sync::RwLock::default(),
            requests: Family::default(),
            refusals: Family::default(),
            upstream: seconds(),
            added: seconds(),
            ledger_write: seconds(),
            counter_errors: Counter::default(),
            ledger_queue: Gauge::default(),
            feed_behind: Gauge::default(),
            feed_age: Gauge::default(),
        };
        register!(m,
            requests: "requests", "Requests metered (one per usage event), by endpoint, model and status";
            refusals: "refusals", "Requests Tollgate answered with an error, by rule (its error code)";
            upstream: "upstream_latency_seconds", "Time the upstream took to answer (its whole answer, or a stream's head)";
            added: "added_latency_seconds", "Time Tollgate added to a request: before the upstream call, and after its answer";
            ledger_write: "ledger_write_seconds", "Time one batch of usage events took to write";
            ledger_queue: "ledger_queue_depth", "Usage events waiting to be written";
            feed_behind: "change_feed_behind", "Entries of the change log this instance has not applied yet";
            feed_age: "change_feed_read_age_seconds", "Seconds since the change log was last read without error";
            counter_errors: "counter_backend_errors", "Admissions or settlements the counter backend failed";
        );
        m
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, model: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                model: self.model_label(model),
                status,
            })
            .inc();
    }

    /// `model`, or `other` once [`MODEL_LABELS`] models have been seen.
    fn model_label(&self, model: &str) -> String {
        let known = |m: &std::collections::HashSet<String>| m.contains(model);
        if self.models.read().is_ok_and(|m| known(&m)) {
            return model.to_owned();
        }
        let Ok(mut m) = self.models.write() else {
            return "other".to_owned();
        };
        if known(&m) || m.len() < MODEL_LABELS {
            m.insert(model.to_owned());
            model.to_owned()
        } else {
            "other".to_owned()
        }
    }

    pub fn refusal(&self, rule: &'static str) {
        self.refusals.get_or_create(&RuleLabels { rule }).inc();
    }

    pub fn upstream(&self, took: Duration) {
        self.upstream.observe(took.as_secs_f64());
    }

    pub fn added(&self, took: Duration) {
        self.added.observe(took.as_secs_f64());
    }

    pub fn ledger_write(&self, took: Duration) {
        self.ledger_write.observe(took.as_secs_f64());
    }

    pub fn counter_error(&self) {
        self.counter_errors.inc();
    }

    /// The text of a scrape, with the gauges read now.
    fn scrape(&self, gw: &Gateway, now_ms: i64) -> String {
        let depth = i64::try_from(gw.ledger.depth()).unwrap_or(i64::MAX);
        self.ledger_queue.set(depth);
        let feed = &gw.feed;
        let behind = feed
            .head
            .load(Ordering::Relaxed)
            .saturating_sub(feed.applied.load(Ordering::Relaxed));
        self.feed_behind.set(behind.max(0));
        self.feed_age.set(age_seconds(&feed.read_at, now_ms));
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[expect(clippy::cast_precision_loss, reason = "seconds for a gauge")]
fn age_seconds(at: &AtomicI64, now_ms: i64) -> f64 {
    match at.load(Ordering::Relaxed) {
        0 => 0.0,
        at => now_ms.saturating_sub(at).max(0) as f64 / 1000.0,
    }
}

/// `/metrics`, behind the authentication layer's check of the token.
pub async fn handler(State(gateway): State<Arc<Gateway>>) -> Response {
    let text = gateway
        .metrics
        .scrape(&gateway, tollgate_app::core::now_ms());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
