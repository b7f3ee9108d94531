//! Prompt management: an organization's named prompt templates. A prompt
//! is a series of immutable numbered versions (messages whose text may hold
//! `{{ variables }}`, a default model and default parameters) and labels
//! (`production`, `staging`, ...) that each point at one version and move.
//! Applications name a prompt in `/v1/chat/completions` (`prompt_id`, with
//! `prompt_version` or `prompt_label`, and `prompt_variables`); the proxy
//! renders it from memory ([`Compiled`]).
//!
//! A template's text holds `{{ name }}` where a variable goes (a name of
//! letters, digits and `_`, spaces around it allowed); anything else,
//! `{{` included, is text. A variable is inserted as it was sent (a string
//! as is, nothing escaped; another JSON value as JSON). A variable the
//! template uses and the request does not send is refused by name, never
//! rendered empty. Deliberately no template language: its operators
//! (string repetition, concatenation in loops) let one template grow
//! without bound, where here a rendering is at most the template's text
//! plus each use of a variable, and is checked as it is written.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, BTreeSet};

use crate::error::AppError;
use crate::policy::TenantScope;

/// The roles a template's message may have.
pub const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];
pub const MAX_MESSAGES: usize = 50;
/// The most text a version's messages may hold, and a rendering may make.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;
pub const MAX_LABELS: usize = 20;
/// Prompts an organization keeps, and versions a prompt keeps: every
/// instance holds them all in memory.
pub const MAX_PROMPTS: usize = 200;
pub const MAX_VERSIONS: usize = 100;
/// The label a request that names no version or label is served from,
/// where the prompt has it (else its latest version).
pub const DEFAULT_LABEL: &str = "production";

/// Request fields a template's parameters may not set: they are the
/// request's own, or Tollgate's (compared case-folded, as some providers
/// read field names).
const NOT_PARAMS: [&str; 9] = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "prompt_id",
    "prompt_version",
    "prompt_label",
    "prompt_environment",
    "prompt_variables",
];

/// Parameters Tollgate reads (to reserve and bill), with what each must be.
const COUNTED: [&str; 4] = ["max_tokens", "max_completion_tokens", "n", "best_of"];

fn folded(name: &str) -> String {
    name.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One immutable version of a prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub version: i64,
    pub messages: Vec<Message>,
    /// The model a request that names none is sent to.
    pub model: Option<String>,
    /// Parameters a request gets where it does not set them itself.
    pub params: Map<String, Value>,
    pub note: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A prompt with every version (oldest first) and its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub id: String,
    pub description: String,
    pub versions: Vec<Version>,
    pub labels: BTreeMap<String, i64>,
    pub updated_at: i64,
}

impl Prompt {
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn version(&self, n: i64) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == n)
    }
}

/// What an owner saves: the next version's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub messages: Vec<Message>,
    pub model: Option<String>,
    pub params: Map<String, Value>,
}

impl Draft {
    /// Whether `v` holds the same content (saving it again makes no version).
    pub fn same_as(&self, v: &Version) -> bool {
        self.messages == v.messages && self.model == v.model && self.params == v.params
    }
}

/// A prompt id: 1 to 128 letters, digits and `-_./:`, starting with a
/// letter or digit.
pub fn parse_id(field: &str, raw: &str) -> Result<String, AppError> {
    let id = raw.trim();
    let ok = (1..=128).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(AppError::invalid(
            field,
            "1 to 128 letters, digits, '-', '_', '.', '/', ':', starting with a letter or digit",
        ))
    }
}

/// A label: 1 to 32 lowercase letters, digits, '-' and '_' (`production`).
pub fn parse_label(field: &str, raw: &str) -> Result<String, AppError> {
    let l = raw.trim();
    let ok = (1..=32).contains(&l.len())
        && l.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
    if ok {
        Ok(l.to_owned())
    } else {
        Err(AppError::invalid(
            field,
            "1 to 32 lowercase letters, digits, '-' or '_', such as production",
        ))
    }
}

