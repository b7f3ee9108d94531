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
    answer(
        async {
            let (state, _, scope) = authorize(&org_id, Action::ViewOrganization).await?;
            let mut conn = state.db.pool.acquire().await?;
            let rows = crate::core::projects::visible(&mut conn, &scope).await?;
            Ok(rows
                .into_iter()
                .map(|(p, role)| ProjectSummary {
                    id: p.id,
                    name: p.name,
                    my_seat: scope.seat().with_project(role),
                })
                .collect())
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "create_project")]
pub async fn create_project(org_id: String, name: String) -> Result<ProjectSummary, AppError> {
    use super::ssr::*;
    use crate::core::audit::Actor;
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) = authorize(&org_id, Action::CreateProject).await?;
            let name = crate::core::domain::name("name", &name, 100)?;
            let actor = Actor::user(&user.id, &user.email);
            let p = crate::core::ops::create_project(&state, &actor, &scope, &name).await?;
            Ok(ProjectSummary {
                id: p.id,
                name: p.name,
                my_seat: Seat::OrgOwner,
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "get_project")]
pub async fn get_project(org_id: String, project_id: String) -> Result<ProjectView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    answer(
        async {
            let (state, _, scope) =
                authorize_project(&org_id, &project_id, Action::ViewProject).await?;
            let mut conn = state.db.pool.acquire().await?;
            let p = crate::core::projects::get(&mut conn, &scope).await?;
            let live_keys =
                crate::core::keys::live_count(&mut conn, &scope, crate::core::now_ms()).await?;
            Ok(ProjectView {
                id: p.id,
                name: p.name,
                models: p.models,
                tpm_limit: p.tpm_limit,
                rpm_limit: p.rpm_limit,
                budget_micros: p.budget.map(crate::format::Usd::micros),
                budget_reset: p.budget_reset.as_str().to_owned(),
                ip_allowlist: p.ip_allowlist,
                content_logging: p.content_logging,
                my_seat: scope.seat(),
                live_keys,
            })
        }
        .await,
    )
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
    use crate::core::audit::Actor;
    use crate::core::limits::{parse_ip_allowlist, parse_rate, ResetInterval};
    use crate::core::projects;
    use crate::format::Usd;
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) =
                authorize_project(&org_id, &project_id, Action::EditProjectSettings).await?;
            let mut models = models.unwrap_or_default();
            models.dedup();
            let settings = projects::Settings {
                name: crate::core::domain::name("name", &name, 100)?,
                models,
                tpm_limit: parse_rate("tpm", &tpm)?,
                rpm_limit: parse_rate("rpm", &rpm)?,
                budget: Usd::parse_optional("max_budget", &max_budget)?,
                budget_reset: ResetInterval::parse("budget_reset", &budget_reset)?,
                ip_allowlist: parse_ip_allowlist("ip_allowlist", &ip_allowlist)?,
                content_logging: super::checkbox("content_logging", content_logging.as_deref())?,
            };
            let actor = Actor::user(&user.id, &user.email);
            crate::core::ops::update_project(&state, &actor, &scope, &settings).await?;
            get_project(org_id, project_id).await
        }
        .await,
    )
}

/// Deletes a project and revokes its keys; `confirm` must repeat its name.
#[server(prefix = "/api/console", endpoint = "delete_project")]
pub async fn delete_project(
    org_id: String,
    project_id: String,
    confirm: String,
) -> Result<i64, AppError> {
    use super::ssr::*;
    use crate::core::audit::Actor;
    use crate::core::projects;
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) =
                authorize_project(&org_id, &project_id, Action::DeleteProject).await?;
            let mut conn = state.db.pool.acquire().await?;
            let p = projects::get(&mut conn, &scope).await?;
            drop(conn);
            if confirm.trim() != p.name {
                return Err(AppError::invalid(
                    "confirm",
                    format!("type the project's name, '{}', to delete it", p.name),
                ));
            }
            let actor = Actor::user(&user.id, &user.email);
            let revoked = crate::core::ops::delete_project(&state, &actor, &scope, &p).await?;
            Ok(revoked)
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "list_project_members")]
pub async fn list_project_members(
    org_id: String,
    project_id: String,
) -> Result<Vec<ProjectMemberView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    answer(
        async {
            let (state, _, scope) =
                authorize_project(&org_id, &project_id, Action::ViewProjectMembers).await?;
            let mut conn = state.db.pool.acquire().await?;
            let rows = crate::core::projects::members(&mut conn, &scope).await?;
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
        }
        .await,
    )
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
    use crate::core::audit::Actor;
    use crate::policy::Action;
    let action = if adding {
        Action::AddProjectMembers
    } else {
        Action::EditProjectMemberRoles
    };
    let (state, user, scope) = authorize_project(&org_id, &project_id, action).await?;
    let role: ProjectRole = role
        .parse()
        .map_err(|e: String| AppError::invalid("role", e))?;
    let actor = Actor::user(&user.id, &user.email);
    crate::core::ops::set_project_member(&state, &actor, &scope, &user_id, role, adding).await
}

/// Adds a member of the organization to the project as admin or member.
#[server(prefix = "/api/console", endpoint = "add_project_member")]
pub async fn add_project_member(
    org_id: String,
    project_id: String,
    user_id: String,
    role: String,
) -> Result<(), AppError> {
    super::ssr::answer(set_project_member(org_id, project_id, user_id, role, true).await)
}

#[server(prefix = "/api/console", endpoint = "change_project_member_role")]
pub async fn change_project_member_role(
    org_id: String,
    project_id: String,
    user_id: String,
    role: String,
) -> Result<(), AppError> {
    super::ssr::answer(set_project_member(org_id, project_id, user_id, role, false).await)
}

/// Removes someone from the project; the keys they own there are revoked.
#[server(prefix = "/api/console", endpoint = "remove_project_member")]
pub async fn remove_project_member(
    org_id: String,
    project_id: String,
    user_id: String,
) -> Result<u64, AppError> {
    use super::ssr::*;
    use crate::core::audit::Actor;
    use crate::policy::Action;
    answer(
        async {
            let (state, user, scope) =
                authorize_project(&org_id, &project_id, Action::EditProjectMemberRoles).await?;
            let actor = Actor::user(&user.id, &user.email);
            let revoked =
                crate::core::ops::remove_project_member(&state, &actor, &scope, &user_id).await?;
            Ok(revoked)
        }
        .await,
    )
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
    answer(
        async {
            let (state, _, scope) =
                authorize_project(&org_id, &project_id, Action::AddProjectMembers).await?;
            let mut conn = state.db.pool.acquire().await?;
            let rows = crate::core::projects::candidates(&mut conn, &scope).await?;
            Ok(rows
                .into_iter()
                .map(|(user_id, email, name)| Candidate {
                    user_id,
                    email,
                    name,
                })
                .collect())
        }
        .await,
    )
}
