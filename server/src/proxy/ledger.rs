//! The usage ledger's write-behind: requests hand events to a bounded queue
//! (waiting for room rather than dropping one); one task writes them in
//! batches, retrying a failed batch until it lands; shutdown flushes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_app::core::db::Db;
use tollgate_app::core::usage::{self, ContentLog, UsageEvent};

use crate::metrics::Metrics;

enum Entry {
    Usage(UsageEvent),
    Content(ContentLog),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Entry>,
    /// Entries handed to a task because the queue was full, not yet queued.
    waiting: Arc<AtomicUsize>,
}

impl Ledger {
    /// Starts the writer.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        queue: usize,
        batch: usize,
        every: Duration,
    ) -> Ledger {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(write_behind(db, metrics, rx, batch.max(1), every));
        Ledger {
            tx,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues an event; where the queue is full, a task waits for room.
    pub fn record(&self, e: UsageEvent) {
        self.push(Entry::Usage(e));
    }

    pub fn record_content(&self, c: ContentLog) {
        self.push(Entry::Content(c));
    }

    fn push(&self, e: Entry) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(e) {
            let tx = self.tx.clone();
            let waiting = self.waiting.clone();
            waiting.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if tx.send(e).await.is_err() {
                    tracing::error!("usage ledger closed with an event still to write");
                }
                waiting.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Entries queued or waiting for room, not yet written.
    pub fn depth(&self) -> usize {
        (self.tx.max_capacity() - self.tx.capacity())
            .saturating_add(self.waiting.load(Ordering::Relaxed))
    }

    /// Returns once everything recorded before the call is written.
    pub async fn flush(&self) {
        while self.waiting.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Entry::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_behind(
    db: Db,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Entry>,
    batch: usize,
    every: Duration,
) {
    let mut events: Vec<UsageEvent> = Vec::new();
    let mut logs: Vec<ContentLog> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        // Wait for the first entry, then gather until the batch is full or
        // the first has waited `every`.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + every;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Entry::Usage(e)) => events.push(e),
                Some(Entry::Content(c)) => logs.push(c),
                Some(Entry::Flush(done)) => {
                    waiting.push(done);
                    break;
                }
                None => {}
            }
            if events.len() + logs.len() >= batch {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => next = Some(e),
                Ok(None) | Err(_) => break,
            }
        }
        write_until_done(&db, &metrics, &events, &logs).await;
        events.clear();
        logs.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Retries with backoff until the batch lands: an event is never dropped.
async fn write_until_done(db: &Db, metrics: &Metrics, events: &[UsageEvent], logs: &[ContentLog]) {
    if events.is_empty() && logs.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = std::time::Instant::now();
        let result = async {
            let mut conn = db.pool.acquire().await?;
            usage::write_batch(&mut conn, events, logs).await
        }
        .await;
        match result {
            Ok(()) => {
                metrics.ledger_write(started.elapsed());
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "writing usage events failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
