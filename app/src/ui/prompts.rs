//! The Prompts page (owners): the organization's prompt templates, a
//! prompt's version history with its labels and the diff between two
//! versions, and the form that saves the next version.

use leptos::prelude::*;

use super::{error_of, loaded, org_param, RowAction, Shell, Table};
use crate::api::catalogue::list_models;
use crate::api::prompts::{
    diff_prompt_versions, get_prompt, list_prompts, DeletePrompt, PromptView, SavePrompt,
    SetPromptLabel,
};
use crate::api::virtual_models::list_virtual_models;
use crate::format::format_time;

#[component]
pub fn PromptsPage() -> impl IntoView {
    let org_id = org_param();
    let save = ServerAction::<SavePrompt>::new();
    let label = ServerAction::<SetPromptLabel>::new();
    let delete = ServerAction::<DeletePrompt>::new();
    let changed = move || {
        (
            save.version().get(),
            label.version().get(),
            delete.version().get(),
        )
    };
    let list = Resource::new(move || (org_id.get(), changed()), |(o, _)| list_prompts(o));
    // The prompt whose history is open: the one just saved, else the one
    // picked from the list.
    let open = RwSignal::new(None::<String>);
    let form = Fields::default();
    Effect::new(move || {
        if let Some(Ok(s)) = save.value().get() {
            open.set(Some(s.id));
        }
    });
    Effect::new(move || {
        if let Some(Ok(())) = delete.value().get() {
            open.set(None);
        }
    });
    let models = Resource::new(
        move || org_id.get(),
        |o| async move {
            let mut ids: Vec<String> = list_models(o.clone())
                .await
                .map(|l| l.into_iter().map(|m| m.id).collect())
                .unwrap_or_default();
            if let Ok(v) = list_virtual_models(o).await {
                ids.extend(v.into_iter().map(|v| v.id));
            }
            ids
        },
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Prompts"</h1>
            <p class="muted">
                "Named prompt templates. Applications send "<code>"prompt_id"</code>" (and "<code>"prompt_variables"</code>
                ", optionally "<code>"prompt_version"</code>" or "<code>"prompt_label"</code>") to "<code>"/v1/chat/completions"</code>
                "; the template's messages come first, then the request's own. Without a version or label a request gets the version labelled "
                <code>"production"</code>", else the latest. A project's keys use only the prompts its settings allow."
            </p>
            {move || error_of(save.value().get())
                .or_else(|| error_of(label.value().get()))
                .or_else(|| error_of(delete.value().get()))
                .map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <section class="card">
                {loaded(list, move |list| if list.is_empty() {
                    view! { <p class="muted">"No prompt yet."</p> }.into_any()
                } else {
                    view! {
                        <Table testid="prompt-list" head=vec!["Prompt", "Latest", "Labels", "Projects", "Changed", ""]>
                            {list.into_iter().map(|p| {
                                let id = p.id.clone();
                                view! {
                                    <tr>
                                        <td><button type="button" class="link" on:click=move |_| open.set(Some(id.clone()))>{p.id.clone()}</button>
                                            <div class="muted">{p.description.clone()}</div></td>
                                        <td>{format!("v{}", p.latest_version)}</td>
                                        <td>{p.labels.iter().map(|(l, v)| format!("{l} → v{v}")).collect::<Vec<_>>().join(", ")}</td>
                                        <td>{if p.projects.is_empty() { "none".to_owned() } else { p.projects.join(", ") }}</td>
                                        <td>{format_time(p.updated_at)}</td>
                                        <td><RowAction action=delete org_id=org_id.get_untracked() field="id" value=p.id.clone() label="Delete"/></td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                    }.into_any()
                })}
            </section>
            {move || open.get().map(|id| view! { <History org_id=org_id.get() id=id label=label changed=Signal::derive(changed) form=form/> })}
            <section class="card" data-testid="prompt-form">
                <h2>"Save a prompt version"</h2>
                <p class="muted">
                    "Saving a prompt's id again adds its next version (versions never change). One message a block, each starting on a line "
                    <code>"system:"</code>", "<code>"developer:"</code>", "<code>"user:"</code>" or "<code>"assistant:"</code>
                    "; "<code>"{{ name }}"</code>" inserts a variable as the request sends it."
                </p>
                <ActionForm action=save>
                    <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                    <div class="row">
                        <label>"Prompt id"<input name="id" required placeholder="support/triage" prop:value=move || form.id.get() on:input=move |ev| form.id.set(event_target_value(&ev))/></label>
                        <label>"Label this version (optional)"<input name="label" placeholder="production"/></label>
                    </div>
                    <label>"Description"<input name="description" prop:value=move || form.description.get() on:input=move |ev| form.description.set(event_target_value(&ev))/></label>
                    <label>"Messages"
                        <textarea name="messages" rows="8" required placeholder="system: You triage support tickets for {{ company }}.\nuser: {{ ticket }}"
                            prop:value=move || form.messages.get() on:input=move |ev| form.messages.set(event_target_value(&ev))></textarea>
                    </label>
                    <div class="row">
                        <label>"Default model (empty: the request's)"<input name="model" list="prompt-models" placeholder="smart/balanced" prop:value=move || form.model.get() on:input=move |ev| form.model.set(event_target_value(&ev))/></label>
                        <label>"Default parameters (JSON)"<input name="params" placeholder="{\"temperature\": 0.2}" prop:value=move || form.params.get() on:input=move |ev| form.params.set(event_target_value(&ev))/></label>
                    </div>
                    <datalist id="prompt-models">
                        {move || models.get().unwrap_or_default().into_iter().map(|m| view! { <option value=m/> }).collect_view()}
                    </datalist>
                    <label>"Note on this version"<input name="note" placeholder="what changed"/></label>
                    <button type="submit">"Save version"</button>
                </ActionForm>
                {move || save.value().get().and_then(Result::ok).map(|s| view! {
                    <p class="ok" role="status">{if s.new {
                        format!("Saved {} version {}.", s.id, s.version)
                    } else {
                        format!("{} version {} already holds this; no new version.", s.id, s.version)
                    }}</p>
                })}
            </section>
        </Shell>
    }
}

/// The save form's fields, which "Edit" fills from a prompt's newest version.
#[derive(Clone, Copy)]
struct Fields {
    id: RwSignal<String>,
    description: RwSignal<String>,
    messages: RwSignal<String>,
    model: RwSignal<String>,
    params: RwSignal<String>,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            id: RwSignal::new(String::new()),
            description: RwSignal::new(String::new()),
            messages: RwSignal::new(String::new()),
            model: RwSignal::new(String::new()),
            params: RwSignal::new(String::new()),
        }
    }
}

/// One prompt's versions (newest first), its labels, and a diff.
#[component]
fn History(
    org_id: String,
    id: String,
    label: ServerAction<SetPromptLabel>,
    changed: Signal<(usize, usize, usize)>,
    form: Fields,
) -> impl IntoView {
    let (o, i) = (org_id.clone(), id.clone());
    let prompt = Resource::new(
        move || changed.get(),
        move |_| get_prompt(o.clone(), i.clone()),
    );
    view! {
        <section class="card" data-testid="prompt-history">
            <h2>"History of "<code>{id.clone()}</code></h2>
            {loaded(prompt, move |p| view! { <Versions org_id=org_id.clone() p=p label=label form=form/> })}
        </section>
    }
}

#[component]
fn Versions(
    org_id: String,
    p: PromptView,
    label: ServerAction<SetPromptLabel>,
    form: Fields,
) -> impl IntoView {
    let newest = p.versions.first().map_or(0, |v| v.version);
    let from = RwSignal::new((newest - 1).max(1));
    let to = RwSignal::new(newest);
    let (o, id) = (org_id.clone(), p.id.clone());
    let diff = Resource::new(
        move || (from.get(), to.get()),
        move |(f, t)| diff_prompt_versions(o.clone(), id.clone(), f, t),
    );
    let numbers: Vec<i64> = p.versions.iter().map(|v| v.version).collect();
    let rows = p.versions.clone();
    let pick = move |sig: RwSignal<i64>, name: &'static str| {
        let numbers = numbers.clone();
        view! {
            <label>{name}
                <select on:change=move |ev| if let Ok(n) = event_target_value(&ev).parse() { sig.set(n) }>
                    {numbers.iter().map(|n| view! { <option value=n.to_string() selected=*n == sig.get_untracked()>{format!("v{n}")}</option> }).collect_view()}
                </select>
            </label>
        }
    };
    view! {
        <p class="muted">{p.description.clone()}" · used by: "{if p.projects.is_empty() { "no project".to_owned() } else { p.projects.join(", ") }}</p>
        <Table testid="prompt-versions" head=vec!["Version", "Labels", "Model", "Variables", "Note", "Saved"]>
            {rows.into_iter().map(|v| view! {
                <tr>
                    <td>{format!("v{}", v.version)}</td>
                    <td>{v.labels.join(", ")}</td>
                    <td>{v.model.clone().unwrap_or_else(|| "the request's".to_owned())}</td>
                    <td>{v.variables.join(", ")}</td>
                    <td>{v.note.clone()}</td>
                    <td>{format!("{} by {}", format_time(v.created_at), v.created_by)}</td>
                </tr>
            }).collect_view()}
        </Table>
        {p.versions.first().cloned().map(|v| {
            let (id, description, edited) = (p.id.clone(), p.description.clone(), v.clone());
            let edit = move |_| {
                form.id.set(id.clone());
                form.description.set(description.clone());
                form.messages.set(edited.messages.clone());
                form.model.set(edited.model.clone().unwrap_or_default());
                form.params.set(edited.params.clone());
            };
            view! {
            <button type="button" on:click=edit>{format!("Edit v{} as the next version", v.version)}</button>
            <details>
                <summary>{format!("Messages of v{}", v.version)}</summary>
                <pre>{v.messages.clone()}</pre>
                {(!v.params.is_empty()).then(|| view! { <p>"Parameters: "<code>{v.params.clone()}</code></p> })}
            </details>
            }
        })}
        <h3>"Move a label"</h3>
        <ActionForm action=label>
            <input type="hidden" name="org_id" value=org_id.clone()/>
            <input type="hidden" name="id" value=p.id.clone()/>
            <div class="row">
                <label>"Label"<input name="label" required placeholder="production"/></label>
                <label>"Version (empty: remove the label)"<input name="version" inputmode="numeric" value=newest.to_string()/></label>
                <button type="submit">"Set label"</button>
            </div>
        </ActionForm>
        {(p.versions.len() > 1).then(|| view! {
            <h3>"Compare versions"</h3>
            <div class="row">{pick(from, "From")}{pick(to, "To")}</div>
            {loaded(diff, |lines| view! {
                <pre class="diff" data-testid="prompt-diff">
                    {lines.into_iter().map(|l| {
                        let class = match l.tag.as_str() { "+" => "added", "-" => "removed", _ => "same" };
                        view! { <span class=class>{format!("{} {}", l.tag, l.text)}</span> }
                    }).collect_view()}
                </pre>
            })}
        })}
    }
}
