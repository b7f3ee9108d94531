//! The audit log: every administrative change, each event carrying the hash of
//! the one before, so that an edited or deleted row breaks the chain.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::policy::OrgScope;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a change: a signed-in user, a provisioning key, or the operator's CLI.
#[derive(Clone, Debug)]
pub struct Actor {
    pub id: Option<String>,
    pub label: String,
    /// `user`, `provisioning_key` or `cli`: for the log, which names no one.
    pub kind: &'static str,
}

impl Actor {
    pub fn user(id: &str, email: &str) -> Actor {
        Actor {
            id: Some(id.to_owned()),
            label: email.to_owned(),
            kind: "user",
        }
    }
    pub fn provisioning(key_id: &str, name: &str) -> Actor {
        Actor {
            id: Some(key_id.to_owned()),
            label: format!("provisioning key '{name}'"),
            kind: "provisioning_key",
        }
    }
    pub fn scim(token_id: &str, name: &str) -> Actor {
        Actor {
            id: Some(token_id.to_owned()),
            label: format!("SCIM token '{name}'"),
            kind: "scim_token",
        }
    }
    pub fn cli() -> Actor {
        Actor {
            id: None,
            label: "operator (cli)".to_owned(),
            kind: "cli",
        }
    }
}

/// An event to append.
pub struct Change<'a> {
    pub org_id: Option<&'a str>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// The fields a hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: i64,
    at: i64,
    org_id: Option<&'a str>,
    actor_id: Option<&'a str>,
    actor_label: &'a str,
    action: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
    prev_hash: &'a str,
}

fn hash_of(h: &Hashed<'_>) -> String {
    let bytes = serde_json::to_vec(h).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Appends an event in the caller's transaction, so that the change and its
/// record commit together.
pub async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    change: Change<'_>,
    at: i64,
) -> Result<(), sqlx::Error> {
    // Lock the head first: appends are serial on both databases.
    sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("hash")?;
    // Who did what to which resource; never the before/after bodies. Logged
    // as recorded: a change whose transaction then fails is logged too.
    tracing::info!(
        actor_kind = actor.kind,
        actor_id = actor.id.as_deref().unwrap_or(""),
        action = change.action,
        resource_type = change.resource_type,
        resource_id = change.resource_id,
        org_id = change.org_id.unwrap_or(""),
        "audit event"
    );
    let before = change.before.map(|v| v.to_string());
    let after = change.after.map(|v| v.to_string());
    let hash = hash_of(&Hashed {
        seq,
        at,
        org_id: change.org_id,
        actor_id: actor.id.as_deref(),
        actor_label: &actor.label,
        action: change.action,
        resource_type: change.resource_type,
        resource_id: change.resource_id,
        before: before.as_deref(),
        after: after.as_deref(),
        prev_hash: &prev_hash,
    });
    sqlx::query(
        "INSERT INTO audit_events (seq, at, org_id, actor_id, actor_label, action, resource_type, \
         resource_id, before_json, after_json, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(at)
    .bind(change.org_id)
    .bind(actor.id.as_deref())
    .bind(&actor.label)
    .bind(change.action)
    .bind(change.resource_type)
    .bind(change.resource_id)
    .bind(before)
    .bind(after)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub at: i64,
    pub actor_label: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    #[sqlx(rename = "before_json")]
    pub before: Option<String>,
    #[sqlx(rename = "after_json")]
    pub after: Option<String>,
}

pub struct Filter<'a> {
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    /// Only events with a sequence number below this (the page's cursor).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// One organization's events, newest first.
pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    f: &Filter<'_>,
) -> Result<Vec<EventRow>, sqlx::Error> {
    // One static statement (QueryBuilder on `Any` writes `?`, which PostgreSQL
    // rejects); absent filters are bound as NULL.
    sqlx::query_as(
        "SELECT seq, at, actor_label, action, resource_type, resource_id, before_json, after_json \
         FROM audit_events WHERE org_id = $1 AND ($2 IS NULL OR actor_label = $2) \
         AND ($3 IS NULL OR action = $3) AND seq < $4 ORDER BY seq DESC LIMIT $5",
    )
    .bind(scope.org_id())
    .bind(f.actor)
    .bind(f.action)
    .bind(f.before_seq.unwrap_or(i64::MAX))
    .bind(f.limit)
    .fetch_all(&mut *conn)
    .await
}

/// The distinct actors and actions of one organization, for the filters.
pub async fn facets(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let actors = sqlx::query_scalar(
        "SELECT DISTINCT actor_label FROM audit_events WHERE org_id = $1 ORDER BY actor_label",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    let actions = sqlx::query_scalar(
        "SELECT DISTINCT action FROM audit_events WHERE org_id = $1 ORDER BY action",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    Ok((actors, actions))
}

/// What `verify` found wrong first.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("event {seq}: expected sequence number {expected} (an event is missing)")]
    Gap { seq: i64, expected: i64 },
    #[error("event {seq}: does not follow the hash of the event before it")]
    Link { seq: i64 },
    #[error("event {seq}: its content does not match its hash (edited)")]
    Content { seq: i64 },
    #[error(
        "the chain ends at event {last} but its head says {head} (events removed from the end)"
    )]
    Head { last: i64, head: i64 },
}

/// Walks the whole chain. `Ok(n)` is the number of events checked.
pub async fn verify(conn: &mut AnyConnection) -> Result<Result<i64, ChainBreak>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, at, org_id, actor_id, actor_label, action, resource_type, resource_id, \
         before_json, after_json, prev_hash, hash FROM audit_events ORDER BY seq",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut prev = GENESIS.to_owned();
    let mut expected = 1_i64;
    for r in &rows {
        let seq: i64 = r.try_get("seq")?;
        if seq != expected {
            return Ok(Err(ChainBreak::Gap { seq, expected }));
        }
        let prev_hash: String = r.try_get("prev_hash")?;
        if prev_hash != prev {
            return Ok(Err(ChainBreak::Link { seq }));
        }
        let org_id: Option<String> = r.try_get("org_id")?;
        let actor_id: Option<String> = r.try_get("actor_id")?;
        let actor_label: String = r.try_get("actor_label")?;
        let action: String = r.try_get("action")?;
        let resource_type: String = r.try_get("resource_type")?;
        let resource_id: String = r.try_get("resource_id")?;
        let before: Option<String> = r.try_get("before_json")?;
        let after: Option<String> = r.try_get("after_json")?;
        let stored: String = r.try_get("hash")?;
        let computed = hash_of(&Hashed {
            seq,
            at: r.try_get("at")?,
            org_id: org_id.as_deref(),
            actor_id: actor_id.as_deref(),
            actor_label: &actor_label,
            action: &action,
            resource_type: &resource_type,
            resource_id: &resource_id,
            before: before.as_deref(),
            after: after.as_deref(),
            prev_hash: &prev_hash,
        });
        if computed != stored {
            return Ok(Err(ChainBreak::Content { seq }));
        }
        prev = stored;
        expected += 1;
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: String = head.try_get("hash")?;
    let last = expected - 1;
    if head_seq != last || head_hash != prev {
        return Ok(Err(ChainBreak::Head {
            last,
            head: head_seq,
        }));
    }
    Ok(Ok(last))
}
