//! Pages and components, rendered on the server and hydrated in the browser.

mod access;
mod account;
mod audit;
mod billing;
mod keys;
mod mcp;
mod members;
mod models;
mod org;
mod permissions;
mod playground;
mod projects;
mod prompts;
mod providers;
mod requests;
mod sso;
mod usage;
mod virtual_models;

use leptos::prelude::*;
use leptos::server_fn::client::Client;
use leptos::server_fn::codec::PostUrl;
use leptos::server_fn::request::ClientReq;
use leptos::server_fn::{Http, ServerFn};
use leptos::web_sys::FormData;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Redirect, Route, Router, Routes, A};
use leptos_router::hooks::{use_navigate, use_params_map};
use leptos_router::path;

use crate::api::auth::{current_user, setup_status, Me, SignOut};
use crate::error::AppError;
use serde::de::DeserializeOwned;

pub fn shell(options: LeptosOptions) -> impl IntoView {
    let favicon = hashed(&options, "favicon", "favicon", "svg").unwrap_or("/favicon.svg".into());
    let echarts = hashed(&options, "echarts", "echarts", "js").unwrap_or("/pkg/echarts.js".into());
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href=favicon type="image/svg+xml"/>
                // ECharts is fetched by the chart component, on pages that draw one.
                <meta name=usage::ECHARTS_META content=echarts/>
                <HashedStylesheet options=options.clone() id="tollgate"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// `/pkg/<stem>.<hash>.<ext>` by the build's hash file (see `HashedStylesheet`),
/// when the server found one.
fn hashed(options: &LeptosOptions, key: &str, stem: &str, ext: &str) -> Option<String> {
    if !options.hash_files {
        return None;
    }
    let hashes = std::fs::read_to_string(options.hash_file.as_ref()).ok()?;
    let hash = hashes
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)?
        .1
        .trim();
    Some(format!("/{}/{stem}.{hash}.{ext}", options.site_pkg_dir))
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="Tollgate"/>
        <Router>
            <Routes fallback=|| view! { <main class="narrow"><h1>"Not found"</h1><A href="/">"Back to the console"</A></main> }>
                <Route path=path!("/") view=Home/>
                <Route path=path!("/setup") view=account::SetupPage/>
                <Route path=path!("/login") view=account::LoginPage/>
                <Route path=path!("/invite/:token") view=account::AcceptInvitePage/>
                <Route path=path!("/account") view=account::AccountPage/>
                <Route path=path!("/permissions") view=permissions::PermissionsPage/>
                <Route path=path!("/orgs/:org_id") view=org::OrgPage/>
                <Route path=path!("/orgs/:org_id/members") view=members::MembersPage/>
                <Route path=path!("/orgs/:org_id/audit") view=audit::AuditPage/>
                <Route path=path!("/orgs/:org_id/projects") view=projects::ProjectsPage/>
                <Route path=path!("/orgs/:org_id/projects/:project_id") view=projects::ProjectPage/>
                <Route path=path!("/orgs/:org_id/keys") view=keys::MyKeysPage/>
                <Route path=path!("/orgs/:org_id/models") view=models::ModelsPage/>
                <Route path=path!("/orgs/:org_id/prompts") view=prompts::PromptsPage/>
                <Route path=path!("/orgs/:org_id/providers") view=providers::ProvidersPage/>
                <Route path=path!("/orgs/:org_id/mcp") view=mcp::McpServersPage/>
                <Route path=path!("/orgs/:org_id/access") view=access::AccessPage/>
                <Route path=path!("/orgs/:org_id/sso") view=sso::SsoPage/>
                <Route path=path!("/orgs/:org_id/usage") view=usage::UsagePage/>
                <Route path=path!("/orgs/:org_id/playground") view=playground::PlaygroundPage/>
                <Route path=path!("/orgs/:org_id/billing") view=billing::BillingPage/>
                <Route path=path!("/orgs/:org_id/projects/:project_id/requests") view=requests::RequestLogPage/>
            </Routes>
        </Router>
    }
}

