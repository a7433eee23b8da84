//! The hot path's hand-off for audit events.
//!
//! Requests push events onto a bounded lock-free queue; a batcher task drains it every
//! `FLUSH_INTERVAL` (or at once when it fills) and publishes `IngestAudit` jobs of up to
//! `MAX_BATCH` events. A request pays one compare-and-swap: no lock, no allocation, and no
//! cross-thread wake-up (a channel would wake the batcher, a system call, for nearly every
//! event). Storage sees one write per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::{Job, JobQueue, QueueError};
use crate::domain::audit::AuditEvent;
use crate::metrics::Metrics;

/// Larger batches are fewer, larger storage transactions: SQLite writes each touched index
/// page once per commit, so 5,000-event commits ingest ~1.6x faster than 500-event ones.
const MAX_BATCH: usize = 5_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Events buffered before requests wait: backpressure instead of unbounded memory.
const CAPACITY: usize = 16_384;

struct Shared {
    events: ArrayQueue<AuditEvent>,
    /// Wakes the batcher early when the queue is full.
    full: Notify,
    /// Wakes requests waiting for room once the batcher has drained.
    drained: Notify,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Where requests drop their audit events. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    shared: Arc<Shared>,
}

impl AuditSink {
    /// Hands an event over; waits only while the batcher is `CAPACITY` events behind.
    pub async fn record(&self, event: AuditEvent) {
        let shared = &self.shared;
        shared.metrics.audit_pending.fetch_add(1, Ordering::Relaxed);
        let mut event = match shared.events.push(event) {
            Ok(()) => return,
            Err(rejected) => rejected,
        };
        // The queue is full: storage is behind. Wait for the batcher to drain, registering
        // interest before retrying so that a drain in between is not missed.
        loop {
            if shared.closed.load(Ordering::Acquire) {
                return self.lost();
            }
            let drained = shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            match shared.events.push(event) {
                Ok(()) => return,
                Err(rejected) => event = rejected,
            }
            shared.full.notify_one();
            drained.await;
        }
    }

    fn lost(&self) {
        // Only possible after shutdown has flushed the batcher, when no request should run.
        self.shared
            .metrics
            .audit_pending
            .fetch_sub(1, Ordering::Relaxed);
        self.shared
            .metrics
            .audit_lost
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!("audit event arrived after shutdown and was lost");
    }
}

/// Owns the batcher task; `flush_and_stop` drains it.
pub struct AuditBatcher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AuditBatcher {
    /// Starts the batcher on the current Tokio runtime.
    pub fn start(queue: Arc<dyn JobQueue>, metrics: Arc<Metrics>) -> (AuditSink, AuditBatcher) {
        AuditBatcher::start_with_capacity(queue, metrics, CAPACITY)
    }

    /// As [`AuditBatcher::start`], with room for `capacity` events before requests wait.
    pub fn start_with_capacity(
        queue: Arc<dyn JobQueue>,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> (AuditSink, AuditBatcher) {
        let shared = Arc::new(Shared {
            events: ArrayQueue::new(capacity),
            full: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_batcher(Arc::clone(&shared), stopped, queue));
        (
            AuditSink { shared },
            AuditBatcher {
                stop: Some(stop),
                task: Some(task),
            },
        )
    }

    /// Publishes every event recorded so far and stops. Events recorded afterwards are lost
    /// (and counted), so call it only once the listeners have stopped.
    pub async fn flush_and_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "audit batcher failed");
            }
        }
    }
}

async fn run_batcher(
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
    queue: Arc<dyn JobQueue>,
) {
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => drain(&shared, &queue).await,
            _ = shared.full.notified() => drain(&shared, &queue).await,
            _ = &mut stopped => {
                shared.closed.store(true, Ordering::Release);
                drain(&shared, &queue).await;
                shared.drained.notify_waiters();
                return;
            }
        }
    }
}

/// Publishes everything queued, in batches of at most `MAX_BATCH`.
async fn drain(shared: &Shared, queue: &Arc<dyn JobQueue>) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH.min(shared.events.len()));
        while batch.len() < MAX_BATCH {
            match shared.events.pop() {
                Some(event) => batch.push(event),
                None => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        let full = batch.len() == MAX_BATCH;
        shared.drained.notify_waiters();
        publish(queue, batch).await;
        if !full {
            return;
        }
    }
}

/// Publishes a batch, retrying until the queue takes it: an event leaves the batcher only
/// into a queue that has accepted responsibility for it.
async fn publish(queue: &Arc<dyn JobQueue>, batch: Vec<AuditEvent>) {
    let job = Job::IngestAudit {
        events: Arc::from(batch),
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        // Cloning a job clones an `Arc`, not the events.
        match queue.publish(job.clone()).await {
            Ok(()) => return,
            Err(QueueError::Closed) => {
                tracing::error!("job queue closed before the audit batcher; events lost");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "publishing audit events failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{AuditQuery, CredentialType};
    use crate::jobs::JobContext;
    use crate::queue::in_process::InProcessQueue;
    use crate::store::sqlite::SqliteStore;
    use crate::store::SharedStore;

    fn event(workspace: &Arc<str>) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            workspace_id: Arc::clone(workspace),
            credential_type: CredentialType::ApiKey,
            credential_id: Arc::from("key_1"),
            key_label: None,
            app_name: None,
            method: "GET".into(),
            path: "/v1/checks".into(),
            scope: None,
            status: 200,
            error_code: None,
            request_id: "r".into(),
            client_addr: None,
        }
    }

    /// With room for only 4 events, 300 concurrent requests must wait for the batcher rather
    /// than lose anything, and every event must reach the audit log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_requests_wait_and_loses_nothing() {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        store.migrate().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let queue =
            InProcessQueue::start(JobContext::new(Arc::clone(&store), Arc::clone(&metrics)));
        let (sink, mut batcher) = AuditBatcher::start_with_capacity(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            4,
        );
        let workspace: Arc<str> = Arc::from("ws_1");
        let producers: Vec<_> = (0..300)
            .map(|_| {
                let sink = sink.clone();
                let event = event(&workspace);
                tokio::spawn(async move { sink.record(event).await })
            })
            .collect();
        for producer in producers {
            producer.await.unwrap();
        }
        batcher.flush_and_stop().await;
        queue.shutdown().await;
        let query = AuditQuery {
            limit: 1_000,
            ..Default::default()
        };
        let stored = store.query_audit_events("ws_1", &query).await.unwrap();
        assert_eq!(stored.len(), 300);
        assert_eq!(metrics.audit_lost.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.audit_pending.load(Ordering::Relaxed), 0);
    }
}
