//! Follows the change log, so that what another instance (or the CLI)
//! commits reaches this proxy: on every PostgreSQL notification, after the
//! listener reconnects (notifications sent in the gap are lost, the log is
//! not), and every `poll` as a safety net, it applies each entry after the
//! last one applied. An instance that fell behind the log's retention
//! reloads everything. Old entries are pruned here too.

use sqlx::postgres::PgListener;
use sqlx::AnyConnection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tollgate_app::core::changes::{self, CHANNEL};
use tollgate_app::core::db::Db;
use tollgate_app::core::now_ms;

use super::Gateway;

/// Entries read per query while catching up.
const BATCH: i64 = 500;

/// How long entries stay in the log: an instance away longer reloads all.
const RETENTION_MS: i64 = 24 * 3600 * 1000;

/// While PostgreSQL's listener is down: how often it is tried again (and
/// the log read meanwhile).
const RELISTEN: Duration = Duration::from_secs(1);

/// Where this instance stands in the log (for `/readyz` and the metrics).
#[derive(Default)]
pub struct FeedStatus {
    /// The last sequence number applied.
    pub applied: AtomicI64,
    /// The highest sequence number seen in the log.
    pub head: AtomicI64,
    /// When the log was last read without error (ms; 0: never).
    pub read_at: AtomicI64,
}

/// Starts following the log after `from` (read before the proxy loaded its
/// state, so nothing committed in between is missed).
pub(super) fn spawn(gw: Weak<Gateway>, db: Db, status: Arc<FeedStatus>, from: i64, poll: Duration) {
    status.applied.store(from, Ordering::Relaxed);
    status.head.store(from, Ordering::Relaxed);
    tokio::spawn(follow(gw, db, status, poll));
}

async fn follow(gw: Weak<Gateway>, db: Db, status: Arc<FeedStatus>, poll: Duration) {
    let mut listener: Option<PgListener> = None;
    // On PostgreSQL the log is read on a connection of its own: a wake-up
    // with nothing new takes none of the pool's (only applying an entry
    // does). SQLite (perhaps in memory) reads through the pool, on its timer.
    let mut own: Option<AnyConnection> = None;
    let mut pruned_at = 0;
    loop {
        let Some(gateway) = gw.upgrade() else { return };
        let read = if db.pg.is_some() {
            if listener.is_none() {
                listener = listen(&db).await;
            }
            if own.is_none() {
                own = db
                    .connect_one()
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "the change feed cannot connect");
                    })
                    .ok();
            }
            match own.as_mut() {
                Some(conn) => pass(&gateway, conn, &status, &mut pruned_at).await,
                None => Ok(()),
            }
        } else {
            match db.pool.acquire().await {
                Ok(mut conn) => pass(&gateway, &mut conn, &status, &mut pruned_at).await,
                Err(e) => Err(e),
            }
        };
        drop(gateway);
        if let Err(e) = read {
            tracing::warn!(error = %e, "the change feed could not read the log; retrying");
            own = None;
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    r = l.try_recv() => match r {
                        Ok(Some(_)) => {}
                        // Reconnected: what was announced in the gap is
                        // read from the log on the next pass.
                        Ok(None) => tracing::info!("the change feed's listener reconnected"),
                        Err(e) => {
                            tracing::warn!(error = %e, "the change feed's listener failed");
                            listener = None;
                            tokio::time::sleep(poll.min(RELISTEN)).await;
                        }
                    },
                    () = tokio::time::sleep(poll) => {}
                }
            }
            None if db.pg.is_some() => tokio::time::sleep(poll.min(RELISTEN)).await,
            None => tokio::time::sleep(poll).await,
        }
    }
}

/// A listener on the log's channel (PostgreSQL only; SQLite polls).
async fn listen(db: &Db) -> Option<PgListener> {
    let pool = db.pg.as_ref()?;
    let mut l = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the change feed cannot listen; polling until it can");
            return None;
        }
    };
    match l.listen(CHANNEL).await {
        Ok(()) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "the change feed cannot listen; polling until it can");
            None
        }
    }
}

/// Prunes now and then, then catches up.
async fn pass(
    gw: &Gateway,
    conn: &mut AnyConnection,
    status: &FeedStatus,
    pruned_at: &mut i64,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    if now.saturating_sub(*pruned_at) > RETENTION_MS / 24 {
        *pruned_at = now;
        prune(conn, now).await?;
    }
    catch_up(gw, conn, status).await
}

/// Applies every entry after the last one applied, or reloads everything
/// when entries this instance has not applied were pruned.
async fn catch_up(
    gw: &Gateway,
    conn: &mut AnyConnection,
    status: &FeedStatus,
) -> Result<(), sqlx::Error> {
    let (first, last) = changes::bounds(conn).await?;
    status.head.fetch_max(last, Ordering::Relaxed);
    let mut applied = status.applied.load(Ordering::Relaxed);
    if first > applied.saturating_add(1) && last > applied {
        tracing::warn!(
            applied,
            first,
            "behind the change log's retention: reloading everything"
        );
        gw.memory.load_all().await?;
        status.applied.store(last, Ordering::Relaxed);
        status.read_at.store(now_ms(), Ordering::Relaxed);
        return Ok(());
    }
    loop {
        let batch = changes::since(conn, applied, BATCH).await?;
        let Some(&(newest, _)) = batch.last() else {
            break;
        };
        for (seq, change) in batch {
            gw.memory.apply(&change).await?;
            applied = seq;
            status.applied.store(seq, Ordering::Relaxed);
        }
        status.head.fetch_max(newest, Ordering::Relaxed);
    }
    status.read_at.store(now_ms(), Ordering::Relaxed);
    Ok(())
}

async fn prune(conn: &mut AnyConnection, now: i64) -> Result<(), sqlx::Error> {
    let n = changes::prune(conn, now.saturating_sub(RETENTION_MS)).await?;
    if n > 0 {
        tracing::debug!(entries = n, "pruned the change log");
    }
    Ok(())
}
