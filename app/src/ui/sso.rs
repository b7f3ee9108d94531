//! Single sign-on & SCIM (owners): the organization's OIDC and SAML
//! connections, enforced SSO with its break-glass owner, SCIM tokens and the
//! last SCIM requests.

use leptos::prelude::*;

use super::{error_of, org_param, Flag, RowAction, Shell, Table};
use crate::api::identity::{
    sso_overview, ConnectionView, CreateScimToken, DeleteConnection, RevokeScimToken,
    SaveOidcConnection, SaveSamlConnection, ScimTokenIssued, SetSsoEnforcement, SsoPage,
};
use crate::api::members::{list_role_templates, TemplateView};
use crate::error::AppError;
use crate::policy::OrgRole;

#[component]
pub fn SsoPage() -> impl IntoView {
    let org_id = org_param();
    let save_oidc = ServerAction::<SaveOidcConnection>::new();
    let save_saml = ServerAction::<SaveSamlConnection>::new();
    let delete = ServerAction::<DeleteConnection>::new();
    let enforce = ServerAction::<SetSsoEnforcement>::new();
    let create_token = ServerAction::<CreateScimToken>::new();
    let revoke_token = ServerAction::<RevokeScimToken>::new();
    let page = Resource::new(
        move || {
            (
                org_id.get(),
                save_oidc.version().get(),
                save_saml.version().get(),
                delete.version().get(),
                enforce.version().get(),
                create_token.version().get(),
                revoke_token.version().get(),
            )
        },
        |(o, ..)| sso_overview(o),
    );
    // The connection whose form is filled in (none: the forms add one).
    let editing = RwSignal::new(None::<ConnectionView>);
    // Bumped by a successful save, which empties that form.
    let oidc_saved = RwSignal::new(0usize);
    let saml_saved = RwSignal::new(0usize);
    Effect::new(move |_| {
        if let Some(Ok(_)) = save_oidc.value().get() {
            editing.set(None);
            oidc_saved.update(|n| *n += 1);
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(_)) = save_saml.value().get() {
            editing.set(None);
            saml_saved.update(|n| *n += 1);
        }
    });
    let shown = RwSignal::new(None::<ScimTokenIssued>);
    let token_form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if let Some(Ok(issued)) = create_token.value().get() {
            shown.set(Some(issued));
            if let Some(form) = token_form.get_untracked() {
                form.reset();
            }
        }
    });
    let editing_oidc = Memo::new(move |_| editing.get().filter(|c| c.kind == "oidc"));
    let editing_saml = Memo::new(move |_| editing.get().filter(|c| c.kind == "saml"));
    // Loaded once per organization: whether the page is for this person at
    // all (owners only). Its forms then stay in place while `page` reloads.
    let gate = Resource::new(move || org_id.get(), sso_overview);
    let templates = Resource::new(move || org_id.get(), list_role_templates);
    view! {
        <Shell org_id=org_id>
            <div data-testid="sso-page">
                <h1>"Single sign-on & SCIM"</h1>
                <p class="muted">"People whose email is at a connection's domain sign in through its identity provider (IdP) and join this organization with the role its group mapping gives them; a first sign-in through any connection must be at a domain one of them lists. SCIM lets the IdP create, update and deactivate members."</p>
                <OwnersOnly gate=gate>
                    <section class="card">
                        <h2>"Connections"</h2>
                        {move || error_of(delete.value().get()).map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        {loaded(page, move |p: SsoPage| connection_list(p, org_id, delete, editing))}
                    </section>
                    <div class="two">
                        <section class="card" id="oidc-form" data-testid="oidc-form">
                            // Keyed, so a save or a new edit draws fresh fields (a
                            // redraw in place would keep what was typed).
                            <For each=move || [(oidc_saved.get(), editing_oidc.get())] key=form_key let:item>
                                <OidcForm action=save_oidc org_id=org_id.get_untracked() conn=item.1 editing=editing templates=templates/>
                            </For>
                            {move || error_of(save_oidc.value().get()).map(|e| view! { <p class="error" role="alert" data-testid="oidc-error">{e}</p> })}
                        </section>
                        <section class="card" id="saml-form" data-testid="saml-form">
                            <For each=move || [(saml_saved.get(), editing_saml.get())] key=form_key let:item>
                                <SamlForm action=save_saml org_id=org_id.get_untracked() conn=item.1 editing=editing templates=templates/>
                            </For>
                            {move || error_of(save_saml.value().get()).map(|e| view! { <p class="error" role="alert" data-testid="saml-error">{e}</p> })}
                        </section>
                    </div>
                    <section class="card" data-testid="enforcement">
                        <h2>"Enforce single sign-on"</h2>
                        {loaded(page, move |p: SsoPage| enforcement_form(p, org_id, enforce))}
                        {move || error_of(enforce.value().get()).map(|e| view! { <p class="error" role="alert" data-testid="enforce-error">{e}</p> })}
                    </section>
                    <section class="card" data-testid="scim">
                        <h2>"SCIM provisioning"</h2>
                        <p class="muted">"A member the IdP deactivates loses their membership, their sessions and the keys they own at once. Reactivated, they get their membership back, but their keys stay revoked: they make new ones."</p>
                        {loaded(page, move |p: SsoPage| scim_tokens(p, org_id, create_token, revoke_token, token_form))}
                        {move || error_of(create_token.value().get()).or_else(|| error_of(revoke_token.value().get()))
                            .map(|e| view! { <p class="error" role="alert" data-testid="scim-error">{e}</p> })}
                        {move || shown.get().map(|issued| view! { <TokenReveal issued=issued on_close=move || shown.set(None)/> })}
                    </section>
                    <section class="card">
                        <h2>"Last SCIM requests"</h2>
                        {loaded(page, scim_events)}
                    </section>
                </OwnersOnly>
            </div>
        </Shell>
    }
}

