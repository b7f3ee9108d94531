//! An organization's overview: its name, the caller's role, renaming.

use leptos::prelude::*;

use super::{error_of, org_param, Shell};
use crate::api::orgs::{get_org, RenameOrg};
use crate::policy::{allows, Action, Seat};

#[component]
pub fn OrgPage() -> impl IntoView {
    let org_id = org_param();
    let rename = ServerAction::<RenameOrg>::new();
    let org = Resource::new(
        move || (org_id.get(), rename.version().get()),
        |(id, _)| get_org(id),
    );
    view! {
        <Shell org_id=org_id>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match org.await {
                        Ok(o) => {
                            let may_edit = allows(Action::EditOrganization, Seat::at_org(o.role));
                            view! {
                                <h1>{o.name.clone()}</h1>
                                <p>"Your role: "<strong data-testid="my-role">{o.role.label()}</strong></p>
                                {may_edit.then(|| view! {
                                    <section class="card">
                                        <h2>"Rename"</h2>
                                        <ActionForm action=rename>
                                            <input type="hidden" name="org_id" value=o.id.clone()/>
                                            <label>"Name"<input name="name" value=o.name.clone() required/></label>
                                            <button type="submit">"Save"</button>
                                        </ActionForm>
                                        {move || error_of(rename.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                                    </section>
                                })}
                            }.into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Shell>
    }
}
