//! Single sign-on connections (OIDC and SAML) of an organization, the
//! identities that sign in through them, and the one function that gives a
//! member what their IdP groups grant (`sync_member`), used by sign-in and SCIM.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::db::text_as;
use crate::error::AppError;
use crate::policy::{OrgRole, ProjectRole};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Oidc,
    Saml,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Oidc => "oidc",
            Kind::Saml => "saml",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "oidc" => Ok(Kind::Oidc),
            "saml" => Ok(Kind::Saml),
            _ => Err(format!(
                "unknown connection kind '{s}': expected oidc or saml"
            )),
        }
    }
}

/// One row of a connection's mapping: members of `group` get `role` (the
/// first matching row with a role decides) and join `project` (every
/// matching row with a project applies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRule {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<OrgRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_role: Option<ProjectRole>,
}

/// What a member's groups grant in the organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub role: OrgRole,
    pub projects: Vec<(String, ProjectRole)>,
}

/// The mapping of a connection (or the defaults of an organization without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub default_role: OrgRole,
    pub default_template_id: Option<String>,
    pub rules: Vec<GroupRule>,
}

impl Mapping {
    /// An organization with no connection: everyone a plain member.
    pub fn plain() -> Mapping {
        Mapping {
            default_role: OrgRole::Member,
            default_template_id: None,
            rules: Vec::new(),
        }
    }

    /// What `groups` grant; group names compare case-insensitively.
    pub fn resolve(&self, groups: &[String]) -> Granted {
        let has = |g: &str| groups.iter().any(|x| x.eq_ignore_ascii_case(g));
        let role = self
            .rules
            .iter()
            .filter(|r| has(&r.group))
            .find_map(|r| r.role)
            .unwrap_or(self.default_role);
        let mut projects: Vec<(String, ProjectRole)> = Vec::new();
        for r in self.rules.iter().filter(|r| has(&r.group)) {
            if let Some(p) = &r.project_id {
                let pr = r.project_role.unwrap_or(ProjectRole::Member);
                match projects.iter_mut().find(|(id, _)| id == p) {
                    // Two groups naming one project: the higher role wins.
                    Some(existing) if pr == ProjectRole::Admin => existing.1 = pr,
                    Some(_) => {}
                    None => projects.push((p.clone(), pr)),
                }
            }
        }
        Granted { role, projects }
    }

    /// The projects the mapping manages (a member outside its groups leaves them).
    pub fn mapped_projects(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.rules.iter().filter_map(|r| r.project_id.as_ref()) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// A stored connection. Not `Serialize`: the client secret is sealed and
/// only its hint is here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub org_id: String,
    pub kind: Kind,
    pub name: String,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_hint: Option<String>,
    pub scopes: Vec<String>,
    pub metadata_url: Option<String>,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    pub idp_certs: Vec<String>,
    pub allow_idp_initiated: bool,
    pub domains: Vec<String>,
    pub groups_claim: String,
    pub mapping: Mapping,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! columns {
    () => {
        "id, org_id, kind, name, issuer, client_id, client_secret_hint, scopes, metadata_url, \
         idp_entity_id, idp_sso_url, idp_certs_json, allow_idp_initiated, default_role, \
         default_template_id, groups_claim, mapping_json, enabled, created_at, updated_at"
    };
}

fn connection_of(r: &sqlx::any::AnyRow, domains: Vec<String>) -> Result<Connection, sqlx::Error> {
    let json = |col: &str, raw: Option<String>| -> Result<serde_json::Value, sqlx::Error> {
        raw.map_or(Ok(serde_json::Value::Null), |s| {
            serde_json::from_str(&s).map_err(|e| sqlx::Error::ColumnDecode {
                index: col.to_owned(),
                source: Box::new(e),
            })
        })
    };
    let rules: Vec<GroupRule> =
        serde_json::from_value(json("mapping_json", r.try_get("mapping_json")?)?).map_err(|e| {
            sqlx::Error::ColumnDecode {
                index: "mapping_json".into(),
                source: Box::new(e),
            }
        })?;
    let certs: Vec<String> =
        serde_json::from_value(json("idp_certs_json", r.try_get("idp_certs_json")?)?)
            .unwrap_or_default();
    let kind: String = r.try_get("kind")?;
    let role: String = r.try_get("default_role")?;
    let scopes: Option<String> = r.try_get("scopes")?;
    Ok(Connection {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        kind: text_as::<Kind>(&kind)?,
        name: r.try_get("name")?,
        issuer: r.try_get("issuer")?,
        client_id: r.try_get("client_id")?,
        client_secret_hint: r.try_get("client_secret_hint")?,
        scopes: scopes
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        metadata_url: r.try_get("metadata_url")?,
        idp_entity_id: r.try_get("idp_entity_id")?,
        idp_sso_url: r.try_get("idp_sso_url")?,
        idp_certs: certs,
        allow_idp_initiated: r.try_get::<i64, _>("allow_idp_initiated")? != 0,
        domains,
        groups_claim: r.try_get("groups_claim")?,
        mapping: Mapping {
            default_role: text_as::<OrgRole>(&role)?,
            default_template_id: r.try_get("default_template_id")?,
            rules,
        },
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn domains_of(conn: &mut AnyConnection, id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT domain FROM sso_domains WHERE connection_id = $1 ORDER BY domain")
        .bind(id)
        .fetch_all(&mut *conn)
        .await
}

/// Every connection of an organization, oldest first.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<Connection>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM sso_connections WHERE org_id = $1 ORDER BY created_at, id"
    ))
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let domains = domains_of(conn, &id).await?;
        out.push(connection_of(r, domains)?);
    }
    Ok(out)
}

/// One connection of an organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Connection>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM sso_connections WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => {
            let domains = domains_of(conn, id).await?;
            Ok(Some(connection_of(&r, domains)?))
        }
        None => Ok(None),
    }
}

