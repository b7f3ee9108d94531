//! A project's request log: every request's metadata, newest first, paged;
//! the kept bodies of a request on demand (where its key allowed logging).

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::{loaded, org_param, Shell, Table};
use crate::api::usage::{get_request_bodies, list_requests};
use crate::format::{format_time, format_usd};

#[component]
pub fn RequestLogPage() -> impl IntoView {
    let org_id = org_param();
    let params = use_params_map();
    let project_id = Memo::new(move |_| params.read().get("project_id").unwrap_or_default());
    let query = use_query_map();
    let before = move || query.read().get("before").filter(|b| !b.is_empty());
    let page = Resource::new(
        move || (org_id.get(), project_id.get(), before()),
        |(org, project, before)| list_requests(org, project, before),
    );
    let open = RwSignal::new(None::<String>);
    let bodies = Resource::new(
        move || (org_id.get(), project_id.get(), open.get()),
        |(org, project, id)| async move {
            match id {
                Some(id) => Some(get_request_bodies(org, project, id).await),
                None => None,
            }
        },
    );
    view! {
        <Shell org_id=org_id>
            {loaded(page, move |p| {
                    let back = format!("/orgs/{}/projects/{}", org_id.get_untracked(), project_id.get_untracked());
                    view! {
                        <p><a href=back>{format!("← {}", p.project_name)}</a></p>
                        <h1>"Request log"</h1>
                        <Table testid="request-log" head=vec!["Time", "Key", "Model", "Tokens in / out", "Cost", "Status", "Latency", "Body"]>
                            {p.requests.into_iter().map(|r| {
                                let id = r.request_id.clone();
                                view! {
                                    <tr>
                                        <td class="nowrap">{format_time(r.at)}</td>
                                        <td>{r.key}</td>
                                        <td><code>{r.model}</code>{r.stream.then_some(" (stream)")}</td>
                                        <td class="num">{format!("{} / {}", r.tokens_in, r.tokens_out)}</td>
                                        <td class="num">{format_usd(r.cost_micros)}</td>
                                        <td>{r.status}{r.error_code.map(|c| format!(" {c}"))}</td>
                                        <td class="num">{format!("{} ms", r.latency_ms)}</td>
                                        <td>{if r.has_body {
                                            view! { <button class="link" on:click=move |_| open.set(Some(id.clone()))>"Show"</button> }.into_any()
                                        } else {
                                            view! { <span class="muted">"not kept"</span> }.into_any()
                                        }}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                        {p.next.map(|n| view! { <a class="button" href=format!("?before={n}")>"Older requests"</a> })}
                    }.into_any()
                })}
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    bodies.await.map(|b| match b {
                        Ok(b) => view! {
                            <section class="card" data-testid="request-bodies">
                                <h2>"Request"</h2>
                                <pre class="body">{b.request}</pre>
                                <h2>"Response"</h2>
                                <pre class="body">{b.response}</pre>
                                {b.truncated.then(|| view! { <p class="muted">"Cut at the configured size."</p> })}
                            </section>
                        }.into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    })
                })}
            </Suspense>
        </Shell>
    }
}
