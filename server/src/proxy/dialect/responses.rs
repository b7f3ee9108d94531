//! OpenAI's Responses API over chat completions: a request's `instructions`,
//! `input` items, function tools, `tool_choice`, `max_output_tokens` and
//! `text.format` as a chat request; a chat answer as a response object; a
//! chat stream as the Responses event stream (`response.created` …
//! `response.completed` with usage).

use serde_json::{json, Map, Value};

use super::{opt_str, ChatAnswer, Delta, Frame, Translated};
use crate::proxy::error::ProxyError;
use crate::proxy::upstream::now_secs;

/// Fields copied to the chat request as they are.
const SAME: [&str; 4] = ["model", "temperature", "top_p", "stream"];

/// A Responses request as a chat request.
pub fn to_chat(v: &Value) -> Result<Translated, ProxyError> {
    let mut t = Translated {
        chat: Value::Null,
        native_only: None,
    };
    let mut out = Map::new();
    for f in SAME {
        if let Some(x) = v.get(f).filter(|x| !x.is_null()) {
            out.insert(f.into(), x.clone());
        }
    }
    if v.get("previous_response_id").is_some_and(|x| !x.is_null()) {
        t.native_only("previous_response_id", || {
            "'previous_response_id' needs the conversation kept by the provider; this model's provider has no Responses API, so send the whole conversation in 'input'".into()
        });
    }
    // A background response would be generated after its request settled:
    // nothing would reserve or bill it.
    if v.get("background") == Some(&Value::Bool(true)) {
        return Err(ProxyError::invalid(
            "background",
            "'background' responses are not served: Tollgate bills a response as it is answered",
        ));
    }
    // A conversation kept by the provider is shared by everyone with its
    // key: Tollgate passes on only the responses it can tie to the key.
    if v.get("conversation").is_some_and(|x| !x.is_null()) {
        return Err(ProxyError::invalid(
            "conversation",
            "'conversation' is not served; send the conversation in 'input', or use 'previous_response_id'",
        ));
    }
    if let Some(n) = v.get("max_output_tokens").filter(|x| !x.is_null()) {
        out.insert("max_tokens".into(), n.clone());
    }
    if let Some(u) = opt_str(v, "user")?.or(opt_str(v, "safety_identifier")?) {
        out.insert("user".into(), json!(u));
    }
    let mut messages = Vec::new();
    if let Some(s) = opt_str(v, "instructions")? {
        messages.push(json!({ "role": "system", "content": s }));
    }
    match v.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({ "role": "user", "content": s })),
        Some(Value::Array(items)) => {
            for item in items {
                input_item(item, &mut messages, &mut t)?;
            }
        }
        Some(_) => {
            return Err(ProxyError::invalid(
                "input",
                "'input' must be a string or a list of input items",
            ))
        }
    }
    if messages.is_empty() && t.native_only.is_none() {
        return Err(ProxyError::invalid(
            "input",
            "'input' is required: a string or a list of input items",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = v.get("tools").filter(|x| !x.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| ProxyError::invalid("tools", "'tools' must be a list of tools"))?;
        let mut chat = Vec::new();
        for tool in tools {
            chat_tools(tool, &mut chat)?;
        }
        if !chat.is_empty() {
            out.insert("tools".into(), Value::Array(chat));
        }
    }
    // Chat providers take a tool choice only with tools to choose from.
    let has_tools = out.contains_key("tools");
    if let Some(p) = v
        .get("parallel_tool_calls")
        .filter(|x| has_tools && !x.is_null())
    {
        out.insert("parallel_tool_calls".into(), p.clone());
    }
    match v.get("tool_choice").filter(|_| has_tools) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("tool_choice".into(), json!(s));
        }
        Some(c) if c.get("type").and_then(Value::as_str) == Some("function") => {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            out.insert(
                "tool_choice".into(),
                json!({ "type": "function", "function": { "name": name } }),
            );
        }
        Some(_) => t.native_only("tool_choice", || {
            "this 'tool_choice' is served only by a provider with the Responses API".into()
        }),
    }
    match v.pointer("/text/format") {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(x) = f.get(k).filter(|x| !x.is_null()) {
                    schema.insert(k.into(), x.clone());
                }
            }
            out.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": schema }),
            );
        }
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_object") => {
            out.insert("response_format".into(), json!({ "type": "json_object" }));
        }
        _ => {}
    }
    if out.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    t.chat = Value::Object(out);
    Ok(t)
}

