//! The console's server functions, one module per resource. Each one extracts,
//! authorizes through `policy`, calls a plain `core` function and maps the result.

pub mod audit;
pub mod auth;
pub mod billing;
pub mod catalogue;
pub mod identity;
pub mod keys;
pub mod mcp;
pub mod members;
pub mod orgs;
pub mod overview;
pub mod playground;
pub mod projects;
pub mod prompts;
pub mod providers;
pub mod provisioning;
pub mod usage;
pub mod virtual_models;

/// Every server function lives under this prefix, apart from `/v1` and the REST APIs.
pub const PREFIX: &str = "/api/console";

/// The server functions that answer without a session: the first-run setup,
/// sign-in and accepting an invitation. Everything else answers 401.
pub const PUBLIC_SERVER_FNS: &[&str] = &[
    "/api/console/setup_status",
    "/api/console/setup",
    "/api/console/sign_in",
    "/api/console/invitation_info",
    "/api/console/accept_invitation",
    "/api/console/sign_in_route",
];

/// Starts a session for a user who signed in elsewhere (single sign-on).
#[cfg(feature = "ssr")]
pub use ssr::start_session;

/// Checks a console session's right to chat through a playground key.
#[cfg(feature = "ssr")]
pub use playground::authorize_playground;

#[cfg(feature = "ssr")]
pub(crate) mod ssr {
    use leptos::prelude::use_context;
    use std::future::Future;
    use std::net::{IpAddr, SocketAddr};
    use tower_sessions::Session;

    use crate::core::audit::Actor;
    use crate::core::state::AppState;
    use crate::core::users::{self, User};
    use crate::core::{members, now_ms};
    use crate::error::AppError;
    use crate::policy::{self, Action, OrgMember, OrgScope, ProjectMember, ProjectScope};

    const USER_KEY: &str = "uid";
    const SINCE_KEY: &str = "since";
    const STAMP_KEY: &str = "pw";

    pub fn state() -> Result<AppState, AppError> {
        use_context::<AppState>().ok_or_else(|| AppError::internal("context", &"AppState missing"))
    }

    pub async fn session() -> Result<Session, AppError> {
        leptos_axum::extract::<Session>()
            .await
            .map_err(|e| AppError::internal("session layer", &e))
    }

    /// The caller's address, behind the operator's trusted proxies too. A
    /// forwarded entry that is not an address counts as the peer itself, so
    /// that garbage in the header never escapes the per-address throttle.
    pub async fn client_ip(state: &AppState) -> Option<IpAddr> {
        let peer = leptos_axum::extract::<axum::extract::ConnectInfo<SocketAddr>>()
            .await
            .ok()?
            .0
            .ip();
        let headers = use_context::<axum::http::request::Parts>()?.headers;
        crate::core::forwarded::client_ip(peer, &headers, &state.trusted_proxies)
            .or(Some(peer.to_canonical()))
    }

    /// A password attempt for `email`: counted by the sign-in throttle (per
    /// account and client address), then the account's stored credentials.
    pub async fn password_attempt(
        state: &AppState,
        email: &crate::core::domain::Email,
    ) -> Result<Option<crate::core::users::Credentials>, AppError> {
        state
            .throttle
            .check(email.as_str(), client_ip(state).await)?;
        let mut conn = state.db.pool.acquire().await?;
        Ok(crate::core::users::credentials(&mut conn, email).await?)
    }

    /// Sets the HTTP status of a failed server function from its error. Only
    /// when called over HTTP: during a page render the page keeps its own status.
    pub fn answer<T>(result: Result<T, AppError>) -> Result<T, AppError> {
        if let Err(e) = &result {
            set_status(e);
        }
        result
    }

