//! What every server function and handler of the console shares.

use secrecy::SecretString;

use super::auth::Throttle;
use super::db::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Where the console is reached, for links (invitations); no trailing slash.
    pub public_url: String,
    /// Kept in the data dir; for encrypting stored provider keys (later issues).
    pub secret: std::sync::Arc<SecretString>,
    pub throttle: Throttle,
    /// A session ends after this many seconds unused.
    pub session_idle_secs: i64,
    /// A session ends this long after sign-in, however active.
    pub session_absolute_ms: i64,
    pub leptos_options: leptos::config::LeptosOptions,
    /// Writes the proxy must see are published here after they commit.
    pub changes: super::changes::Changes,
    /// Whether providers and webhooks may be on loopback, private or
    /// link-local addresses (`core::net`).
    pub allow_private_networks: bool,
    pub org_creation: OrgCreation,
    /// Reverse proxies whose `X-Forwarded-For` names the client
    /// (`core::forwarded`).
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    /// The bearer token `GET /metrics` asks for (none: it is off).
    pub metrics_token: Option<std::sync::Arc<SecretString>>,
    /// Reads and checks SAML IdP metadata (the server's SAML library).
    pub saml_metadata: SamlMetadataParser,
    /// How each place models are served from has been answering on this
    /// instance: the proxy writes it, the console shows it.
    pub route_health: std::sync::Arc<super::virtual_models::HealthBoard>,
}

/// SAML IdP metadata, checked: entity id, sign-in URL, signing certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdpMetadata {
    pub entity_id: String,
    pub sso_url: String,
    /// Base64 DER, one per certificate.
    pub certs: Vec<String>,
}

/// Parses IdP metadata XML; refuses metadata without a signing certificate.
pub type SamlMetadataParser = fn(&str) -> Result<IdpMetadata, String>;

/// Who may create organizations from the console: anyone signed in, or only
/// operators (`tollgate admin create-owner` and the first-run setup).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgCreation {
    #[default]
    Anyone,
    Operators,
}

impl OrgCreation {
    /// 403 naming the setting when the console may not create organizations.
    pub fn check(self) -> Result<(), crate::error::AppError> {
        match self {
            OrgCreation::Anyone => Ok(()),
            OrgCreation::Operators => Err(crate::error::AppError::Forbidden {
                permission: "org_creation".to_owned(),
                message: "org_creation is \"operators\": an operator creates organizations \
                          (tollgate admin create-owner)"
                    .to_owned(),
            }),
        }
    }
}

impl axum::extract::FromRef<AppState> for leptos::config::LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}
