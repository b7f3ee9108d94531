//! Projects and their members.

// Not `expect`: the server macro makes a client stub on the wasm target and a
// handler on the server, and only some of them trip the lint.
#![allow(
    clippy::too_many_arguments,
    reason = "a server function takes one argument per form field"
)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::{OrgRole, ProjectRole, Seat};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSummary {
    pub id: String,
    pub name: String,
    pub my_seat: Seat,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_reset: String,
    pub ip_allowlist: Vec<String>,
    /// Bodies may be kept where the organization allows it too.
    pub content_logging: bool,
    /// Where the caller sits here; the console shows what this seat may do.
    pub my_seat: Seat,
    /// Keys that still work (what deleting the project would revoke).
    pub live_keys: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectMemberView {
    pub user_id: String,
    pub email: String,
    pub name: String,
    /// `None` for organization owners: admins of every project by right.
    pub role: Option<ProjectRole>,
    pub org_role: OrgRole,
}

#[server(prefix = "/api/console", endpoint = "list_projects")]
pub async fn list_projects(org_id: String) -> Result<Vec<ProjectSummary>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ViewOrganization, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let rows = crate::core::projects::visible(&mut conn, &c.scope).await?;
        Ok(rows
            .into_iter()
            .map(|(p, role)| ProjectSummary {
                id: p.id,
                name: p.name,
                my_seat: c.scope.seat().with_project(role),
            })
            .collect())
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "create_project")]
pub async fn create_project(org_id: String, name: String) -> Result<ProjectSummary, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::CreateProject, |c| async move {
        let name = crate::core::domain::name("name", &name, 100)?;
        let p = crate::core::ops::create_project(&c.state, &c.actor, &c.scope, &name).await?;
        Ok(ProjectSummary {
            id: p.id,
            name: p.name,
            my_seat: Seat::OrgOwner,
        })
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "get_project")]
pub async fn get_project(org_id: String, project_id: String) -> Result<ProjectView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(&org_id, &project_id, Action::ViewProject, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let p = crate::core::projects::get(&mut conn, &c.scope).await?;
        let live_keys =
            crate::core::keys::live_count(&mut conn, &c.scope, crate::core::now_ms()).await?;
        Ok(ProjectView {
            id: p.id,
            name: p.name,
            models: p.caps.models,
            tpm_limit: p.caps.tpm_limit,
            rpm_limit: p.caps.rpm_limit,
            budget_micros: p.caps.budget.map(crate::format::Usd::micros),
            budget_reset: p.caps.budget_reset.as_str().to_owned(),
            ip_allowlist: p.ip_allowlist,
            content_logging: p.content_logging,
            my_seat: c.scope.seat(),
            live_keys,
        })
    })
    .await
}

/// Changes a project's settings: name, models (from the catalogue), TPM, RPM,
/// budget and its reset, IP allowlist. Lower caps lower the keys above them.
#[server(prefix = "/api/console", endpoint = "update_project")]
pub async fn update_project(
    org_id: String,
    project_id: String,
    name: String,
    models: Option<Vec<String>>,
    tpm: String,
    rpm: String,
    max_budget: String,
    budget_reset: String,
    ip_allowlist: String,
    content_logging: Option<String>,
) -> Result<ProjectView, AppError> {
    use super::ssr::*;
    use crate::core::limits::{parse_ip_allowlist, Caps};
    use crate::core::projects;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectSettings,
        |c| async move {
            let mut models = models.unwrap_or_default();
            models.dedup();
            let settings = projects::Settings {
                name: crate::core::domain::name("name", &name, 100)?,
                caps: Caps::parse(models, &tpm, &rpm, &max_budget, &budget_reset)?,
                ip_allowlist: parse_ip_allowlist("ip_allowlist", &ip_allowlist)?,
                content_logging: super::checkbox("content_logging", content_logging.as_deref())?,
            };
            crate::core::ops::update_project(&c.state, &c.actor, &c.scope, &settings).await?;
            let scope = &c.scope;
            get_project(scope.org_id().to_owned(), scope.project_id().to_owned()).await
        },
    )
    .await
}

