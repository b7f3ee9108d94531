//! MCP servers: where an organization's tools live, which of their tools
//! are exposed, and which servers (and tools) a project's keys, or one
//! key, may use. The credential sent upstream is sealed like a provider
//! key and never read back out except by the gateway.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::BTreeSet;

use super::providers::{hint_of, open, seal};
use crate::error::AppError;
use crate::policy::{OrgScope, TenantScope};

/// The most servers an organization registers, and tools a list names.
pub const MAX_SERVERS: usize = 50;
pub const MAX_TOOLS: usize = 200;
/// The default and the bounds of how long an upstream may take to answer.
pub const DEFAULT_TIMEOUT_MS: i64 = 30_000;
pub const MAX_TIMEOUT_MS: i64 = 600_000;

/// A registered server as the console shows it: never the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub url: String,
    /// `http`: Streamable HTTP.
    pub transport: String,
    /// The header the credential is sent in (`Authorization`).
    pub credential_header: String,
    pub credential_hint: Option<String>,
    /// The tools exposed; `None`: all the server offers.
    pub tools: Option<Vec<String>>,
    pub timeout_ms: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A server with its credential unsealed, for the gateway's memory only.
pub struct Upstream {
    pub server: Server,
    pub credential: Option<SecretString>,
}

/// What a project (or a key) may use of one server: all the tools it
/// exposes (`None`) or these.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub server: String,
    pub tools: Option<Vec<String>>,
}

impl Grant {
    pub fn allows(&self, tool: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == tool))
    }
}

/// A server's or a tool's name: 1 to 64 letters, digits, '-', '_' or '.'.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A server's name as it appears in `/mcp/{name}`.
pub fn parse_name(field: &str, raw: &str) -> Result<String, AppError> {
    let n = raw.trim();
    if !is_name(n) || n.starts_with('.') {
        return Err(AppError::invalid(
            field,
            "1 to 64 letters, digits, '-', '_' or '.' (clients reach the server at /mcp/{name})",
        ));
    }
    Ok(n.to_owned())
}

/// A list of tool names, separated by commas, spaces or lines; empty for
/// none (`field` names it in an error).
pub fn parse_tools(field: &str, raw: &str) -> Result<Vec<String>, AppError> {
    let mut seen = BTreeSet::new();
    for t in raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if !is_name(t) {
            return Err(AppError::invalid(
                field,
                format!("'{t}' is not a tool name (letters, digits, '-', '_' or '.', up to 64)"),
            ));
        }
        seen.insert(t.to_owned());
    }
    if seen.len() > MAX_TOOLS {
        return Err(AppError::invalid(
            field,
            format!("at most {MAX_TOOLS} tools"),
        ));
    }
    Ok(seen.into_iter().collect())
}

/// Grants as the console writes them: a line per server, `server` for all
/// of its tools or `server: tool_a, tool_b` for those only.
pub fn parse_grants(field: &str, text: &str) -> Result<Vec<Grant>, AppError> {
    let mut out: Vec<Grant> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (server, tools) = match line.split_once(':') {
            Some((s, t)) => (s.trim(), Some(t)),
            None => (line, None),
        };
        let server = parse_name(field, server).map_err(|_| {
            AppError::invalid(
                field,
                format!(
                    "'{server}' is not a server name; write 'server' or 'server: tool_a, tool_b'"
                ),
            )
        })?;
        if out.iter().any(|g| g.server == server) {
            return Err(AppError::invalid(
                field,
                format!("'{server}' is listed twice"),
            ));
        }
        let tools = tools.map(|t| parse_tools(field, t)).transpose()?;
        if tools.as_ref().is_some_and(Vec::is_empty) {
            return Err(AppError::invalid(
                field,
                format!("'{server}:' names no tool; write '{server}' for all of its tools"),
            ));
        }
        out.push(Grant { server, tools });
    }
    out.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(out)
}

