//! The metered proxy on `/v1`: OpenAI-compatible endpoints that check every
//! request against its key, project and organization from memory, reserve
//! rate and budget, forward to a provider, meter what came back, and write
//! the usage behind. Nothing on a request's path awaits the database.

pub mod counters;
pub mod error;
pub mod ledger;
pub mod memory;
pub mod tokens;
pub mod upstream;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tollgate_app::core::catalogue::Model;
use tollgate_app::core::changes::{Applied, Change, Listener};
use tollgate_app::core::state::AppState;
use tollgate_app::core::usage::{self, ContentLog, Level, UsageEvent};

use crate::config::ProxyConfig;
use counters::{Admission, Counters, Headers, LocalCounters, Ticket};
use error::ProxyError;
use ledger::Ledger;
use memory::{Caller, Memory};
use upstream::{Call, Clients, Endpoint, Reply, UpstreamError};

pub struct Gateway {
    pub memory: Memory,
    counters: Arc<dyn Counters>,
    pub ledger: Ledger,
    clients: Clients,
    config: ProxyConfig,
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
        let memory = Memory::new(state.db.clone(), state.secret.clone());
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
        let gw = Arc::new(Gateway {
            memory,
            counters: Arc::new(LocalCounters::new(base, now)),
            ledger: Ledger::start(
                state.db.clone(),
                config.ledger_queue,
                config.ledger_batch,
                Duration::from_millis(config.ledger_flush_ms),
            ),
            clients: Clients::new(
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_millis(config.upstream_timeout_ms),
                Duration::from_millis(config.stream_idle_timeout_ms),
            ),
            config: config.clone(),
        });
        state
            .changes
            .subscribe(Arc::new(Apply(Arc::downgrade(&gw))));
        tracing::info!(keys = gw.memory.key_count(), "proxy ready");
        Ok(gw)
    }

    /// Writes every recorded usage event; call after the server stopped
    /// (every request, streams included, has ended and recorded its own).
    pub async fn shutdown(&self) {
        self.ledger.flush().await;
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/{*rest}", any(unknown))
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(gw)
}

type Peer = ConnectInfo<SocketAddr>;

async fn chat(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    handle(gw, Endpoint::Chat, peer, h, body).await
}

async fn completions(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    handle(gw, Endpoint::Completions, peer, h, body).await
}

async fn embeddings(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    handle(gw, Endpoint::Embeddings, peer, h, body).await
}

async fn unknown() -> Response {
    ProxyError::invalid("path", "no such endpoint; Tollgate serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models")
        .into_response()
}

fn bearer(h: &HeaderMap) -> Result<&str, ProxyError> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ProxyError::unauthorized(
                "missing_api_key",
                "send an API key as 'Authorization: Bearer sk-tg-…'",
            )
        })
}

