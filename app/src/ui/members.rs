//! Organization members: the list, roles, removal, and invitations.

use leptos::prelude::*;

use super::{error_of, loaded, org_param, RowAction, Shell, Table};
use crate::api::members::{
    list_invitations, list_members, list_role_templates, ChangeMemberRole, DeleteRoleTemplate,
    InviteMember, InviteMembers, RemoveMember, RevokeInvitation, SaveRoleTemplate,
};
use crate::format::format_time;
use crate::policy::OrgRole;

fn role_options(selected: OrgRole) -> impl IntoView {
    OrgRole::ALL
        .into_iter()
        .map(|r| view! { <option value=r.as_str() selected=r == selected>{r.label()}</option> })
        .collect_view()
}

/// How a member joined, as the table says it.
fn joined_via_label(via: &str) -> &'static str {
    match via {
        "invitation" => "Invitation",
        "oidc" => "Single sign-on (OIDC)",
        "saml" => "Single sign-on (SAML)",
        "scim" => "SCIM",
        _ => "Password",
    }
}

/// Reads the chosen file's text into `into` (the browser only).
#[cfg(feature = "hydrate")]
fn read_file_into(ev: leptos::ev::Event, into: RwSignal<String>) {
    use wasm_bindgen::JsCast;
    let Some(input) = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
    else {
        return;
    };
    let Some(file) = input.files().and_then(|f| f.get(0)) else {
        return;
    };
    let Ok(reader) = web_sys::FileReader::new() else {
        return;
    };
    let done = reader.clone();
    let onload = wasm_bindgen::closure::Closure::once_into_js(move || {
        if let Some(text) = done.result().ok().and_then(|v| v.as_string()) {
            into.set(text);
        }
    });
    reader.set_onload(Some(onload.unchecked_ref()));
    let _ = reader.read_as_text(&file);
}

