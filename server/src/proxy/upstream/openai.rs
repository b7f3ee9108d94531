//! Any OpenAI-compatible upstream: the body goes as it came, byte for byte
//! but for `model` (mapped); streams ask for `stream_options.include_usage`
//! so the last chunk has usage. A Responses request goes to the provider's
//! Responses API as the client wrote it, unless the provider answered that
//! it has none: then it goes as chat.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::atomic::Ordering;

use super::{transport, Call, Clients, Endpoint, Reply, UpstreamError};

pub async fn call(clients: &Clients, c: &Call<'_>) -> Result<Reply, UpstreamError> {
    let urls = &c.deployment.urls;
    let name = &c.deployment.provider.provider.name;
    if let (Endpoint::Responses, Some(native)) = (c.endpoint, c.native) {
        if !urls.chat_only.load(Ordering::Relaxed) {
            let url = urls.responses.clone().ok_or_else(|| no_url(name))?;
            // Sent with the output cap it is reserved at, and the provider's
            // own id of the response it follows.
            let set: Vec<(&str, Value)> = native
                .previous
                .iter()
                .map(|id| ("previous_response_id", Value::String(id.clone())))
                .collect();
            let bytes = native.body.for_upstream_edited(
                &c.deployment.upstream_model,
                &set,
                &[("max_output_tokens", Value::from(c.max_tokens))],
            );
            match send(clients, c, url, bytes, true).await {
                // A provider without the Responses API (a 404 or 405 that is
                // no API error of its own, such as `model_not_found`): chat
                // from now on.
                Err(UpstreamError::NoRoute { .. }) => {
                    tracing::info!(provider = %name, "the provider has no Responses API; sending it chat completions");
                    urls.chat_only.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        native.chat_can_serve(name)?;
    }
    let url = match c.endpoint {
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => &urls.chat,
        Endpoint::Completions => &urls.completions,
        Endpoint::Embeddings => &urls.embeddings,
    }
    .clone()
    .ok_or_else(|| no_url(name))?;
    let bytes = c.body.for_upstream(&c.deployment.upstream_model, c.stream);
    send(clients, c, url, bytes, false).await
}

fn no_url(name: &str) -> UpstreamError {
    UpstreamError::Connect(format!("the provider '{name}' has no valid base URL"))
}

/// Posts `bytes` to `url`; `native` where they are the client's own
/// Responses request (its stream then ends without `[DONE]`).
async fn send(
    clients: &Clients,
    c: &Call<'_>,
    url: reqwest::Url,
    bytes: bytes::Bytes,
    native: bool,
) -> Result<Reply, UpstreamError> {
    let up = &c.deployment.provider;
    let name = &up.provider.name;
    let mut req = clients.http.post(url);
    if let Some(k) = &up.api_key {
        req = req.bearer_auth(k.expose_secret());
    }
    let req = req
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes);
    let res = clients.send(req, c.stream, name).await?;
    let status = res.status().as_u16();
    if status >= 400 {
        return Err(clients.failure(res, up.api_key.as_ref()).await);
    }
    let is_sse = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !c.stream || !is_sse {
        let body = res.bytes().await.map_err(|e| transport(&e, name))?;
        if c.stream {
            return Err(UpstreamError::Malformed(format!(
                "the provider '{name}' answered a stream request without a stream"
            )));
        }
        return Ok(Reply::Whole {
            status,
            body,
            native,
        });
    }
    let provider = name.clone();
    let key = up.api_key.clone();
    let events = res
        .bytes_stream()
        .eventsource()
        .map(move |ev| match ev {
            // A failure sent as an event: its words go to the log only.
            Ok(e) if is_error_event(&e.data) => Err(UpstreamError::answered(
                502,
                e.data.as_bytes(),
                key.as_ref(),
            )),
            Ok(e) => Ok(e.data),
            // Not the parser's message: it may quote what the upstream sent.
            Err(e) => Err(UpstreamError::Connect(format!(
                "the stream from the provider '{provider}' broke: {}",
                match e {
                    eventsource_stream::EventStreamError::Transport(_) => "connection lost",
                    _ => "an event that is not SSE",
                }
            ))),
        })
        .boxed();
    Ok(Reply::Stream { events, native })
}

/// Whether a stream event is an error object (`{"error": …}`, no choices,
/// or a Responses `error` or `response.failed` event) rather than a chunk.
/// An escaped `"error"` or `failed` inside a chunk's text never matches the
/// quick test, so ordinary chunks are not parsed twice.
fn is_error_event(data: &str) -> bool {
    (data.contains("\"error\"") || data.contains("\"response.failed\""))
        && serde_json::from_str::<Value>(data).is_ok_and(|v| {
            (v.get("error").is_some_and(|e| !e.is_null())
                && v.get("choices").is_none()
                && v.get("response").is_none())
                || crate::proxy::dialect::native_failure(&v)
        })
}