/// A tool as chat's function tools: a function as it is, a custom
/// (free-form) tool as a function taking one string, `input`, and a
/// namespace's functions each. Hosted tools (`web_search`, `file_search`,
/// `tool_search`, …) run at a provider with the Responses API; a chat-only
/// provider is sent the request without them.
fn chat_tools(tool: &Value, out: &mut Vec<Value>) -> Result<(), ProxyError> {
    let name = || {
        tool.get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ProxyError::invalid("tools", "each function and custom tool needs a 'name'")
            })
    };
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let mut f = Map::new();
            f.insert("name".into(), json!(name()?));
            for k in ["description", "parameters", "strict"] {
                if let Some(x) = tool.get(k).filter(|x| !x.is_null()) {
                    f.insert(k.into(), x.clone());
                }
            }
            out.push(json!({ "type": "function", "function": f }));
        }
        Some("custom") => {
            let mut description = tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(d) = tool.pointer("/format/definition").and_then(Value::as_str) {
                description.push_str("\n\nThe input follows this grammar:\n");
                description.push_str(d);
            }
            out.push(json!({ "type": "function", "function": {
                "name": name()?,
                "description": description,
                "parameters": { "type": "object", "properties": { "input": { "type": "string" } }, "required": ["input"] },
            } }));
        }
        Some("namespace") => {
            for inner in tool
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                chat_tools(inner, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The names of the request's custom (free-form) tools: their calls are
/// written back as `custom_tool_call` items.
pub fn custom_tools(request: &Value) -> Vec<String> {
    request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("custom"))
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The text of an item's content: a string, or its text parts.
fn text_parts(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A user message's content parts as chat parts (text and images).
fn user_parts(content: &Value, t: &mut Translated) -> Result<Value, ProxyError> {
    let Value::Array(parts) = content else {
        return match content {
            Value::String(s) => Ok(json!(s)),
            _ => Err(ProxyError::invalid(
                "input",
                "a message's 'content' must be a string or a list of content parts",
            )),
        };
    };
    let mut out = Vec::new();
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
                out.push(json!({ "type": "text", "text": text }));
            }
            Some("input_image") => match p.get("image_url").and_then(Value::as_str) {
                Some(url) => {
                    let detail = p.get("detail").and_then(Value::as_str).unwrap_or("auto");
                    out.push(json!({ "type": "image_url", "image_url": { "url": url, "detail": detail } }));
                }
                None => t.native_only("input", || {
                    "an image by 'file_id' needs a provider with the Responses API; send 'image_url' (a URL or a data: URL)".into()
                }),
            },
            other => {
                let other = other.unwrap_or("(none)").to_owned();
                t.native_only("input", || {
                    format!("content of type '{other}' is served only by a provider with the Responses API")
                });
            }
        }
    }
    Ok(Value::Array(out))
}

/// One input item as chat messages.
fn input_item(item: &Value, out: &mut Vec<Value>, t: &mut Translated) -> Result<(), ProxyError> {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = item
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ProxyError::invalid("input", "each message item needs a 'role'"))?;
            let content = item.get("content").unwrap_or(&Value::Null);
            match role {
                "user" => out.push(json!({ "role": "user", "content": user_parts(content, t)? })),
                "assistant" => {
                    out.push(json!({ "role": "assistant", "content": text_parts(content) }))
                }
                "system" | "developer" => {
                    out.push(json!({ "role": "system", "content": text_parts(content) }))
                }
                other => {
                    return Err(ProxyError::invalid(
                        "input",
                        format!("a message's role must be user, assistant, system or developer, not '{other}'"),
                    ))
                }
            }
        }
        Some(kind @ ("function_call" | "custom_tool_call")) => {
            let arguments = match kind {
                "custom_tool_call" => json!({ "input": item.get("input").and_then(Value::as_str).unwrap_or_default() })
                    .to_string(),
                _ => item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}")
                    .to_owned(),
            };
            let call = json!({
                "id": item.get("call_id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": item.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": arguments,
                },
            });
            // Calls made together go in one assistant message.
            match out.last_mut() {
                Some(Value::Object(m))
                    if m.get("role").and_then(Value::as_str) == Some("assistant") =>
                {
                    match m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => {
                            m.insert("tool_calls".into(), json!([call]));
                        }
                    }
                }
                _ => {
                    out.push(json!({ "role": "assistant", "content": null, "tool_calls": [call] }))
                }
            }
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Array(_)) => text_parts(v),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            out.push(json!({
                "role": "tool",
                "tool_call_id": item.get("call_id").and_then(Value::as_str).unwrap_or_default(),
                "content": output,
            }));
        }
        // The model's reasoning: the provider that wrote it keeps it.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(ProxyError::invalid(
                "input",
                "input items of type 'item_reference' are not served; send the item itself",
            ))
        }
        Some(other) => {
            let other = other.to_owned();
            t.native_only("input", || {
                format!("input items of type '{other}' are served only by a provider with the Responses API")
            });
        }
    }
    Ok(())
}