    /// The status (and a 429's `Retry-After`) of an error answered over HTTP.
    pub fn set_status(e: &AppError) {
        let called_over_http = use_context::<axum::http::request::Parts>()
            .is_some_and(|p| p.uri.path().starts_with(super::PREFIX));
        let Some(opts) = use_context::<leptos_axum::ResponseOptions>().filter(|_| called_over_http)
        else {
            return;
        };
        if let Ok(code) = axum::http::StatusCode::from_u16(e.status()) {
            opts.set_status(code);
        }
        if let AppError::RateLimited { retry_after_secs } = e {
            opts.insert_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
    }

    /// Starts a fresh session for `user` (a new id, so a planted one is useless).
    pub async fn start_session(session: &Session, user: &User) -> Result<(), AppError> {
        let fail = |e: tower_sessions::session::Error| AppError::internal("session store", &e);
        session.cycle_id().await.map_err(fail)?;
        session.insert(USER_KEY, &user.id).await.map_err(fail)?;
        session.insert(SINCE_KEY, now_ms()).await.map_err(fail)?;
        session
            .insert(STAMP_KEY, user.password_changed_at)
            .await
            .map_err(fail)?;
        Ok(())
    }

    /// Keeps the current session valid after the user's own password change.
    pub async fn restamp(session: &Session, stamp: i64) -> Result<(), AppError> {
        session
            .insert(STAMP_KEY, stamp)
            .await
            .map_err(|e| AppError::internal("session store", &e))
    }

    pub async fn end_session(session: &Session) -> Result<(), AppError> {
        session
            .flush()
            .await
            .map_err(|e| AppError::internal("session store", &e))
    }

    /// The signed-in user, or 401. A session past its absolute lifetime, or
    /// older than the user's last password change, is ended here.
    pub async fn signed_in() -> Result<(AppState, Session, User), AppError> {
        let state = state()?;
        let session = session().await?;
        let user = signed_in_with(&state, &session).await?;
        Ok((state, session, user))
    }

    /// [`signed_in`] for a handler outside Leptos, given its session.
    pub async fn signed_in_with(state: &AppState, session: &Session) -> Result<User, AppError> {
        let get = |e: tower_sessions::session::Error| AppError::internal("session store", &e);
        let Some(uid) = session.get::<String>(USER_KEY).await.map_err(get)? else {
            return Err(AppError::Unauthenticated);
        };
        let since = session
            .get::<i64>(SINCE_KEY)
            .await
            .map_err(get)?
            .unwrap_or(0);
        let stamp = session.get::<i64>(STAMP_KEY).await.map_err(get)?;
        let mut conn = state.db.pool.acquire().await?;
        let user = users::by_id(&mut conn, &uid).await?;
        match user {
            Some(u)
                if now_ms() - since < state.session_absolute_ms
                    && stamp == Some(u.password_changed_at)
                    && since > u.signed_out_at =>
            {
                Ok(u)
            }
            _ => {
                drop(conn);
                end_session(session).await?;
                Err(AppError::Unauthenticated)
            }
        }
    }

    /// The caller's membership of `org_id`; 404 when there is none, so another
    /// tenant cannot tell an organization exists.
    pub async fn member_of(org_id: &str) -> Result<(AppState, User, OrgMember), AppError> {
        let (state, _, user) = signed_in().await?;
        let mut conn = state.db.pool.acquire().await?;
        let member = members::membership(&mut conn, &user.id, org_id)
            .await?
            .ok_or_else(|| AppError::not_found("organization"))?;
        drop(conn);
        Ok((state, user, member))
    }

    /// Signed in, a member of `org_id`, and allowed `action` there.
    pub async fn authorize(
        org_id: &str,
        action: Action,
    ) -> Result<(AppState, User, OrgScope), AppError> {
        let (state, user, member) = member_of(org_id).await?;
        let scope = policy::authorize_org(&member, action)?;
        Ok((state, user, scope))
    }

    /// Signed in, able to see the project (else 404: its name stays unknown),
    /// and allowed `action` in it.
    pub async fn authorize_project(
        org_id: &str,
        project_id: &str,
        action: Action,
    ) -> Result<(AppState, User, ProjectScope), AppError> {
        let (state, user, member) = member_of(org_id).await?;
        let scope = in_project(&state, member, project_id, action).await?;
        Ok((state, user, scope))
    }

    /// What an authorized server function works with: the state, the caller
    /// as the audit log names them, and the scope the policy granted.
    pub struct Ctx<S> {
        pub state: AppState,
        pub user: User,
        pub actor: Actor,
        pub scope: S,
    }

    impl<S> Ctx<S> {
        fn new(state: AppState, user: User, scope: S) -> Ctx<S> {
            let actor = Actor::user(&user.id, &user.email);
            Ctx {
                state,
                user,
                actor,
                scope,
            }
        }
    }

    /// Runs `f` once the caller may do `action` in `org_id`; its error sets
    /// the HTTP status.
    pub async fn in_org<T, F: Future<Output = Result<T, AppError>>>(
        org_id: &str,
        action: Action,
        f: impl FnOnce(Ctx<OrgScope>) -> F,
    ) -> Result<T, AppError> {
        with_scope(authorize(org_id, action), f).await
    }

    /// Runs `f` with what `authorized` granted; its error sets the HTTP status.
    async fn with_scope<S, T, F: Future<Output = Result<T, AppError>>>(
        authorized: impl Future<Output = Result<(AppState, User, S), AppError>>,
        f: impl FnOnce(Ctx<S>) -> F,
    ) -> Result<T, AppError> {
        let run = async {
            let (state, user, scope) = authorized.await?;
            f(Ctx::new(state, user, scope)).await
        };
        answer(run.await)
    }

    /// Runs `f` once the caller may do `action` in the project.
    pub async fn in_project_of<T, F: Future<Output = Result<T, AppError>>>(
        org_id: &str,
        project_id: &str,
        action: Action,
        f: impl FnOnce(Ctx<ProjectScope>) -> F,
    ) -> Result<T, AppError> {
        with_scope(authorize_project(org_id, project_id, action), f).await
    }

    /// Runs `f` on one key once the caller may act on it (`authorize_key`).
    pub async fn on_key<T, F: Future<Output = Result<T, AppError>>>(
        org_id: &str,
        key_id: &str,
        f: impl FnOnce(Ctx<ProjectScope>, crate::core::keys::KeyRow) -> F,
    ) -> Result<T, AppError> {
        let run = async {
            let (state, user, scope, key) = authorize_key(org_id, key_id).await?;
            f(Ctx::new(state, user, scope), key).await
        };
        answer(run.await)
    }

    /// The policy's decision for a member of the organization in one project.
    pub(crate) async fn in_project(
        state: &AppState,
        member: OrgMember,
        project_id: &str,
        action: Action,
    ) -> Result<ProjectScope, AppError> {
        let mut conn = state.db.pool.acquire().await?;
        let role =
            crate::core::projects::role_of(&mut conn, &member.org_id, project_id, &member.user_id)
                .await?;
        let standing = ProjectMember {
            org: member,
            project_id: project_id.to_owned(),
            role,
        };
        if !standing.knows_project() {
            return Err(AppError::not_found("project"));
        }
        Ok(policy::authorize_project(&standing, action)?)
    }

    /// Authorizes an action on one key (named by id): its project must be
    /// visible, and the key the caller's own unless they manage the project's keys.
    pub async fn authorize_key(
        org_id: &str,
        key_id: &str,
    ) -> Result<(AppState, User, ProjectScope, crate::core::keys::KeyRow), AppError> {
        // Session and membership first: strangers learn nothing about keys.
        let (state, user, member) = member_of(org_id).await?;
        let mut conn = state.db.pool.acquire().await?;
        let project_id = crate::core::keys::project_of(&mut conn, org_id, key_id).await?;
        drop(conn);
        let scope = in_project(&state, member, &project_id, Action::ManageOwnKeys).await?;
        let mut conn = state.db.pool.acquire().await?;
        let key = crate::core::keys::get(&mut conn, &scope, key_id).await?;
        drop(conn);
        policy::authorize_key(&scope, key.owner_id.as_deref())?;
        Ok((state, user, scope, key))
    }
}

/// A checkbox as a form sends it: absent or off is false.
#[cfg(feature = "ssr")]
pub(crate) fn checkbox(field: &str, raw: Option<&str>) -> Result<bool, crate::error::AppError> {
    use crate::error::AppError;
    match raw.map(str::trim) {
        None | Some("" | "false" | "off" | "0") => Ok(false),
        Some("on" | "true" | "1") => Ok(true),
        Some(other) => Err(AppError::invalid(
            field,
            format!("'{other}' is not on or off"),
        )),
    }
}
