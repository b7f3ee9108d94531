//! The `projects` and `project_members` tables.

use sqlx::{AnyConnection, Row};

use super::db::{json_list, to_json};
use super::limits::Caps;
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::{OrgRole, OrgScope, ProjectRole, ProjectScope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub caps: Caps,
    pub ip_allowlist: Vec<String>,
    /// Whether request and response bodies may be kept (if the organization
    /// allows it and the key does not opt out).
    pub content_logging: bool,
    /// The prompts (ids) its keys may use; none at first.
    pub prompts: Vec<String>,
    /// The MCP servers (and tools) its keys may use; none at first.
    pub mcp: Vec<super::mcp::Grant>,
    /// The id a machine API caller chose for it (LiteLLM's `team_id`).
    pub external_id: Option<String>,
    /// The `budget_duration` it was given, as written, and the named budget
    /// whose limits it carries.
    pub budget_duration: Option<String>,
    pub budget_id: Option<String>,
    /// Since when its keys are all refused (LiteLLM's `/team/block`).
    pub blocked_at: Option<i64>,
    pub created_at: i64,
}

impl Project {
    /// A new project as it starts: the default models, no caps, no budget.
    pub fn new(id: String, org_id: &str, name: &str, now: i64) -> Project {
        Project {
            id,
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            caps: Caps::open(super::catalogue::default_project_models()),
            ip_allowlist: Vec::new(),
            content_logging: true,
            prompts: Vec::new(),
            mcp: Vec::new(),
            external_id: None,
            budget_duration: None,
            budget_id: None,
            blocked_at: None,
            created_at: now,
        }
    }
}

/// The settings an admin may change.
pub struct Settings {
    pub name: String,
    pub caps: Caps,
    pub ip_allowlist: Vec<String>,
    pub content_logging: bool,
}

/// The columns every read of a project selects.
macro_rules! columns {
    () => {
        "id, org_id, name, models_json, tpm_limit, rpm_limit, budget_micros, budget_reset, \
         ip_allowlist_json, content_logging, prompts_json, mcp_json, external_id, budget_duration, budget_id, blocked_at, created_at"
    };
}

fn project_of(r: &sqlx::any::AnyRow) -> Result<Project, sqlx::Error> {
    Ok(Project {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        caps: super::db::caps(r)?,
        ip_allowlist: json_list(&r.try_get::<String, _>("ip_allowlist_json")?)?,
        content_logging: r.try_get::<i64, _>("content_logging")? != 0,
        prompts: json_list(&r.try_get::<String, _>("prompts_json")?)?,
        mcp: super::mcp::grants_of(&r.try_get::<String, _>("mcp_json")?)?,
        external_id: r.try_get("external_id")?,
        budget_duration: r.try_get("budget_duration")?,
        budget_id: r.try_get("budget_id")?,
        blocked_at: r.try_get("blocked_at")?,
        created_at: r.try_get("created_at")?,
    })
}

fn name_taken(e: sqlx::Error) -> AppError {
    if super::db::is_unique_violation(&e) {
        AppError::invalid(
            "name",
            "a project with this name already exists in the organization",
        )
    } else {
        e.into()
    }
}

pub async fn insert(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    name: &str,
    now: i64,
) -> Result<Project, AppError> {
    let p = Project::new(super::new_id(), scope.org_id(), name, now);
    sqlx::query(
        "INSERT INTO projects (id, org_id, name, models_json, budget_reset, ip_allowlist_json, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'never', '[]', $5, $5)",
    )
    .bind(&p.id)
    .bind(&p.org_id)
    .bind(&p.name)
    .bind(to_json(&p.caps.models))
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(name_taken)?;
    Ok(p)
}

