//! Projects: the list, and one project's keys, settings, members and deletion.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::keys::{KeyActions, ProjectKeys};
use super::{
    error_of, go, loaded_kept, loaded_list, org_param, AfterHydration, Flag, Shell, Table,
};
use crate::api::catalogue::list_models;
use crate::api::projects::{
    get_project, list_project_members, list_projects, project_candidates, AddProjectMember,
    ChangeProjectMemberRole, CreateProject, DeleteProject, ProjectView, RemoveProjectMember,
    UpdateProject,
};
use crate::api::virtual_models::list_virtual_models;
use crate::format::format_usd;
use crate::policy::{allows, Action, OrgRole, ProjectRole, Seat};

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let org_id = org_param();
    let create = ServerAction::<CreateProject>::new();
    let projects = Resource::new(
        move || (org_id.get(), create.version().get()),
        |(o, _)| list_projects(o),
    );
    let org = Resource::new(move || org_id.get(), crate::api::orgs::get_org);
    view! {
        <Shell org_id=org_id>
            <h1>"Projects"</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let may_create = org.await.is_ok_and(|o| allows(Action::CreateProject, Seat::at_org(o.role)));
                    may_create.then(|| view! {
                        <section class="card">
                            <h2>"New project"</h2>
                            <ActionForm action=create>
                                <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                                <div class="row">
                                    <label>"Name"<input name="name" required data-testid="project-name"/></label>
                                    <button type="submit">"Create project"</button>
                                </div>
                            </ActionForm>
                            {move || error_of(create.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        </section>
                    })
                })}
            </Suspense>
            <section class="card">
                {loaded_list(projects, "No projects you belong to yet.", move |list| view! {
                    <Table head=vec!["Project", "Your role"]>
                        {list.into_iter().map(|p| view! {
                            <tr>
                                <td><a href=format!("/orgs/{}/projects/{}", org_id.get_untracked(), p.id)>{p.name}</a></td>
                                <td>{p.my_seat.label()}</td>
                            </tr>
                        }).collect_view()}
                    </Table>
                })}
            </section>
        </Shell>
    }
}

fn limit(v: Option<i64>) -> String {
    v.map_or_else(|| "no cap".to_owned(), |n| n.to_string())
}

/// Each section awaits the project in a Suspense of its own, directly under
/// the Shell: a third level of nested Suspense was rendered inline by the
/// server without the markers hydration expects.
#[component]
pub fn ProjectPage() -> impl IntoView {
    let org_id = org_param();
    let params = use_params_map();
    let project_id = Memo::new(move |_| params.read().get("project_id").unwrap_or_default());
    let update = ServerAction::<UpdateProject>::new();
    // The key actions live here so that the project (and its count of working
    // keys, which the delete section shows) is read again after each.
    let key_actions = KeyActions::new();
    let project = Resource::new(
        move || {
            (
                org_id.get(),
                project_id.get(),
                update.version().get(),
                key_actions.version(),
            )
        },
        |(o, p, _, _)| get_project(o, p),
    );
    view! {
        <Shell org_id=org_id>
            {loaded_kept(project, move |p| {
                    let budget = p.budget_micros.map_or_else(|| "no budget".to_owned(), |b| format!("budget {} ({})", format_usd(b), p.budget_reset));
                    view! {
                        <h1 data-testid="project-title">{p.name.clone()}</h1>
                        <p class="muted">
                            "You are " {p.my_seat.label().to_lowercase()} ". Models: " {p.models.join(", ")}
                            ". TPM " {limit(p.tpm_limit)} ", RPM " {limit(p.rpm_limit)} ", " {budget} "."
                        </p>
                        {allows(Action::ViewRequestLog, p.my_seat).then(|| view! {
                            <p><a href=format!("/orgs/{}/projects/{}/requests", org_id.get_untracked(), p.id)>"Request log"</a></p>
                        })}
                    }.into_any()
                })}
            <ProjectKeys org_id=org_id project_id=project_id project=project actions=key_actions/>
            // Drawn in the browser once the page has hydrated: these cards
            // add nothing to what the server renders (nor a resource to what
            // it hands over), so they cannot shift the page's hydration.
            <AfterHydration>
                <SettingsCard org_id=org_id project=project update=update/>
                <ProjectPromptsCard org_id=org_id project_id=project_id/>
                <ProjectMcpCard org_id=org_id project_id=project_id/>
            </AfterHydration>
            <Members org_id=org_id project_id=project_id project=project/>
            <Delete org_id=org_id project=project/>
        </Shell>
    }
}

