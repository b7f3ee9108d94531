//! The `api_keys` and `api_key_tags` tables: keys as stored (public id, hash of
//! the secret, hint — never the token), their limits, listing and lifecycle.

pub mod token;

use sqlx::{AnyConnection, Row};
use std::borrow::Cow;

use super::db::{json_list, to_json};
use super::limits::{Caps, ResetInterval};
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::ProjectScope;
use token::Token;

/// What a key may do; always within its project's caps (checked by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    pub name: String,
    pub caps: Caps,
    pub expires_at: Option<i64>,
    pub no_content_logging: bool,
    pub tags: Vec<String>,
    /// A JSON object the key's creator attaches (`{}` when none).
    pub metadata: serde_json::Value,
}

/// Whom a key belongs to: a user, or no one (a service account's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    User,
    Service,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::User => "user",
            KeyKind::Service => "service",
        }
    }
}

impl std::str::FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(KeyKind::User),
            "service" => Ok(KeyKind::Service),
            other => Err(format!(
                "unknown key kind '{other}': expected user or service"
            )),
        }
    }
}

/// Whether a key still works, and if not why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    /// The one rule: revoked wins, then an expiry at or before `now`.
    pub fn of(revoked_at: Option<i64>, expires_at: Option<i64>, now: i64) -> KeyStatus {
        if revoked_at.is_some() {
            KeyStatus::Revoked
        } else if expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub id_hash: String,
    pub hint: String,
    pub org_id: String,
    pub project_id: String,
    pub project_name: String,
    pub kind: KeyKind,
    pub owner_id: Option<String>,
    pub owner_email: Option<String>,
    pub limits: KeyLimits,
    pub spend: Usd,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The key's own narrowing of its project's MCP grants (`None`: none).
    pub mcp: Option<Vec<super::mcp::Grant>>,
    /// The project's and the owner's ids as a machine API caller chose them.
    pub project_ref: Option<String>,
    pub owner_ref: Option<String>,
    /// The `budget_duration` it was given, as written, and its named budget.
    pub budget_duration: Option<String>,
    pub budget_id: Option<String>,
    /// Whether its models follow its project's list (made without one).
    pub models_follow: bool,
    /// Revoked by LiteLLM's `/key/block`, until `/key/unblock`.
    pub blocked: bool,
}

impl KeyRow {
    pub fn status(&self, now: i64) -> KeyStatus {
        KeyStatus::of(self.revoked_at, self.limits.expires_at, now)
    }
}

/// The columns every read selects, joined with the owner and the project.
macro_rules! key_select {
    () => {
        "SELECT k.id, k.id_hash, k.hint, k.org_id, k.project_id, p.name AS project_name, k.kind, k.owner_id, \
         u.email AS owner_email, k.name, k.models_json, k.tpm_limit, k.rpm_limit, k.budget_micros, \
         k.budget_reset, k.expires_at, k.no_content_logging, k.tags_json, k.metadata_json, CAST(k.spend_micros AS BIGINT) AS spend_micros, k.created_at, \
         k.revoked_at, k.mcp_json, p.external_id AS project_ref, om.external_id AS owner_ref, k.budget_duration, \
         k.budget_id, k.models_follow, k.blocked FROM api_keys k JOIN projects p ON p.id = k.project_id \
         LEFT JOIN users u ON u.id = k.owner_id LEFT JOIN org_members om ON om.org_id = k.org_id AND om.user_id = k.owner_id "
    };
}