/// The caller's role in a project of `org_id`; `Ok(None)` when the project
/// exists there but they are not in it, `Err(NotFound)` when it does not exist.
pub async fn role_of(
    conn: &mut AnyConnection,
    org_id: &str,
    project_id: &str,
    user_id: &str,
) -> Result<Option<ProjectRole>, AppError> {
    let q = sqlx::query(
        "SELECT pm.role FROM projects p LEFT JOIN project_members pm \
         ON pm.project_id = p.id AND pm.user_id = $3 WHERE p.id = $2 AND p.org_id = $1",
    )
    .bind(org_id)
    .bind(project_id)
    .bind(user_id);
    let row = super::db::row_or_404(q, conn, "project").await?;
    let role: Option<String> = row.try_get("role")?;
    role.map(|r| {
        r.parse()
            .map_err(|e: String| AppError::internal("project role", &e))
    })
    .transpose()
}

pub async fn get(conn: &mut AnyConnection, scope: &ProjectScope) -> Result<Project, AppError> {
    let q = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM projects WHERE id = $1 AND org_id = $2"
    ));
    super::db::one_or_404(super::db::in_project(q, scope), conn, "project", project_of).await
}

/// A project of the scoped organization by its id or by its exact name (the
/// machine APIs accept either). Only for seats that see every project.
pub async fn find(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    reference: &str,
) -> Result<Option<Project>, sqlx::Error> {
    if !scope.sees_all_projects() {
        return Ok(None);
    }
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM projects WHERE org_id = $1 AND (id = $2 OR external_id = $2 OR name = $2) \
         ORDER BY CASE WHEN id = $2 THEN 0 WHEN external_id = $2 THEN 1 ELSE 2 END LIMIT 1"
    ))
    .bind(scope.org_id())
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(project_of).transpose()
}

/// A page of the organization's projects by name (exact `name`, or `id`
/// as Tollgate's or the caller's), for the machine APIs, and their number.
pub async fn page(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    name: Option<&str>,
    id: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Project>, i64), sqlx::Error> {
    macro_rules! filters {
        () => {
            " FROM projects WHERE org_id = $1 AND ($2 = '' OR name = $2) AND ($3 = '' OR id = $3 OR external_id = $3) "
        };
    }
    if !scope.sees_all_projects() {
        return Ok((Vec::new(), 0));
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        filters!(),
        "ORDER BY name, id LIMIT $4 OFFSET $5"
    ))
    .bind(scope.org_id())
    .bind(name.unwrap_or(""))
    .bind(id.unwrap_or(""))
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*)", filters!()))
        .bind(scope.org_id())
        .bind(name.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .fetch_one(&mut *conn)
        .await?;
    Ok((
        rows.iter().map(project_of).collect::<Result<_, _>>()?,
        total,
    ))
}

/// Projects the caller may see: every one for owners, their own for others.
pub async fn visible(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<(Project, Option<ProjectRole>)>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        ", (SELECT role FROM project_members pm WHERE pm.project_id = p.id AND pm.user_id = $2) AS my_role \
         FROM projects p WHERE p.org_id = $1 AND ($3 = 1 OR EXISTS \
         (SELECT 1 FROM project_members pm WHERE pm.project_id = p.id AND pm.user_id = $2)) ORDER BY p.name"
    ))
    .bind(scope.org_id())
    .bind(scope.actor_id())
    .bind(i64::from(scope.sees_all_projects()))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let role: Option<String> = r.try_get("my_role")?;
            Ok((project_of(r)?, role.and_then(|s| s.parse().ok())))
        })
        .collect()
}

