//! Change events: every write the proxy must see (keys, projects, an
//! organization's settings, catalogue or providers) is published after commit.
//! Listeners apply it before `publish` returns, so the next request sees it.
//! The same change is appended to the change log in its own transaction,
//! from which it reaches the proxies of other instances.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// What changed, by id; listeners reload it from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// One key: created, edited, revoked, rotated.
    Key(String),
    /// A project's settings and every key in it (deleted projects too).
    Project(String),
    /// An organization's own settings, catalogue and providers.
    Org(String),
    /// Everything of an organization (a member removed: their keys revoked).
    OrgAll(String),
}

pub type Applied<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Listener: Send + Sync {
    fn apply(&self, change: Change) -> Applied<'_>;
}

#[derive(Clone, Default)]
pub struct Changes {
    listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>>,
}

impl Changes {
    pub fn subscribe(&self, listener: Arc<dyn Listener>) {
        if let Ok(mut l) = self.listeners.write() {
            l.push(listener);
        }
    }

    /// Call after the write committed; returns once every listener applied it.
    pub async fn publish(&self, change: Change) {
        let listeners: Vec<Arc<dyn Listener>> = match self.listeners.read() {
            Ok(l) => l.clone(),
            Err(_) => return,
        };
        for l in listeners {
            l.apply(change.clone()).await;
        }
    }
}

/// The PostgreSQL channel that announces a new entry of the change log.
pub const CHANNEL: &str = "tollgate_changes";

/// Serialises the writers of the change log until each commits, so that the
/// order of sequence numbers is the order of commits (no reader ever skips
/// a lower number that commits late). Any constant no other code uses.
const LOG_LOCK: i64 = 0x7461_6c6c_6761_7465;

impl Change {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Change::Key(id) => ("key", id),
            Change::Project(id) => ("project", id),
            Change::Org(id) => ("org", id),
            Change::OrgAll(id) => ("org_all", id),
        }
    }

    fn of(kind: &str, id: String) -> Option<Change> {
        match kind {
            "key" => Some(Change::Key(id)),
            "project" => Some(Change::Project(id)),
            "org" => Some(Change::Org(id)),
            "org_all" => Some(Change::OrgAll(id)),
            _ => None,
        }
    }
}

/// Appends `change` to the change log inside the transaction that makes it;
/// on PostgreSQL it also announces it, delivered when the transaction commits.
pub async fn append(
    conn: &mut sqlx::AnyConnection,
    change: &Change,
    now: i64,
) -> Result<(), sqlx::Error> {
    let postgres = conn.backend_name() == "PostgreSQL";
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOG_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let (kind, id) = change.parts();
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO change_log (kind, ref_id, created_at) VALUES ($1, $2, $3) RETURNING seq",
    )
    .bind(kind)
    .bind(id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(seq.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The first and last sequence numbers in the log (0 when it is empty).
pub async fn bounds(conn: &mut sqlx::AnyConnection) -> Result<(i64, i64), sqlx::Error> {
    let (first, last): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(seq), MAX(seq) FROM change_log")
            .fetch_one(&mut *conn)
            .await?;
    Ok((first.unwrap_or(0), last.unwrap_or(0)))
}

/// Up to `limit` entries after `after`, oldest first; `None` for a kind this
/// version does not know (written by a newer one).
pub async fn since(
    conn: &mut sqlx::AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Option<Change>)>, sqlx::Error> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT seq, kind, ref_id FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, kind, id)| (seq, Change::of(&kind, id)))
        .collect())
}

/// Deletes the entries written before `before` (ms), always keeping the
/// newest: a reader that finds the log's first entry past the next one it
/// needs knows it missed some. Returns how many were deleted.
pub async fn prune(conn: &mut sqlx::AnyConnection, before: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM change_log WHERE created_at < $1 \
         AND seq < (SELECT MAX(seq) FROM change_log)",
    )
    .bind(before)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
