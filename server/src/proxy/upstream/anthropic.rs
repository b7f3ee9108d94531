//! Anthropic's Messages API. A client that spoke it is passed through (the
//! body as written, `model` mapped, its `anthropic-version` and
//! `anthropic-beta`). Chat and Responses requests are translated: system
//! messages become `system`, `stop` becomes `stop_sequences`, tool calls and
//! results become `tool_use` and `tool_result` blocks; answers and stream
//! events are written back as chat completions and chunks, usage included.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::{now_secs, text_of, transport, Call, Clients, Endpoint, Native, Reply, UpstreamError};
use crate::proxy::dialect::{self, Dialect};

const VERSION: &str = "2023-06-01";

/// The chat request as a Messages request: tool calls as `tool_use`
/// blocks, tool messages as `tool_result` blocks, function tools as tools.
pub fn translate_request(
    body: &Value,
    upstream: &str,
    max_tokens: i64,
    stream: bool,
) -> Result<Value, UpstreamError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        let text = text_of(content);
        match role {
            "system" | "developer" => system.push(text),
            "user" => push(&mut messages, "user", user_blocks(content)),
            "assistant" => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for c in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": c.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                        "input": args,
                    }));
                }
                // Anthropic takes no empty turn.
                if !blocks.is_empty() {
                    push(&mut messages, "assistant", blocks);
                }
            }
            "tool" => push(
                &mut messages,
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default(),
                    "content": text,
                })],
            ),
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
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            let mut t = Map::new();
            t.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
            if let Some(d) = f.get("description") {
                t.insert("description".into(), d.clone());
            }
            t.insert(
                "input_schema".into(),
                f.get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object" })),
            );
            Value::Object(t)
        })
        .collect();
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let choice = match body.get("tool_choice") {
            Some(Value::String(s)) if s == "required" => Some(json!({ "type": "any" })),
            Some(Value::String(s)) if s == "none" => Some(json!({ "type": "none" })),
            Some(Value::String(s)) if s == "auto" => Some(json!({ "type": "auto" })),
            Some(c) => c
                .pointer("/function/name")
                .map(|n| json!({ "type": "tool", "name": n })),
            None => None,
        };
        if let Some(mut c) = choice {
            if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
                c["disable_parallel_tool_use"] = json!(true);
            }
            out.insert("tool_choice".into(), c);
        }
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// A user message's content as blocks: text, and images by URL or data.
fn user_blocks(content: &Value) -> Vec<Value> {
    let Value::Array(parts) = content else {
        return vec![json!({ "type": "text", "text": text_of(content) })];
    };
    parts
        .iter()
        .filter_map(|p| match p.get("type").and_then(Value::as_str) {
            Some("image_url") => {
                let url = p.pointer("/image_url/url").and_then(Value::as_str)?;
                let source = match url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                {
                    Some((media, data)) => {
                        json!({ "type": "base64", "media_type": media, "data": data })
                    }
                    None => json!({ "type": "url", "url": url }),
                };
                Some(json!({ "type": "image", "source": source }))
            }
            _ => p
                .get("text")
                .and_then(Value::as_str)
                .map(|t| json!({ "type": "text", "text": t })),
        })
        .collect()
}

/// Appends blocks as a message of `role`, joined to the last message where
/// it has the same role (Anthropic alternates roles).
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some(role) {
            if let Some(c) = last.get_mut("content").and_then(Value::as_array_mut) {
                c.extend(blocks);
                return;
            }
        }
    }
    messages.push(json!({ "role": role, "content": blocks }));
}

