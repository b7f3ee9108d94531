//! Who is asking and what they were granted: members, scopes and the
//! authorize functions that alone make a scope from the matrix.

use std::fmt;
use std::ops::Deref;

use super::matrix::{allows, grant, sees_all_projects, Action, Grant, OrgRole, ProjectRole, Seat};

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

/// The matrix's answer for one seat, as a `Result`.
fn check(action: Action, seat: Seat) -> Result<(), Denied> {
    if allows(action, seat) {
        Ok(())
    } else {
        Err(Denied { action, seat })
    }
}

/// A user's membership of an organization, as loaded from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgMember {
    pub user_id: String,
    pub org_id: String,
    pub role: OrgRole,
}

/// The tenant an authorized caller acts in: which organization, who, in which
/// seat. It proves no organization-wide permission, so functions that read or
/// change the whole organization take an [`OrgScope`] instead; what a project
/// or usage grant hands out is only this.
#[derive(Clone, Debug)]
pub struct TenantScope {
    org_id: String,
    actor_id: String,
    /// The seat at the organization level: a role's, or a provisioning key's.
    seat: Seat,
}

impl TenantScope {
    pub fn org_id(&self) -> &str {
        &self.org_id
    }
    pub fn actor_id(&self) -> &str {
        &self.actor_id
    }
    /// The acting user, or `None` for a provisioning key or a SCIM token.
    pub fn user_id(&self) -> Option<&str> {
        (!matches!(self.seat, Seat::Provisioning | Seat::Scim)).then_some(self.actor_id.as_str())
    }
    pub fn seat(&self) -> Seat {
        self.seat
    }
    /// Whether this seat sees every project rather than only its own.
    pub fn sees_all_projects(&self) -> bool {
        grant(Action::ViewProject, self.seat) == Grant::Yes
    }

    fn of_member(member: &OrgMember) -> TenantScope {
        TenantScope {
            org_id: member.org_id.clone(),
            actor_id: member.user_id.clone(),
            seat: Seat::at_org(member.role),
        }
    }
}

/// Proof that `actor` may perform `action` in the whole organization `org_id`.
/// Only [`authorize_org`] and [`authorize_machine`] make one; organization-wide
/// queries take it, so a query that was not authorized for the organization
/// (a project grant included) does not compile.
#[derive(Clone, Debug)]
pub struct OrgScope {
    tenant: TenantScope,
    action: Action,
}

impl OrgScope {
    /// A second action asked of the same seat (one request, two permissions).
    pub fn also(&self, action: Action) -> Result<(), Denied> {
        check(action, self.tenant.seat)
    }

    /// The permission this scope was granted for.
    pub fn action(&self) -> Action {
        self.action
    }

    pub fn tenant(&self) -> &TenantScope {
        &self.tenant
    }
}

/// An organization-wide grant may always be used where only the tenant is
/// needed (never the other way round).
impl Deref for OrgScope {
    type Target = TenantScope;
    fn deref(&self) -> &TenantScope {
        &self.tenant
    }
}

/// The decision for an action on the organization itself.
pub fn authorize_org(member: &OrgMember, action: Action) -> Result<OrgScope, Denied> {
    let tenant = TenantScope::of_member(member);
    check(action, tenant.seat)?;
    Ok(OrgScope { tenant, action })
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
                Grant::Yes | Grant::ReadOnly
            )
    }
}

/// Proof that `actor` may perform `action` in one project.
#[derive(Clone, Debug)]
pub struct ProjectScope {
    org: TenantScope,
    project_id: String,
    seat: Seat,
    action: Action,
}

impl ProjectScope {
    /// The project's organization as a tenant only: a project grant cannot be
    /// spent on an organization-wide query.
    ///
    /// ```compile_fail,E0308
    /// use tollgate_app::policy::{OrgScope, ProjectScope};
    /// // An organization-wide core function takes the org-wide proof.
    /// fn org_wide(_: &OrgScope) {}
    /// fn spend(project: &ProjectScope) {
    ///     org_wide(project.org());
    /// }
    /// ```
    ///
    /// Tenant reads accept it (and an [`OrgScope`] too):
    ///
    /// ```
    /// use tollgate_app::policy::{OrgScope, ProjectScope, TenantScope};
    /// fn in_tenant(_: &TenantScope) {}
    /// fn read(project: &ProjectScope, org: &OrgScope) {
    ///     in_tenant(project.org());
    ///     in_tenant(org);
    /// }
    /// ```
    pub fn org(&self) -> &TenantScope {
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
    /// The permission this scope was granted for.
    pub fn action(&self) -> Action {
        self.action
    }
}

/// The decision for an action inside a project.
pub fn authorize_project(member: &ProjectMember, action: Action) -> Result<ProjectScope, Denied> {
    let seat = member.seat();
    check(action, seat)?;
    Ok(ProjectScope {
        org: TenantScope::of_member(&member.org),
        project_id: member.project_id.clone(),
        seat,
        action,
    })
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
    check(action, seat)?;
    Ok(OrgScope {
        tenant: TenantScope {
            org_id: machine.org_id.clone(),
            actor_id: machine.key_id.clone(),
            seat,
        },
        action,
    })
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
        org: org.tenant,
        project_id: project_id.to_owned(),
        seat: Seat::Provisioning,
        action,
    })
}

/// A SCIM token, as authenticated: it provisions its own organization only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimClient {
    pub token_id: String,
    pub org_id: String,
}

/// The decision for a SCIM token's action on its organization.
pub fn authorize_scim(client: &ScimClient, action: Action) -> Result<OrgScope, Denied> {
    let seat = Seat::Scim;
    check(action, seat)?;
    Ok(OrgScope {
        tenant: TenantScope {
            org_id: client.org_id.clone(),
            actor_id: client.token_id.clone(),
            seat,
        },
        action,
    })
}

/// What of an organization's usage a caller may read: all of it, or the
/// projects they administer whole and their own keys elsewhere.
#[derive(Clone, Debug)]
pub struct UsageScope {
    org: TenantScope,
    whole: bool,
    /// Projects read whole (the caller is their admin).
    projects: Vec<String>,
    /// Projects where only the caller's own keys are read.
    own_keys_in: Vec<String>,
}

impl UsageScope {
    /// The tenant whose usage is read; rows are filtered by [`Self::sees`].
    pub fn org(&self) -> &TenantScope {
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
    let org = TenantScope::of_member(member);
    let at_org = org.seat;
    if matches!(grant(action, at_org), Grant::Yes | Grant::ReadOnly) {
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

/// The decision on a provisioning key changing the role of (or removing) a
/// member who is `role` now: it manages members, but never an owner, so
/// no key can take an organization from its people (owners are changed by
/// owners, in the console).
pub fn authorize_machine_member(machine: &Machine, role: OrgRole) -> Result<OrgScope, Denied> {
    let scope = authorize_machine(machine, Action::ManageOrgMembers)?;
    if sees_all_projects(role) {
        return Err(Denied {
            action: Action::ManageOrgMembers,
            seat: Seat::Provisioning,
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
