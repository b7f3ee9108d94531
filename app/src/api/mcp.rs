//! The MCP gateway's settings: owners register the organization's MCP
//! servers; project admins choose which servers (and tools) their
//! project's keys may use; whoever manages a key may narrow it further.

// Not `expect`: the server macro makes a client stub on the wasm target and a
// handler on the server, and only some of them trip the lint.
#![allow(
    clippy::too_many_arguments,
    reason = "a server function takes one argument per form field"
)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A registered server as the console shows it: the credential only as
/// its hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServerView {
    pub name: String,
    pub url: String,
    pub transport: String,
    pub credential_header: String,
    pub credential_hint: Option<String>,
    /// The tools exposed; `None`: all the server offers.
    pub tools: Option<Vec<String>>,
    pub timeout_ms: i64,
    /// The projects whose keys may use it.
    pub projects: Vec<String>,
    pub updated_at: i64,
}

/// The organization's servers and a project's (or a key's) grants, as the
/// form writes them: a line per server, `server` or `server: tool, tool`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpAccessView {
    pub servers: Vec<String>,
    pub grants: String,
    /// For a key: whether it uses its project's grants.
    pub inherited: bool,
}

#[cfg(feature = "ssr")]
fn view(s: crate::core::mcp::Server, projects: &[crate::core::projects::Project]) -> McpServerView {
    let mut users: Vec<String> = projects
        .iter()
        .filter(|p| p.mcp.iter().any(|g| g.server == s.name))
        .map(|p| p.name.clone())
        .collect();
    users.sort();
    McpServerView {
        name: s.name,
        url: s.url,
        transport: s.transport,
        credential_header: s.credential_header,
        credential_hint: s.credential_hint,
        tools: s.tools,
        timeout_ms: s.timeout_ms,
        projects: users,
        updated_at: s.updated_at,
    }
}

#[server(prefix = "/api/console", endpoint = "list_mcp_servers")]
pub async fn list_mcp_servers(org_id: String) -> Result<Vec<McpServerView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::McpServers, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let servers = crate::core::mcp::list(&mut conn, &c.scope).await?;
        let projects =
            crate::core::projects::load_for_proxy(&mut conn, Some(c.scope.org_id()), None).await?;
        Ok(servers.into_iter().map(|s| view(s, &projects)).collect())
    })
    .await
}

/// Registers a server, or changes the one of the same name. `credential`:
/// the value sent upstream in `credential_header` (blank keeps the stored
/// one, `-` removes it); `tools`: the tools exposed, blank for all;
/// `timeout_ms`: how long an answer may take, blank for 30 s.
#[server(prefix = "/api/console", endpoint = "save_mcp_server")]
pub async fn save_mcp_server(
    org_id: String,
    name: String,
    url: String,
    transport: Option<String>,
    credential_header: Option<String>,
    credential: Option<String>,
    tools: Option<String>,
    timeout_ms: Option<String>,
) -> Result<McpServerView, AppError> {
    use super::ssr::*;
    use crate::core::mcp::NewServer;
    use crate::policy::Action;
    in_org(&org_id, Action::McpServers, |c| async move {
        let s = NewServer::parse(
            &name,
            &url,
            transport.as_deref().unwrap_or(""),
            credential_header.as_deref().unwrap_or(""),
            credential.as_deref().unwrap_or(""),
            tools.as_deref().unwrap_or(""),
            timeout_ms.as_deref().unwrap_or(""),
        )?;
        let saved = crate::core::ops::save_mcp_server(&c.state, &c.actor, &c.scope, &s).await?;
        let mut conn = c.state.db.pool.acquire().await?;
        let projects =
            crate::core::projects::load_for_proxy(&mut conn, Some(c.scope.org_id()), None).await?;
        Ok(view(saved, &projects))
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "delete_mcp_server")]
pub async fn delete_mcp_server(org_id: String, name: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::McpServers, |c| async move {
        crate::core::ops::delete_mcp_server(&c.state, &c.actor, &c.scope, &name).await
    })
    .await
}

/// The organization's servers and what the project's keys may use of them.
#[server(prefix = "/api/console", endpoint = "project_mcp")]
pub async fn project_mcp(org_id: String, project_id: String) -> Result<McpAccessView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectSettings,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let servers = crate::core::mcp::list(&mut conn, c.scope.org()).await?;
            let grants = crate::core::projects::get(&mut conn, &c.scope).await?.mcp;
            Ok(McpAccessView {
                servers: servers.into_iter().map(|s| s.name).collect(),
                grants: crate::core::mcp::grants_text(&grants),
                inherited: false,
            })
        },
    )
    .await
}

/// Sets the servers (and tools) the project's keys may use: a line per
/// server, `server` for all it exposes or `server: tool_a, tool_b`.
#[server(prefix = "/api/console", endpoint = "set_project_mcp")]
pub async fn set_project_mcp(
    org_id: String,
    project_id: String,
    mcp: Option<String>,
) -> Result<McpAccessView, AppError> {
    use super::ssr::*;
    use crate::core::mcp;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectSettings,
        |c| async move {
            let grants = mcp::parse_grants("mcp", mcp.as_deref().unwrap_or(""))?;
            let set =
                crate::core::ops::set_project_mcp(&c.state, &c.actor, &c.scope, &grants).await?;
            let mut conn = c.state.db.pool.acquire().await?;
            let servers = mcp::list(&mut conn, c.scope.org()).await?;
            Ok(McpAccessView {
                servers: servers.into_iter().map(|s| s.name).collect(),
                grants: mcp::grants_text(&set),
                inherited: false,
            })
        },
    )
    .await
}

/// What a key may use of the MCP servers: its own narrowing, or its
/// project's grants where it has none.
#[server(prefix = "/api/console", endpoint = "key_mcp")]
pub async fn key_mcp(org_id: String, key_id: String) -> Result<McpAccessView, AppError> {
    use super::ssr::*;
    on_key(&org_id, &key_id, |c, key| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let own = crate::core::keys::mcp_of(&mut conn, &c.scope, &key.id).await?;
        let project = crate::core::projects::get(&mut conn, &c.scope).await?.mcp;
        let servers = crate::core::mcp::list(&mut conn, c.scope.org()).await?;
        Ok(McpAccessView {
            servers: servers.into_iter().map(|s| s.name).collect(),
            inherited: own.is_none(),
            grants: crate::core::mcp::grants_text(own.as_deref().unwrap_or(&project)),
        })
    })
    .await
}

/// Narrows a key's MCP servers and tools within its project's (which
/// still apply): lines as for a project; blank to use the project's,
/// `none` for no MCP server at all.
#[server(prefix = "/api/console", endpoint = "set_key_mcp")]
pub async fn set_key_mcp(
    org_id: String,
    key_id: String,
    mcp: Option<String>,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::mcp;
    on_key(&org_id, &key_id, |c, key| async move {
        let text = mcp.unwrap_or_default();
        let grants = match text.trim() {
            "" => None,
            "none" => Some(Vec::new()),
            t => Some(mcp::parse_grants("mcp", t)?),
        };
        crate::core::ops::set_key_mcp(&c.state, &c.actor, &c.scope, &key, grants.as_deref()).await
    })
    .await
}