/// The messages as the console writes them: each starts on a line
/// `role: text` (the role lowercase, at the line's start); the lines that
/// follow, up to the next such line, continue it.
pub fn parse_messages(field: &str, text: &str) -> Result<Vec<Message>, AppError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(AppError::invalid(
            field,
            format!("at most {} KiB of text", MAX_TEMPLATE_BYTES / 1024),
        ));
    }
    let mut out: Vec<Message> = Vec::new();
    for (n, line) in text.replace("\r\n", "\n").split('\n').enumerate() {
        let starts = ROLES.iter().find_map(|r| {
            line.strip_prefix(r)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|rest| (*r, rest.strip_prefix(' ').unwrap_or(rest)))
        });
        match (starts, out.last_mut()) {
            (Some((role, rest)), _) => out.push(Message {
                role: role.to_owned(),
                content: rest.to_owned(),
            }),
            (None, Some(m)) => {
                m.content.push('\n');
                m.content.push_str(line);
            }
            (None, None) if line.trim().is_empty() => {}
            (None, None) => {
                return Err(AppError::invalid(
                    field,
                    format!(
                        "line {}: a message starts with its role, as in 'system: You are …' ({})",
                        n + 1,
                        ROLES.join(", ")
                    ),
                ))
            }
        }
    }
    for m in &mut out {
        let kept = m.content.trim_end().len();
        m.content.truncate(kept);
    }
    check_messages(field, &out)?;
    Ok(out)
}

/// The messages as the console shows them (what [`parse_messages`] reads).
pub fn messages_text(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1 to [`MAX_MESSAGES`] messages of known roles, none empty, each a
/// template that compiles.
pub fn check_messages(field: &str, messages: &[Message]) -> Result<(), AppError> {
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(AppError::invalid(
            field,
            format!("1 to {MAX_MESSAGES} messages"),
        ));
    }
    let total: usize = messages.iter().map(|m| m.content.len()).sum();
    if total > MAX_TEMPLATE_BYTES {
        return Err(AppError::invalid(
            field,
            format!("at most {} KiB of text", MAX_TEMPLATE_BYTES / 1024),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(AppError::invalid(
                field,
                format!(
                    "message {}: role '{}' is not one of {}",
                    i + 1,
                    m.role.chars().take(32).collect::<String>(),
                    ROLES.join(", ")
                ),
            ));
        }
        if m.content.trim().is_empty() {
            return Err(AppError::invalid(
                field,
                format!("message {} ({}) is empty", i + 1, m.role),
            ));
        }
    }
    Ok(())
}

/// Default parameters: a JSON object (empty text: none) that sets none of
/// the request's own fields.
pub fn parse_params(field: &str, text: &str) -> Result<Map<String, Value>, AppError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    if text.len() > 16 * 1024 {
        return Err(AppError::invalid(field, "at most 16 KiB"));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        AppError::invalid(
            field,
            format!("a JSON object such as {{\"temperature\": 0.2}}: {e}"),
        )
    })?;
    let Value::Object(map) = v else {
        return Err(AppError::invalid(
            field,
            "a JSON object such as {\"temperature\": 0.2}",
        ));
    };
    for (k, v) in &map {
        let f = folded(k);
        if NOT_PARAMS.contains(&f.as_str()) {
            return Err(AppError::invalid(
                field,
                format!("'{k}' is the request's own, not a default parameter"),
            ));
        }
        if let Some(known) = COUNTED
            .iter()
            .chain(["temperature", "top_p"].iter())
            .find(|n| **n == f)
        {
            if k != known {
                return Err(AppError::invalid(
                    field,
                    format!("'{k}': write '{known}' exactly"),
                ));
            }
        }
        if COUNTED.contains(&k.as_str())
            && !v.as_i64().is_some_and(|n| (1..=1_000_000).contains(&n))
        {
            return Err(AppError::invalid(
                field,
                format!("'{k}' is a whole number from 1 to 1000000"),
            ));
        }
        if ["temperature", "top_p"].contains(&k.as_str()) && !v.is_number() {
            return Err(AppError::invalid(field, format!("'{k}' is a number")));
        }
    }
    Ok(map)
}

