//! Single sign-on routes, public (the IdP sends people back here):
//! `/sso/{connection}/start` sends the browser to the IdP, `/sso/oidc/callback`
//! (OIDC, one redirect URI for every connection) and `/sso/{connection}/acs`
//! then `/sso/{connection}/finish` (SAML) take the answer, check it and
//! start a session; `/sso/{connection}/metadata` is a SAML connection's SP
//! metadata. A failure redirects to the sign-in page with its reason, and no
//! session. With `?test=1`, an owner sees what the IdP sent and what the
//! mapping would grant, and nothing is changed.

pub mod oidc;
pub mod saml;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_app::core::identity::{self, Connection, Kind};
use tollgate_app::core::ops::sso::Asserted;
use tollgate_app::core::state::AppState;
use tollgate_app::core::{members, now_ms};
use tollgate_app::policy::{self, Action};
use tower_sessions::Session;

/// Where the session keeps a sign-in in flight (single use).
const PENDING_KEY: &str = "sso_pending";
/// How long a sign-in may take at the IdP.
const PENDING_FOR_MS: i64 = 10 * 60 * 1000;

/// Providers by connection id, with the connection's `updated_at` they were made for.
type Discovered = HashMap<String, (i64, Arc<oidc::OidcProvider>)>;

/// The routes' state: the console's, the OIDC providers discovered so far
/// (by connection, rebuilt when the connection changes), the HTTP client.
#[derive(Clone)]
pub struct Sso {
    pub app: AppState,
    providers: Arc<Mutex<Discovered>>,
    /// `None` when it could not be built: OIDC sign-in then refuses.
    http: Option<reqwest::Client>,
}

pub fn paths() -> Vec<String> {
    [
        "/sso/{connection}/start",
        "/sso/oidc/callback",
        "/sso/{connection}/acs",
        "/sso/{connection}/metadata",
        "/sso/{connection}/finish",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

pub fn router(app: AppState) -> Router {
    let http = oidc::build_http_client(app.allow_private_networks)
        .map_err(|e| tracing::error!(error = %e, "OIDC sign-in is unavailable"))
        .ok();
    let state = Sso {
        app,
        providers: Arc::new(Mutex::new(HashMap::new())),
        http,
    };
    Router::new()
        .route("/sso/{connection}/start", get(start))
        .route("/sso/oidc/callback", get(oidc_callback))
        .route("/sso/{connection}/acs", post(saml::acs))
        .route("/sso/{connection}/metadata", get(saml::metadata))
        .route("/sso/{connection}/finish", get(saml::finish))
        .with_state(state)
}

/// A sign-in in flight, kept in the session until the IdP answers. Not
/// `Debug`: it holds the PKCE verifier and the nonce.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    connection_id: String,
    state: String,
    nonce: String,
    pkce_verifier: String,
    test: bool,
    started_at: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    test: Option<String>,
    login_hint: Option<String>,
}

/// Back to the sign-in page with the reason; no session is started.
pub fn refused(reason: &str) -> Response {
    tracing::info!(reason, "single sign-on refused");
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sso_error", reason)
        .finish();
    Redirect::to(&format!("/login?{q}")).into_response()
}

impl Sso {
    pub async fn connection(&self, id: &str) -> Result<Connection, String> {
        let mut conn = self
            .app
            .db
            .pool
            .acquire()
            .await
            .map_err(|_| "the database is unavailable; try again".to_owned())?;
        identity::by_id(&mut conn, id)
            .await
            .map_err(|_| "the database is unavailable; try again".to_owned())?
            .filter(|c| c.enabled)
            .ok_or_else(|| {
                "this single sign-on connection does not exist or is disabled".to_owned()
            })
    }

    /// The one OIDC redirect URI of the instance (the session says which
    /// connection a sign-in is for).
    fn callback_url(&self) -> String {
        format!("{}/sso/oidc/callback", self.app.public_url)
    }

    /// The connection's provider, discovered once per version of the connection.
    async fn provider(&self, c: &Connection) -> Result<Arc<oidc::OidcProvider>, String> {
        if let Ok(cache) = self.providers.lock() {
            if let Some((at, p)) = cache.get(&c.id) {
                if *at == c.updated_at {
                    return Ok(p.clone());
                }
            }
        }
        let issuer = c.issuer.clone().ok_or("the connection has no issuer")?;
        tollgate_app::core::net::check_url("issuer", &issuer, self.app.allow_private_networks)
            .await
            .map_err(|e| e.to_string())?;
        let secret = {
            let mut conn = self
                .app
                .db
                .pool
                .acquire()
                .await
                .map_err(|_| "the database is unavailable; try again".to_owned())?;
            identity::sealed_secret(&mut conn, &c.id)
                .await
                .map_err(|_| "the database is unavailable; try again".to_owned())?
        };
        let client_secret = secret
            .and_then(|s| tollgate_app::core::providers::open(&self.app.secret, &s))
            .map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned());
        let cfg = oidc::OidcConfig {
            issuer,
            client_id: c.client_id.clone().unwrap_or_default(),
            client_secret,
            redirect_url: self.callback_url(),
            scopes: c
                .scopes
                .iter()
                .filter(|s| *s != "openid")
                .cloned()
                .collect(),
            groups_claim: c.groups_claim.clone(),
        };
        let http = self
            .http
            .clone()
            .ok_or("OIDC sign-in is unavailable on this server (see its log)")?;
        let p = Arc::new(oidc::OidcProvider::discover(http, cfg).await?);
        if let Ok(mut cache) = self.providers.lock() {
            cache.insert(c.id.clone(), (c.updated_at, p.clone()));
        }
        Ok(p)
    }

    /// Whether the session's user may test this connection (an owner of its organization).
    async fn may_test(&self, session: &Session, c: &Connection) -> bool {
        let Ok(Some(uid)) = session.get::<String>("uid").await else {
            return false;
        };
        let Ok(mut conn) = self.app.db.pool.acquire().await else {
            return false;
        };
        match members::membership(&mut conn, &uid, &c.org_id).await {
            Ok(Some(m)) => policy::authorize_org(&m, Action::SingleSignOn).is_ok(),
            _ => false,
        }
    }
}

