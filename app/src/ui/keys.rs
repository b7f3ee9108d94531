//! API keys in the console: the create form, the one-time reveal, the list
//! (search, tag, sort, pages), edit, rotate and revoke; and "My keys".

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{loaded_list, org_param, Flag, Shell, Table};
use crate::api::keys::{
    list_keys, my_keys, CreateKey, KeyIssued, KeyView, RevokeKey, RotateKey, UpdateKey, PAGE_SIZE,
};
use crate::api::projects::ProjectView;
use crate::error::AppError;
use crate::format::{format_time, format_usd};
use crate::policy::{allows, Action};

/// `YYYY-MM-DDTHH:MM` in UTC, what a datetime-local field holds.
fn datetime_local(ms: i64) -> String {
    format_time(ms)
        .trim_end_matches(" UTC")
        .replacen(' ', "T", 1)
}

fn spend(k: &KeyView) -> String {
    match k.budget_micros {
        Some(b) => format!("{} / {}", format_usd(k.spend_micros), format_usd(b)),
        None => format!("{} / no limit", format_usd(k.spend_micros)),
    }
}

/// The key form's fields, named as the server functions take them.
#[component]
fn KeyFields(project_models: Vec<String>, #[prop(optional)] key: Option<KeyView>) -> impl IntoView {
    let k = key.clone();
    let val = move |f: fn(&KeyView) -> String| k.as_ref().map(f).unwrap_or_default();
    let chosen = key.as_ref().map(|k| k.models.clone());
    let reset = key
        .as_ref()
        .map_or_else(|| "never".to_owned(), |k| k.budget_reset.clone());
    let no_logging = key.as_ref().is_some_and(|k| k.no_content_logging);
    view! {
        <label>"Name"<input name="name" required value=val(|k| k.name.clone()) data-testid="key-name"/></label>
        <div class="row">
            <label>"Maximum spend in USD (blank: unlimited)"
                <input name="max_budget" inputmode="decimal" data-testid="key-budget"
                    value=val(|k| k.budget_micros.map(|b| format_usd(b).trim_start_matches('$').to_owned()).unwrap_or_default())/>
            </label>
            <label>"Budget reset"
                <select name="budget_reset" data-testid="key-reset">
                    {["never", "daily", "weekly", "monthly"].into_iter()
                        .map(|r| view! { <option value=r selected=reset == r>{r}</option> }).collect_view()}
                </select>
            </label>
        </div>
        <fieldset>
            <legend>"Models (none ticked: all the project's)"</legend>
            {project_models.into_iter().enumerate().map(|(i, m)| {
                let on = chosen.as_ref().is_some_and(|c| c.contains(&m));
                view! {
                    <label class="inline">
                        <input type="checkbox" name=format!("models[{i}]") value=m.clone() checked=on data-testid=format!("key-model-{m}")/>
                        {m.clone()}
                    </label>
                }
            }).collect_view()}
        </fieldset>
        <div class="row">
            <label>"TPM"<input name="tpm" inputmode="numeric" value=val(|k| k.tpm_limit.map(|n| n.to_string()).unwrap_or_default()) data-testid="key-tpm"/></label>
            <label>"RPM"<input name="rpm" inputmode="numeric" value=val(|k| k.rpm_limit.map(|n| n.to_string()).unwrap_or_default()) data-testid="key-rpm"/></label>
            <label>"Expires (UTC)"<input name="expires_at" type="datetime-local" value=val(|k| k.expires_at.map(datetime_local).unwrap_or_default()) data-testid="key-expiry"/></label>
        </div>
        <Flag name="no_content_logging" label="Disable content logging" checked=no_logging testid="key-no-logging"/>
        <label>"Tags (comma separated)"<input name="tags" value=val(|k| k.tags.join(", ")) data-testid="key-tags"/></label>
    }
}

