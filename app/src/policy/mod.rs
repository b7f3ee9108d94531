//! The permission matrix of DESIGN.md and the scopes made from it: `matrix`
//! is the table, `scope` the authorize functions; nothing else decides.

pub mod matrix;
pub mod scope;

pub use matrix::{
    allows, grant, joins_projects, may_hold_keys, rows, sees_all_projects, Action, Grant, OrgRole,
    ProjectRole, Seat,
};
pub use scope::{
    authorize_key, authorize_machine, authorize_machine_member, authorize_machine_project,
    authorize_org, authorize_project, authorize_scim, authorize_usage, Denied, Machine, OrgMember,
    OrgScope, ProjectMember, ProjectScope, ScimClient, TenantScope, UsageScope,
};

#[cfg(test)]
mod tests;