/// The page's body for those it is for (owners); anyone else sees why not.
#[component]
fn OwnersOnly(gate: Resource<Result<SsoPage, AppError>>, children: ChildrenFn) -> impl IntoView {
    let children = StoredValue::new(children);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match gate.await {
                    Ok(_) => children.read_value()().into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// A connection form's identity: how many saves, and which connection it edits.
fn form_key(item: &(usize, Option<ConnectionView>)) -> (usize, Option<String>) {
    (item.0, item.1.as_ref().map(|c| c.id.clone()))
}

/// What the page loads, shown by `ok`; kept on screen while it reloads
/// after a change (a Transition), so the page does not flash.
fn loaded<V>(
    page: Resource<Result<SsoPage, AppError>>,
    ok: impl Fn(SsoPage) -> V + Clone + Send + Sync + 'static,
) -> impl IntoView
where
    V: IntoView + 'static,
{
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let ok = ok.clone();
                Suspend::new(async move {
                    match page.await {
                        Ok(p) => ok(p).into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })
            }}
        </Transition>
    }
}

fn connection_list(
    p: SsoPage,
    org_id: Memo<String>,
    delete: ServerAction<DeleteConnection>,
    editing: RwSignal<Option<ConnectionView>>,
) -> AnyView {
    if p.connections.is_empty() {
        return view! { <p class="muted">"No connection yet: add an OIDC or a SAML one below."</p> }
            .into_any();
    }
    view! {
        <Table testid="connections" head=vec!["Connection", "Domains", "Identity provider", "Give your IdP", ""]>
            {p.connections.into_iter().map(|c| {
                let saml = c.kind == "saml";
                let edit = c.clone();
                view! {
                    <tr data-testid=format!("connection-{}", c.name)>
                        <td><div class="stack">
                            <strong>{c.name.clone()}</strong>
                            <span>
                                {if saml { "SAML · " } else { "OIDC · " }}
                                <span class=if c.enabled { "status active" } else { "status expired" }>
                                    {if c.enabled { "enabled" } else { "disabled" }}
                                </span>
                            </span>
                        </div></td>
                        <td>{if c.domains.is_empty() { "none".to_owned() } else { c.domains.clone() }}</td>
                        <td><div class="stack">{idp_cell(&c)}</div></td>
                        <td><div class="stack">
                            {if saml {
                                view! {
                                    <span class="muted">"ACS URL"</span>
                                    <code data-testid="callback-url">{c.callback_url.clone()}</code>
                                    <span class="muted">"SP metadata"</span>
                                    <a href=c.sp_metadata_url.clone() rel="external" data-testid="sp-metadata">{c.sp_metadata_url.clone()}</a>
                                }.into_any()
                            } else {
                                view! {
                                    <span class="muted">"Redirect URI"</span>
                                    <code data-testid="callback-url">{c.callback_url.clone()}</code>
                                }.into_any()
                            }}
                        </div></td>
                        <td><div class="actions">
                            <a href=c.test_url.clone() rel="external" class="button secondary" data-testid="test-sign-in"
                                title="Signs you in at the IdP and shows what it sent and what the mapping grants; nothing is changed">"Test sign-in"</a>
                            <button type="button" class="secondary" data-testid="edit-connection"
                                on:click=move |_| editing.set(Some(edit.clone()))>"Edit"</button>
                            <RowAction action=delete org_id=org_id.get_untracked() field="connection_id" value=c.id.clone() label="Delete"/>
                        </div></td>
                    </tr>
                }
            }).collect_view()}
        </Table>
    }
    .into_any()
}

