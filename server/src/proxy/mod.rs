//! The metered proxy on `/v1`: OpenAI-compatible endpoints that check every
//! request against its key, project and organization from memory, reserve
//! rate and budget, forward to a provider, meter what came back, and write
//! the usage behind. Nothing on a request's path awaits the database.

pub mod body;
pub mod counters;
pub mod dialect;
pub mod error;
pub mod feed;
pub mod keytable;
pub mod ledger;
pub mod memory;
pub mod prompts;
pub mod routing;
pub mod tokens;
mod unmetered;
pub mod upstream;

use unmetered::{count_tokens, stored};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tollgate_app::core::catalogue::Model;
use tollgate_app::core::changes::{Applied, Change, Listener};
use tollgate_app::core::forwarded::client_ip;
use tollgate_app::core::state::AppState;
use tollgate_app::core::usage::{self, ContentLog, Level, UsageEvent};
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use body::RequestBody;
use counters::{Admission, Counters, Headers, LocalCounters, Ticket};
use error::ProxyError;
use ledger::Ledger;
use memory::{Caller, Memory};
use routing::Plan;
use secrecy::ExposeSecret;
use upstream::{Call, Clients, Endpoint, Reply, UpstreamError};

pub struct Gateway {
    pub memory: Memory,
    pub(crate) counters: Arc<dyn Counters>,
    pub ledger: Ledger,
    clients: Clients,
    config: ProxyConfig,
    /// Where this instance stands in the change log.
    pub feed: Arc<feed::FeedStatus>,
    pub metrics: Arc<Metrics>,
    /// The MCP gateway's client and session sealing.
    pub(crate) mcp: crate::mcp::McpClient,
}

/// Applies change events to the gateway's memory before `publish` returns.
struct Apply(Weak<Gateway>);

impl Listener for Apply {
    fn apply(&self, change: Change) -> Applied<'_> {
        Box::pin(async move {
            if let Some(gw) = self.0.upgrade() {
                if let Err(e) = gw.memory.apply(&change).await {
                    tracing::error!(error = %e, ?change, "the proxy could not apply a change");
                }
            }
        })
    }
}

impl Gateway {
    /// Loads keys, projects, organizations and this period's spend, starts
    /// the ledger writer and subscribes to changes.
    pub async fn start(
        state: &AppState,
        config: &ProxyConfig,
    ) -> Result<Arc<Gateway>, sqlx::Error> {
        let _ = tokio::task::spawn_blocking(tokens::warm_up).await;
        let memory = Memory::new(
            state.db.clone(),
            state.secret.clone(),
            state.route_health.clone(),
        );
        // The log's head before loading: what commits meanwhile is applied after.
        let mut conn = state.db.pool.acquire().await?;
        let (_, feed_from) = tollgate_app::core::changes::bounds(&mut conn).await?;
        drop(conn);
        memory.load_all().await?;
        let now = tollgate_app::core::now_ms();
        let mut base = HashMap::new();
        let mut conn = state.db.pool.acquire().await?;
        for level in [Level::Key, Level::Project, Level::Org] {
            for (id, spend) in usage::spend(&mut conn, level, None, None, now).await? {
                base.insert((level, id), spend);
            }
        }
        drop(conn);
        let metrics = Arc::new(Metrics::default());
        let counters: Arc<dyn Counters> = match config.redis_url.clone() {
            Some(url) if !url.expose_secret().trim().is_empty() => {
                let settings = counters::RedisSettings {
                    url,
                    prefix: config.redis_prefix.clone(),
                    timeout: Duration::from_millis(config.redis_timeout_ms),
                    fail_open: config.redis_fail_open,
                    reservation_ttl: Duration::from_millis(config.reservation_ttl_ms),
                    ledger_flush: Duration::from_millis(config.ledger_flush_ms.saturating_add(250)),
                };
                counters::RedisCounters::start(settings, state.db.clone(), metrics.clone())
                    .await
                    .map_err(|e| sqlx::Error::Configuration(e.into()))?
            }
            _ => Arc::new(LocalCounters::new(base, now)),
        };
        let gw = Arc::new(Gateway {
            memory,
            counters,
            ledger: Ledger::start(
                state.db.clone(),
                metrics.clone(),
                config.ledger_queue,
                config.ledger_batch,
                Duration::from_millis(config.ledger_flush_ms),
            ),
            // A client without its timeouts would hang requests for ever:
            // refuse to start instead (as a configuration error, the one
            // kind of start-up error the server's caller knows for the proxy).
            clients: Clients::new(
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_millis(config.upstream_timeout_ms),
                Duration::from_millis(config.stream_idle_timeout_ms),
                state.allow_private_networks,
            )
            .map_err(|e| {
                sqlx::Error::Configuration(
                    format!("the proxy cannot build its HTTP client: {e}").into(),
                )
            })?,
            mcp: crate::mcp::McpClient::new(
                Duration::from_millis(config.connect_timeout_ms),
                state.allow_private_networks,
                state.secret.clone(),
            )
            .map_err(|e| {
                sqlx::Error::Configuration(
                    format!("the MCP gateway cannot build its HTTP client: {e}").into(),
                )
            })?,
            config: config.clone(),
            feed: Arc::new(feed::FeedStatus::default()),
            metrics,
        });
        state
            .changes
            .subscribe(Arc::new(Apply(Arc::downgrade(&gw))));
        feed::spawn(
            Arc::downgrade(&gw),
            state.db.clone(),
            gw.feed.clone(),
            feed_from,
            Duration::from_millis(config.change_poll_ms),
        );
        tracing::info!(keys = gw.memory.key_count(), "proxy ready");
        Ok(gw)
    }