/// The pieces of a template: text, and the variables between them.
enum Piece<'a> {
    Text(&'a str),
    Variable(&'a str),
}

/// `{{ name }}` at the start of `s`: the name and the length of the whole.
fn variable_at(s: &str) -> Option<(&str, usize)> {
    let inner = s.strip_prefix("{{")?;
    let close = inner.find("}}")?;
    let name = inner[..close].trim_matches(' ');
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some((name, close + 4))
}

fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let (mut rest, mut text_from) = (template, 0);
    let mut at = 0;
    while let Some(i) = rest.find("{{") {
        let here = at + i;
        match variable_at(&template[here..]) {
            Some((name, len)) => {
                if here > text_from {
                    out.push(Piece::Text(&template[text_from..here]));
                }
                out.push(Piece::Variable(name));
                at = here + len;
                text_from = at;
            }
            None => at = here + 2,
        }
        rest = &template[at..];
    }
    if text_from < template.len() {
        out.push(Piece::Text(&template[text_from..]));
    }
    out
}

/// A version ready to render: its messages and the variables they use.
#[derive(Debug)]
pub struct Compiled {
    pub version: Version,
    /// Every variable the messages read, by name.
    pub variables: BTreeSet<String>,
}

/// Why a rendering failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RenderError {
    /// A variable the template uses that the request did not send.
    Missing(String),
    /// The rendering would pass [`MAX_RENDERED_BYTES`].
    TooLong(String),
}

impl Compiled {
    pub fn new(version: Version) -> Compiled {
        let variables = version
            .messages
            .iter()
            .flat_map(|m| pieces(&m.content))
            .filter_map(|p| match p {
                Piece::Variable(name) => Some(name.to_owned()),
                Piece::Text(_) => None,
            })
            .collect();
        Compiled { version, variables }
    }

    /// The messages with `vars` filled in; at most [`MAX_RENDERED_BYTES`].
    pub fn render(&self, vars: &Map<String, Value>) -> Result<Vec<Message>, RenderError> {
        if let Some(missing) = self.variables.iter().find(|v| !vars.contains_key(*v)) {
            return Err(RenderError::Missing(missing.clone()));
        }
        let too_long = || {
            RenderError::TooLong(format!(
                "the rendered prompt passes {} KiB",
                MAX_RENDERED_BYTES / 1024
            ))
        };
        let mut total = 0_usize;
        let mut out = Vec::with_capacity(self.version.messages.len());
        for m in &self.version.messages {
            let mut content = String::new();
            for p in pieces(&m.content) {
                let text = match p {
                    Piece::Text(t) => std::borrow::Cow::Borrowed(t),
                    Piece::Variable(name) => match vars.get(name) {
                        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
                        Some(v) => std::borrow::Cow::Owned(v.to_string()),
                        None => return Err(RenderError::Missing(name.to_owned())),
                    },
                };
                total = total.saturating_add(text.len());
                if total > MAX_RENDERED_BYTES {
                    return Err(too_long());
                }
                content.push_str(&text);
            }
            out.push(Message {
                role: m.role.clone(),
                content,
            });
        }
        Ok(out)
    }
}

fn decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn version_of(r: &sqlx::any::AnyRow) -> Result<(String, Version), sqlx::Error> {
    let model: String = r.try_get("model")?;
    Ok((
        r.try_get("prompt_id")?,
        Version {
            version: r.try_get("version")?,
            messages: decode(&r.try_get::<String, _>("messages_json")?)?,
            model: (!model.is_empty()).then_some(model),
            params: decode(&r.try_get::<String, _>("params_json")?)?,
            note: r.try_get("note")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
        },
    ))
}