fn finish_reason(stop: Option<&str>) -> Value {
    match stop {
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
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
    let calls: Vec<Value> = v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        .map(|b| {
            json!({ "id": b.get("id").cloned().unwrap_or(json!("")), "type": "function",
                    "function": { "name": b.get("name").cloned().unwrap_or(json!("")),
                                  "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string) } })
        })
        .collect();
    let (input, output) = dialect::native_usage(Dialect::Messages, v);
    let mut message = json!({ "role": "assistant", "content": text });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": id, "object": "chat.completion", "created": now_secs(), "model": model,
        "choices": [{ "index": 0, "message": message, "logprobs": null,
                      "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str)) }],
        "usage": usage(input, output),
    })
}

pub async fn call(clients: &Clients, c: &Call<'_>) -> Result<Reply, UpstreamError> {
    if !c.endpoint.is_chat() {
        return Err(UpstreamError::Unsupported(format!(
            "Anthropic providers serve chat completions, responses and messages, not {}",
            c.endpoint.as_str()
        )));
    }
    let up = &c.deployment.provider;
    let name = &up.provider.name;
    let url = c.deployment.urls.messages.clone().ok_or_else(|| {
        UpstreamError::Connect(format!("the provider '{name}' has no valid base URL"))
    })?;
    // The Messages API spoken by the client goes as the client wrote it.
    let native = c.native.filter(|_| c.endpoint == Endpoint::Messages);
    let req = request(clients, c, url, native);
    let req = match native {
        Some(n) => req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(n.body.for_upstream(&c.deployment.upstream_model, false)),
        None => req.json(&translate_request(
            &c.body
                .to_value(&c.deployment.upstream_model)
                .map_err(UpstreamError::BadBody)?,
            &c.deployment.upstream_model,
            c.max_tokens,
            c.stream,
        )?),
    };
    let res = clients.send(req, c.stream, name).await?;
    let status = res.status().as_u16();
    if status >= 400 {
        return Err(clients.failure(res, up.api_key.as_ref()).await);
    }
    if native.is_some() {
        return passed_through(res, c.stream, name, up.api_key.clone()).await;
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
            native: false,
        });
    }
    let provider = name.clone();
    let key = up.api_key.clone();
    let created = now_secs();
    let mut input: Option<i64> = None;
    let mut output: Option<i64> = None;
    // Content block index → the tool call's index among the answer's calls.
    let mut tools: Vec<(u64, u64)> = Vec::new();
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
            let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            let out: Vec<String> = match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    input = dialect::native_usage(Dialect::Messages, &v).0;
                    vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)]
                }
                Some("content_block_start")
                    if v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use") =>
                {
                    let call = tools.len() as u64;
                    tools.push((block, call));
                    let b = &v["content_block"];
                    vec![chunk(
                        json!({ "tool_calls": [{ "index": call, "id": b.get("id"), "type": "function",
                                                 "function": { "name": b.get("name"), "arguments": "" } }] }),
                        Value::Null,
                    )]
                }
                Some("content_block_delta") => match v.pointer("/delta/text").and_then(Value::as_str) {
                    Some(t) => vec![chunk(json!({ "content": t }), Value::Null)],
                    None => match (
                        v.pointer("/delta/partial_json").and_then(Value::as_str),
                        tools.iter().find(|(b, _)| *b == block),
                    ) {
                        (Some(piece), Some((_, call))) => vec![chunk(
                            json!({ "tool_calls": [{ "index": call, "function": { "arguments": piece } }] }),
                            Value::Null,
                        )],
                        _ => Vec::new(),
                    },
                },
                Some("message_delta") => {
                    let (i, o) = dialect::native_usage(Dialect::Messages, &v);
                    input = i.or(input);
                    output = o.or(output);
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
    Ok(Reply::Stream {
        events,
        native: false,
    })
}

/// A request to the provider with its key and API version: the client's
/// `anthropic-version` and `anthropic-beta` where it spoke the Messages API.
fn request(
    clients: &Clients,
    c: &Call<'_>,
    url: reqwest::Url,
    native: Option<&Native>,
) -> reqwest::RequestBuilder {
    let mut req = clients.http.post(url);
    let headers = native.map(|n| n.headers.as_slice()).unwrap_or_default();
    for (name, value) in headers {
        req = req.header(*name, value.clone());
    }
    if !headers.iter().any(|(n, _)| *n == "anthropic-version") {
        req = req.header("anthropic-version", VERSION);
    }
    if let Some(k) = &c.deployment.provider.api_key {
        req = req.header("x-api-key", k.expose_secret());
    }
    req
}