/// Sends the browser to the connection's IdP.
async fn start(
    State(sso): State<Sso>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
) -> Response {
    let c = match sso.connection(&id).await {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let test = q.test.is_some_and(|t| t == "1");
    if test && !sso.may_test(&session, &c).await {
        return (
            StatusCode::FORBIDDEN,
            "only an owner of the organization may test its connection",
        )
            .into_response();
    }
    match c.kind {
        Kind::Oidc => {
            let provider = match sso.provider(&c).await {
                Ok(p) => p,
                Err(e) => {
                    return refused(&format!("the identity provider could not be reached: {e}"))
                }
            };
            let login = provider.start_login();
            let pending = Pending {
                connection_id: c.id.clone(),
                state: login.state,
                nonce: login.nonce,
                pkce_verifier: login.pkce_verifier,
                test,
                started_at: now_ms(),
            };
            if session.insert(PENDING_KEY, &pending).await.is_err() {
                return refused("the session store is unavailable; try again");
            }
            let mut url = login.authorize_url;
            if let Some(hint) = q.login_hint.filter(|h| h.len() <= 254) {
                let h: String = url::form_urlencoded::byte_serialize(hint.as_bytes()).collect();
                url.push_str(&format!("&login_hint={h}"));
            }
            Redirect::to(&url).into_response()
        }
        Kind::Saml => saml::start(&sso, &session, &c, test).await,
    }
}

#[derive(Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The OIDC answer: the state (single use, from this session), the code
/// exchanged with PKCE, the ID token verified, userinfo read; then sign-in.
async fn oidc_callback(
    State(sso): State<Sso>,
    session: Session,
    Query(q): Query<CallbackQuery>,
) -> Response {
    // Single use: taken out of the session whatever happens next.
    let pending: Option<Pending> = session.remove(PENDING_KEY).await.ok().flatten();
    if let Some(err) = q.error {
        let d: String = q
            .error_description
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return refused(&format!(
            "the identity provider refused the sign-in: {err} {d}"
        ));
    }
    let Some(pending) = pending else {
        return refused(
            "this sign-in was not started in this browser, or was already used; start again",
        );
    };
    let id = pending.connection_id.clone();
    if now_ms().saturating_sub(pending.started_at) > PENDING_FOR_MS {
        return refused("the sign-in took too long; start again");
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refused("the identity provider sent no code");
    };
    let c = match sso.connection(&id).await {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let provider = match sso.provider(&c).await {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    let saved = oidc::PendingLogin {
        authorize_url: String::new(),
        state: pending.state,
        nonce: pending.nonce,
        pkce_verifier: pending.pkce_verifier,
    };
    let login = match provider.finish_login(&saved, &state, &code).await {
        Ok(l) => l,
        Err(e) => return refused(&e),
    };
    let claims = &login.claims;
    let mut merged = oidc::claims_json(claims);
    // Many IdPs put email and groups only in userinfo: it is read too, and
    // the ID token's own claims win.
    if let Ok(info) = provider
        .userinfo(login.access_token.clone(), claims.subject().clone())
        .await
    {
        if let (serde_json::Value::Object(m), serde_json::Value::Object(extra)) =
            (&mut merged, oidc::claims_json(&info))
        {
            for (k, v) in extra {
                if m.get(&k).is_none_or(|x| x.is_null()) {
                    m.insert(k, v);
                }
            }
        }
    }
    let text = |k: &str| merged.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let groups = oidc::lookup_path(&merged, &c.groups_claim).map(|v| oidc::string_list(Some(v)));
    let asserted = Asserted {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: text("email").unwrap_or_default(),
        email_verified: match merged.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        },
        name: text("name").or_else(|| text("preferred_username")),
        groups,
    };
    finish(&sso, &session, &c, asserted, pending.test).await
}

/// Signs in (or, testing, shows) what the IdP asserted.
pub async fn finish(
    sso: &Sso,
    session: &Session,
    c: &Connection,
    a: Asserted,
    test: bool,
) -> Response {
    if test {
        return test_page(c, &a);
    }
    match tollgate_app::core::ops::sso::sign_in(&sso.app, c, &a).await {
        Ok((user, _)) => {
            if let Err(e) = tollgate_app::api::start_session(session, &user).await {
                return refused(&e.to_string());
            }
            tracing::info!(user_id = %user.id, connection = %c.id, "signed in through single sign-on");
            Redirect::to(&format!("/orgs/{}", c.org_id)).into_response()
        }
        Err(e) => refused(&e.to_string()),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The test sign-in's answer: what came back, what the mapping grants.
fn test_page(c: &Connection, a: &Asserted) -> Response {
    let groups = a.groups.clone();
    let granted = c.mapping.resolve(groups.as_deref().unwrap_or_default());
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Test sign-in</title>\
         <link rel=\"stylesheet\" href=\"/pkg/tollgate.css\"></head><body><main class=\"narrow card\">\
         <h1>Test sign-in: {name}</h1><p class=\"ok\" role=\"status\">The identity provider answered and its answer checked out. Nothing was changed.</p>\
         <dl><dt>Issuer</dt><dd>{iss}</dd><dt>Subject</dt><dd>{sub}</dd><dt>Email</dt><dd>{email} ({verified})</dd>\
         <dt>Groups ({claim})</dt><dd>{groups}</dd><dt>Role the mapping gives</dt><dd>{role}</dd>\
         <dt>Projects the mapping gives</dt><dd>{projects}</dd></dl><p><a href=\"/orgs/{org}/sso\">Back</a></p></main></body></html>",
        name = esc(&c.name),
        iss = esc(&a.issuer),
        sub = esc(&a.subject),
        email = esc(&a.email),
        verified = if a.email_verified { "verified" } else { "not verified" },
        claim = esc(&c.groups_claim),
        groups = groups.map_or_else(|| "none sent".to_owned(), |g| esc(&g.join(", "))),
        role = granted.role.label(),
        projects = esc(&granted.projects.iter().map(|p| p.0.clone()).collect::<Vec<_>>().join(", ")),
        org = esc(&c.org_id),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}
