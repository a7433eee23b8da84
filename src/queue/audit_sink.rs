//! The hot path's hand-off for audit events.
//!
//! A request first copies its event into the audit spool (a memory-mapped file: from then
//! on a crash cannot lose it), then pushes it onto a bounded lock-free queue: one
//! compare-and-swap, no cross-thread wake-up (a channel would wake the batcher, a system
//! call, for nearly every event). A batcher task drains the queue every `FLUSH_INTERVAL` (or
//! at once when it fills) and publishes `IngestAudit` jobs of up to `MAX_BATCH` events, up to
//! `IN_FLIGHT` at a time; when the job queue has taken a batch for good, its events are
//! released from the spool. Storage sees one write per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::audit_spool::{AuditSpool, Leftovers, Segment};
use super::{Job, JobQueue, QueueError};
use crate::domain::audit::AuditEvent;
use crate::metrics::Metrics;

/// Events per job: one storage transaction each. Bounds a job's size (and, through a broker,
/// a message's); at 50 ms ticks only a backlog fills one.
const MAX_BATCH: usize = 5_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Events buffered before requests wait: backpressure instead of unbounded memory.
const CAPACITY: usize = 16_384;
/// Batches handed to the job queue and not yet taken for good. With the in-process queue a
/// batch is taken once written, so batches queue up behind a long write (in SQLite, the
/// audit log's regrouping: 0.1–0.5 s; the row-per-event design it replaced took 1–2 s to
/// merge). With 8, requests at 20,000/s waited for room behind such a merge (p99 up to
/// 165 ms, measured); with 32 they did not (p99 1.8–2.2 ms). The price is memory under
/// overload: 32 batches of up to 5,000 events (the process peaked at ≈ 200 MB under wrk).
pub(super) const IN_FLIGHT: usize = 32;

/// An event and the spool segment it was written to (`None`: the spool write failed).
struct Spooled {
    event: AuditEvent,
    segment: Option<Segment>,
}

