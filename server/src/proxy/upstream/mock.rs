//! The built-in provider: deterministic answers and usage with no network, so
//! a fresh install serves `/v1` at once and tests need no upstream. Upstream
//! `echo` repeats the last user message; any other name answers a fixed
//! sentence. Answers stop at `max_tokens`. The provider's latency delays the
//! answer and each stream chunk.

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
        Endpoint::Chat => (
            tokens::chat_prompt(body.get("messages"), body.get("tools")),
            answer(upstream, &last_user_text(&body), c.max_tokens),
        ),
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
            Endpoint::Chat => json!({
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
        });
    }
    let chat = c.endpoint == Endpoint::Chat;
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
    let stream = futures::stream::iter(events).then(move |e| async move {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok::<_, UpstreamError>(e)
    });
    Ok(Reply::Stream(stream.boxed()))
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
