//! The usage page: spend and tokens per day (charts drawn by ECharts in the
//! browser), splits by project, key and model, and keys'
//! budgets with their reset and a projection. Filters: period, project, key.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{loaded, org_param, Filter, Shell, Table};
use crate::api::usage::{get_usage, Slice, TotalsView, PERIODS};
use crate::format::{count_f64 as count, day_label, format_time, format_usd, Usd};

/// What a chart shows; drawn only in the browser.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ChartSpec {
    /// Stacked bars per category (day), one series per name.
    Stacked {
        categories: Vec<String>,
        series: Vec<(String, Vec<f64>)>,
    },
    /// Lines per category (day).
    Lines {
        categories: Vec<String>,
        series: Vec<(String, Vec<f64>)>,
    },
    /// Shares of a whole.
    Pie { slices: Vec<(String, f64)> },
}

/// The shell's `<meta>` whose content is ECharts' address (content-hashed).
pub(crate) const ECHARTS_META: &str = "tollgate-echarts";

/// A chart's element; ECharts draws into it once the page is live. ECharts
/// (a few hundred KB) is fetched by the first chart of a page, not by the
/// pages that draw none.
#[component]
pub(crate) fn Chart(id: &'static str, spec: ChartSpec) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let spec = spec.clone();
        with_echarts(move || draw(id, &spec));
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = spec;
    view! { <div id=id class="chart" data-testid=id></div> }
}

/// Runs `then` once the global `echarts` is there: at once if it is, else
/// after the one script tag that every chart of the page waits for.
#[cfg(feature = "hydrate")]
fn with_echarts(then: impl FnOnce() + 'static) {
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    use web_sys::js_sys;
    const SCRIPT_ID: &str = "tollgate-echarts-script";
    let loaded = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("echarts"))
        .is_ok_and(|e| !e.is_undefined());
    if loaded {
        then();
        return;
    }
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let script = match document.get_element_by_id(SCRIPT_ID) {
        Some(script) => script,
        None => {
            let src = document
                .query_selector(&format!("meta[name=\"{ECHARTS_META}\"]"))
                .ok()
                .flatten()
                .and_then(|m| m.get_attribute("content"));
            let (Some(src), Ok(script), Some(head)) =
                (src, document.create_element("script"), document.head())
            else {
                leptos::logging::warn!("charts: no ECharts address in the page");
                return;
            };
            script.set_id(SCRIPT_ID);
            let _ = script.set_attribute("src", &src);
            let failed = Closure::once_into_js(move || {
                leptos::logging::warn!("charts: ECharts did not load from {src}");
            });
            let _ = script.add_event_listener_with_callback("error", failed.unchecked_ref());
            let _ = head.append_child(&script);
            script
        }
    };
    let then = Closure::once_into_js(then);
    let _ = script.add_event_listener_with_callback("load", then.unchecked_ref());
}

