//! Prompt templates on the proxy's path: a chat request that names
//! `prompt_id` is rendered from memory (the organization's prompts are
//! loaded with it, and reloaded on its notice): the template's messages
//! first, then the request's own; the template's model and parameters
//! where the request sets none. Nothing of the `prompt_*` fields reaches a
//! provider. `GET /v1/prompts` lists what a key's project may use.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tollgate_app::core::prompts::{Compiled, Prompt, RenderError, DEFAULT_LABEL};

use super::body::RequestBody;
use super::error::ProxyError;
use super::memory::Caller;
use super::{admit_caller, Gateway, Peer};

/// The request fields that choose and fill a prompt (`prompt_environment`
/// is LiteLLM's name for a label).
pub const FIELDS: [&str; 5] = [
    "prompt_id",
    "prompt_version",
    "prompt_label",
    "prompt_environment",
    "prompt_variables",
];

/// One prompt as the proxy serves it.
pub struct PromptEntry {
    pub id: Arc<str>,
    pub description: String,
    pub versions: BTreeMap<i64, Arc<Compiled>>,
    pub labels: BTreeMap<String, i64>,
}

impl PromptEntry {
    fn new(p: Prompt) -> PromptEntry {
        PromptEntry {
            id: Arc::from(p.id.as_str()),
            description: p.description,
            versions: p
                .versions
                .into_iter()
                .map(|v| (v.version, Arc::new(Compiled::new(v))))
                .collect(),
            labels: p.labels,
        }
    }

    /// What a request that names no version or label gets: the
    /// `production` label's version where there is one, else the latest.
    fn default_version(&self) -> Option<&Arc<Compiled>> {
        self.labels
            .get(DEFAULT_LABEL)
            .and_then(|v| self.versions.get(v))
            .or_else(|| self.versions.values().next_back())
    }

    fn pick(
        &self,
        version: Option<i64>,
        label: Option<&str>,
    ) -> Result<&Arc<Compiled>, ProxyError> {
        let id = &self.id;
        match (version, label) {
            (Some(n), _) => self.versions.get(&n).ok_or_else(|| {
                ProxyError::not_found(
                    "prompt_version_not_found",
                    "prompt_version",
                    format!("the prompt '{id}' has no version {n}"),
                )
            }),
            (None, Some(l)) => self
                .labels
                .get(l)
                .and_then(|n| self.versions.get(n))
                .ok_or_else(|| {
                    ProxyError::not_found(
                        "prompt_label_not_found",
                        "prompt_label",
                        format!("the prompt '{id}' has no label '{l}'"),
                    )
                }),
            (None, None) => self.default_version().ok_or_else(|| {
                ProxyError::not_found(
                    "prompt_not_found",
                    "prompt_id",
                    format!("the prompt '{id}' has no version"),
                )
            }),
        }
    }
}

/// An organization's prompts, by id, for its memory entry.
pub fn entries(prompts: Vec<Prompt>) -> HashMap<String, Arc<PromptEntry>> {
    prompts
        .into_iter()
        .map(|p| (p.id.clone(), Arc::new(PromptEntry::new(p))))
        .collect()
}

/// The prompt and version a request was rendered from.
#[derive(Clone)]
pub struct Used {
    pub id: Arc<str>,
    pub version: i64,
}

fn version_of(field: &'static str, v: &Value) -> Result<i64, ProxyError> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s)
            if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    };
    n.filter(|n| *n >= 1).ok_or_else(|| {
        ProxyError::invalid(field, format!("'{field}' is a version number, such as 3"))
    })
}

fn text<'a>(body: &'a RequestBody, field: &'static str) -> Result<Option<&'a str>, ProxyError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProxyError::invalid(
            field,
            format!("'{field}' must be a string"),
        )),
    }
}

/// The prompt a key may use: the organization's, and one its project lists.
fn allowed<'c>(caller: &'c Caller, id: &str) -> Result<&'c Arc<PromptEntry>, ProxyError> {
    let p = caller.org.prompts.get(id).ok_or_else(|| {
        ProxyError::not_found(
            "prompt_not_found",
            "prompt_id",
            format!("the prompt '{id}' does not exist in this organization"),
        )
    })?;
    if !caller.project.project.prompts.iter().any(|x| x == id) {
        return Err(ProxyError::forbidden(
            "prompt_not_allowed",
            format!("the project does not allow the prompt '{id}'"),
        ));
    }
    Ok(p)
}

