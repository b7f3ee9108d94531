//! Prompt management: owners keep the organization's prompt templates
//! (versions, labels, the diff between two versions); project admins choose
//! which of them their project's keys may use.

// Not `expect`: the server macro makes a client stub on the wasm target and a
// handler on the server, and only some of them trip the lint.
#![allow(
    clippy::too_many_arguments,
    reason = "a server function takes one argument per form field"
)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A prompt in the list: its latest version, labels and the projects that
/// may use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptSummaryView {
    pub id: String,
    pub description: String,
    pub latest_version: i64,
    /// Label and version, by label.
    pub labels: Vec<(String, i64)>,
    pub projects: Vec<String>,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptVersionView {
    pub version: i64,
    /// The messages as the form writes them (`role: text`).
    pub messages: String,
    pub model: Option<String>,
    /// The default parameters as JSON (empty: none).
    pub params: String,
    /// The variables the messages use.
    pub variables: Vec<String>,
    pub note: String,
    pub created_by: String,
    pub created_at: i64,
    pub labels: Vec<String>,
}

/// A prompt with its whole history, newest version first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptView {
    pub id: String,
    pub description: String,
    pub versions: Vec<PromptVersionView>,
    pub labels: Vec<(String, i64)>,
    pub projects: Vec<String>,
}

/// What saving made: the version that holds the content, and whether it
/// is new (the same content as the latest version makes none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPrompt {
    pub id: String,
    pub version: i64,
    pub new: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLineView {
    /// `+`, `-` or ` `.
    pub tag: String,
    pub text: String,
}

/// The organization's prompts and which a project uses, for its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectPromptsView {
    pub all: Vec<String>,
    pub chosen: Vec<String>,
}

#[cfg(feature = "ssr")]
mod views {
    use super::*;
    use crate::core::projects::Project;
    use crate::core::prompts::{self, Compiled, Prompt};

    pub fn users_of(id: &str, projects: &[Project]) -> Vec<String> {
        let mut names: Vec<String> = projects
            .iter()
            .filter(|p| p.prompts.iter().any(|x| x == id))
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn summary(p: Prompt, projects: &[Project]) -> PromptSummaryView {
        PromptSummaryView {
            latest_version: p.latest().map_or(0, |v| v.version),
            labels: p.labels.into_iter().collect(),
            projects: users_of(&p.id, projects),
            id: p.id,
            description: p.description,
            updated_at: p.updated_at,
        }
    }

    pub fn full(p: Prompt, projects: &[Project]) -> PromptView {
        let labels: Vec<(String, i64)> = p.labels.clone().into_iter().collect();
        let versions = p
            .versions
            .into_iter()
            .rev()
            .map(|v| {
                let params = if v.params.is_empty() {
                    String::new()
                } else {
                    serde_json::Value::Object(v.params.clone()).to_string()
                };
                let on = labels
                    .iter()
                    .filter(|(_, n)| *n == v.version)
                    .map(|(l, _)| l.clone())
                    .collect();
                let c = Compiled::new(v);
                let v = c.version;
                PromptVersionView {
                    version: v.version,
                    messages: prompts::messages_text(&v.messages),
                    model: v.model,
                    params,
                    variables: c.variables.into_iter().collect(),
                    note: v.note,
                    created_by: v.created_by,
                    created_at: v.created_at,
                    labels: on,
                }
            })
            .collect();
        PromptView {
            projects: users_of(&p.id, projects),
            id: p.id,
            description: p.description,
            versions,
            labels,
        }
    }
}

#[server(prefix = "/api/console", endpoint = "list_prompts")]
pub async fn list_prompts(org_id: String) -> Result<Vec<PromptSummaryView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let list = crate::core::prompts::list(&mut conn, &c.scope).await?;
        let projects =
            crate::core::projects::load_for_proxy(&mut conn, Some(c.scope.org_id()), None).await?;
        Ok(list
            .into_iter()
            .map(|p| views::summary(p, &projects))
            .collect())
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "get_prompt")]
pub async fn get_prompt(org_id: String, id: String) -> Result<PromptView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let p = crate::core::prompts::get(&mut conn, &c.scope, &id)
            .await?
            .ok_or_else(|| AppError::not_found("prompt"))?;
        let projects =
            crate::core::projects::load_for_proxy(&mut conn, Some(c.scope.org_id()), None).await?;
        Ok(views::full(p, &projects))
    })
    .await
}