/// A connection by id alone, for the sign-in routes (public: the id is in
/// the URL the IdP calls back).
pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<Connection>, sqlx::Error> {
    let org: Option<String> =
        sqlx::query_scalar("SELECT org_id FROM sso_connections WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    match org {
        Some(org) => get(conn, &org, id).await,
        None => Ok(None),
    }
}

/// The enabled connection that covers an email's domain, if any.
pub async fn for_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<Connection>, sqlx::Error> {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return Ok(None);
    };
    let id: Option<String> =
        sqlx::query_scalar("SELECT connection_id FROM sso_domains WHERE domain = $1")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(&mut *conn)
            .await?;
    match id {
        Some(id) => Ok(by_id(conn, &id).await?.filter(|c| c.enabled)),
        None => Ok(None),
    }
}

/// What an owner saves; `client_secret_sealed` is `None` to keep the old one.
pub struct Saved<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub issuer: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<(String, String)>,
    pub scopes: &'a [String],
    pub metadata_url: Option<&'a str>,
    pub metadata_xml: Option<&'a str>,
    pub idp_entity_id: Option<&'a str>,
    pub idp_sso_url: Option<&'a str>,
    pub idp_certs: &'a [String],
    pub allow_idp_initiated: bool,
    pub domains: &'a [String],
    pub groups_claim: &'a str,
    pub mapping: &'a Mapping,
    pub enabled: bool,
}