type ProjectResource = Resource<Result<ProjectView, crate::error::AppError>>;

/// The organization's prompts this project's keys may use (for whoever
/// edits its settings).
#[component]
fn ProjectPromptsCard(org_id: Memo<String>, project_id: Memo<String>) -> impl IntoView {
    use crate::api::prompts::{project_prompts, SetProjectPrompts};
    let set = ServerAction::<SetProjectPrompts>::new();
    // Its own read of the project (not the page's resource, which reloads
    // after every key action): only whoever edits the settings asks.
    let choices = Resource::new(
        move || (org_id.get(), project_id.get(), set.version().get()),
        |(o, id, _)| async move {
            let p = get_project(o.clone(), id.clone()).await.ok()?;
            if !allows(Action::EditProjectSettings, p.my_seat) {
                return None;
            }
            project_prompts(o, id.clone()).await.ok().map(|c| (id, c))
        },
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let Some((project_id, c)) = choices.await else { return ().into_any() };
                view! {
                    <section class="card" data-testid="project-prompts">
                        <h2>"Prompts"</h2>
                        {if c.all.is_empty() {
                            view! { <p class="muted">"The organization has no prompt yet (owners add them on the Prompts page)."</p> }.into_any()
                        } else {
                            view! {
                                <ActionForm action=set>
                                    <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                                    <input type="hidden" name="project_id" value=project_id.clone()/>
                                    <fieldset>
                                        <legend>"Prompts this project's keys may use"</legend>
                                        {c.all.iter().enumerate().map(|(i, id)| view! {
                                            <label class="inline">
                                                <input type="checkbox" name=format!("prompts[{i}]") value=id.clone() checked=c.chosen.contains(id)/>
                                                {id.clone()}
                                            </label>
                                        }).collect_view()}
                                    </fieldset>
                                    <button type="submit">"Save prompts"</button>
                                </ActionForm>
                            }.into_any()
                        }}
                        {move || match set.value().get() {
                            Some(Ok(_)) => Some(view! { <p class="ok" role="status">"Saved."</p> }.into_any()),
                            Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                            None => None,
                        }}
                    </section>
                }.into_any()
            })}
        </Transition>
    }
}

/// The MCP servers (and tools) this project's keys may use (for whoever
/// edits its settings).
#[component]
fn ProjectMcpCard(org_id: Memo<String>, project_id: Memo<String>) -> impl IntoView {
    use crate::api::mcp::{project_mcp, SetProjectMcp};
    let set = ServerAction::<SetProjectMcp>::new();
    let access = Resource::new(
        move || (org_id.get(), project_id.get(), set.version().get()),
        |(o, id, _)| async move {
            let p = get_project(o.clone(), id.clone()).await.ok()?;
            if !allows(Action::EditProjectSettings, p.my_seat) {
                return None;
            }
            project_mcp(o, id.clone()).await.ok().map(|c| (id, c))
        },
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let Some((project_id, c)) = access.await else { return ().into_any() };
                view! {
                    <section class="card" data-testid="project-mcp">
                        <h2>"MCP servers"</h2>
                        {if c.servers.is_empty() {
                            view! { <p class="muted">"The organization has no MCP server yet (owners register them on the MCP servers page)."</p> }.into_any()
                        } else {
                            view! {
                                <p class="muted">"Registered: "{c.servers.join(", ")}". A line per server this project's keys may use: "
                                    <code>"server"</code>" for all the tools it exposes, or "<code>"server: tool_a, tool_b"</code>"."</p>
                                <ActionForm action=set>
                                    <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                                    <input type="hidden" name="project_id" value=project_id.clone()/>
                                    <label>"Servers and tools"
                                        <textarea name="mcp" rows="4" placeholder="github: search_issues" prop:value=c.grants.clone()></textarea>
                                    </label>
                                    <button type="submit">"Save MCP access"</button>
                                </ActionForm>
                            }.into_any()
                        }}
                        {move || match set.value().get() {
                            Some(Ok(_)) => Some(view! { <p class="ok" role="status">"Saved."</p> }.into_any()),
                            Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                            None => None,
                        }}
                    </section>
                }.into_any()
            })}
        </Transition>
    }
}