/// Saves a prompt's next version (making the prompt where it is new).
/// `messages`: one message a block, each starting on a line `role: text`;
/// `model`: empty for the request's own; `params`: a JSON object of default
/// parameters (empty: none); `label`: a label to point at the saved version.
#[server(prefix = "/api/console", endpoint = "save_prompt")]
pub async fn save_prompt(
    org_id: String,
    id: String,
    description: Option<String>,
    messages: String,
    model: Option<String>,
    params: Option<String>,
    note: Option<String>,
    label: Option<String>,
) -> Result<SavedPrompt, AppError> {
    use super::ssr::*;
    use crate::core::ops::SavePrompt;
    use crate::core::prompts::{self, Draft};
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        let id = prompts::parse_id("id", &id)?;
        let description = description.unwrap_or_default();
        let description = description.trim();
        if description.chars().count() > 300 {
            return Err(AppError::invalid("description", "at most 300 characters"));
        }
        let note = note.unwrap_or_default();
        let note = note.trim();
        if note.chars().count() > 300 {
            return Err(AppError::invalid("note", "at most 300 characters"));
        }
        let draft = Draft {
            messages: prompts::parse_messages("messages", &messages)?,
            model: model.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()),
            params: prompts::parse_params("params", params.as_deref().unwrap_or(""))?,
        };
        let label = label
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| prompts::parse_label("label", l))
            .transpose()?;
        let (version, new) = crate::core::ops::save_prompt(
            &c.state,
            &c.actor,
            &c.scope,
            &SavePrompt {
                id: &id,
                description,
                draft: &draft,
                note,
                label: label.as_deref(),
            },
        )
        .await?;
        Ok(SavedPrompt { id, version, new })
    })
    .await
}

/// Points `label` at `version` of the prompt; an empty `version` removes
/// the label.
#[server(prefix = "/api/console", endpoint = "set_prompt_label")]
pub async fn set_prompt_label(
    org_id: String,
    id: String,
    label: String,
    version: String,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::prompts;
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        let label = prompts::parse_label("label", &label)?;
        let version = match version.trim() {
            "" => None,
            v => Some(
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| AppError::invalid("version", "a version number, such as 3"))?,
            ),
        };
        crate::core::ops::set_prompt_label(&c.state, &c.actor, &c.scope, &id, &label, version).await
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "delete_prompt")]
pub async fn delete_prompt(org_id: String, id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        crate::core::ops::delete_prompt(&c.state, &c.actor, &c.scope, &id).await
    })
    .await
}

/// The line diff from version `from` to version `to` of a prompt: its
/// messages, model and parameters.
#[server(prefix = "/api/console", endpoint = "diff_prompt_versions")]
pub async fn diff_prompt_versions(
    org_id: String,
    id: String,
    from: i64,
    to: i64,
) -> Result<Vec<DiffLineView>, AppError> {
    use super::ssr::*;
    use crate::core::prompts;
    use crate::policy::Action;
    in_org(&org_id, Action::PromptManagement, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let p = prompts::get(&mut conn, &c.scope, &id)
            .await?
            .ok_or_else(|| AppError::not_found("prompt"))?;
        let text = |n: i64, field: &str| {
            p.version(n)
                .map(prompts::version_text)
                .ok_or_else(|| AppError::invalid(field, format!("'{id}' has no version {n}")))
        };
        let (old, new) = (text(from, "from")?, text(to, "to")?);
        Ok(prompts::diff(&old, &new)
            .into_iter()
            .map(|l| DiffLineView {
                tag: l.tag.to_string(),
                text: l.text,
            })
            .collect())
    })
    .await
}

/// The organization's prompt ids and the ones the project's keys may use:
/// for whoever edits the project's settings.
#[server(prefix = "/api/console", endpoint = "project_prompts")]
pub async fn project_prompts(
    org_id: String,
    project_id: String,
) -> Result<ProjectPromptsView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectSettings,
        |c| async move {
            let mut conn = c.state.db.pool.acquire().await?;
            let all = crate::core::prompts::ids(&mut conn, c.scope.org()).await?;
            let chosen = crate::core::projects::get(&mut conn, &c.scope)
                .await?
                .prompts;
            Ok(ProjectPromptsView { all, chosen })
        },
    )
    .await
}

/// Sets the prompts the project's keys may use (none checked: none).
#[server(prefix = "/api/console", endpoint = "set_project_prompts")]
pub async fn set_project_prompts(
    org_id: String,
    project_id: String,
    prompts: Option<Vec<String>>,
) -> Result<ProjectPromptsView, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::EditProjectSettings,
        |c| async move {
            let chosen = crate::core::ops::set_project_prompts(
                &c.state,
                &c.actor,
                &c.scope,
                &prompts.unwrap_or_default(),
            )
            .await?;
            let mut conn = c.state.db.pool.acquire().await?;
            let all = crate::core::prompts::ids(&mut conn, c.scope.org()).await?;
            Ok(ProjectPromptsView { all, chosen })
        },
    )
    .await
}