struct Shared {
    events: ArrayQueue<Spooled>,
    spool: Arc<AuditSpool>,
    /// Spool writes that failed (disk full?): logged once per run of failures.
    spool_failures: AtomicU64,
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
    /// Returns once the event is in the spool, so a crash after the answer cannot lose it.
    pub async fn record(&self, event: AuditEvent) {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return self.lost();
        }
        shared.metrics.audit_pending.fetch_add(1, Ordering::Relaxed);
        let segment = self.spool(&event);
        let mut event = match shared.events.push(Spooled { event, segment }) {
            Ok(()) => return,
            Err(rejected) => rejected,
        };
        // The queue is full: storage is behind. Wait for the batcher to drain, registering
        // interest before retrying so that a drain in between is not missed.
        loop {
            if shared.closed.load(Ordering::Acquire) {
                shared.metrics.audit_pending.fetch_sub(1, Ordering::Relaxed);
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

    /// Writes the event to the spool. If that fails the request still goes on (an audit
    /// disk that is full must not take authentication down); the event then lives only in
    /// memory until it is stored, and the failure is logged and counted.
    fn spool(&self, event: &AuditEvent) -> Option<Segment> {
        let shared = &self.shared;
        match shared.spool.append(event) {
            Ok(segment) => {
                // Read first: a store on every request would bounce the cache line between cores.
                if shared.spool_failures.load(Ordering::Relaxed) != 0 {
                    shared.spool_failures.store(0, Ordering::Relaxed);
                }
                Some(segment)
            }
            Err(error) => {
                if shared.spool_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(%error, "cannot write to the audit spool; events are held in memory only until stored");
                }
                shared
                    .metrics
                    .audit_spool_failures
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// An event that arrived after the batcher stopped (the listeners stop first, so this
    /// should not happen).
    fn lost(&self) {
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

/// Dropped without `flush_and_stop`, the batcher stops at once, as in a crash: what it had
/// not handed over stays in the spool for the next start.
impl Drop for AuditBatcher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl AuditBatcher {
    /// Starts the batcher on the current Tokio runtime. It first hands `leftovers` (the
    /// spool's events from a run that crashed) to the queue again.
    pub fn start(
        queue: Arc<dyn JobQueue>,
        metrics: Arc<Metrics>,
        spool: Arc<AuditSpool>,
        leftovers: Leftovers,
    ) -> (AuditSink, AuditBatcher) {
        AuditBatcher::start_with_capacity(queue, metrics, spool, leftovers, CAPACITY)
    }

    /// As [`AuditBatcher::start`], with room for `capacity` events before requests wait.
    pub fn start_with_capacity(
        queue: Arc<dyn JobQueue>,
        metrics: Arc<Metrics>,
        spool: Arc<AuditSpool>,
        leftovers: Leftovers,
        capacity: usize,
    ) -> (AuditSink, AuditBatcher) {
        let shared = Arc::new(Shared {
            events: ArrayQueue::new(capacity),
            spool,
            spool_failures: AtomicU64::new(0),
            full: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_batcher(Arc::clone(&shared), stopped, queue, leftovers));
        (
            AuditSink { shared },
            AuditBatcher {
                stop: Some(stop),
                task: Some(task),
            },
        )
    }

    /// Publishes every event recorded so far, waits until the queue has taken them for good,
    /// and stops, leaving the spool empty. Call it once the listeners have stopped: an event
    /// recorded afterwards is counted as lost.
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
    leftovers: Leftovers,
) {
    let mut publisher = Publisher {
        queue,
        spool: Arc::clone(&shared.spool),
        metrics: Arc::clone(&shared.metrics),
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        tasks: JoinSet::new(),
    };
    publisher.republish(leftovers);
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance: Option<JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                drain(&shared, &mut publisher).await;
                // The spool's file work, on the blocking pool, one run at a time: a delete
                // can wait on the disk, and neither requests nor draining should.
                if maintenance.as_ref().is_none_or(JoinHandle::is_finished) {
                    let spool = Arc::clone(&shared.spool);
                    maintenance = Some(tokio::task::spawn_blocking(move || spool.maintain()));
                }
            }
            _ = shared.full.notified() => drain(&shared, &mut publisher).await,
            _ = &mut stopped => {
                shared.closed.store(true, Ordering::Release);
                drain(&shared, &mut publisher).await;
                shared.drained.notify_waiters();
                publisher.finish().await;
                if let Some(maintenance) = maintenance {
                    let _ = maintenance.await;
                }
                if shared.spool.outstanding() == 0 {
                    shared.spool.close();
                }
                return;
            }
        }
    }
}

/// Publishes everything queued, in batches of at most `MAX_BATCH`.
async fn drain(shared: &Shared, publisher: &mut Publisher) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH.min(shared.events.len()));
        let mut segments: BTreeMap<Segment, u64> = BTreeMap::new();
        while batch.len() < MAX_BATCH {
            match shared.events.pop() {
                Some(spooled) => {
                    if let Some(segment) = spooled.segment {
                        *segments.entry(segment).or_insert(0) += 1;
                    }
                    batch.push(spooled.event);
                }
                None => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        let full = batch.len() == MAX_BATCH;
        shared.drained.notify_waiters();
        publisher
            .publish(batch, segments.into_iter().collect())
            .await;
        if !full {
            return;
        }
    }
}

/// Hands batches to the job queue, `IN_FLIGHT` at a time, and releases each batch's events
/// from the spool once the queue has taken it.
struct Publisher {
    queue: Arc<dyn JobQueue>,
    spool: Arc<AuditSpool>,
    metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Publisher {
    /// Waits only while `IN_FLIGHT` batches are outstanding: then the event queue fills and
    /// requests wait, instead of memory growing.
    async fn publish(&mut self, batch: Vec<AuditEvent>, segments: Vec<(Segment, u64)>) {
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return; // never closed
        };
        // Reap finished tasks so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
        let (queue, spool) = (Arc::clone(&self.queue), Arc::clone(&self.spool));
        let metrics = Arc::clone(&self.metrics);
        self.tasks.spawn(async move {
            let events = batch.len() as u64;
            if publish(&queue, batch).await {
                spool.release(&segments);
            } else {
                // Not taken (shutdown with storage down): the spooled ones wait in the spool
                // for the next start; the rest (spool writes that failed) are lost.
                let spooled: u64 = segments.iter().map(|&(_, count)| count).sum();
                metrics
                    .audit_lost
                    .fetch_add(events - spooled, Ordering::Relaxed);
            }
            drop(permit);
        });
    }

    /// The events a crashed run left in the spool, handed over in batches in the background
    /// (new events do not wait for them), and released once all are taken: the counts are
    /// per segment, and a segment's events may span batches.
    fn republish(&mut self, leftovers: Leftovers) {
        if leftovers.events.is_empty() {
            return;
        }
        tracing::info!(
            events = leftovers.events.len(),
            "handing audit events left in the spool by an earlier run to the queue again"
        );
        // Pending like any recorded event, so that ingestion's count balances.
        self.metrics
            .audit_pending
            .fetch_add(leftovers.events.len() as i64, Ordering::Relaxed);
        let queue = Arc::clone(&self.queue);
        let spool = Arc::clone(&self.spool);
        self.tasks.spawn(async move {
            let Leftovers {
                mut events,
                segments,
            } = leftovers;
            let mut all_taken = true;
            while !events.is_empty() {
                let rest = events.split_off(events.len().min(MAX_BATCH));
                let batch = std::mem::replace(&mut events, rest);
                all_taken &= publish(&queue, batch).await;
            }
            if all_taken {
                spool.release(&segments);
            }
        });
    }

    /// Waits for every batch handed over so far.
    async fn finish(&mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "audit publishing task failed");
            }
        }
    }
}

