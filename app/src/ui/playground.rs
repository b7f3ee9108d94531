//! The playground: chat with the models a project allows (virtual ones
//! included), streamed, through the member's own playground key; each
//! answer shows its tokens, cost, latency and the model that served it.

use leptos::prelude::*;

use super::{error_of, org_param, Shell};
use crate::api::playground::{open_playground, Playground, CHAT_PATH};
use crate::api::projects::list_projects;
use crate::format::format_usd;
use crate::policy::{allows, Action};

/// One exchange: the prompt, the answer as it streams, and its figures.
#[derive(Clone, Debug, Default, PartialEq)]
struct Turn {
    user: String,
    answer: String,
    stats: Option<Stats>,
    error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Stats {
    model: String,
    provider: String,
    attempts: Option<String>,
    tokens_in: Option<i64>,
    tokens_out: Option<i64>,
    first_token_ms: Option<f64>,
    total_ms: f64,
}

/// What a stream tells the page as it arrives.
#[cfg_attr(
    not(feature = "hydrate"),
    allow(dead_code, reason = "read in the browser only")
)]
enum Event {
    Served {
        model: String,
        provider: String,
        attempts: Option<String>,
    },
    Delta(String),
    Usage(i64, i64),
}

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let org_id = org_param();
    let projects = Resource::new(move || org_id.get(), list_projects);
    let project = RwSignal::new(String::new());
    let opened = Resource::new(
        move || (org_id.get(), project.get()),
        |(org, project)| async move {
            if project.is_empty() {
                Ok(None)
            } else {
                open_playground(org, project).await.map(Some)
            }
        },
    );
    view! {
        <Shell org_id=org_id>
            <h1>"Playground"</h1>
            <p class="muted">"Chat with the models your project allows. Answers are spent through a key of your own in the project (\"Playground\", listed with your keys) and held to its limits and budgets."</p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let list: Vec<_> = projects.await.unwrap_or_default().into_iter()
                        .filter(|p| allows(Action::ManageOwnKeys, p.my_seat))
                        .collect();
                    if list.is_empty() {
                        return view! { <p class="muted" data-testid="no-playground">"You are in no project where you may use keys."</p> }.into_any();
                    }
                    if project.get_untracked().is_empty() {
                        project.set(list[0].id.clone());
                    }
                    view! {
                        <label>"Project"
                            <select data-testid="playground-project" on:change=move |ev| project.set(event_target_value(&ev))>
                                {list.into_iter().map(|p| {
                                    let selected = p.id == project.get_untracked();
                                    view! { <option value=p.id.clone() selected=selected>{p.name.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </label>
                    }.into_any()
                })}
            </Suspense>
            <Suspense fallback=|| view! { <p class="muted">"Opening your playground key…"</p> }>
                {move || Suspend::new(async move {
                    match opened.await {
                        Ok(Some(p)) => view! { <Chat org_id=org_id.get_untracked() playground=p/> }.into_any(),
                        Ok(None) => ().into_any(),
                        Err(e) => view! { <p class="error" role="alert">{error_of(Some(Err::<(), _>(e)))}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Shell>
    }
}

#[component]
fn Chat(org_id: String, playground: Playground) -> impl IntoView {
    let Playground {
        key_id,
        key_name,
        models,
        prices,
        prompts,
    } = playground;
    let model = RwSignal::new(models.first().cloned().unwrap_or_default());
    let system = RwSignal::new(String::new());
    // A prompt of the project's to start from ('' none), and its variables.
    let prompt_id = RwSignal::new(String::new());
    let variables = RwSignal::new("{}".to_owned());
    let temperature = RwSignal::new("1".to_owned());
    let max_tokens = RwSignal::new("256".to_owned());
    let input = RwSignal::new(String::new());
    let turns = RwSignal::new(Vec::<Turn>::new());
    let busy = RwSignal::new(false);
    let problem = RwSignal::new(None::<String>);
    let url = format!("{CHAT_PATH}?org_id={org_id}&key_id={key_id}");
    let send = move || {
        let prompt = input.get_untracked();
        if prompt.trim().is_empty() || busy.get_untracked() {
            return;
        }
        let body = match request_body(
            &model.get_untracked(),
            Some((prompt_id.get_untracked(), variables.get_untracked()))
                .filter(|(id, _)| !id.is_empty()),
            &system.get_untracked(),
            &temperature.get_untracked(),
            &max_tokens.get_untracked(),
            &turns.get_untracked(),
            &prompt,
        ) {
            Ok(b) => b,
            Err(e) => {
                problem.set(Some(e));
                return;
            }
        };
        problem.set(None);
        input.set(String::new());
        busy.set(true);
        turns.update(|t| {
            t.push(Turn {
                user: prompt,
                ..Turn::default()
            })
        });
        let url = url.clone();
        leptos::task::spawn_local(async move {
            let started = now_ms();
            let mut stats = Stats::default();
            let result = stream_chat(&url, body, |event| match event {
                Event::Served {
                    model,
                    provider,
                    attempts,
                } => {
                    stats.model = model;
                    stats.provider = provider;
                    stats.attempts = attempts;
                }
                Event::Delta(text) => {
                    if stats.first_token_ms.is_none() {
                        stats.first_token_ms = Some(now_ms() - started);
                    }
                    turns.update(|t| {
                        if let Some(last) = t.last_mut() {
                            last.answer.push_str(&text);
                        }
                    });
                }
                Event::Usage(i, o) => {
                    stats.tokens_in = Some(i);
                    stats.tokens_out = Some(o);
                }
            })
            .await;
            stats.total_ms = now_ms() - started;
            turns.update(|t| {
                if let Some(last) = t.last_mut() {
                    match result {
                        Ok(()) => last.stats = Some(stats),
                        Err(e) => last.error = Some(e),
                    }
                }
            });
            busy.set(false);
        });
    };
    let price_of = move |model: &str| {
        prices
            .iter()
            .find(|(id, _, _)| id == model)
            .map(|(_, i, o)| (*i, *o))
    };
    view! {
        <section class="card" data-testid="playground">
            <p class="muted">"Spending through your key "<strong data-testid="playground-key">{key_name}</strong>"."</p>
            <div class="row">
                <label>"Model"
                    <select data-testid="playground-model" on:change=move |ev| model.set(event_target_value(&ev))>
                        {models.into_iter().map(|m| view! { <option value=m.clone()>{m.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Temperature"<input data-testid="playground-temperature" inputmode="decimal" prop:value=move || temperature.get() on:input=move |ev| temperature.set(event_target_value(&ev))/></label>
                <label>"Max tokens"<input data-testid="playground-max-tokens" inputmode="numeric" prop:value=move || max_tokens.get() on:input=move |ev| max_tokens.set(event_target_value(&ev))/></label>
            </div>
            {(!prompts.is_empty()).then(|| view! {
                <div class="row">
                    <label>"Start from a prompt"
                        <select data-testid="playground-prompt" on:change=move |ev| prompt_id.set(event_target_value(&ev))>
                            <option value="">"none"</option>
                            {prompts.into_iter().map(|p| view! { <option value=p.clone()>{p.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>"Prompt variables (JSON)"<input data-testid="playground-variables" disabled=move || prompt_id.get().is_empty() prop:value=move || variables.get() on:input=move |ev| variables.set(event_target_value(&ev))/></label>
                </div>
            })}
            <label>"System prompt"<textarea data-testid="playground-system" rows="2" prop:value=move || system.get() on:input=move |ev| system.set(event_target_value(&ev))></textarea></label>
            <div class="stack" data-testid="playground-turns">
                <For each=move || turns.get().into_iter().enumerate() key=|(i, t)| (*i, t.answer.len(), t.stats.is_some(), t.error.is_some()) let:item>
                    {
                        let (_, t) = item;
                        let cost = t.stats.as_ref().and_then(|s| {
                            let (pi, po) = price_of(&s.model)?;
                            Some(cost_micros(pi, po, s.tokens_in?, s.tokens_out?))
                        });
                        view! {
                            <div class="card turn">
                                <p><strong>"You: "</strong>{t.user.clone()}</p>
                                <p data-testid="playground-answer"><strong>"Answer: "</strong>{t.answer.clone()}</p>
                                {t.error.clone().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                                {t.stats.clone().map(|s| view! {
                                    <p class="muted" data-testid="playground-stats">
                                        "Served by "<code data-testid="served-model">{s.model.clone()}</code>" ("{s.provider.clone()}")"
                                        {s.attempts.clone().map(|a| format!(" after {a} attempts"))}
                                        " · tokens "<span data-testid="tokens">{format!("{} in, {} out", s.tokens_in.map_or("?".into(), |n| n.to_string()), s.tokens_out.map_or("?".into(), |n| n.to_string()))}</span>
                                        " · cost "<span data-testid="cost">{cost.map_or_else(|| "unknown".to_owned(), format_usd)}</span>
                                        " · "<span data-testid="latency">{format!("{:.0} ms", s.total_ms)}</span>
                                        {s.first_token_ms.map(|f| format!(" (first token {f:.0} ms)"))}
                                    </p>
                                })}
                            </div>
                        }
                    }
                </For>
            </div>
            <label>"Message"<textarea data-testid="playground-input" rows="3" prop:value=move || input.get() on:input=move |ev| input.set(event_target_value(&ev))></textarea></label>
            {move || problem.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="actions">
                <button type="button" data-testid="playground-send" disabled=move || busy.get() on:click=move |_| send()>
                    {move || if busy.get() { "Answering…" } else { "Send" }}
                </button>
                <button type="button" on:click=move |_| turns.set(Vec::new())>"Clear"</button>
            </div>
        </section>
    }
}

/// Micro-USD at per-million prices, rounded up (as the proxy bills).
fn cost_micros(input_price: i64, output_price: i64, tokens_in: i64, tokens_out: i64) -> i64 {
    let part = |t: i64, p: i64| i128::from(t.max(0)) * i128::from(p.max(0));
    let micros = part(tokens_in, input_price).saturating_add(part(tokens_out, output_price));
    i64::try_from(micros.saturating_add(999_999) / 1_000_000).unwrap_or(i64::MAX)
}

/// The chat request: the prompt (its messages come first, rendered by the
/// proxy), the system prompt, the conversation so far, the new message;
/// temperature, max tokens and the prompt's variables checked here, named
/// when wrong.
fn request_body(
    model: &str,
    prompt_of: Option<(String, String)>,
    system: &str,
    temperature: &str,
    max_tokens: &str,
    turns: &[Turn],
    prompt: &str,
) -> Result<String, String> {
    use serde_json::{json, Value};
    let temperature: f64 = temperature
        .trim()
        .parse()
        .ok()
        .filter(|t| (0.0..=2.0).contains(t))
        .ok_or("temperature: a number from 0 to 2")?;
    let max_tokens: i64 = max_tokens
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or("max tokens: a whole number of at least 1")?;
    let mut messages: Vec<Value> = Vec::new();
    if !system.trim().is_empty() {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for t in turns.iter().filter(|t| t.error.is_none()) {
        messages.push(json!({ "role": "user", "content": t.user }));
        messages.push(json!({ "role": "assistant", "content": t.answer }));
    }
    messages.push(json!({ "role": "user", "content": prompt }));
    let mut body = json!({
        "model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
        "stream": true, "stream_options": { "include_usage": true },
    });
    if model.is_empty() {
        // None to pick: a prompt's default model, else the proxy names what is missing.
        if let Some(o) = body.as_object_mut() {
            o.remove("model");
        }
    }
    if let Some((id, vars)) = prompt_of {
        let vars: Value = serde_json::from_str(vars.trim())
            .ok()
            .filter(Value::is_object)
            .ok_or("prompt variables: a JSON object, such as {\"customer\": \"Ada\"}")?;
        body["prompt_id"] = Value::String(id);
        body["prompt_variables"] = vars;
    }
    Ok(body.to_string())
}

fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

/// Posts the chat and reads the server-sent events as they arrive.
#[cfg(feature = "hydrate")]
async fn stream_chat(url: &str, body: String, mut on: impl FnMut(Event)) -> Result<(), String> {
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    let js = |e: JsValue| {
        e.as_string()
            .unwrap_or_else(|| "the request failed".to_owned())
    };
    let headers = web_sys::Headers::new().map_err(js)?;
    headers
        .set("content-type", "application/json")
        .map_err(js)?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body));
    let window = web_sys::window().ok_or("no window")?;
    let res: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(js)?
        .dyn_into()
        .map_err(js)?;
    if !res.ok() {
        let text = JsFuture::from(res.text().map_err(js)?)
            .await
            .map_err(js)?
            .as_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or(text);
        return Err(format!("{} {message}", res.status()));
    }
    let h = res.headers();
    on(Event::Served {
        model: h.get("x-tollgate-model").ok().flatten().unwrap_or_default(),
        provider: h
            .get("x-tollgate-provider")
            .ok()
            .flatten()
            .unwrap_or_default(),
        attempts: h.get("x-tollgate-attempts").ok().flatten(),
    });
    let reader: web_sys::ReadableStreamDefaultReader = res
        .body()
        .ok_or("the answer has no body")?
        .get_reader()
        .dyn_into()
        .map_err(|_| "the answer cannot be read as a stream".to_owned())?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(js)?;
        let done = js_sys::Reflect::get(&chunk, &JsValue::from_str("done"))
            .map_err(js)?
            .as_bool()
            .unwrap_or(true);
        if done {
            return Ok(());
        }
        let value = js_sys::Reflect::get(&chunk, &JsValue::from_str("value")).map_err(js)?;
        buf.extend(js_sys::Uint8Array::new(&value).to_vec());
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event);
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data == "[DONE]" {
                    return Ok(());
                }
                read_event(data, &mut on)?;
            }
        }
    }
}

#[cfg(not(feature = "hydrate"))]
async fn stream_chat(_url: &str, _body: String, _on: impl FnMut(Event)) -> Result<(), String> {
    Err("the playground runs in the browser".to_owned())
}

/// One `data:` payload: text, usage, or an error the proxy sent mid-stream.
#[cfg_attr(
    not(feature = "hydrate"),
    allow(dead_code, reason = "read in the browser only")
)]
fn read_event(data: &str, on: &mut impl FnMut(Event)) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|_| "the answer was cut short".to_owned())?;
    if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
        return Err(m.to_owned());
    }
    if let Some(text) = v
        .pointer("/choices/0/delta/content")
        .and_then(|t| t.as_str())
    {
        on(Event::Delta(text.to_owned()));
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        let n = |f: &str| u.get(f).and_then(serde_json::Value::as_i64).unwrap_or(0);
        on(Event::Usage(n("prompt_tokens"), n("completion_tokens")));
    }
    Ok(())
}
