//! Anthropic's Messages API over chat completions: `system`, messages with
//! text, image, `tool_use` and `tool_result` blocks, tools, `tool_choice`,
//! `max_tokens` and `stop_sequences` as a chat request; a chat answer as a
//! message; a chat stream as Anthropic's events (`message_start` …
//! `message_stop`); refusals in Anthropic's error shape.

use serde_json::{json, Map, Value};

use super::{arguments_object, opt_str, ChatAnswer, Delta, Frame, Translated};
use crate::proxy::error::ProxyError;

/// Anthropic's error object for a refusal: its type by status, Tollgate's
/// words and rule.
pub fn error_body(e: &ProxyError) -> Value {
    let kind = match e.status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    };
    json!({
        "type": "error",
        "error": { "type": kind, "message": e.message, "code": e.code, "param": e.param },
    })
}

/// A Messages request as a chat request.
pub fn to_chat(v: &Value) -> Result<Translated, ProxyError> {
    let mut t = Translated {
        chat: Value::Null,
        native_only: None,
    };
    let mut out = Map::new();
    for f in ["model", "temperature", "top_p", "stream"] {
        if let Some(x) = v.get(f).filter(|x| !x.is_null()) {
            out.insert(f.into(), x.clone());
        }
    }
    match v.get("max_tokens") {
        Some(n) if !n.is_null() => {
            out.insert("max_tokens".into(), n.clone());
        }
        _ => {
            return Err(ProxyError::invalid(
                "max_tokens",
                "'max_tokens' is required: the most tokens the answer may have",
            ))
        }
    }
    match v.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(s @ Value::Array(_)) => {
            out.insert("stop".into(), s.clone());
        }
        Some(_) => {
            return Err(ProxyError::invalid(
                "stop_sequences",
                "'stop_sequences' must be a list of strings",
            ))
        }
    }
    if let Some(u) = v.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(u));
    }
    let mut messages = Vec::new();
    match v.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({ "role": "system", "content": s })),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            messages.push(json!({ "role": "system", "content": text.join("\n\n") }));
        }
        Some(_) => {
            return Err(ProxyError::invalid(
                "system",
                "'system' must be a string or a list of text blocks",
            ))
        }
    }
    let list = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ProxyError::invalid("messages", "'messages' is required: a list of messages")
        })?;
    for m in list {
        message(m, &mut messages, &mut t)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    let mut has_tools = false;
    if let Some(tools) = v.get("tools").filter(|x| !x.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| ProxyError::invalid("tools", "'tools' must be a list of tools"))?;
        let mut chat = Vec::new();
        for tool in tools {
            // A deferred tool is loaded by the provider's tool search;
            // a chat provider is offered the tools it can call now.
            if tool.get("defer_loading") == Some(&Value::Bool(true)) {
                continue;
            }
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    let name = opt_str(tool, "name")?
                        .ok_or_else(|| ProxyError::invalid("tools", "each tool needs a 'name'"))?;
                    let mut f = Map::new();
                    f.insert("name".into(), json!(name));
                    if let Some(d) = tool.get("description").filter(|x| !x.is_null()) {
                        f.insert("description".into(), d.clone());
                    }
                    let schema = tool
                        .get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({ "type": "object" }));
                    f.insert("parameters".into(), schema);
                    chat.push(json!({ "type": "function", "function": f }));
                }
                Some(other) => {
                    let other = other.to_owned();
                    t.native_only("tools", || {
                        format!("the tool type '{other}' is served only by an Anthropic provider")
                    });
                }
            }
        }
        has_tools = !chat.is_empty();
        if has_tools {
            out.insert("tools".into(), Value::Array(chat));
        }
    }
    if let Some(c) = v.get("tool_choice").filter(|x| !x.is_null()) {
        let choice = match c.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({ "type": "function", "function": { "name": c.get("name").and_then(Value::as_str).unwrap_or_default() } })
            }
            _ => {
                return Err(ProxyError::invalid(
                    "tool_choice",
                    "'tool_choice.type' must be auto, any, tool or none",
                ))
            }
        };
        if has_tools {
            out.insert("tool_choice".into(), choice);
            if c.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if out.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    t.chat = Value::Object(out);
    Ok(t)
}

/// The text of a `tool_result`'s content: a string or text blocks.
fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An image block as a chat image part.
fn image_part(b: &Value) -> Option<Value> {
    let s = b.get("source")?;
    let url = match s.get("type").and_then(Value::as_str)? {
        "base64" => format!(
            "data:{};base64,{}",
            s.get("media_type").and_then(Value::as_str)?,
            s.get("data").and_then(Value::as_str)?
        ),
        "url" => s.get("url").and_then(Value::as_str)?.to_owned(),
        _ => return None,
    };
    Some(json!({ "type": "image_url", "image_url": { "url": url } }))
}