/// Its children, drawn only in the browser once the page has hydrated
/// (nothing on the server): for parts whose server render could differ
/// from the first client render.
#[component]
pub fn AfterHydration(children: ChildrenFn) -> impl IntoView {
    let mounted = RwSignal::new(false);
    Effect::new(move || mounted.set(true));
    move || mounted.get().then(|| children())
}

/// Sends the visitor where they belong: setup, sign-in, or their first organization.
#[component]
fn Home() -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    let setup = Resource::new(|| (), |_| setup_status());
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match me.await {
                    Ok(me) => match me.orgs.first() {
                        Some(o) => view! { <Redirect path=format!("/orgs/{}", o.id)/> }.into_any(),
                        None => view! { <Redirect path="/account"/> }.into_any(),
                    },
                    Err(_) => match setup.await {
                        Ok(true) => view! { <Redirect path="/setup"/> }.into_any(),
                        _ => view! { <Redirect path="/login"/> }.into_any(),
                    },
                }
            })}
        </Suspense>
    }
}

/// Full page load to `path`: after sign-in or sign-out every resource is stale.
pub(crate) fn go(path: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let _ = w.location().set_href(path);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = path;
}

/// Puts text on the clipboard (the browser only).
pub(crate) fn copy(text: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = text;
}

/// The message of a failed action, for display.
pub(crate) fn error_of<T>(r: Option<Result<T, AppError>>) -> Option<String> {
    r.and_then(|r| r.err()).map(|e| e.to_string())
}

/// What `r` loads, shown by `ok`; "Loading…" meanwhile, the error in its place.
pub(crate) fn loaded<T, V>(
    r: Resource<Result<T, AppError>>,
    ok: impl Fn(T) -> V + Clone + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {outcome(r, ok)}
        </Suspense>
    }
}

/// Like [`loaded`], but what `r` loaded stays on screen while it loads again
/// (after an action): the page keeps its height, and its scroll position.
pub(crate) fn loaded_kept<T, V>(
    r: Resource<Result<T, AppError>>,
    ok: impl Fn(T) -> V + Clone + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {outcome(r, ok)}
        </Transition>
    }
}

/// What `r` resolves to: `ok`'s view of it, or its error.
fn outcome<T, V>(
    r: Resource<Result<T, AppError>>,
    ok: impl Fn(T) -> V + Clone + Send + Sync + 'static,
) -> impl Fn() -> Suspend<AnyView> + Send + Sync + 'static
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    move || {
        let ok = ok.clone();
        Suspend::new(async move {
            match r.await {
                Ok(v) => ok(v).into_any(),
                Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
            }
        })
    }
}

/// What `r` loads as a list: `empty` when it is empty, else `ok`'s view of it.
pub(crate) fn loaded_list<T, V>(
    r: Resource<Result<Vec<T>, AppError>>,
    empty: &'static str,
    ok: impl Fn(Vec<T>) -> V + Clone + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    loaded(r, move |list| {
        if list.is_empty() {
            view! { <p class="muted">{empty}</p> }.into_any()
        } else {
            ok(list).into_any()
        }
    })
}

/// A table row's one-button form: posts the organization and the row's
/// `field` = `value` to `action`.
#[component]
pub(crate) fn RowAction<S, P>(
    action: ServerAction<S>,
    org_id: String,
    field: &'static str,
    value: String,
    label: &'static str,
) -> impl IntoView
where
    S: DeserializeOwned + ServerFn<Protocol = Http<PostUrl, P>> + Clone + Send + Sync + 'static,
    <<S::Client as Client<S::Error>>::Request as ClientReq<S::Error>>::FormData: From<FormData>,
    S::Output: Send + Sync + 'static,
    S::Error: Send + Sync + 'static,
    <S as ServerFn>::Client: Client<<S as ServerFn>::Error>,
{
    view! {
        <ActionForm action=action attr:class="inline-form">
            <input type="hidden" name="org_id" value=org_id/>
            <input type="hidden" name=field value=value/>
            <button type="submit" class="danger">{label}</button>
        </ActionForm>
    }
}

/// A table: one header row of `head`, then `children` (its `<tr>` rows).
#[component]
pub(crate) fn Table(
    #[prop(optional)] testid: Option<&'static str>,
    head: Vec<&'static str>,
    children: Children,
) -> impl IntoView {
    view! {
        <table data-testid=testid>
            <thead><tr>{head.into_iter().map(|h| view! { <th>{h}</th> }).collect_view()}</tr></thead>
            <tbody>{children()}</tbody>
        </table>
    }
}