/// Where a connection's IdP is, as stored.
fn idp_cell(c: &ConnectionView) -> AnyView {
    if c.kind == "saml" {
        view! {
            <code>{c.idp_entity_id.clone().unwrap_or_default()}</code>
            <span class="muted">
                {if c.has_certificate { "signing certificate stored" } else { "no signing certificate" }}
            </span>
        }
        .into_any()
    } else {
        view! {
            <code>{c.issuer.clone().unwrap_or_default()}</code>
            <span class="muted">
                {format!("client {} · secret {}", c.client_id.clone().unwrap_or_default(),
                    c.client_secret_hint.clone().unwrap_or_else(|| "none".to_owned()))}
            </span>
        }
        .into_any()
    }
}

/// The heading of a connection form, and the way back from an edit.
#[component]
fn FormHead(
    kind: &'static str,
    conn: Option<ConnectionView>,
    editing: RwSignal<Option<ConnectionView>>,
) -> impl IntoView {
    match conn {
        Some(c) => view! {
            <div class="row spread">
                <h2>{format!("Edit {kind} connection “{}”", c.name)}</h2>
                <button type="button" class="secondary" on:click=move |_| editing.set(None)>"Cancel"</button>
            </div>
        }
        .into_any(),
        None => view! { <h2>{format!("Add {} {kind} connection", if kind == "SAML" { "a" } else { "an" })}</h2> }.into_any(),
    }
}

/// The fields OIDC and SAML connections share, named as the server
/// functions take them; `prefix` keeps the two forms' test ids apart.
#[component]
fn SharedFields(
    prefix: &'static str,
    conn: Option<ConnectionView>,
    templates: Templates,
    groups_label: &'static str,
) -> impl IntoView {
    let c = conn.clone();
    let val = move |f: fn(&ConnectionView) -> String| c.as_ref().map(f).unwrap_or_default();
    let role = conn.as_ref().map_or(OrgRole::Viewer, |c| c.default_role);
    let enabled = conn.as_ref().is_none_or(|c| c.enabled);
    let tid = move |f: &str| format!("{prefix}-{f}");
    view! {
        <div class="row">
            <label>"Name"<input name="name" required value=val(|c| c.name.clone()) placeholder="Okta" data-testid=tid("name")/></label>
            <label>"Email domains (comma separated)"
                <input name="domains" value=val(|c| c.domains.clone()) placeholder="example.com" data-testid=tid("domains")/>
            </label>
        </div>
        <div class="row">
            <label>"Default role"
                <select name="default_role" data-testid=tid("default-role")>
                    {OrgRole::ALL.into_iter().map(|r| view! { <option value=r.as_str() selected=r == role>{r.label()}</option> }).collect_view()}
                </select>
            </label>
            <label>{groups_label}
                <input name="groups_claim" value=val(|c| c.groups_claim.clone()) placeholder="groups" data-testid=tid("groups-claim")/>
            </label>
        </div>
        <label>"Group mapping"
            <textarea name="mapping" rows="4" spellcheck="false" placeholder="engineering => member" data-testid=tid("mapping")>{val(|c| c.mapping.clone())}</textarea>
        </label>
        <p class="muted help">
            "One rule per line: " <code>"group => role"</code> " (owner, member, billing or viewer) or "
            <code>"group => project:Name"</code> " (add " <code>"admin"</code> " for a project admin); several targets comma separated, e.g. "
            <code>"engineering => member, project:Platform admin"</code> ". Someone in no mapped group gets the default role. The mapping is applied again at every sign-in."
        </p>
        <TemplateChoice templates=templates chosen=conn.and_then(|c| c.default_template_id) testid=tid("template")/>
        <Flag name="enabled" label="Enabled" checked=enabled testid=if prefix == "oidc" { "oidc-enabled" } else { "saml-enabled" }/>
    }
}

