//! Calling a provider: the built-in mock, any OpenAI-compatible upstream, or
//! Anthropic (translated). Every provider answers in OpenAI's shapes: a whole
//! JSON body, or a stream of chunk payloads (SSE `data:`) ending in `[DONE]`.

mod anthropic;
mod mock;
mod openai;

pub use anthropic::count_tokens;

use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::time::Duration;
use tollgate_app::core::providers::Kind;

use super::dialect::Dialect;
use super::memory::Deployment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
        }
    }

    /// The API the client speaks, where it is not chat's.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Endpoint::Responses => Some(Dialect::Responses),
            Endpoint::Messages => Some(Dialect::Messages),
            _ => None,
        }
    }

    /// Whether the request is a conversation (chat, or read as chat).
    pub fn is_chat(self) -> bool {
        matches!(
            self,
            Endpoint::Chat | Endpoint::Responses | Endpoint::Messages
        )
    }
}

pub struct Call<'a> {
    pub endpoint: Endpoint,
    /// The client's body, read as chat where the client spoke another API;
    /// each upstream maps `model` to the deployment's.
    pub body: &'a super::body::RequestBody,
    /// The client's own body where it spoke the Responses or Messages API:
    /// what a provider speaking that API is sent.
    pub native: Option<&'a Native>,
    pub stream: bool,
    pub deployment: &'a Deployment,
    /// The name the client used, for answers Tollgate writes itself.
    pub client_model: &'a str,
    pub request_id: &'a str,
    /// Output tokens to cap a mock answer or an Anthropic request with.
    pub max_tokens: i64,
}

/// A request in the client's own API (Responses or Messages).
pub struct Native {
    pub body: super::body::RequestBody,
    /// What a chat-only provider cannot serve, and why (the field named).
    pub native_only: Option<(&'static str, String)>,
    /// The client's `anthropic-version` and `anthropic-beta` headers, passed
    /// to an Anthropic provider with the body.
    pub headers: Vec<(&'static str, reqwest::header::HeaderValue)>,
    /// The provider's id of the response the request follows
    /// (`previous_response_id`, unsealed for the caller's key).
    pub previous: Option<String>,
}

impl Native {
    /// Refuses a request a chat-only provider cannot serve.
    fn chat_can_serve(&self, provider: &str) -> Result<(), UpstreamError> {
        match &self.native_only {
            Some((param, why)) => Err(UpstreamError::Invalid {
                param,
                message: format!("{why} (the provider '{provider}' is sent chat completions)"),
            }),
            None => Ok(()),
        }
    }
}

/// Event payloads (SSE `data:`): OpenAI-shaped chunks ending in `[DONE]`,
/// or, where the answer is `native`, the events of the client's own API.
pub type Events = BoxStream<'static, Result<String, UpstreamError>>;

pub enum Reply {
    /// A whole successful answer with the upstream's status; `native` where
    /// it is in the client's own API rather than a chat completion.
    Whole {
        status: u16,
        body: Bytes,
        native: bool,
    },
    Stream {
        events: Events,
        native: bool,
    },
}

#[derive(Debug)]
pub enum UpstreamError {
    Connect(String),
    Timeout(String),
    /// A 5xx or 429 from the upstream; `detail` (its words, redacted) is
    /// for the log only.
    Status {
        status: u16,
        detail: String,
    },
    /// A 4xx from the upstream (no other deployment is tried); `detail` as above.
    Refused {
        status: u16,
        detail: String,
    },
    Malformed(String),
    /// The provider cannot do this at all (no retry helps).
    Unsupported(String),
    /// The body cannot be translated for this provider (no retry helps).
    BadBody(String),
    /// A 404 or 405 without an API error in it: the provider does not
    /// serve the path at all; `detail` as above.
    NoRoute {
        status: u16,
        detail: String,
    },
    /// A field of the request this provider cannot serve (no retry helps).
    Invalid {
        param: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// Whether another deployment of the model might answer.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Unsupported(_)
                | UpstreamError::BadBody(_)
                | UpstreamError::Refused { .. }
                | UpstreamError::NoRoute { .. }
                | UpstreamError::Invalid { .. }
        )
    }

    /// A refusal that concerns the target, not the request: the provider
    /// cannot do this (unsupported), or refused its credentials or the model
    /// (401, 403, 404). Another target may serve the same request.
    pub fn is_the_targets_own(&self) -> bool {
        match self {
            UpstreamError::Unsupported(_)
            | UpstreamError::Invalid { .. }
            | UpstreamError::NoRoute { .. } => true,
            UpstreamError::Refused { status, .. } => matches!(status, 401 | 403 | 404),
            _ => false,
        }
    }

    /// A failure status and body from the upstream: retryable for a 5xx or
    /// 429, a refusal otherwise. The body is kept redacted, for the log.
    fn answered(status: u16, body: &[u8], key: Option<&SecretString>) -> UpstreamError {
        // Redacted whole, then cut: a key across the cut is still found.
        let detail = excerpt(
            redact(
                &String::from_utf8_lossy(body),
                key.map(ExposeSecret::expose_secret),
            )
            .as_bytes(),
        );
        // An API's own error names a code (`model_not_found`, …); a path
        // the server does not serve has none.
        let coded = || {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.pointer("/error/code").cloned())
                .is_some_and(|c| !c.is_null())
        };
        if status >= 500 || status == 429 {
            UpstreamError::Status { status, detail }
        } else if matches!(status, 404 | 405) && !coded() {
            UpstreamError::NoRoute { status, detail }
        } else {
            UpstreamError::Refused { status, detail }
        }
    }
}

