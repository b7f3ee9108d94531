//! Prompt management: saving versions, moving labels, deleting prompts,
//! and the prompts a project may use. Every change is audited and reaches
//! every instance's proxy through the organization's (or the project's)
//! notice.

use serde_json::{json, Value};

use super::{audited, org_notice, project_notice, Audited, Notice};
use crate::core::audit::Actor;
use crate::core::prompts::{self, Draft, MAX_LABELS, MAX_PROMPTS, MAX_VERSIONS};
use crate::core::state::AppState;
use crate::core::{catalogue, orgs, projects};
use crate::error::AppError;
use crate::policy::{OrgScope, ProjectScope};

/// What [`save_prompt`] saves.
pub struct SavePrompt<'a> {
    pub id: &'a str,
    pub description: &'a str,
    pub draft: &'a Draft,
    pub note: &'a str,
    /// A label to point at the saved version (`production`), if any.
    pub label: Option<&'a str>,
}

fn draft_json(d: &Draft) -> Value {
    json!({ "messages": d.messages, "model": d.model, "params": d.params })
}

/// Saves a prompt's next version (the prompt made where it is new); the
/// same content as the latest version makes no new version. Returns the
/// version that holds it, and whether it is new.
pub async fn save_prompt(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    s: &SavePrompt<'_>,
) -> Result<(i64, bool), AppError> {
    let mut op = Audited::begin(state).await?;
    // One version number per save, also with two owners saving at once.
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    if let Some(m) = &s.draft.model {
        if !catalogue::ids(&mut op.tx, scope).await?.contains(m) {
            return Err(AppError::invalid(
                "model",
                format!("'{m}' is not in the organization's catalogue"),
            ));
        }
    }
    if let Some(p) = prompts::get(&mut op.tx, scope, s.id).await? {
        let adds = p.latest().is_none_or(|v| !s.draft.same_as(v));
        if adds && p.versions.len() >= MAX_VERSIONS {
            return Err(AppError::invalid(
                "id",
                format!("'{}' has {MAX_VERSIONS} versions, the most a prompt keeps; delete it or save under a new id", s.id),
            ));
        }
        if let Some(l) = s.label {
            if !p.labels.contains_key(l) && p.labels.len() >= MAX_LABELS {
                return Err(AppError::invalid(
                    "label",
                    format!("a prompt has at most {MAX_LABELS} labels"),
                ));
            }
        }
    } else if prompts::ids(&mut op.tx, scope).await?.len() >= MAX_PROMPTS {
        return Err(AppError::invalid(
            "id",
            format!("an organization keeps at most {MAX_PROMPTS} prompts"),
        ));
    }
    let by = actor.label.as_str();
    let (version, new) = prompts::save(
        &mut op.tx,
        scope,
        s.id,
        s.description,
        s.draft,
        s.note,
        by,
        op.now,
    )
    .await?;
    if let Some(label) = s.label {
        prompts::set_label(&mut op.tx, scope, s.id, label, version, op.now).await?;
    }
    let after = json!({
        "description": s.description, "version": version, "label": s.label,
        "content": draft_json(s.draft),
    });
    let action = if new {
        "prompt.version_saved"
    } else {
        "prompt.updated"
    };
    let change = audited(scope, action, "prompt", s.id, None, Some(after));
    op.finish(actor, change, Some(org_notice(scope))).await?;
    Ok((version, new))
}

/// Points a label at one of the prompt's versions (or removes it: `None`).
pub async fn set_prompt_label(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
    label: &str,
    version: Option<i64>,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let Some(p) = prompts::get(&mut op.tx, scope, id).await? else {
        return Err(AppError::not_found("prompt"));
    };
    let before = match version {
        Some(v) => {
            if p.version(v).is_none() {
                return Err(AppError::invalid(
                    "version",
                    format!("'{id}' has no version {v}"),
                ));
            }
            if !p.labels.contains_key(label) && p.labels.len() >= MAX_LABELS {
                return Err(AppError::invalid(
                    "label",
                    format!("a prompt has at most {MAX_LABELS} labels"),
                ));
            }
            prompts::set_label(&mut op.tx, scope, id, label, v, op.now).await?
        }
        None => {
            let was = prompts::remove_label(&mut op.tx, scope, id, label).await?;
            if was.is_none() {
                return Err(AppError::not_found("label"));
            }
            was
        }
    };
    let change = audited(
        scope,
        "prompt.label_set",
        "prompt",
        id,
        Some(json!({ "label": label, "version": before })),
        Some(json!({ "label": label, "version": version })),
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// Deletes a prompt with every version and label, and takes it out of the
/// projects that listed it (an id made again later is granted anew).
pub async fn delete_prompt(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let [labels, versions, prompt] = prompts::DELETE;
    for sql in [labels, versions] {
        crate::core::db::delete_in_org(&mut op.tx, sql, scope, id).await?;
    }
    if !crate::core::db::delete_in_org(&mut op.tx, prompt, scope, id).await? {
        return Err(AppError::not_found("prompt"));
    }
    let mut freed = Vec::new();
    for p in projects::load_for_proxy(&mut op.tx, Some(scope.org_id()), None).await? {
        if p.prompts.iter().any(|x| x == id) {
            let kept: Vec<String> = p.prompts.iter().filter(|x| *x != id).cloned().collect();
            projects::set_prompts_of(&mut op.tx, &p.id, scope.org_id(), &kept, op.now).await?;
            freed.push(p.name);
        }
    }
    let change = audited(
        scope,
        "prompt.deleted",
        "prompt",
        id,
        Some(json!({ "projects": freed })),
        None,
    );
    // Its projects' entries too: OrgAll reloads them with the organization.
    op.finish(
        actor,
        change,
        Some(Notice::OrgAll(scope.org_id().to_owned())),
    )
    .await
}

/// Sets the prompts a project's keys may use: each one of the
/// organization's.
pub async fn set_project_prompts(
    state: &AppState,
    actor: &Actor,
    scope: &ProjectScope,
    wanted: &[String],
) -> Result<Vec<String>, AppError> {
    let mut op = Audited::begin(state).await?;
    // Locked: a prompt deleted at the same moment is not listed after it.
    orgs::lock(&mut op.tx, scope.org_id()).await?;
    let known = prompts::ids(&mut op.tx, scope.org()).await?;
    if let Some(p) = wanted.iter().find(|p| !known.contains(p)) {
        return Err(AppError::invalid(
            "prompts",
            format!("'{p}' is not one of the organization's prompts"),
        ));
    }
    let mut list = wanted.to_vec();
    list.sort();
    list.dedup();
    let before = projects::get(&mut op.tx, scope).await?.prompts;
    projects::set_prompts(&mut op.tx, scope, &list, op.now).await?;
    let change = audited(
        scope.org(),
        "project.prompts_set",
        "project",
        scope.project_id(),
        Some(json!({ "prompts": before })),
        Some(json!({ "prompts": list })),
    );
    op.finish(actor, change, Some(project_notice(scope)))
        .await?;
    Ok(list)
}
