//! The built-in provider: deterministic answers and usage with no network, so
//! a fresh install serves `/v1` at once and tests need no upstream. Upstream
//! `echo` repeats the last user message; any other name answers a fixed
//! sentence. Answers stop at `max_tokens`. The provider's latency delays the
//! answer and each stream chunk.
//!
//! Tools: where the request offers tools (and `tool_choice` is not `none`)
//! and the last message is the user's naming one of them (or `tool_choice`
//! requires one), the answer calls it, with arguments from its schema's
//! required properties (string `"mock"`, number 1, boolean true, `[]`, `{}`).
//! After a tool's result the answer is `Tool result: <its text>`. The
//! Responses and Messages APIs are answered from these chat answers.

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

use super::{now_secs, text_of, Call, Endpoint, Reply, UpstreamError};
use crate::proxy::tokens;

const FIXED: &str = "Hello from Tollgate's mock provider. This answer is the same every time.";
const DIMENSIONS: usize = 16;

fn last_user_text(body: &Value) -> String {
    let messages = body.get("messages").and_then(Value::as_array);
    let last = messages
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    last.and_then(|m| m.get("content"))
        .map_or_else(String::new, text_of)
}

/// The answer, cut after `max` tokens.
fn answer(upstream: &str, prompt: &str, max: i64) -> String {
    let full = if upstream == "echo" && !prompt.trim().is_empty() {
        prompt.to_owned()
    } else {
        FIXED.to_owned()
    };
    let bpe = tiktoken_rs::o200k_base_singleton();
    let toks = bpe.encode_ordinary(&full);
    let keep = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
    if toks.len() <= keep {
        return full;
    }
    bpe.decode(&toks[..keep]).unwrap_or(full)
}

/// Pieces of the answer, a word (with its space) each, for streaming.
fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

fn usage(prompt: i64, completion: i64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion) })
}

pub async fn call(c: &Call<'_>) -> Result<Reply, UpstreamError> {
    let latency = Duration::from_millis(
        u64::try_from(c.deployment.provider.provider.latency_ms).unwrap_or(0),
    );
    let upstream = c.deployment.upstream_model.as_str();
    let id = format!("chatcmpl-{}", c.request_id);
    let created = now_secs();
    let model = c.client_model.to_owned();
    let body = c.body.to_value(upstream).map_err(UpstreamError::BadBody)?;
    let (prompt_tokens, text) = match c.endpoint {
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => {
            let prompt = tokens::chat_prompt(body.get("messages"), body.get("tools"));
            if let Some(call) = tool_call(&body, c.request_id) {
                return Ok(called(c, &call, prompt, latency, created, model).await);
            }
            let text = match tool_result(&body) {
                Some(result) => answer("echo", &format!("Tool result: {result}"), c.max_tokens),
                None => answer(upstream, &last_user_text(&body), c.max_tokens),
            };
            (prompt, text)
        }
        Endpoint::Completions => {
            let prompt = match body.get("prompt") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            (
                tokens::completion_prompt(body.get("prompt")),
                answer(upstream, &prompt, c.max_tokens),
            )
        }
        Endpoint::Embeddings => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return Ok(Reply::Whole {
                status: 200,
                body: Bytes::from(embeddings(&body, &model).to_string()),
                native: false,
            });
        }
    };
    let completion_tokens = tokens::count(&text);
    let finish = if completion_tokens >= c.max_tokens {
        "length"
    } else {
        "stop"
    };
    if !c.stream {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let body = match c.endpoint {
            Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": null, "finish_reason": finish }],
                "usage": usage(prompt_tokens, completion_tokens),
            }),
            _ => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }],
                "usage": usage(prompt_tokens, completion_tokens),
            }),
        };
        return Ok(Reply::Whole {
            status: 200,
            body: Bytes::from(body.to_string()),
            native: false,
        });
    }
    let chat = c.endpoint != Endpoint::Completions;
    let chunk = move |delta: Option<&str>, finish: Option<&str>| -> String {
        if chat {
            let d = match delta {
                Some(t) => json!({ "content": t }),
                None => json!({}),
            };
            json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{ "index": 0, "delta": d, "logprobs": null, "finish_reason": finish }] })
            .to_string()
        } else {
            json!({ "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{ "index": 0, "text": delta.unwrap_or(""), "logprobs": null, "finish_reason": finish }] })
            .to_string()
        }
    };
    let mut events: Vec<String> = Vec::new();
    if chat {
        let first = chunk(Some(""), None).replacen(
            "{\"content\":\"\"}",
            "{\"role\":\"assistant\",\"content\":\"\"}",
            1,
        );
        events.push(first);
    }
    for p in pieces(&text) {
        events.push(chunk(Some(&p), None));
    }
    events.push(chunk(None, Some(finish)));
    let mut last = serde_json::from_str::<Value>(&chunk(None, None)).unwrap_or(Value::Null);
    if let Some(o) = last.as_object_mut() {
        o.insert("choices".into(), json!([]));
        o.insert("usage".into(), usage(prompt_tokens, completion_tokens));
    }
    events.push(last.to_string());
    events.push("[DONE]".to_owned());
    Ok(paced(events, latency))
}