/// The organization's role templates (loaded once per page).
type Templates = Resource<Result<Vec<TemplateView>, AppError>>;

/// The role template new members join with: a choice when the organization
/// has templates, else the connection's current one kept as it is.
#[component]
fn TemplateChoice(templates: Templates, chosen: Option<String>, testid: String) -> impl IntoView {
    let chosen = chosen.unwrap_or_default();
    view! {
        <Transition fallback=|| ()>
            {move || {
                let (chosen, testid) = (chosen.clone(), testid.clone());
                Suspend::new(async move {
                    match templates.await {
                        Ok(list) if !list.is_empty() => view! {
                            <label>"Role template new members join with (the limits of their keys; their role comes from the mapping)"
                                <select name="default_template_id" data-testid=testid>
                                    <option value="">"None"</option>
                                    {list.into_iter().map(|t| {
                                        let on = t.id == chosen;
                                        view! { <option value=t.id.clone() selected=on>{format!("{} ({})", t.name, t.role.label())}</option> }
                                    }).collect_view()}
                                </select>
                            </label>
                        }.into_any(),
                        _ => view! { <input type="hidden" name="default_template_id" value=chosen/> }.into_any(),
                    }
                })
            }}
        </Transition>
    }
}

#[component]
fn OidcForm(
    action: ServerAction<SaveOidcConnection>,
    org_id: String,
    conn: Option<ConnectionView>,
    editing: RwSignal<Option<ConnectionView>>,
    templates: Templates,
) -> impl IntoView {
    let c = conn.clone();
    let val = move |f: fn(&ConnectionView) -> String| c.as_ref().map(f).unwrap_or_default();
    let id = val(|c| c.id.clone());
    let scopes = conn
        .as_ref()
        .map_or_else(|| "openid email profile".to_owned(), |c| c.scopes.clone());
    let secret_label = match conn.as_ref().and_then(|c| c.client_secret_hint.clone()) {
        Some(hint) => format!("Client secret (empty: keep {hint})"),
        None => "Client secret".to_owned(),
    };
    let editing_now = conn.is_some();
    view! {
        <FormHead kind="OIDC" conn=conn.clone() editing=editing/>
        <p class="muted">"Okta, Entra ID, Google Workspace, Keycloak… Register Tollgate at the IdP as a web application with the redirect URI shown in the list once the connection is saved (" <code>"/sso/oidc/callback"</code> " on this server)."</p>
        <ActionForm action=action>
            <input type="hidden" name="org_id" value=org_id/>
            <input type="hidden" name="connection_id" value=id/>
            <label>"Issuer URL"
                <input name="issuer" required value=val(|c| c.issuer.clone().unwrap_or_default()) placeholder="https://login.example.com" data-testid="oidc-issuer"/>
            </label>
            <div class="row">
                <label>"Client ID"<input name="client_id" required value=val(|c| c.client_id.clone().unwrap_or_default()) data-testid="oidc-client-id"/></label>
                <label>{secret_label}
                    <input name="client_secret" type="password" autocomplete="off" required=!editing_now data-testid="oidc-client-secret"/>
                </label>
            </div>
            <label>"Scopes (space separated)"<input name="scopes" value=scopes data-testid="oidc-scopes"/></label>
            <SharedFields prefix="oidc" conn=conn templates=templates groups_label="Groups claim (a name or a path such as realm_access.roles)"/>
            <button type="submit" disabled=move || action.pending().get() data-testid="save-oidc">"Save OIDC connection"</button>
        </ActionForm>
    }
}

