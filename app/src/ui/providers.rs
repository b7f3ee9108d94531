//! Upstream providers (owners only): where the catalogue's models are served
//! from. A provider's API key is written once and never shown again.

use leptos::prelude::*;

use super::{error_of, loaded, org_param, Choice, RowAction, Shell, Table};
use crate::api::providers::{list_providers, DeleteProvider, UpsertProvider};

#[component]
pub fn ProvidersPage() -> impl IntoView {
    let org_id = org_param();
    let upsert = ServerAction::<UpsertProvider>::new();
    let delete = ServerAction::<DeleteProvider>::new();
    let providers = Resource::new(
        move || (org_id.get(), upsert.version().get(), delete.version().get()),
        |(o, _, _)| list_providers(o),
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Providers"</h1>
            <p class="muted">"A model in the catalogue names its provider. Keys are encrypted with the server secret and never shown again."</p>
            {move || error_of(upsert.value().get()).or_else(|| error_of(delete.value().get())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {loaded(providers, move |list| view! {
                    <section class="card">
                        <Table testid="providers" head=vec!["Name", "Kind", "Region", "Base URL", "Key", "Latency", ""]>
                            {list.into_iter().map(|p| view! {
                                <tr>
                                    <td><code>{p.name.clone()}</code></td>
                                    <td>{p.kind.clone()}</td>
                                    <td>{if p.kind == "mock" { "any (in process)".to_owned() } else if p.region.is_empty() { "unstated".to_owned() } else { p.region.clone() }}</td>
                                    <td>{if p.base_url.is_empty() { "built in".to_owned() } else { p.base_url.clone() }}</td>
                                    <td>{p.key_hint.clone().unwrap_or_else(|| "none".to_owned())}</td>
                                    <td>{(p.kind == "mock").then(|| format!("{} ms", p.latency_ms))}</td>
                                    <td>
                                        <RowAction action=delete org_id=org_id.get_untracked() field="name" value=p.name.clone() label="Remove"/>
                                    </td>
                                </tr>
                            }).collect_view()}
                        </Table>
                    </section>
                    <section class="card">
                        <h2>"Add or change a provider"</h2>
                        <ActionForm action=upsert>
                            <input type="hidden" name="org_id" value=org_id.get_untracked()/>
                            <div class="row">
                                <label>"Name"<input name="name" required placeholder="openai"/></label>
                                <Choice label="Kind" name="kind" options=&[
                                    ("openai", "OpenAI-compatible (OpenAI, vLLM, Ollama, Together…)"),
                                    ("anthropic", "Anthropic"),
                                    ("mock", "Mock (built in)"),
                                ]/>
                            </div>
                            <div class="row">
                                <label>"Base URL"<input name="base_url" placeholder="https://api.openai.com/v1"/></label>
                                <label>"API key (empty: keep the stored one)"<input name="api_key" type="password" autocomplete="off"/></label>
                                <label>"Mock latency (ms)"<input name="latency_ms" inputmode="numeric" placeholder="0"/></label>
                                <label>"Region (eu, us…; empty: unstated)"<input name="region" placeholder="eu"/></label>
                            </div>
                            <button type="submit">"Save provider"</button>
                        </ActionForm>
                    </section>
                })}
        </Shell>
    }
}
