//! The billing page: balance and cap, the prepaid switch, the credit ledger,
//! monthly statements (table and CSV), and alert settings with the alerts sent.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{error_of, loaded, org_param, Choice, Flag, Shell, Table};
use crate::api::billing::{
    get_alerting, get_billing, get_statement, AddCredit, SetPrepaid, UpdateAlerting,
};
use crate::format::{format_time, format_usd};

#[component]
pub fn BillingPage() -> impl IntoView {
    let org_id = org_param();
    let query = use_query_map();
    let add = ServerAction::<AddCredit>::new();
    let prepaid = ServerAction::<SetPrepaid>::new();
    let alerting = ServerAction::<UpdateAlerting>::new();
    let billing = Resource::new(
        move || (org_id.get(), add.version().get(), prepaid.version().get()),
        |(id, _, _)| get_billing(id),
    );
    let month = move || query.read().get("month").filter(|m| !m.is_empty());
    let statement = Resource::new(
        move || (org_id.get(), month(), add.version().get()),
        |(id, m, _)| get_statement(id, m.unwrap_or_default()),
    );
    let alerts = Resource::new(
        move || (org_id.get(), alerting.version().get()),
        |(id, _)| get_alerting(id),
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Billing"</h1>
            {loaded(billing, move |b| {
                    let id = org_id.get_untracked();
                    let id2 = id.clone();
                    view! {
                        <section class="stats" data-testid="billing-standing">
                            <div><span class="muted">"Credits"</span><strong>{b.standing.credits.to_string()}</strong></div>
                            <div><span class="muted">"Spent (all time)"</span><strong>{b.standing.spent.to_string()}</strong></div>
                            <div><span class="muted">"Balance"</span><strong data-testid="balance">{b.standing.balance.to_string()}</strong></div>
                            <div><span class="muted">{format!("Spend cap ({})", b.standing.cap_reset)}</span>
                                <strong>{b.standing.cap.map_or_else(|| "none".to_owned(), |c| format!("{} of {}", b.standing.cap_spent, c))}</strong></div>
                        </section>
                        <section class="card">
                            <h2>"Prepaid credits"</h2>
                            <p class="muted">
                                {if b.standing.prepaid {
                                    "The balance is enforced: when it reaches zero, every project's requests answer 402 until credits are added."
                                } else {
                                    "The balance is not enforced; spend is metered against the credits for reference."
                                }}
                            </p>
                            <ActionForm action=prepaid>
                                <input type="hidden" name="org_id" value=id/>
                                <Flag name="prepaid" label="Stop requests when the balance is used up" checked=b.standing.prepaid/>
                                <button type="submit">"Save"</button>
                            </ActionForm>
                            {move || error_of(prepaid.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                            <h3>"Add an entry"</h3>
                            <ActionForm action=add attr:data-testid="credit-form">
                                <input type="hidden" name="org_id" value=id2/>
                                <div class="row">
                                    <Choice label="Kind" name="kind" options=&[("purchase", "purchase"), ("grant", "grant"), ("adjustment", "adjustment")]/>
                                    <label>"Amount (USD; an adjustment may be negative)"<input name="amount" inputmode="decimal" required/></label>
                                    <label>"Reference"<input name="reference" placeholder="invoice or PO number"/></label>
                                </div>
                                <label>"Note"<input name="note"/></label>
                                <button type="submit">"Add"</button>
                            </ActionForm>
                            {move || error_of(add.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                            <Table testid="credit-ledger" head=vec!["Time", "Kind", "Amount", "Reference", "Note", "By"]>
                                {b.entries.into_iter().map(|e| view! {
                                    <tr>
                                        <td>{format_time(e.at)}</td>
                                        <td>{e.kind}</td>
                                        <td class="num">{format_usd(e.amount_micros)}</td>
                                        <td>{e.reference}</td>
                                        <td>{e.note}</td>
                                        <td>{e.entered_by}</td>
                                    </tr>
                                }).collect_view()}
                            </Table>
                        </section>
                        <section class="card">
                            <h2>"Statements"</h2>
                            <form method="get" class="row">
                                <label>"Month"
                                    <select name="month">
                                        {b.months.iter().map(|m| {
                                            let selected = month().as_deref() == Some(m.as_str());
                                            view! { <option value=m.clone() selected=selected>{m.clone()}</option> }
                                        }).collect_view()}
                                    </select>
                                </label>
                                <button type="submit">"Show"</button>
                            </form>
                            <Statement statement=statement/>
                        </section>
                    }.into_any()
                })}
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    alerts.await.ok().map(|a| {
                        let id = org_id.get_untracked();
                        let thresholds = a.thresholds.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                        view! {
                            <section class="card" data-testid="alerts">
                                <h2>"Alerts"</h2>
                                <p class="muted">"Sent at each threshold of a key's, project's or the organization's budget (once per budget period), when a project is paused by its budget, and when a key expires within 7 days. Failed deliveries are retried with backoff."</p>
                                <ActionForm action=alerting>
                                    <input type="hidden" name="org_id" value=id/>
                                    <Webhook label="Slack-compatible webhook" name="slack_url" clear="clear_slack"
                                        placeholder=a.slack.clone().unwrap_or_else(|| "https://hooks.slack.com/services/…".into())/>
                                    <Webhook label="JSON webhook" name="webhook_url" clear="clear_webhook"
                                        placeholder=a.webhook.clone().unwrap_or_else(|| "https://example.com/alerts".into())/>
                                    <label>"Thresholds (% of a budget)"<input name="thresholds" value=thresholds/></label>
                                    <p class="muted">"Set: Slack "{a.slack.clone().unwrap_or_else(|| "no".into())}", JSON "{a.webhook.clone().unwrap_or_else(|| "no".into())}". An empty field keeps the current URL."</p>
                                    <button type="submit">"Save"</button>
                                </ActionForm>
                                {move || error_of(alerting.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                                <h3>"Sent"</h3>
                                {if a.sent.is_empty() {
                                    view! { <p class="muted">"No alerts yet."</p> }.into_any()
                                } else {
                                    view! {
                                        <Table testid="sent-alerts" head=vec!["Time", "Alert", "Delivery"]>
                                            {a.sent.into_iter().map(|s| view! {
                                                <tr>
                                                    <td>{format_time(s.at)}</td>
                                                    <td>{s.message}</td>
                                                    <td>{s.deliveries.into_iter().map(|d| {
                                                        let state = match (d.delivered_at, d.next_at) {
                                                            (Some(t), _) => format!("delivered {}", format_time(t)),
                                                            (None, Some(t)) => format!("retrying at {} ({})", format_time(t), d.last_error.unwrap_or_default()),
                                                            (None, None) => format!("failed: {}", d.last_error.unwrap_or_default()),
                                                        };
                                                        view! { <div>{format!("{}: {state}, {} attempt(s)", d.target, d.attempts)}</div> }
                                                    }).collect_view()}</td>
                                                </tr>
                                            }).collect_view()}
                                        </Table>
                                    }.into_any()
                                }}
                            </section>
                        }
                    })
                })}
            </Suspense>
        </Shell>
    }
}

/// A webhook URL field (its placeholder the current URL) and the box that
/// removes it.
#[component]
fn Webhook(
    label: &'static str,
    name: &'static str,
    clear: &'static str,
    placeholder: String,
) -> impl IntoView {
    view! {
        <div class="row">
            <label>{label}
                <input name=name type="url" placeholder=placeholder/>
            </label>
            <label class="inline"><input type="checkbox" name=clear value="on"/>"remove"</label>
        </div>
    }
}

#[component]
fn Statement(
    statement: Resource<Result<crate::api::billing::StatementView, crate::error::AppError>>,
) -> impl IntoView {
    view! {
        {loaded(statement, move |s| {
                let href = format!("data:text/csv;charset=utf-8,{}", super::audit::urlencode(&s.csv));
                let file = format!("tollgate-statement-{}.csv", s.statement.month);
                view! {
                    <div data-testid="statement">
                        <p>
                            "Statement for "<strong>{s.statement.month.clone()}</strong>": "
                            <strong data-testid="statement-total">{s.statement.total.to_string()}</strong>
                            " spent; "{s.statement.credits.to_string()}" in credits entered. "
                            <a class="button" href=href download=file data-testid="statement-csv">"Download CSV"</a>
                        </p>
                        <Table head=vec!["Project", "Model", "Requests", "Input tokens", "Output tokens", "Spend"]>
                            {s.statement.lines.into_iter().map(|l| view! {
                                <tr>
                                    <td>{l.project_name}</td>
                                    <td>{l.model}</td>
                                    <td class="num">{l.requests}</td>
                                    <td class="num">{l.tokens_in}</td>
                                    <td class="num">{l.tokens_out}</td>
                                    <td class="num">{l.cost.to_string()}</td>
                                </tr>
                            }).collect_view()}
                        </Table>
                    </div>
                }.into_any()
            })}
    }
}
