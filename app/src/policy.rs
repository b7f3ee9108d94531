//! The permission matrix of DESIGN.md as data, and the one function that reads it.
//! Server functions, REST handlers and the console all ask here; nothing else decides.

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
}

impl Seat {
    pub const ALL: [Seat; 7] = [
        Seat::OrgOwner,
        Seat::ProjectAdmin,
        Seat::ProjectMember,
        Seat::OrgMemberNoProject,
        Seat::BillingManager,
        Seat::Viewer,
        Seat::Provisioning,
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
}

use Grant::{No, Own, ReadOnly, Yes};

/// The matrix: for each action, the grant of each seat, in `Seat::ALL` order
/// (owner, project admin, project member, member without project, billing,
/// viewer, provisioning key).
pub const MATRIX: &[(Action, [Grant; 7])] = &[
    (
        Action::ViewOrganization,
        [Yes, Yes, Yes, Yes, Yes, Yes, Yes],
    ),
    (Action::EditOrganization, [Yes, No, No, No, No, No, Yes]),
    (Action::ManageOrgMembers, [Yes, No, No, No, No, No, Yes]),
    (Action::ViewAuditLog, [Yes, No, No, No, No, No, No]),
    (Action::CreateProject, [Yes, No, No, No, No, No, Yes]),
    (Action::ViewProject, [Yes, Own, Own, No, No, No, Yes]),
    (Action::EditProjectSettings, [Yes, Yes, No, No, No, No, Yes]),
    (Action::DeleteProject, [Yes, No, No, No, No, No, Yes]),
    (Action::ViewProjectMembers, [Yes, Yes, No, No, No, No, Yes]),
    (Action::AddProjectMembers, [Yes, Yes, No, No, No, No, Yes]),
    (
        Action::EditProjectMemberRoles,
        [Yes, Yes, No, No, No, No, Yes],
    ),
    (Action::ManageOwnKeys, [Yes, Yes, Yes, No, No, No, Yes]),
    (Action::ManageProjectKeys, [Yes, Yes, No, No, No, No, Yes]),
    (Action::ManageAllKeys, [Yes, No, No, No, No, No, Yes]),
    (Action::BillingAndCredits, [Yes, No, No, No, Yes, No, No]),
    (
        Action::ViewUsage,
        [Yes, Own, Own, No, Yes, ReadOnly, ReadOnly],
    ),
    (Action::ViewRequestLog, [Yes, Yes, No, No, No, No, No]),
    (Action::ExternalKeys, [Yes, No, No, No, No, No, No]),
    (Action::ModelCatalogue, [Yes, No, No, No, No, No, No]),
    (Action::VirtualModels, [Yes, No, No, No, No, No, No]),
    (Action::McpServers, [Yes, No, No, No, No, No, No]),
    (Action::PromptManagement, [Yes, No, No, No, No, No, No]),
];

impl Action {
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
    MATRIX
        .iter()
        .find(|(a, _)| *a == action)
        .map_or(No, |(_, row)| row[seat.index()])
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

/// A refusal, naming the permission that was missing and the seat asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub action: Action,
    pub seat: Seat,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "your role '{}' lacks the permission '{}'",
            self.seat.role_name(),
            self.action.label()
        )
    }
}

/// A user's membership of an organization, as loaded from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgMember {
    pub user_id: String,
    pub org_id: String,
    pub role: OrgRole,
}

/// Proof that `actor` may perform `action` in organization `org_id`. Only
/// [`authorize_org`] makes one; tenant queries take it, so a query that was
/// not authorized does not compile.
#[derive(Clone, Debug)]
pub struct OrgScope {
    org_id: String,
    actor_id: String,
    /// The seat at the organization level: a role's, or a provisioning key's.
    seat: Seat,
    action: Action,
}

impl OrgScope {
    /// A second action asked of the same seat (one request, two permissions).
    pub fn also(&self, action: Action) -> Result<(), Denied> {
        let seat = self.seat;
        if allows(action, seat) {
            Ok(())
        } else {
            Err(Denied { action, seat })
        }
    }