/// A key's limits, from the columns both reads select.
fn limits_of(r: &sqlx::any::AnyRow) -> Result<KeyLimits, sqlx::Error> {
    Ok(KeyLimits {
        caps: super::db::caps(r)?,
        name: r.try_get("name")?,
        expires_at: r.try_get("expires_at")?,
        no_content_logging: r.try_get::<i64, _>("no_content_logging")? != 0,
        tags: json_list(&r.try_get::<String, _>("tags_json")?)?,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata_json")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

fn key_of(r: &sqlx::any::AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        id: r.try_get("id")?,
        id_hash: r.try_get("id_hash")?,
        hint: r.try_get("hint")?,
        org_id: r.try_get("org_id")?,
        project_id: r.try_get("project_id")?,
        project_name: r.try_get("project_name")?,
        kind: super::db::text_as(&r.try_get::<String, _>("kind")?)?,
        owner_id: r.try_get("owner_id")?,
        owner_email: r.try_get("owner_email")?,
        limits: limits_of(r)?,
        spend: super::db::usd(r, "spend_micros")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
        mcp: r
            .try_get::<Option<String>, _>("mcp_json")?
            .as_deref()
            .map(super::mcp::grants_of)
            .transpose()?,
        project_ref: r.try_get("project_ref")?,
        owner_ref: r.try_get("owner_ref")?,
        budget_duration: r.try_get("budget_duration")?,
        budget_id: r.try_get("budget_id")?,
        models_follow: r.try_get::<i64, _>("models_follow")? != 0,
        blocked: r.try_get::<i64, _>("blocked")? != 0,
    })
}

async fn write_tags(
    conn: &mut AnyConnection,
    key_id: &str,
    project_id: &str,
    tags: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_key_tags WHERE key_id = $1")
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO api_key_tags (key_id, project_id, tag) VALUES ($1, $2, $3)")
            .bind(key_id)
            .bind(project_id)
            .bind(tag)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Who a new key belongs to.
pub enum Holder<'a> {
    User(&'a str),
    Service,
}

/// Stores a new key; the returned token is the only copy of its secret.
pub async fn create(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    holder: Holder<'_>,
    limits: &KeyLimits,
    now: i64,
) -> Result<(KeyRow, Token), AppError> {
    create_with(conn, scope, holder, limits, now, Token::mint()).await
}

/// [`create`] with a token the caller brings (an imported key).
pub async fn create_with(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    holder: Holder<'_>,
    limits: &KeyLimits,
    now: i64,
    token: Token,
) -> Result<(KeyRow, Token), AppError> {
    let id = super::new_id();
    let (kind, owner) = match holder {
        Holder::User(u) => (KeyKind::User, Some(u)),
        Holder::Service => (KeyKind::Service, None),
    };
    let insert = sqlx::query(
        "INSERT INTO api_keys (id, public_id, id_hash, secret_hash, hint, org_id, project_id, kind, owner_id, \
         name, name_lower, models_json, tpm_limit, rpm_limit, budget_micros, budget_reset, expires_at, \
         no_content_logging, tags_json, metadata_json, spend_micros, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $22, 0, $20, $21, $21)",
    )
    .bind(&id)
    .bind(token.public_id())
    .bind(token::id_hash(token.public_id()))
    .bind(token.secret_hash())
    .bind(token.hint())
    .bind(scope.org_id())
    .bind(scope.project_id())
    .bind(kind.as_str())
    .bind(owner);
    bind_limits(insert, limits)
        .bind(scope.actor_id())
        .bind(now)
        .bind(limits.metadata.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if super::db::is_unique_violation(&e) {
                AppError::invalid("key", "cannot be imported; choose another key")
            } else {
                e.into()
            }
        })?;
    write_tags(conn, &id, scope.project_id(), &limits.tags).await?;
    let row = get(conn, scope, &id).await?;
    Ok((row, token))
}

use super::db::AnyQuery;

/// Binds a key's limits in the order `create` and `update` name their
/// columns: name, name_lower, models_json, tpm_limit, rpm_limit,
/// budget_micros, budget_reset, expires_at, no_content_logging, tags_json.
fn bind_limits<'q>(q: AnyQuery<'q>, l: &'q KeyLimits) -> AnyQuery<'q> {
    q.bind(&l.name)
        .bind(l.name.to_lowercase())
        .bind(to_json(&l.caps.models))
        .bind(l.caps.tpm_limit)
        .bind(l.caps.rpm_limit)
        .bind(l.caps.budget.map(Usd::micros))
        .bind(l.caps.budget_reset.as_str())
        .bind(l.expires_at)
        .bind(i64::from(l.no_content_logging))
        .bind(to_json(&l.tags))
}

/// One key of the scoped project, by its internal id.
pub async fn get(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
) -> Result<KeyRow, AppError> {
    let q = sqlx::query(concat!(
        key_select!(),
        "WHERE k.id = $1 AND k.project_id = $2 AND k.org_id = $3"
    ))
    .bind(id);
    super::db::one_or_404(super::db::in_project(q, scope), conn, "key", key_of).await
}

/// The id of `user_id`'s live playground key in the scoped project, if any
/// (its metadata has `"tollgate_playground": true`).
pub async fn playground_key(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    user_id: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let q = sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE owner_id = $1 AND project_id = $2 AND org_id = $3 \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $4) \
         AND metadata_json LIKE '%\"tollgate_playground\":true%' ORDER BY created_at DESC LIMIT 1",
    )
    .bind(user_id)
    .bind(scope.project_id())
    .bind(scope.org_id())
    .bind(now);
    q.fetch_optional(&mut *conn).await
}