/// The project's settings, for whoever may edit them. Drawn after
/// hydration: rendered by the server, this card's Transition (over the
/// page's shared project resource and the catalogue) came out with or
/// without its markers depending on which resource was ready first, and a
/// loaded machine saw "expected a marker node" in its models list.
#[component]
fn SettingsCard(
    org_id: Memo<String>,
    project: ProjectResource,
    update: ServerAction<UpdateProject>,
) -> impl IntoView {
    // Virtual models first, then the catalogue's: a project may name either.
    let catalogue = Resource::new(
        move || org_id.get(),
        |org| async move {
            let virtuals = list_virtual_models(org.clone()).await?;
            let models = list_models(org).await?;
            Ok::<_, crate::error::AppError>(
                virtuals
                    .into_iter()
                    .map(|v| (v.id, true))
                    .chain(models.into_iter().map(|m| (m.id, false)))
                    .collect::<Vec<_>>(),
            )
        },
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let (Ok(p), models) = (project.await, catalogue.await) else { return ().into_any() };
                if !allows(Action::EditProjectSettings, p.my_seat) {
                    return ().into_any();
                }
                let models = models.unwrap_or_default();
                view! {
                    <section class="card">
                        <h2>"Settings"</h2>
                        <ActionForm action=update>
                            <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                            <input type="hidden" name="project_id" value=p.id.clone()/>
                            <label>"Name"<input name="name" value=p.name.clone() required/></label>
                            <fieldset>
                                <legend>"Models"</legend>
                                {models.into_iter().enumerate().map(|(i, (id, is_virtual))| {
                                    let on = p.models.contains(&id);
                                    view! {
                                        <label class="inline">
                                            <input type="checkbox" name=format!("models[{i}]") value=id.clone() checked=on/>
                                            {id.clone()}
                                            {is_virtual.then_some(" (virtual)")}
                                        </label>
                                    }
                                }).collect_view()}
                            </fieldset>
                            <div class="row">
                                <label>"TPM cap"<input name="tpm" inputmode="numeric" value=p.tpm_limit.map(|n| n.to_string()).unwrap_or_default() placeholder="no cap"/></label>
                                <label>"RPM cap"<input name="rpm" inputmode="numeric" value=p.rpm_limit.map(|n| n.to_string()).unwrap_or_default() placeholder="no cap"/></label>
                                <label>"Budget (USD)"<input name="max_budget" inputmode="decimal" value=p.budget_micros.map(|b| format_usd(b).trim_start_matches('$').to_owned()).unwrap_or_default() placeholder="no budget"/></label>
                                <label>"Budget resets"
                                    <select name="budget_reset">
                                        {["never", "daily", "weekly", "monthly"].into_iter().map(|r| view! { <option value=r selected=p.budget_reset == r>{r}</option> }).collect_view()}
                                    </select>
                                </label>
                            </div>
                            <label>"IP allowlist (CIDRs, one per line; empty: any address)"
                                <textarea name="ip_allowlist" rows="3">{p.ip_allowlist.join("\n")}</textarea>
                            </label>
                            <Flag name="content_logging" label="Keep request and response bodies (only where the organization allows it; a key can opt out)" checked=p.content_logging/>
                            <button type="submit">"Save settings"</button>
                        </ActionForm>
                        {move || match update.value().get() {
                            Some(Ok(_)) => Some(view! { <p class="ok" role="status">"Saved."</p> }.into_any()),
                            Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                            None => None,
                        }}
                    </section>
                }.into_any()
            })}
        </Transition>
    }
}