    pub fn org_id(&self) -> &str {
        &self.org_id
    }
    pub fn actor_id(&self) -> &str {
        &self.actor_id
    }
    /// The acting user, or `None` for a provisioning key.
    pub fn user_id(&self) -> Option<&str> {
        (self.seat != Seat::Provisioning).then_some(self.actor_id.as_str())
    }
    pub fn seat(&self) -> Seat {
        self.seat
    }
    /// Whether this seat sees every project rather than only its own.
    pub fn sees_all_projects(&self) -> bool {
        grant(Action::ViewProject, self.seat) == Grant::Yes
    }
    pub fn action(&self) -> Action {
        self.action
    }
}

/// The decision for an action on the organization itself.
pub fn authorize_org(member: &OrgMember, action: Action) -> Result<OrgScope, Denied> {
    let seat = Seat::at_org(member.role);
    if allows(action, seat) {
        Ok(OrgScope {
            org_id: member.org_id.clone(),
            actor_id: member.user_id.clone(),
            seat,
            action,
        })
    } else {
        Err(Denied { action, seat })
    }
}

/// A user's standing in one project, as loaded from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectMember {
    pub org: OrgMember,
    pub project_id: String,
    pub role: Option<ProjectRole>,
}

impl ProjectMember {
    pub fn seat(&self) -> Seat {
        Seat::in_project(self.org.role, self.role)
    }

    /// Whether the project is visible at all; where not, callers answer 404
    /// so that its name and existence stay unknown.
    pub fn sees_project(&self) -> bool {
        allows(Action::ViewProject, self.seat())
    }

    /// Whether the project's existence is known to this member anyway: seats
    /// that read the whole organization's usage (billing managers, viewers)
    /// see every project's name there, so a refusal names the permission
    /// (403) rather than hiding the project (404).
    pub fn knows_project(&self) -> bool {
        self.sees_project()
            || matches!(
                grant(Action::ViewUsage, Seat::at_org(self.org.role)),
                Yes | ReadOnly
            )
    }
}

/// Proof that `actor` may perform `action` in one project.
#[derive(Clone, Debug)]
pub struct ProjectScope {
    org: OrgScope,
    project_id: String,
    seat: Seat,
}

impl ProjectScope {
    pub fn org(&self) -> &OrgScope {
        &self.org
    }
    pub fn org_id(&self) -> &str {
        &self.org.org_id
    }
    pub fn project_id(&self) -> &str {
        &self.project_id
    }
    pub fn actor_id(&self) -> &str {
        &self.org.actor_id
    }
    pub fn seat(&self) -> Seat {
        self.seat
    }
}

/// The decision for an action inside a project.
pub fn authorize_project(member: &ProjectMember, action: Action) -> Result<ProjectScope, Denied> {
    let seat = member.seat();
    if allows(action, seat) {
        Ok(ProjectScope {
            org: OrgScope {
                org_id: member.org.org_id.clone(),
                actor_id: member.org.user_id.clone(),
                seat: Seat::at_org(member.org.role),
                action,
            },
            project_id: member.project_id.clone(),
            seat,
        })
    } else {
        Err(Denied { action, seat })
    }
}

/// A provisioning key, as authenticated: it acts in its own organization only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub key_id: String,
    pub org_id: String,
}

/// The decision for a provisioning key's action on its organization.
pub fn authorize_machine(machine: &Machine, action: Action) -> Result<OrgScope, Denied> {
    let seat = Seat::Provisioning;
    if allows(action, seat) {
        Ok(OrgScope {
            org_id: machine.org_id.clone(),
            actor_id: machine.key_id.clone(),
            seat,
            action,
        })
    } else {
        Err(Denied { action, seat })
    }
}

/// The decision for a provisioning key's action in one project of its
/// organization (the caller's queries, scoped by both, find the project or 404).
pub fn authorize_machine_project(
    machine: &Machine,
    project_id: &str,
    action: Action,
) -> Result<ProjectScope, Denied> {
    let org = authorize_machine(machine, action)?;
    Ok(ProjectScope {
        org,
        project_id: project_id.to_owned(),
        seat: Seat::Provisioning,
    })
}

/// What of an organization's usage a caller may read: all of it, or the
/// projects they administer whole and their own keys elsewhere.
#[derive(Clone, Debug)]
pub struct UsageScope {
    org: OrgScope,
    whole: bool,
    /// Projects read whole (the caller is their admin).
    projects: Vec<String>,
    /// Projects where only the caller's own keys are read.
    own_keys_in: Vec<String>,
}