fn usage(tokens_in: i64, tokens_out: i64) -> Value {
    json!({
        "input_tokens": tokens_in,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": tokens_out,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": tokens_in.saturating_add(tokens_out),
    })
}

/// The response object around `output`, echoing the request's settings;
/// `status` with the chat answer's finish reason (why it is incomplete).
fn response(
    request: &Value,
    id: &str,
    model: &str,
    created: i64,
    (status, finish): (&str, Option<&str>),
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let at = |f: &str, default: Value| request.get(f).cloned().unwrap_or(default);
    let incomplete = match status {
        "incomplete" => incomplete_reason(finish),
        _ => Value::Null,
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": at("instructions", Value::Null),
        "max_output_tokens": at("max_output_tokens", Value::Null),
        "model": model,
        "output": output,
        "parallel_tool_calls": at("parallel_tool_calls", json!(true)),
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": false,
        "temperature": at("temperature", json!(1.0)),
        "text": at("text", json!({ "format": { "type": "text" } })),
        "tool_choice": at("tool_choice", json!("auto")),
        "tools": at("tools", json!([])),
        "top_p": at("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": usage,
        "user": at("user", Value::Null),
        "metadata": at("metadata", json!({})),
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }])
    };
    json!({ "type": "message", "id": id, "status": status, "role": "assistant", "content": content })
}

/// A tool call as an output item: a custom tool's as a `custom_tool_call`
/// with its raw `input`, any other as a `function_call`.
fn call_item(id: &str, call: &super::ToolCall, custom: bool, status: &str) -> Value {
    if custom {
        let input = if status == "in_progress" {
            String::new()
        } else {
            custom_input(&call.arguments)
        };
        return json!({
            "type": "custom_tool_call", "id": id, "call_id": call.id, "name": call.name,
            "input": input, "status": status,
        });
    }
    json!({
        "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
        "arguments": call.arguments, "status": status,
    })
}

/// A custom tool's raw input from the arguments the model gave the
/// function standing for it (`{"input": …}`, else the arguments as sent).
fn custom_input(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| arguments.to_owned())
}

/// Whether an answer that stopped so was cut short, and why.
fn status_of(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length" | "content_filter") => "incomplete",
        _ => "completed",
    }
}

fn incomplete_reason(finish: Option<&str>) -> Value {
    match finish {
        Some("length") => json!({ "reason": "max_output_tokens" }),
        Some("content_filter") => json!({ "reason": "content_filter" }),
        _ => Value::Null,
    }
}

/// A whole chat completion as a response object.
pub fn from_chat(
    chat: &Value,
    request: &Value,
    id: &str,
    model: &str,
    tokens: (i64, i64),
) -> Value {
    let a = ChatAnswer::of(chat);
    let custom = custom_tools(request);
    let mut output = Vec::new();
    if !a.text.is_empty() || a.calls.is_empty() {
        output.push(message_item(&format!("msg_{id}"), &a.text, "completed"));
    }
    for (i, c) in a.calls.iter().enumerate() {
        let is_custom = custom.contains(&c.name);
        output.push(call_item(
            &format!("fc_{id}_{i}"),
            c,
            is_custom,
            "completed",
        ));
    }
    response(
        request,
        &format!("resp_{id}"),
        model,
        now_secs(),
        (status_of(a.finish.as_deref()), a.finish.as_deref()),
        output,
        usage(tokens.0, tokens.1),
    )
}

/// An output item being streamed.
struct Open {
    output_index: usize,
    id: String,
    /// The chat tool call's index, for a function call.
    call: Option<(u64, super::ToolCall)>,
    /// Whether the call is to a custom tool.
    custom: bool,
    text: String,
}

/// Chat chunks in, the Responses event stream out.
pub struct Stream {
    request: Value,
    id: String,
    item_base: String,
    model: String,
    created: i64,
    seq: u64,
    started: bool,
    open: Vec<Open>,
    done: Vec<(usize, Value)>,
    next_index: usize,
    finish: Option<String>,
    custom: Vec<String>,
}

