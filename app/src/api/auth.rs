//! Setup, sign-in, sign-out, the current user, and changing a password.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::OrgRole;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSummary {
    pub id: String,
    pub name: String,
    pub role: OrgRole,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: String,
    pub email: String,
    pub name: String,
    pub orgs: Vec<OrgSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    /// Where the console goes next: the user's first organization.
    pub org_id: Option<String>,
}

/// Whether the first-run setup page is still open.
#[server(prefix = "/api/console", endpoint = "setup_status")]
pub async fn setup_status() -> Result<bool, AppError> {
    use super::ssr::*;
    answer(async { crate::core::auth::setup_needed(&state()?.db.pool).await }.await)
}

/// Creates the first user and their organization, and signs them in.
#[server(prefix = "/api/console", endpoint = "setup")]
pub async fn setup(
    email: String,
    name: String,
    password: String,
    org_name: String,
) -> Result<SignedIn, AppError> {
    use super::ssr::*;
    use crate::core::domain::{Email, OrgName, Password, PersonName};
    answer(
        async {
            let state = state()?;
            let email = Email::parse("email", &email)?;
            let name = PersonName::parse("name", &name)?;
            let org_name = OrgName::parse("org_name", &org_name)?;
            let password = Password::parse("password", password)?;
            let done = crate::core::auth::setup(&state.db.pool, &email, &name, password, &org_name)
                .await?;
            start_session(&session().await?, &done.user).await?;
            Ok(SignedIn {
                org_id: Some(done.org.id),
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "sign_in")]
pub async fn sign_in(email: String, password: String) -> Result<SignedIn, AppError> {
    use super::ssr::*;
    use crate::core::domain::{Email, Password};
    use crate::core::{auth, orgs};
    answer(
        async {
            let state = state()?;
            let email = Email::parse("email", &email)?;
            let creds = password_attempt(&state, &email).await?;
            let (user, hash) = match creds {
                Some(c) => (Some(c.user), Some(c.password_hash)),
                None => (None, None),
            };
            let ok = auth::verify_password(Password::for_check(password), hash).await?;
            let Some(user) = user.filter(|_| ok) else {
                tracing::info!("sign-in refused");
                return Err(AppError::invalid("password", "wrong email or password"));
            };
            let mut conn = state.db.pool.acquire().await?;
            // An organization that enforces single sign-on refuses its
            // members' passwords (its break-glass owner excepted).
            let enforced = crate::core::identity::password_refused_by(&mut conn, &user.id).await?;
            if let Some(org) = enforced.first() {
                tracing::info!(user_id = %user.id, "password sign-in refused: SSO enforced");
                return Err(AppError::Forbidden {
                    permission: "password sign-in".into(),
                    message: format!(
                        "'{org}' requires single sign-on: sign in through its identity provider, not with a password"
                    ),
                });
            }
            start_session(&session().await?, &user).await?;
            let first = orgs::of_user(&mut conn, &user.id).await?.into_iter().next();
            tracing::info!(user_id = %user.id, "signed in");
            Ok(SignedIn {
                org_id: first.map(|o| o.id),
            })
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), AppError> {
    use super::ssr::*;
    answer(
        async {
            let (_, session, _) = signed_in().await?;
            end_session(&session).await
        }
        .await,
    )
}

#[server(prefix = "/api/console", endpoint = "current_user")]
pub async fn current_user() -> Result<Me, AppError> {
    use super::ssr::*;
    answer(
        async {
            let (state, _, user) = signed_in().await?;
            let mut conn = state.db.pool.acquire().await?;
            let orgs = crate::core::orgs::of_user(&mut conn, &user.id).await?;
            Ok(Me {
                id: user.id,
                email: user.email,
                name: user.name,
                orgs: orgs
                    .into_iter()
                    .map(|o| OrgSummary {
                        id: o.id,
                        name: o.name,
                        role: o.role,
                    })
                    .collect(),
            })
        }
        .await,
    )
}

/// Changes the caller's password; every other session of theirs ends.
#[server(prefix = "/api/console", endpoint = "change_password")]
pub async fn change_password(
    current_password: String,
    new_password: String,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::core::audit::Actor;
    use crate::core::domain::Password;
    use crate::core::{auth, ops, users};
    answer(
        async {
            let (state, session, user) = signed_in().await?;
            state.throttle.check(&user.email, client_ip(&state).await)?;
            let new_password = Password::parse("new_password", new_password)?;
            let hash = {
                let mut conn = state.db.pool.acquire().await?;
                users::password_hash(&mut conn, &user.id).await?
            };
            if !auth::verify_password(Password::for_check(current_password), hash).await? {
                return Err(AppError::invalid(
                    "current_password",
                    "is not your current password",
                ));
            }
            let new_hash = auth::hash_password(new_password).await?;
            let actor = Actor::user(&user.id, &user.email);
            let stamp = ops::change_password(&state, &actor, &user.id, &new_hash).await?;
            restamp(&session, stamp).await
        }
        .await,
    )
}