#[component]
fn SamlForm(
    action: ServerAction<SaveSamlConnection>,
    org_id: String,
    conn: Option<ConnectionView>,
    editing: RwSignal<Option<ConnectionView>>,
    templates: Templates,
) -> impl IntoView {
    let c = conn.clone();
    let val = move |f: fn(&ConnectionView) -> String| c.as_ref().map(f).unwrap_or_default();
    let id = val(|c| c.id.clone());
    let keep = if conn.is_some() {
        " Both empty: keep the stored metadata."
    } else {
        ""
    };
    view! {
        <FormHead kind="SAML" conn=conn.clone() editing=editing/>
        <p class="muted">{format!("The IdP's metadata: its URL (fetched now) or the XML pasted. It must carry a signing certificate.{keep} Once saved, give the IdP the ACS URL or the SP metadata shown in the list.")}</p>
        <ActionForm action=action>
            <input type="hidden" name="org_id" value=org_id/>
            <input type="hidden" name="connection_id" value=id/>
            <label>"IdP metadata URL"
                <input name="metadata_url" value=val(|c| c.metadata_url.clone().unwrap_or_default()) placeholder="https://idp.example.com/saml/metadata" data-testid="saml-metadata-url"/>
            </label>
            <label>"or the IdP metadata XML"
                <textarea name="metadata_xml" rows="3" spellcheck="false" placeholder="<EntityDescriptor …>" data-testid="saml-metadata-xml"></textarea>
            </label>
            <SharedFields prefix="saml" conn=conn templates=templates groups_label="Groups attribute"/>
            <p class="muted help" data-testid="saml-idp-initiated">"IdP-initiated sign-in (from the IdP's app portal) is not offered: every answer must match a sign-in this browser started at Tollgate, so an assertion stolen on its way cannot open a session. Point the IdP's app tile at Tollgate's sign-in page instead."</p>
            <button type="submit" disabled=move || action.pending().get() data-testid="save-saml">"Save SAML connection"</button>
        </ActionForm>
    }
}

