//! The playground: a member chats with the models their project allows,
//! spending through a key of their own (made on first use, listed with
//! their keys, held to every limit). The chat itself goes through the proxy
//! (`server::playground`), which asks [`authorize_playground`] first.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The path the console posts a playground chat to, `?org_id=&key_id=`.
pub const CHAT_PATH: &str = "/api/console/playground/chat";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playground {
    pub key_id: String,
    pub key_name: String,
    /// What the key may call: catalogue and virtual models.
    pub models: Vec<String>,
    /// The catalogue's prices (micro-USD per million tokens, in and out),
    /// to price an answer by the model that served it.
    pub prices: Vec<(String, i64, i64)>,
    /// The prompts the project's keys may use, to start a chat from.
    pub prompts: Vec<String>,
}

/// The caller's playground key in a project, made on first use; the token
/// is never shown (the console chats by the key's id).
#[server(prefix = "/api/console", endpoint = "open_playground")]
pub async fn open_playground(org_id: String, project_id: String) -> Result<Playground, AppError> {
    use super::ssr::*;
    use crate::core::keys::{self, Holder};
    use crate::policy::Action;
    in_project_of(
        &org_id,
        &project_id,
        Action::ManageOwnKeys,
        |c| async move {
            let now = crate::core::now_ms();
            let mut conn = c.state.db.pool.acquire().await?;
            let found = keys::playground_key(&mut conn, &c.scope, &c.user.id, now).await?;
            let project = crate::core::projects::get(&mut conn, &c.scope).await?;
            let catalogue =
                crate::core::catalogue::load_for_proxy(&mut conn, c.scope.org_id()).await?;
            let template =
                crate::core::templates::of_member(&mut conn, c.scope.org_id(), &c.user.id).await?;
            let known = crate::core::prompts::ids(&mut conn, c.scope.org()).await?;
            drop(conn);
            let prompts: Vec<String> = project
                .prompts
                .iter()
                .filter(|p| known.contains(p))
                .cloned()
                .collect();
            let key = match found {
                Some(id) => {
                    let mut conn = c.state.db.pool.acquire().await?;
                    keys::get(&mut conn, &c.scope, &id).await?
                }
                None => {
                    let mut limits = keys::KeyLimits {
                        name: crate::core::domain::name("name", "Playground", 100)?,
                        caps: crate::core::limits::Caps::open(project.caps.models.clone()),
                        expires_at: None,
                        no_content_logging: false,
                        tags: vec!["playground".to_owned()],
                        metadata: serde_json::json!({ "tollgate_playground": true }),
                    };
                    if let Some(t) = template {
                        t.apply(&mut limits, now);
                    }
                    let (row, _token) = crate::core::ops::create_key(
                        &c.state,
                        &c.actor,
                        &c.scope,
                        Holder::User(&c.user.id),
                        &limits,
                    )
                    .await?;
                    row
                }
            };
            let mut models: Vec<String> = key
                .limits
                .caps
                .models
                .iter()
                .filter(|m| project.caps.models.contains(m))
                .cloned()
                .collect();
            models.sort();
            Ok(Playground {
                key_id: key.id,
                key_name: key.limits.name,
                models,
                prices: catalogue
                    .into_iter()
                    .map(|m| (m.id, m.input_price.micros(), m.output_price.micros()))
                    .collect(),
                prompts,
            })
        },
    )
    .await
}

/// Whether the session's user may chat through `key_id` in `org_id`: a
/// member who may manage their own keys in its project, and the key their
/// own playground key.
/// 404 for a key they may not see, as everywhere else.
#[cfg(feature = "ssr")]
pub async fn authorize_playground(
    state: &crate::core::state::AppState,
    session: &tower_sessions::Session,
    org_id: &str,
    key_id: &str,
) -> Result<(), AppError> {
    use crate::policy::Action;
    let user = super::ssr::signed_in_with(state, session).await?;
    let mut conn = state.db.pool.acquire().await?;
    let member = crate::core::members::membership(&mut conn, &user.id, org_id)
        .await?
        .ok_or_else(|| AppError::not_found("organization"))?;
    let project_id = crate::core::keys::project_of(&mut conn, org_id, key_id).await?;
    drop(conn);
    let scope = super::ssr::in_project(state, member, &project_id, Action::ManageOwnKeys).await?;
    let mut conn = state.db.pool.acquire().await?;
    let key = crate::core::keys::get(&mut conn, &scope, key_id).await?;
    // The policy's rule for acting on a key, then the playground's own:
    // only one's own playground key is chatted through.
    crate::policy::authorize_key(&scope, key.owner_id.as_deref())?;
    let playground =
        key.limits.metadata.get("tollgate_playground") == Some(&serde_json::Value::Bool(true));
    if key.owner_id.as_deref() != Some(user.id.as_str()) || !playground {
        return Err(AppError::not_found("key"));
    }
    Ok(())
}