/// One message as chat messages: tool results become tool messages (before
/// the rest of the user's content), tool uses the assistant's tool calls.
fn message(m: &Value, out: &mut Vec<Value>, t: &mut Translated) -> Result<(), ProxyError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    // Claude Code sends instructions mid-conversation as system messages.
    if role == "system" {
        let text = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(c) => result_text(Some(c)),
            None => String::new(),
        };
        out.push(json!({ "role": "system", "content": text }));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(ProxyError::invalid(
            "messages",
            format!("a message's role must be user, assistant or system, not '{role}'"),
        ));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({ "role": role, "content": s }));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(ProxyError::invalid(
                "messages",
                "a message's 'content' must be a string or a list of content blocks",
            ))
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or_default();
                parts.push(json!({ "type": "text", "text": text }));
            }
            Some("image") => match image_part(b) {
                Some(p) => parts.push(p),
                None => t.native_only("messages", || {
                    "this image source is served only by an Anthropic provider; send base64 data or a URL".into()
                }),
            },
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": b.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            Some("tool_result") => {
                let mut text = result_text(b.get("content"));
                if b.get("is_error") == Some(&Value::Bool(true)) {
                    text = format!("Error: {text}");
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default(),
                    "content": text,
                }));
            }
            // The model's own reasoning: the provider that wrote it keeps it.
            Some("thinking" | "redacted_thinking") => {}
            other => {
                let other = other.unwrap_or("(none)").to_owned();
                t.native_only("messages", || {
                    format!("content blocks of type '{other}' are served only by an Anthropic provider")
                });
            }
        }
    }
    if role == "assistant" {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut msg = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    } else if !parts.is_empty() {
        out.push(json!({ "role": "user", "content": parts }));
    }
    Ok(())
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn usage(tokens_in: i64, tokens_out: i64) -> Value {
    json!({
        "input_tokens": tokens_in, "output_tokens": tokens_out,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
    })
}

/// A whole chat completion as a message.
pub fn from_chat(chat: &Value, id: &str, model: &str, tokens: (i64, i64)) -> Value {
    let a = ChatAnswer::of(chat);
    let mut content = Vec::new();
    if !a.text.is_empty() || a.calls.is_empty() {
        content.push(json!({ "type": "text", "text": a.text }));
    }
    for c in &a.calls {
        content.push(json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": arguments_object(&c.arguments) }));
    }
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(a.finish.as_deref()),
        "stop_sequence": null,
        "usage": usage(tokens.0, tokens.1),
    })
}

/// Chat chunks in, Anthropic's message events out.
pub struct Stream {
    id: String,
    model: String,
    prompt: i64,
    started: bool,
    /// The open content block: its index, and the chat tool call's index
    /// for a `tool_use` block.
    open: Option<(usize, Option<u64>)>,
    next: usize,
    finish: Option<String>,
}

impl Stream {
    pub fn new(id: &str, model: &str, prompt: i64) -> Stream {
        Stream {
            id: format!("msg_{id}"),
            model: model.to_owned(),
            prompt,
            started: false,
            open: None,
            next: 0,
            finish: None,
        }
    }