/// The project a key (named by its internal id) lives in, within one
/// organization — to authorize before reading it.
pub async fn project_of(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<String, AppError> {
    sqlx::query_scalar("SELECT project_id FROM api_keys WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AppError::not_found("key"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Newest,
    Name,
    Expiry,
}

pub struct ListQuery<'a> {
    /// Part of the name, case-insensitive.
    pub search: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// Only the caller's own keys (a project member's view).
    pub owner: Option<&'a str>,
    pub sort: Sort,
    pub offset: i64,
    pub limit: i64,
}

/// Escapes `%`, `_` and `\` so that a search is taken literally by LIKE.
fn like_pattern(s: &str) -> String {
    let escaped: String = s
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

/// One page of a project's keys and the total that match.
pub async fn list(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    q: &ListQuery<'_>,
) -> Result<(Vec<KeyRow>, i64), sqlx::Error> {
    // Static statements only: one per sort and per "by tag" (an index each).
    macro_rules! filters {
        () => {
            "WHERE k.project_id = $1 AND ($2 IS NULL OR k.name_lower LIKE $2 ESCAPE '\\') \
             AND ($3 IS NULL OR k.owner_id = $3) "
        };
    }
    macro_rules! by_tag {
        () => {
            "AND k.id IN (SELECT t.key_id FROM api_key_tags t WHERE t.project_id = $1 AND t.tag = $4) "
        };
    }
    // Every statement names every parameter; without a tag, `$4` is NULL.
    macro_rules! no_tag {
        () => {
            "AND $4 IS NULL "
        };
    }
    let sql = match (q.sort, q.tag.is_some()) {
        (Sort::Newest, false) => concat!(key_select!(), filters!(), no_tag!(), "ORDER BY k.created_at DESC, k.id DESC LIMIT $5 OFFSET $6"),
        (Sort::Newest, true) => concat!(key_select!(), filters!(), by_tag!(), "ORDER BY k.created_at DESC, k.id DESC LIMIT $5 OFFSET $6"),
        (Sort::Name, false) => concat!(key_select!(), filters!(), no_tag!(), "ORDER BY k.name_lower, k.id LIMIT $5 OFFSET $6"),
        (Sort::Name, true) => concat!(key_select!(), filters!(), by_tag!(), "ORDER BY k.name_lower, k.id LIMIT $5 OFFSET $6"),
        (Sort::Expiry, false) => concat!(key_select!(), filters!(), no_tag!(), "ORDER BY CASE WHEN k.expires_at IS NULL THEN 1 ELSE 0 END, k.expires_at, k.id LIMIT $5 OFFSET $6"),
        (Sort::Expiry, true) => concat!(key_select!(), filters!(), by_tag!(), "ORDER BY CASE WHEN k.expires_at IS NULL THEN 1 ELSE 0 END, k.expires_at, k.id LIMIT $5 OFFSET $6"),
    };
    let count_sql = if q.tag.is_some() {
        concat!("SELECT COUNT(*) FROM api_keys k ", filters!(), by_tag!())
    } else {
        concat!("SELECT COUNT(*) FROM api_keys k ", filters!(), no_tag!())
    };
    let pattern = q
        .search
        .filter(|s| !s.trim().is_empty())
        .map(|s| like_pattern(s.trim()));
    let rows = sqlx::query(sql)
        .bind(scope.project_id())
        .bind(pattern.as_deref())
        .bind(q.owner)
        .bind(q.tag)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&mut *conn)
        .await?;
    let total: i64 = sqlx::query_scalar(count_sql)
        .bind(scope.project_id())
        .bind(pattern.as_deref())
        .bind(q.owner)
        .bind(q.tag)
        .fetch_one(&mut *conn)
        .await?;
    Ok((rows.iter().map(key_of).collect::<Result<_, _>>()?, total))
}

/// A key of the scoped organization named the way the machine APIs name one:
/// by its `api_key_id_hash`, or by its token (checked against the stored hash).
pub async fn find(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    reference: &str,
) -> Result<KeyRow, AppError> {
    let reference = reference.trim();
    let row = match token::parse_any(reference).filter(|_| !is_id_hash(reference)) {
        Some(parsed) => {
            sqlx::query(concat!(
                key_select!(),
                "WHERE k.public_id = $1 AND k.secret_hash = $2 AND k.org_id = $3"
            ))
            .bind(parsed.public_id.as_ref())
            .bind(token::hash_secret(parsed.secret))
            .bind(scope.org_id())
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(concat!(
                key_select!(),
                "WHERE k.id_hash = $1 AND k.org_id = $2"
            ))
            .bind(reference)
            .bind(scope.org_id())
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let row = row.ok_or_else(|| AppError::not_found("key"))?;
    Ok(key_of(&row)?)
}

/// Whether a reference is a key's `id_hash` (64 lower-case hex digits),
/// which an imported key's shape would also admit.
fn is_id_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A page of the organization's keys for the machine APIs, filtered, sorted
/// (newest first) and cut in SQL.
#[derive(Default)]
pub struct OrgKeyQuery<'a> {
    pub project_id: Option<&'a str>,
    /// Only keys named exactly this.
    pub name: Option<&'a str>,
    pub owner_id: Option<&'a str>,
    pub kind: Option<KeyKind>,
    /// Only keys with this tag.
    pub tag: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

/// One page of [`OrgKeyQuery`] and the number of keys that match in all.
/// The statement names only the filters given (fixed fragments, every value
/// bound), so each can use its index.
pub async fn page_in_org(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    q: &OrgKeyQuery<'_>,
) -> Result<(Vec<KeyRow>, i64), sqlx::Error> {
    let name_lower = q.name.map(str::to_lowercase);
    let mut filters = String::from("WHERE k.org_id = $1 ");
    let mut values: Vec<&str> = vec![scope.org_id()];
    if let Some(p) = q.project_id {
        values.push(p);
        filters.push_str(&format!("AND k.project_id = ${} ", values.len()));
    }
    if let Some(kind) = q.kind {
        values.push(kind.as_str());
        filters.push_str(&format!("AND k.kind = ${} ", values.len()));
    }
    if let (Some(name), Some(lower)) = (q.name, name_lower.as_deref()) {
        values.push(lower);
        values.push(name);
        // Through the name index (a planner would rather walk the newest-first one).
        filters.push_str(&format!(
            "AND k.id IN (SELECT n.id FROM api_keys n WHERE n.org_id = $1 AND n.name_lower = ${}) AND k.name = ${} ",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some(owner) = q.owner_id {
        values.push(owner);
        filters.push_str(&format!("AND k.owner_id = ${} ", values.len()));
    }
    if let Some(tag) = q.tag {
        values.push(tag);
        filters.push_str(&format!(
            "AND k.id IN (SELECT t.key_id FROM api_key_tags t WHERE t.tag = ${}) ",
            values.len()
        ));
    }
    let page_sql = format!(
        "{}{filters}ORDER BY k.created_at DESC, k.id DESC LIMIT ${} OFFSET ${}",
        key_select!(),
        values.len() + 1,
        values.len() + 2
    );
    let mut page = sqlx::query(&page_sql);
    for v in &values {
        page = page.bind(*v);
    }
    let rows = page
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&mut *conn)
        .await?;
    let count_sql = format!("SELECT COUNT(*) AS n FROM api_keys k {filters}");
    let mut count = sqlx::query(&count_sql);
    for v in &values {
        count = count.bind(*v);
    }
    let total: i64 = count.fetch_one(&mut *conn).await?.try_get("n")?;
    Ok((rows.iter().map(key_of).collect::<Result<_, _>>()?, total))
}

/// The organization's keys that spent the most, highest first.
pub async fn top_spenders(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        key_select!(),
        "WHERE k.org_id = $1 AND k.spend_micros > 0 ORDER BY k.spend_micros DESC, k.id LIMIT $2"
    ))
    .bind(scope.org_id())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(key_of).collect()
}

/// The caller's own keys across the projects of the scoped organization.
pub async fn of_owner(
    conn: &mut AnyConnection,
    scope: &crate::policy::OrgScope,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        key_select!(),
        "WHERE k.org_id = $1 AND k.owner_id = $2 ORDER BY k.created_at DESC, k.id DESC"
    ))
    .bind(scope.org_id())
    .bind(scope.actor_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(key_of).collect()
}

/// Whose keys [`expiring`] reads: the organization's, one project's, or the
/// caller's own across the organization.
pub enum KeysOf<'a> {
    Org(&'a crate::policy::OrgScope),
    Project(&'a ProjectScope),
    Mine(&'a crate::policy::OrgScope),
}

/// Keys that are not revoked and expire in `[from, until)`, soonest first,
/// at most `limit`: the overview's "expiring soon", without reading every
/// key of a large organization.
pub async fn expiring(
    conn: &mut AnyConnection,
    of: KeysOf<'_>,
    from: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let (org, project, owner) = match of {
        KeysOf::Org(s) => (s.org_id(), None, None),
        KeysOf::Project(s) => (s.org_id(), Some(s.project_id()), None),
        KeysOf::Mine(s) => (s.org_id(), None, Some(s.actor_id())),
    };
    let rows = sqlx::query(concat!(
        key_select!(),
        "WHERE k.org_id = $1 AND ($2 IS NULL OR k.project_id = $2) AND ($3 IS NULL OR k.owner_id = $3) \
         AND k.revoked_at IS NULL AND k.expires_at >= $4 AND k.expires_at < $5 \
         ORDER BY k.expires_at, k.id LIMIT $6"
    ))
    .bind(org)
    .bind(project)
    .bind(owner)
    .bind(from)
    .bind(until)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(key_of).collect()
}

pub async fn update(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
    l: &KeyLimits,
    now: i64,
) -> Result<(), AppError> {
    // Guarded: a revoke that committed first wins, whoever read the key when.
    // Limits set here are the key's own: it no longer follows its project's
    // models or a named budget (LiteLLM's API sets those again after).
    let update = sqlx::query(
        "UPDATE api_keys SET name = $1, name_lower = $2, models_json = $3, tpm_limit = $4, rpm_limit = $5, \
         budget_micros = $6, budget_reset = $7, expires_at = $8, no_content_logging = $9, tags_json = $10, \
         updated_at = $11, metadata_json = $14, models_follow = 0, budget_id = NULL \
         WHERE id = $12 AND project_id = $13 AND revoked_at IS NULL",
    );
    let done = bind_limits(update, l)
        .bind(now)
        .bind(id)
        .bind(scope.project_id())
        .bind(l.metadata.to_string())
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != 1 {
        return Err(AppError::conflict("a revoked key cannot be changed"));
    }
    write_tags(conn, id, scope.project_id(), &l.tags).await?;
    Ok(())
}

/// Revokes a key at once; a revoked key stays revoked.
pub async fn revoke(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
    now: i64,
) -> Result<(), AppError> {
    // A blocked key (LiteLLM) is revoked for good too.
    let sql = "UPDATE api_keys SET revoked_at = $4, blocked = 0 WHERE id = $1 AND project_id = $2 AND org_id = $3 \
               AND (revoked_at IS NULL OR blocked = 1)";
    let missed = || AppError::conflict("the key is already revoked");
    on_one_key(conn, sql, scope, id, Some(now), missed).await
}

/// Deletes a key (its tags go with it).
pub async fn delete(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
) -> Result<(), AppError> {
    let sql = "DELETE FROM api_keys WHERE id = $1 AND project_id = $2 AND org_id = $3";
    on_one_key(conn, sql, scope, id, None, || AppError::not_found("key")).await
}

/// Runs `sql` on one key of the project (`$1` its id, `$2` the project, `$3`
/// the organization, `$4` the time where given); `missed()` unless it
/// changed that key.
async fn on_one_key(
    conn: &mut AnyConnection,
    sql: &'static str,
    scope: &ProjectScope,
    id: &str,
    now: Option<i64>,
    missed: impl FnOnce() -> AppError,
) -> Result<(), AppError> {
    let q = sqlx::query(sql)
        .bind(id)
        .bind(scope.project_id())
        .bind(scope.org_id());
    let q = match now {
        Some(now) => q.bind(now),
        None => q,
    };
    if q.execute(&mut *conn).await?.rows_affected() == 1 {
        Ok(())
    } else {
        Err(missed())
    }
}

/// A new secret for the same key; the old one works until `grace_until`
/// (now, without grace). Returns the new token.
pub async fn rotate(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
    grace_until: i64,
    now: i64,
) -> Result<Token, AppError> {
    let q = sqlx::query(
        "SELECT public_id, secret_hash, revoked_at FROM api_keys WHERE id = $1 AND project_id = $2",
    )
    .bind(id)
    .bind(scope.project_id());
    let row = super::db::row_or_404(q, conn, "key").await?;
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(AppError::conflict(
            "a revoked key cannot be rotated; create a new one",
        ));
    }
    let public_id: String = row.try_get("public_id")?;
    let old_hash: String = row.try_get("secret_hash")?;
    let token = Token::with_public_id(public_id);
    sqlx::query(
        "UPDATE api_keys SET secret_hash = $1, hint = $2, prev_secret_hash = $3, prev_valid_until = $4, \
         updated_at = $5 WHERE id = $6",
    )
    .bind(token.secret_hash())
    .bind(token.hint())
    .bind(if grace_until > now { Some(old_hash) } else { None })
    .bind(if grace_until > now { Some(grace_until) } else { None })
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Keys that still work: not revoked, not expired.
pub async fn live_count(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    now: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(scope.project_id())
    .bind(now)
    .fetch_one(&mut *conn)
    .await
}

/// Whether a presented token is a live key: the check the proxy will make
/// from memory, here against the database (tests, CLI).
pub async fn authenticate(
    conn: &mut AnyConnection,
    presented: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let Some(parsed) = token::parse_any(presented) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, secret_hash, prev_secret_hash, prev_valid_until, revoked_at, expires_at FROM api_keys WHERE public_id = $1",
    )
    .bind(parsed.public_id.as_ref())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let hash = token::hash_secret(parsed.secret);
    let current: String = r.try_get("secret_hash")?;
    let prev: Option<String> = r.try_get("prev_secret_hash")?;
    let prev_until: Option<i64> = r.try_get("prev_valid_until")?;
    let matches = hash == current
        || (prev.as_deref() == Some(hash.as_str()) && prev_until.is_some_and(|t| t > now));
    let status = KeyStatus::of(r.try_get("revoked_at")?, r.try_get("expires_at")?, now);
    (matches && status == KeyStatus::Active)
        .then(|| r.try_get("id"))
        .transpose()
}

/// One key as the proxy reads it, borrowed from its row: what
/// authenticates it (hashes, never the secret) and every limit a request
/// checks. No name, tags or metadata: the request path never reads them.
#[derive(Debug)]
pub struct ProxyKeyRow<'r> {
    pub id: &'r str,
    pub public_id: &'r str,
    pub secret_hash: &'r str,
    pub prev_secret_hash: Option<&'r str>,
    pub prev_valid_until: Option<i64>,
    pub org_id: &'r str,
    pub project_id: &'r str,
    /// The allowed models as stored (a JSON list); see [`ProxyKeyRow::models`].
    pub models_json: &'r str,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_reset: ResetInterval,
    pub expires_at: Option<i64>,
    pub no_content_logging: bool,
    pub revoked_at: Option<i64>,
    /// The key's own MCP grants as stored (JSON); `None` inherits its project's.
    pub mcp_json: Option<&'r str>,
}

impl ProxyKeyRow<'_> {
    pub fn models(&self) -> Result<Vec<String>, sqlx::Error> {
        json_list(self.models_json)
    }
}

/// Which keys to load.
#[derive(Clone, Copy, Debug)]
pub enum Load<'a> {
    All,
    Org(&'a str),
    Project(&'a str),
    One(&'a str),
}

/// The columns the proxy reads, in [`ProxyKeyRow`]'s order.
macro_rules! proxy_columns {
    () => {
        "id, public_id, secret_hash, prev_secret_hash, prev_valid_until, org_id, project_id, \
         models_json, tpm_limit, rpm_limit, budget_micros, budget_reset, expires_at, \
         no_content_logging, revoked_at, mcp_json"
    };
}

/// A row of [`proxy_columns`] from either driver, by position in the
/// SELECT's order (no name lookups per row), borrowing its text.
fn proxy_row<'r, R>(r: &'r R) -> Result<ProxyKeyRow<'r>, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ProxyKeyRow {
        id: r.try_get(0)?,
        public_id: r.try_get(1)?,
        secret_hash: r.try_get(2)?,
        prev_secret_hash: r.try_get(3)?,
        prev_valid_until: r.try_get(4)?,
        org_id: r.try_get(5)?,
        project_id: r.try_get(6)?,
        models_json: r.try_get(7)?,
        tpm_limit: r.try_get(8)?,
        rpm_limit: r.try_get(9)?,
        budget_micros: r.try_get(10)?,
        budget_reset: super::db::text_as(r.try_get::<&str, _>(11)?)?,
        expires_at: r.try_get(12)?,
        no_content_logging: r.try_get::<i64, _>(13)? != 0,
        revoked_at: r.try_get(14)?,
        mcp_json: r.try_get(15)?,
    })
}