async fn models(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): Peer, h: HeaderMap) -> Response {
    let caller =
        match bearer(&h).and_then(|t| gw.memory.authenticate(t, tollgate_app::core::now_ms())) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
    if let Err(e) = caller.check_ip(peer.ip()) {
        return e.into_response();
    }
    let data: Vec<Value> = caller
        .models()
        .iter()
        .map(|m| json!({ "id": m.id, "object": "model", "created": 0, "owned_by": m.provider }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// Micro-USD for these tokens at the catalogue's prices, rounded up.
fn cost(m: &Model, tokens_in: i64, tokens_out: i64) -> i64 {
    let micros = i128::from(tokens_in) * i128::from(m.input_price.micros())
        + i128::from(tokens_out) * i128::from(m.output_price.micros());
    i64::try_from((micros + 999_999) / 1_000_000).unwrap_or(i64::MAX)
}

fn truncate(bytes: &[u8], max: usize) -> (String, bool) {
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
    model: Arc<Model>,
    endpoint: Endpoint,
    stream: bool,
    provider: String,
    prompt_estimate: i64,
    /// The request body, kept where content logging is allowed.
    request_log: Option<(String, bool)>,
}

impl Ctx {
    fn record(&self, status: u16, tokens_in: i64, tokens_out: i64, cost: i64, error: Option<&str>) {
        let k = &self.caller.key.key;
        self.gw.ledger.record(UsageEvent {
            request_id: self.request_id.clone(),
            at: self.at,
            org_id: k.org_id.clone(),
            project_id: k.project_id.clone(),
            key_id: k.id.clone(),
            model: self.model.id.clone(),
            provider: self.provider.clone(),
            endpoint: self.endpoint.as_str(),
            stream: self.stream,
            tokens_in,
            tokens_out,
            cost_micros: cost,
            status: i64::from(status),
            error_code: error.map(str::to_owned),
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
        });
    }

    fn log_content(&self, response: &[u8]) {
        let Some((request, req_cut)) = &self.request_log else {
            return;
        };
        let (response, res_cut) = truncate(response, self.gw.config.content_log_max_bytes);
        let k = &self.caller.key.key;
        self.gw.ledger.record_content(ContentLog {
            request_id: self.request_id.clone(),
            at: self.at,
            org_id: k.org_id.clone(),
            project_id: k.project_id.clone(),
            key_id: k.id.clone(),
            request_body: request.clone(),
            response_body: response,
            truncated: *req_cut || res_cut,
        });
    }

    /// Settles the reservation to what was used and writes the event.
    fn finish(
        &self,
        ticket: Ticket,
        status: u16,
        tokens_in: i64,
        tokens_out: i64,
        error: Option<&str>,
    ) {
        let c = cost(&self.model, tokens_in, tokens_out);
        self.gw.counters.settle(
            ticket,
            tokens_in + tokens_out,
            c,
            tollgate_app::core::now_ms(),
        );
        self.record(status, tokens_in, tokens_out, c, error);
    }
}

async fn handle(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    peer: SocketAddr,
    h: HeaderMap,
    raw: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut res = match forward(gw, endpoint, peer, &h, raw, &request_id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

fn positive(body: &Value, field: &'static str) -> Result<Option<i64>, ProxyError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(ProxyError::invalid(
                field,
                format!("'{field}' must be a positive whole number"),
            )),
        },
    }
}

async fn forward(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    peer: SocketAddr,
    h: &HeaderMap,
    raw: Bytes,
    request_id: &str,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let now = tollgate_app::core::now_ms();
    // 1–2: the key, from memory: revoked, expired, IP allowlist.
    let caller = gw.memory.authenticate(bearer(h)?, now)?;
    caller.check_ip(peer.ip())?;
    let mut body: Value = serde_json::from_slice(&raw)
        .map_err(|e| ProxyError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(ProxyError::invalid(
            "body",
            "the body must be a JSON object",
        ));
    }
    let model_name = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::invalid("model", "'model' is required: one of GET /v1/models"))?
        .to_owned();
    // 3: the model, allowed for key ∩ project ∩ organization.
    let (model, deployments) = caller.route(&model_name)?;
    let stream = endpoint != Endpoint::Embeddings && body.get("stream") == Some(&Value::Bool(true));
    let wants_usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let prompt_estimate = match endpoint {
        Endpoint::Chat => tokens::chat_prompt(&body),
        Endpoint::Completions => tokens::completion_prompt(&body),
        Endpoint::Embeddings => tokens::embedding_input(&body),
    };
    let max_tokens = match endpoint {
        Endpoint::Embeddings => 0,
        _ => match positive(&body, "max_completion_tokens")? {
            Some(n) => n,
            None => {
                positive(&body, "max_tokens")?.unwrap_or(i64::from(gw.config.default_max_tokens))
            }
        },
    };
    let k = &caller.key.key;
    let logs = caller.org.org.spending.content_logging
        && caller.project.project.content_logging
        && !k.no_content_logging;
    let ctx = Ctx {
        gw: gw.clone(),
        request_id: request_id.to_owned(),
        at: now,
        started,
        caller: caller.clone(),
        model: model.clone(),
        endpoint,
        stream,
        provider: deployments
            .first()
            .map(|d| d.provider.provider.name.clone())
            .unwrap_or_default(),
        prompt_estimate,
        request_log: logs.then(|| truncate(&raw, gw.config.content_log_max_bytes)),
    };
    // 4–5: rate limits and budget reservations, all levels at once.
    let admission = Admission {
        caller: &caller,
        tokens: prompt_estimate + max_tokens,
        cost: cost(&model, prompt_estimate, max_tokens),
        now,
    };
    let (ticket, rate_headers) = match gw.counters.admit(admission).await {
        Ok(t) => t,
        Err(e) => {
            ctx.record(e.status.as_u16(), 0, 0, 0, Some(e.code));
            return Err(e);
        }
    };
    // 6: forward, trying further deployments of the model on failure.
    let mut ctx = ctx;
    let mut failure = None;
    for d in deployments.iter() {
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::String(d.upstream_model.clone()));
        }
        ctx.provider = d.provider.provider.name.clone();
        let call = Call {
            endpoint,
            body: &body,
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
        match gw.clients.call(&call).await {
            Ok(Reply::Whole {
                status,
                body: answer,
            }) => match whole(&ctx, status, &answer) {
                Ok((tin, tout)) => {
                    ctx.finish(ticket, status, tin, tout, None);
                    ctx.log_content(&answer);
                    return Ok(respond(status, answer, rate_headers));
                }
                Err(e) => failure = Some(e),
            },
            Ok(Reply::Stream(events)) => {
                return Ok(streaming(ctx, ticket, events, wants_usage, rate_headers));
            }
            Err(e) => {
                let retry = e.retryable();
                failure = Some(e);
                if !retry {
                    break;
                }
            }
        }
        if let Some(e) = &failure {
            tracing::warn!(provider = %ctx.provider, model = %model_name, error = ?e, "upstream failed");
        }
    }
    let e = match failure {
        Some(UpstreamError::Timeout(m)) => ProxyError::gateway_timeout(m),
        Some(UpstreamError::Status { status, message }) => ProxyError::bad_gateway(
            "upstream_error",
            format!(
                "the provider '{}' answered {status}: {message}",
                ctx.provider
            ),
        ),
        Some(UpstreamError::Malformed(m)) => ProxyError::bad_gateway("upstream_malformed", m),
        Some(UpstreamError::Connect(m)) => ProxyError::bad_gateway("upstream_unreachable", m),
        Some(UpstreamError::Unsupported(m)) => ProxyError::invalid("model", m),
        None => ProxyError::bad_gateway("upstream_error", "no provider answered"),
    };
    ctx.finish(ticket, e.status.as_u16(), 0, 0, Some(e.code));
    Err(e)
}