impl Stream {
    pub fn new(request: &Value, id: &str, model: &str) -> Stream {
        // The request's settings are echoed; its input is not.
        let mut echo = Map::new();
        for f in [
            "instructions",
            "max_output_tokens",
            "parallel_tool_calls",
            "temperature",
            "text",
            "tool_choice",
            "tools",
            "top_p",
            "user",
            "metadata",
        ] {
            if let Some(v) = request.get(f) {
                echo.insert(f.into(), v.clone());
            }
        }
        Stream {
            request: Value::Object(echo),
            id: format!("resp_{id}"),
            item_base: id.to_owned(),
            model: model.to_owned(),
            created: now_secs(),
            seq: 0,
            started: false,
            open: Vec::new(),
            done: Vec::new(),
            next_index: 0,
            finish: None,
            custom: custom_tools(request),
        }
    }

    fn frame(&mut self, event: &str, mut data: Value) -> Frame {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(event));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        Frame::new(event, data)
    }

    fn snapshot(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        response(
            &self.request,
            &self.id,
            &self.model,
            self.created,
            (status, self.finish.as_deref()),
            output,
            usage,
        )
    }

    fn start(&mut self, out: &mut Vec<Frame>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.snapshot("in_progress", Vec::new(), Value::Null);
        let f = self.frame("response.created", json!({ "response": r.clone() }));
        out.push(f);
        let f = self.frame("response.in_progress", json!({ "response": r }));
        out.push(f);
    }

    /// Closes the open items: their `.done` events.
    fn close(&mut self, out: &mut Vec<Frame>) {
        for o in std::mem::take(&mut self.open) {
            let i = o.output_index;
            let item = match &o.call {
                None => {
                    let f = self.frame(
                        "response.output_text.done",
                        json!({ "item_id": o.id, "output_index": i, "content_index": 0, "text": o.text, "logprobs": [] }),
                    );
                    out.push(f);
                    let f = self.frame(
                        "response.content_part.done",
                        json!({ "item_id": o.id, "output_index": i, "content_index": 0,
                                "part": { "type": "output_text", "text": o.text, "annotations": [], "logprobs": [] } }),
                    );
                    out.push(f);
                    message_item(&o.id, &o.text, "completed")
                }
                Some((_, call)) if o.custom => {
                    let f = self.frame(
                        "response.custom_tool_call_input.done",
                        json!({ "item_id": o.id, "output_index": i, "input": custom_input(&call.arguments) }),
                    );
                    out.push(f);
                    call_item(&o.id, call, true, "completed")
                }
                Some((_, call)) => {
                    let f = self.frame(
                        "response.function_call_arguments.done",
                        json!({ "item_id": o.id, "output_index": i, "name": call.name, "arguments": call.arguments }),
                    );
                    out.push(f);
                    call_item(&o.id, call, false, "completed")
                }
            };
            let f = self.frame(
                "response.output_item.done",
                json!({ "output_index": i, "item": item.clone() }),
            );
            out.push(f);
            self.done.push((i, item));
        }
    }

    pub fn chunk(&mut self, chunk: &Value) -> Vec<Frame> {
        let mut out = Vec::new();
        self.start(&mut out);
        let d = Delta::of(chunk);
        if let Some(text) = d.text {
            if !self.open.iter().any(|o| o.call.is_none()) {
                self.close(&mut out);
                let i = self.next_index;
                let id = match i {
                    0 => format!("msg_{}", self.item_base),
                    _ => format!("msg_{}_{i}", self.item_base),
                };
                self.next_index += 1;
                let f = self.frame(
                    "response.output_item.added",
                    json!({ "output_index": i, "item": message_item(&id, "", "in_progress") }),
                );
                out.push(f);
                let f = self.frame(
                    "response.content_part.added",
                    json!({ "item_id": id, "output_index": i, "content_index": 0,
                            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] } }),
                );
                out.push(f);
                self.open.push(Open {
                    output_index: i,
                    id,
                    call: None,
                    custom: false,
                    text: String::new(),
                });
            }
            if let Some(o) = self.open.iter_mut().find(|o| o.call.is_none()) {
                o.text.push_str(text);
                let (id, i) = (o.id.clone(), o.output_index);
                let f = self.frame(
                    "response.output_text.delta",
                    json!({ "item_id": id, "output_index": i, "content_index": 0, "delta": text, "logprobs": [] }),
                );
                out.push(f);
            }
        }
        for super::DeltaCall {
            index,
            id: call_id,
            name,
            arguments: args,
        } in d.calls
        {
            let known = self
                .open
                .iter()
                .any(|o| o.call.as_ref().is_some_and(|(k, _)| *k == index));
            if !known {
                // A new call: text before it is done.
                if self.open.iter().any(|o| o.call.is_none()) {
                    self.close(&mut out);
                }
                let i = self.next_index;
                self.next_index += 1;
                let id = format!("fc_{}_{index}", self.item_base);
                let call = super::ToolCall {
                    id: call_id.unwrap_or_default().to_owned(),
                    name: name.unwrap_or_default().to_owned(),
                    arguments: String::new(),
                };
                let custom = self.custom.contains(&call.name);
                let f = self.frame(
                    "response.output_item.added",
                    json!({ "output_index": i, "item": call_item(&id, &call, custom, "in_progress") }),
                );
                out.push(f);
                self.open.push(Open {
                    output_index: i,
                    id,
                    call: Some((index, call)),
                    custom,
                    text: String::new(),
                });
            }
            let Some(piece) = args.filter(|a| !a.is_empty()) else {
                continue;
            };
            if let Some(o) = self
                .open
                .iter_mut()
                .find(|o| o.call.as_ref().is_some_and(|(k, _)| *k == index))
            {
                if let Some((_, c)) = &mut o.call {
                    c.arguments.push_str(piece);
                }
                // A custom tool's input is known whole only at the end.
                if o.custom {
                    continue;
                }
                let (id, i) = (o.id.clone(), o.output_index);
                let f = self.frame(
                    "response.function_call_arguments.delta",
                    json!({ "item_id": id, "output_index": i, "delta": piece }),
                );
                out.push(f);
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
        self.close(&mut out);
        self.done.sort_by_key(|(i, _)| *i);
        let output: Vec<Value> = self.done.iter().map(|(_, v)| v.clone()).collect();
        let status = status_of(self.finish.as_deref());
        let r = self.snapshot(status, output, usage(tokens_in, tokens_out));
        let event = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let f = self.frame(event, json!({ "response": r }));
        out.push(f);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responses_request_becomes_a_chat_request() {
        let r = json!({
            "model": "m", "instructions": "Be brief.", "max_output_tokens": 50, "stream": true,
            "input": [
                { "role": "user", "content": [{ "type": "input_text", "text": "Weather?" },
                                               { "type": "input_image", "image_url": "data:image/png;base64,AA" }] },
                { "type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" },
                { "type": "function_call_output", "call_id": "c1", "output": "sunny" },
                { "type": "reasoning", "id": "rs_1", "summary": [] },
            ],
            "tools": [{ "type": "function", "name": "get_weather", "parameters": { "type": "object" } }],
            "tool_choice": { "type": "function", "name": "get_weather" },
            "text": { "format": { "type": "json_schema", "name": "w", "schema": { "type": "object" }, "strict": true } },
        });
        let t = to_chat(&r).unwrap();
        assert!(t.native_only.is_none());
        let c = t.chat;
        assert_eq!(c["max_tokens"], 50);
        assert_eq!(
            c["messages"][0],
            json!({ "role": "system", "content": "Be brief." })
        );
        assert_eq!(
            c["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(
            c["messages"][3],
            json!({ "role": "tool", "tool_call_id": "c1", "content": "sunny" })
        );
        assert_eq!(c["messages"].as_array().unwrap().len(), 4);
        assert_eq!(c["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(c["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(c["response_format"]["json_schema"]["name"], "w");
        assert_eq!(c["stream_options"]["include_usage"], true);
    }

    #[test]
    fn custom_and_namespaced_tools_become_functions_and_come_back() {
        let r = json!({ "model": "m", "input": [
                { "type": "message", "id": "m1", "role": "developer", "content": [{ "type": "input_text", "text": "rules" }] },
                { "type": "custom_tool_call", "id": "ct1", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch" },
                { "type": "custom_tool_call_output", "id": "o1", "call_id": "c1", "output": "done" },
            ],
            "tools": [
                { "type": "custom", "name": "apply_patch", "format": { "type": "grammar", "syntax": "lark", "definition": "start: x" } },
                { "type": "namespace", "name": "agents", "tools": [{ "type": "function", "name": "spawn_agent", "parameters": { "type": "object" } }] },
                { "type": "web_search", "external_web_access": false },
                { "type": "tool_search", "execution": "client", "parameters": { "type": "object" } },
            ] });
        let t = to_chat(&r).unwrap();
        assert!(t.native_only.is_none());
        let c = t.chat;
        assert_eq!(
            c["messages"][0],
            json!({ "role": "system", "content": "rules" })
        );
        assert_eq!(
            c["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"input\":\"*** Begin Patch\"}"
        );
        assert_eq!(c["messages"][2]["content"], "done");
        let names: Vec<&str> = c["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["apply_patch", "spawn_agent"]);
        assert!(c["tools"][0]["function"]["description"]
            .as_str()
            .unwrap()
            .contains("start: x"));
        let chat = json!({ "choices": [{ "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
            "tool_calls": [{ "id": "call_9", "type": "function", "function": { "name": "apply_patch", "arguments": "{\"input\":\"*** Add\"}" } }] } }] });
        let out = from_chat(&chat, &r, "r1", "m", (1, 1));
        assert_eq!(out["output"][0]["type"], "custom_tool_call");
        assert_eq!(out["output"][0]["input"], "*** Add");
        let mut s = Stream::new(&r, "r1", "m");
        let mut ev = s.chunk(&json!({ "choices": [{ "delta": { "tool_calls": [{ "index": 0, "id": "call_9", "function": { "name": "apply_patch", "arguments": "{\"input\":" } }] } }] }));
        ev.extend(s.chunk(&json!({ "choices": [{ "delta": { "tool_calls": [{ "index": 0, "function": { "arguments": "\"x\"}" } }] } }] })));
        ev.extend(s.end(1, 1));
        let done = ev
            .iter()
            .find(|f| f.event == "response.output_item.done")
            .unwrap();
        assert_eq!(done.data["item"]["input"], "x");
        assert!(ev
            .iter()
            .all(|f| f.event != "response.function_call_arguments.delta"));
    }

    #[test]
    fn state_and_hosted_tools_need_the_responses_api() {
        for (field, body) in [
            (
                "background",
                json!({ "model": "m", "input": "hi", "background": true }),
            ),
            (
                "conversation",
                json!({ "model": "m", "input": "hi", "conversation": "conv_1" }),
            ),
            (
                "input",
                json!({ "model": "m", "input": [{ "type": "item_reference", "id": "msg_1" }] }),
            ),
        ] {
            assert_eq!(to_chat(&body).err().unwrap().param, Some(field));
        }
        let t = to_chat(&json!({ "model": "m", "input": "hi", "previous_response_id": "resp_1" }))
            .unwrap();
        assert_eq!(t.native_only.unwrap().0, "previous_response_id");
        let t =
            to_chat(&json!({ "model": "m", "input": [{ "type": "web_search_call", "id": "ws" }] }))
                .unwrap();
        assert!(t.native_only.unwrap().1.contains("web_search_call"));
        assert_eq!(
            to_chat(&json!({ "model": "m" })).err().unwrap().param,
            Some("input")
        );
        // No tool left for chat: no tool choice either.
        let t = to_chat(
            &json!({ "model": "m", "input": "hi", "tools": [{ "type": "web_search" }],
                                 "tool_choice": "auto", "parallel_tool_calls": true }),
        )
        .unwrap();
        assert!(t.chat.get("tool_choice").is_none() && t.chat.get("parallel_tool_calls").is_none());
        assert_eq!(
            to_chat(&json!({ "model": "m", "input": 5 }))
                .err()
                .unwrap()
                .param,
            Some("input")
        );
    }

    #[test]
    fn a_chat_stream_becomes_the_responses_events() {
        let mut s = Stream::new(&json!({ "model": "m" }), "r1", "m");
        let mut events = Vec::new();
        for chunk in [
            json!({ "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "Hel" } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "content": "lo" } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{ "index": 0, "id": "call_1", "function": { "name": "f", "arguments": "" } }] } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{ "index": 0, "function": { "arguments": "{\"a\":" } }] } }] }),
            json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{ "index": 0, "function": { "arguments": "1}" } }] } }] }),
            json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] }),
        ] {
            events.extend(s.chunk(&chunk));
        }
        events.extend(s.end(7, 5));
        let names: Vec<&str> = events.iter().map(|f| f.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seq: Vec<u64> = events
            .iter()
            .map(|f| f.data["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..15).collect::<Vec<_>>());
        let done = &events[14].data["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 12);
    }
}
