//! Organization members: the list, roles, removal, and invitations.

use leptos::prelude::*;

use super::{error_of, loaded, org_param, RowAction, Shell, Table};
use crate::api::members::{
    list_invitations, list_members, ChangeMemberRole, InviteMember, RemoveMember, RevokeInvitation,
};
use crate::format::format_time;
use crate::policy::OrgRole;

fn role_options(selected: OrgRole) -> impl IntoView {
    OrgRole::ALL
        .into_iter()
        .map(|r| view! { <option value=r.as_str() selected=r == selected>{r.label()}</option> })
        .collect_view()
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
            {move || error_of(change.value().get()).or_else(|| error_of(remove.value().get())).or_else(|| error_of(revoke.value().get()))
                .map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <section class="card">
                <h2>"People"</h2>
                {loaded(members, move |list| view! {
                        <Table head=vec!["Name", "Email", "Role", "Joined", ""]>
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