/// Events sent one by one, each after the provider's latency.
fn paced(events: Vec<String>, latency: Duration) -> Reply {
    let stream = futures::stream::iter(events).then(move |e| async move {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok::<_, UpstreamError>(e)
    });
    Reply::Stream {
        events: stream.boxed(),
        native: false,
    }
}

/// The call the answer makes: (call id, tool name, arguments).
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// The tool the answer calls, if any (see the module's notes).
fn tool_call(body: &Value, request_id: &str) -> Option<ToolCall> {
    let tools = body.get("tools").and_then(Value::as_array)?;
    let functions: Vec<&Value> = tools.iter().filter_map(|t| t.get("function")).collect();
    let name_of = |f: &Value| f.get("name").and_then(Value::as_str).map(str::to_owned);
    let choice = body.get("tool_choice");
    if choice == Some(&json!("none")) {
        return None;
    }
    let last = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let said = last.get("content").map_or_else(String::new, text_of);
    let named = choice
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str);
    let f = match named {
        Some(n) => functions.iter().find(|f| name_of(f).as_deref() == Some(n)),
        None => functions
            .iter()
            .find(|f| name_of(f).is_some_and(|n| !n.is_empty() && said.contains(&n)))
            .or_else(|| {
                (choice == Some(&json!("required")))
                    .then(|| functions.first())
                    .flatten()
            }),
    }?;
    Some(ToolCall {
        id: format!("call_{}", &request_id[..request_id.len().min(24)]),
        name: name_of(f)?,
        arguments: arguments(f.get("parameters")).to_string(),
    })
}

/// Arguments for a schema: each required property (all where none is
/// required) with a fixed value of its type.
fn arguments(schema: Option<&Value>) -> Value {
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = serde_json::Map::new();
    for (name, p) in props.into_iter().flatten() {
        if !required.is_empty() && !required.contains(&name.as_str()) {
            continue;
        }
        let v = match p.get("type").and_then(Value::as_str) {
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("mock"),
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// The text of the tool result the conversation ends with, if it does.
fn tool_result(body: &Value) -> Option<String> {
    let last = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())?;
    (last.get("role").and_then(Value::as_str) == Some("tool"))
        .then(|| last.get("content").map_or_else(String::new, text_of))
}

/// An answer that calls a tool, whole or streamed.
async fn called(
    c: &Call<'_>,
    call: &ToolCall,
    prompt: i64,
    latency: Duration,
    created: i64,
    model: String,
) -> Reply {
    let id = format!("chatcmpl-{}", c.request_id);
    let completion = tokens::count(&call.name)
        .saturating_add(tokens::count(&call.arguments))
        .min(c.max_tokens.max(1));
    if !c.stream {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{ "index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": { "role": "assistant", "content": null, "tool_calls": [{
                    "id": call.id, "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments } }] } }],
            "usage": usage(prompt, completion),
        });
        return Reply::Whole {
            status: 200,
            body: Bytes::from(body.to_string()),
            native: false,
        };
    }
    let chunk = |delta: Value, finish: Value, usage_of: Option<Value>| {
        let mut v = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] });
        if let Some(u) = usage_of {
            v["choices"] = json!([]);
            v["usage"] = u;
        }
        v.to_string()
    };
    // The arguments in two pieces, as providers stream them.
    let cut = call
        .arguments
        .char_indices()
        .nth(call.arguments.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let (a, b) = call.arguments.split_at(cut);
    let events = vec![
        chunk(
            json!({ "role": "assistant", "content": null }),
            Value::Null,
            None,
        ),
        chunk(
            json!({ "tool_calls": [{ "index": 0, "id": call.id, "type": "function",
                                     "function": { "name": call.name, "arguments": "" } }] }),
            Value::Null,
            None,
        ),
        chunk(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": a } }] }),
            Value::Null,
            None,
        ),
        chunk(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": b } }] }),
            Value::Null,
            None,
        ),
        chunk(json!({}), json!("tool_calls"), None),
        chunk(json!({}), Value::Null, Some(usage(prompt, completion))),
        "[DONE]".to_owned(),
    ];
    paced(events, latency)
}

/// A unit vector from the text's SHA-256: the same text, the same vector.
fn vector(text: &str) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    let raw: Vec<f32> = digest
        .iter()
        .take(DIMENSIONS)
        .map(|b| f32::from(*b) / 127.5 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

fn embeddings(body: &Value, model: &str) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = vector(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let prompt = tokens::completion_prompt(body.get("input"));
    json!({ "object": "list", "data": data, "model": model, "usage": { "prompt_tokens": prompt, "total_tokens": prompt } })
}
