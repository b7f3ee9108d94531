//! Token counts where the provider gives none, and the estimate a request is
//! admitted on: OpenAI's chat accounting (tokens of each message's text plus
//! a few per message) with the o200k tokenizer.

use serde_json::Value;

fn bpe() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Loads the tokenizer's tables now rather than on the first request.
pub fn warm_up() {
    let _ = count("warm up");
}

pub fn count(text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    i64::try_from(bpe().encode_ordinary(text).len()).unwrap_or(i64::MAX)
}

/// Per message, and once per reply, as OpenAI counts a chat.
const PER_MESSAGE: i64 = 3;
const PER_REPLY: i64 = 3;
/// An image or other non-text part, counted as a low-detail image.
const PER_OTHER_PART: i64 = 85;

fn content_tokens(content: &Value) -> i64 {
    match content {
        Value::String(s) => count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => count(t),
                None => PER_OTHER_PART,
            })
            .fold(0, i64::saturating_add),
        Value::Null => 0,
        other => count(&other.to_string()),
    }
}

/// The prompt tokens of a chat request: messages, plus tools where given.
pub fn chat_prompt(messages: Option<&Value>, tools: Option<&Value>) -> i64 {
    let messages = messages.and_then(Value::as_array);
    let mut n = PER_REPLY;
    for m in messages.into_iter().flatten() {
        n = n
            .saturating_add(PER_MESSAGE)
            .saturating_add(m.get("content").map_or(0, content_tokens));
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            n = n.saturating_add(count(name)).saturating_add(1);
        }
        if let Some(calls) = m.get("tool_calls") {
            n = n.saturating_add(count(&calls.to_string()));
        }
    }
    if let Some(tools) = tools.filter(|t| !t.is_null()) {
        n = n.saturating_add(count(&tools.to_string()));
    }
    n
}

/// The prompt tokens of a completions request (`prompt`: a string or
/// strings), or of an embeddings request (`input`: the same, or token arrays).
pub fn completion_prompt(prompt: Option<&Value>) -> i64 {
    match prompt {
        Some(Value::String(s)) => count(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => count(s),
                Value::Array(toks) => i64::try_from(toks.len()).unwrap_or(i64::MAX),
                Value::Number(_) => 1,
                _ => 0,
            })
            .fold(0, i64::saturating_add),
        _ => 0,
    }
}

/// The text of an answer, for counting where no usage came back: chat
/// messages and deltas, and completion texts.
pub fn answer_text(v: &Value, into: &mut String) {
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            for path in [["message", "content"], ["delta", "content"]] {
                if let Some(s) = c
                    .get(path[0])
                    .and_then(|m| m.get(path[1]))
                    .and_then(Value::as_str)
                {
                    into.push_str(s);
                }
            }
            if let Some(s) = c.get("text").and_then(Value::as_str) {
                into.push_str(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_stable_and_a_chat_adds_per_message_overhead() {
        assert_eq!(count(""), 0);
        let hello = count("Hello, world");
        assert!(hello > 0 && hello < 6);
        let chat = serde_json::json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "Hello, world" },
        ]);
        assert_eq!(
            chat_prompt(Some(&chat), None),
            3 + 3 + count("Be brief.") + 3 + hello
        );
        let parts = serde_json::json!([
            { "role": "user", "content": [{ "type": "text", "text": "Hello, world" }, { "type": "image_url" }] },
        ]);
        assert_eq!(chat_prompt(Some(&parts), None), 3 + 3 + hello + 85);
        let tools = serde_json::json!([{ "type": "function" }]);
        assert_eq!(
            chat_prompt(Some(&parts), Some(&tools)),
            3 + 3 + hello + 85 + count(&tools.to_string())
        );
    }

    #[test]
    fn embeddings_count_strings_and_token_arrays() {
        assert_eq!(
            completion_prompt(Some(&serde_json::json!([[1, 2, 3], [4]]))),
            4
        );
        assert_eq!(
            completion_prompt(Some(&serde_json::json!("Hello, world"))),
            count("Hello, world")
        );
    }
}
