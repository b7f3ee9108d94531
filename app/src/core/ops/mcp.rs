//! The MCP gateway's settings: registering and removing an organization's
//! MCP servers, and the servers (and tools) a project's keys, or one key,
//! may use. Every change is audited and reaches every instance's gateway
//! through its notice.

use serde_json::{json, Value};

use super::{audited, org_notice, project_notice, Audited, Notice};
use crate::core::audit::Actor;
use crate::core::mcp::{self, Grant, NewServer, Server, MAX_SERVERS};
use crate::core::state::AppState;
use crate::core::{keys, orgs, projects};
use crate::error::AppError;
use crate::policy::{OrgScope, ProjectScope};

fn server_json(s: &Server) -> Value {
    json!({
        "url": s.url, "transport": s.transport, "credential_header": s.credential_header,
        "credential_hint": s.credential_hint, "tools": s.tools, "timeout_ms": s.timeout_ms,
    })
}

/// Registers a server or changes the one of the same name.
pub async fn save_mcp_server(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    s: &NewServer,
) -> Result<Server, AppError> {
    s.check_network(state.allow_private_networks).await?;
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let known = mcp::list(&mut op.tx, scope).await?;
    if known.len() >= MAX_SERVERS && !known.iter().any(|x| x.name == s.name) {
        return Err(AppError::invalid(
            "name",
            format!("an organization registers at most {MAX_SERVERS} MCP servers"),
        ));
    }
    let before = mcp::upsert(&mut op.tx, scope, &state.secret, s, op.now).await?;
    let after = mcp::list(&mut op.tx, scope)
        .await?
        .into_iter()
        .find(|x| x.name == s.name)
        .ok_or_else(|| AppError::not_found("MCP server"))?;
    let change = audited(
        scope,
        if before.is_some() {
            "mcp_server.updated"
        } else {
            "mcp_server.registered"
        },
        "mcp_server",
        &s.name,
        before.as_ref().map(server_json),
        Some(server_json(&after)),
    );
    op.finish(actor, change, Some(org_notice(scope))).await?;
    Ok(after)
}

/// Removes a server and takes it out of every project and key that named
/// it (a server registered again later is granted anew). Sessions with it
/// end at their next message.
pub async fn delete_mcp_server(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    name: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let before = mcp::list(&mut op.tx, scope)
        .await?
        .into_iter()
        .find(|x| x.name == name)
        .ok_or_else(|| AppError::not_found("MCP server"))?;
    crate::core::db::delete_in_org(&mut op.tx, mcp::DELETE, scope, name).await?;
    let mut freed = Vec::new();
    for p in projects::load_for_proxy(&mut op.tx, Some(scope.org_id()), None).await? {
        if p.mcp.iter().any(|g| g.server == name) {
            let kept: Vec<Grant> = p.mcp.into_iter().filter(|g| g.server != name).collect();
            projects::set_mcp_of(&mut op.tx, &p.id, scope.org_id(), &kept, op.now).await?;
            freed.push(p.name);
        }
    }
    keys::forget_mcp_server(&mut op.tx, scope.org_id(), name).await?;
    let change = audited(
        scope,
        "mcp_server.deleted",
        "mcp_server",
        name,
        Some(json!({ "server": server_json(&before), "projects": freed })),
        None,
    );
    // Its projects' and keys' entries too: OrgAll reloads them.
    op.finish(
        actor,
        change,
        Some(Notice::OrgAll(scope.org_id().to_owned())),
    )
    .await
}

/// Sets the servers (and tools) a project's keys may use: each one the
/// organization registered, and tools it exposes.
pub async fn set_project_mcp(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    grants: &[Grant],
) -> Result<Vec<Grant>, AppError> {
    let mut op = Audited::begin(state).await?;
    // Locked: a server removed at the same moment is not granted after it.
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let servers = mcp::list(&mut op.tx, scope.org()).await?;
    mcp::check_grants("mcp", grants, &servers)?;
    let before = projects::get(&mut op.tx, scope).await?.mcp;
    projects::set_mcp(&mut op.tx, scope, grants, op.now).await?;
    let change = audited(
        scope.org(),
        "project.mcp_set",
        "project",
        scope.project_id(),
        Some(json!({ "mcp": before })),
        Some(json!({ "mcp": grants })),
    );
    op.finish(actor, change, Some(project_notice(scope)))
        .await?;
    Ok(grants.to_vec())
}

/// Narrows a key's MCP servers and tools within what its project allows
/// (`None`: the project's). Each grant names a registered server.
pub async fn set_key_mcp(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    key: &keys::KeyRow,
    grants: Option<&[Grant]>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let key = super::live_key(&mut op, scope, &key.id).await?;
    if let Some(g) = grants {
        let servers = mcp::list(&mut op.tx, scope.org()).await?;
        mcp::check_grants("mcp", g, &servers)?;
    }
    let before = keys::mcp_of(&mut op.tx, scope, &key.id).await?;
    keys::set_mcp(&mut op.tx, scope, &key.id, grants, op.now).await?;
    let change = audited(
        scope.org(),
        "key.mcp_set",
        "api_key",
        &key.id_hash,
        Some(json!({ "mcp": before })),
        Some(json!({ "mcp": grants })),
    );
    op.finish(actor, change, Some(Notice::Key(key.id.clone())))
        .await
}
