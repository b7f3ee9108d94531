//! The permission matrix of DESIGN.md: roles, seats, actions, and one row of
//! grants per action, written as a `match` so that every action has exactly one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A user's role in an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Owner,
    Member,
    Billing,
    Viewer,
}

impl OrgRole {
    pub const ALL: [OrgRole; 4] = [
        OrgRole::Owner,
        OrgRole::Member,
        OrgRole::Billing,
        OrgRole::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Member => "member",
            OrgRole::Billing => "billing",
            OrgRole::Viewer => "viewer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            OrgRole::Owner => "Owner",
            OrgRole::Member => "Member",
            OrgRole::Billing => "Billing manager",
            OrgRole::Viewer => "Viewer",
        }
    }

    /// How many members of an organization may hold this role at once.
    pub fn max_per_org(self) -> Option<usize> {
        match self {
            OrgRole::Owner => Some(5),
            OrgRole::Billing => Some(3),
            OrgRole::Member | OrgRole::Viewer => None,
        }
    }
}

impl std::str::FromStr for OrgRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}': expected owner, member, billing or viewer"))
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's role in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    Admin,
    Member,
}

impl ProjectRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Admin => "admin",
            ProjectRole::Member => "member",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            ProjectRole::Admin => "Project admin",
            ProjectRole::Member => "Project member",
        }
    }
}

impl std::str::FromStr for ProjectRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(ProjectRole::Admin),
            "member" => Ok(ProjectRole::Member),
            _ => Err(format!(
                "unknown project role '{s}': expected admin or member"
            )),
        }
    }
}

/// The columns of the matrix: where a user sits relative to the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Seat {
    OrgOwner,
    ProjectAdmin,
    ProjectMember,
    OrgMemberNoProject,
    BillingManager,
    Viewer,
    /// An organization's provisioning key, calling the machine APIs.
    Provisioning,
    /// An organization's SCIM token, calling `/scim/v2`.
    Scim,
}

impl Seat {
    pub const ALL: [Seat; 8] = [
        Seat::OrgOwner,
        Seat::ProjectAdmin,
        Seat::ProjectMember,
        Seat::OrgMemberNoProject,
        Seat::BillingManager,
        Seat::Viewer,
        Seat::Provisioning,
        Seat::Scim,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Seat::OrgOwner => "Org owner",
            Seat::ProjectAdmin => "Project admin",
            Seat::ProjectMember => "Project member",
            Seat::OrgMemberNoProject => "Org member, no project",
            Seat::BillingManager => "Billing manager",
            Seat::Viewer => "Viewer",
            Seat::Provisioning => "Provisioning key",
            Seat::Scim => "SCIM token",
        }
    }

    /// The seat inside one project: owners sit as owners everywhere, members
    /// by their project role (none: not in the project).
    pub fn in_project(org: OrgRole, project: Option<ProjectRole>) -> Seat {
        Seat::at_org(org).with_project(project)
    }

    /// The seat an organization-level seat takes in a project: only plain
    /// members change, by their project role.
    pub fn with_project(self, project: Option<ProjectRole>) -> Seat {
        match (self, project) {
            (Seat::OrgMemberNoProject, Some(ProjectRole::Admin)) => Seat::ProjectAdmin,
            (Seat::OrgMemberNoProject, Some(ProjectRole::Member)) => Seat::ProjectMember,
            (other, _) => other,
        }
    }

    /// The name a denial uses for this seat.
    pub fn role_name(self) -> &'static str {
        match self {
            Seat::OrgOwner => "owner",
            Seat::ProjectAdmin => "project admin",
            Seat::ProjectMember => "project member",
            Seat::OrgMemberNoProject => "member",
            Seat::BillingManager => "billing",
            Seat::Viewer => "viewer",
            Seat::Provisioning => "provisioning key",
            Seat::Scim => "SCIM token",
        }
    }

    /// The seat of an organization role when acting on the organization itself
    /// (not inside a project).
    pub fn at_org(role: OrgRole) -> Seat {
        match role {
            OrgRole::Owner => Seat::OrgOwner,
            OrgRole::Member => Seat::OrgMemberNoProject,
            OrgRole::Billing => Seat::BillingManager,
            OrgRole::Viewer => Seat::Viewer,
        }
    }

    fn index(self) -> usize {
        match self {
            Seat::OrgOwner => 0,
            Seat::ProjectAdmin => 1,
            Seat::ProjectMember => 2,
            Seat::OrgMemberNoProject => 3,
            Seat::BillingManager => 4,
            Seat::Viewer => 5,
            Seat::Provisioning => 6,
            Seat::Scim => 7,
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grant {
    Yes,
    /// Only within the projects (or keys) the user belongs to or owns.
    Own,
    /// May look, may not change.
    ReadOnly,
    No,
}

impl Grant {
    pub fn label(self) -> &'static str {
        match self {
            Grant::Yes => "yes",
            Grant::Own => "own",
            Grant::ReadOnly => "read-only",
            Grant::No => "no",
        }
    }

    pub fn allows(self) -> bool {
        !matches!(self, Grant::No)
    }
}

/// The rows of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    ViewOrganization,
    EditOrganization,
    ManageOrgMembers,
    ViewAuditLog,
    CreateProject,
    ViewProject,
    EditProjectSettings,
    DeleteProject,
    ViewProjectMembers,
    AddProjectMembers,
    EditProjectMemberRoles,
    ManageOwnKeys,
    ManageProjectKeys,
    ManageAllKeys,
    BillingAndCredits,
    ViewUsage,
    ViewRequestLog,
    ExternalKeys,
    ModelCatalogue,
    VirtualModels,
    McpServers,
    PromptManagement,
    /// SSO connections, enforce-SSO, SCIM tokens, role templates.
    SingleSignOn,
    /// Creating, changing and deprovisioning users and groups (SCIM).
    ProvisionIdentities,
}

