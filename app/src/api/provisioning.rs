//! Provisioning keys: owners create them (the token is shown once), list and
//! revoke them. Automation uses them on the machine APIs; never on `/v1`.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningKeyView {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// active or revoked.
    pub status: String,
}

/// A new provisioning key; `token` is its only appearance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningKeyIssued {
    pub key: ProvisioningKeyView,
    pub token: String,
}

#[cfg(feature = "ssr")]
fn view_of(k: crate::core::provisioning::ProvisioningKey) -> ProvisioningKeyView {
    use crate::format::format_time;
    ProvisioningKeyView {
        id: k.id,
        name: k.name,
        hint: k.hint,
        created_at: format_time(k.created_at),
        last_used_at: k.last_used_at.map(format_time),
        status: if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
    }
}

#[server(prefix = "/api/console", endpoint = "list_provisioning_keys")]
pub async fn list_provisioning_keys(org_id: String) -> Result<Vec<ProvisioningKeyView>, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageAllKeys, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let list = crate::core::provisioning::list(&mut conn, &c.scope).await?;
        Ok(list.into_iter().map(view_of).collect())
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "create_provisioning_key")]
pub async fn create_provisioning_key(
    org_id: String,
    name: String,
) -> Result<ProvisioningKeyIssued, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageAllKeys, |c| async move {
        let name = crate::core::domain::name("name", &name, 100)?;
        let (key, token) = crate::core::ops::create_provisioning_key(
            &c.state.db.pool,
            &c.actor,
            c.scope.org_id(),
            &name,
            Some(&c.user.id),
        )
        .await?;
        Ok(ProvisioningKeyIssued {
            key: view_of(key),
            token: token.expose().to_owned(),
        })
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "revoke_provisioning_key")]
pub async fn revoke_provisioning_key(org_id: String, key_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::ManageAllKeys, |c| async move {
        crate::core::ops::revoke_provisioning_key(&c.state.db.pool, &c.actor, &c.scope, &key_id)
            .await
    })
    .await
}
