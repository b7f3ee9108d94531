//! The model catalogue: everyone in the organization reads it; owners edit it.

use leptos::prelude::*;

use super::{error_of, org_param, RowAction, Shell, Table};
use crate::api::catalogue::{list_models, DeleteModel, UpsertModel};
use crate::api::orgs::get_org;
use crate::format::format_usd;
use crate::policy::{allows, Action, Seat};

#[component]
pub fn ModelsPage() -> impl IntoView {
    let org_id = org_param();
    let upsert = ServerAction::<UpsertModel>::new();
    let delete = ServerAction::<DeleteModel>::new();
    let models = Resource::new(
        move || (org_id.get(), upsert.version().get(), delete.version().get()),
        |(o, _, _)| list_models(o),
    );
    let org = Resource::new(move || org_id.get(), get_org);
    view! {
        <Shell org_id=org_id>
            <h1>"Model catalogue"</h1>
            <p class="muted">"Prices are per million tokens. Projects choose their models from this list."</p>
            {move || error_of(upsert.value().get()).or_else(|| error_of(delete.value().get())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let role = org.await.ok().map(|o| o.role);
                    let may_edit = role.is_some_and(|r| allows(Action::ModelCatalogue, Seat::at_org(r)));
                    let may_virtual = role.is_some_and(|r| allows(Action::VirtualModels, Seat::at_org(r)));
                    let list = models.await.unwrap_or_default();
                    view! {
                        <section class="card">
                            <Table testid="models" head=vec!["Model", "Provider", "Upstream name", "Input", "Output", "Context", "Fallbacks", ""]>
                                {list.into_iter().map(|m| view! {
                                    <tr>
                                        <td><code>{m.id.clone()}</code></td>
                                        <td>{m.provider.clone()}</td>
                                        <td>{m.upstream.clone()}</td>
                                        <td>{format_usd(m.input_price)}</td>
                                        <td>{format_usd(m.output_price)}</td>
                                        <td>{m.context_window}</td>
                                        <td>{m.fallbacks.join(", ")}</td>
                                        <td>{may_edit.then(|| view! {
                                            <RowAction action=delete org_id=org_id.get_untracked() field="id" value=m.id.clone() label="Remove"/>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </Table>
                        </section>
                        {may_edit.then(|| view! {
                            <section class="card">
                                <h2>"Add or change a model"</h2>
                                <ActionForm action=upsert>
                                    <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                                    <div class="row">
                                        <label>"Id (provider/model)"<input name="id" required placeholder="vllm/llama-3.1-8b"/></label>
                                        <label>"Provider"<input name="provider" required placeholder="vllm"/></label>
                                        <label>"Upstream name"<input name="upstream" required/></label>
                                    </div>
                                    <div class="row">
                                        <label>"Input USD / 1M"<input name="input_price" required inputmode="decimal"/></label>
                                        <label>"Output USD / 1M"<input name="output_price" required inputmode="decimal"/></label>
                                        <label>"Context window"<input name="context_window" required inputmode="numeric"/></label>
                                        <label>"Fallbacks (provider:upstream, …)"<input name="fallbacks" placeholder="none"/></label>
                                        <button type="submit">"Save model"</button>
                                    </div>
                                </ActionForm>
                            </section>
                        })}
                        <super::virtual_models::VirtualModels org_id=org_id may_edit=may_virtual/>
                    }
                })}
            </Suspense>
        </Shell>
    }
}