/// Shows a token once, with a copy button; closing it forgets it.
#[component]
pub(super) fn Reveal(
    name: String,
    token: String,
    on_close: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    let copied = RwSignal::new(false);
    let shown = token.clone();
    view! {
        <div class="modal-backdrop">
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="reveal-title" data-testid="reveal">
                <h2 id="reveal-title">"Your new key: " {name}</h2>
                <p><strong>"Copy it now. It will not be shown again"</strong> " — Tollgate keeps only a hash of it."</p>
                <code data-testid="token">{shown}</code>
                <div class="row">
                    <button type="button" on:click=move |_| { super::copy(&token); copied.set(true); }>
                        {move || if copied.get() { "Copied" } else { "Copy to clipboard" }}
                    </button>
                    <button type="button" class="secondary" on:click=move |_| on_close()>"I have stored it"</button>
                </div>
            </div>
        </div>
    }
}

/// The actions on a project's keys, made by the page that shows them.
#[derive(Clone, Copy)]
pub struct KeyActions {
    pub create: ServerAction<CreateKey>,
    pub rotate: ServerAction<RotateKey>,
    pub revoke: ServerAction<RevokeKey>,
    pub update: ServerAction<UpdateKey>,
}

impl KeyActions {
    pub fn new() -> KeyActions {
        KeyActions {
            create: ServerAction::new(),
            rotate: ServerAction::new(),
            revoke: ServerAction::new(),
            update: ServerAction::new(),
        }
    }

    /// Changes whenever any of them completes.
    pub fn version(&self) -> (usize, usize, usize, usize) {
        (
            self.create.version().get(),
            self.rotate.version().get(),
            self.revoke.version().get(),
            self.update.version().get(),
        )
    }
}

