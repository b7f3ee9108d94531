//! Tollgate's console: the Leptos application (both targets), its server
//! functions, and behind `ssr` the domain core they call.

pub mod api;
pub mod billing_report;
pub mod error;
pub mod format;
pub mod policy;
pub mod ui;
pub mod usage_report;

#[cfg(feature = "ssr")]
pub mod core;

pub use ui::{shell, App};
