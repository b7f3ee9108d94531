//! An organization's first page: what an owner or member needs at a glance
//! (spend against the cap and credits, spend per day, projects near their
//! budget, keys expiring soon, recent audit events, how to call the proxy),
//! each part as the policy allows; then the settings (name, spend cap,
//! content logging).

use leptos::prelude::*;

use super::usage::{Chart, ChartSpec};
use super::{error_of, loaded, org_param, Flag, Shell, Table};
use crate::api::orgs::{get_org, get_spending, RenameOrg, UpdateSpending};
use crate::api::overview::{
    get_overview, AuditEventView, BudgetStanding, KeyView, OrgSpend, ProjectBudget, ProxySnippet,
    SpendChart, CHART_DAYS, EXPIRING_DAYS,
};
use crate::format::{day_label, format_time, format_usd, Usd};
use crate::policy::{allows, may_hold_keys, Action, Seat};

/// Projects the overview lists at most (the rest are on the projects page).
const PROJECTS_SHOWN: usize = 6;

#[component]
pub fn OrgPage() -> impl IntoView {
    let org_id = org_param();
    let rename = ServerAction::<RenameOrg>::new();
    let spend = ServerAction::<UpdateSpending>::new();
    let glance = Resource::new(
        move || (org_id.get(), rename.version().get(), spend.version().get()),
        |(id, _, _)| get_overview(id),
    );
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
            {loaded(glance, move |o| {
                let base = format!("/orgs/{}", org_id.get_untracked());
                let keys_card = (o.expiring_all || may_hold_keys(o.role))
                    .then(|| expiring_card(o.expiring.clone(), o.expiring_all, &base));
                view! {
                    <h1>{o.name.clone()}</h1>
                    <p>"Your role: "<strong data-testid="my-role">{o.role.label()}</strong></p>
                    {o.spend.clone().map(|s| spend_stats(s, &base))}
                    {o.chart.clone().map(|c| chart_card(c, &base))}
                    <div class="two">
                        {projects_card(o.projects.clone(), &base)}
                        {keys_card}
                    </div>
                    {o.events.clone().map(|e| events_card(e, &base))}
                    {snippet_card(o.proxy.clone(), &base)}
                }
            })}
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let spending = spending.await.ok();
                    let Ok(o) = org.await else { return ().into_any() };
                    let may_edit = allows(Action::EditOrganization, Seat::at_org(o.role));
                    let may_bill = allows(Action::BillingAndCredits, Seat::at_org(o.role));
                    let id = o.id.clone();
                    view! {
                        <div id="settings" class="settings">
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
                                <section class="card" id="spending" data-testid="spending">
                                    <h2>"Spending and content logging"</h2>
                                    <p class="muted">
                                        {sp.cap.clone().map(|cap| view! {
                                            "Spend cap: "
                                            <strong>{cap.spend_cap_micros.map_or_else(|| "none".to_owned(), |c| format!("{} ({})", format_usd(c), cap.spend_cap_reset))}</strong>
                                            ". "
                                        })}
                                        "Request and response bodies are "
                                        <strong>{if sp.content_logging { "kept where a project allows it" } else { "never kept" }}</strong>"."
                                    </p>
                                    {sp.cap.clone().filter(|_| may_edit || may_bill).map(|cap| view! {
                                        <ActionForm action=spend>
                                            <input type="hidden" name="org_id" value=id.clone()/>
                                            <div class="row">
                                                <label>"Spend cap (USD, empty: none)"
                                                    <input name="spend_cap" inputmode="decimal" disabled=!may_bill
                                                        value=cap.spend_cap_micros.map(|c| format_usd(c).trim_start_matches('$').to_owned()).unwrap_or_default()/>
                                                </label>
                                                <label>"Resets"
                                                    <select name="spend_cap_reset" disabled=!may_bill>
                                                        {["never", "daily", "weekly", "monthly"].into_iter().map(|r| view! { <option value=r selected=cap.spend_cap_reset == r>{r}</option> }).collect_view()}
                                                    </select>
                                                </label>
                                            </div>
                                            {(!may_bill).then(|| view! {
                                                <input type="hidden" name="spend_cap" value=cap.spend_cap_micros.map(|c| format_usd(c).trim_start_matches('$').to_owned()).unwrap_or_default()/>
                                                <input type="hidden" name="spend_cap_reset" value=cap.spend_cap_reset.clone()/>
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
                        </div>
                    }.into_any()
                })}
            </Suspense>
        </Shell>
    }
}

/// Percent of `of` that `part` is (0 for a zero whole), at most 999.
fn percent(part: i64, of: i64) -> i64 {
    if of <= 0 {
        return 0;
    }
    i64::try_from((i128::from(part) * 100 / i128::from(of)).min(999)).unwrap_or(999)
}

/// This month's spend, the cap and (billing seats) the credit balance.
fn spend_stats(s: OrgSpend, base: &str) -> impl IntoView {
    let cap = s.cap_micros.map(|c| {
        let pct = percent(s.cap_spent_micros, c);
        let resets = s
            .cap_resets_at
            .map_or_else(|| "never resets".to_owned(), |t| format!("resets {}", &format_time(t)[..10]));
        view! {
            <strong data-testid="overview-cap">{format!("{} of {}", format_usd(s.cap_spent_micros), format_usd(c))}</strong>
            <meter min="0" max="100" low="80" high="99" optimum="0" value=pct.min(100).to_string()></meter>
            <span class="muted small">{format!("{pct}% · {} · {resets}", s.cap_reset)}</span>
        }
    });
    view! {
        <section class="stats" data-testid="overview-spend" aria-label="Spend">
            <a class="stat" href=format!("{base}/usage")>
                <span class="muted">"Spend this month"</span>
                <strong data-testid="overview-month-spend">{format_usd(s.month_micros)}</strong>
                <span class="muted small">"View usage"</span>
            </a>
            <a class="stat" href="#spending">
                <span class="muted">"Spend cap"</span>
                {match cap {
                    Some(v) => v.into_any(),
                    None => view! {
                        <strong data-testid="overview-cap">"None"</strong>
                        <span class="muted small">"No cap is set"</span>
                    }.into_any(),
                }}
            </a>
            {s.credits.map(|c| view! {
                <a class="stat" href=format!("{base}/billing") data-testid="overview-credits">
                    <span class="muted">"Credit balance"</span>
                    <strong data-testid="overview-balance">{format_usd(c.balance_micros)}</strong>
                    <span class="muted small">{if c.prepaid { "Prepaid: requests stop at zero" } else { "Not enforced" }}</span>
                </a>
            })}
        </section>
    }
}

/// Spend per day over the last [`CHART_DAYS`] days.
fn chart_card(c: SpendChart, base: &str) -> impl IntoView {
    let spec = ChartSpec::Stacked {
        categories: c.days.iter().map(|d| day_label(d.day)).collect(),
        series: vec![(
            "Spend (USD)".to_owned(),
            c.days
                .iter()
                .map(|d| Usd::from_micros(d.totals.cost_micros).dollars())
                .collect(),
        )],
    };
    view! {
        <section class="card glance">
            <div class="row spread">
                <h2>{if c.whole { format!("Spend, last {CHART_DAYS} days") } else { format!("Your spend, last {CHART_DAYS} days") }}</h2>
                <a href=format!("{base}/usage")>"View usage"</a>
            </div>
            <p class="muted">
                {format!("{} in all", format_usd(c.total_micros))}
                {(!c.whole).then_some(": your own keys and the projects you administer")}
                "."
            </p>
            <Chart id="overview-chart" spec=spec/>
        </section>
    }
}

/// The projects the caller sees, those over or near their budget first.
fn projects_card(projects: Vec<ProjectBudget>, base: &str) -> impl IntoView {
    let spend_known = projects.iter().any(|p| p.spent_micros.is_some());
    let attention = projects
        .iter()
        .filter(|p| p.standing() != BudgetStanding::Within)
        .count();
    let more = projects.len().saturating_sub(PROJECTS_SHOWN);
    let has_rows = !projects.is_empty();
    let summary = match (projects.is_empty(), spend_known, attention) {
        (true, _, _) => "You are in no project yet.".to_owned(),
        (false, false, _) => "The projects you belong to.".to_owned(),
        (false, true, 0) => "No project is near its budget.".to_owned(),
        (false, true, 1) => "1 project is near or over its budget.".to_owned(),
        (false, true, n) => format!("{n} projects are near or over their budget."),
    };
    let base = base.to_owned();
    let rows = projects
        .into_iter()
        .take(PROJECTS_SHOWN)
        .map(|p| {
            let budget = p.budget_micros.map_or_else(
                || "none".to_owned(),
                |b| format!("{} ({})", format_usd(b), p.budget_reset),
            );
            let (label, class) = match p.standing() {
                BudgetStanding::Over => ("over budget", "status revoked"),
                BudgetStanding::Near => ("near budget", "status near"),
                BudgetStanding::Within => ("", ""),
            };
            let used = p.used_percent().map(|u| format!("{u}%")).unwrap_or_default();
            view! {
                <tr data-testid=format!("overview-project-{}", p.name)>
                    <td><a href=format!("{base}/projects/{}", p.id)>{p.name.clone()}</a></td>
                    {if spend_known {
                        view! {
                            <td class="num">{p.spent_micros.map(format_usd).unwrap_or_else(|| "—".to_owned())}</td>
                            <td>{budget}</td>
                            <td>{used}" "{(!label.is_empty()).then(|| view! { <span class=class>{label}</span> })}</td>
                        }.into_any()
                    } else {
                        view! { <td>{p.my_seat.label()}</td><td>{budget}</td> }.into_any()
                    }}
                </tr>
            }
        })
        .collect_view();
    let head = if spend_known {
        vec!["Project", "Spent", "Budget", "Used"]
    } else {
        vec!["Project", "Your role", "Budget"]
    };
    view! {
        <section class="card glance" data-testid="overview-projects">
            <div class="row spread">
                <h2>"Projects"</h2>
                <a href=format!("{base}/projects")>"View all projects"</a>
            </div>
            <p class="muted">{summary}</p>
            {has_rows.then(|| view! { <Table head=head>{rows}</Table> })}
            {(more > 0).then(|| view! { <p class="muted">{format!("and {more} more")}</p> })}
        </section>
    }
}

/// Keys that expire within [`EXPIRING_DAYS`] days, soonest first.
fn expiring_card(keys: Vec<KeyView>, all: bool, base: &str) -> impl IntoView {
    let base = base.to_owned();
    let scope = if all {
        "Keys of the organization"
    } else {
        "Your keys and those of the projects you administer"
    };
    view! {
        <section class="card glance" data-testid="overview-keys">
            <div class="row spread">
                <h2>"Keys expiring soon"</h2>
                <a href=format!("{base}/keys")>"View your keys"</a>
            </div>
            <p class="muted">{format!("{scope} that expire in the next {EXPIRING_DAYS} days.")}</p>
            {if keys.is_empty() {
                view! { <p class="muted">"None."</p> }.into_any()
            } else {
                view! {
                    <Table head=vec!["Key", "Project", "Owner", "Expires"]>
                        {keys.into_iter().map(|k| view! {
                            <tr data-testid=format!("overview-key-{}", k.name)>
                                <td>{k.name.clone()}<code class="hint">{k.hint.clone()}</code></td>
                                <td><a href=format!("{base}/projects/{}", k.project_id)>{k.project_name.clone()}</a></td>
                                <td class="wrap">{k.owner.clone().unwrap_or_else(|| "service".to_owned())}</td>
                                <td class="nowrap" title=k.expires_at.map(format_time)>{k.expires_at.map(|t| format_time(t)[..10].to_owned())}</td>
                            </tr>
                        }).collect_view()}
                    </Table>
                }.into_any()
            }}
        </section>
    }
}

/// The latest administrative changes.
fn events_card(events: Vec<AuditEventView>, base: &str) -> impl IntoView {
    view! {
        <section class="card glance" data-testid="overview-audit">
            <div class="row spread">
                <h2>"Recent activity"</h2>
                <a href=format!("{base}/audit")>"View the audit log"</a>
            </div>
            {if events.is_empty() {
                view! { <p class="muted">"Nothing yet."</p> }.into_any()
            } else {
                view! {
                    <Table head=vec!["Time", "Actor", "Action", "Resource"]>
                        {events.into_iter().map(|e| view! {
                            <tr>
                                <td class="nowrap">{format_time(e.at)}</td>
                                <td>{e.actor}</td>
                                <td class="nowrap"><code>{e.action}</code></td>
                                <td class="audit-resource">{e.resource}</td>
                            </tr>
                        }).collect_view()}
                    </Table>
                }.into_any()
            }}
        </section>
    }
}

/// How to call the proxy: its base URL and, with a model the caller may
/// use, a curl and an OpenAI SDK example.
fn snippet_card(p: ProxySnippet, base: &str) -> impl IntoView {
    let url = p.base_url.clone();
    let body = p.model.map(|(project_id, project, model)| {
        let curl = format!(
            "curl {url}/chat/completions \\\n  -H \"Authorization: Bearer $TOLLGATE_API_KEY\" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
        );
        let python = format!(
            "import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"{url}\", api_key=os.environ[\"TOLLGATE_API_KEY\"])\nreply = client.chat.completions.create(\n    model=\"{model}\",\n    messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}],\n)\nprint(reply.choices[0].message.content)"
        );
        view! {
            <p class="muted">
                "With a key of " <a href=format!("{base}/projects/{project_id}")>{project}</a>
                " in " <code>"TOLLGATE_API_KEY"</code> ", for example with "
                <code data-testid="overview-model">{model.clone()}</code> ":"
            </p>
            <Snippet label="curl" testid="overview-curl" text=curl/>
            <Snippet label="Python (OpenAI SDK)" testid="overview-python" text=python/>
        }
    });
    view! {
        <section class="card glance" data-testid="overview-snippet">
            <h2>"Call the proxy"</h2>
            <p>"OpenAI-compatible base URL: " <code data-testid="overview-base-url">{p.base_url}</code></p>
            {match body {
                Some(b) => b.into_any(),
                None => view! { <p class="muted">"A model to call comes from a project where you may hold keys; you are in none yet."</p> }.into_any(),
            }}
        </section>
    }
}

/// A block of code with a copy button.
#[component]
fn Snippet(label: &'static str, testid: &'static str, text: String) -> impl IntoView {
    let copied = RwSignal::new(false);
    let shown = text.clone();
    view! {
        <div class="snippet">
            <div class="row spread">
                <span class="muted small">{label}</span>
                <button type="button" class="secondary small" on:click=move |_| { super::copy(&text); copied.set(true); }>
                    {move || if copied.get() { "Copied" } else { "Copy" }}
                </button>
            </div>
            <pre data-testid=testid><code>{shown}</code></pre>
        </div>
    }
}