/// Tokens of a whole answer: the provider's usage, else counted. An error
/// the upstream answered (4xx) costs nothing.
fn whole(ctx: &Ctx, status: u16, answer: &[u8]) -> Result<(i64, i64), UpstreamError> {
    if status >= 400 {
        return Ok((0, 0));
    }
    let v: Value = serde_json::from_slice(answer).map_err(|_| {
        UpstreamError::Malformed(format!(
            "the provider '{}' sent an answer that is not JSON",
            ctx.provider
        ))
    })?;
    let tin = v.pointer("/usage/prompt_tokens").and_then(Value::as_i64);
    let tout = v
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_i64);
    Ok(match (tin, tout) {
        (Some(i), Some(o)) => (i, o),
        (Some(i), None) if ctx.endpoint == Endpoint::Embeddings => (i, 0),
        _ => {
            let mut text = String::new();
            tokens::answer_text(&v, &mut text);
            (tin.unwrap_or(ctx.prompt_estimate), tokens::count(&text))
        }
    })
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
    ticket: Option<Ticket>,
    usage: Option<(i64, i64)>,
    text: String,
    response_log: Option<Vec<u8>>,
}

impl Meter {
    fn finish(&mut self, status: u16, error: Option<&str>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let (tin, tout) = self
            .usage
            .unwrap_or_else(|| (self.ctx.prompt_estimate, tokens::count(&self.text)));
        self.ctx.finish(ticket, status, tin, tout, error);
        if let Some(log) = self.response_log.take() {
            self.ctx.log_content(&log);
        }
    }