    /// How long the change feed may go without reading the log before the
    /// instance reports itself not ready: three polls, at least 30 s.
    pub fn feed_stale_after_ms(&self) -> i64 {
        i64::try_from(self.config.change_poll_ms.saturating_mul(3))
            .unwrap_or(i64::MAX)
            .max(30_000)
    }

    /// The most bytes of a body the content log keeps.
    pub fn content_log_max_bytes(&self) -> usize {
        self.config.content_log_max_bytes
    }

    /// Which counters admit requests and whether they can now.
    pub fn counters(&self) -> counters::CounterStatus {
        self.counters.status()
    }

    /// Writes every recorded usage event; call after the server stopped
    /// (every request, streams included, has ended and recorded its own).
    pub async fn shutdown(&self) {
        self.ledger.flush().await;
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", metered(Endpoint::Chat))
        .route("/v1/completions", metered(Endpoint::Completions))
        .route("/v1/embeddings", metered(Endpoint::Embeddings))
        .route("/v1/responses", metered(Endpoint::Responses))
        .route("/v1/responses/{id}", get(stored).delete(stored))
        .route("/v1/responses/{id}/input_items", get(stored))
        .route("/v1/messages", metered(Endpoint::Messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/model/info", get(model_info))
        .route("/v1/prompts", get(prompts::list))
        .route("/v1/prompts/{*prompt_id}", get(prompts::get))
        .route("/v1/{*rest}", any(unknown))
        .method_not_allowed_fallback(wrong_method)
        .with_state(gw)
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ProxyError::method_not_allowed(format!("{} does not take {method}", uri.path())).into_response()
}

type Peer = ConnectInfo<SocketAddr>;

/// The largest request body read (after the key is checked).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The route of one metered endpoint. The body is taken unread: it is read
/// only once the key has passed.
fn metered(endpoint: Endpoint) -> MethodRouter<Arc<Gateway>> {
    post(
        move |State(gw): State<Arc<Gateway>>, ConnectInfo(peer): Peer, h: HeaderMap, body: Body| {
            handle(gw, endpoint, peer, h, body)
        },
    )
}

/// Reads the body up to `BODY_LIMIT`, refusing more without reading it.
pub(crate) async fn read_body(h: &HeaderMap, body: Body) -> Result<Bytes, ProxyError> {
    let too_large = || {
        ProxyError::too_large(
            "body",
            format!("the body is larger than {} MiB", BODY_LIMIT / (1024 * 1024)),
        )
    };
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let mut chunks = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ProxyError::invalid("body", "the body was cut short"))?;
        if buf.len().saturating_add(chunk.len()) > BODY_LIMIT {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A path under `/v1` that Tollgate does not serve: 404, as OpenAI answers.
async fn unknown() -> Response {
    ProxyError::not_found(
        "unknown_endpoint",
        "path",
        "no such endpoint; Tollgate serves /v1/chat/completions, /v1/completions, /v1/embeddings, \
         /v1/responses, /v1/messages, /v1/messages/count_tokens, /v1/models, /v1/model/info and /v1/prompts",
    )
    .into_response()
}

/// The key a request presents: `Authorization: Bearer`, or `x-api-key` as
/// Anthropic's clients send it.
fn presented_key(h: &HeaderMap) -> Result<&str, ProxyError> {
    crate::auth::bearer(h)
        .or_else(|| {
            h.get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
        })
        .ok_or_else(|| {
            ProxyError::unauthorized(
                "missing_api_key",
                "send an API key as 'Authorization: Bearer sk-tg-…' (or 'x-api-key: sk-tg-…')",
            )
        })
}

/// The caller behind the request's headers: key (revoked, expired) and the
/// project's IP allowlist, before anything of the body is read.
pub(crate) fn admit_caller(
    gw: &Gateway,
    peer: SocketAddr,
    h: &HeaderMap,
) -> Result<Caller, ProxyError> {
    let caller = gw
        .memory
        .authenticate(presented_key(h)?, tollgate_app::core::now_ms())?;
    let k = &caller.key;
    let span = Span::current();
    span.record("org", display(k.org_id()));
    span.record("project", display(k.project_id()));
    span.record("key_id", display(&k.public_id));
    caller.check_ip(client_ip(peer.ip(), h, &gw.config.trusted_proxies))?;
    Ok(caller)
}

async fn models(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): Peer, h: HeaderMap) -> Response {
    let caller = match admit_caller(&gw, peer, &h) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = caller
        .models()
        .iter()
        .map(|(id, owner)| json!({ "id": id, "object": "model", "created": 0, "owned_by": owner }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// LiteLLM's `/v1/model/info` for an API key: the models it may call with
/// their prices (per token and per million) and context windows, from memory.
async fn model_info(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
) -> Response {
    let caller = match admit_caller(&gw, peer, &h) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = caller
        .models()
        .iter()
        .map(|(id, owner)| match caller.org.routes.get(id) {
            Some(r) => {
                let m = &r.model;
                json!({
                    "model_name": id,
                    "litellm_params": { "model": format!("{}/{}", m.provider, m.upstream) },
                    "model_info": {
                        "id": id,
                        "input_cost_per_token": m.input_price.micros() as f64 / 1e12,
                        "output_cost_per_token": m.output_price.micros() as f64 / 1e12,
                        "input_cost_per_million_tokens": m.input_price.micros() as f64 / 1e6,
                        "output_cost_per_million_tokens": m.output_price.micros() as f64 / 1e6,
                        "max_input_tokens": m.context_window,
                    },
                })
            }
            None => json!({
                "model_name": id,
                "litellm_params": { "model": id },
                "model_info": { "id": id, "owned_by": owner },
            }),
        })
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

/// Micro-USD for these tokens at the catalogue's prices, rounded up;
/// never negative, at most `i64::MAX`.
pub(crate) fn cost(m: &Model, tokens_in: i64, tokens_out: i64) -> i64 {
    let part = |tokens: i64, price: i64| i128::from(tokens.max(0)) * i128::from(price.max(0));
    let micros = part(tokens_in, m.input_price.micros())
        .saturating_add(part(tokens_out, m.output_price.micros()));
    i64::try_from(micros.saturating_add(999_999) / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn truncate(bytes: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return (text.into_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// One request's facts, for its usage event and content log.
struct Ctx {
    gw: Arc<Gateway>,
    request_id: String,
    at: i64,
    started: Instant,
    caller: Caller,
    /// The model serving the current attempt (it prices the request).
    model: Arc<Model>,
    /// The model the client named (a virtual model's id, or `model`'s).
    requested: Arc<str>,
    endpoint: Endpoint,
    stream: bool,
    provider: String,
    prompt_estimate: i64,
    /// The output tokens reserved (none for embeddings).
    max_output: i64,
    /// The request body, kept where content logging is allowed.
    request_log: Option<(String, bool)>,
    /// The client's own request where it spoke the Responses or Messages
    /// API (a chat answer is written back in that API, echoing it).
    request: Option<Arc<Value>>,
    /// The prompt template the body was rendered from.
    prompt: Option<prompts::Used>,
    /// The reservation admitted for this request, until it settles. A
    /// request dropped before that (its client left, and axum dropped its
    /// future) gives it back in `Drop`: else its share of the budget stays
    /// leased until the reservation expires.
    ticket: Option<Ticket>,
}

impl Ctx {
    fn record(&self, status: u16, tokens_in: i64, tokens_out: i64, cost: i64, error: Option<&str>) {
        let k = &self.caller.key;
        self.gw
            .metrics
            .request(self.endpoint.as_str(), &self.model.id, status);
        self.gw.ledger.record(UsageEvent {
            request_id: self.request_id.clone(),
            at: self.at,
            org_id: k.org_id().to_owned(),
            project_id: k.project_id().to_owned(),
            key_id: k.id.to_string(),
            model: self.model.id.clone(),
            requested_model: self.requested.to_string(),
            provider: self.provider.clone(),
            endpoint: self.endpoint.as_str(),
            stream: self.stream,
            tokens_in,
            tokens_out,
            cost_micros: cost,
            status: i64::from(status),
            error_code: error.map(str::to_owned),
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            prompt_id: self
                .prompt
                .as_ref()
                .map_or_else(String::new, |p| p.id.to_string()),
            prompt_version: self.prompt.as_ref().map_or(0, |p| p.version),
        });
    }

    fn log_content(&self, response: &[u8]) {
        let Some((request, req_cut)) = &self.request_log else {
            return;
        };
        let (response, res_cut) = truncate(response, self.gw.config.content_log_max_bytes);
        let k = &self.caller.key;
        self.gw.ledger.record_content(ContentLog {
            request_id: self.request_id.clone(),
            at: self.at,
            org_id: k.org_id().to_owned(),
            project_id: k.project_id().to_owned(),
            key_id: k.id.to_string(),
            request_body: request.clone(),
            response_body: response,
            truncated: *req_cut || res_cut,
        });
    }

    /// A stored response's id in a provider's whole answer, sealed to the
    /// caller's key.
    fn seal(&self, answer: Bytes) -> Bytes {
        let Ok(mut v) = serde_json::from_slice::<Value>(&answer) else {
            return answer;
        };
        let key_id = self.caller.key.id.to_string();
        match dialect::owned::seal_in(&mut v, "/id", self.gw.memory.secret(), &key_id) {
            true => Bytes::from(v.to_string()),
            false => answer,
        }
    }

    /// A whole chat answer in the client's API, with the tokens billed.
    fn translate(&self, d: dialect::Dialect, answer: &[u8], tokens: (i64, i64)) -> Bytes {
        let chat: Value = serde_json::from_slice(answer).unwrap_or_default();
        let request = self.request.as_deref().unwrap_or(&Value::Null);
        let v = dialect::whole(d, &chat, request, &self.request_id, &self.requested, tokens);
        Bytes::from(v.to_string())
    }

    /// Settles the reservation to what was used and writes the event,
    /// once: a request settled already is left as it is.
    fn finish(&mut self, status: u16, tokens_in: i64, tokens_out: i64, error: Option<&str>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let c = cost(&self.model, tokens_in, tokens_out);
        self.gw.counters.settle(
            ticket,
            tokens_in.saturating_add(tokens_out),
            c,
            tollgate_app::core::now_ms(),
        );
        self.record(status, tokens_in, tokens_out, c, error);
    }

    /// The tokens to bill: what the provider reported where the request
    /// could have produced it (from zero, output within what was reserved,
    /// input within the model's context window or twice the estimate),
    /// else the estimate and `counted` output.
    fn tokens_used(
        &self,
        reported_in: Option<i64>,
        reported_out: Option<i64>,
        counted: impl FnOnce() -> i64,
    ) -> (i64, i64) {
        let max_in = self
            .model
            .context_window
            .max(self.prompt_estimate.saturating_mul(2));
        let reported_out = match self.endpoint {
            Endpoint::Embeddings => reported_out.or(Some(0)),
            _ => reported_out,
        };
        let tin = reported_in.filter(|n| (0..=max_in).contains(n));
        // More output than was reserved is billed at the reservation: the
        // budget never passes it, and hidden (reasoning) tokens still count.
        let tout = reported_out
            .filter(|n| *n >= 0)
            .map(|n| n.min(self.max_output));
        if tin != reported_in || tout != reported_out {
            tracing::warn!(
                provider = %self.provider,
                reported_in,
                reported_out,
                max_in,
                max_out = self.max_output,
                "the provider reported usage this request cannot have had; counting instead"
            );
        }
        match (tin, tout) {
            (Some(i), Some(o)) => (i, o),
            (i, _) => (i.unwrap_or(self.prompt_estimate), counted()),
        }
    }

    /// The one mapping of an upstream failure to the client's error. What
    /// the upstream said stays in the log (redacted where it was read);
    /// the client gets the status and the request id to find it by.
    fn upstream_error(&self, e: UpstreamError) -> ProxyError {
        let p = &self.provider;
        let id = &self.request_id;
        match e {
            UpstreamError::Timeout(m) => ProxyError::gateway_timeout(m),
            UpstreamError::Status { status, detail } => {
                tracing::warn!(provider = %p, upstream_status = status, detail = %detail, "the provider failed");
                ProxyError::bad_gateway(
                    "upstream_error",
                    format!("the provider '{p}' answered {status}; reference {id}"),
                )
            }
            UpstreamError::Refused { status, detail }
            | UpstreamError::NoRoute { status, detail } => {
                tracing::warn!(provider = %p, upstream_status = status, detail = %detail, "the provider refused the request");
                ProxyError::upstream_refused(
                    status,
                    format!("the provider '{p}' refused the request ({status}); reference {id}"),
                )
            }
            UpstreamError::Malformed(m) => ProxyError::bad_gateway("upstream_malformed", m),
            UpstreamError::Connect(m) => ProxyError::bad_gateway("upstream_unreachable", m),
            UpstreamError::Unsupported(m) => ProxyError::invalid("model", m),
            UpstreamError::BadBody(m) => ProxyError::invalid("body", m),
            UpstreamError::Invalid { param, message } => ProxyError::invalid(param, message),
        }
    }
}

async fn handle(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    peer: SocketAddr,
    h: HeaderMap,
    body: Body,
) -> Response {
    let g = gw.clone();
    answer(gw, endpoint, move |request_id| async move {
        forward(g, endpoint, peer, &h, body, &request_id).await
    })
    .await
}

/// Runs one request in its span (who and what as fields, filled in as they
/// become known; never the token or the body), maps a refusal to its
/// answer and names the request in `x-request-id`.
pub(crate) async fn answer<F, Fut>(gw: Arc<Gateway>, endpoint: Endpoint, run: F) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ProxyError>>,
{
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "v1",
        request_id = %request_id,
        endpoint = endpoint.as_str(),
        org = Empty,
        project = Empty,
        key_id = Empty,
        model = Empty,
        status = Empty,
        rule = Empty,
    );
    let answer = run(request_id.clone()).instrument(span.clone()).await;
    let mut res = match answer {
        Ok(r) => r,
        Err(e) => {
            span.record("rule", display(e.code));
            gw.metrics.refusal(e.code);
            e.respond(endpoint)
        }
    };
    span.record("status", res.status().as_u16());
    span.in_scope(|| tracing::debug!("answered"));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// A token count the client asks for: absent, or a whole number from 1 to
/// `max` (the model's context window).
fn tokens_field(
    body: &RequestBody,
    field: &'static str,
    max: i64,
    endpoint: Endpoint,
) -> Result<Option<i64>, ProxyError> {
    let max = max.max(1);
    // The name the client sent it under (the Responses API's is read as
    // chat's `max_tokens`).
    let shown = match (endpoint, field) {
        (Endpoint::Responses, "max_tokens") => "max_output_tokens",
        _ => field,
    };
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ProxyError::invalid(
                shown,
                format!(
                    "'{shown}' must be a whole number from 1 to {max}, the model's context window"
                ),
            )),
        },
    }
}

/// The output tokens a request reserves: `max_completion_tokens`, else
/// `max_tokens` (`max_output_tokens` of the Responses API), else the
/// configured default; none for embeddings.
fn max_output(
    body: &RequestBody,
    endpoint: Endpoint,
    window: i64,
    default: u32,
) -> Result<i64, ProxyError> {
    if endpoint == Endpoint::Embeddings {
        return Ok(0);
    }
    let completion = tokens_field(body, "max_completion_tokens", window, endpoint)?;
    let max = tokens_field(body, "max_tokens", window, endpoint)?;
    let each = completion.or(max).unwrap_or(i64::from(default));
    Ok(each.saturating_mul(choices(body)?))
}

/// The most answers one request may ask for.
const MAX_CHOICES: i64 = 128;

/// How many answers a request asks for (`n`; `best_of` on completions):
/// each may use the whole output allowance, so each is reserved.
fn choices(body: &RequestBody) -> Result<i64, ProxyError> {
    let mut most = 1;
    for field in ["n", "best_of"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(k) if (1..=MAX_CHOICES).contains(&k) => most = most.max(k),
                _ => {
                    return Err(ProxyError::invalid(
                        field,
                        format!("'{field}' must be a whole number from 1 to {MAX_CHOICES}"),
                    ))
                }
            },
        }
    }
    Ok(most)
}

async fn forward(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    peer: SocketAddr,
    h: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    // 1–2: the key, from memory: revoked, expired, IP allowlist; only then
    // the body.
    let caller = admit_caller(&gw, peer, h)?;
    let body = read_body(h, body).await?;
    let input = Input {
        endpoint,
        body,
        headers: anthropic_headers(endpoint, h),
    };
    serve(gw, input, caller, request_id, started).await
}

/// A request's body with what it is served by.
pub(crate) struct Input {
    pub endpoint: Endpoint,
    pub body: Bytes,
    /// Headers passed on to a provider that speaks the client's API.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

/// The client's `anthropic-version` and `anthropic-beta`, for an Anthropic
/// provider sent its Messages request as written.
fn anthropic_headers(endpoint: Endpoint, h: &HeaderMap) -> Vec<(&'static str, HeaderValue)> {
    if endpoint != Endpoint::Messages {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(v) = h.get("anthropic-version") {
        out.push(("anthropic-version", v.clone()));
    }
    // Betas that reach what the organization's provider key keeps (files,
    // containers, skills, remote MCP servers) would share it across keys.
    let betas: Vec<&str> = h
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty() && !SHARED_STATE_BETAS.iter().any(|p| b.starts_with(p)))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
        if !betas.is_empty() {
            out.push(("anthropic-beta", v));
        }
    }
    out
}

/// Anthropic betas (by prefix) not passed on: they reach state kept under
/// the provider's key.
const SHARED_STATE_BETAS: [&str; 5] = [
    "files-api",
    "code-execution",
    "skills",
    "mcp-client",
    "container",
];

/// Steps 3–7 for a caller whose key passed: model, limits, budget,
/// upstream, metering.
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    input: Input,
    caller: Caller,
    request_id: &str,
    started: Instant,
) -> Result<Response, ProxyError> {
    let now = tollgate_app::core::now_ms();
    let endpoint = input.endpoint;
    let body = RequestBody::parse(input.body)?;
    // The Responses and Messages APIs are read as chat: checked, reserved
    // and billed as chat is, and sent as chat to a chat-only provider.
    let (body, native, request) = match endpoint.dialect() {
        None => (body, None, None),
        Some(d) => {
            let request: Value = serde_json::from_slice(body.raw()).map_err(|e| {
                ProxyError::invalid("body", format!("the body is not valid JSON: {e}"))
            })?;
            let t = match d {
                dialect::Dialect::Responses => dialect::responses::to_chat(&request)?,
                dialect::Dialect::Messages => dialect::messages::to_chat(&request)?,
            };
            let chat = RequestBody::parse(Bytes::from(t.chat.to_string()))?;
            // A stored response is followed only with the key it answered.
            let previous = match request.get("previous_response_id") {
                Some(Value::String(sealed)) => Some(
                    dialect::owned::open(gw.memory.secret(), &caller.key.id.to_string(), sealed)
                        .ok_or_else(|| {
                            ProxyError::not_found(
                                "previous_response_not_found",
                                "previous_response_id",
                                format!("this key has no stored response '{sealed}'"),
                            )
                        })?,
                ),
                _ => None,
            };
            let native = upstream::Native {
                body,
                native_only: t.native_only,
                headers: input.headers,
                previous,
            };
            (chat, Some(native), Some(Arc::new(request)))
        }
    };
    // A named prompt template, rendered into the body.
    let (body, prompt) = prompts::apply(&caller, body, endpoint == Endpoint::Chat)?;
    let model_name = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::invalid("model", "'model' is required: one of GET /v1/models"))?
        .to_owned();
    Span::current().record("model", display(&model_name));
    // 3: the model, allowed for key ∩ project ∩ organization; a virtual
    // model's targets in the order its strategy tries them.
    let plan = caller.route(&model_name)?;
    let stream = endpoint != Endpoint::Embeddings && body.get("stream") == Some(&Value::Bool(true));
    let wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    let prompt_estimate = match endpoint {
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => {
            tokens::chat_prompt(body.get("messages"), body.get("tools"))
        }
        Endpoint::Completions => tokens::completion_prompt(body.get("prompt")),
        Endpoint::Embeddings => tokens::completion_prompt(body.get("input")),
    };
    // Input the chat reading cannot see (a document, a conversation the
    // provider keeps) may fill the context window: reserved as if it did.
    let prompt_estimate = match native.as_ref().and_then(|n| n.native_only.as_ref()) {
        Some(_) => prompt_estimate.max(plan.context_window()),
        None => prompt_estimate,
    };
    let max_tokens = max_output(
        &body,
        endpoint,
        plan.context_window(),
        gw.config.default_max_tokens,
    )?;
    let attempts = plan.attempts(now, prompt_estimate, max_tokens)?;
    // Reserved at the most expensive model that may serve, settled at the
    // one that did.
    let Some(first) = attempts.first() else {
        return Err(ProxyError::bad_gateway(
            "upstream_error",
            "no provider answered",
        ));
    };
    let worst = attempts
        .iter()
        .map(|a| cost(a.model, prompt_estimate, max_tokens))
        .max()
        .unwrap_or(0);
    let logs = caller.org.org.spending.content_logging
        && caller.project.project.content_logging
        && !caller.key.no_content_logging;
    let mut ctx = Ctx {
        gw: gw.clone(),
        request_id: request_id.to_owned(),
        at: now,
        started,
        caller: caller.clone(),
        model: first.model.clone(),
        requested: Arc::from(model_name.as_str()),
        endpoint,
        stream,
        provider: first.deployment.provider.provider.name.clone(),
        prompt_estimate,
        max_output: max_tokens,
        request_log: logs.then(|| {
            let raw = native.as_ref().map_or(body.raw(), |n| n.body.raw());
            truncate(raw, gw.config.content_log_max_bytes)
        }),
        request,
        prompt,
        ticket: None,
    };
    // 4–5: rate limits and budget reservations, all levels at once.
    let admission = Admission {
        caller: &caller,
        tokens: prompt_estimate.saturating_add(max_tokens),
        cost: worst,
        now,
    };
    let rate_headers = match gw.counters.admit(admission).await {
        Ok((ticket, headers)) => {
            ctx.ticket = Some(ticket);
            headers
        }
        Err(e) => {
            ctx.record(e.status.as_u16(), 0, 0, 0, Some(e.code));
            return Err(e);
        }
    };
    // 6: forward, trying the next deployment or target on a failure before
    // the first byte.
    let mut failure = None;
    let mut tries = 0_usize;
    for a in &attempts {
        let d = a.deployment;
        tries += 1;
        ctx.model = a.model.clone();
        ctx.provider = d.provider.provider.name.clone();
        let call = Call {
            endpoint,
            body: &body,
            native: native.as_ref(),
            stream,
            deployment: d,
            client_model: &model_name,
            request_id,
            max_tokens: if max_tokens > 0 {
                max_tokens
            } else {
                i64::from(gw.config.default_max_tokens)
            },
        };
        let calling = Instant::now();
        let before = calling.duration_since(started);
        let reply = gw.clients.call(&call).await;
        let answered = Instant::now();
        let took = answered.duration_since(calling);
        gw.metrics.upstream(took);
        let served = Served {
            model: &a.model.id,
            provider: &d.provider.provider.name,
            tries,
        };
        match reply {
            Ok(Reply::Whole {
                status,
                body: answer,
                native,
            }) => match whole(&ctx, &answer) {
                Ok((tin, tout)) => {
                    d.health.succeeded(micros(took));
                    ctx.finish(status, tin, tout, None);
                    let answer = match (native, endpoint.dialect()) {
                        (false, Some(dialect)) => ctx.translate(dialect, &answer, (tin, tout)),
                        (true, Some(dialect::Dialect::Responses)) => ctx.seal(answer),
                        _ => answer,
                    };
                    ctx.log_content(&answer);
                    let res = served.mark(respond(status, answer, rate_headers));
                    gw.metrics.added(before + answered.elapsed());
                    return Ok(res);
                }
                Err(e) => failure = Some(e),
            },
            Ok(Reply::Stream { events, native }) => {
                d.health.succeeded(micros(took));
                let out = match (native, endpoint.dialect()) {
                    (_, None) => Out::Chat { wants_usage },
                    (true, Some(d)) => Out::Native(d, false),
                    (false, Some(d)) => {
                        let request = ctx.request.clone().unwrap_or_default();
                        let w = dialect::writer(
                            d,
                            &request,
                            &ctx.request_id,
                            &ctx.requested,
                            ctx.prompt_estimate,
                        );
                        Out::Written(d, w)
                    }
                };
                let res = served.mark(streaming(ctx, events, out, rate_headers));
                gw.metrics.added(before + answered.elapsed());
                return Ok(res);
            }
            Err(e) => failure = Some(e),
        }
        let Some(e) = &failure else { continue };
        // A virtual model's other targets may still serve what one refused
        // for itself (its key, its model, what it supports); a bad request
        // is bad everywhere.
        let elsewhere = plan.virtual_id().is_some() && e.is_the_targets_own();
        if !e.retryable() && !elsewhere {
            break;
        }
        let out = d.health.failed(
            tollgate_app::core::now_ms(),
            gw.config.breaker_failures,
            i64::try_from(gw.config.breaker_cool_down_ms).unwrap_or(i64::MAX),
        );
        tracing::warn!(provider = %ctx.provider, error = ?e, taken_out = out, "upstream failed");
    }
    let mut e = match failure {
        Some(e) => ctx.upstream_error(e),
        None => ProxyError::bad_gateway("upstream_error", "no provider answered"),
    };
    if let Some(v) = plan.virtual_id() {
        e.message = format!("{} ('{v}': {tries} attempts", e.message);
        if let Plan::Virtual(route) = &plan {
            if !route.region.is_empty() {
                e.message.push_str(&format!(
                    "; it is served only in the region '{}'",
                    route.region
                ));
            }
        }
        e.message.push(')');
    }
    ctx.finish(e.status.as_u16(), 0, 0, Some(e.code));
    Err(e)
}

impl Drop for Ctx {
    /// Dropped unsettled: the client left before the answer (a stream's
    /// meter settles on its own first). Nothing reached it, so nothing is
    /// billed: the reservation is released and the event says why.
    fn drop(&mut self) {
        self.finish(499, 0, 0, Some("client_disconnected"));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Who served an answer, for its headers.
struct Served<'a> {
    model: &'a str,
    provider: &'a str,
    tries: usize,
}

impl Served<'_> {
    /// `x-tollgate-model` and `x-tollgate-provider`, and
    /// `x-tollgate-attempts` where more than one attempt was made.
    fn mark(&self, mut res: Response) -> Response {
        let h = res.headers_mut();
        for (name, value) in [
            ("x-tollgate-model", self.model),
            ("x-tollgate-provider", self.provider),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if self.tries > 1 {
            h.insert("x-tollgate-attempts", HeaderValue::from(self.tries));
        }
        res
    }
}

/// What an answer reports of its usage; the rest of it is checked to be
/// JSON and skipped, not built.
#[derive(serde::Deserialize)]
struct Reported {
    #[serde(default)]
    usage: Option<Value>,
}

/// Prompt and completion tokens, as a `usage` object reports them (chat's
/// names, else the Responses and Messages APIs').
fn reported_tokens(usage: Option<&Value>) -> (Option<i64>, Option<i64>) {
    let Some(u) = usage.filter(|u| u.is_object()) else {
        return (None, None);
    };
    let at = |field: &str| u.get(field).and_then(Value::as_i64);
    match (at("prompt_tokens"), at("completion_tokens")) {
        (None, None) => dialect::usage_counts(u),
        chat => chat,
    }
}

/// Tokens of a whole answer: the provider's usage where plausible, else
/// counted (only then is the answer read for its text).
fn whole(ctx: &Ctx, answer: &[u8]) -> Result<(i64, i64), UpstreamError> {
    let reported: Reported = serde_json::from_slice(answer).map_err(|_| {
        UpstreamError::Malformed(format!(
            "the provider '{}' sent an answer that is not JSON",
            ctx.provider
        ))
    })?;
    let (tin, tout) = reported_tokens(reported.usage.as_ref());
    Ok(ctx.tokens_used(tin, tout, || {
        // An answer that is no JSON value as a whole (a number out of
        // range) is counted whole: more, never less, than its text.
        let mut text = String::new();
        match serde_json::from_slice::<Value>(answer) {
            Ok(v) => tokens::answer_text(&v, &mut text),
            Err(_) => text = String::from_utf8_lossy(answer).into_owned(),
        }
        tokens::count(&text)
    }))
}

fn with_headers(mut res: Response, headers: Headers) -> Response {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

fn respond(status: u16, body: Bytes, headers: Headers) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    with_headers(res, headers)
}

/// A stream's meter: counts as chunks pass, and settles exactly once — at
/// the end, on an upstream fault, or when dropped because the client left.
struct Meter {
    ctx: Ctx,
    /// The tokens billed, once settled.
    settled: (i64, i64),
    /// The input and output tokens the provider reported, each as it came.
    usage: (Option<i64>, Option<i64>),
    text: String,
    response_log: Option<Vec<u8>>,
}

impl Meter {
    /// Settles the request once, and says the tokens billed.
    fn finish(&mut self, status: u16, error: Option<&str>) -> (i64, i64) {
        if self.ctx.ticket.is_none() {
            return self.settled;
        }
        let text = &self.text;
        let (tin, tout) = self
            .ctx
            .tokens_used(self.usage.0, self.usage.1, || tokens::count(text));
        self.settled = (tin, tout);
        self.ctx.finish(status, tin, tout, error);
        if let Some(log) = self.response_log.take() {
            self.ctx.log_content(&log);
        }
        (tin, tout)
    }

    /// Counts a chunk: its usage where it has one, its text for counting
    /// where the provider reports none.
    fn observe(&mut self, data: &str, chunk: &Chunk<'_>) {
        if let (Some(i), Some(o)) = reported_tokens(chunk.usage.as_ref()) {
            self.usage = (Some(i), Some(o));
        }
        chunk.text(&mut self.text);
        self.log(data);
    }

    /// Counts an event of the client's own API, passed through.
    fn observe_native(&mut self, d: dialect::Dialect, data: &str, v: &Value) {
        let (i, o) = dialect::native_stream_usage(d, v);
        self.usage = (i.or(self.usage.0), o.or(self.usage.1));
        dialect::native_text(d, v, &mut self.text);
        self.log(data);
    }

    fn log(&mut self, data: &str) {
        if let Some(log) = &mut self.response_log {
            if log.len() < self.ctx.gw.config.content_log_max_bytes + 1 {
                log.extend_from_slice(data.as_bytes());
                log.push(b'\n');
            }
        }
    }
}

/// How a stream reaches the client.
enum Out {
    /// Chat chunks as they came (the usage-only chunk where asked for).
    Chat { wants_usage: bool },
    /// The events of the client's own API, passed through (and whether the
    /// event ending the answer came).
    Native(dialect::Dialect, bool),
    /// Chat chunks written as the client's API's events.
    Written(dialect::Dialect, dialect::Writer),
}

/// A stream chunk as the meter reads it: its usage, and its choices' text
/// borrowed where it has no escapes. Anything else in it is skipped.
#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<Content<'a>>,
    #[serde(borrow, default)]
    message: Option<Content<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

impl Chunk<'_> {
    /// Reads a chunk; one of another shape (a provider's own extension) is
    /// read as any JSON, for its usage and text alone.
    fn read(data: &str) -> Option<Chunk<'_>> {
        serde_json::from_str::<Chunk<'_>>(data).ok().or_else(|| {
            let v: Value = serde_json::from_str(data).ok()?;
            let mut text = String::new();
            tokens::answer_text(&v, &mut text);
            let choices = v
                .get("choices")
                .and_then(Value::as_array)
                .map(|c| match c.is_empty() {
                    true => Vec::new(),
                    // Their text, as one.
                    false => vec![ChunkChoice {
                        delta: None,
                        message: None,
                        text: Some(Cow::Owned(text)),
                    }],
                });
            Some(Chunk {
                choices,
                usage: v.get("usage").cloned(),
            })
        })
    }

    /// A chunk with no choices, only usage.
    fn usage_only(&self) -> bool {
        self.choices.as_ref().is_some_and(Vec::is_empty)
    }

    fn text(&self, into: &mut String) {
        for c in self.choices.iter().flatten() {
            for part in [&c.message, &c.delta].into_iter().flatten() {
                into.push_str(part.content.as_deref().unwrap_or_default());
            }
            into.push_str(c.text.as_deref().unwrap_or_default());
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(499, Some("client_disconnected"));
    }
}

impl Out {
    /// A failure in the middle of the stream, in the client's API.
    fn error(&self, e: &ProxyError) -> Bytes {
        match self {
            Out::Chat { .. } => Bytes::from(format!("data: {}\n\n", e.body())),
            Out::Native(d, _) | Out::Written(d, _) => dialect::stream_error(*d, e),
        }
    }

    /// Whether what came is a whole answer: a native stream's ending event
    /// came, or a chat stream said why it stopped (chat streams that end
    /// without `[DONE]` are taken as they always were).
    fn complete(&self) -> bool {
        match self {
            Out::Chat { .. } => true,
            Out::Native(_, ended) => *ended,
            Out::Written(_, w) => w.finished(),
        }
    }

    /// The end of the stream (billed `tokens`), in the client's API.
    fn end(&mut self, tokens: (i64, i64)) -> Option<Bytes> {
        match self {
            Out::Chat { .. } => Some(Bytes::from_static(b"data: [DONE]\n\n")),
            Out::Native(..) => None,
            Out::Written(_, w) => Some(dialect::sse(&w.end(tokens.0, tokens.1))),
        }
    }

    /// One event from the provider, metered, as the client gets it (none
    /// where nothing is sent for it).
    fn pass(&mut self, meter: &mut Meter, data: &str) -> Result<Option<Bytes>, ProxyError> {
        let malformed = |provider: &str| {
            ProxyError::bad_gateway(
                "upstream_malformed",
                format!("the provider '{provider}' sent a chunk that is not JSON"),
            )
        };
        match self {
            Out::Chat { wants_usage } => {
                let chunk = Chunk::read(data).ok_or_else(|| malformed(&meter.ctx.provider))?;
                meter.observe(data, &chunk);
                if chunk.usage_only() && !*wants_usage {
                    return Ok(None);
                }
                Ok(Some(Bytes::from(format!("data: {data}\n\n"))))
            }
            Out::Native(d, ended) => {
                let mut v: Value =
                    serde_json::from_str(data).map_err(|_| malformed(&meter.ctx.provider))?;
                meter.observe_native(*d, data, &v);
                *ended |= dialect::native_end(*d, &v);
                // A stored response's id, sealed to the caller's key.
                let ctx = &meter.ctx;
                let key_id = ctx.caller.key.id.to_string();
                let secret = ctx.gw.memory.secret();
                if *d == dialect::Dialect::Responses
                    && dialect::owned::seal_in(&mut v, "/response/id", secret, &key_id)
                {
                    return Ok(Some(dialect::native_event(&v.to_string(), &v)));
                }
                Ok(Some(dialect::native_event(data, &v)))
            }
            Out::Written(_, w) => {
                let chunk = Chunk::read(data).ok_or_else(|| malformed(&meter.ctx.provider))?;
                meter.observe(data, &chunk);
                drop(chunk);
                let v: Value =
                    serde_json::from_str(data).map_err(|_| malformed(&meter.ctx.provider))?;
                let frames = w.chunk(&v);
                Ok((!frames.is_empty()).then(|| dialect::sse(&frames)))
            }
        }
    }
}

fn streaming(ctx: Ctx, events: upstream::Events, out: Out, headers: Headers) -> Response {
    let idle = Duration::from_millis(ctx.gw.config.stream_idle_timeout_ms);
    let logging = ctx.request_log.is_some();
    let meter = Meter {
        ctx,
        settled: (0, 0),
        usage: (None, None),
        text: String::new(),
        response_log: logging.then(Vec::new),
    };
    // The chunks are metered after the handler returned: in its span still.
    let span = Span::current();
    let body = futures::stream::unfold(Some((meter, events, out)), move |state| {
        let span = span.clone();
        async move {
            let (mut meter, mut events, mut out) = state?;
            loop {
                let next = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => {
                        let e = ProxyError::gateway_timeout(format!(
                            "the provider '{}' stopped sending for {}s",
                            meter.ctx.provider,
                            idle.as_secs()
                        ));
                        meter.finish(504, Some(e.code));
                        return Some((Ok::<_, std::convert::Infallible>(out.error(&e)), None));
                    }
                    Ok(None) => {
                        if !out.complete() {
                            // The provider hung up mid-answer: the client is
                            // told, not handed a cut answer as a whole one.
                            let e = ProxyError::bad_gateway(
                                "upstream_truncated",
                                format!(
                                    "the provider '{}' ended its stream before the answer was complete",
                                    meter.ctx.provider
                                ),
                            );
                            meter.finish(502, Some(e.code));
                            return Some((Ok(out.error(&e)), None));
                        }
                        let tokens = meter.finish(200, None);
                        // A chat stream that said why it stopped but not
                        // `[DONE]` still gets its client's last word.
                        return match &out {
                            Out::Written(..) => Some((Ok(out.end(tokens)?), None)),
                            _ => None,
                        };
                    }
                    Ok(Some(Err(e))) => {
                        let e = meter.ctx.upstream_error(e);
                        meter.finish(e.status.as_u16(), Some(e.code));
                        return Some((Ok(out.error(&e)), None));
                    }
                    Ok(Some(Ok(data))) => data,
                };
                if next == "[DONE]" {
                    let tokens = meter.finish(200, None);
                    return out.end(tokens).map(|b| (Ok(b), None));
                }
                match out.pass(&mut meter, &next) {
                    Err(e) => {
                        meter.finish(502, Some(e.code));
                        return Some((Ok(out.error(&e)), None));
                    }
                    Ok(None) => continue,
                    Ok(Some(bytes)) => return Some((Ok(bytes), Some((meter, events, out)))),
                }
            }
        }
        .instrument(span)
    });
    let res = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    with_headers(res, headers)
}
