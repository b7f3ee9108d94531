//! The audit log page: newest first, filtered by actor and action, paged.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{loaded, org_param, Filter, Shell, Table};
use crate::api::audit::list_audit_events;
use crate::format::format_time;

#[component]
pub fn AuditPage() -> impl IntoView {
    let org_id = org_param();
    let query = use_query_map();
    let get = move |k: &str| query.read().get(k).filter(|v| !v.is_empty());
    let page = Resource::new(
        move || {
            (
                org_id.get(),
                get("actor"),
                get("action"),
                get("before").and_then(|b| b.parse::<i64>().ok()),
            )
        },
        |(org, actor, action, before)| list_audit_events(org, actor, action, before),
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Audit log"</h1>
            {loaded(page, move |p| {
                    let actor = get("actor").unwrap_or_default();
                    let action = get("action").unwrap_or_default();
                    let next = p.next_before.map(|b| {
                        format!("?actor={}&action={}&before={b}", urlencode(&actor), urlencode(&action))
                    });
                    view! {
                        <form method="get" class="row filters">
                            <Filter label="Actor" name="actor" any="Anyone" selected=actor.clone()
                                options={p.actors.iter().map(|a| (a.clone(), a.clone())).collect::<Vec<_>>()}/>
                            <Filter label="Action" name="action" any="Any action" selected=action.clone()
                                options={p.actions.iter().map(|a| (a.clone(), a.clone())).collect::<Vec<_>>()}/>
                            <button type="submit">"Filter"</button>
                        </form>
                        <Table testid="audit-table" head=vec!["Time", "Actor", "Action", "Resource", "Before", "After"]>
                            {p.events.into_iter().map(|e| view! {
                                <tr>
                                    <td>{format_time(e.at)}</td>
                                    <td>{e.actor}</td>
                                    <td class="nowrap"><code>{e.action}</code></td>
                                    <td class="audit-resource">{e.resource}</td>
                                    <td class="audit-json"><code>{e.before.unwrap_or_default()}</code></td>
                                    <td class="audit-json"><code>{e.after.unwrap_or_default()}</code></td>
                                </tr>
                            }).collect_view()}
                        </Table>
                        {next.map(|href| view! { <a class="button" href=href>"Older events"</a> })}
                    }.into_any()
                })}
        </Shell>
    }
}

/// Percent-encodes a query value (actors are emails, actions dotted names).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
