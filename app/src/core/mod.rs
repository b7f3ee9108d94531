//! The server-only domain: storage, identity, organizations, members, audit.
//! Plain functions over a database connection, callable without HTTP.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod catalogue;
pub mod changes;
pub mod db;
pub mod domain;
pub mod forwarded;
pub mod identity;
pub mod invitations;
pub mod keys;
pub mod limits;
pub mod litellm;
pub mod mcp;
pub mod members;
pub mod net;
pub mod ops;
pub mod orgs;
pub mod projects;
pub mod prompts;
pub mod providers;
pub mod provisioning;
pub mod scim;
pub mod state;
pub mod templates;
pub mod usage;
pub mod users;
pub mod virtual_models;

/// Milliseconds since the Unix epoch, the one clock every table uses.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
