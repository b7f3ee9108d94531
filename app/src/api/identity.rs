//! The "Single sign-on & SCIM" page: connections (OIDC, SAML), enforced
//! SSO, SCIM tokens and the last SCIM requests; and the sign-in page's
//! question "does this email sign in through an IdP?". Owners only.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::policy::OrgRole;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub id: String,
    /// oidc or saml.
    pub kind: String,
    pub name: String,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_hint: Option<String>,
    pub scopes: String,
    pub metadata_url: Option<String>,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    pub has_certificate: bool,
    pub allow_idp_initiated: bool,
    pub domains: String,
    pub default_role: OrgRole,
    pub groups_claim: String,
    pub default_template_id: Option<String>,
    /// One rule per line: `group => role, project:Name admin`.
    pub mapping: String,
    pub enabled: bool,
    /// Where the IdP sends people back (OIDC redirect URI, SAML ACS).
    pub callback_url: String,
    /// SAML: our entity id and metadata URL.
    pub sp_entity_id: String,
    pub sp_metadata_url: String,
    /// Opens a test sign-in (no account is changed).
    pub test_url: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimTokenView {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub connection: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimTokenIssued {
    pub token_view: ScimTokenView,
    /// Shown this once.
    pub token: String,
    pub scim_base_url: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimEventView {
    pub at: String,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoPage {
    pub connections: Vec<ConnectionView>,
    pub enforced: bool,
    pub break_glass_user_id: Option<String>,
    /// (user id, email) of the owners, for the break-glass choice.
    pub owners: Vec<(String, String)>,
    pub tokens: Vec<ScimTokenView>,
    pub events: Vec<ScimEventView>,
    pub scim_base_url: String,
}

/// How an email signs in: through its domain's connection, or with a password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInVia {
    /// Where the browser goes to sign in with the IdP.
    pub sso_url: Option<String>,
    pub connection_name: Option<String>,
}

#[cfg(feature = "ssr")]
pub(crate) mod edit {
    use super::*;
    use crate::core::identity::{Connection, GroupRule, Mapping};
    use crate::core::projects;
    use crate::policy::{OrgScope, ProjectRole};

    /// The mapping as the page edits it: `group => role, project:Name admin`.
    pub fn mapping_text(m: &Mapping, project_names: &[(String, String)]) -> String {
        m.rules
            .iter()
            .map(|r| {
                let mut targets = Vec::new();
                if let Some(role) = r.role {
                    targets.push(role.as_str().to_owned());
                }
                if let Some(p) = &r.project_id {
                    let name = project_names
                        .iter()
                        .find(|(id, _)| id == p)
                        .map_or(p.as_str(), |(_, n)| n.as_str());
                    let role = match r.project_role {
                        Some(ProjectRole::Admin) => " admin",
                        _ => "",
                    };
                    targets.push(format!("project:{name}{role}"));
                }
                format!("{} => {}", r.group, targets.join(", "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Parses the page's mapping; projects by name or id in the organization.
    pub async fn parse_mapping(
        conn: &mut sqlx::AnyConnection,
        scope: &OrgScope,
        raw: &str,
    ) -> Result<Vec<GroupRule>, AppError> {
        let mut rules = Vec::new();
        for (n, line) in raw.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AppError::invalid("mapping", format!("line {}: {why}", n + 1));
            let (group, targets) = line
                .split_once("=>")
                .ok_or_else(|| bad("write 'group => role' or 'group => project:Name [admin]'"))?;
            let group = group.trim();
            if group.is_empty() || group.chars().count() > 256 {
                return Err(bad("the group name is empty or too long"));
            }
            for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let mut rule = GroupRule {
                    group: group.to_owned(),
                    role: None,
                    project_id: None,
                    project_role: None,
                };
                if let Some(p) = t.strip_prefix("project:") {
                    let (name, role) = match p.trim().rsplit_once(' ') {
                        Some((n, "admin")) => (n.trim(), ProjectRole::Admin),
                        Some((n, "member")) => (n.trim(), ProjectRole::Member),
                        _ => (p.trim(), ProjectRole::Member),
                    };
                    let found = projects::find(conn, scope, name)
                        .await?
                        .ok_or_else(|| bad(&format!("no project '{name}' in this organization")))?;
                    rule.project_id = Some(found.id);
                    rule.project_role = Some(role);
                } else {
                    rule.role = Some(t.parse::<OrgRole>().map_err(|e| bad(&e))?);
                }
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    pub fn domains(raw: &str) -> Result<Vec<String>, AppError> {
        let mut out: Vec<String> = Vec::new();
        for d in raw
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let d = d.trim_start_matches('@').to_ascii_lowercase();
            let ok = d.len() <= 253
                && d.contains('.')
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(AppError::invalid(
                    "domains",
                    format!("'{d}' is not a domain such as example.com"),
                ));
            }
            if !out.contains(&d) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn view(
        c: &Connection,
        public_url: &str,
        project_names: &[(String, String)],
    ) -> ConnectionView {
        let base = format!("{public_url}/sso/{}", c.id);
        ConnectionView {
            id: c.id.clone(),
            kind: c.kind.as_str().to_owned(),
            name: c.name.clone(),
            issuer: c.issuer.clone(),
            client_id: c.client_id.clone(),
            client_secret_hint: c.client_secret_hint.clone(),
            scopes: c.scopes.join(" "),
            metadata_url: c.metadata_url.clone(),
            idp_entity_id: c.idp_entity_id.clone(),
            idp_sso_url: c.idp_sso_url.clone(),
            has_certificate: !c.idp_certs.is_empty(),
            allow_idp_initiated: c.allow_idp_initiated,
            domains: c.domains.join(", "),
            default_role: c.mapping.default_role,
            groups_claim: c.groups_claim.clone(),
            default_template_id: c.mapping.default_template_id.clone(),
            mapping: mapping_text(&c.mapping, project_names),
            enabled: c.enabled,
            callback_url: match c.kind {
                crate::core::identity::Kind::Oidc => format!("{public_url}/sso/oidc/callback"),
                crate::core::identity::Kind::Saml => format!("{base}/acs"),
            },
            sp_entity_id: format!("{base}/metadata"),
            sp_metadata_url: format!("{base}/metadata"),
            test_url: format!("/sso/{}/start?test=1", c.id),
        }
    }
}

#[server(prefix = "/api/console", endpoint = "sso_overview")]
pub async fn sso_overview(org_id: String) -> Result<SsoPage, AppError> {
    use super::ssr::*;
    use crate::core::{identity, members, scim};
    use crate::format::format_time;
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        let mut conn = c.state.db.pool.acquire().await?;
        let names = project_names(&mut conn, &c.scope).await?;
        let connections = identity::list(&mut conn, c.scope.org_id()).await?;
        let (enforced, break_glass_user_id) =
            identity::enforcement(&mut conn, c.scope.org_id()).await?;
        let owners = members::list(&mut conn, &c.scope)
            .await?
            .into_iter()
            .filter(|m| m.role == OrgRole::Owner)
            .map(|m| (m.user_id, m.email))
            .collect();
        let tokens = scim::list_tokens(&mut conn, &c.scope).await?;
        let events = scim::recent_events(&mut conn, &c.scope, 50).await?;
        Ok(SsoPage {
            tokens: tokens
                .into_iter()
                .map(|t| token_view(t, &connections))
                .collect(),
            connections: connections
                .iter()
                .map(|x| edit::view(x, &c.state.public_url, &names))
                .collect(),
            enforced,
            break_glass_user_id,
            owners,
            events: events
                .into_iter()
                .map(|e| ScimEventView {
                    at: format_time(e.at),
                    method: e.method,
                    path: e.path,
                    status: e.status,
                    summary: e.summary,
                })
                .collect(),
            scim_base_url: format!("{}/scim/v2", c.state.public_url),
        })
    })
    .await
}

#[cfg(feature = "ssr")]
async fn project_names(
    conn: &mut sqlx::AnyConnection,
    scope: &crate::policy::OrgScope,
) -> Result<Vec<(String, String)>, AppError> {
    Ok(
        sqlx::query_as("SELECT id, name FROM projects WHERE org_id = $1")
            .bind(scope.org_id())
            .fetch_all(&mut *conn)
            .await?,
    )
}

#[cfg(feature = "ssr")]
fn token_view(
    t: crate::core::scim::ScimToken,
    conns: &[crate::core::identity::Connection],
) -> ScimTokenView {
    use crate::format::format_time;
    ScimTokenView {
        connection: t
            .connection_id
            .as_ref()
            .and_then(|id| conns.iter().find(|c| &c.id == id))
            .map(|c| c.name.clone()),
        id: t.id,
        name: t.name,
        hint: t.hint,
        created_at: format_time(t.created_at),
        last_used_at: t.last_used_at.map(format_time),
        status: if t.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
    }
}

/// The fields every connection has, as the page sends them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionForm {
    pub name: String,
    pub domains: String,
    pub default_role: String,
    pub groups_claim: String,
    pub mapping: String,
    pub enabled: Option<String>,
    /// The role template new members join with (empty: none).
    pub default_template_id: Option<String>,
}

/// What every connection form says, checked.
#[cfg(feature = "ssr")]
struct Common {
    name: String,
    domains: Vec<String>,
    groups_claim: String,
    mapping: crate::core::identity::Mapping,
    enabled: bool,
}

#[cfg(feature = "ssr")]
impl ConnectionForm {
    /// Checks the shared fields; projects and the template must be the
    /// organization's own.
    async fn parse(self, c: &super::ssr::Ctx<crate::policy::OrgScope>) -> Result<Common, AppError> {
        let name = crate::core::domain::name("name", &self.name, 100)?;
        let domains = edit::domains(&self.domains)?;
        let default_role = self
            .default_role
            .parse::<OrgRole>()
            .map_err(|e| AppError::invalid("default_role", e))?;
        let groups_claim = claim_path(&self.groups_claim)?;
        let mut conn = c.state.db.pool.acquire().await?;
        let rules = edit::parse_mapping(&mut conn, &c.scope, &self.mapping).await?;
        drop(conn);
        let default_template_id = template_of(c, self.default_template_id.as_deref()).await?;
        Ok(Common {
            name,
            domains,
            groups_claim,
            mapping: crate::core::identity::Mapping {
                default_role,
                default_template_id,
                rules,
            },
            enabled: crate::api::checkbox("enabled", self.enabled.as_deref())?,
        })
    }
}

/// Saves an OIDC connection (new when `connection_id` is empty). The client
/// secret is sealed like provider keys; left empty on an edit, it is kept.
#[server(prefix = "/api/console", endpoint = "save_oidc_connection")]
pub async fn save_oidc_connection(
    org_id: String,
    connection_id: String,
    #[server(flatten)] form: ConnectionForm,
    issuer: String,
    client_id: String,
    client_secret: String,
    scopes: String,
) -> Result<ConnectionView, AppError> {
    use super::ssr::*;
    use crate::core::identity::{Kind, Saved};
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        let common = form.parse(&c).await?;
        let issuer = issuer.trim().to_owned();
        let parsed = url::Url::parse(&issuer).map_err(|_| {
            AppError::invalid("issuer", "is not a URL such as https://login.example.com")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(AppError::invalid(
                "issuer",
                "must be an http(s) URL without a query",
            ));
        }
        if parsed.scheme() == "http" && !c.state.allow_private_networks {
            return Err(AppError::invalid("issuer", "must use https://"));
        }
        crate::core::net::check_url("issuer", &issuer, c.state.allow_private_networks).await?;
        let client_id = client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 512 {
            return Err(AppError::invalid(
                "client_id",
                "must be 1 to 512 characters",
            ));
        }
        let editing = Some(connection_id.trim()).filter(|s| !s.is_empty());
        let secret = client_secret.trim();
        let client_secret = if secret.is_empty() {
            let Some(id) = editing else {
                return Err(AppError::invalid(
                    "client_secret",
                    "is required for a new connection",
                ));
            };
            // The stored secret is sent only where it was entered for.
            let mut conn = c.state.db.pool.acquire().await?;
            let stored = crate::core::identity::get(&mut conn, c.scope.org_id(), id)
                .await?
                .ok_or_else(|| AppError::not_found("connection"))?;
            if stored.issuer.as_deref() != Some(issuer.as_str())
                || stored.client_id.as_deref() != Some(client_id.as_str())
            {
                return Err(AppError::invalid(
                    "client_secret",
                    "enter the client secret again when the issuer or the client id changes",
                ));
            }
            None
        } else {
            let plain = secrecy::SecretString::from(secret.to_owned());
            let sealed = crate::core::providers::seal(&c.state.secret, &plain)?;
            let tail: String = secret
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Some((sealed, format!("…{tail}")))
        };
        let mut scopes: Vec<String> = scopes.split_whitespace().map(str::to_owned).collect();
        if scopes.is_empty() {
            scopes = vec!["openid".into(), "email".into(), "profile".into()];
        }
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let saved = Saved {
            kind: Kind::Oidc,
            name: &common.name,
            issuer: Some(&issuer),
            client_id: Some(&client_id),
            client_secret,
            scopes: &scopes,
            metadata_url: None,
            metadata_xml: None,
            idp_entity_id: None,
            idp_sso_url: None,
            idp_certs: &[],
            allow_idp_initiated: false,
            domains: &common.domains,
            groups_claim: &common.groups_claim,
            mapping: &common.mapping,
            enabled: common.enabled,
        };
        let id =
            crate::core::ops::sso::save_connection(&c.state, &c.actor, &c.scope, editing, &saved)
                .await?;
        saved_view(&c, &id).await
    })
    .await
}

/// A role template of the organization named by the form, if any.
#[cfg(feature = "ssr")]
async fn template_of(
    c: &super::ssr::Ctx<crate::policy::OrgScope>,
    id: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(id) = id.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut conn = c.state.db.pool.acquire().await?;
    crate::core::templates::get(&mut conn, c.scope.org_id(), id)
        .await?
        .map(|t| Some(t.id))
        .ok_or_else(|| {
            AppError::invalid(
                "default_template_id",
                "no such role template in this organization",
            )
        })
}

#[cfg(feature = "ssr")]
fn claim_path(raw: &str) -> Result<String, AppError> {
    let p = raw.trim();
    let p = if p.is_empty() { "groups" } else { p };
    if p.len() > 200 || p.split('.').any(|s| s.is_empty()) {
        return Err(AppError::invalid(
            "groups_claim",
            "a claim name, or a path such as realm_access.roles",
        ));
    }
    Ok(p.to_owned())
}

#[cfg(feature = "ssr")]
async fn saved_view(
    c: &super::ssr::Ctx<crate::policy::OrgScope>,
    id: &str,
) -> Result<ConnectionView, AppError> {
    let mut conn = c.state.db.pool.acquire().await?;
    let names = project_names(&mut conn, &c.scope).await?;
    let saved = crate::core::identity::get(&mut conn, c.scope.org_id(), id)
        .await?
        .ok_or_else(|| AppError::not_found("connection"))?;
    Ok(edit::view(&saved, &c.state.public_url, &names))
}

/// Saves a SAML connection from the IdP's metadata (a URL fetched now, or
/// the XML pasted); refused without a signing certificate. Left empty on an
/// edit, the stored metadata is kept.
#[server(prefix = "/api/console", endpoint = "save_saml_connection")]
pub async fn save_saml_connection(
    org_id: String,
    connection_id: String,
    #[server(flatten)] form: ConnectionForm,
    metadata_url: String,
    metadata_xml: String,
    allow_idp_initiated: Option<String>,
) -> Result<ConnectionView, AppError> {
    use super::ssr::*;
    use crate::core::identity::{Kind, Saved};
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        let common = form.parse(&c).await?;
        let editing = Some(connection_id.trim()).filter(|s| !s.is_empty());
        let url = Some(metadata_url.trim()).filter(|s| !s.is_empty());
        let pasted = Some(metadata_xml.trim()).filter(|s| !s.is_empty());
        let (xml, field) = match (pasted, url) {
            (Some(x), _) => {
                if x.len() > 1 << 20 {
                    return Err(AppError::invalid("metadata_xml", "is larger than 1 MiB"));
                }
                (x.to_owned(), "metadata_xml")
            }
            (None, Some(u)) => (fetch_metadata(&c.state, u).await?, "metadata_url"),
            (None, None) => {
                let Some(id) = editing else {
                    return Err(AppError::invalid(
                        "metadata_url",
                        "give the IdP's metadata URL, or paste its metadata XML",
                    ));
                };
                let mut conn = c.state.db.pool.acquire().await?;
                let kept: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT metadata_xml FROM sso_connections WHERE id = $1 AND org_id = $2",
                )
                .bind(id)
                .bind(c.scope.org_id())
                .fetch_optional(&mut *conn)
                .await?;
                let xml = kept
                    .flatten()
                    .ok_or_else(|| AppError::not_found("connection"))?;
                (xml, "metadata_xml")
            }
        };
        // IdP-initiated sign-in stays off: without a request of ours to
        // answer, only the replay cache would stand between a stolen
        // assertion and a session.
        if crate::api::checkbox("allow_idp_initiated", allow_idp_initiated.as_deref())? {
            return Err(AppError::invalid(
                "allow_idp_initiated",
                "IdP-initiated sign-in is not offered: people start at Tollgate's sign-in page (SP-initiated)",
            ));
        }
        let meta = (c.state.saml_metadata)(&xml).map_err(|e| AppError::invalid(field, e))?;
        let saved = Saved {
            kind: Kind::Saml,
            name: &common.name,
            issuer: None,
            client_id: None,
            client_secret: None,
            scopes: &[],
            metadata_url: url,
            metadata_xml: Some(&xml),
            idp_entity_id: Some(&meta.entity_id),
            idp_sso_url: Some(&meta.sso_url),
            idp_certs: &meta.certs,
            allow_idp_initiated: false,
            domains: &common.domains,
            groups_claim: &common.groups_claim,
            mapping: &common.mapping,
            enabled: common.enabled,
        };
        let id =
            crate::core::ops::sso::save_connection(&c.state, &c.actor, &c.scope, editing, &saved)
                .await?;
        saved_view(&c, &id).await
    })
    .await
}

/// Fetches IdP metadata (no redirects followed, 10 s, 1 MiB at most).
#[cfg(feature = "ssr")]
async fn fetch_metadata(
    state: &crate::core::state::AppState,
    url: &str,
) -> Result<String, AppError> {
    let parsed = url::Url::parse(url).map_err(|_| {
        AppError::invalid(
            "metadata_url",
            "is not a URL such as https://idp.example.com/metadata",
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AppError::invalid(
            "metadata_url",
            "must start with https://",
        ));
    }
    crate::core::net::check_url("metadata_url", url, state.allow_private_networks).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| AppError::internal("metadata client", &e))?;
    let res = http
        .get(url)
        .send()
        .await
        .map_err(|_| AppError::invalid("metadata_url", "could not be fetched"))?;
    if !res.status().is_success() {
        return Err(AppError::invalid(
            "metadata_url",
            format!("answered HTTP {}", res.status().as_u16()),
        ));
    }
    let body = res
        .bytes()
        .await
        .map_err(|_| AppError::invalid("metadata_url", "could not be read"))?;
    if body.len() > 1 << 20 {
        return Err(AppError::invalid(
            "metadata_url",
            "answered more than 1 MiB",
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| AppError::invalid("metadata_url", "is not UTF-8 XML"))
}

#[server(prefix = "/api/console", endpoint = "delete_connection")]
pub async fn delete_connection(org_id: String, connection_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        crate::core::ops::sso::delete_connection(&c.state, &c.actor, &c.scope, &connection_id).await
    })
    .await
}

/// Enforces SSO for the organization's members (or stops); the named owner
/// keeps password sign-in.
#[server(prefix = "/api/console", endpoint = "set_sso_enforcement")]
pub async fn set_sso_enforcement(
    org_id: String,
    enforced: Option<String>,
    break_glass_user_id: String,
) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        let on = crate::api::checkbox("enforced", enforced.as_deref())?;
        let who = Some(break_glass_user_id.trim()).filter(|s| !s.is_empty());
        crate::core::ops::sso::set_enforcement(&c.state, &c.actor, &c.scope, on, who).await
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "create_scim_token")]
pub async fn create_scim_token(
    org_id: String,
    name: String,
    connection_id: String,
) -> Result<ScimTokenIssued, AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        let name = crate::core::domain::name("name", &name, 100)?;
        let connection = Some(connection_id.trim()).filter(|s| !s.is_empty());
        let (t, token) = crate::core::ops::scim::create_scim_token(
            &c.state, &c.actor, &c.scope, connection, &name,
        )
        .await?;
        let mut conn = c.state.db.pool.acquire().await?;
        let conns = crate::core::identity::list(&mut conn, c.scope.org_id()).await?;
        Ok(ScimTokenIssued {
            token_view: token_view(t, &conns),
            token: token.expose().to_owned(),
            scim_base_url: format!("{}/scim/v2", c.state.public_url),
        })
    })
    .await
}

