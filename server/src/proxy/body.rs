//! A request body as the client sent it. Tollgate parses only the fields it
//! reads, each from its own bytes; an OpenAI-compatible upstream gets the
//! client's bytes with `model` (and, for a stream, `stream_options`)
//! replaced, not a re-serialization of the whole body.

use bytes::{Bytes, BytesMut};
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::ops::Range;

use super::error::ProxyError;

pub struct RequestBody {
    raw: Bytes,
    /// Each top-level field: its name and where its value is in `raw`.
    fields: Vec<(String, Range<usize>)>,
    /// The fields Tollgate reads, parsed (and so checked) once.
    read: Vec<(&'static str, Value)>,
    /// Where the object's `{` is.
    open: usize,
}

/// The top-level fields Tollgate reads: what it checks, reserves and bills
/// by. Each must parse as JSON, and none may be sent under another case.
const READ: [&str; 16] = [
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "best_of",
    "messages",
    "tools",
    "prompt",
    "input",
    "prompt_id",
    "prompt_version",
    "prompt_label",
    "prompt_environment",
    "prompt_variables",
];

/// `name` case-folded, as providers that match field names regardless of
/// case compare them (`Model`, `ſtream` and `stream` alike).
fn folded(name: &str) -> String {
    name.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// The top-level object's fields, each value left unparsed.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Each)
    }
}

impl RequestBody {
    /// Reads the top level of `raw`: a JSON object whose fields each appear
    /// once (a field sent twice could be read one way here and another way
    /// upstream, so it is refused, naming it).
    pub fn parse(raw: Bytes) -> Result<RequestBody, ProxyError> {
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let fields =
            match serde::Deserialize::deserialize(&mut de).and_then(|f| de.end().map(|()| f)) {
                Ok(Fields(f)) => f,
                Err(e) if e.is_data() => {
                    return Err(ProxyError::invalid(
                        "body",
                        "the body must be a JSON object",
                    ))
                }
                Err(e) => {
                    return Err(ProxyError::invalid(
                        "body",
                        format!("the body is not valid JSON: {e}"),
                    ))
                }
            };
        let mut seen = std::collections::HashSet::with_capacity(fields.len());
        let mut read = Vec::new();
        for (name, v) in &fields {
            if !seen.insert(name.as_str()) {
                return Err(ProxyError::invalid(
                    "body",
                    format!(
                        "the body has the field '{}' more than once",
                        name.chars().take(64).collect::<String>()
                    ),
                ));
            }
            if let Some(field) = READ.iter().find(|f| **f == name.as_str()) {
                // A value the skip over it let through but JSON cannot hold
                // (a number out of range, a lone surrogate, deep nesting).
                let value = serde_json::from_str(v.get()).map_err(|e| {
                    ProxyError::invalid(field, format!("'{field}' is not valid JSON: {e}"))
                })?;
                read.push((*field, value));
            } else if let Some(field) = READ.iter().find(|f| folded(name) == **f) {
                return Err(ProxyError::invalid(
                    field,
                    format!(
                        "the body has the field '{name}', which some providers read as '{field}'; send '{field}' exactly"
                    ),
                ));
            }
        }
        let start = raw.as_ptr() as usize;
        let fields = fields
            .into_iter()
            .map(|(name, v)| {
                let at = (v.get().as_ptr() as usize).saturating_sub(start);
                (name, at..at.saturating_add(v.get().len()))
            })
            .collect();
        let open = raw.iter().position(|b| *b == b'{').unwrap_or(0);
        Ok(RequestBody {
            raw,
            fields,
            read,
            open,
        })
    }

    /// The body as it came.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    fn range(&self, name: &str) -> Option<Range<usize>> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    }

