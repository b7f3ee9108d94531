//! Calling a provider: the built-in mock, any OpenAI-compatible upstream, or
//! Anthropic (translated). Every provider answers in OpenAI's shapes: a whole
//! JSON body, or a stream of chunk payloads (SSE `data:`) ending in `[DONE]`.

mod anthropic;
mod mock;
mod openai;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::Value;
use std::time::Duration;
use tollgate_app::core::providers::Kind;

use super::memory::Deployment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

pub struct Call<'a> {
    pub endpoint: Endpoint,
    /// The client's body with `model` mapped to the upstream's name.
    pub body: &'a Value,
    pub stream: bool,
    pub deployment: &'a Deployment,
    /// The name the client used, for answers Tollgate writes itself.
    pub client_model: &'a str,
    pub request_id: &'a str,
    /// Output tokens to cap a mock answer or an Anthropic request with.
    pub max_tokens: i64,
}

/// Chunk payloads, OpenAI-shaped JSON (or `[DONE]`).
pub type Events = BoxStream<'static, Result<String, UpstreamError>>;

pub enum Reply {
    /// A whole answer with the upstream's status (a 4xx passes through).
    Whole {
        status: u16,
        body: Bytes,
    },
    Stream(Events),
}

#[derive(Debug)]
pub enum UpstreamError {
    Connect(String),
    Timeout(String),
    /// A 5xx or 429 from the upstream.
    Status {
        status: u16,
        message: String,
    },
    Malformed(String),
    /// The provider cannot do this at all (no retry helps).
    Unsupported(String),
}

impl UpstreamError {
    /// Whether another deployment of the model might answer.
    pub fn retryable(&self) -> bool {
        !matches!(self, UpstreamError::Unsupported(_))
    }
}

pub struct Clients {
    pub http: reqwest::Client,
    pub timeout: Duration,
    pub idle: Duration,
}

impl Clients {
    pub fn new(
        connect: Duration,
        timeout: Duration,
        idle: Duration,
        allow_private: bool,
    ) -> Clients {
        let builder = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        let http = crate::net_guard::guard(builder, allow_private)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Clients {
            http,
            timeout,
            idle,
        }
    }

    pub async fn call(&self, c: &Call<'_>) -> Result<Reply, UpstreamError> {
        match c.deployment.provider.provider.kind {
            Kind::Mock => mock::call(c).await,
            Kind::OpenAi => openai::call(self, c).await,
            Kind::Anthropic => anthropic::call(self, c).await,
        }
    }
}

/// What a reqwest failure was, without the request (URLs carry no secret,
/// but keep messages short and stable).
fn transport(e: &reqwest::Error, provider: &str) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(format!("the provider '{provider}' did not answer in time"))
    } else if e.is_connect() {
        UpstreamError::Connect(format!("cannot connect to the provider '{provider}'"))
    } else {
        UpstreamError::Connect(format!(
            "the connection to the provider '{provider}' failed"
        ))
    }
}

/// A short excerpt of an upstream's error body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.into_owned());
    msg.chars().take(300).collect()
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub fn now_secs() -> i64 {
    tollgate_app::core::now_ms() / 1000
}