/// ECharts' option for a spec, as JSON (built by hand: a typed options crate
/// such as charming weighed some 140 KB of the wasm in serializers).
#[cfg(feature = "hydrate")]
fn option(spec: &ChartSpec) -> serde_json::Value {
    use serde_json::json;
    let axes = |categories: &[String], series: Vec<serde_json::Value>| {
        json!({
            "tooltip": { "trigger": "axis" },
            "legend": { "top": 0 },
            "grid": { "left": 60, "right": 20, "top": 40, "bottom": 30 },
            "xAxis": { "type": "category", "data": categories },
            "yAxis": { "type": "value" },
            "series": series,
        })
    };
    match spec {
        ChartSpec::Stacked { categories, series } => axes(
            categories,
            series
                .iter()
                .map(
                    |(name, v)| json!({ "type": "bar", "name": name, "stack": "total", "data": v }),
                )
                .collect(),
        ),
        ChartSpec::Lines { categories, series } => axes(
            categories,
            series
                .iter()
                .map(|(name, v)| json!({ "type": "line", "name": name, "data": v }))
                .collect(),
        ),
        ChartSpec::Pie { slices } => json!({
            "tooltip": { "trigger": "item" },
            "legend": { "top": 0 },
            "series": [{
                "type": "pie",
                "radius": ["35%", "65%"],
                "data": slices.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect::<Vec<_>>(),
            }],
        }),
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// An ECharts instance.
    type ECharts;
    #[wasm_bindgen(catch, js_namespace = echarts, js_name = init)]
    fn echarts_init(
        element: &web_sys::Element,
        theme: &str,
        size: &wasm_bindgen::JsValue,
    ) -> Result<ECharts, wasm_bindgen::JsValue>;
    #[wasm_bindgen(method, js_name = setOption)]
    fn set_option(this: &ECharts, option: &wasm_bindgen::JsValue);
}

#[cfg(feature = "hydrate")]
fn draw(id: &str, spec: &ChartSpec) {
    use web_sys::js_sys::JSON;
    let Some(element) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id))
    else {
        return;
    };
    let width = u32::try_from(element.client_width())
        .unwrap_or(640)
        .max(320);
    let size = serde_json::json!({ "width": width, "height": 280 }).to_string();
    let parsed =
        JSON::parse(&size).and_then(|size| Ok((size, JSON::parse(&option(spec).to_string())?)));
    match parsed.and_then(|(size, option)| Ok((echarts_init(&element, "", &size)?, option))) {
        Ok((chart, option)) => chart.set_option(&option),
        Err(e) => leptos::logging::warn!("chart {id}: {e:?}"),
    }
}