fn enforcement_form(
    p: SsoPage,
    org_id: Memo<String>,
    enforce: ServerAction<SetSsoEnforcement>,
) -> impl IntoView {
    let owner_email = |id: &str| {
        p.owners
            .iter()
            .find(|(o, _)| o == id)
            .map(|(_, e)| e.clone())
    };
    let status = match (p.enforced, p.break_glass_user_id.as_deref()) {
        (true, who) => format!(
            "Enforced: members sign in through single sign-on only; {} keeps password sign-in.",
            who.and_then(owner_email)
                .unwrap_or_else(|| "no owner".to_owned())
        ),
        (false, _) => "Not enforced: members may also sign in with a password.".to_owned(),
    };
    let chosen = p.break_glass_user_id.clone().unwrap_or_default();
    view! {
        <p data-testid="enforcement-status" class=if p.enforced { "ok" } else { "muted" }>{status}</p>
        <ActionForm action=enforce>
            <input type="hidden" name="org_id" value=org_id.get_untracked()/>
            <Flag name="enforced" label="Members must sign in through single sign-on" checked=p.enforced testid="sso-enforced"/>
            <div class="row">
                <label>"Break-glass owner (keeps password sign-in, for when the IdP is down)"
                    <select name="break_glass_user_id" data-testid="break-glass">
                        <option value="">"Choose an owner"</option>
                        {p.owners.iter().map(|(id, email)| view! {
                            <option value=id.clone() selected=*id == chosen>{email.clone()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <button type="submit" data-testid="save-enforcement">"Save"</button>
            </div>
        </ActionForm>
    }
}

fn scim_tokens(
    p: SsoPage,
    org_id: Memo<String>,
    create: ServerAction<CreateScimToken>,
    revoke: ServerAction<RevokeScimToken>,
    form: NodeRef<leptos::html::Form>,
) -> impl IntoView {
    view! {
        <p>"Base URL for the IdP's SCIM app: " <code data-testid="scim-base-url">{p.scim_base_url.clone()}</code>
           " (send a token below as " <code>"Authorization: Bearer …"</code> ")."</p>
        <ActionForm action=create node_ref=form>
            <input type="hidden" name="org_id" value=org_id.get_untracked()/>
            <div class="row">
                <label>"Token name"<input name="name" required placeholder="okta-scim" data-testid="scim-token-name"/></label>
                <label>"Groups follow the mapping of"
                    <select name="connection_id" data-testid="scim-connection">
                        <option value="">"no connection (everyone a member)"</option>
                        {p.connections.iter().map(|c| view! { <option value=c.id.clone()>{c.name.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" data-testid="create-scim-token">"Create token"</button>
            </div>
        </ActionForm>
        {if p.tokens.is_empty() {
            view! { <p class="muted">"No SCIM token yet."</p> }.into_any()
        } else {
            view! {
                <Table testid="scim-tokens" head=vec!["Name", "Token", "Connection", "Created", "Last used", "Status", ""]>
                    {p.tokens.into_iter().map(|t| {
                        let active = t.status == "active";
                        view! {
                            <tr data-testid=format!("scim-token-{}", t.name)>
                                <td>{t.name.clone()}</td>
                                <td><code>{t.hint.clone()}</code></td>
                                <td>{t.connection.clone().unwrap_or_else(|| "none".to_owned())}</td>
                                <td>{t.created_at.clone()}</td>
                                <td>{t.last_used_at.clone().unwrap_or_else(|| "never".to_owned())}</td>
                                <td><span class=format!("status {}", t.status)>{t.status.clone()}</span></td>
                                <td>{active.then(|| view! {
                                    <RowAction action=revoke org_id=org_id.get_untracked() field="token_id" value=t.id.clone() label="Revoke"/>
                                })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </Table>
            }.into_any()
        }}
    }
}

/// A new SCIM token, shown this once with the base URL it goes with.
#[component]
fn TokenReveal(
    issued: ScimTokenIssued,
    on_close: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    let copied = RwSignal::new(false);
    let token = issued.token.clone();
    view! {
        <div class="reveal" role="status" data-testid="scim-token-reveal">
            <p><strong>{format!("SCIM token “{}”: copy it now. It will not be shown again", issued.token_view.name)}</strong>
               " — Tollgate keeps only a hash of it. Give it to the IdP with the base URL " <code class="inline">{issued.scim_base_url.clone()}</code> "."</p>
            <code data-testid="scim-token">{issued.token.clone()}</code>
            <div class="row">
                <button type="button" on:click=move |_| { super::copy(&token); copied.set(true); }>
                    {move || if copied.get() { "Copied" } else { "Copy to clipboard" }}
                </button>
                <button type="button" class="secondary" on:click=move |_| on_close()>"I have stored it"</button>
            </div>
        </div>
    }
}

fn scim_events(p: SsoPage) -> impl IntoView {
    if p.events.is_empty() {
        return view! { <p class="muted">"No SCIM request yet."</p> }.into_any();
    }
    view! {
        <Table testid="scim-events" head=vec!["Time", "Method", "Path", "Status", "Summary"]>
            {p.events.into_iter().map(|e| view! {
                <tr>
                    <td>{e.at.clone()}</td>
                    <td><code>{e.method.clone()}</code></td>
                    <td><code>{e.path.clone()}</code></td>
                    <td class="num">{e.status}</td>
                    <td>{e.summary.clone()}</td>
                </tr>
            }).collect_view()}
        </Table>
    }
    .into_any()
}
