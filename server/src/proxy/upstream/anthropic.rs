//! Anthropic's Messages API behind the chat schema: system messages become
//! `system`, `stop` becomes `stop_sequences`, answers and stream events are
//! written back as chat completions and chunks, usage included.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::{now_secs, text_of, transport, Call, Clients, Endpoint, Reply, UpstreamError};

const VERSION: &str = "2023-06-01";

/// The chat request as a Messages request.
pub fn translate_request(
    body: &Value,
    upstream: &str,
    max_tokens: i64,
    stream: bool,
) -> Result<Value, UpstreamError> {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let text = text_of(m.get("content").unwrap_or(&Value::Null));
        match role {
            "system" | "developer" => system.push(text),
            "user" | "assistant" => messages.push(json!({ "role": role, "content": text })),
            other => {
                return Err(UpstreamError::Unsupported(format!(
                    "messages with the role '{other}' cannot be sent to an Anthropic provider"
                )))
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(upstream));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    for k in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            out.insert("stop_sequences".into(), v.clone());
        }
        _ => {}
    }
    if let Some(u) = body.get("user") {
        out.insert("metadata".into(), json!({ "user_id": u }));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

fn finish_reason(stop: Option<&str>) -> Value {
    match stop {
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some(_) => json!("stop"),
        None => Value::Null,
    }
}

/// The usage of an answer, `null` unless the upstream reported both counts
/// (then the gateway counts the text itself rather than bill nothing).
fn usage(input: Option<i64>, output: Option<i64>) -> Value {
    match (input, output) {
        (Some(i), Some(o)) => {
            json!({ "prompt_tokens": i, "completion_tokens": o, "total_tokens": i.saturating_add(o) })
        }
        _ => Value::Null,
    }
}

/// A Messages answer as a chat completion.
pub fn translate_answer(v: &Value, id: &str, model: &str) -> Value {
    let text: String = v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let input = v.pointer("/usage/input_tokens").and_then(Value::as_i64);
    let output = v.pointer("/usage/output_tokens").and_then(Value::as_i64);
    json!({
        "id": id, "object": "chat.completion", "created": now_secs(), "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": null,
                      "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str)) }],
        "usage": usage(input, output),
    })
}

pub async fn call(clients: &Clients, c: &Call<'_>) -> Result<Reply, UpstreamError> {
    if c.endpoint != Endpoint::Chat {
        return Err(UpstreamError::Unsupported(format!(
            "Anthropic providers serve chat completions only, not {}",
            c.endpoint.as_str()
        )));
    }
    let up = &c.deployment.provider;
    let name = &up.provider.name;
    let body = translate_request(
        &c.body
            .to_value(&c.deployment.upstream_model)
            .map_err(UpstreamError::BadBody)?,
        &c.deployment.upstream_model,
        c.max_tokens,
        c.stream,
    )?;
    let url = c.deployment.urls.messages.clone().ok_or_else(|| {
        UpstreamError::Connect(format!("the provider '{name}' has no valid base URL"))
    })?;
    let mut req = clients.http.post(url).header("anthropic-version", VERSION);
    if let Some(k) = &up.api_key {
        req = req.header("x-api-key", k.expose_secret());
    }
    let res = clients.send(req.json(&body), c.stream, name).await?;
    let status = res.status().as_u16();
    if status >= 400 {
        return Err(clients.failure(res, up.api_key.as_ref()).await);
    }
    let id = format!("chatcmpl-{}", c.request_id);
    let model = c.client_model.to_owned();
    if !c.stream {
        let body = res.bytes().await.map_err(|e| transport(&e, name))?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            UpstreamError::Malformed(format!(
                "the provider '{name}' sent an answer that is not JSON"
            ))
        })?;
        return Ok(Reply::Whole {
            status: 200,
            body: Bytes::from(translate_answer(&v, &id, &model).to_string()),
        });
    }
    let provider = name.clone();
    let key = up.api_key.clone();
    let created = now_secs();
    let mut input: Option<i64> = None;
    let mut output: Option<i64> = None;
    let events = res
        .bytes_stream()
        .eventsource()
        .map(move |ev| {
            let ev = ev.map_err(|_| UpstreamError::Connect(format!("the stream from the provider '{provider}' broke")))?;
            let v: Value = serde_json::from_str(&ev.data)
                .map_err(|_| UpstreamError::Malformed(format!("the provider '{provider}' sent a stream event that is not JSON")))?;
            let chunk = |delta: Value, finish: Value| {
                json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] })
                .to_string()
            };
            let out: Vec<String> = match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    input = v.pointer("/message/usage/input_tokens").and_then(Value::as_i64);
                    vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)]
                }
                Some("content_block_delta") => match v.pointer("/delta/text").and_then(Value::as_str) {
                    Some(t) => vec![chunk(json!({ "content": t }), Value::Null)],
                    None => Vec::new(),
                },
                Some("message_delta") => {
                    output = v.pointer("/usage/output_tokens").and_then(Value::as_i64).or(output);
                    vec![chunk(json!({}), finish_reason(v.pointer("/delta/stop_reason").and_then(Value::as_str)))]
                }
                Some("message_stop") => vec![
                    json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "usage": usage(input, output) })
                    .to_string(),
                    "[DONE]".to_owned(),
                ],
                Some("error") => return Err(UpstreamError::answered(502, ev.data.as_bytes(), key.as_ref())),
                _ => Vec::new(),
            };
            Ok(out)
        })
        .flat_map(|r: Result<Vec<String>, UpstreamError>| {
            futures::stream::iter(match r {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .boxed();
    Ok(Reply::Stream(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_a_messages_request() {
        let chat = json!({
            "model": "anthropic/claude", "temperature": 0.2, "stop": "END", "user": "u1",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": [{ "type": "text", "text": "Hi" }] },
                { "role": "assistant", "content": "Hello" },
                { "role": "user", "content": "Bye" },
            ]
        });
        let m = translate_request(&chat, "claude-3-5-haiku-latest", 100, true).unwrap();
        assert_eq!(m["model"], "claude-3-5-haiku-latest");
        assert_eq!(m["system"], "Be brief.");
        assert_eq!(m["max_tokens"], 100);
        assert_eq!(m["stop_sequences"], json!(["END"]));
        assert_eq!(m["messages"].as_array().unwrap().len(), 3);
        assert_eq!(m["messages"][0], json!({ "role": "user", "content": "Hi" }));
        assert_eq!(m["stream"], true);
        assert_eq!(m["metadata"]["user_id"], "u1");
        let tool = json!({ "messages": [{ "role": "tool", "content": "x" }] });
        assert!(matches!(
            translate_request(&tool, "c", 1, false),
            Err(UpstreamError::Unsupported(_))
        ));
    }

    #[test]
    fn a_messages_answer_becomes_a_chat_completion() {
        let a = json!({ "content": [{ "type": "text", "text": "Hel" }, { "type": "text", "text": "lo" }],
                        "stop_reason": "max_tokens", "usage": { "input_tokens": 7, "output_tokens": 2 } });
        let c = translate_answer(&a, "chatcmpl-1", "anthropic/claude");
        assert_eq!(c["choices"][0]["message"]["content"], "Hello");
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert_eq!(c["usage"]["total_tokens"], 9);
        assert_eq!(c["model"], "anthropic/claude");
    }
}