#[component]
pub fn UsagePage() -> impl IntoView {
    let org_id = org_param();
    let query = use_query_map();
    let get = move |k: &str| query.read().get(k).filter(|v| !v.is_empty());
    let report = Resource::new(
        move || {
            (
                org_id.get(),
                get("days").and_then(|d| d.parse::<i64>().ok()),
                get("project"),
                get("key"),
            )
        },
        |(org, days, project, key)| get_usage(org, days, project, key),
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Usage"</h1>
            {loaded(report, move |r| {
                    let days = get("days").and_then(|d| d.parse::<i64>().ok()).unwrap_or(30);
                    let project = get("project").unwrap_or_default();
                    let key = get("key").unwrap_or_default();
                    let categories: Vec<String> = r.days.iter().map(|d| day_label(d.day)).collect();
                    let spend = ChartSpec::Stacked {
                        categories: categories.clone(),
                        series: r.spend_by_model.iter().map(|s| (s.name.clone(), s.values.iter().map(|v| Usd::from_micros(*v).dollars()).collect())).collect(),
                    };
                    let tokens = ChartSpec::Lines {
                        categories,
                        series: vec![
                            ("input tokens".to_owned(), r.days.iter().map(|d| count(d.totals.tokens_in)).collect()),
                            ("output tokens".to_owned(), r.days.iter().map(|d| count(d.totals.tokens_out)).collect()),
                        ],
                    };
                    let projects_pie = ChartSpec::Pie {
                        slices: r.by_project.iter().map(|s| (s.name.clone(), Usd::from_micros(s.totals.cost_micros).dollars())).collect(),
                    };
                    view! {
                        <form method="get" class="row filters" data-testid="usage-filters">
                            <label>"Period"
                                <select name="days">
                                    {PERIODS.iter().map(|d| view! { <option value=d.to_string() selected=*d == days>{format!("Last {d} days")}</option> }).collect_view()}
                                </select>
                            </label>
                            <Filter label="Project" name="project" any="All projects" selected=project.clone() options=r.projects.clone()/>
                            <Filter label="Key" name="key" any="All keys" selected=key.clone() options=r.keys.clone()/>
                            <button type="submit">"Show"</button>
                        </form>
                        {(!r.whole).then(|| view! { <p class="muted">"Showing the projects you administer and your own keys."</p> })}
                        <section class="stats" data-testid="usage-totals">
                            <div><span class="muted">"Spend"</span><strong data-testid="total-spend">{format_usd(r.totals.cost_micros)}</strong></div>
                            <div><span class="muted">"Requests"</span><strong data-testid="total-requests">{r.totals.requests}</strong></div>
                            <div><span class="muted">"Errors"</span><strong>{r.totals.errors}</strong></div>
                            <div><span class="muted">"Input tokens"</span><strong data-testid="total-tokens-in">{r.totals.tokens_in}</strong></div>
                            <div><span class="muted">"Output tokens"</span><strong data-testid="total-tokens-out">{r.totals.tokens_out}</strong></div>
                        </section>
                        <section class="card">
                            <h2>"Spend per day by model (USD)"</h2>
                            <Chart id="chart-spend" spec=spend/>
                        </section>
                        <section class="card">
                            <h2>"Tokens per day"</h2>
                            <Chart id="chart-tokens" spec=tokens/>
                        </section>
                        <div class="two">
                            <section class="card">
                                <h2>"Spend by project"</h2>
                                <Chart id="chart-projects" spec=projects_pie/>
                            </section>
                            <section class="card">
                                <h2>"By model"</h2>
                                <SliceTable slices=r.by_model.clone() label="Served model" testid="by-model"/>
                                <SliceTable slices=r.by_requested_model.clone() label="Requested model" testid="by-requested-model"/>
                                <SliceTable slices=r.by_endpoint.clone() label="Endpoint" testid="by-endpoint"/>
                            </section>
                        </div>
                        <section class="card">
                            <h2>"Top keys by spend"</h2>
                            <SliceTable slices=r.by_key.iter().take(10).cloned().collect() label="Key" testid="top-keys"/>
                        </section>
                        <section class="card">
                            <h2>"Key budgets"</h2>
                            {if r.key_budgets.is_empty() {
                                view! { <p class="muted">"No key in view has a budget."</p> }.into_any()
                            } else {
                                view! {
                                    <Table testid="key-budgets" head=vec!["Key", "Project", "Spent", "Budget", "Used", "Resets", "At this rate"]>
                                        {r.key_budgets.iter().map(|b| {
                                            let pct = if b.budget_micros > 0 { (i128::from(b.spent_micros) * 100 / i128::from(b.budget_micros)).min(999) } else { 0 };
                                            view! {
                                                <tr>
                                                    <td>{b.name.clone()}</td>
                                                    <td>{b.project.clone()}</td>
                                                    <td>{format_usd(b.spent_micros)}</td>
                                                    <td>{format!("{} ({})", format_usd(b.budget_micros), b.reset)}</td>
                                                    <td><meter min="0" max="100" value=pct.min(100).to_string()></meter>" "{format!("{pct}%")}</td>
                                                    <td>{b.next_reset.map_or_else(|| "never".to_owned(), format_time)}</td>
                                                    <td>{match (b.runs_out, b.daily_rate_micros) {
                                                        (Some(t), rate) => format!("runs out on {} ({}/day)", &format_time(t)[..10], format_usd(rate)),
                                                        (None, 0) => "nothing spent in the last 7 days".to_owned(),
                                                        (None, rate) => format!("lasts until the reset ({}/day)", format_usd(rate)),
                                                    }}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </Table>
                                }.into_any()
                            }}
                        </section>
                        <section class="card">
                            <h2>"By project"</h2>
                            <SliceTable slices=r.by_project.clone() label="Project" testid="by-project"/>
                        </section>
                    }.into_any()
                })}
        </Shell>
    }
}

#[component]
fn SliceTable(slices: Vec<Slice>, label: &'static str, testid: &'static str) -> impl IntoView {
    if slices.is_empty() {
        return view! { <p class="muted">"No usage in this period."</p> }.into_any();
    }
    let row = |name: String, project: Option<String>, t: TotalsView| {
        view! {
            <tr>
                <td>{name}{project.map(|p| view! { <span class="muted">{format!(" · {p}")}</span> })}</td>
                <td class="num">{t.requests}</td>
                <td class="num">{t.tokens_in}</td>
                <td class="num">{t.tokens_out}</td>
                <td class="num">{format_usd(t.cost_micros)}</td>
            </tr>
        }
    };
    view! {
        <Table testid=testid head=vec![label, "Requests", "Input tokens", "Output tokens", "Spend"]>
            {slices.into_iter().map(|s| row(s.name, s.project, s.totals)).collect_view()}
        </Table>
    }
    .into_any()
}