    fn observe(&mut self, data: &str, v: &Value) {
        if let (Some(i), Some(o)) = (
            v.pointer("/usage/prompt_tokens").and_then(Value::as_i64),
            v.pointer("/usage/completion_tokens")
                .and_then(Value::as_i64),
        ) {
            self.usage = Some((i, o));
        }
        tokens::answer_text(v, &mut self.text);
        if let Some(log) = &mut self.response_log {
            if log.len() < self.ctx.gw.config.content_log_max_bytes + 1 {
                log.extend_from_slice(data.as_bytes());
                log.push(b'\n');
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(499, Some("client_disconnected"));
    }
}

fn sse_error(e: &ProxyError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", e.body()))
}

fn streaming(
    ctx: Ctx,
    ticket: Ticket,
    events: upstream::Events,
    wants_usage: bool,
    headers: Headers,
) -> Response {
    let idle = Duration::from_millis(ctx.gw.config.stream_idle_timeout_ms);
    let logging = ctx.request_log.is_some();
    let meter = Meter {
        ctx,
        ticket: Some(ticket),
        usage: None,
        text: String::new(),
        response_log: logging.then(Vec::new),
    };
    let body = futures::stream::unfold(Some((meter, events)), move |state| async move {
        let (mut meter, mut events) = state?;
        loop {
            let next = match tokio::time::timeout(idle, events.next()).await {
                Err(_) => {
                    let e = ProxyError::gateway_timeout(format!(
                        "the provider '{}' stopped sending for {}s",
                        meter.ctx.provider,
                        idle.as_secs()
                    ));
                    meter.finish(504, Some(e.code));
                    return Some((Ok::<_, std::convert::Infallible>(sse_error(&e)), None));
                }
                Ok(None) => {
                    meter.finish(200, None);
                    return None;
                }
                Ok(Some(Err(e))) => {
                    let e = match e {
                        UpstreamError::Timeout(m) => ProxyError::gateway_timeout(m),
                        UpstreamError::Status { status, message } => ProxyError::bad_gateway(
                            "upstream_error",
                            format!("the provider answered {status}: {message}"),
                        ),
                        UpstreamError::Malformed(m) | UpstreamError::Unsupported(m) => {
                            ProxyError::bad_gateway("upstream_malformed", m)
                        }
                        UpstreamError::Connect(m) => {
                            ProxyError::bad_gateway("upstream_unreachable", m)
                        }
                    };
                    meter.finish(e.status.as_u16(), Some(e.code));
                    return Some((Ok(sse_error(&e)), None));
                }
                Ok(Some(Ok(data))) => data,
            };
            if next == "[DONE]" {
                meter.finish(200, None);
                return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None));
            }
            let Ok(v) = serde_json::from_str::<Value>(&next) else {
                let e = ProxyError::bad_gateway(
                    "upstream_malformed",
                    format!(
                        "the provider '{}' sent a chunk that is not JSON",
                        meter.ctx.provider
                    ),
                );
                meter.finish(502, Some(e.code));
                return Some((Ok(sse_error(&e)), None));
            };
            meter.observe(&next, &v);
            let usage_only = v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if usage_only && !wants_usage {
                continue;
            }
            return Some((
                Ok(Bytes::from(format!("data: {next}\n\n"))),
                Some((meter, events)),
            ));
        }
    });
    let res = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    with_headers(res, headers)
}