/// An organization's prompts (`only`: just that one), by id, each with its
/// versions and labels.
async fn load(
    conn: &mut AnyConnection,
    org_id: &str,
    only: Option<&str>,
) -> Result<Vec<Prompt>, sqlx::Error> {
    let one = if only.is_some() { " AND id = $2" } else { "" };
    let mut prompts: BTreeMap<String, Prompt> = BTreeMap::new();
    let q = format!(
        "SELECT id, description, updated_at FROM prompts WHERE org_id = $1{one} ORDER BY id"
    );
    let mut query = sqlx::query(&q).bind(org_id);
    if let Some(id) = only {
        query = query.bind(id);
    }
    for r in query.fetch_all(&mut *conn).await? {
        let id: String = r.try_get("id")?;
        prompts.insert(
            id.clone(),
            Prompt {
                id,
                description: r.try_get("description")?,
                versions: Vec::new(),
                labels: BTreeMap::new(),
                updated_at: r.try_get("updated_at")?,
            },
        );
    }
    let one = one.replace("id", "prompt_id");
    let q = format!(
        "SELECT prompt_id, version, messages_json, model, params_json, note, created_by, created_at \
         FROM prompt_versions WHERE org_id = $1{one} ORDER BY prompt_id, version"
    );
    let mut query = sqlx::query(&q).bind(org_id);
    if let Some(id) = only {
        query = query.bind(id);
    }
    for r in query.fetch_all(&mut *conn).await? {
        let (id, v) = version_of(&r)?;
        if let Some(p) = prompts.get_mut(&id) {
            p.versions.push(v);
        }
    }
    let q = format!("SELECT prompt_id, label, version FROM prompt_labels WHERE org_id = $1{one}");
    let mut query = sqlx::query(&q).bind(org_id);
    if let Some(id) = only {
        query = query.bind(id);
    }
    for r in query.fetch_all(&mut *conn).await? {
        let id: String = r.try_get("prompt_id")?;
        if let Some(p) = prompts.get_mut(&id) {
            p.labels.insert(r.try_get("label")?, r.try_get("version")?);
        }
    }
    Ok(prompts.into_values().collect())
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &TenantScope,
) -> Result<Vec<Prompt>, sqlx::Error> {
    load(conn, scope.org_id(), None).await
}

pub async fn get(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
) -> Result<Option<Prompt>, sqlx::Error> {
    Ok(load(conn, scope.org_id(), Some(id)).await?.pop())
}

/// The ids of the organization's prompts.
pub async fn ids(
    conn: &mut AnyConnection,
    scope: &TenantScope,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM prompts WHERE org_id = $1 ORDER BY id")
        .bind(scope.org_id())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| r.try_get("id")).collect()
}

/// One organization's prompts, for the proxy's memory.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<Prompt>, sqlx::Error> {
    load(conn, org_id, None).await
}

