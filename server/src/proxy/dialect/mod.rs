//! The APIs a client may speak besides chat completions: OpenAI's Responses
//! API and Anthropic's Messages API. Each request is read as a chat request
//! too (what the key is checked, reserved and billed by, and what a
//! chat-only provider is sent); an answer in chat's shapes is written back in
//! the client's, whole or as its event stream. A provider that speaks the
//! client's API natively is sent the client's own body instead, and its
//! answer is passed through.

pub mod messages;
pub mod owned;
pub mod responses;

use bytes::Bytes;
use serde_json::{json, Value};

use super::error::ProxyError;

/// Which API a client spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Responses,
    Messages,
}

/// A client's request read as chat, with what only a provider speaking the
/// client's API can serve.
pub struct Translated {
    pub chat: Value,
    /// The first field a chat-only provider cannot serve (state kept
    /// upstream, a hosted tool, a document block), and why: such a request
    /// goes to a provider that speaks the client's API, or is refused.
    pub native_only: Option<(&'static str, String)>,
}

impl Translated {
    fn native_only(&mut self, field: &'static str, why: impl FnOnce() -> String) {
        if self.native_only.is_none() {
            self.native_only = Some((field, why()));
        }
    }
}

/// One server-sent event: its `event:` name and its JSON data.
pub struct Frame {
    pub event: String,
    pub data: Value,
}

impl Frame {
    fn new(event: &str, data: Value) -> Frame {
        Frame {
            event: event.to_owned(),
            data,
        }
    }
}

/// Frames as SSE bytes.
pub fn sse(frames: &[Frame]) -> Bytes {
    let mut out = String::new();
    for f in frames {
        out.push_str("event: ");
        out.push_str(&f.event);
        out.push_str("\ndata: ");
        out.push_str(&f.data.to_string());
        out.push_str("\n\n");
    }
    Bytes::from(out)
}

/// A native stream event (its data, read as `v`) as SSE, named by its
/// `type` where that is a plain event name (no line of the provider's own
/// reaches the client).
pub fn native_event(data: &str, v: &Value) -> Bytes {
    let name = v.get("type").and_then(Value::as_str).filter(|t| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
    });
    match name {
        Some(event) => Bytes::from(format!("event: {event}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Usage as a native answer reports it: input tokens (Anthropic's cache
/// reads and writes included) and output tokens.
pub fn native_usage(dialect: Dialect, v: &Value) -> (Option<i64>, Option<i64>) {
    let usage = match dialect {
        Dialect::Responses => v
            .get("response")
            .and_then(|r| r.get("usage"))
            .or_else(|| v.get("usage")),
        Dialect::Messages => v
            .get("message")
            .and_then(|m| m.get("usage"))
            .or_else(|| v.get("usage")),
    };
    usage.map_or((None, None), usage_counts)
}

/// Input and output tokens of a usage object in the Responses or Messages
/// shape (`input_tokens`, `output_tokens`); Anthropic's cache reads and
/// writes, counted apart from `input_tokens`, are input too (the Responses
/// API counts cached tokens within it).
pub fn usage_counts(u: &Value) -> (Option<i64>, Option<i64>) {
    let at = |f: &str| u.get(f).and_then(Value::as_i64);
    let input = at("input_tokens").map(|i| {
        ["cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .filter_map(|f| at(f))
            .filter(|n| *n > 0)
            .fold(i, i64::saturating_add)
    });
    (input, at("output_tokens"))
}

/// Usage as a native stream event reports it. Output counts only from the
/// event that ends the answer (Anthropic's `message_start` says 1 output
/// token before any is made): a stream cut before it is billed for the
/// text counted.
pub fn native_stream_usage(dialect: Dialect, v: &Value) -> (Option<i64>, Option<i64>) {
    let (input, output) = native_usage(dialect, v);
    let last = match dialect {
        Dialect::Responses => native_end(dialect, v),
        Dialect::Messages => v.get("type").and_then(Value::as_str) == Some("message_delta"),
    };
    (input, output.filter(|_| last))
}

/// The generated text of a native stream event (answer, tool arguments,
/// reasoning), for counting where the provider reports no usage.
pub fn native_text(dialect: Dialect, v: &Value, into: &mut String) {
    let text = match dialect {
        Dialect::Responses => match v.get("type").and_then(Value::as_str) {
            Some(
                "response.output_text.delta"
                | "response.function_call_arguments.delta"
                | "response.custom_tool_call_input.delta"
                | "response.reasoning_text.delta"
                | "response.reasoning_summary_text.delta"
                | "response.refusal.delta",
            ) => v.get("delta").and_then(Value::as_str),
            _ => None,
        },
        Dialect::Messages => v
            .get("delta")
            .and_then(|d| {
                d.get("text")
                    .or_else(|| d.get("partial_json"))
                    .or_else(|| d.get("thinking"))
            })
            .and_then(Value::as_str),
    };
    into.push_str(text.unwrap_or_default());
}

/// Whether a native stream event reports a failure.
pub fn native_failure(v: &Value) -> bool {
    matches!(
        v.get("type").and_then(Value::as_str),
        Some("error" | "response.failed")
    )
}

/// Whether a native stream event ends the answer.
pub fn native_end(dialect: Dialect, v: &Value) -> bool {
    let t = v.get("type").and_then(Value::as_str);
    match dialect {
        Dialect::Responses => matches!(t, Some("response.completed" | "response.incomplete")),
        Dialect::Messages => t == Some("message_stop"),
    }
}

/// What one chat choice carries: text, tool calls and why it stopped.
#[derive(Default)]
pub(crate) struct ChatAnswer {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub finish: Option<String>,
}

#[derive(Default, Clone)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ChatAnswer {
    /// The first choice of a whole chat completion.
    pub fn of(chat: &Value) -> ChatAnswer {
        let c = chat.pointer("/choices/0");
        let m = c.and_then(|c| c.get("message"));
        let text = m
            .and_then(|m| m.get("content"))
            .map(super::upstream::text_of)
            .unwrap_or_default();
        let calls = m
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| ToolCall {
                id: str_at(t, "/id"),
                name: str_at(t, "/function/name"),
                arguments: str_at(t, "/function/arguments"),
            })
            .collect();
        let finish = c
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        ChatAnswer {
            text,
            calls,
            finish,
        }
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// One streamed chat chunk's first choice, as the writers read it.
pub(crate) struct Delta<'a> {
    pub text: Option<&'a str>,
    pub calls: Vec<DeltaCall<'a>>,
    pub finish: Option<&'a str>,
}

/// A piece of a streamed tool call: its index in the answer, and its id,
/// name and a piece of its arguments where the chunk has them.
pub(crate) struct DeltaCall<'a> {
    pub index: u64,
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub arguments: Option<&'a str>,
}

impl<'a> Delta<'a> {
    pub fn of(chunk: &'a Value) -> Delta<'a> {
        let c = chunk.pointer("/choices/0");
        let d = c.and_then(|c| c.get("delta"));
        let text = d
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let calls = d
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| DeltaCall {
                index: t.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                id: t.get("id").and_then(Value::as_str),
                name: t.pointer("/function/name").and_then(Value::as_str),
                arguments: t.pointer("/function/arguments").and_then(Value::as_str),
            })
            .collect();
        let finish = c
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str);
        Delta {
            text,
            calls,
            finish,
        }
    }
}

/// A stream writer: chat chunks in, the client's events out.
pub enum Writer {
    Responses(Box<responses::Stream>),
    Messages(Box<messages::Stream>),
}

impl Writer {
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Frame> {
        match self {
            Writer::Responses(s) => s.chunk(chunk),
            Writer::Messages(s) => s.chunk(chunk),
        }
    }

    /// Whether the chat stream said why it stopped.
    pub fn finished(&self) -> bool {
        match self {
            Writer::Responses(s) => s.finished(),
            Writer::Messages(s) => s.finished(),
        }
    }

    /// The frames that close the answer, with the tokens billed.
    pub fn end(&mut self, tokens_in: i64, tokens_out: i64) -> Vec<Frame> {
        match self {
            Writer::Responses(s) => s.end(tokens_in, tokens_out),
            Writer::Messages(s) => s.end(tokens_in, tokens_out),
        }
    }
}

/// A failure in the middle of a stream, as the client's API writes one.
pub fn stream_error(dialect: Dialect, e: &ProxyError) -> Bytes {
    let frame = match dialect {
        Dialect::Responses => Frame::new(
            "error",
            json!({ "type": "error", "code": e.code, "message": e.message, "param": e.param }),
        ),
        Dialect::Messages => Frame::new("error", messages::error_body(e)),
    };
    sse(&[frame])
}

/// A whole answer in the client's API, from a chat completion.
pub fn whole(
    dialect: Dialect,
    chat: &Value,
    request: &Value,
    id: &str,
    model: &str,
    tokens: (i64, i64),
) -> Value {
    match dialect {
        Dialect::Responses => responses::from_chat(chat, request, id, model, tokens),
        Dialect::Messages => messages::from_chat(chat, id, model, tokens),
    }
}

/// A writer for a chat stream, answering `request` in `dialect`.
pub fn writer(dialect: Dialect, request: &Value, id: &str, model: &str, prompt: i64) -> Writer {
    match dialect {
        Dialect::Responses => {
            Writer::Responses(Box::new(responses::Stream::new(request, id, model)))
        }
        Dialect::Messages => Writer::Messages(Box::new(messages::Stream::new(id, model, prompt))),
    }
}

/// A tool call's arguments as a JSON object (`{}` where they are not one).
fn arguments_object(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A JSON field of the request that must be a string, where present.
fn opt_str<'a>(v: &'a Value, field: &'static str) -> Result<Option<&'a str>, ProxyError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProxyError::invalid(
            field,
            format!("'{field}' must be a string"),
        )),
    }
}