#[server(prefix = "/api/console", endpoint = "revoke_scim_token")]
pub async fn revoke_scim_token(org_id: String, token_id: String) -> Result<(), AppError> {
    use super::ssr::*;
    use crate::policy::Action;
    in_org(&org_id, Action::SingleSignOn, |c| async move {
        crate::core::ops::scim::revoke_scim_token(&c.state, &c.actor, &c.scope, &token_id).await
    })
    .await
}

/// Public: where the sign-in page sends an email (its domain's connection).
#[server(prefix = "/api/console", endpoint = "sign_in_route")]
pub async fn sign_in_route(email: String) -> Result<SignInVia, AppError> {
    use super::ssr::*;
    answer(
        async {
            let state = state()?;
            let email = crate::core::domain::Email::parse("email", &email)?;
            let mut conn = state.db.pool.acquire().await?;
            let found = crate::core::identity::for_email(&mut conn, email.as_str()).await?;
            Ok(match found {
                Some(c) => SignInVia {
                    sso_url: Some(format!(
                        "/sso/{}/start?login_hint={}",
                        c.id,
                        urlencode(email.as_str())
                    )),
                    connection_name: Some(c.name),
                },
                None => SignInVia {
                    sso_url: None,
                    connection_name: None,
                },
            })
        }
        .await,
    )
}

#[cfg(feature = "ssr")]
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