pub async fn update(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    s: &Settings,
    now: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE projects SET name = $1, models_json = $2, tpm_limit = $3, rpm_limit = $4, budget_micros = $5, \
         budget_reset = $6, ip_allowlist_json = $7, updated_at = $8, content_logging = $11, budget_id = NULL \
         WHERE id = $9 AND org_id = $10",
    )
    .bind(&s.name)
    .bind(to_json(&s.caps.models))
    .bind(s.caps.tpm_limit)
    .bind(s.caps.rpm_limit)
    .bind(s.caps.budget.map(Usd::micros))
    .bind(s.caps.budget_reset.as_str())
    .bind(to_json(&s.ip_allowlist))
    .bind(now)
    .bind(scope.project_id())
    .bind(scope.org_id())
    .bind(i64::from(s.content_logging))
    .execute(&mut *conn)
    .await
    .map_err(name_taken)?;
    // Keys never exceed their project: lower caps lower the keys above them.
    sqlx::query(
        "UPDATE api_keys SET \
         tpm_limit = CASE WHEN $1 IS NOT NULL AND (tpm_limit IS NULL OR tpm_limit > $1) THEN $1 ELSE tpm_limit END, \
         rpm_limit = CASE WHEN $2 IS NOT NULL AND (rpm_limit IS NULL OR rpm_limit > $2) THEN $2 ELSE rpm_limit END \
         WHERE project_id = $3",
    )
    .bind(s.caps.tpm_limit)
    .bind(s.caps.rpm_limit)
    .bind(scope.project_id())
    .execute(&mut *conn)
    .await?;
    // Keys made without a models list (LiteLLM's) follow the project's.
    sqlx::query("UPDATE api_keys SET models_json = $1 WHERE project_id = $2 AND models_follow = 1")
        .bind(to_json(&s.caps.models))
        .bind(scope.project_id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes a project and with it its keys; returns how many keys were live.
pub async fn delete(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    now: i64,
) -> Result<i64, AppError> {
    let live = super::keys::live_count(conn, scope, now).await?;
    sqlx::query("DELETE FROM projects WHERE id = $1 AND org_id = $2")
        .bind(scope.project_id())
        .bind(scope.org_id())
        .execute(&mut *conn)
        .await?;
    Ok(live)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectMemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub org_role: OrgRole,
    /// `None` for owners, who are admins of every project without a row.
    pub role: Option<ProjectRole>,
}

/// The project's people: its members, and the organization's owners as
/// implicit admins.
pub async fn members(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
) -> Result<Vec<ProjectMemberRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT u.id, u.email, u.name, om.role AS org_role, pm.role AS project_role FROM org_members om \
         JOIN users u ON u.id = om.user_id \
         LEFT JOIN project_members pm ON pm.user_id = om.user_id AND pm.project_id = $2 \
         WHERE om.org_id = $1 AND (om.role = 'owner' OR pm.role IS NOT NULL) ORDER BY u.email",
    )
    .bind(scope.org_id())
    .bind(scope.project_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let org_role: String = r.try_get("org_role")?;
            let role: Option<String> = r.try_get("project_role")?;
            Ok(ProjectMemberRow {
                user_id: r.try_get("id")?,
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                org_role: super::db::text_as::<OrgRole>(&org_role)?,
                role: role.and_then(|s| s.parse().ok()),
            })
        })
        .collect()
}

/// Adds an organization member to the project, or changes their role.
/// Owners are admins already; billing managers and viewers stay out of projects.
/// `org_role` is the user's role in the organization, `None` for a non-member.
pub async fn set_member(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    user_id: &str,
    org_role: Option<OrgRole>,
    role: ProjectRole,
    now: i64,
) -> Result<Option<ProjectRole>, AppError> {
    let org_role = org_role
        .ok_or_else(|| AppError::invalid("user_id", "is not a member of this organization"))?;
    if !crate::policy::joins_projects(org_role) {
        let why = if crate::policy::sees_all_projects(org_role) {
            "organization owners are admins of every project already".to_owned()
        } else {
            format!(
                "a {} has no access to projects; make them a member first",
                org_role.label().to_lowercase()
            )
        };
        return Err(AppError::invalid("user_id", why));
    }
    let before: Option<String> = sqlx::query_scalar(
        "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
    )
    .bind(scope.project_id())
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (project_id, user_id) DO UPDATE SET role = $3",
    )
    .bind(scope.project_id())
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(before.and_then(|s| s.parse().ok()))
}