use Grant::{No, Own, ReadOnly, Yes};

impl Action {
    /// Every action, in the order the Permissions page lists them.
    pub const ALL: [Action; 24] = [
        Action::ViewOrganization,
        Action::EditOrganization,
        Action::ManageOrgMembers,
        Action::ViewAuditLog,
        Action::CreateProject,
        Action::ViewProject,
        Action::EditProjectSettings,
        Action::DeleteProject,
        Action::ViewProjectMembers,
        Action::AddProjectMembers,
        Action::EditProjectMemberRoles,
        Action::ManageOwnKeys,
        Action::ManageProjectKeys,
        Action::ManageAllKeys,
        Action::BillingAndCredits,
        Action::ViewUsage,
        Action::ViewRequestLog,
        Action::ExternalKeys,
        Action::ModelCatalogue,
        Action::VirtualModels,
        Action::McpServers,
        Action::PromptManagement,
        Action::SingleSignOn,
        Action::ProvisionIdentities,
    ];

    /// The row of the matrix: the grant of each seat, in `Seat::ALL` order
    /// (owner, project admin, project member, member without project,
    /// billing, viewer, provisioning key, SCIM token).
    pub const fn row(self) -> [Grant; 8] {
        match self {
            Action::ViewOrganization => [Yes, Yes, Yes, Yes, Yes, Yes, Yes, No],
            Action::EditOrganization => [Yes, No, No, No, No, No, Yes, No],
            Action::ManageOrgMembers => [Yes, No, No, No, No, No, Yes, No],
            Action::ViewAuditLog => [Yes, No, No, No, No, No, No, No],
            Action::CreateProject => [Yes, No, No, No, No, No, Yes, No],
            Action::ViewProject => [Yes, Own, Own, No, No, No, Yes, No],
            Action::EditProjectSettings => [Yes, Yes, No, No, No, No, Yes, No],
            Action::DeleteProject => [Yes, No, No, No, No, No, Yes, No],
            Action::ViewProjectMembers => [Yes, Yes, No, No, No, No, Yes, No],
            Action::AddProjectMembers => [Yes, Yes, No, No, No, No, Yes, No],
            Action::EditProjectMemberRoles => [Yes, Yes, No, No, No, No, Yes, No],
            Action::ManageOwnKeys => [Yes, Yes, Yes, No, No, No, Yes, No],
            Action::ManageProjectKeys => [Yes, Yes, No, No, No, No, Yes, No],
            Action::ManageAllKeys => [Yes, No, No, No, No, No, Yes, No],
            Action::BillingAndCredits => [Yes, No, No, No, Yes, No, No, No],
            Action::ViewUsage => [Yes, Own, Own, No, Yes, ReadOnly, ReadOnly, No],
            Action::ViewRequestLog => [Yes, Yes, No, No, No, No, No, No],
            Action::ExternalKeys => [Yes, No, No, No, No, No, Yes, No],
            Action::ModelCatalogue => [Yes, No, No, No, No, No, Yes, No],
            Action::VirtualModels => [Yes, No, No, No, No, No, No, No],
            Action::McpServers => [Yes, No, No, No, No, No, No, No],
            Action::PromptManagement => [Yes, No, No, No, No, No, No, No],
            Action::SingleSignOn => [Yes, No, No, No, No, No, No, No],
            Action::ProvisionIdentities => [No, No, No, No, No, No, No, Yes],
        }
    }