/// One Suspense awaits the project, its members and the candidates together.
#[component]
fn Members(
    org_id: Memo<String>,
    project_id: Memo<String>,
    project: ProjectResource,
) -> impl IntoView {
    let add = ServerAction::<AddProjectMember>::new();
    let change = ServerAction::<ChangeProjectMemberRole>::new();
    let remove = ServerAction::<RemoveProjectMember>::new();
    let versions = move || {
        (
            add.version().get(),
            change.version().get(),
            remove.version().get(),
        )
    };
    // Fetched for every seat (a member's console gets a 403 here): reading the
    // project inside these sources made server and client disagree.
    let members = Resource::new(
        move || (org_id.get(), project_id.get(), versions()),
        |(o, p, _)| list_project_members(o, p),
    );
    let candidates = Resource::new(
        move || (org_id.get(), project_id.get(), versions()),
        |(o, p, _)| project_candidates(o, p),
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let Ok(p) = project.await else { return ().into_any() };
                if !allows(Action::ViewProjectMembers, p.my_seat) {
                    return ().into_any();
                }
                let list = members.await.unwrap_or_default();
                let people = if allows(Action::AddProjectMembers, p.my_seat) { candidates.await.ok() } else { None };
                let (o, pid) = (org_id.get_untracked(), p.id.clone());
                let (row_o, row_pid) = (o.clone(), pid.clone());
                view! {
                    <section class="card">
                        <h2>"Project members"</h2>
                        {move || error_of(add.value().get()).or_else(|| error_of(change.value().get())).or_else(|| error_of(remove.value().get()))
                            .map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        <Table head=vec!["Name", "Email", "Role", ""]>
                            {list.into_iter().map(|m| {
                                let (o1, p1, o2, p2) = (row_o.clone(), row_pid.clone(), row_o.clone(), row_pid.clone());
                                let (uid1, uid2) = (m.user_id.clone(), m.user_id.clone());
                                view! {
                                    <tr data-testid=format!("project-member-{}", m.email)>
                                        <td>{m.name.clone()}</td>
                                        <td>{m.email.clone()}</td>
                                        {match (m.org_role, m.role) {
                                            (OrgRole::Owner, _) | (_, None) => view! { <td>"Owner (admin of every project)"</td><td></td> }.into_any(),
                                            (_, Some(role)) => view! {
                                                <td>
                                                    <ActionForm action=change attr:class="inline-form">
                                                        <input type="hidden" name="org_id" value=o1/>
                                                        <input type="hidden" name="project_id" value=p1/>
                                                        <input type="hidden" name="user_id" value=uid1/>
                                                        <select name="role" aria-label="Project role">
                                                            <option value="admin" selected=role == ProjectRole::Admin>"Admin"</option>
                                                            <option value="member" selected=role == ProjectRole::Member>"Member"</option>
                                                        </select>
                                                        <button type="submit">"Change role"</button>
                                                    </ActionForm>
                                                </td>
                                                <td>
                                                    <ActionForm action=remove attr:class="inline-form">
                                                        <input type="hidden" name="org_id" value=o2/>
                                                        <input type="hidden" name="project_id" value=p2/>
                                                        <input type="hidden" name="user_id" value=uid2/>
                                                        <button type="submit" class="danger">"Remove"</button>
                                                    </ActionForm>
                                                </td>
                                            }.into_any(),
                                        }}
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                        {people.map(|people| if people.is_empty() {
                            view! { <p class="muted">"Every member of the organization who can join is in this project."</p> }.into_any()
                        } else { view! {
                            <ActionForm action=add>
                                <input type="hidden" name="org_id" value=o.clone()/>
                                <input type="hidden" name="project_id" value=pid.clone()/>
                                <div class="row">
                                    <label>"Add a member of the organization"
                                        <select name="user_id" data-testid="add-project-member">
                                            {people.into_iter()
                                                .map(|c| view! { <option value=c.user_id>{format!("{} ({})", c.name, c.email)}</option> })
                                                .collect_view()}
                                        </select>
                                    </label>
                                    <label>"As"
                                        <select name="role" data-testid="add-project-role">
                                            <option value="member">"Member"</option>
                                            <option value="admin">"Admin"</option>
                                        </select>
                                    </label>
                                    <button type="submit">"Add to project"</button>
                                </div>
                            </ActionForm>
                        }.into_any() })}
                    </section>
                }.into_any()
            })}
        </Transition>
    }
}

#[component]
fn Delete(org_id: Memo<String>, project: ProjectResource) -> impl IntoView {
    let delete = ServerAction::<DeleteProject>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = delete.value().get() {
            go(&format!("/orgs/{}/projects", org_id.get_untracked()));
        }
    });
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let Ok(p) = project.await else { return ().into_any() };
                if !allows(Action::DeleteProject, p.my_seat) {
                    return ().into_any();
                }
                view! {
                    <section class="card danger-zone">
                        <h2>"Delete project"</h2>
                        <p>"Deleting " <strong>{p.name.clone()}</strong> " revokes its "
                           <strong data-testid="live-keys">{p.live_keys}</strong>
                           {if p.live_keys == 1 { " working key" } else { " working keys" }} " at once. Type the project's name to confirm."</p>
                        <ActionForm action=delete>
                            <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                            <input type="hidden" name="project_id" value=p.id.clone()/>
                            <div class="row">
                                <label>"Project name"<input name="confirm" required autocomplete="off"/></label>
                                <button type="submit" class="danger">"Delete project and revoke its keys"</button>
                            </div>
                        </ActionForm>
                        {move || error_of(delete.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                    </section>
                }.into_any()
            })}
        </Transition>
    }
}