/// The body to serve: `body` itself where it names no prompt, else the
/// rendered prompt's messages before its own, the template's model and
/// parameters where it sets none, and no `prompt_*` field.
pub fn apply(
    caller: &Caller,
    body: RequestBody,
    chat: bool,
) -> Result<(RequestBody, Option<Used>), ProxyError> {
    if body.get("prompt_id") == Some(&Value::Null) {
        return Err(ProxyError::invalid(
            "prompt_id",
            "'prompt_id' must be a string",
        ));
    }
    let Some(id) = text(&body, "prompt_id")? else {
        if let Some(f) = FIELDS.into_iter().skip(1).find(|f| body.get(f).is_some()) {
            return Err(ProxyError::invalid(f, format!("'{f}' needs 'prompt_id'")));
        }
        return Ok((body, None));
    };
    if !chat {
        return Err(ProxyError::invalid(
            "prompt_id",
            "prompts are served by /v1/chat/completions",
        ));
    }
    let prompt = allowed(caller, id)?;
    let version = body
        .get("prompt_version")
        .filter(|v| !v.is_null())
        .map(|v| version_of("prompt_version", v))
        .transpose()?;
    let label = match (
        text(&body, "prompt_label")?,
        text(&body, "prompt_environment")?,
    ) {
        (Some(l), Some(e)) if l != e => {
            return Err(ProxyError::invalid(
                "prompt_environment",
                "'prompt_environment' names another label than 'prompt_label'; send one",
            ))
        }
        (l, e) => l.or(e),
    };
    if version.is_some() && label.is_some() {
        return Err(ProxyError::invalid(
            "prompt_version",
            "send 'prompt_version' or 'prompt_label', not both",
        ));
    }
    let compiled = prompt.pick(version, label)?;
    let vars = match body.get("prompt_variables") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(ProxyError::invalid(
                "prompt_variables",
                "'prompt_variables' must be an object of names and values",
            ))
        }
    };
    let v = &compiled.version;
    let rendered = compiled.render(&vars).map_err(|e| match e {
        RenderError::Missing(name) => ProxyError::invalid(
            "prompt_variables",
            format!(
                "the prompt variable '{name}' is missing: version {} of '{}' uses {}",
                v.version,
                prompt.id,
                compiled
                    .variables
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        RenderError::TooLong(why) => ProxyError::too_large(
            "prompt_variables",
            format!("version {} of the prompt '{}': {why}", v.version, prompt.id),
        ),
    })?;
    let mut whole: Value = serde_json::from_slice(body.raw())
        .map_err(|e| ProxyError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Some(o) = whole.as_object_mut() else {
        return Err(ProxyError::invalid(
            "body",
            "the body must be a JSON object",
        ));
    };
    for f in FIELDS {
        o.remove(f);
    }
    let own = match o.remove("messages") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ProxyError::invalid(
                "messages",
                "'messages' must be an array",
            ))
        }
    };
    let mut messages: Vec<Value> = rendered
        .into_iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    messages.extend(own);
    o.insert("messages".into(), Value::Array(messages));
    if o.get("model").is_none_or(Value::is_null) {
        if let Some(m) = &v.model {
            o.insert("model".into(), Value::String(m.clone()));
        }
    }
    for (k, val) in &v.params {
        o.entry(k.clone()).or_insert_with(|| val.clone());
    }
    let used = Used {
        id: prompt.id.clone(),
        version: v.version,
    };
    let bytes = serde_json::to_vec(&whole)
        .map_err(|e| ProxyError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    Ok((RequestBody::parse(Bytes::from(bytes))?, Some(used)))
}

/// A prompt as `GET /v1/prompts` shows it (LiteLLM's `prompt_id` naming):
/// its versions, labels and the variables of the version a request that
/// names none gets.
fn listing(p: &PromptEntry) -> Value {
    let default = p.default_version();
    json!({
        "prompt_id": &*p.id,
        "description": p.description,
        "versions": p.versions.keys().collect::<Vec<_>>(),
        "labels": p.labels,
        "default_version": default.map(|c| c.version.version),
        "variables": default.map(|c| &c.variables),
    })
}

fn detail(p: &PromptEntry, c: &Compiled) -> Value {
    let v = &c.version;
    json!({
        "prompt_id": &*p.id,
        "description": p.description,
        "version": v.version,
        "labels": p.labels.iter().filter(|(_, n)| **n == v.version).map(|(l, _)| l).collect::<Vec<_>>(),
        "messages": v.messages,
        "model": v.model,
        "params": v.params,
        "variables": c.variables,
        "created_at": v.created_at,
    })
}

/// `GET /v1/prompts`: the prompts the key's project may use.
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
) -> Response {
    let caller = match admit_caller(&gw, peer, &h) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut data: Vec<Value> = caller
        .project
        .project
        .prompts
        .iter()
        .filter_map(|id| caller.org.prompts.get(id))
        .map(|p| listing(p))
        .collect();
    data.sort_by(|a, b| a["prompt_id"].as_str().cmp(&b["prompt_id"].as_str()));
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

#[derive(serde::Deserialize)]
pub struct Which {
    version: Option<String>,
    label: Option<String>,
}

/// `GET /v1/prompts/{prompt_id}` (`?version=` or `?label=`): one version
/// of a prompt the key's project may use, as the request would render it.
/// The key is checked before anything of the path or query is judged.
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    which: Result<Query<Which>, QueryRejection>,
) -> Response {
    let one = || -> Result<Value, ProxyError> {
        let caller = admit_caller(&gw, peer, &h)?;
        let Path(id) =
            id.map_err(|_| ProxyError::invalid("prompt_id", "the path names no prompt id"))?;
        let Query(which) = which.map_err(|e| {
            ProxyError::invalid(
                "query",
                format!("the query is not '?version=N' or '?label=name': {e}"),
            )
        })?;
        let p = allowed(&caller, &id)?;
        let version = which
            .version
            .as_deref()
            .map(|v| version_of("version", &Value::String(v.to_owned())))
            .transpose()?;
        if version.is_some() && which.label.is_some() {
            return Err(ProxyError::invalid(
                "version",
                "send 'version' or 'label', not both",
            ));
        }
        let c = p.pick(version, which.label.as_deref())?;
        Ok(detail(p, c))
    };
    match one() {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
