//! Any OpenAI-compatible upstream: the body goes as it came, byte for byte
//! but for `model` (mapped); streams ask for `stream_options.include_usage`
//! so the last chunk has usage.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{transport, Call, Clients, Endpoint, Reply, UpstreamError};

pub async fn call(clients: &Clients, c: &Call<'_>) -> Result<Reply, UpstreamError> {
    let up = &c.deployment.provider;
    let name = &up.provider.name;
    let urls = &c.deployment.urls;
    let url = match c.endpoint {
        Endpoint::Chat => &urls.chat,
        Endpoint::Completions => &urls.completions,
        Endpoint::Embeddings => &urls.embeddings,
    }
    .clone()
    .ok_or_else(|| {
        UpstreamError::Connect(format!("the provider '{name}' has no valid base URL"))
    })?;
    let mut req = clients.http.post(url);
    if let Some(k) = &up.api_key {
        req = req.bearer_auth(k.expose_secret());
    }
    let req = req
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(c.body.for_upstream(&c.deployment.upstream_model, c.stream));
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
        return Ok(Reply::Whole { status, body });
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
    Ok(Reply::Stream(events))
}

/// Whether a stream event is an error object (`{"error": …}`, no choices)
/// rather than a chunk. An escaped `"error"` inside a chunk's text never
/// matches the quick test, so ordinary chunks are not parsed twice.
fn is_error_event(data: &str) -> bool {
    data.contains("\"error\"")
        && serde_json::from_str::<Value>(data)
            .is_ok_and(|v| v.get("error").is_some() && v.get("choices").is_none())
}
