//! LiteLLM-compatible management API: a LiteLLM "team" is a Tollgate
//! project, its "organization" the provisioning key's organization. Field
//! names are LiteLLM's; `team_id` takes a project's id or its name (alias).

/// Declares a LiteLLM request body that refuses unknown fields: its own
/// fields, then the caps that keys and teams share (`models`, `max_budget`,
/// `budget_duration`, `tpm_limit`, `rpm_limit`; `null` clears one).
macro_rules! with_caps {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$f:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$f])* $field: $ty,)*
            models: Option<Vec<String>>,
            #[serde(default, deserialize_with = "crate::machine::input::nullable")]
            max_budget: Option<Option<f64>>,
            #[serde(default, deserialize_with = "crate::machine::input::nullable")]
            budget_duration: Option<Option<String>>,
            #[serde(default, deserialize_with = "crate::machine::input::nullable")]
            tpm_limit: Option<Option<i64>>,
            #[serde(default, deserialize_with = "crate::machine::input::nullable")]
            rpm_limit: Option<Option<i64>>,
        }
    };
}

mod budgets;
mod guardrails;
mod health;
mod keys;
mod models;
mod orgs;
mod people;
mod spend;
mod teams;

use crate::machine::{iso, Routes};
use serde_json::json;
use serde_json::Value;
use tollgate_app::core::keys::KeyRow;
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::projects::Project;
use tollgate_app::format::Usd;

pub fn routes() -> Routes {
    keys::routes()
        .merge(teams::routes())
        .merge(people::routes())
        .merge(spend::routes())
        .merge(budgets::routes())
        .merge(models::routes())
        .merge(orgs::routes())
        .merge(guardrails::routes())
        .merge(health::routes())
}

/// A member as LiteLLM names one: by user id or email, with a role.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    user_id: Option<String>,
    user_email: Option<String>,
    role: Option<String>,
}

/// `member`: one, or a list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Members {
    One(Member),
    Many(Vec<Member>),
}

impl Members {
    fn into_vec(self) -> Vec<Member> {
        match self {
            Members::One(m) => vec![m],
            Members::Many(v) => v,
        }
    }
}

/// LiteLLM's name for a calendar reset.
fn duration_of(reset: &str) -> Value {
    match reset {
        "daily" => json!("1d"),
        "weekly" => json!("7d"),
        "monthly" => json!("1mo"),
        _ => Value::Null,
    }
}

/// The `budget_duration` LiteLLM reads back: as it was written while it
/// still names the stored reset, else the reset's own name.
fn shown_duration(written: Option<&str>, reset: ResetInterval) -> Value {
    match written {
        Some(w)
            if crate::machine::input::reset_of_duration("budget_duration", w).ok()
                == Some(reset) =>
        {
            json!(w)
        }
        _ => duration_of(reset.as_str()),
    }
}

fn key_view(k: &KeyRow) -> Value {
    let models: &[String] = if k.models_follow {
        &[]
    } else {
        &k.limits.caps.models
    };
    json!({
        "token": k.id_hash,
        "key_name": k.hint,
        "key_alias": k.limits.name,
        "team_id": k.project_ref.as_deref().unwrap_or(&k.project_id),
        "team_alias": k.project_name,
        "user_id": k.owner_ref.as_deref().or(k.owner_id.as_deref()),
        "models": models,
        "spend": k.spend.dollars(),
        "max_budget": k.limits.caps.budget.map(Usd::dollars),
        "budget_duration": shown_duration(k.budget_duration.as_deref(), k.limits.caps.budget_reset),
        "budget_id": k.budget_id,
        "expires": k.limits.expires_at.map(iso),
        "tpm_limit": k.limits.caps.tpm_limit,
        "rpm_limit": k.limits.caps.rpm_limit,
        "metadata": k.limits.metadata,
        "tags": k.limits.tags,
        "blocked": k.blocked,
        "key_type": k.kind.as_str(),
        "created_at": iso(k.created_at),
    })
}

/// The team id LiteLLM shows: the caller's, else Tollgate's.
fn team_id_of(p: &Project) -> &str {
    p.external_id.as_deref().unwrap_or(&p.id)
}

fn team_view(p: &Project) -> Value {
    json!({
        "team_id": team_id_of(p),
        "team_alias": p.name,
        // LiteLLM teams belong to no organization unless put in one; a
        // provisioning key's teams are all in its own, so none is shown
        // (a declarative spec without one reads no drift).
        "organization_id": null,
        "models": p.caps.models,
        "max_budget": p.caps.budget.map(Usd::dollars),
        "budget_duration": shown_duration(p.budget_duration.as_deref(), p.caps.budget_reset),
        "budget_id": p.budget_id,
        "blocked": p.blocked_at.is_some(),
        "tpm_limit": p.caps.tpm_limit,
        "rpm_limit": p.caps.rpm_limit,
        "created_at": iso(p.created_at),
    })
}

/// A `budget_duration` change: absent keeps the reset, `null` ends it
/// (never resets), a duration picks the calendar reset it matches.
fn reset_change(
    field: &str,
    change: Option<Option<String>>,
) -> Result<Option<tollgate_app::core::limits::ResetInterval>, crate::machine::ApiError> {
    use tollgate_app::core::limits::ResetInterval;
    change
        .map(|d| {
            d.map_or(Ok(ResetInterval::Never), |d| {
                crate::machine::input::reset_of_duration(field, &d)
            })
        })
        .transpose()
}