/// A labelled checkbox that sends `name=on` when ticked.
#[component]
pub(crate) fn Flag(
    name: &'static str,
    label: &'static str,
    #[prop(optional)] checked: bool,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    view! {
        <label class="inline">
            <input type="checkbox" name=name value="on" checked=checked data-testid=testid/>
            {label}
        </label>
    }
}

/// A labelled `<select>` of fixed `(value, text)` options.
#[component]
pub(crate) fn Choice(
    label: &'static str,
    name: &'static str,
    options: &'static [(&'static str, &'static str)],
) -> impl IntoView {
    view! {
        <label>{label}
            <select name=name>
                {options.iter().map(|&(value, text)| view! { <option value=value>{text}</option> }).collect_view()}
            </select>
        </label>
    }
}

/// A labelled filter `<select>`: `any` (value "") first, then the
/// `(value, text)` options, the one valued `selected` chosen.
#[component]
pub(crate) fn Filter(
    label: &'static str,
    name: &'static str,
    any: &'static str,
    options: Vec<(String, String)>,
    selected: String,
) -> impl IntoView {
    view! {
        <label>{label}
            <select name=name>
                <option value="">{any}</option>
                {options.into_iter().map(|(value, text)| {
                    let chosen = value == selected;
                    view! { <option value=value selected=chosen>{text}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

/// The current organization's id from the route.
pub(crate) fn org_param() -> Memo<String> {
    let params = use_params_map();
    Memo::new(move |_| params.read().get("org_id").unwrap_or_default())
}

/// The signed-in frame: header with the organization switcher and navigation.
/// Without a session it sends the visitor to sign in.
#[component]
pub(crate) fn Shell(
    #[prop(optional)] org_id: Option<Memo<String>>,
    children: ChildrenFn,
) -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    let stop = Resource::new(
        move || org_id.map(|m| m.get()),
        |id| async move {
            match id {
                Some(id) => crate::api::billing::get_stop(id).await.ok(),
                None => None,
            }
        },
    );
    let children = StoredValue::new(children);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let stop = stop.await;
                match me.await {
                    Ok(me) => view! {
                        <Header me=me.clone() org_id=org_id/>
                        {stop.and_then(|s| banner(&s)).map(|text| view! { <div class="banner" role="alert" data-testid="stop-banner">{text}</div> })}
                        <main>{children.read_value()()}</main>
                    }.into_any(),
                    Err(AppError::Unauthenticated) => view! { <Redirect path="/login"/> }.into_any(),
                    Err(e) => view! { <main class="narrow"><p class="error">{e.to_string()}</p></main> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The banner's text when the organization's requests are stopped.
fn banner(s: &crate::api::billing::Stop) -> Option<String> {
    if s.credits_exhausted {
        Some("This organization's prepaid credits are used up: every API request answers 402 until an owner or billing manager adds credits.".to_owned())
    } else if s.cap_exhausted {
        Some(format!(
            "This organization has reached its spend cap: every API request answers 402 until {}, or until an owner or billing manager raises the cap.",
            s.cap_resets_at.map_or_else(|| "the cap is raised".to_owned(), crate::format::format_time)
        ))
    } else {
        None
    }
}

#[component]
fn Header(me: Me, org_id: Option<Memo<String>>) -> impl IntoView {
    let navigate = use_navigate();
    let sign_out_action = ServerAction::<SignOut>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = sign_out_action.value().get() {
            go("/login");
        }
    });
    let current = move || org_id.map(|m| m.get()).unwrap_or_default();
    let orgs = me.orgs.clone();
    let nav_role = {
        let orgs = orgs.clone();
        move || orgs.iter().find(|o| o.id == current()).map(|o| o.role)
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"Tollgate"</a>
            <label class="switcher">
                <span class="visually-hidden">"Organization"</span>
                <select
                    aria-label="Organization"
                    on:change=move |ev| {
                        let id = event_target_value(&ev);
                        if !id.is_empty() {
                            navigate(&format!("/orgs/{id}"), Default::default());
                        }
                    }
                >
                    <option value="" selected=move || current().is_empty()>"Choose an organization"</option>
                    {orgs.into_iter().map(|o| {
                        let id = o.id.clone();
                        view! { <option value=o.id.clone() selected=move || current() == id>{o.name}</option> }
                    }).collect_view()}
                </select>
            </label>
            <div class="account">
                <a href="/permissions">"Permissions"</a>
                <a href="/account">{me.email.clone()}</a>
                <button class="link" on:click=move |_| { sign_out_action.dispatch(SignOut {}); }>"Sign out"</button>
            </div>
            {move || {
                let id = current();
                (!id.is_empty()).then(|| {
                    let seat = nav_role().map(crate::policy::Seat::at_org);
                    view! { <OrgNav org_id=id seat=seat/> }
                })
            }}
        </header>
    }
}

/// A link of the navigation: path under `/orgs/:id`, text, the action it needs.
type NavLink = (&'static str, &'static str, Option<crate::policy::Action>);

/// The organization's pages in groups, each a heading and its links
/// `(path under /orgs/:id, text, the action it needs)`; a link without an
/// action is for every member. Four groups keep the bar readable from a
/// narrow window to 1280 px, with room for one more link in each.
const NAV: [(&str, &[NavLink]); 4] = {
    use crate::policy::Action::*;
    [
        (
            "Organization",
            &[
                ("", "Overview", None),
                ("/members", "Members", Some(ManageOrgMembers)),
                ("/audit", "Audit log", Some(ViewAuditLog)),
            ],
        ),
        (
            "Projects & keys",
            &[
                ("/projects", "Projects", None),
                ("/keys", "My keys", None),
                ("/playground", "Playground", Some(ManageOwnKeys)),
                ("/models", "Models", None),
                ("/prompts", "Prompts", Some(PromptManagement)),
            ],
        ),
        (
            "Money",
            &[
                ("/usage", "Usage", None),
                ("/billing", "Billing", Some(BillingAndCredits)),
            ],
        ),
        (
            "Settings",
            &[
                ("/providers", "Providers", Some(ExternalKeys)),
                ("/mcp", "MCP", Some(McpServers)),
                ("/access", "Provisioning", Some(ManageAllKeys)),
                ("/sso", "SSO", Some(SingleSignOn)),
            ],
        ),
    ]
};

/// The organization's navigation: the groups of [`NAV`] with the links the
/// policy allows `seat` (a group left empty is not shown); the current page
/// is marked for assistive technology and styled by it. A group's heading is
/// plain text read before its links (not a labelled group: "Organization"
/// already names the switcher).
#[component]
fn OrgNav(org_id: String, seat: Option<crate::policy::Seat>) -> impl IntoView {
    let path = leptos_router::hooks::use_location().pathname;
    let base = format!("/orgs/{org_id}");
    // A member's seat in a project they may join: a link for what they may
    // do there (the playground) shows; the page itself asks per project.
    let may = move |a: Option<crate::policy::Action>| {
        a.is_none_or(|a| {
            seat.is_some_and(|s| {
                crate::policy::allows(a, s)
                    || crate::policy::allows(
                        a,
                        s.with_project(Some(crate::policy::ProjectRole::Member)),
                    )
            })
        })
    };
    view! {
        <nav class="orgnav" aria-label="Console">
            {NAV.iter().filter_map(|&(heading, links)| {
                let shown: Vec<_> = links.iter().filter(|l| may(l.2)).collect();
                (!shown.is_empty()).then(|| view! {
                    <div class="nav-group">
                        <span class="nav-heading">{heading}</span>
                        <span class="nav-links">
                        {shown.into_iter().map(|&(sub, text, _)| {
                            let href = format!("{base}{sub}");
                            let here = href.clone();
                            let exact = sub.is_empty();
                            let current = move || {
                                let p = path.get();
                                let on = p == here || (!exact && p.starts_with(&format!("{here}/")));
                                on.then_some("page")
                            };
                            view! { <a href=href aria-current=current>{text}</a> }
                        }).collect_view()}
                        </span>
                    </div>
                })
            }).collect_view()}
        </nav>
    }
}