/// Adds a new member of the organization to the project their invitation
/// named (if it still exists there); nothing for roles that do not join.
pub async fn join_invited(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    org_role: OrgRole,
    (project_id, role): (&str, ProjectRole),
    now: i64,
) -> Result<(), sqlx::Error> {
    if !crate::policy::joins_projects(org_role) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id, role, created_at) \
         SELECT id, $1, $2, $3 FROM projects WHERE id = $4 AND org_id = $5 \
         ON CONFLICT (project_id, user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .bind(project_id)
    .bind(org_id)
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Removes a member from the project; their own keys there are revoked.
/// Returns their role and how many keys were revoked.
pub async fn remove_member(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    user_id: &str,
    now: i64,
) -> Result<(ProjectRole, u64), AppError> {
    let role: Option<String> = sqlx::query_scalar(
        "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2 RETURNING role",
    )
    .bind(scope.project_id())
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let role = role
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AppError::not_found("project member"))?;
    let revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1, blocked = 0 WHERE project_id = $2 AND owner_id = $3 AND (revoked_at IS NULL OR blocked = 1)",
    )
    .bind(now)
    .bind(scope.project_id())
    .bind(user_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((role, revoked))
}

/// When someone leaves an organization: out of its projects, their keys revoked.
pub async fn forget_member(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    user_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM project_members WHERE user_id = $1 AND project_id IN (SELECT id FROM projects WHERE org_id = $2)",
    )
    .bind(user_id)
    .bind(scope.org_id())
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query("UPDATE api_keys SET revoked_at = $1, blocked = 0 WHERE org_id = $2 AND owner_id = $3 AND (revoked_at IS NULL OR blocked = 1)")
        .bind(now)
        .bind(scope.org_id())
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Members of the organization (role member) who are not in the project yet.
pub async fn candidates(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT u.id, u.email, u.name FROM org_members om JOIN users u ON u.id = om.user_id \
         WHERE om.org_id = $1 AND om.role = 'member' AND NOT EXISTS \
         (SELECT 1 FROM project_members pm WHERE pm.project_id = $2 AND pm.user_id = om.user_id) ORDER BY u.email",
    )
    .bind(scope.org_id())
    .bind(scope.project_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("email")?, r.try_get("name")?)))
        .collect()
}

/// Projects as the proxy holds them: all, one organization's, or one.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: Option<&str>,
    project_id: Option<&str>,
) -> Result<Vec<Project>, sqlx::Error> {
    let q = match (org_id, project_id) {
        (_, Some(id)) => sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM projects WHERE id = $1"
        ))
        .bind(id),
        (Some(org), None) => sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM projects WHERE org_id = $1"
        ))
        .bind(org),
        (None, None) => sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM projects WHERE $1 IS NULL"
        ))
        .bind(None::<String>),
    };
    q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(project_of)
        .collect()
}

/// Sets the prompts the project's keys may use.
pub async fn set_prompts(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    prompts: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    set_prompts_of(conn, scope.project_id(), scope.org_id(), prompts, now).await
}

/// [`set_prompts`] for a project the caller found in `org_id` (a prompt
/// deleted from the organization leaves its projects).
pub(crate) async fn set_prompts_of(
    conn: &mut AnyConnection,
    project_id: &str,
    org_id: &str,
    prompts: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projects SET prompts_json = $1, updated_at = $2 WHERE id = $3 AND org_id = $4",
    )
    .bind(to_json(prompts))
    .bind(now)
    .bind(project_id)
    .bind(org_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the MCP servers (and tools) the project's keys may use.
pub async fn set_mcp(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    grants: &[super::mcp::Grant],
    now: i64,
) -> Result<(), sqlx::Error> {
    set_mcp_of(conn, scope.project_id(), scope.org_id(), grants, now).await
}

/// [`set_mcp`] for a project the caller found in `org_id` (a server
/// removed from the organization leaves its projects).
pub(crate) async fn set_mcp_of(
    conn: &mut AnyConnection,
    project_id: &str,
    org_id: &str,
    grants: &[super::mcp::Grant],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projects SET mcp_json = $1, updated_at = $2 WHERE id = $3 AND org_id = $4")
        .bind(super::mcp::grants_json(grants))
        .bind(now)
        .bind(project_id)
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