#[component]
pub fn MembersPage() -> impl IntoView {
    let org_id = org_param();
    let invite = ServerAction::<InviteMember>::new();
    let revoke = ServerAction::<RevokeInvitation>::new();
    let change = ServerAction::<ChangeMemberRole>::new();
    let remove = ServerAction::<RemoveMember>::new();
    let members = Resource::new(
        move || (org_id.get(), change.version().get(), remove.version().get()),
        |(id, _, _)| list_members(id),
    );
    let invitations = Resource::new(
        move || {
            (
                org_id.get(),
                invite.version().get(),
                revoke.version().get(),
                change.version().get(),
            )
        },
        |(id, _, _, _)| list_invitations(id),
    );
    let copied = RwSignal::new(false);
    let bulk = ServerAction::<InviteMembers>::new();
    let save_template = ServerAction::<SaveRoleTemplate>::new();
    let delete_template = ServerAction::<DeleteRoleTemplate>::new();
    let templates = Resource::new(
        move || {
            (
                org_id.get(),
                save_template.version().get(),
                delete_template.version().get(),
            )
        },
        |(id, _, _)| list_role_templates(id),
    );
    let bulk_text = RwSignal::new(String::new());
    let on_file = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        read_file_into(ev, bulk_text);
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    let template_options = move || {
        templates
            .get()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .map(|t| view! { <option value=t.id.clone()>{format!("{} ({})", t.name, t.role.label())}</option> })
            .collect_view()
    };
    view! {
        <Shell org_id=org_id>
            <h1>"Members"</h1>
            <section class="card">
                <h2>"Invite someone"</h2>
                <ActionForm action=invite>
                    <input type="hidden" name="org_id" value=move || org_id.get()/>
                    <div class="row">
                        <label>"Email"<input name="email" type="email" required data-testid="invite-email"/></label>
                        <label>"Role"<select name="role" data-testid="invite-role">{role_options(OrgRole::Member)}</select></label>
                        <button type="submit">"Create invitation link"</button>
                    </div>
                </ActionForm>
                {move || match invite.value().get() {
                    Some(Ok(created)) => {
                        let link = created.link.clone();
                        Some(view! {
                            <div class="reveal" role="status">
                                <p>"Send this link to "<strong>{created.invitation.email.clone()}</strong>
                                   ". It is shown only now and works once, until "{format_time(created.invitation.expires_at)}"."</p>
                                <code data-testid="invite-link">{created.link.clone()}</code>
                                <button type="button" on:click=move |_| { super::copy(&link); copied.set(true); }>
                                    {move || if copied.get() { "Copied" } else { "Copy link" }}
                                </button>
                            </div>
                        }.into_any())
                    }
                    Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                    None => None,
                }}
            </section>
            <section class="card">
                <h2>"Invite many at once"</h2>
                <p class="muted">"Paste addresses (one per line, or separated by commas or spaces), or upload a text or CSV file of them. "
                   "One address that is not an email refuses the whole list and names its line; people already members or already invited are skipped."</p>
                <ActionForm action=bulk>
                    <input type="hidden" name="org_id" value=move || org_id.get()/>
                    <label>"Addresses"
                        <textarea name="emails" rows="6" data-testid="bulk-emails"
                            prop:value=move || bulk_text.get()
                            on:input=move |ev| bulk_text.set(event_target_value(&ev))></textarea>
                    </label>
                    <label>"Or upload a file"<input type="file" accept=".txt,.csv,text/plain,text/csv" on:change=on_file data-testid="bulk-file"/></label>
                    <div class="row">
                        <label>"Role"<select name="role" data-testid="bulk-role">{role_options(OrgRole::Member)}</select></label>
                        <label>"Role template (its role wins)"
                            <select name="template_id" data-testid="bulk-template">
                                <option value="">"None"</option>
                                {template_options}
                            </select>
                        </label>
                        <button type="submit" data-testid="bulk-submit" disabled=move || bulk.pending().get()>"Create invitation links"</button>
                    </div>
                </ActionForm>
                {move || match bulk.value().get() {
                    Some(Ok(done)) => Some(view! {
                        <div class="reveal" role="status" data-testid="bulk-result">
                            <p>{format!("{} invitations created; {} skipped. The links are shown only now.", done.created.len(), done.skipped.len())}</p>
                            <textarea readonly rows="6" data-testid="bulk-links">{done.created.iter().map(|c| format!("{}\t{}", c.invitation.email, c.link)).collect::<Vec<_>>().join("\n")}</textarea>
                            {(!done.skipped.is_empty()).then(|| view! {
                                <ul>{done.skipped.iter().map(|(e, why)| view! { <li>{format!("{e}: {why}")}</li> }).collect_view()}</ul>
                            })}
                        </div>
                    }.into_any()),
                    Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                    None => None,
                }}
            </section>
            <section class="card">
                <h2>"Role templates"</h2>
                <p class="muted">"A template is a role and the most a member's own keys get. Invitations, single sign-on connections and SCIM tokens name the template new members join with."</p>
                {loaded(templates, move |list| view! {
                    <Table head=vec!["Name", "Role", "Budget", "Reset", "RPM", "TPM", "Key expiry", ""]>
                        {list.into_iter().map(|t| view! {
                            <tr data-testid=format!("template-{}", t.name)>
                                <td>{t.name.clone()}</td>
                                <td>{t.role.label()}</td>
                                <td>{if t.max_budget.is_empty() { "—".to_owned() } else { t.max_budget.clone() }}</td>
                                <td>{t.budget_reset.clone()}</td>
                                <td>{t.rpm.map_or_else(|| "—".to_owned(), |n| n.to_string())}</td>
                                <td>{t.tpm.map_or_else(|| "—".to_owned(), |n| n.to_string())}</td>
                                <td>{t.expires_in_days.map_or_else(|| "never".to_owned(), |d| format!("{d} days"))}</td>
                                <td><RowAction action=delete_template org_id=org_id.get_untracked() field="template_id" value=t.id.clone() label="Delete"/></td>
                            </tr>
                        }).collect_view()}
                    </Table>
                })}
                <ActionForm action=save_template>
                    <input type="hidden" name="org_id" value=move || org_id.get()/>
                    <input type="hidden" name="template_id" value=""/>
                    <div class="row">
                        <label>"Name"<input name="name" required data-testid="template-name"/></label>
                        <label>"Role"<select name="role">{role_options(OrgRole::Member)}</select></label>
                        <label>"Budget per key ($)"<input name="max_budget" inputmode="decimal" data-testid="template-budget"/></label>
                        <label>"Reset"<select name="budget_reset">
                            <option value="never">"Never"</option><option value="daily">"Daily"</option>
                            <option value="weekly">"Weekly"</option><option value="monthly">"Monthly"</option>
                        </select></label>
                        <label>"RPM"<input name="rpm" inputmode="numeric"/></label>
                        <label>"TPM"<input name="tpm" inputmode="numeric"/></label>
                        <label>"Keys expire after (days)"<input name="expires_in_days" inputmode="numeric"/></label>
                        <button type="submit" data-testid="template-save">"Save template"</button>
                    </div>
                </ActionForm>
                {move || error_of(save_template.value().get()).or_else(|| error_of(delete_template.value().get()))
                    .map(|e| view! { <p class="error" role="alert">{e}</p> })}
            </section>
            {move || error_of(change.value().get()).or_else(|| error_of(remove.value().get())).or_else(|| error_of(revoke.value().get()))
                .map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <section class="card">
                <h2>"People"</h2>
                {loaded(members, move |list| view! {
                        <Table head=vec!["Name", "Email", "Role", "Joined", "Joined through", "Template", ""]>
                            {list.into_iter().map(|m| {
                                let (uid_role, uid_remove) = (m.user_id.clone(), m.user_id.clone());
                                let org_now = org_id.get_untracked();
                                let org_now2 = org_now.clone();
                                view! {
                                <tr data-testid=format!("member-{}", m.email)>
                                    <td>{m.name.clone()}</td>
                                    <td>{m.email.clone()}</td>
                                    <td>
                                        <ActionForm action=change attr:class="inline-form">
                                            <input type="hidden" name="org_id" value=org_now/>
                                            <input type="hidden" name="user_id" value=uid_role/>
                                            <select name="role" aria-label="Role">{role_options(m.role)}</select>
                                            <button type="submit">"Change role"</button>
                                        </ActionForm>
                                    </td>
                                    <td>{format_time(m.joined_at)}</td>
                                    <td>
                                        {joined_via_label(&m.joined_via)}
                                        {m.scim_managed.then(|| view! { " " <span class="badge" title="Its identity provider manages this member through SCIM: deactivating them there removes their access and revokes their keys">"SCIM-managed"</span> })}
                                    </td>
                                    <td>{m.template.clone().unwrap_or_else(|| "—".to_owned())}</td>
                                    <td>
                                        <RowAction action=remove org_id=org_now2 field="user_id" value=uid_remove label="Remove"/>
                                    </td>
                                </tr>
                            }}).collect_view()}
                        </Table>
                    })}
            </section>
            <section class="card">
                <h2>"Pending invitations"</h2>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match invitations.await {
                            Ok(list) if list.is_empty() => view! { <p class="muted">"None."</p> }.into_any(),
                            Ok(list) => view! {
                                <Table head=vec!["Email", "Role", "Expires", ""]>
                                    {list.into_iter().map(|i| view! {
                                        <tr>
                                            <td>{i.email.clone()}</td>
                                            <td>{i.role.label()}</td>
                                            <td>{format_time(i.expires_at)}</td>
                                            <td>
                                                <RowAction action=revoke org_id=org_id.get_untracked() field="invitation_id" value=i.id.clone() label="Revoke"/>
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </Table>
                            }.into_any(),
                            Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Suspense>
            </section>
        </Shell>
    }
}
