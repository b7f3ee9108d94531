//! Virtual models on the catalogue page: their routes for everyone, the
//! form for owners, and how each place has been answering (a place cooling
//! down after failures is out of its routes until the time shown).

use leptos::prelude::*;

use super::{error_of, loaded, Choice, RowAction, Table};
use crate::api::virtual_models::{
    list_virtual_models, route_health, DeleteVirtualModel, SaveVirtualModel,
};
use crate::format::format_time;

#[component]
pub fn VirtualModels(#[prop(into)] org_id: Signal<String>, may_edit: bool) -> impl IntoView {
    let save = ServerAction::<SaveVirtualModel>::new();
    let delete = ServerAction::<DeleteVirtualModel>::new();
    let list = Resource::new(
        move || (org_id.get(), save.version().get(), delete.version().get()),
        |(o, _, _)| list_virtual_models(o),
    );
    let health = Resource::new(move || org_id.get(), route_health);
    view! {
        <section class="card" data-testid="virtual-models">
            <h2>"Virtual models"</h2>
            <p class="muted">
                "Stable names that route over the catalogue. Projects and keys may name them like any model. "
                "A target is tried when the one before it fails before answering; a target that keeps failing is taken out for a cool-down. "
                "With a region, no request ever leaves it. The built-in mock stands in only while no other target can be served."
            </p>
            {move || error_of(save.value().get()).or_else(|| error_of(delete.value().get())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {loaded(list, move |list| view! {
                <Table testid="virtual-model-list" head=vec!["Name", "Strategy", "Region", "Targets", "Description", ""]>
                    {list.into_iter().map(|v| view! {
                        <tr>
                            <td><code>{v.id.clone()}</code></td>
                            <td>{v.strategy.clone()}</td>
                            <td>{if v.region.is_empty() { "any".to_owned() } else { v.region.clone() }}</td>
                            <td><pre>{v.targets.clone()}</pre></td>
                            <td>{v.description.clone()}</td>
                            <td>{may_edit.then(|| view! {
                                <RowAction action=delete org_id=org_id.get_untracked() field="id" value=v.id.clone() label="Remove"/>
                            })}</td>
                        </tr>
                    }).collect_view()}
                </Table>
            })}
            {may_edit.then(|| view! {
                <h3>"Add or change a virtual model"</h3>
                <ActionForm action=save>
                    <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                    <div class="row">
                        <label>"Name (family/name)"<input name="id" required placeholder="smart/balanced"/></label>
                        <Choice label="Strategy" name="strategy" options=&[
                            ("fallback", "fallback: in order"),
                            ("weighted", "weighted: share of traffic"),
                            ("latency", "latency: fastest recently"),
                            ("cost", "cost: cheapest that fits"),
                        ]/>
                        <label>"Region (empty: any)"<input name="region" placeholder="eu"/></label>
                    </div>
                    <label>"Targets, one a line: model [@provider] [weight]"
                        <textarea name="targets" rows="4" required placeholder="openai/gpt-4o-mini @openai-eu 70\nanthropic/claude-3-5-haiku 30"></textarea>
                    </label>
                    <label>"Description"<input name="description"/></label>
                    <button type="submit">"Save virtual model"</button>
                </ActionForm>
            })}
        </section>
        <section class="card" data-testid="route-health">
            <h2>"Health of the places models are served from"</h2>
            <p class="muted">"As this instance has seen them."</p>
            {loaded(health, move |places| if places.is_empty() {
                view! { <p class="muted">"No request has been served yet."</p> }.into_any()
            } else {
                view! {
                    <Table head=vec!["Provider", "Upstream model", "State", "Failures in a row", "Latency", "Answered"]>
                        {places.into_iter().map(|p| view! {
                            <tr>
                                <td><code>{p.provider.clone()}</code></td>
                                <td>{p.upstream.clone()}</td>
                                <td>{match p.cooling_until {
                                    Some(t) => view! { <span class="status revoked" data-testid="cooling">{format!("cooling down until {}", format_time(t))}</span> }.into_any(),
                                    None => view! { <span class="status active">"in service"</span> }.into_any(),
                                }}</td>
                                <td>{p.failures}</td>
                                <td>{p.latency_ms.map(|ms| format!("{ms} ms"))}</td>
                                <td>{p.answered}</td>
                            </tr>
                        }).collect_view()}
                    </Table>
                }.into_any()
            })}
        </section>
    }
}
