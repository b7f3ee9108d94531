//! First-run setup, sign-in, accepting an invitation, and the account page.

use leptos::prelude::*;
use leptos_router::components::{Redirect, A};
use leptos_router::hooks::{use_params_map, use_query_map};

use super::{error_of, go, Shell};
use crate::api::auth::{setup_status, ChangePassword, Setup, SignIn, SignedIn};
use crate::api::identity::sign_in_route;
use crate::api::members::{invitation_info, AcceptInvitation};
use crate::api::orgs::CreateOrg;
use crate::error::AppError;
use crate::format::format_time;

/// After a successful sign-in-like action, load the console afresh.
fn on_signed_in(value: impl Fn() -> Option<Result<SignedIn, AppError>> + Send + Sync + 'static) {
    Effect::new(move |_| {
        if let Some(Ok(s)) = value() {
            match s.org_id {
                Some(id) => go(&format!("/orgs/{id}")),
                None => go("/account"),
            }
        }
    });
}

/// A password field with a "show" toggle (a control that works only once hydrated).
#[component]
fn PasswordField(
    name: &'static str,
    label: &'static str,
    #[prop(optional)] autocomplete: &'static str,
) -> impl IntoView {
    let shown = RwSignal::new(false);
    view! {
        <label>
            {label}
            <input
                name=name
                type=move || if shown.get() { "text" } else { "password" }
                required
                autocomplete=autocomplete
                data-testid=name
            />
        </label>
        <label class="inline">
            <input type="checkbox" data-testid=format!("show-{name}") on:change=move |ev| shown.set(event_target_checked(&ev))/>
            "Show password"
        </label>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let needed = Resource::new(|| (), |_| setup_status());
    let action = ServerAction::<Setup>::new();
    on_signed_in(move || action.value().get());
    view! {
        <main class="narrow card">
            <h1>"Set up Tollgate"</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match needed.await {
                        Ok(true) => view! {
                            <p class="muted">"Create the first account and its organization. You will be its owner."</p>
                            <ActionForm action=action>
                                <label>"Your name"<input name="name" required autocomplete="name"/></label>
                                <label>"Email"<input name="email" type="email" required autocomplete="email"/></label>
                                <PasswordField name="password" label="Password (10 characters or more)" autocomplete="new-password"/>
                                <label>"Organization name"<input name="org_name" required/></label>
                                <button type="submit" disabled=move || action.pending().get()>"Create owner account"</button>
                            </ActionForm>
                            {move || error_of(action.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        }.into_any(),
                        _ => view! { <Redirect path="/login"/> }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

/// Email first: "Continue" asks whether the email's domain signs in through
/// an identity provider; if so the page offers it, else the password.
/// Before hydration "Continue" is a GET to `/login?email=`, which the
/// server renders as the next step.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let email = RwSignal::new(query.with_untracked(|q| q.get("email")).unwrap_or_default());
    // What the email field shows when the first step is (re)drawn.
    let typed = RwSignal::new(email.get_untracked());
    let field = NodeRef::<leptos::html::Input>::new();
    let route = Resource::new(
        move || email.get(),
        |e| async move {
            if e.trim().is_empty() {
                None
            } else {
                Some(sign_in_route(e).await)
            }
        },
    );
    let action = ServerAction::<SignIn>::new();
    on_signed_in(move || action.value().get());
    let sso_error = move || query.read().get("sso_error").filter(|e| !e.is_empty());
    view! {
        <main class="narrow card">
            <h1>"Sign in to Tollgate"</h1>
            {move || sso_error().map(|e| view! { <p class="error" role="alert" data-testid="sso-error">"Single sign-on failed: "{e}</p> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match route.await {
                        Some(Ok(via)) => {
                            let address = email.get_untracked();
                            match (via.sso_url, via.connection_name) {
                                (Some(url), name) => {
                                    let name = name.unwrap_or_else(|| "single sign-on".to_owned());
                                    view! {
                                        <SigningInAs email=email/>
                                        <p>"Your organization signs you in through " <strong>{name.clone()}</strong> "."</p>
                                        <a class="button wide" href=url rel="external" data-testid="sso-continue">{format!("Continue with {name}")}</a>
                                        <details class="alt-sign-in">
                                            <summary data-testid="use-password">"Sign in with a password instead"</summary>
                                            <p class="muted">"When single sign-on is enforced, only the organization's break-glass owner may."</p>
                                            <PasswordSignIn email=address action=action/>
                                        </details>
                                    }.into_any()
                                }
                                (None, _) => view! {
                                    <SigningInAs email=email/>
                                    <PasswordSignIn email=address action=action/>
                                }.into_any(),
                            }
                        }
                        other => {
                            let error = other.and_then(Result::err).map(|e| e.to_string());
                            view! {
                                <form method="get" action="/login" on:submit=move |ev| {
                                    ev.prevent_default();
                                    // Read from the field: text typed before hydration fired no input event.
                                    let value = field.get_untracked().map(|f| f.value()).unwrap_or_default();
                                    typed.set(value.clone());
                                    email.set(value);
                                }>
                                    <label>"Email"
                                        <input name="email" type="email" required autocomplete="username" autofocus data-testid="email"
                                            value=typed.get_untracked() node_ref=field/>
                                    </label>
                                    <button type="submit" class="wide" data-testid="continue">"Continue"</button>
                                </form>
                                {error.map(|e| view! { <p class="error" role="alert">{e}</p> })}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </main>
    }
}

/// The email chosen at the first step, and the way back to change it.
#[component]
fn SigningInAs(email: RwSignal<String>) -> impl IntoView {
    view! {
        <p class="muted">
            {email.get_untracked()} " · "
            <a href="/login" data-testid="change-email" on:click=move |ev| {
                ev.prevent_default();
                email.set(String::new());
            }>"Use another email"</a>
        </p>
    }
}

/// The password step (the email already chosen).
#[component]
fn PasswordSignIn(email: String, action: ServerAction<SignIn>) -> impl IntoView {
    view! {
        <ActionForm action=action>
            <input type="hidden" name="email" value=email autocomplete="username"/>
            <PasswordField name="password" label="Password" autocomplete="current-password"/>
            <button type="submit" disabled=move || action.pending().get()>"Sign in"</button>
        </ActionForm>
        {move || error_of(action.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
}

#[component]
pub fn AcceptInvitePage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let info = Resource::new(token, invitation_info);
    let action = ServerAction::<AcceptInvitation>::new();
    on_signed_in(move || action.value().get());
    view! {
        <main class="narrow card">
            <h1>"Join an organization"</h1>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match info.await {
                        Ok(i) => view! {
                            <p>"You are invited to "<strong>{i.org_name.clone()}</strong>" as "<strong>{i.role.label()}</strong>
                               " ("{i.email.clone()}"). The link is valid until "{format_time(i.expires_at)}"."</p>
                            <ActionForm action=action>
                                <input type="hidden" name="token" value=token()/>
                                <p class="muted">"With an account for this email already, enter its password (the name is then not used). Otherwise choose your name and a password of 10 characters or more."</p>
                                <label>"Your name (for a new account)"<input name="name" autocomplete="name"/></label>
                                <PasswordField name="password" label="Password" autocomplete="current-password"/>
                                <button type="submit" disabled=move || action.pending().get()>"Accept invitation"</button>
                            </ActionForm>
                            {move || error_of(action.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        }.into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p><A href="/login">"Sign in"</A> }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let create = ServerAction::<CreateOrg>::new();
    Effect::new(move |_| {
        if let Some(Ok(org)) = create.value().get() {
            go(&format!("/orgs/{}", org.id));
        }
    });
    view! {
        <Shell>
            <section class="card">
                <h2>"Change password"</h2>
                <ActionForm action=change>
                    <PasswordField name="current_password" label="Current password" autocomplete="current-password"/>
                    <PasswordField name="new_password" label="New password (10 characters or more)" autocomplete="new-password"/>
                    <button type="submit">"Change password"</button>
                </ActionForm>
                {move || match change.value().get() {
                    Some(Ok(())) => Some(view! { <p class="ok" role="status">"Password changed. Your other sessions were signed out."</p> }.into_any()),
                    Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()),
                    None => None,
                }}
            </section>
            <section class="card">
                <h2>"New organization"</h2>
                <p class="muted">"You will be its owner."</p>
                <ActionForm action=create>
                    <label>"Name"<input name="name" required/></label>
                    <button type="submit">"Create organization"</button>
                </ActionForm>
                {move || error_of(create.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            </section>
        </Shell>
    }
}