    fn start(&mut self, out: &mut Vec<Frame>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Frame::new(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(self.prompt, 0),
            } }),
        ));
    }

    fn stop_block(&mut self, out: &mut Vec<Frame>) {
        if let Some((index, _)) = self.open.take() {
            out.push(Frame::new(
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": index }),
            ));
        }
    }

    fn open_block(&mut self, block: Value, call: Option<u64>, out: &mut Vec<Frame>) -> usize {
        self.stop_block(out);
        let index = self.next;
        self.next += 1;
        out.push(Frame::new(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": block }),
        ));
        self.open = Some((index, call));
        index
    }

    pub fn chunk(&mut self, chunk: &Value) -> Vec<Frame> {
        let mut out = Vec::new();
        self.start(&mut out);
        let d = Delta::of(chunk);
        if let Some(text) = d.text {
            let index = match self.open {
                Some((i, None)) => i,
                _ => self.open_block(json!({ "type": "text", "text": "" }), None, &mut out),
            };
            out.push(Frame::new(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text } }),
            ));
        }
        for super::DeltaCall {
            index: call,
            id,
            name,
            arguments: args,
        } in d.calls
        {
            let index = match self.open {
                Some((i, Some(c))) if c == call => i,
                _ => self.open_block(
                    json!({ "type": "tool_use", "id": id.unwrap_or_default(), "name": name.unwrap_or_default(), "input": {} }),
                    Some(call),
                    &mut out,
                ),
            };
            if let Some(piece) = args.filter(|a| !a.is_empty()) {
                out.push(Frame::new(
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": piece } }),
                ));
            }
        }
        if let Some(f) = d.finish {
            self.finish = Some(f.to_owned());
        }
        out
    }

    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    pub fn end(&mut self, tokens_in: i64, tokens_out: i64) -> Vec<Frame> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.stop_block(&mut out);
        out.push(Frame::new(
            "message_delta",
            json!({ "type": "message_delta",
                    "delta": { "stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null },
                    "usage": usage(tokens_in, tokens_out) }),
        ));
        out.push(Frame::new(
            "message_stop",
            json!({ "type": "message_stop" }),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let m = json!({
            "model": "m", "max_tokens": 100, "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
            "stop_sequences": ["END"], "metadata": { "user_id": "u1" }, "stream": true,
            "messages": [
                { "role": "user", "content": "Weather in Paris?" },
                { "role": "assistant", "content": [{ "type": "thinking", "thinking": "…" }, { "type": "text", "text": "Checking." },
                    { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Paris" } }] },
                { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "sunny" }] },
                    { "type": "text", "text": "And tomorrow?" },
                    { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AA" } }] },
            ],
            "tools": [{ "name": "get_weather", "description": "d", "input_schema": { "type": "object" } }],
            "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        });
        let t = to_chat(&m).unwrap();
        assert!(t.native_only.is_none());
        let c = t.chat;
        assert_eq!(
            c["messages"][0],
            json!({ "role": "system", "content": "Be brief." })
        );
        assert_eq!(c["messages"][2]["content"], "Checking.");
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            c["messages"][3],
            json!({ "role": "tool", "tool_call_id": "toolu_1", "content": "sunny" })
        );
        assert_eq!(
            c["messages"][4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["user"], "u1");
        assert_eq!(
            c["tools"][0]["function"]["parameters"],
            json!({ "type": "object" })
        );
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["parallel_tool_calls"], false);
        assert_eq!(
            to_chat(&json!({ "model": "m", "messages": [] }))
                .err()
                .unwrap()
                .param,
            Some("max_tokens")
        );
        assert_eq!(
            to_chat(&json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "tool", "content": "x" }] })).err().unwrap().param,
            Some("messages")
        );
        let cc = to_chat(&json!({ "model": "m", "max_tokens": 5,
            "messages": [{ "role": "user", "content": "x" }, { "role": "system", "content": [{ "type": "text", "text": "mid" }] }],
            "tools": [{ "name": "Bash", "input_schema": { "type": "object" } },
                      { "name": "DeferredToolPlaceholder", "input_schema": { "type": "object" }, "defer_loading": true }] })).unwrap();
        assert_eq!(
            cc.chat["messages"][1],
            json!({ "role": "system", "content": "mid" })
        );
        assert_eq!(cc.chat["tools"].as_array().unwrap().len(), 1);
        let server = to_chat(&json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "user", "content": "x" }],
                                      "tools": [{ "type": "web_search_20250305", "name": "web_search" }] })).unwrap();
        assert_eq!(server.native_only.unwrap().0, "tools");
    }

    #[test]
    fn a_chat_answer_becomes_a_message() {
        let chat = json!({ "choices": [{ "message": { "role": "assistant", "content": null,
            "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{\"a\":1}" } }] },
            "finish_reason": "tool_calls" }] });
        let m = from_chat(&chat, "r1", "m", (9, 4));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["content"][0],
            json!({ "type": "tool_use", "id": "call_1", "name": "f", "input": { "a": 1 } })
        );
        assert_eq!(m["usage"]["input_tokens"], 9);
    }

    #[test]
    fn a_chat_stream_becomes_message_events() {
        let mut s = Stream::new("r1", "m", 11);
        let mut events = Vec::new();
        for chunk in [
            json!({ "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "content": "Hi" } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{ "index": 0, "id": "call_1", "function": { "name": "f", "arguments": "{}" } }] } }] }),
            json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] }),
            json!({ "choices": [], "usage": { "prompt_tokens": 11, "completion_tokens": 3 } }),
        ] {
            events.extend(s.chunk(&chunk));
        }
        events.extend(s.end(11, 3));
        let names: Vec<&str> = events.iter().map(|f| f.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[4].data["content_block"]["name"], "f");
        assert_eq!(events[7].data["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[7].data["usage"]["output_tokens"], 3);
    }
}