pub struct Clients {
    pub http: reqwest::Client,
    pub timeout: Duration,
    pub idle: Duration,
    /// `allow_private_networks`: when off, a provider stored with a private
    /// IP literal (before the setting, or while it was on) is not called;
    /// names are checked by the client's resolver.
    allow_private: bool,
}

impl Clients {
    /// The one place the upstream HTTP client is built; an error here is a
    /// start-up error (a default client would have no timeouts).
    pub fn new(
        connect: Duration,
        timeout: Duration,
        idle: Duration,
        allow_private: bool,
    ) -> Result<Clients, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        let http = crate::net_guard::guard(builder, allow_private).build()?;
        Ok(Clients {
            http,
            timeout,
            idle,
            allow_private,
        })
    }

    pub async fn call(&self, c: &Call<'_>) -> Result<Reply, UpstreamError> {
        self.guard(c.deployment)?;
        let kind = c.deployment.provider.provider.kind;
        // Only an OpenAI-compatible provider may speak the Responses API,
        // and only an Anthropic one the Messages API; the rest are sent chat.
        let may_pass = match c.endpoint {
            Endpoint::Responses => kind == Kind::OpenAi,
            Endpoint::Messages => kind == Kind::Anthropic,
            _ => true,
        };
        if let (false, Some(n)) = (may_pass, c.native) {
            n.chat_can_serve(&c.deployment.provider.provider.name)?;
        }
        match kind {
            Kind::Mock => mock::call(c).await,
            Kind::OpenAi => openai::call(self, c).await,
            Kind::Anthropic => anthropic::call(self, c).await,
        }
    }

    /// Refuses a provider stored with a private IP literal while private
    /// networks are not allowed.
    pub(crate) fn guard(&self, d: &Deployment) -> Result<(), UpstreamError> {
        let urls = &d.urls;
        let private = [
            &urls.chat,
            &urls.completions,
            &urls.embeddings,
            &urls.messages,
            &urls.responses,
        ]
        .into_iter()
        .flatten()
        .any(crate::net_guard::is_private_literal);
        if private && !self.allow_private {
            return Err(UpstreamError::Connect(format!(
                "the provider '{}' is on a private network address, which this server does not call (allow_private_networks)",
                d.provider.provider.name
            )));
        }
        Ok(())
    }

    /// A request to a deployment's provider that generates nothing (a
    /// stored response read or deleted): its status and body, bounded.
    pub async fn fetch(
        &self,
        d: &Deployment,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> Result<(u16, Bytes), UpstreamError> {
        let name = &d.provider.provider.name;
        self.guard(d)?;
        let mut req = self.http.request(method, url).timeout(self.timeout);
        if let Some(k) = &d.provider.api_key {
            req = req.bearer_auth(k.expose_secret());
        }
        let res = req.send().await.map_err(|e| transport(&e, name))?;
        let status = res.status().as_u16();
        if status >= 400 && status != 404 {
            return Err(self.failure(res, d.provider.api_key.as_ref()).await);
        }
        let body = res.bytes().await.map_err(|e| transport(&e, name))?;
        Ok((status, body))
    }

    /// The failure an upstream answered with (a status of 400 or more): at
    /// most [`ERROR_BODY_MAX`] bytes of its body, read within `idle`, the
    /// rest dropped with the connection.
    async fn failure(
        &self,
        mut res: reqwest::Response,
        key: Option<&SecretString>,
    ) -> UpstreamError {
        let status = res.status().as_u16();
        let mut body = Vec::new();
        let read = async {
            while body.len() < ERROR_BODY_MAX {
                match res.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
        };
        // A body still arriving when time is up is judged by what came.
        let _ = tokio::time::timeout(self.idle, read).await;
        body.truncate(ERROR_BODY_MAX);
        UpstreamError::answered(status, &body, key)
    }

    /// Sends a built request: a stream must start within `idle`, a whole
    /// answer must arrive within `timeout`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        stream: bool,
        provider: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        if stream {
            tokio::time::timeout(self.idle, req.send())
                .await
                .map_err(|_| {
                    UpstreamError::Timeout(format!(
                        "the provider '{provider}' did not start its answer in time"
                    ))
                })?
        } else {
            req.timeout(self.timeout).send().await
        }
        .map_err(|e| transport(&e, provider))
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

/// How much of an upstream's error body is read.
const ERROR_BODY_MAX: usize = 64 * 1024;

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

const REDACTED: &str = "[redacted]";

/// `text` with the provider's key, and anything shaped like a key
/// (`sk-…`) or a bearer credential, replaced: for logging what an upstream
/// said.
pub fn redact(text: &str, key: Option<&str>) -> String {
    let text = match key.filter(|k| k.len() >= 4) {
        Some(k) => text.replace(k, REDACTED),
        None => text.to_owned(),
    };
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some((start, len)) = ["sk-", "bearer "]
        .iter()
        .filter_map(|m| lower[at..].find(m).map(|i| (at + i, m.len())))
        .min()
    {
        let token_start = start + len;
        let glued = start > 0
            && len == 3
            && text[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
        let token_len = text[token_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(text.len() - token_start);
        out.push_str(&text[at..token_start]);
        at = token_start;
        if !glued && token_len > 0 {
            out.push_str(REDACTED);
            at += token_len;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// The text of a message's `content`: a string, or the text parts of an array.
pub(crate) fn text_of(content: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_keys_and_bearer_tokens() {
        let said = "Incorrect API key provided: Bearer sk-live-AbC.123_x; key my-provider-key; \
                    sk-ant-api03-zzz at http://10.0.0.5/ ask-me ok";
        let r = redact(said, Some("my-provider-key"));
        for leak in ["AbC.123_x", "my-provider-key", "api03-zzz"] {
            assert!(!r.contains(leak), "{r}");
        }
        assert!(r.contains("Bearer [redacted]"), "{r}");
        assert!(r.contains("key [redacted];"), "{r}");
        assert!(
            r.contains("ask-me ok"),
            "a word that merely contains sk-: {r}"
        );
        assert_eq!(redact("bearer", None), "bearer");
        assert_eq!(redact("sk-", None), "sk-");
    }
}