/// Publishes a batch, retrying until the queue takes it: an event leaves the batcher only
/// into a queue that has accepted responsibility for it. `false` if the queue closed first
/// (the events stay in the spool for the next start).
async fn publish(queue: &Arc<dyn JobQueue>, batch: Vec<AuditEvent>) -> bool {
    let job = Job::IngestAudit {
        events: Arc::from(batch),
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        // Cloning a job clones an `Arc`, not the events.
        match queue.publish(job.clone()).await {
            Ok(()) => return true,
            Err(QueueError::Closed) => {
                tracing::error!(
                    "job queue closed before the audit batcher; the events stay in the spool for the next start"
                );
                return false;
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
    use crate::queue::audit_spool::AuditSpool;
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
        let dir = spool_dir();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let spool = Arc::new(spool);
        let (sink, mut batcher) = AuditBatcher::start_with_capacity(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::clone(&spool),
            leftovers,
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
        assert_eq!(spool.outstanding(), 0);
        assert_eq!(
            spool_files(&dir),
            0,
            "a clean stop leaves nothing to replay"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_recorded_before_a_crash_are_stored_at_the_next_start() {
        // A run that spooled 25 events and died before handing any over. (The whole path,
        // requests to SIGKILL to restart, is `tests/crash_recovery.rs`.)
        let dir = spool_dir();
        let workspace: Arc<str> = Arc::from("ws_1");
        {
            let (spool, _) = AuditSpool::open(&dir).unwrap();
            for _ in 0..25 {
                spool.append(&event(&workspace)).unwrap();
            }
        }
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        store.migrate().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let queue =
            InProcessQueue::start(JobContext::new(Arc::clone(&store), Arc::clone(&metrics)));
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert_eq!(leftovers.events.len(), 25);
        let spool = Arc::new(spool);
        let (_sink, mut batcher) = AuditBatcher::start(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::clone(&spool),
            leftovers,
        );
        batcher.flush_and_stop().await;
        queue.shutdown().await;
        let query = AuditQuery {
            limit: 1_000,
            ..Default::default()
        };
        assert_eq!(
            store
                .query_audit_events("ws_1", &query)
                .await
                .unwrap()
                .len(),
            25
        );
        assert_eq!(spool.outstanding(), 0);
        assert_eq!(spool_files(&dir), 0);
    }

    fn spool_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("statuspulse-spool-{}", uuid::Uuid::now_v7()))
    }

    fn spool_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| entries.count())
    }
}