/// Inserts (`id` new) or updates a connection and its domains. A domain
/// another connection covers is refused, naming the field.
pub async fn save(
    conn: &mut AnyConnection,
    org_id: &str,
    id: Option<&str>,
    s: &Saved<'_>,
    now: i64,
) -> Result<String, AppError> {
    let rules = serde_json::to_string(&s.mapping.rules)
        .map_err(|e| AppError::internal("mapping json", &e))?;
    let certs =
        serde_json::to_string(s.idp_certs).map_err(|e| AppError::internal("certs json", &e))?;
    let scopes = s.scopes.join(" ");
    let (secret_enc, secret_hint) = match &s.client_secret {
        Some((enc, hint)) => (Some(enc.as_str()), Some(hint.as_str())),
        None => (None, None),
    };
    let id = match id {
        Some(id) => {
            let done = sqlx::query(
                "UPDATE sso_connections SET name = $1, issuer = $2, client_id = $3, \
                 client_secret_enc = COALESCE($4, client_secret_enc), client_secret_hint = COALESCE($5, client_secret_hint), \
                 scopes = $6, metadata_url = $7, metadata_xml = $8, idp_entity_id = $9, idp_sso_url = $10, \
                 idp_certs_json = $11, allow_idp_initiated = $12, default_role = $13, default_template_id = $14, \
                 groups_claim = $15, mapping_json = $16, enabled = $17, updated_at = $18 \
                 WHERE id = $19 AND org_id = $20",
            )
            .bind(s.name)
            .bind(s.issuer)
            .bind(s.client_id)
            .bind(secret_enc)
            .bind(secret_hint)
            .bind(&scopes)
            .bind(s.metadata_url)
            .bind(s.metadata_xml)
            .bind(s.idp_entity_id)
            .bind(s.idp_sso_url)
            .bind(&certs)
            .bind(i64::from(s.allow_idp_initiated))
            .bind(s.mapping.default_role.as_str())
            .bind(s.mapping.default_template_id.as_deref())
            .bind(s.groups_claim)
            .bind(&rules)
            .bind(i64::from(s.enabled))
            .bind(now)
            .bind(id)
            .bind(org_id)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Err(AppError::not_found("connection"));
            }
            id.to_owned()
        }
        None => {
            let id = super::new_id();
            sqlx::query(
                "INSERT INTO sso_connections (id, org_id, kind, name, issuer, client_id, client_secret_enc, \
                 client_secret_hint, scopes, metadata_url, metadata_xml, idp_entity_id, idp_sso_url, idp_certs_json, \
                 allow_idp_initiated, default_role, default_template_id, groups_claim, mapping_json, enabled, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 $15, $16, $17, $18, $19, $20, $21, $21)",
            )
            .bind(&id)
            .bind(org_id)
            .bind(s.kind.as_str())
            .bind(s.name)
            .bind(s.issuer)
            .bind(s.client_id)
            .bind(secret_enc)
            .bind(secret_hint)
            .bind(&scopes)
            .bind(s.metadata_url)
            .bind(s.metadata_xml)
            .bind(s.idp_entity_id)
            .bind(s.idp_sso_url)
            .bind(&certs)
            .bind(i64::from(s.allow_idp_initiated))
            .bind(s.mapping.default_role.as_str())
            .bind(s.mapping.default_template_id.as_deref())
            .bind(s.groups_claim)
            .bind(&rules)
            .bind(i64::from(s.enabled))
            .bind(now)
            .execute(&mut *conn)
            .await?;
            id
        }
    };
    sqlx::query("DELETE FROM sso_domains WHERE connection_id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    for d in s.domains {
        let res = sqlx::query(
            "INSERT INTO sso_domains (domain, connection_id, org_id) VALUES ($1, $2, $3)",
        )
        .bind(d)
        .bind(&id)
        .bind(org_id)
        .execute(&mut *conn)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if super::db::is_unique_violation(&e) => {
                return Err(AppError::invalid(
                    "domains",
                    format!("'{d}' is already covered by another connection"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(id)
}

/// The sealed client secret of an OIDC connection.
pub async fn sealed_secret(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, Option<String>>(
        "SELECT client_secret_enc FROM sso_connections WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten())
}

pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM sso_connections WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The account an IdP identity signs in as through this connection, if it
/// was seen before (another connection's identities are never found).
pub async fn user_of_identity(
    conn: &mut AnyConnection,
    c: &Connection,
    issuer: &str,
    subject: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM user_identities WHERE connection_id = $1 AND issuer = $2 AND subject = $3",
    )
    .bind(&c.id)
    .bind(issuer)
    .bind(subject)
    .fetch_optional(&mut *conn)
    .await
}

pub async fn link_identity(
    conn: &mut AnyConnection,
    c: &Connection,
    issuer: &str,
    subject: &str,
    user_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_identities (connection_id, issuer, subject, user_id, org_id, kind, created_at, last_sign_in_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (connection_id, issuer, subject) DO UPDATE SET last_sign_in_at = $7",
    )
    .bind(&c.id)
    .bind(issuer)
    .bind(subject)
    .bind(user_id)
    .bind(&c.org_id)
    .bind(c.kind.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether an account is bound to another organization: a member there, or
/// signing in through one of its connections. Such an account is never
/// linked by email from this organization's IdP or SCIM client.
pub async fn belongs_elsewhere(
    conn: &mut AnyConnection,
    user_id: &str,
    org_id: &str,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM org_members WHERE user_id = $1 AND org_id <> $2) \
         + (SELECT COUNT(*) FROM user_identities WHERE user_id = $1 AND org_id <> $2)",
    )
    .bind(user_id)
    .bind(org_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Whether an email's domain is one this organization's connections cover.
pub async fn covers(
    conn: &mut AnyConnection,
    org_id: &str,
    email: &str,
) -> Result<bool, sqlx::Error> {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return Ok(false);
    };
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sso_domains WHERE org_id = $1 AND domain = $2")
            .bind(org_id)
            .bind(domain.to_ascii_lowercase())
            .fetch_one(&mut *conn)
            .await?;
    Ok(n > 0)
}

/// Whether an organization refuses password sign-in, and its break-glass owner.
pub async fn enforcement(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<(bool, Option<String>), sqlx::Error> {
    let row =
        sqlx::query("SELECT sso_enforced, break_glass_user_id FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some(r) => Ok((
            r.try_get::<i64, _>("sso_enforced")? != 0,
            r.try_get("break_glass_user_id")?,
        )),
        None => Ok((false, None)),
    }
}

pub async fn set_enforcement(
    conn: &mut AnyConnection,
    org_id: &str,
    enforced: bool,
    break_glass: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE organizations SET sso_enforced = $1, break_glass_user_id = $2 WHERE id = $3",
    )
    .bind(i64::from(enforced))
    .bind(break_glass)
    .bind(org_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The organizations whose enforced SSO refuses this user's password: each
/// one they belong to with SSO enforced, unless they are its break-glass owner.
pub async fn password_refused_by(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT o.name FROM org_members m JOIN organizations o ON o.id = m.org_id \
         WHERE m.user_id = $1 AND o.sso_enforced = 1 \
         AND (o.break_glass_user_id IS NULL OR o.break_glass_user_id <> $1) ORDER BY o.name",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await
}

/// What `sync_member` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Synced {
    pub role_before: Option<OrgRole>,
    pub role: Option<OrgRole>,
    pub projects_joined: Vec<String>,
    pub projects_left: Vec<String>,
    pub keys_revoked: u64,
    /// Why the mapped role was not applied (an owner cap, the last owner).
    pub kept_role: Option<String>,
}

impl Synced {
    pub fn changed(&self) -> bool {
        self.role_before != self.role
            || !self.projects_joined.is_empty()
            || !self.projects_left.is_empty()
    }
}

/// Gives `user_id` in `org_id` what `granted` says: membership with its role
/// (joining as `joined_via`, with the mapping's template), the mapped projects they are
/// granted, and out of the mapped projects they are not (their keys there
/// revoked). Projects outside the mapping are left alone. Call with the
/// organization locked (`orgs::lock`). A role that would break the owner or
/// billing caps, or take the last owner away, is not applied (`kept_role`).
pub async fn sync_member(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    mapping: &Mapping,
    granted: &Granted,
    joined_via: &str,
    now: i64,
) -> Result<Synced, AppError> {
    let mapped_projects = mapping.mapped_projects();
    let template = mapping.default_template_id.as_deref();
    let mut out = Synced::default();
    let current: Option<String> =
        sqlx::query_scalar("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let current = current.map(|r| text_as::<OrgRole>(&r)).transpose()?;
    out.role_before = current;
    let mut role = granted.role;
    match current {
        None => {
            if let Err(e) = super::members::check_room_for(conn, org_id, role).await {
                out.kept_role = Some(e.to_string());
                role = OrgRole::Member;
            }
            sqlx::query(
                "INSERT INTO org_members (org_id, user_id, role, created_at, joined_via, template_id) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(now)
            .bind(joined_via)
            .bind(template)
            .execute(&mut *conn)
            .await?;
        }
        Some(cur) if cur != role => {
            let owners: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'",
            )
            .bind(org_id)
            .fetch_one(&mut *conn)
            .await?;
            let blocked = if cur == OrgRole::Owner && owners <= 1 {
                Some("an organization always keeps at least one owner".to_owned())
            } else {
                super::members::check_room_for(conn, org_id, role)
                    .await
                    .err()
                    .map(|e| e.to_string())
            };
            match blocked {
                Some(why) => {
                    out.kept_role = Some(why);
                    role = cur;
                }
                None => {
                    sqlx::query(
                        "UPDATE org_members SET role = $1 WHERE org_id = $2 AND user_id = $3",
                    )
                    .bind(role.as_str())
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Some(_) => {}
    }
    out.role = Some(role);
    // Roles that hold no keys leave every project, as a role change does.
    if !crate::policy::may_hold_keys(role) {
        out.keys_revoked = out.keys_revoked.saturating_add(
            leave_projects(conn, org_id, user_id, None, now, &mut out.projects_left).await?,
        );
        return Ok(out);
    }
    if !crate::policy::joins_projects(role) {
        return Ok(out);
    }
    for (project, prole) in &granted.projects {
        let done = sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, created_at) \
             SELECT id, $1, $2, $3 FROM projects WHERE id = $4 AND org_id = $5 \
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = $2",
        )
        .bind(user_id)
        .bind(prole.as_str())
        .bind(now)
        .bind(project)
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() > 0 {
            out.projects_joined.push(project.clone());
        }
    }
    let ungranted: Vec<String> = mapped_projects
        .iter()
        .filter(|p| !granted.projects.iter().any(|(g, _)| g == *p))
        .cloned()
        .collect();
    if !ungranted.is_empty() {
        out.keys_revoked = out.keys_revoked.saturating_add(
            leave_projects(
                conn,
                org_id,
                user_id,
                Some(&ungranted),
                now,
                &mut out.projects_left,
            )
            .await?,
        );
    }
    Ok(out)
}

/// Takes `user_id` out of `projects` (all of the organization's with `None`)
/// and revokes the keys they own there; returns how many keys.
async fn leave_projects(
    conn: &mut AnyConnection,
    org_id: &str,
    user_id: &str,
    projects: Option<&[String]>,
    now: i64,
    left: &mut Vec<String>,
) -> Result<u64, sqlx::Error> {
    let theirs: Vec<String> = sqlx::query_scalar(
        "SELECT pm.project_id FROM project_members pm JOIN projects p ON p.id = pm.project_id \
         WHERE pm.user_id = $1 AND p.org_id = $2",
    )
    .bind(user_id)
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut revoked = 0_u64;
    for p in theirs {
        if projects.is_some_and(|only| !only.contains(&p)) {
            continue;
        }
        sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
            .bind(&p)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        revoked = revoked.saturating_add(
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1, blocked = 0 WHERE project_id = $2 AND owner_id = $3 AND (revoked_at IS NULL OR blocked = 1)",
            )
            .bind(now)
            .bind(&p)
            .bind(user_id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        );
        left.push(p);
    }
    Ok(revoked)
}

/// Ends every session of a user that began before now (deprovisioning).
/// The clock is read here, after the organization's lock was taken: a
/// sign-in that committed while this waited is older, and ends too.
pub async fn end_sessions(conn: &mut AnyConnection, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET signed_out_at = $1 WHERE id = $2")
        .bind(super::now_ms())
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(group: &str, role: Option<OrgRole>, project: Option<(&str, ProjectRole)>) -> GroupRule {
        GroupRule {
            group: group.into(),
            role,
            project_id: project.map(|p| p.0.to_owned()),
            project_role: project.map(|p| p.1),
        }
    }

    #[test]
    fn the_first_matching_role_wins_and_every_matching_project_applies() {
        let m = Mapping {
            default_role: OrgRole::Viewer,
            default_template_id: None,
            rules: vec![
                rule("Admins", Some(OrgRole::Owner), None),
                rule(
                    "eng",
                    Some(OrgRole::Member),
                    Some(("p1", ProjectRole::Member)),
                ),
                rule("eng-leads", None, Some(("p1", ProjectRole::Admin))),
                rule("ml", None, Some(("p2", ProjectRole::Member))),
            ],
        };
        let g = m.resolve(&["ENG".into(), "eng-leads".into(), "ml".into()]);
        assert_eq!(g.role, OrgRole::Member);
        assert_eq!(
            g.projects,
            vec![
                ("p1".to_owned(), ProjectRole::Admin),
                ("p2".to_owned(), ProjectRole::Member)
            ]
        );
        assert_eq!(m.resolve(&["admins".into()]).role, OrgRole::Owner);
        let none = m.resolve(&["sales".into()]);
        assert_eq!((none.role, none.projects.len()), (OrgRole::Viewer, 0));
        assert_eq!(m.mapped_projects(), vec!["p1".to_owned(), "p2".to_owned()]);
    }
}