impl UsageScope {
    pub fn org(&self) -> &OrgScope {
        &self.org
    }
    /// Whether the whole organization is visible (totals, credits, caps).
    pub fn whole(&self) -> bool {
        self.whole
    }
    /// The acting user, whose own keys are visible.
    pub fn user_id(&self) -> Option<&str> {
        self.org.user_id()
    }
    /// Whether usage of this project through a key owned by `key_owner` is
    /// visible.
    pub fn sees(&self, project_id: &str, key_owner: Option<&str>) -> bool {
        self.whole
            || self.projects.iter().any(|p| p == project_id)
            || (self.own_keys_in.iter().any(|p| p == project_id)
                && key_owner.is_some_and(|o| Some(o) == self.user_id()))
    }
    /// Whether a whole project is visible.
    pub fn sees_project(&self, project_id: &str) -> bool {
        self.whole || self.projects.iter().any(|p| p == project_id)
    }
}

/// The decision on reading usage: seats granted it for the organization read
/// all of it; members read by their seat in each of their `projects` (admins
/// the project, members their own keys); with neither, a denial.
pub fn authorize_usage(
    member: &OrgMember,
    projects: &[(String, ProjectRole)],
) -> Result<UsageScope, Denied> {
    let action = Action::ViewUsage;
    let at_org = Seat::at_org(member.role);
    let org = OrgScope {
        org_id: member.org_id.clone(),
        actor_id: member.user_id.clone(),
        seat: at_org,
        action,
    };
    if matches!(grant(action, at_org), Yes | ReadOnly) {
        return Ok(UsageScope {
            org,
            whole: true,
            projects: Vec::new(),
            own_keys_in: Vec::new(),
        });
    }
    let mut scope = UsageScope {
        org,
        whole: false,
        projects: Vec::new(),
        own_keys_in: Vec::new(),
    };
    for (project, role) in projects {
        let seat = Seat::in_project(member.role, Some(*role));
        if !allows(action, seat) {
            continue;
        }
        if allows(Action::ManageProjectKeys, seat) {
            scope.projects.push(project.clone());
        } else {
            scope.own_keys_in.push(project.clone());
        }
    }
    if scope.projects.is_empty() && scope.own_keys_in.is_empty() {
        return Err(Denied {
            action,
            seat: at_org,
        });
    }
    Ok(scope)
}