    /// The name a denial and the Permissions page use.
    pub fn label(self) -> &'static str {
        match self {
            Action::ViewOrganization => "view organization",
            Action::EditOrganization => "edit organization",
            Action::ManageOrgMembers => "manage organization members",
            Action::ViewAuditLog => "view audit log",
            Action::CreateProject => "create project",
            Action::ViewProject => "view project",
            Action::EditProjectSettings => "edit project settings",
            Action::DeleteProject => "delete project",
            Action::ViewProjectMembers => "view project members",
            Action::AddProjectMembers => "add project members",
            Action::EditProjectMemberRoles => "edit member roles",
            Action::ManageOwnKeys => "create & manage own keys",
            Action::ManageProjectKeys => "manage all keys in a project",
            Action::ManageAllKeys => "manage keys across all projects",
            Action::BillingAndCredits => "billing & credits",
            Action::ViewUsage => "view usage analytics",
            Action::ViewRequestLog => "view request log",
            Action::ExternalKeys => "external keys (BYOK)",
            Action::ModelCatalogue => "model catalogue",
            Action::VirtualModels => "virtual models",
            Action::McpServers => "MCP servers",
            Action::PromptManagement => "prompt management",
            Action::SingleSignOn => "single sign-on & SCIM",
            Action::ProvisionIdentities => "provision users & groups (SCIM)",
        }
    }

    /// Whether acting on a resource of this row changes it (a read-only grant
    /// never covers these).
    pub fn mutates(self) -> bool {
        !matches!(
            self,
            Action::ViewOrganization
                | Action::ViewAuditLog
                | Action::ViewProject
                | Action::ViewProjectMembers
                | Action::ViewUsage
                | Action::ViewRequestLog
        )
    }
}

/// The grant of one cell.
pub fn grant(action: Action, seat: Seat) -> Grant {
    action.row()[seat.index()]
}

/// The whole matrix, row by row, for the Permissions page.
pub fn rows() -> impl Iterator<Item = (Action, [Grant; 8])> {
    Action::ALL.into_iter().map(|a| (a, a.row()))
}

/// Whether a seat may perform an action at all; the console uses it to hide
/// controls, the server to decide.
pub fn allows(action: Action, seat: Seat) -> bool {
    let g = grant(action, seat);
    match g {
        ReadOnly => !action.mutates(),
        other => other.allows(),
    }
}

/// Whether this organization role sees every project (owners) rather than
/// only its own: the "view project" cell is a plain yes.
pub fn sees_all_projects(role: OrgRole) -> bool {
    grant(Action::ViewProject, Seat::at_org(role)) == Grant::Yes
}

/// Whether membership of a project changes anything for this role: owners are
/// admins everywhere already, billing managers and viewers stay out.
pub fn joins_projects(role: OrgRole) -> bool {
    Seat::in_project(role, Some(ProjectRole::Member)) != Seat::at_org(role)
}

/// Whether this role may hold keys at all (inside a project it belongs to).
pub fn may_hold_keys(role: OrgRole) -> bool {
    allows(
        Action::ManageOwnKeys,
        Seat::in_project(role, Some(ProjectRole::Member)),
    )
}