    /// A field Tollgate reads (one of [`READ`]), where present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.read.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The whole body as a JSON value, `model` set to `model`: for the
    /// upstreams that translate it rather than pass it on. A field Tollgate
    /// does not read may still be no JSON value (a number out of range).
    pub fn to_value(&self, model: &str) -> Result<Value, String> {
        let mut v: Value = serde_json::from_slice(&self.raw)
            .map_err(|e| format!("the body is not valid JSON: {e}"))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), Value::String(model.to_owned()));
        }
        Ok(v)
    }

    /// Whether the body has the top-level field `name`.
    pub fn has(&self, name: &str) -> bool {
        self.range(name).is_some()
    }

    /// The client's bytes with `model` set to `model`, the fields of `set`
    /// set (added where absent) and those of `defaults` added where absent:
    /// for a provider sent the client's own request (a stored response's id
    /// swapped for the provider's, the output cap it is reserved at).
    pub fn for_upstream_edited(
        &self,
        model: &str,
        set: &[(&str, Value)],
        defaults: &[(&str, Value)],
    ) -> Bytes {
        let added = defaults.iter().filter(|(name, _)| !self.has(name));
        if self.fields.is_empty() {
            let mut o = serde_json::Map::new();
            o.insert("model".into(), Value::String(model.to_owned()));
            for (name, v) in set.iter().chain(added) {
                o.insert((*name).to_owned(), v.clone());
            }
            return Bytes::from(Value::Object(o).to_string());
        }
        let insert = |name: &str, v: &Value| format!("{}:{v},", Value::String(name.to_owned()));
        let at = self.open + 1;
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let model = Value::String(model.to_owned());
        for (name, v) in std::iter::once(&("model", model)).chain(set.iter()) {
            match self.range(name) {
                Some(r) => edits.push((r, v.to_string())),
                None => edits.push((at..at, insert(name, v))),
            }
        }
        for (name, v) in added {
            edits.push((at..at, insert(name, v)));
        }
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let extra: usize = edits.iter().map(|(_, t)| t.len()).sum();
        let mut out = BytesMut::with_capacity(self.raw.len().saturating_add(extra));
        let mut pos = 0;
        for (r, text) in edits {
            out.extend_from_slice(self.raw.get(pos..r.start).unwrap_or_default());
            out.extend_from_slice(text.as_bytes());
            pos = r.end.max(pos);
        }
        out.extend_from_slice(self.raw.get(pos..).unwrap_or_default());
        out.freeze()
    }

    /// The bytes for an OpenAI-compatible upstream: the client's, with
    /// `model` set to `model` and, where `include_usage`, the stream asked
    /// for usage (`stream_options.include_usage`), keeping the client's
    /// other stream options.
    pub fn for_upstream(&self, model: &str, include_usage: bool) -> Bytes {
        if self.fields.is_empty() {
            // Nothing to keep, and no field to put a comma before.
            let mut v = serde_json::json!({ "model": model });
            if let (true, Some(o)) = (include_usage, v.as_object_mut()) {
                o.insert(
                    "stream_options".into(),
                    serde_json::json!({ "include_usage": true }),
                );
            }
            return Bytes::from(v.to_string());
        }
        let model = Value::String(model.to_owned()).to_string();
        // Edits by position: (where, what it replaces, the new text).
        let mut edits: Vec<(Range<usize>, String)> = Vec::with_capacity(2);
        match self.range("model") {
            Some(r) => edits.push((r, model)),
            None => edits.push((self.open + 1..self.open + 1, format!("\"model\":{model},"))),
        }
        if include_usage {
            match self.range("stream_options") {
                Some(r) => {
                    let mut opts = self
                        .raw
                        .get(r.clone())
                        .and_then(|t| serde_json::from_slice::<Value>(t).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| Value::Object(Default::default()));
                    if let Some(o) = opts.as_object_mut() {
                        o.insert("include_usage".into(), Value::Bool(true));
                    }
                    edits.push((r, opts.to_string()));
                }
                None => edits.push((
                    self.open + 1..self.open + 1,
                    r#""stream_options":{"include_usage":true},"#.to_owned(),
                )),
            }
        }
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let extra: usize = edits.iter().map(|(_, t)| t.len()).sum();
        let mut out = BytesMut::with_capacity(self.raw.len().saturating_add(extra));
        let mut at = 0;
        for (r, text) in edits {
            out.extend_from_slice(self.raw.get(at..r.start).unwrap_or_default());
            out.extend_from_slice(text.as_bytes());
            at = r.end;
        }
        out.extend_from_slice(self.raw.get(at..).unwrap_or_default());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestBody, ProxyError> {
        RequestBody::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn upstream(s: &str, model: &str, usage: bool) -> Value {
        let b = parse(s).unwrap().for_upstream(model, usage);
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn only_model_changes_and_the_rest_is_the_clients_bytes() {
        let sent = r#" { "model" : "cheap/alias", "messages":[{"role":"user","content":"h\u00e9 \"q\""}], "temperature": 0.70 } "#;
        let b = parse(sent).unwrap().for_upstream("gpt-4o-mini", false);
        let text = std::str::from_utf8(&b).unwrap();
        assert_eq!(
            text,
            r#" { "model" : "gpt-4o-mini", "messages":[{"role":"user","content":"h\u00e9 \"q\""}], "temperature": 0.70 } "#
        );
    }

    #[test]
    fn a_stream_asks_for_usage_and_keeps_its_other_options() {
        let v = upstream(r#"{"model":"a","stream":true}"#, "b", true);
        assert_eq!(
            v,
            serde_json::json!({"model":"b","stream":true,"stream_options":{"include_usage":true}})
        );
        let v = upstream(
            r#"{"stream_options":{"include_usage":false,"x":1},"model":"a","stream":true}"#,
            "b",
            true,
        );
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage":true,"x":1})
        );
        assert_eq!(v["model"], "b");
        let v = upstream(r#"{"stream_options":null}"#, "b", true);
        assert_eq!(
            v,
            serde_json::json!({"model":"b","stream_options":{"include_usage":true}})
        );
        let v = upstream(" { } ", "b", true);
        assert_eq!(
            v,
            serde_json::json!({"model":"b","stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn fields_are_set_and_defaults_added_only_where_absent() {
        let edited = |sent: &str| -> Value {
            let b = parse(sent).unwrap();
            let set = [("previous_response_id", serde_json::json!("resp_up"))];
            let defaults = [("max_output_tokens", serde_json::json!(64))];
            serde_json::from_slice(&b.for_upstream_edited("b", &set, &defaults)).unwrap()
        };
        assert_eq!(
            edited(r#"{"model":"a","input":"hi","previous_response_id":"resp_tgX"}"#),
            serde_json::json!({"model":"b","input":"hi","previous_response_id":"resp_up","max_output_tokens":64})
        );
        assert_eq!(
            edited(r#"{"max_output_tokens":5,"input":"hi"}"#)["max_output_tokens"],
            5
        );
        assert_eq!(
            edited(" { } "),
            serde_json::json!({"model":"b","previous_response_id":"resp_up","max_output_tokens":64})
        );
    }

    #[test]
    fn a_model_name_is_escaped_as_json() {
        let v = upstream(r#"{"model":"a"}"#, "we\"ird\\name", false);
        assert_eq!(v["model"], "we\"ird\\name");
    }

    #[test]
    fn fields_are_read_from_their_own_bytes() {
        let b = parse(r#"{"model":"m","max_tokens":64,"n":"2","stream":true,"temperature":1e400}"#)
            .unwrap();
        assert_eq!(b.get("model"), Some(&serde_json::json!("m")));
        assert_eq!(b.get("max_tokens"), Some(&serde_json::json!(64)));
        assert_eq!(b.get("n"), Some(&serde_json::json!("2")));
        assert_eq!(b.get("best_of"), None);
        assert_eq!(b.get("stream"), Some(&Value::Bool(true)));
        assert!(
            b.to_value("m").is_err(),
            "a field passed on unread may be no JSON value"
        );
    }

    #[test]
    fn a_read_field_that_is_no_json_value_is_refused_by_name() {
        let deep = format!(
            r#"{{"model":"m","messages":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for (sent, field) in [
            (
                r#"{"model":"m","tools":[{"maximum":1e400}]}"#.to_owned(),
                "tools",
            ),
            (r#"{"model":"m","prompt":"\ud800"}"#.to_owned(), "prompt"),
            (deep, "messages"),
        ] {
            let e = parse(&sent)
                .err()
                .unwrap_or_else(|| panic!("{sent} was taken"));
            assert_eq!(e.param, Some(field), "{}", e.message);
        }
    }

    #[test]
    fn a_read_field_under_another_case_is_refused() {
        for (sent, field) in [
            (r#"{"model":"cheap","Model":"dear"}"#, "model"),
            (r#"{"model":"m","\u017ftream":true}"#, "stream"),
            (r#"{"model":"m","MAX_TOKENS":5}"#, "max_tokens"),
        ] {
            let e = parse(sent)
                .err()
                .unwrap_or_else(|| panic!("{sent} was taken"));
            assert_eq!(e.param, Some(field), "{}", e.message);
        }
        assert!(
            parse(r#"{"model":"m","Temperature":1}"#).is_ok(),
            "fields Tollgate does not read pass"
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_their_reason() {
        for (sent, says) in [
            ("[1]", "must be a JSON object"),
            ("\"x\"", "must be a JSON object"),
            ("{\"model\":", "not valid JSON"),
            ("{} x", "not valid JSON"),
            (
                r#"{"model":"a","model":"b"}"#,
                "field 'model' more than once",
            ),
            (
                r#"{"model":"a","mod\u0065l":"b"}"#,
                "field 'model' more than once",
            ),
        ] {
            let e = parse(sent)
                .err()
                .unwrap_or_else(|| panic!("{sent} was taken"));
            assert!(e.message.contains(says), "{sent}: {}", e.message);
        }
    }
}
