//! An organization's overview: its name, the caller's role, renaming.

use leptos::prelude::*;

use super::{error_of, org_param, Flag, Shell};
use crate::api::orgs::{get_org, get_spending, RenameOrg, UpdateSpending};
use crate::format::format_usd;
use crate::policy::{allows, Action, Seat};

#[component]
pub fn OrgPage() -> impl IntoView {
    let org_id = org_param();
    let rename = ServerAction::<RenameOrg>::new();
    let spend = ServerAction::<UpdateSpending>::new();
    let org = Resource::new(
        move || (org_id.get(), rename.version().get()),
        |(id, _)| get_org(id),
    );
    let spending = Resource::new(
        move || (org_id.get(), spend.version().get()),
        |(id, _)| get_spending(id),
    );
    view! {
        <Shell org_id=org_id>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let spending = spending.await.ok();
                    match org.await {
                        Ok(o) => {
                            let may_edit = allows(Action::EditOrganization, Seat::at_org(o.role));
                            let may_bill = allows(Action::BillingAndCredits, Seat::at_org(o.role));
                            let id = o.id.clone();
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
                                {spending.map(|sp| view! {
                                    <section class="card" data-testid="spending">
                                        <h2>"Spending and content logging"</h2>
                                        <p class="muted">
                                            "Spend cap: "
                                            <strong>{sp.spend_cap_micros.map_or_else(|| "none".to_owned(), |c| format!("{} ({})", format_usd(c), sp.spend_cap_reset))}</strong>
                                            ". Request and response bodies are "
                                            <strong>{if sp.content_logging { "kept where a project allows it" } else { "never kept" }}</strong>"."
                                        </p>
                                        {(may_edit || may_bill).then(|| view! {
                                            <ActionForm action=spend>
                                                <input type="hidden" name="org_id" value=id.clone()/>
                                                <div class="row">
                                                    <label>"Spend cap (USD, empty: none)"
                                                        <input name="spend_cap" inputmode="decimal" disabled=!may_bill
                                                            value=sp.spend_cap_micros.map(|c| format_usd(c).trim_start_matches('$').to_owned()).unwrap_or_default()/>
                                                    </label>
                                                    <label>"Resets"
                                                        <select name="spend_cap_reset" disabled=!may_bill>
                                                            {["never", "daily", "weekly", "monthly"].into_iter().map(|r| view! { <option value=r selected=sp.spend_cap_reset == r>{r}</option> }).collect_view()}
                                                        </select>
                                                    </label>
                                                </div>
                                                {(!may_bill).then(|| view! {
                                                    <input type="hidden" name="spend_cap" value=sp.spend_cap_micros.map(|c| format_usd(c).trim_start_matches('$').to_owned()).unwrap_or_default()/>
                                                    <input type="hidden" name="spend_cap_reset" value=sp.spend_cap_reset.clone()/>
                                                })}
                                                {if may_edit {
                                                    view! {
                                                        <Flag name="content_logging" label="Allow projects to keep request and response bodies" checked=sp.content_logging/>
                                                    }.into_any()
                                                } else {
                                                    view! { <input type="hidden" name="content_logging" value=if sp.content_logging { "on" } else { "off" }/> }.into_any()
                                                }}
                                                <button type="submit">"Save"</button>
                                            </ActionForm>
                                        })}
                                        {move || error_of(spend.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
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
