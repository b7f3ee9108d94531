//! The integration tests, one binary: the real app on port 0 with a fresh
//! database per test, driven over HTTP (helpers), one module per area.

#![expect(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

#[macro_use]
mod helpers;

mod agents;
mod billing;
mod identity;
mod instances;
mod litellm_as_code;
mod machine;
mod matrix;
mod mcp;
mod operator;
mod overview;
mod projects;
mod prompts;
mod provisioning;
mod proxy;
mod proxy_binary;
mod router_walk;
mod routing;
mod saml;
mod scim;
mod sdk;
mod shared_counters;
mod sso;
