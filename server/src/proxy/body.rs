//! A request body as the client sent it. Tollgate parses only the fields it
//! reads, each from its own bytes; an OpenAI-compatible upstream gets the
//! client's bytes with `model` (and, for a stream, `stream_options`)
//! replaced, not a re-serialization of the whole body.

use bytes::{Bytes, BytesMut};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::ops::Range;

use super::error::ProxyError;

pub struct RequestBody {
    raw: Bytes,
    /// Each top-level field: its name and where its value is in `raw`.
    fields: Vec<(String, Range<usize>)>,
    /// Where the object's `{` is.
    open: usize,
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
        for (i, (name, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(n, _)| n == name) {
                return Err(ProxyError::invalid(
                    "body",
                    format!("the body has the field '{name}' more than once"),
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
        Ok(RequestBody { raw, fields, open })
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

    /// A field's JSON text, where present.
    fn text(&self, name: &str) -> Option<&[u8]> {
        self.range(name).and_then(|r| self.raw.get(r))
    }

    /// A field parsed as `T`: `None` where absent, `Some(Err)` where it is
    /// not a `T`.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Option<Result<T, serde_json::Error>> {
        self.text(name).map(serde_json::from_slice)
    }

    /// A field as a JSON value (`None` where absent).
    pub fn value(&self, name: &str) -> Option<Value> {
        self.field::<Value>(name).and_then(Result::ok)
    }

    /// The whole body as a JSON value, `model` set to `model`: for the
    /// upstreams that translate it rather than pass it on.
    pub fn to_value(&self, model: &str) -> Value {
        let mut v: Value = serde_json::from_slice(&self.raw).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), Value::String(model.to_owned()));
        }
        v
    }

    /// The bytes for an OpenAI-compatible upstream: the client's, with
    /// `model` set to `model` and, where `include_usage`, the stream asked
    /// for usage (`stream_options.include_usage`), keeping the client's
    /// other stream options.
    pub fn for_upstream(&self, model: &str, include_usage: bool) -> Bytes {
        if self.fields.is_empty() {
            // Nothing to keep, and no field to put a comma before.
            let mut v = self.to_value(model);
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
    fn a_model_name_is_escaped_as_json() {
        let v = upstream(r#"{"model":"a"}"#, "we\"ird\\name", false);
        assert_eq!(v["model"], "we\"ird\\name");
    }

    #[test]
    fn fields_are_read_from_their_own_bytes() {
        let b = parse(r#"{"model":"m","max_tokens":64,"n":"2","stream":true}"#).unwrap();
        assert_eq!(b.field::<String>("model").unwrap().unwrap(), "m");
        assert_eq!(b.value("max_tokens"), Some(serde_json::json!(64)));
        assert!(b.field::<i64>("n").unwrap().is_err());
        assert!(b.field::<i64>("best_of").is_none());
        assert_eq!(b.value("stream"), Some(Value::Bool(true)));
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
