//! Follows the change log, so that what another instance commits reaches
//! this proxy: on every PostgreSQL notification, after the listener comes
//! back (notifications sent in the gap are lost, the log is not), and every
//! `poll` as a safety net, it applies each entry after the last one applied.
//! An instance that fell behind the log's retention, or that cannot apply an
//! entry after several tries, reloads everything. Old entries are pruned.

use sqlx::postgres::PgListener;
use sqlx::AnyConnection;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
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

/// The longest one step (connecting, listening, one pass) may take: a
/// connection that went quiet without closing is dropped after it.
const STEP: Duration = Duration::from_secs(10);

/// Tries at one entry before the instance reloads everything instead.
const TRIES: u32 = 5;

/// Where this instance stands in the log (for `/readyz` and the metrics).
#[derive(Default)]
pub struct FeedStatus {
    /// The last sequence number applied.
    pub applied: AtomicI64,
    /// The highest sequence number seen in the log.
    pub head: AtomicI64,
    /// When the log was last read without error (ms; 0: never).
    pub read_at: AtomicI64,
    /// Whether PostgreSQL's listener is connected (SQLite: never).
    pub listening: AtomicBool,
    /// Failed tries at the entry after `applied`.
    failures: AtomicU32,
}

/// Starts following the log after `from` (read before the proxy loaded its
/// state, so nothing committed in between is missed).
pub(super) fn spawn(gw: Weak<Gateway>, db: Db, status: Arc<FeedStatus>, from: i64, poll: Duration) {
    status.applied.store(from, Ordering::Relaxed);
    status.head.store(from, Ordering::Relaxed);
    tokio::spawn(follow(gw, db, status, poll.max(Duration::from_millis(100))));
}

/// `step`, or an error once it has taken longer than [`STEP`].
async fn within<T>(
    what: &'static str,
    step: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(STEP, step)
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::Protocol(format!("{what} took over {STEP:?}"))))
}

async fn follow(gw: Weak<Gateway>, db: Db, status: Arc<FeedStatus>, poll: Duration) {
    let postgres = db.pg.is_some();
    let mut listener: Option<PgListener> = None;
    // On PostgreSQL the log is read on a connection of its own: a wake-up
    // with nothing new takes none of the pool's (only applying an entry
    // does). SQLite (perhaps in memory) reads through the pool, on its timer.
    let mut own: Option<AnyConnection> = None;
    let mut pruned_at = 0;
    loop {
        if postgres {
            // Listening first: what commits after this is announced, and
            // the pass below reads everything before it.
            if listener.is_none() {
                listener = listen(&db).await;
            }
            status
                .listening
                .store(listener.is_some(), Ordering::Relaxed);
            if own.is_none() {
                own = within("connecting", db.connect_one())
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "the change feed cannot connect"))
                    .ok();
            }
        }
        let read = {
            let Some(gateway) = gw.upgrade() else { return };
            match own.as_mut() {
                Some(conn) => {
                    within("reading", pass(&gateway, conn, &status, &mut pruned_at)).await
                }
                None if postgres => Ok(()),
                None => match db.pool.acquire().await {
                    Ok(mut conn) => {
                        within(
                            "reading",
                            pass(&gateway, &mut conn, &status, &mut pruned_at),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                },
            }
        };
        if let Err(e) = read {
            tracing::warn!(error = %e, "the change feed could not read the log; retrying");
            own = None;
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    r = l.try_recv() => match r {
                        Ok(Some(_)) => {}
                        // The connection was lost (and the notifications sent
                        // meanwhile with it): listen again, then read the log.
                        Ok(None) | Err(_) => {
                            tracing::warn!("the change feed's listener lost its connection");
                            listener = None;
                        }
                    },
                    () = tokio::time::sleep(poll) => {}
                }
            }
            None if postgres => tokio::time::sleep(poll.min(RELISTEN)).await,
            None => tokio::time::sleep(poll).await,
        }
    }
}

/// A listener on the log's channel (PostgreSQL only; SQLite polls). It does
/// not reconnect by itself: a lost connection surfaces, so that the caller
/// listens again before it reads what it missed.
async fn listen(db: &Db) -> Option<PgListener> {
    let pool = db.pg.as_ref()?;
    let listening = async {
        let mut l = PgListener::connect_with(pool).await?;
        l.eager_reconnect(false);
        l.listen(CHANNEL).await?;
        Ok(l)
    };
    match within("listening", listening).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "the change feed cannot listen; polling until it can");
            None
        }
    }
}

/// Catches up, then prunes now and then (never the newest entry).
async fn pass(
    gw: &Gateway,
    conn: &mut AnyConnection,
    status: &FeedStatus,
    pruned_at: &mut i64,
) -> Result<(), sqlx::Error> {
    catch_up(gw, conn, status).await?;
    let now = now_ms();
    if now.saturating_sub(*pruned_at) > RETENTION_MS / 24 {
        *pruned_at = now;
        let n = changes::prune(conn, now.saturating_sub(RETENTION_MS)).await?;
        if n > 0 {
            tracing::debug!(entries = n, "pruned the change log");
        }
    }
    Ok(())
}

/// Applies every entry after the last one applied. Reloads everything when
/// entries this instance has not applied were pruned, or when one entry
/// failed [`TRIES`] times (the reload is then what applies it).
async fn catch_up(
    gw: &Gateway,
    conn: &mut AnyConnection,
    status: &FeedStatus,
) -> Result<(), sqlx::Error> {
    let (first, last) = changes::bounds(conn).await?;
    status.head.fetch_max(last, Ordering::Relaxed);
    let mut applied = status.applied.load(Ordering::Relaxed);
    let pruned = first > applied.saturating_add(1) && last > applied;
    if pruned || status.failures.load(Ordering::Relaxed) >= TRIES {
        tracing::warn!(
            applied,
            first,
            last,
            "reloading everything from the database"
        );
        gw.memory.load_all().await?;
        status.failures.store(0, Ordering::Relaxed);
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
            match change {
                Some(change) => {
                    if let Err(e) = gw.memory.apply(&change).await {
                        status.failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                None => {
                    tracing::warn!(
                        seq,
                        "a change of a kind this version does not know: reloading"
                    );
                    gw.memory.load_all().await?;
                }
            }
            applied = seq;
            status.applied.store(seq, Ordering::Relaxed);
            status.failures.store(0, Ordering::Relaxed);
        }
        status.head.fetch_max(newest, Ordering::Relaxed);
    }
    status.read_at.store(now_ms(), Ordering::Relaxed);
    Ok(())
}