/// The decision on one key: project admins and owners manage every key of
/// the project, members only the keys they own.
pub fn authorize_key(scope: &ProjectScope, key_owner: Option<&str>) -> Result<(), Denied> {
    let seat = scope.seat;
    if allows(Action::ManageProjectKeys, seat)
        || (allows(Action::ManageOwnKeys, seat) && key_owner == Some(scope.actor_id()))
    {
        Ok(())
    } else {
        Err(Denied {
            action: Action::ManageProjectKeys,
            seat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: OrgRole) -> OrgMember {
        OrgMember {
            user_id: "u".into(),
            org_id: "o".into(),
            role,
        }
    }

    #[test]
    fn every_action_has_exactly_one_row() {
        let all = [
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
        ];
        for a in all {
            assert_eq!(MATRIX.iter().filter(|(x, _)| *x == a).count(), 1, "{a:?}");
        }
        assert_eq!(MATRIX.len(), all.len());
    }

    #[test]
    fn owners_may_do_everything_and_the_org_only_roles_stay_out_of_keys() {
        for (action, _) in MATRIX {
            assert!(allows(*action, Seat::OrgOwner), "{action:?}");
        }
        for seat in [Seat::BillingManager, Seat::Viewer, Seat::OrgMemberNoProject] {
            for a in [
                Action::ManageOwnKeys,
                Action::ManageProjectKeys,
                Action::CreateProject,
            ] {
                assert!(!allows(a, seat), "{seat:?} {a:?}");
            }
        }
        assert!(allows(Action::BillingAndCredits, Seat::BillingManager));
        assert!(!allows(Action::BillingAndCredits, Seat::Viewer));
        assert!(allows(Action::ViewUsage, Seat::Viewer));
    }

    #[test]
    fn a_denial_names_the_permission_and_the_role() {
        let err = authorize_org(&member(OrgRole::Viewer), Action::ManageOrgMembers)
            .err()
            .map(|d| d.to_string());
        assert_eq!(
            err.as_deref(),
            Some("your role 'viewer' lacks the permission 'manage organization members'")
        );
        let ok = authorize_org(&member(OrgRole::Owner), Action::ManageOrgMembers);
        assert_eq!(ok.map(|s| s.org_id().to_owned()).ok().as_deref(), Some("o"));
    }

    fn in_project(org: OrgRole, role: Option<ProjectRole>) -> ProjectMember {
        ProjectMember {
            org: member(org),
            project_id: "p".into(),
            role,
        }
    }

    #[test]
    fn project_seats_follow_the_project_role_and_owners_are_admins_everywhere() {
        assert_eq!(in_project(OrgRole::Owner, None).seat(), Seat::OrgOwner);
        assert_eq!(
            in_project(OrgRole::Member, Some(ProjectRole::Admin)).seat(),
            Seat::ProjectAdmin
        );
        assert_eq!(
            in_project(OrgRole::Member, None).seat(),
            Seat::OrgMemberNoProject
        );
        assert!(!in_project(OrgRole::Member, None).sees_project());
        assert!(!in_project(OrgRole::Billing, None).sees_project());
        assert!(in_project(OrgRole::Owner, None).sees_project());
    }

    #[test]
    fn project_questions_follow_from_the_table() {
        assert!(sees_all_projects(OrgRole::Owner));
        assert!(!sees_all_projects(OrgRole::Member));
        assert!(joins_projects(OrgRole::Member));
        for r in [OrgRole::Owner, OrgRole::Billing, OrgRole::Viewer] {
            assert!(!joins_projects(r), "{r}");
        }
        assert!(may_hold_keys(OrgRole::Owner) && may_hold_keys(OrgRole::Member));
        assert!(!may_hold_keys(OrgRole::Billing) && !may_hold_keys(OrgRole::Viewer));
    }

    #[test]
    fn members_manage_only_their_own_keys() {
        let scope = authorize_project(
            &in_project(OrgRole::Member, Some(ProjectRole::Member)),
            Action::ManageOwnKeys,
        );
        let Ok(scope) = scope else {
            panic!("a project member manages own keys")
        };
        assert!(authorize_key(&scope, Some("u")).is_ok());
        let err = authorize_key(&scope, Some("someone-else"))
            .err()
            .map(|d| d.to_string());
        assert_eq!(
            err.as_deref(),
            Some("your role 'project member' lacks the permission 'manage all keys in a project'")
        );
        let admin = authorize_project(
            &in_project(OrgRole::Member, Some(ProjectRole::Admin)),
            Action::ManageOwnKeys,
        );
        let Ok(admin) = admin else {
            panic!("a project admin manages keys")
        };
        assert!(authorize_key(&admin, Some("someone-else")).is_ok());
        assert!(authorize_key(&admin, None).is_ok(), "service keys too");
    }

    #[test]
    fn a_provisioning_key_manages_keys_projects_and_people_but_not_money_or_providers() {
        for a in [
            Action::ManageAllKeys,
            Action::CreateProject,
            Action::DeleteProject,
            Action::ManageOrgMembers,
        ] {
            assert!(allows(a, Seat::Provisioning), "{a:?}");
        }
        for a in [
            Action::BillingAndCredits,
            Action::ExternalKeys,
            Action::ModelCatalogue,
            Action::ViewAuditLog,
        ] {
            assert!(!allows(a, Seat::Provisioning), "{a:?}");
        }
        assert_eq!(
            grant(Action::ViewUsage, Seat::Provisioning),
            Grant::ReadOnly
        );
        let m = Machine {
            key_id: "pk".into(),
            org_id: "o".into(),
        };
        let scope = authorize_machine(&m, Action::ManageAllKeys).ok();
        assert_eq!(scope.as_ref().and_then(|s| s.user_id()), None, "not a user");
        assert_eq!(scope.map(|s| s.org_id().to_owned()).as_deref(), Some("o"));
        let denied = authorize_machine(&m, Action::ExternalKeys)
            .err()
            .map(|d| d.to_string());
        assert_eq!(
            denied.as_deref(),
            Some("your role 'provisioning key' lacks the permission 'external keys (BYOK)'")
        );
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        assert_eq!("billing".parse::<OrgRole>(), Ok(OrgRole::Billing));
        assert!("admin".parse::<OrgRole>().is_err());
    }
}