/// The provider's own answer to a Messages request, whole or as its event
/// stream (an `error` event becomes the stream's failure).
async fn passed_through(
    res: reqwest::Response,
    stream: bool,
    name: &str,
    key: Option<secrecy::SecretString>,
) -> Result<Reply, UpstreamError> {
    if !stream {
        let status = res.status().as_u16();
        let body = res.bytes().await.map_err(|e| transport(&e, name))?;
        return Ok(Reply::Whole {
            status,
            body,
            native: true,
        });
    }
    let provider = name.to_owned();
    let events = res
        .bytes_stream()
        .eventsource()
        .map(move |ev| {
            let ev = ev.map_err(|_| {
                UpstreamError::Connect(format!("the stream from the provider '{provider}' broke"))
            })?;
            if ev.event == "error" || ev.data.contains("\"error\"") && is_error(&ev.data) {
                return Err(UpstreamError::answered(
                    502,
                    ev.data.as_bytes(),
                    key.as_ref(),
                ));
            }
            Ok(ev.data)
        })
        .boxed();
    Ok(Reply::Stream {
        events,
        native: true,
    })
}

fn is_error(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|v| dialect::native_failure(&v))
}

/// Anthropic's count of a Messages request's input tokens, as the provider
/// answers `/v1/messages/count_tokens`.
pub async fn count_tokens(clients: &Clients, c: &Call<'_>) -> Result<Value, UpstreamError> {
    let name = &c.deployment.provider.provider.name;
    clients.guard(c.deployment)?;
    let native = c
        .native
        .ok_or_else(|| UpstreamError::BadBody("count_tokens takes a Messages request".into()))?;
    let url = c.deployment.urls.count_tokens.clone().ok_or_else(|| {
        UpstreamError::Connect(format!("the provider '{name}' has no valid base URL"))
    })?;
    let req = request(clients, c, url, Some(native))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(
            native
                .body
                .for_upstream(&c.deployment.upstream_model, false),
        );
    let res = clients.send(req, false, name).await?;
    if res.status().as_u16() >= 400 {
        return Err(clients
            .failure(res, c.deployment.provider.api_key.as_ref())
            .await);
    }
    let body = res.bytes().await.map_err(|e| transport(&e, name))?;
    serde_json::from_slice(&body).map_err(|_| {
        UpstreamError::Malformed(format!(
            "the provider '{name}' sent an answer that is not JSON"
        ))
    })
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
        assert_eq!(
            m["messages"][0],
            json!({ "role": "user", "content": [{ "type": "text", "text": "Hi" }] })
        );
        assert_eq!(m["stream"], true);
        assert_eq!(m["metadata"]["user_id"], "u1");
        let tools = json!({
            "messages": [
                { "role": "user", "content": "Weather?" },
                { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function",
                    "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" } }] },
                { "role": "tool", "tool_call_id": "c1", "content": "sunny" },
                { "role": "tool", "tool_call_id": "c2", "content": "rainy" },
            ],
            "tools": [{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }],
            "tool_choice": "required",
        });
        let m = translate_request(&tools, "c", 10, false).unwrap();
        assert_eq!(
            m["messages"][1]["content"][0]["input"],
            json!({ "city": "Paris" })
        );
        assert_eq!(m["messages"][2]["role"], "user");
        assert_eq!(
            m["messages"][2]["content"].as_array().unwrap().len(),
            2,
            "tool results in one turn"
        );
        assert_eq!(m["messages"][2]["content"][1]["tool_use_id"], "c2");
        assert_eq!(m["tools"][0]["input_schema"], json!({ "type": "object" }));
        assert_eq!(m["tool_choice"], json!({ "type": "any" }));
        let odd = json!({ "messages": [{ "role": "function", "content": "x" }] });
        assert!(matches!(
            translate_request(&odd, "c", 1, false),
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