/// One project's keys: create, reveal, list, edit, rotate, revoke. Its two
/// boundaries sit directly under the Shell (see `ProjectPage`).
#[component]
pub fn ProjectKeys(
    org_id: Memo<String>,
    project_id: Memo<String>,
    project: Resource<Result<ProjectView, AppError>>,
    actions: KeyActions,
) -> impl IntoView {
    let KeyActions {
        create,
        rotate,
        revoke,
        update,
    } = actions;
    let query = use_query_map();
    let q = move |k: &str| query.read().get(k).filter(|v| !v.is_empty());
    let keys = Resource::new(
        move || {
            (
                org_id.get(),
                project_id.get(),
                q("search"),
                q("tag"),
                q("sort"),
                q("page").and_then(|n| n.parse().ok()),
                create.version().get(),
                rotate.version().get(),
                revoke.version().get(),
                update.version().get(),
            )
        },
        |(o, p, search, tag, sort, page, ..)| list_keys(o, p, search, tag, sort, page),
    );
    // The token to show: the latest create or rotate, until dismissed.
    let shown = RwSignal::new(None::<KeyIssued>);
    Effect::new(move |_| {
        if let Some(Ok(issued)) = create.value().get() {
            shown.set(Some(issued));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(issued)) = rotate.value().get() {
            shown.set(Some(issued));
        }
    });
    let show_form = RwSignal::new(false);
    view! {
        <section class="card">
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let Ok(p) = project.await else { return ().into_any() };
                    let manages_all = allows(Action::ManageProjectKeys, p.my_seat);
                    view! {
                        <div class="row spread">
                            <h2>{if manages_all { "Keys" } else { "Your keys" }}</h2>
                            <button type="button" on:click=move |_| show_form.update(|s| *s = !*s) data-testid="new-key">"New key"</button>
                        </div>
                        <div class:hidden=move || !show_form.get()>
                            <ActionForm action=create>
                                <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                                <input type="hidden" name="project_id" value=p.id.clone()/>
                                <KeyFields project_models=p.models.clone()/>
                                {manages_all.then(|| view! {
                                    <Flag name="service" label="Service account key: owned by no one, it keeps working when people leave" testid="key-service"/>
                                })}
                                <button type="submit" data-testid="create-key">"Create key"</button>
                            </ActionForm>
                            {move || error_of(create.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        </div>
                    }.into_any()
                })}
            </Transition>
            {move || shown.get().map(|issued| view! { <Reveal name=issued.key.name.clone() token=issued.token.clone() on_close=move || { shown.set(None); show_form.set(false); }/> })}
            {move || error_of(revoke.value().get()).or_else(|| error_of(rotate.value().get())).or_else(|| error_of(update.value().get()))
                .map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let models = match project.await {
                        Ok(p) => p.models,
                        Err(_) => Vec::new(),
                    };
                    match keys.await {
                        Ok(page) => {
                            let pages = (page.total + PAGE_SIZE - 1) / PAGE_SIZE;
                            let (cur, total) = (page.page, page.total);
                            let org = org_id.get_untracked();
                            view! {
                                <KeyFilters search=q("search") tag=q("tag") sort=q("sort")/>
                                <Table testid="key-list" head=vec![
                                    "Name", "Key", "Owner", "Status", "Spend this period", "Next reset", "Expires", "Tags", "",
                                ]>
                                    {page.keys.into_iter().map(|k| view! {
                                        <KeyRow key=k org_id=org.clone() models=models.clone() rotate=rotate revoke=revoke update=update/>
                                    }).collect_view()}
                                </Table>
                                <p class="muted">{format!("{total} {} · page {cur} of {}", if total == 1 { "key" } else { "keys" }, pages.max(1))}</p>
                                <nav class="row">
                                    {(cur > 1).then(|| view! { <a class="button secondary" href=page_link(&query.get_untracked(), cur - 1)>"Previous"</a> })}
                                    {(cur < pages).then(|| view! { <a class="button secondary" href=page_link(&query.get_untracked(), cur + 1)>"Next"</a> })}
                                </nav>
                            }.into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// Search, tag and sort: a plain GET form (submitting reloads the page). It
/// lives inside the list's Suspense: a `<select>` just before a nested
/// Suspense boundary had the streamed list land inside it.
#[component]
fn KeyFilters(search: Option<String>, tag: Option<String>, sort: Option<String>) -> impl IntoView {
    let sort = sort.unwrap_or_else(|| "newest".to_owned());
    view! {
        <form method="get" class="row filters">
            <label>"Search by name"<input name="search" value=search.unwrap_or_default()/></label>
            <label>"Tag"<input name="tag" value=tag.unwrap_or_default()/></label>
            <label>"Sort"
                <select name="sort">
                    {[("newest", "Newest"), ("name", "Name"), ("expiry", "Expiry")].into_iter().map(|(v, l)| view! {
                        <option value=v selected=sort == v>{l}</option>
                    }).collect_view()}
                </select>
            </label>
            <button type="submit">"Apply"</button>
        </form>
    }
}

fn error_of<T>(r: Option<Result<T, AppError>>) -> Option<String> {
    super::error_of(r)
}

fn page_link(query: &leptos_router::params::ParamsMap, page: i64) -> String {
    let mut parts: Vec<String> = ["search", "tag", "sort"]
        .into_iter()
        .filter_map(|k| {
            query
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", super::audit::urlencode(&v)))
        })
        .collect();
    parts.push(format!("page={page}"));
    format!("?{}", parts.join("&"))
}

#[component]
fn KeyRow(
    key: KeyView,
    org_id: String,
    models: Vec<String>,
    rotate: ServerAction<RotateKey>,
    revoke: ServerAction<RevokeKey>,
    update: ServerAction<UpdateKey>,
) -> impl IntoView {
    let active = key.status == "active";
    let (o1, o2, o3, o4) = (org_id.clone(), org_id.clone(), org_id.clone(), org_id);
    let (id1, id2, id3, id4) = (
        key.id.clone(),
        key.id.clone(),
        key.id.clone(),
        key.id.clone(),
    );
    let mcp = key.mcp.clone();
    let edit_key = key.clone();
    view! {
        <tr data-testid=format!("key-{}", key.name)>
            <td>{key.name.clone()}</td>
            <td><code>{key.hint.clone()}</code></td>
            <td>{key.owner.clone().unwrap_or_else(|| "service".to_owned())}</td>
            <td><span class=format!("status {}", key.status) data-testid="key-status">{key.status.clone()}</span></td>
            <td>{spend(&key)}</td>
            <td>{key.next_reset.map(format_time).unwrap_or_else(|| "—".to_owned())}</td>
            <td>{key.expires_at.map(format_time).unwrap_or_else(|| "never".to_owned())}</td>
            <td>{key.tags.join(", ")}</td>
            <td>
                {active.then(|| view! {
                    <details>
                        <summary>"Manage"</summary>
                        <ActionForm action=revoke attr:class="inline-form">
                            <input type="hidden" name="org_id" value=o1/>
                            <input type="hidden" name="key_id" value=id1/>
                            <button type="submit" class="danger" data-testid="revoke">"Revoke"</button>
                        </ActionForm>
                        <ActionForm action=rotate attr:class="inline-form">
                            <input type="hidden" name="org_id" value=o2/>
                            <input type="hidden" name="key_id" value=id2/>
                            <input name="grace_minutes" inputmode="numeric" placeholder="grace minutes" aria-label="Grace period in minutes"/>
                            <button type="submit">"Rotate"</button>
                        </ActionForm>
                        <ActionForm action=update>
                            <input type="hidden" name="org_id" value=o3/>
                            <input type="hidden" name="key_id" value=id3/>
                            <KeyFields project_models=models key=edit_key/>
                            <button type="submit">"Save changes"</button>
                        </ActionForm>
                        <KeyMcp org_id=o4 key_id=id4 current=mcp/>
                    </details>
                })}
            </td>
        </tr>
    }
}

#[component]
pub fn MyKeysPage() -> impl IntoView {
    let org_id = org_param();
    let keys = Resource::new(move || org_id.get(), my_keys);
    view! {
        <Shell org_id=org_id>
            <h1>"My keys"</h1>
            <section class="card">
                {loaded_list(keys, "You have no keys yet. Open a project to create one.", move |list| view! {
                    <Table testid="my-keys" head=vec!["Project", "Name", "Key", "Status", "Spend this period", "Expires"]>
                        {list.into_iter().map(|k| view! {
                            <tr>
                                <td><a href=format!("/orgs/{}/projects/{}", org_id.get_untracked(), k.project_id)>{k.project_name.clone()}</a></td>
                                <td>{k.name.clone()}</td>
                                <td><code>{k.hint.clone()}</code></td>
                                <td>{k.status.clone()}</td>
                                <td>{spend(&k)}</td>
                                <td>{k.expires_at.map(format_time).unwrap_or_else(|| "never".to_owned())}</td>
                            </tr>
                        }).collect_view()}
                    </Table>
                })}
            </section>
        </Shell>
    }
}

/// A key's narrowing of its project's MCP servers and tools.
#[component]
fn KeyMcp(org_id: String, key_id: String, current: Option<String>) -> impl IntoView {
    use crate::api::mcp::SetKeyMcp;
    let set = ServerAction::<SetKeyMcp>::new();
    view! {
        <ActionForm action=set>
            <input type="hidden" name="org_id" value=org_id/>
            <input type="hidden" name="key_id" value=key_id/>
            <label>"MCP servers (blank: the project's; none; or a line per server: server or server: tool, tool)"
                <textarea name="mcp" rows="2" prop:value=current.unwrap_or_default()></textarea>
            </label>
            <button type="submit">"Save MCP access"</button>
            {move || match set.value().get() {
                Some(Ok(())) => Some(view! { <p class="ok" role="status">"Saved."</p> }.into_any()),
                Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                None => None,
            }}
        </ActionForm>
    }
}