/// Saves `draft` as the prompt's next version (making the prompt where it
/// does not exist); the description is set either way. Returns the
/// version that holds the draft: the latest one where it already did.
/// Call with the organization locked (`orgs::lock`).
#[expect(clippy::too_many_arguments, reason = "one version's parts")]
pub async fn save(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
    description: &str,
    draft: &Draft,
    note: &str,
    by: &str,
    now: i64,
) -> Result<(i64, bool), sqlx::Error> {
    let existing = get(conn, scope, id).await?;
    match &existing {
        Some(_) => {
            sqlx::query(
                "UPDATE prompts SET description = $1, updated_at = $2 WHERE org_id = $3 AND id = $4",
            )
            .bind(description)
            .bind(now)
            .bind(scope.org_id())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO prompts (org_id, id, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(scope.org_id())
            .bind(id)
            .bind(description)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    let latest = existing.as_ref().and_then(Prompt::latest);
    if let Some(v) = latest.filter(|v| draft.same_as(v)) {
        return Ok((v.version, false));
    }
    let next = latest.map_or(1, |v| v.version.saturating_add(1));
    sqlx::query(
        "INSERT INTO prompt_versions (org_id, prompt_id, version, messages_json, model, params_json, \
         note, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(scope.org_id())
    .bind(id)
    .bind(next)
    .bind(serde_json::to_string(&draft.messages).unwrap_or_default())
    .bind(draft.model.as_deref().unwrap_or(""))
    .bind(Value::Object(draft.params.clone()).to_string())
    .bind(note)
    .bind(by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((next, true))
}

/// Points `label` at `version`; returns the version it pointed at before.
pub async fn set_label(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
    label: &str,
    version: i64,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let before = remove_label(conn, scope, id, label).await?;
    sqlx::query(
        "INSERT INTO prompt_labels (org_id, prompt_id, label, version, updated_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(scope.org_id())
    .bind(id)
    .bind(label)
    .bind(version)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE prompts SET updated_at = $1 WHERE org_id = $2 AND id = $3")
        .bind(now)
        .bind(scope.org_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// Removes a label; returns the version it pointed at, if it existed.
pub async fn remove_label(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
    label: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let before: Option<i64> = sqlx::query(
        "SELECT version FROM prompt_labels WHERE org_id = $1 AND prompt_id = $2 AND label = $3",
    )
    .bind(scope.org_id())
    .bind(id)
    .bind(label)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("version"))
    .transpose()?;
    sqlx::query("DELETE FROM prompt_labels WHERE org_id = $1 AND prompt_id = $2 AND label = $3")
        .bind(scope.org_id())
        .bind(id)
        .bind(label)
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// Deletes a prompt with its versions and labels (`$1` the organization,
/// `$2` its id); `ops::delete_prompt` also takes it out of its projects.
pub(crate) const DELETE: [&str; 3] = [
    "DELETE FROM prompt_labels WHERE org_id = $1 AND prompt_id = $2",
    "DELETE FROM prompt_versions WHERE org_id = $1 AND prompt_id = $2",
    "DELETE FROM prompts WHERE org_id = $1 AND id = $2",
];

/// One line of a diff between two versions' text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    /// `+` (only in the newer), `-` (only in the older) or ` ` (both).
    pub tag: char,
    pub text: String,
}

/// A version as the diff compares it: its messages, model and parameters.
pub fn version_text(v: &Version) -> String {
    let mut out = messages_text(&v.messages);
    out.push_str(&format!(
        "\n--- model: {}\n--- parameters: {}",
        v.model.as_deref().unwrap_or("(the request's)"),
        Value::Object(v.params.clone())
    ));
    out
}

/// A line diff from `old` to `new`.
pub fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    // Bounded: two long versions that differ everywhere would otherwise
    // cost time quadratic in their lines.
    similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(200))
        .diff_lines(old, new)
        .iter_all_changes()
        .map(|c| DiffLine {
            tag: match c.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            },
            text: c.value().trim_end_matches('\n').to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn version(messages: Vec<Message>) -> Version {
        Version {
            version: 1,
            messages,
            model: None,
            params: Map::new(),
            note: String::new(),
            created_by: String::new(),
            created_at: 0,
        }
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn messages_are_read_from_role_lines() {
        let m = parse_messages(
            "messages",
            "system: You help {{ company }}.\nBe brief.\n\nuser: {{question}}\n  user: stays text\n",
        )
        .unwrap();
        assert_eq!(
            m,
            [
                Message {
                    role: "system".into(),
                    content: "You help {{ company }}.\nBe brief.".into()
                },
                Message {
                    role: "user".into(),
                    content: "{{question}}\n  user: stays text".into()
                },
            ]
        );
        assert_eq!(parse_messages("messages", &messages_text(&m)).unwrap(), m);
    }

    #[test]
    fn bad_messages_are_refused_naming_the_line_or_message() {
        for (text, says) in [
            ("hello", "line 1: a message starts with its role"),
            ("System: hi", "line 1"),
            ("system: ok\nuser:   ", "message 2 (user) is empty"),
            ("", "1 to 50 messages"),
        ] {
            let e = parse_messages("messages", text).unwrap_err();
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn variables_are_filled_as_sent_and_a_missing_one_is_named() {
        let c = Compiled::new(version(vec![
            Message {
                role: "system".into(),
                content: "Answer for {{ company }} in a {{tone}} tone. {{ not a name }} {{1x}} {{"
                    .into(),
            },
            Message {
                role: "user".into(),
                content: "{{ question }} <{{ n }}> {{ extra }}".into(),
            },
        ]));
        assert_eq!(
            c.variables,
            ["company", "extra", "n", "question", "tone"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        let out = c
            .render(&vars(json!({
                "company": "Acme & 'Co' {{ tone }}", "tone": "dry", "question": "Why?", "n": 3,
                "extra": {"a": [1]}, "unused": "x"
            })))
            .unwrap();
        assert_eq!(
            out[0].content,
            "Answer for Acme & 'Co' {{ tone }} in a dry tone. {{ not a name }} {{1x}} {{",
            "a value is not read again as a template"
        );
        assert_eq!(out[1].content, r#"Why? <3> {"a":[1]}"#);
        assert_eq!(
            c.render(&vars(
                json!({"company": "A", "tone": "dry", "n": 1, "extra": 0})
            )),
            Err(RenderError::Missing("question".into()))
        );
    }

    #[test]
    fn a_rendering_is_bounded_as_it_is_written() {
        let c = Compiled::new(version(vec![Message {
            role: "user".into(),
            content: "{{ x }}".repeat(20),
        }]));
        let big = "y".repeat(100 * 1024);
        assert!(matches!(
            c.render(&vars(json!({ "x": big }))),
            Err(RenderError::TooLong(_))
        ));
        assert_eq!(
            c.render(&vars(json!({ "x": "ok" }))).unwrap()[0].content,
            "ok".repeat(20)
        );
    }

    #[test]
    fn params_may_not_set_the_requests_own_fields() {
        assert_eq!(
            parse_params("params", r#"{"temperature": 0.2, "max_tokens": 50}"#)
                .unwrap()
                .len(),
            2
        );
        for (text, says) in [
            (r#"{"model": "x"}"#, "'model'"),
            (r#"{"Model": "x"}"#, "'Model'"),
            (r#"{"prompt_environment": "x"}"#, "request's own"),
            (r#"{"MAX_TOKENS": 5}"#, "write 'max_tokens' exactly"),
            (r#"{"max_tokens": "x"}"#, "whole number"),
            (r#"{"n": 0}"#, "whole number"),
            (r#"{"temperature": "hot"}"#, "a number"),
            ("[1]", "a JSON object"),
            ("{", "a JSON object"),
        ] {
            let e = parse_params("params", text).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        assert!(parse_params("params", "  ").unwrap().is_empty());
    }

    #[test]
    fn ids_and_labels() {
        assert_eq!(
            parse_id("id", " support/triage.v2 ").unwrap(),
            "support/triage.v2"
        );
        for bad in ["", "-x", "a b", "x{{y}}", &"a".repeat(129)] {
            assert!(parse_id("id", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_label("label", "production").unwrap(), "production");
        assert!(parse_label("label", "Prod").is_err());
    }

    #[test]
    fn a_diff_marks_what_changed() {
        let d = diff("system: a\nuser: b\n", "system: a\nuser: c\n");
        let tags: String = d.iter().map(|l| l.tag).collect();
        assert_eq!(tags, " -+");
        assert_eq!(d[2].text, "user: c");
    }
}