/// Keys a page of [`each_for_proxy`] holds.
pub const PAGE: i64 = 10_000;

/// One key of a page: [`ProxyKeyRow`]'s columns as a JSON array.
#[derive(serde::Deserialize)]
struct PagedKey<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    Option<i64>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    #[serde(borrow)] Cow<'a, str>,
    Option<i64>,
    i64,
    Option<i64>,
    #[serde(borrow, default)] Option<Cow<'a, str>>,
);

impl PagedKey<'_> {
    fn row(&self) -> Result<ProxyKeyRow<'_>, sqlx::Error> {
        Ok(ProxyKeyRow {
            id: &self.0,
            public_id: &self.1,
            secret_hash: &self.2,
            prev_secret_hash: self.3.as_deref(),
            prev_valid_until: self.4,
            org_id: &self.5,
            project_id: &self.6,
            models_json: &self.7,
            tpm_limit: self.8,
            rpm_limit: self.9,
            budget_micros: self.10,
            budget_reset: super::db::text_as(&self.11)?,
            expires_at: self.12,
            no_content_logging: self.13 != 0,
            revoked_at: self.14,
            mcp_json: self.15.as_deref(),
        })
    }
}

/// Every key, for an instance's start: from PostgreSQL as one stream of
/// rows decoded by its own driver; from SQLite in pages (see [`each_page`]).
pub async fn each_key_for_proxy(
    db: &super::db::Db,
    mut each: impl FnMut(ProxyKeyRow<'_>) -> Result<(), sqlx::Error>,
) -> Result<(), sqlx::Error> {
    use futures::TryStreamExt;
    let Some(pg) = &db.pg else {
        let mut conn = db.pool.acquire().await?;
        return each_page(&mut conn, each).await;
    };
    let mut rows = sqlx::query(concat!("SELECT ", proxy_columns!(), " FROM api_keys")).fetch(pg);
    while let Some(r) = rows.try_next().await? {
        each(proxy_row(&r)?)?;
    }
    Ok(())
}

/// Every key, a page at a time, each page one JSON document the database
/// builds: one round trip and one row a page, where a row a key would cost
/// SQLite's driver a hand-over between threads a key. In the order of the
/// table's rows (a scan, not a walk of the id index with a lookup a key);
/// on PostgreSQL (where [`each_key_for_proxy`] does not need it) in the
/// order of the ids.
async fn each_page(
    conn: &mut AnyConnection,
    mut each: impl FnMut(ProxyKeyRow<'_>) -> Result<(), sqlx::Error>,
) -> Result<(), sqlx::Error> {
    let postgres = conn.backend_name().eq_ignore_ascii_case("postgresql");
    let sql = if postgres {
        concat!(
            "SELECT json_agg(json_build_array(",
            proxy_columns!(),
            "))::text, max(id) FROM \
             (SELECT * FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2) AS page"
        )
    } else {
        concat!(
            "SELECT json_group_array(json_array(",
            proxy_columns!(),
            ")), CAST(max(row_number) AS TEXT) FROM \
             (SELECT rowid AS row_number, * FROM api_keys \
              WHERE rowid > CAST($1 AS INTEGER) ORDER BY rowid LIMIT $2)"
        )
    };
    // A page: its keys as one JSON document, and where it ended (an id,
    // or a row number as text).
    async fn fetch(
        conn: &mut AnyConnection,
        sql: &'static str,
        after: String,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let (doc, last): (Option<String>, Option<String>) = sqlx::query_as(sql)
            .bind(after)
            .bind(PAGE)
            .fetch_one(conn)
            .await?;
        Ok(doc.zip(last))
    }
    let first = if postgres { String::new() } else { "0".into() };
    let mut page = fetch(conn, sql, first).await?;
    // While one page is decoded and passed on, the database builds the next.
    while let Some((doc, last)) = page {
        let keys: Vec<PagedKey<'_>> =
            serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let full = i64::try_from(keys.len()).unwrap_or(i64::MAX) >= PAGE;
        let next = async {
            match full {
                true => fetch(conn, sql, last).await,
                false => Ok(None),
            }
        };
        let work = async {
            for k in &keys {
                each(k.row()?)?;
            }
            Ok::<_, sqlx::Error>(())
        };
        let (next, worked) = futures::join!(next, work);
        worked?;
        page = next?;
    }
    Ok(())
}

/// How many keys [`each_for_proxy`] would pass for `Load::All`.
pub async fn count_all(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&mut *conn)
        .await
}

/// Passes each key of `which` to `each` as it is read: a million keys are
/// never held as rows, or decoded into owned values, all at once.
/// `Load::All` from SQLite is read in pages (see [`each_page`]).
pub async fn each_for_proxy(
    conn: &mut AnyConnection,
    which: Load<'_>,
    mut each: impl FnMut(ProxyKeyRow<'_>) -> Result<(), sqlx::Error>,
) -> Result<(), sqlx::Error> {
    use futures::TryStreamExt;
    macro_rules! select {
        ($where:literal) => {
            concat!("SELECT ", proxy_columns!(), " FROM api_keys ", $where)
        };
    }
    let q = match which {
        Load::All => return each_page(conn, each).await,
        Load::Org(id) => sqlx::query(select!("WHERE org_id = $1")).bind(id),
        Load::Project(id) => sqlx::query(select!("WHERE project_id = $1")).bind(id),
        Load::One(id) => sqlx::query(select!("WHERE id = $1")).bind(id),
    };
    let mut rows = q.fetch(&mut *conn);
    while let Some(r) = rows.try_next().await? {
        each(proxy_row(&r)?)?;
    }
    Ok(())
}

/// A key's own MCP grants (`None`: its project's).
pub async fn mcp_of(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
) -> Result<Option<Vec<super::mcp::Grant>>, sqlx::Error> {
    let json: Option<String> =
        sqlx::query_scalar("SELECT mcp_json FROM api_keys WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(scope.project_id())
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    json.as_deref().map(super::mcp::grants_of).transpose()
}

/// Narrows a key's MCP servers and tools (`None`: its project's).
pub async fn set_mcp(
    conn: &mut AnyConnection,
    scope: &ProjectScope,
    id: &str,
    grants: Option<&[super::mcp::Grant]>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET mcp_json = $1, updated_at = $2 WHERE id = $3 AND project_id = $4",
    )
    .bind(grants.map(super::mcp::grants_json))
    .bind(now)
    .bind(id)
    .bind(scope.project_id())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes a removed MCP server out of every key of the organization that
/// named it.
pub(crate) async fn forget_mcp_server(
    conn: &mut AnyConnection,
    org_id: &str,
    server: &str,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, mcp_json FROM api_keys WHERE org_id = $1 AND mcp_json IS NOT NULL",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, json) in rows {
        let grants = super::mcp::grants_of(&json)?;
        if grants.iter().any(|g| g.server == server) {
            let kept: Vec<_> = grants.into_iter().filter(|g| g.server != server).collect();
            sqlx::query("UPDATE api_keys SET mcp_json = $1 WHERE id = $2")
                .bind(super::mcp::grants_json(&kept))
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