/// Grants as the console shows them (what [`parse_grants`] reads).
pub fn grants_text(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| match &g.tools {
            None => g.server.clone(),
            Some(t) => format!("{}: {}", g.server, t.join(", ")),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each grant names a registered server and only tools it exposes.
pub fn check_grants(field: &str, grants: &[Grant], servers: &[Server]) -> Result<(), AppError> {
    for g in grants {
        let Some(s) = servers.iter().find(|s| s.name == g.server) else {
            return Err(AppError::invalid(
                field,
                format!(
                    "'{}' is not one of the organization's MCP servers",
                    g.server
                ),
            ));
        };
        if let (Some(exposed), Some(wanted)) = (&s.tools, &g.tools) {
            if let Some(t) = wanted.iter().find(|t| !exposed.contains(t)) {
                return Err(AppError::invalid(
                    field,
                    format!("the server '{}' does not expose the tool '{t}'", g.server),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn grants_of(json: &str) -> Result<Vec<Grant>, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn grants_json(grants: &[Grant]) -> String {
    serde_json::to_string(grants).unwrap_or_else(|_| "[]".to_owned())
}

/// What an owner submits.
pub struct NewServer {
    pub name: String,
    pub url: String,
    pub credential_header: String,
    /// `None`: keep the stored one; `Some("")` is refused by [`NewServer::parse`].
    pub credential: Option<SecretString>,
    pub clear_credential: bool,
    pub tools: Option<Vec<String>>,
    pub timeout_ms: i64,
}

impl NewServer {
    /// `tools`: empty for all the server offers; `timeout_ms`: empty for
    /// the default.
    pub fn parse(
        name: &str,
        url: &str,
        transport: &str,
        credential_header: &str,
        credential: &str,
        tools: &str,
        timeout_ms: &str,
    ) -> Result<NewServer, AppError> {
        let name = parse_name("name", name)?;
        match transport.trim() {
            "" | "http" | "streamable_http" | "streamable-http" => {}
            "sse" => {
                return Err(AppError::invalid(
                    "transport",
                    "the legacy HTTP+SSE transport is not supported yet; register a server that speaks Streamable HTTP (MCP 2025-03-26 or later)",
                ))
            }
            other => {
                return Err(AppError::invalid(
                    "transport",
                    format!("'{other}' is not a transport; use http (Streamable HTTP)"),
                ))
            }
        }
        let url = url.trim().to_owned();
        let parsed = url::Url::parse(&url).map_err(|_| {
            AppError::invalid("url", "an http(s) URL, such as https://mcp.example.com/mcp")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(AppError::invalid(
                "url",
                "an http(s) URL, such as https://mcp.example.com/mcp",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AppError::invalid(
                "url",
                "put credentials in the credential field, not in the URL",
            ));
        }
        let header = match credential_header.trim() {
            "" => "Authorization".to_owned(),
            h => {
                let ok = is_header_name(h);
                if !ok {
                    return Err(AppError::invalid(
                        "credential_header",
                        "a header name such as Authorization or X-API-Key",
                    ));
                }
                let lower = h.to_ascii_lowercase();
                if lower.starts_with("mcp-")
                    || matches!(
                        lower.as_str(),
                        "host"
                            | "content-length"
                            | "content-type"
                            | "accept"
                            | "last-event-id"
                            | "connection"
                            | "transfer-encoding"
                    )
                {
                    return Err(AppError::invalid(
                        "credential_header",
                        format!("'{h}' is set by the gateway; choose another header"),
                    ));
                }
                h.to_owned()
            }
        };
        let credential = credential.trim();
        let clear_credential = credential == "-";
        if credential.len() > 4096 || credential.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "credential",
                "at most 4096 characters, on one line",
            ));
        }
        let tools = match tools.trim() {
            "" | "*" => None,
            t => Some(parse_tools("tools", t)?),
        };
        let timeout_ms = match timeout_ms.trim() {
            "" => DEFAULT_TIMEOUT_MS,
            t => t
                .parse::<i64>()
                .ok()
                .filter(|n| (100..=MAX_TIMEOUT_MS).contains(n))
                .ok_or_else(|| {
                    AppError::invalid(
                        "timeout_ms",
                        format!("milliseconds from 100 to {MAX_TIMEOUT_MS}"),
                    )
                })?,
        };
        Ok(NewServer {
            name,
            url,
            credential_header: header,
            credential: (!credential.is_empty() && !clear_credential)
                .then(|| SecretString::from(credential.to_owned())),
            clear_credential,
            tools,
            timeout_ms,
        })
    }

    /// Refuses a URL on a private network unless the operator allows it.
    pub async fn check_network(&self, allow_private: bool) -> Result<(), AppError> {
        super::net::check_url("url", &self.url, allow_private).await
    }
}

/// An HTTP header name (RFC 9110 token characters), at most 64.
fn is_header_name(h: &str) -> bool {
    h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

macro_rules! columns {
    () => {
        "name, url, transport, credential_header, credential_sealed, credential_hint, tools_json, \
         timeout_ms, created_at, updated_at"
    };
}

fn server_of(r: &sqlx::any::AnyRow) -> Result<Server, sqlx::Error> {
    let tools: String = r.try_get("tools_json")?;
    Ok(Server {
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        transport: r.try_get("transport")?,
        credential_header: r.try_get("credential_header")?,
        credential_hint: r.try_get("credential_hint")?,
        tools: serde_json::from_str(&tools).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        timeout_ms: r.try_get("timeout_ms")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &TenantScope,
) -> Result<Vec<Server>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM mcp_servers WHERE org_id = $1 ORDER BY name"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(server_of).collect()
}

/// Adds a server or replaces the one of the same name; no credential keeps
/// the stored one (`-` clears it). Returns the previous entry.
pub async fn upsert(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    secret: &SecretString,
    s: &NewServer,
    now: i64,
) -> Result<Option<Server>, AppError> {
    let before = list(&mut *conn, scope)
        .await?
        .into_iter()
        .find(|x| x.name == s.name);
    let sealed = s.credential.as_ref().map(|k| seal(secret, k)).transpose()?;
    let hint = s.credential.as_ref().map(hint_of);
    let tools = serde_json::to_string(&s.tools).unwrap_or_else(|_| "null".to_owned());
    sqlx::query(
        "INSERT INTO mcp_servers (org_id, name, url, transport, credential_header, credential_sealed, \
         credential_hint, tools_json, timeout_ms, created_at, updated_at) \
         VALUES ($1, $2, $3, 'http', $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (org_id, name) DO UPDATE SET url = $3, credential_header = $4, \
         credential_sealed = CASE WHEN $10 = 1 THEN NULL ELSE COALESCE($5, mcp_servers.credential_sealed) END, \
         credential_hint = CASE WHEN $10 = 1 THEN NULL ELSE COALESCE($6, mcp_servers.credential_hint) END, \
         tools_json = $7, timeout_ms = $8, updated_at = $9",
    )
    .bind(scope.org_id())
    .bind(&s.name)
    .bind(&s.url)
    .bind(&s.credential_header)
    .bind(sealed)
    .bind(hint)
    .bind(tools)
    .bind(s.timeout_ms)
    .bind(now)
    .bind(i64::from(s.clear_credential))
    .execute(&mut *conn)
    .await?;
    Ok(before)
}

/// Deletes a server (`$1` the organization, `$2` its name).
pub(crate) const DELETE: &str = "DELETE FROM mcp_servers WHERE org_id = $1 AND name = $2";

/// Every server of an organization with its credential unsealed: the
/// gateway's load. A credential that no longer opens (the server secret
/// changed) is logged; the server is then called without it.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: &str,
    secret: &SecretString,
) -> Result<Vec<Upstream>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM mcp_servers WHERE org_id = $1"
    ))
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let server = server_of(r)?;
            let sealed: Option<String> = r.try_get("credential_sealed")?;
            let credential = sealed.and_then(|s| {
                let opened = open(secret, &s);
                if opened.is_none() {
                    tracing::error!(org = %org_id, server = %server.name, "an MCP server's credential does not open with this server's secret; enter it again");
                }
                opened
            });
            Ok(Upstream { server, credential })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_read_as_written() {
        let g = parse_grants("mcp", "weather: forecast, alerts\n\n files \n").unwrap();
        assert_eq!(
            g,
            vec![
                Grant {
                    server: "files".into(),
                    tools: None
                },
                Grant {
                    server: "weather".into(),
                    tools: Some(vec!["alerts".into(), "forecast".into()])
                },
            ]
        );
        assert_eq!(grants_text(&g), "files\nweather: alerts, forecast");
        assert!(g[1].allows("alerts") && !g[1].allows("delete_all"));
        assert!(g[0].allows("anything"));
    }

    #[test]
    fn bad_grants_name_the_field_and_the_line() {
        let e = parse_grants("mcp", "a b: x").unwrap_err().to_string();
        assert!(e.contains("'a b' is not a server name"), "{e}");
        let e = parse_grants("mcp", "x\nx: y").unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse_grants("mcp", "x:").unwrap_err().to_string();
        assert!(e.contains("names no tool"), "{e}");
        let e = parse_grants("mcp", "x: a/b").unwrap_err().to_string();
        assert!(e.contains("'a/b' is not a tool name"), "{e}");
    }

    #[test]
    fn grants_are_checked_against_what_servers_expose() {
        let s = Server {
            name: "w".into(),
            url: "https://w.example/mcp".into(),
            transport: "http".into(),
            credential_header: "Authorization".into(),
            credential_hint: None,
            tools: Some(vec!["forecast".into()]),
            timeout_ms: 1000,
            created_at: 0,
            updated_at: 0,
        };
        let ok = parse_grants("mcp", "w: forecast").unwrap();
        assert!(check_grants("mcp", &ok, std::slice::from_ref(&s)).is_ok());
        let bad = parse_grants("mcp", "w: shell").unwrap();
        let e = check_grants("mcp", &bad, std::slice::from_ref(&s))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not expose the tool 'shell'"), "{e}");
        let none = parse_grants("mcp", "other").unwrap();
        assert!(check_grants("mcp", &none, &[s]).is_err());
    }

    #[test]
    fn servers_parse_with_clear_errors() {
        let s = NewServer::parse("w", "https://w.example/mcp", "", "", "tok", "a, b", "").unwrap();
        assert_eq!(s.tools, Some(vec!["a".into(), "b".into()]));
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(s.credential_header, "Authorization");
        let err =
            |r: Result<NewServer, AppError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(NewServer::parse("w", "ftp://x", "", "", "", "", "")).contains("url"));
        assert!(
            err(NewServer::parse("w", "https://u:p@x/", "", "", "", "", ""))
                .contains("credential field")
        );
        assert!(
            err(NewServer::parse("w", "https://x/", "sse", "", "", "", "")).contains("transport")
        );
        assert!(
            err(NewServer::parse("w", "https://x/", "", "Host", "", "", ""))
                .contains("credential_header")
        );
        assert!(
            err(NewServer::parse("w", "https://x/", "", "", "", "", "5")).contains("timeout_ms")
        );
        assert!(err(NewServer::parse("a/b", "https://x/", "", "", "", "", "")).contains("name"));
    }
}