/// Deletes a project and revokes its keys; `confirm` must repeat its name.
#[server(prefix = "/api/console", endpoint = "delete_project")]
pub async fn delete_project(
    org_id: String,
    project_id: String,
    confirm: String,
) -> Result<i64, AppError> {
    use super::ssr::*;
    use crate::core::projects;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::DeleteProject,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let p = projects::get(&mut conn, &c.scope).await?;
            drop(conn);
            if confirm.trim() != p.name {
                return Err(AppError::invalid(
                    "confirm",
                    format!("type the project's name, '{}', to delete it", p.name),
                ));
            }
            let revoked =
                crate::core::ops::delete_project(&c.state, &c.actor, &c.scope, &p).await?;
            Ok(revoked)
        },
    )
    .await
}

#[server(prefix = "/api/console", endpoint = "list_project_members")]
pub async fn list_project_members(
    org_id: String,
    project_id: String,
) -> Result<Vec<ProjectMemberView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::ViewProjectMembers,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let rows = crate::core::projects::members(&mut conn, &c.scope).await?;
            Ok(rows
                .into_iter()
                .map(|m| ProjectMemberView {
                    user_id: m.user_id,
                    email: m.email,
                    name: m.name,
                    role: m.role,
                    org_role: m.org_role,
                })
                .collect())
        },
    )
    .await
}

#[cfg(feature = "ssr")]
async fn set_project_member(
    org_id: String,
    project_id: String,
    user_id: String,
    role: String,
    adding: bool,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    let action = if adding {
        Action::AddProjectMembers
    } else {
        Action::EditProjectMemberRoles
    };
    in_project_of(&org_id, &project_id, action, |c| async move {
        let role: ProjectRole = role
            .parse()
            .map_err(|e: String| AppError::invalid("role", e))?;
        let scope = &c.scope;
        crate::core::ops::set_project_member(&c.state, &c.actor, scope, &user_id, role, adding)
            .await
    })
    .await
}

/// Adds a member of the organization to the project as admin or member.
#[server(prefix = "/api/console", endpoint = "add_project_member")]
pub async fn add_project_member(
    org_id: String,
    project_id: String,
    user_id: String,
    role: String,
) -> Result<(), AppError> {
    set_project_member(org_id, project_id, user_id, role, true).await
}

#[server(prefix = "/api/console", endpoint = "change_project_member_role")]
pub async fn change_project_member_role(
    org_id: String,
    project_id: String,
    user_id: String,
    role: String,
) -> Result<(), AppError> {
    set_project_member(org_id, project_id, user_id, role, false).await
}

/// Removes someone from the project; the keys they own there are revoked.
#[server(prefix = "/api/console", endpoint = "remove_project_member")]
pub async fn remove_project_member(
    org_id: String,
    project_id: String,
    user_id: String,
) -> Result<u64, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectMemberRoles,
        |c| async move {
            let revoked =
                crate::core::ops::remove_project_member(&c.state, &c.actor, &c.scope, &user_id)
                    .await?;
            Ok(revoked)
        },
    )
    .await
}

/// A person who could be added to a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// Organization members (role member) not yet in the project: what a project
/// admin may pick from without seeing the whole organization's roster.
#[server(prefix = "/api/console", endpoint = "project_candidates")]
pub async fn project_candidates(
    org_id: String,
    project_id: String,
) -> Result<Vec<Candidate>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::AddProjectMembers,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let rows = crate::core::projects::candidates(&mut conn, &c.scope).await?;
            Ok(rows
                .into_iter()
                .map(|(user_id, email, name)| Candidate {
                    user_id,
                    email,
                    name,
                })
                .collect())
        },
    )
    .await
}
