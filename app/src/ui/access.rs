//! Provisioning keys (owners): automation manages service keys with them
//! through the machine APIs. The token is shown once; keys can be revoked.

use leptos::prelude::*;

use super::keys::Reveal;
use super::{error_of, loaded, org_param, RowAction, Shell, Table};
use crate::api::provisioning::{
    list_provisioning_keys, CreateProvisioningKey, ProvisioningKeyIssued, RevokeProvisioningKey,
};

#[component]
pub fn AccessPage() -> impl IntoView {
    let org_id = org_param();
    let create = ServerAction::<CreateProvisioningKey>::new();
    let revoke = ServerAction::<RevokeProvisioningKey>::new();
    let keys = Resource::new(
        move || (org_id.get(), create.version().get(), revoke.version().get()),
        |(o, _, _)| list_provisioning_keys(o),
    );
    let shown = RwSignal::new(None::<ProvisioningKeyIssued>);
    Effect::new(move |_| {
        if let Some(Ok(issued)) = create.value().get() {
            shown.set(Some(issued));
        }
    });
    view! {
        <Shell org_id=org_id>
            <h1>"Provisioning keys"</h1>
            <p class="muted">"For automation: they manage service keys through the machine APIs of this organization, and can never call models."</p>
            {move || error_of(create.value().get()).or_else(|| error_of(revoke.value().get())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <section class="card">
                <h2>"New provisioning key"</h2>
                <ActionForm action=create>
                    <input type="hidden" name="org_id" value=move || org_id.get()/>
                    <div class="row">
                        <label>"Name"<input name="name" required placeholder="ci-pipeline" data-testid="provisioning-name"/></label>
                        <button type="submit" data-testid="create-provisioning-key">"Create key"</button>
                    </div>
                </ActionForm>
            </section>
            <section class="card" data-testid="machine-apis">
                <h2>"Machine APIs"</h2>
                <p>"Send a provisioning key as " <code>"Authorization: Bearer sk-tgp-…"</code> " to:"</p>
                <ul>
                    <li>"the REST API under " <code>"/api/v1"</code> " (organization, projects, members, keys, usage), described by its "
                        <a href="/api/openapi.json" rel="external" data-testid="openapi-link">"OpenAPI document"</a> ";"</li>
                    <li>"FastRouter-compatible service keys: " <code>"/prod/createServiceKey"</code> ", " <code>"/prod/getServiceKeys"</code> ", "
                        <code>"/prod/updateServiceKey"</code> ", " <code>"/prod/deleteServiceKey"</code> ";"</li>
                    <li>"LiteLLM-compatible management: " <code>"/key/*"</code> ", " <code>"/team/*"</code> ", " <code>"/user/*"</code> ", "
                        <code>"/organization/member_permission_update"</code> ", " <code>"/billing/daily-spend"</code> ", "
                        <code>"/global/spend/report"</code> ", " <code>"/config/update"</code> " (a LiteLLM team is a project here)."</li>
                </ul>
                <p class="muted">"Every change they make is in the audit log under the key's name."</p>
            </section>
            {move || shown.get().map(|issued| view! { <Reveal name=issued.key.name.clone() token=issued.token.clone() on_close=move || shown.set(None)/> })}
            {loaded(keys, move |list| view! {
                    <section class="card">
                        <Table testid="provisioning-keys" head=vec!["Name", "Key", "Created", "Last used", "Status", ""]>
                            {list.into_iter().map(|k| {
                                let active = k.status == "active";
                                view! {
                                    <tr>
                                        <td>{k.name.clone()}</td>
                                        <td><code>{k.hint.clone()}</code></td>
                                        <td>{k.created_at.clone()}</td>
                                        <td>{k.last_used_at.clone().unwrap_or_else(|| "never".to_owned())}</td>
                                        <td>{k.status.clone()}</td>
                                        <td>{active.then(|| view! {
                                            <RowAction action=revoke org_id=org_id.get_untracked() field="key_id" value=k.id.clone() label="Revoke"/>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                    </section>
                })}
        </Shell>
    }
}
