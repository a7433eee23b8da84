//! The hot path's hand-off for audit events.
//!
//! A request encodes its event straight into the audit spool (a memory-mapped file: from
//! then on a crash cannot lose it), from fields it borrows, then pushes the event's place in
//! the spool onto a bounded lock-free queue: one compare-and-swap, no cross-thread wake-up (a
//! channel would wake the batcher, a system call, for nearly every event). A batcher task
//! drains the queue every `FLUSH_INTERVAL` (or at once when it fills), copies the events'
//! bytes out of the spool and publishes them as `IngestAudit` jobs of up to `MAX_BATCH`
//! events, up to `IN_FLIGHT` at a time; when the job queue has taken a batch for good, its
//! events are released from the spool. Storage sees one write per batch. An event is encoded
//! once, by its request: nothing between the request and the audit log allocates per event
//! or decodes it (the embedded audit log stores the bytes as they come).
//!
//! When storage is behind or down, the queue fills. An event that is safe in the spool then
//! leaves memory (it is *spilled*: only its place in the spool is remembered), and the
//! batcher reads spilled events back from the spool while the job queue keeps up, so
//! requests never wait for storage and memory stays bounded; the spool grows on disk
//! instead. Only an event whose spool write failed waits for room in the queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use parking_lot::Mutex;

use super::audit_spool::{AuditSpool, LeftoverSegment, Leftovers, RecordSlot, Segment};
use super::{Job, JobQueue, QueueError};
use crate::domain::audit_codec::{self, EncodedEvents, EventView};
use crate::metrics::Metrics;

/// Events per job: one storage transaction each. Bounds a job's size (and, through a broker,
/// a message's); at 50 ms ticks only a backlog fills one.
const MAX_BATCH: usize = 5_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
const SPILL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Events held in memory; past that they are spilled (kept in the spool alone), so memory
/// stays bounded whatever storage does.
const CAPACITY: usize = 16_384;
/// Batches handed to the job queue and not yet taken for good. With the in-process queue a
/// batch is taken once written, so batches queue up behind a long write (in SQLite, the
/// audit log's regrouping: 0.1–0.5 s; the row-per-event design it replaced took 1–2 s to
/// merge). With 8, requests at 20,000/s waited for room behind such a merge (p99 up to
/// 165 ms, measured); with 32 they did not (p99 1.8–2.2 ms). The price is memory under
/// overload: 32 batches of up to 5,000 events (the process peaked at ≈ 200 MB under wrk).
pub(super) const IN_FLIGHT: usize = 32;

/// A recorded event, as the queue holds it: where the spool holds it, or, when the spool
/// write failed, its encoding.
enum Held {
    Spooled(RecordSlot),
    InMemory(Vec<u8>),
}

/// Events kept in the spool alone, oldest first.
#[derive(Default)]
struct Spilled {
    ranges: VecDeque<SpilledRange>,
    /// When spilling was last logged: once a minute at most, however often the backlog
    /// empties and fills again under sustained overload.
    logged_at: Option<Instant>,
}

/// Consecutive records of one spool segment whose events were spilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpilledRange {
    segment: Segment,
    start: usize,
    end: usize,
    events: u64,
}

struct Shared {
    events: ArrayQueue<Held>,
    spool: Arc<AuditSpool>,
    /// Spool writes that failed (disk full?): logged once per run of failures.
    spool_failures: AtomicU64,
    spilled: Mutex<Spilled>,
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
    /// Hands an event over. Returns once the event is in the spool, so a crash after the
    /// answer cannot lose it; waits only if the spool write failed and the batcher is
    /// `CAPACITY` events behind.
    pub async fn record(&self, event: &EventView<'_>) {
        let shared = &self.shared;
        shared.metrics.audit_pending.fetch_add(1, Ordering::Relaxed);
        if shared.closed.load(Ordering::Acquire) {
            return self.lost();
        }
        let held = match self.spool(event) {
            Some(slot) => Held::Spooled(slot),
            None => Held::InMemory(audit_codec::encode_to_vec(event)),
        };
        let mut event = match shared.events.push(held) {
            Ok(()) => return,
            Err(rejected) => rejected,
        };
        // The queue is full: storage is behind.
        if let Held::Spooled(slot) = event {
            self.spill(slot);
            shared.full.notify_one();
            return;
        }
        // Not in the spool: this event exists only here. Wait for the batcher to drain,
        // registering interest before retrying so that a drain in between is not missed.
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

    /// Writes the event to the spool. If that fails the request still goes on (an audit
    /// disk that is full must not take authentication down); the event then lives only in
    /// memory until it is stored, and the failure is logged and counted.
    fn spool(&self, event: &EventView<'_>) -> Option<RecordSlot> {
        let shared = &self.shared;
        match shared.spool.append(event) {
            Ok(slot) => {
                // Read first: a store on every request would bounce the cache line between cores.
                if shared.spool_failures.load(Ordering::Relaxed) != 0 {
                    shared.spool_failures.store(0, Ordering::Relaxed);
                }
                Some(slot)
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

    /// Leaves the event to the spool alone; the batcher reads it back later.
    fn spill(&self, slot: RecordSlot) {
        let shared = &self.shared;
        let mut spilled = shared.spilled.lock();
        if spilled
            .logged_at
            .is_none_or(|at| at.elapsed() >= SPILL_LOG_INTERVAL)
        {
            spilled.logged_at = Some(Instant::now());
            tracing::warn!(
                "audit ingestion is behind: new audit events wait in the spool until it catches up"
            );
        }
        match spilled.ranges.back_mut() {
            // Requests spill in bursts, so most records extend the last range.
            Some(last) if last.segment == slot.segment && last.end == slot.start => {
                last.end = slot.end;
                last.events += 1;
            }
            _ => spilled.ranges.push_back(SpilledRange {
                segment: slot.segment,
                start: slot.start,
                end: slot.end,
                events: 1,
            }),
        }
        shared.metrics.audit_spilled.fetch_add(1, Ordering::Relaxed);
    }

    /// An event that arrived after the batcher stopped (the listeners stop first, so this
    /// should not happen).
    fn lost(&self) {
        self.shared.metrics.audit_events_lost(1);
        tracing::error!("audit event arrived after shutdown and was lost");
    }
}

/// Owns the batcher and spool-maintenance tasks; `flush_and_stop` drains and stops them.
pub struct AuditBatcher {
    spool: Arc<AuditSpool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    stop_maintenance: Option<oneshot::Sender<()>>,
    maintenance: Option<JoinHandle<()>>,
}

/// Dropped without `flush_and_stop`, the tasks stop at once, as in a crash: what the batcher
/// had not handed over stays in the spool for the next start.
impl Drop for AuditBatcher {
    fn drop(&mut self) {
        for task in [self.task.take(), self.maintenance.take()]
            .into_iter()
            .flatten()
        {
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
            spilled: Mutex::new(Spilled::default()),
            spool_failures: AtomicU64::new(0),
            full: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        });
        let (stop, stopped) = oneshot::channel();
        let (stop_maintenance, maintenance_stopped) = oneshot::channel();
        let maintenance = tokio::spawn(run_maintenance(
            Arc::clone(&shared.spool),
            maintenance_stopped,
        ));
        let batcher = AuditBatcher {
            spool: Arc::clone(&shared.spool),
            stop: Some(stop),
            task: Some(tokio::spawn(run_batcher(
                Arc::clone(&shared),
                stopped,
                queue,
                leftovers,
            ))),
            stop_maintenance: Some(stop_maintenance),
            maintenance: Some(maintenance),
        };
        (AuditSink { shared }, batcher)
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
        if let Some(stop) = self.stop_maintenance.take() {
            let _ = stop.send(());
        }
        if let Some(maintenance) = self.maintenance.take() {
            let _ = maintenance.await;
        }
        if self.spool.outstanding() == 0 {
            self.spool.close();
        }
    }
}

/// The spool's file work (`AuditSpool::maintain`: the next segment made ahead, pages
/// prefaulted, released segments deleted), every tick, on the blocking pool, one run at a
/// time. Its own task, not the batcher's: while storage is down the batcher waits for the
/// job queue, and requests keep filling segments all the same. Stops between runs.
async fn run_maintenance(spool: Arc<AuditSpool>, mut stopped: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let spool = Arc::clone(&spool);
                if let Err(error) = tokio::task::spawn_blocking(move || spool.maintain()).await {
                    tracing::error!(%error, "audit spool maintenance failed");
                }
            }
            _ = &mut stopped => return,
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
        refused: Arc::new(AtomicBool::new(false)),
    };
    publisher.republish(leftovers);
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                drain(&shared, &mut publisher).await;
                read_back_spilled(&shared, &mut publisher, false).await;
            }
            _ = shared.full.notified() => drain(&shared, &mut publisher).await,
            _ = &mut stopped => {
                shared.closed.store(true, Ordering::Release);
                drain(&shared, &mut publisher).await;
                shared.drained.notify_waiters();
                read_back_spilled(&shared, &mut publisher, true).await;
                publisher.finish().await;
                return;
            }
        }
    }
}

/// Publishes everything queued, in batches of at most `MAX_BATCH`.
async fn drain(shared: &Shared, publisher: &mut Publisher) {
    loop {
        let mut slots = Vec::with_capacity(MAX_BATCH.min(shared.events.len()));
        let mut in_memory = Vec::new();
        let mut segments: BTreeMap<Segment, u64> = BTreeMap::new();
        while slots.len() + in_memory.len() < MAX_BATCH {
            match shared.events.pop() {
                Some(Held::Spooled(slot)) => {
                    *segments.entry(slot.segment).or_insert(0) += 1;
                    slots.push(slot);
                }
                Some(Held::InMemory(encoded)) => in_memory.push(encoded),
                None => break,
            }
        }
        let taken = slots.len() + in_memory.len();
        if taken == 0 {
            return;
        }
        let full = taken == MAX_BATCH;
        shared.drained.notify_waiters();
        // The events' bytes, copied out of the spool's mappings: they were encoded once, by
        // the request, and are not decoded on their way to storage.
        let mut batch = EncodedEvents::with_capacity(
            slots
                .iter()
                .map(|slot| slot.end - slot.start)
                .sum::<usize>()
                + in_memory
                    .iter()
                    .map(|encoded| encoded.len() + 4)
                    .sum::<usize>(),
        );
        for unread in shared.spool.copy_events(&slots, &mut batch) {
            // Left in the spool unreleased, so the next start stores it.
            if let Some(count) = segments.get_mut(&unread.segment) {
                *count -= 1;
            }
        }
        for encoded in &in_memory {
            batch.push_encoded(encoded);
        }
        publisher
            .publish(batch, segments.into_iter().collect())
            .await;
        if !full {
            return;
        }
    }
}

/// Hands spilled events to the job queue, read back from the spool in batches of up to
/// `MAX_BATCH`, oldest first, while the job queue keeps up (at most half of `IN_FLIGHT`
/// batches outstanding; not "no new events", which under steady load never happens): one
/// read per call while serving, so that new events keep their turn; all of them at
/// shutdown (`everything`), unless the job queue stops taking batches (storage down): then
/// the rest stay in the spool for the next start, rather than each being tried in turn. A
/// range the spool cannot read now is tried again later.
async fn read_back_spilled(shared: &Arc<Shared>, publisher: &mut Publisher, everything: bool) {
    loop {
        if !everything && publisher.in_flight.available_permits() < IN_FLIGHT / 2 {
            return;
        }
        if everything && publisher.refused() {
            return;
        }
        let ranges = {
            let mut spilled = shared.spilled.lock();
            let mut ranges = Vec::new();
            let mut events = 0;
            while events < MAX_BATCH as u64 {
                let Some(range) = spilled.ranges.pop_front() else {
                    break;
                };
                events += range.events;
                ranges.push(range);
            }
            ranges
        };
        if ranges.is_empty() {
            return;
        }
        let spool = Arc::clone(&shared.spool);
        let to_read = ranges.clone();
        let read = tokio::task::spawn_blocking(move || {
            to_read
                .iter()
                .map(|range| spool.read_records(range.segment, range.start, range.end))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        let read = match read {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read spilled audit events back; will retry");
                put_back(shared, ranges);
                return;
            }
            Err(error) => {
                tracing::error!(%error, "reading spilled audit events failed; will retry");
                put_back(shared, ranges);
                return;
            }
        };
        // Ranges merge while events spill, so one can hold a whole segment's events (tens
        // of thousands): they are handed over in batches of at most `MAX_BATCH`, each
        // releasing its own events.
        let mut batch = EncodedEvents::default();
        let mut segments: BTreeMap<Segment, u64> = BTreeMap::new();
        for (range, events) in ranges.iter().zip(&read) {
            // Records that no longer read (corrupted on disk) cannot be recovered by
            // waiting: they are counted as lost, and released all the same.
            let unreadable = range.events.saturating_sub(events.len() as u64);
            if unreadable > 0 {
                tracing::error!(unreadable, "spilled audit events could not be read back");
                shared.metrics.audit_events_lost(unreadable);
                shared.spool.release(&[(range.segment, unreadable)]);
            }
            for encoded in events.iter().map_while(Result::ok) {
                batch.push_encoded(encoded);
                *segments.entry(range.segment).or_insert(0) += 1;
                if batch.len() == MAX_BATCH {
                    let full = std::mem::take(&mut batch);
                    let counts = std::mem::take(&mut segments).into_iter().collect();
                    publisher.publish(full, counts).await;
                }
            }
        }
        if !batch.is_empty() {
            publisher
                .publish(batch, segments.into_iter().collect())
                .await;
        }
        if shared.spilled.lock().ranges.is_empty() {
            tracing::debug!("audit ingestion caught up with the spilled events");
        }
        if !everything {
            return;
        }
    }
}

fn put_back(shared: &Shared, ranges: Vec<SpilledRange>) {
    let mut spilled = shared.spilled.lock();
    for range in ranges.into_iter().rev() {
        spilled.ranges.push_front(range);
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
    /// Set once the job queue did not take a batch (shutdown with storage down).
    refused: Arc<AtomicBool>,
}

impl Publisher {
    /// Waits only while `IN_FLIGHT` batches are outstanding: then the event queue fills and
    /// new events spill to the spool, instead of memory growing.
    async fn publish(&mut self, batch: EncodedEvents, segments: Vec<(Segment, u64)>) {
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return; // never closed
        };
        // Reap finished tasks so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
        let (queue, spool) = (Arc::clone(&self.queue), Arc::clone(&self.spool));
        let metrics = Arc::clone(&self.metrics);
        let refused = Arc::clone(&self.refused);
        self.tasks.spawn(async move {
            let events = batch.len() as u64;
            if publish(&queue, batch).await {
                spool.release(&segments);
            } else {
                if !refused.swap(true, Ordering::Relaxed) {
                    log_refused();
                }
                // Not taken (shutdown with storage down): the spooled ones wait in the spool
                // for the next start; the rest (spool writes that failed) are lost.
                let spooled: u64 = segments.iter().map(|&(_, count)| count).sum();
                metrics
                    .audit_lost
                    .fetch_add(events.saturating_sub(spooled), Ordering::Relaxed);
            }
            drop(permit);
        });
    }

    /// The events a crashed run left in the spool, handed over in the background (new
    /// events do not wait for them), one segment at a time: each is read from the spool
    /// when its turn comes, handed over in batches, and released once all of its batches
    /// are taken (the counts are per segment). Once a batch is not taken (shutdown with
    /// storage down), the rest stay in the spool for the next start, unread.
    fn republish(&mut self, leftovers: Leftovers) {
        if leftovers.is_empty() {
            return;
        }
        tracing::info!(
            events = leftovers.events(),
            segments = leftovers.segments.len(),
            "handing audit events left in the spool by an earlier run to the queue again"
        );
        // Pending like any recorded event, so that ingestion's count balances.
        self.metrics
            .audit_pending
            .fetch_add(leftovers.events() as i64, Ordering::Relaxed);
        let queue = Arc::clone(&self.queue);
        let spool = Arc::clone(&self.spool);
        let metrics = Arc::clone(&self.metrics);
        let refused = Arc::clone(&self.refused);
        self.tasks.spawn(async move {
            // Not pending in this run any more: they wait in the spool for the next start.
            let set_aside = |leftover: &LeftoverSegment| {
                metrics
                    .audit_pending
                    .fetch_sub(leftover.events as i64, Ordering::Relaxed);
            };
            for leftover in leftovers.segments {
                let reader = Arc::clone(&spool);
                let read =
                    tokio::task::spawn_blocking(move || reader.read_leftover(&leftover)).await;
                let events = match read {
                    Ok(Ok(events)) => events,
                    Ok(Err(error)) => {
                        tracing::error!(%error, segment = leftover.segment, "cannot read audit events left in the spool; they stay there for the next start");
                        set_aside(&leftover);
                        continue;
                    }
                    Err(error) => {
                        tracing::error!(%error, segment = leftover.segment, "reading audit events left in the spool failed; they stay there for the next start");
                        set_aside(&leftover);
                        continue;
                    }
                };
                let mut all_taken = true;
                for batch in events.split(MAX_BATCH) {
                    all_taken = publish(&queue, batch).await;
                    if !all_taken {
                        break;
                    }
                }
                if !all_taken {
                    if !refused.swap(true, Ordering::Relaxed) {
                        log_refused();
                    }
                    return;
                }
                spool.release(&[(leftover.segment, leftover.events)]);
            }
        });
    }

    /// Whether the job queue has not taken a batch (shutdown with storage down).
    fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
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

/// Says, once per stop, that batches were left for the next start.
fn log_refused() {
    tracing::error!(
        "the job queue stopped before taking every audit batch (storage down at shutdown); \
         their events stay in the spool for the next start"
    );
}

/// Publishes a batch, retrying until the queue takes it: an event leaves the batcher only
/// into a queue that has accepted responsibility for it. `false` if the queue closed first
/// (the events stay in the spool for the next start).
async fn publish(queue: &Arc<dyn JobQueue>, batch: EncodedEvents) -> bool {
    let job = Job::IngestAudit {
        events: Arc::new(batch),
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        // Cloning a job clones an `Arc`, not the events.
        match queue.publish(job.clone()).await {
            Ok(()) => return true,
            // Logged once by the caller: a stop with storage down refuses every batch.
            Err(QueueError::Closed) => return false,
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
    use crate::domain::audit::{AuditEvent, AuditQuery, CredentialType};
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

    /// An empty embedded store, the metrics, and the in-process queue that writes to it.
    async fn store_and_queue() -> (SharedStore, Arc<Metrics>, Arc<InProcessQueue>) {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        store.migrate().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let queue = InProcessQueue::start(
            JobContext::new(Arc::clone(&store), Arc::clone(&metrics)),
            None,
        );
        (store, metrics, queue)
    }

    /// A job queue that takes nothing while its gate is shut: storage that is down. It
    /// notes the largest batch it was handed.
    struct GatedQueue {
        inner: Arc<InProcessQueue>,
        open: tokio::sync::watch::Receiver<bool>,
        largest_batch: std::sync::atomic::AtomicUsize,
    }

    impl GatedQueue {
        fn new(inner: Arc<InProcessQueue>, open: tokio::sync::watch::Receiver<bool>) -> Self {
            GatedQueue {
                inner,
                open,
                largest_batch: std::sync::atomic::AtomicUsize::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl JobQueue for GatedQueue {
        async fn publish(&self, job: Job) -> Result<(), QueueError> {
            let Job::IngestAudit { events } = &job;
            self.largest_batch
                .fetch_max(events.len(), Ordering::Relaxed);
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            self.inner.publish(job).await
        }

        async fn ping(&self) -> Result<(), QueueError> {
            self.inner.ping().await
        }
    }

    /// With room for only 4 events in memory and storage down, 1,000 requests still get
    /// their answers (their events spill to the spool), and once storage is back every event
    /// reaches the audit log, read back from the spool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_storage_down_requests_go_on_and_spilled_events_are_stored_later() {
        let (store, metrics, inner) = store_and_queue().await;
        let (gate, open) = tokio::sync::watch::channel(false);
        let queue = Arc::new(GatedQueue::new(Arc::clone(&inner), open));
        let dir = spool_dir();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let spool = Arc::new(spool);
        let (sink, mut batcher) = AuditBatcher::start_with_capacity(
            queue as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::clone(&spool),
            leftovers,
            4,
        );
        let workspace: Arc<str> = Arc::from("ws_1");
        let producers: Vec<_> = (0..1_000)
            .map(|_| {
                let sink = sink.clone();
                let event = event(&workspace);
                tokio::spawn(async move { sink.record(&event.view()).await })
            })
            .collect();
        // Every request is answered while nothing can be stored. (The timeout only turns
        // a hang, the old behaviour, into a failure.)
        let answered = tokio::time::timeout(Duration::from_secs(60), async {
            for producer in producers {
                producer.await.unwrap();
            }
        })
        .await;
        assert!(answered.is_ok(), "requests waited for storage");
        assert!(metrics.audit_spilled.load(Ordering::Relaxed) > 0);
        assert_eq!(spool.outstanding(), 1_000, "all in the spool, none stored");

        gate.send(true).unwrap();
        batcher.flush_and_stop().await;
        inner.shutdown().await;
        let query = AuditQuery {
            limit: 2_000,
            ..Default::default()
        };
        let stored = store.query_audit_events("ws_1", &query).await.unwrap();
        assert_eq!(stored.len(), 1_000);
        assert_eq!(metrics.audit_lost.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.audit_pending.load(Ordering::Relaxed), 0);
        assert_eq!(spool.outstanding(), 0);
        assert_eq!(
            spool_files(&dir),
            0,
            "a clean stop leaves nothing to replay"
        );
    }

    /// Events that spilled one after the other form one range of the spool, tens of
    /// thousands of them: they are read back in jobs of at most `MAX_BATCH` all the same
    /// (one job of 12,000 before).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spilled_events_are_handed_over_in_batches_of_at_most_max_batch() {
        let (store, metrics, inner) = store_and_queue().await;
        let (gate, open) = tokio::sync::watch::channel(false);
        let queue = Arc::new(GatedQueue::new(Arc::clone(&inner), open));
        let dir = spool_dir();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let (sink, mut batcher) = AuditBatcher::start_with_capacity(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::new(spool),
            leftovers,
            4,
        );
        let workspace: Arc<str> = Arc::from("ws_1");
        let recorded = 12_000;
        for _ in 0..recorded {
            sink.record(&event(&workspace).view()).await;
        }
        assert!(metrics.audit_spilled.load(Ordering::Relaxed) > MAX_BATCH as u64);
        gate.send(true).unwrap();
        batcher.flush_and_stop().await;
        inner.shutdown().await;
        let query = AuditQuery {
            limit: 1_000,
            ..Default::default()
        };
        let mut stored = 0;
        let mut page = store.query_audit_events("ws_1", &query).await.unwrap();
        while let Some(last) = page.last() {
            stored += page.len();
            let next = AuditQuery {
                before: Some(last.id),
                ..query.clone()
            };
            page = store.query_audit_events("ws_1", &next).await.unwrap();
        }
        assert_eq!(stored, recorded);
        let largest = queue.largest_batch.load(Ordering::Relaxed);
        assert!(largest <= MAX_BATCH, "a job of {largest} events");
    }

    /// Spilled events are also read back while the server runs, not only at shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spilled_events_are_read_back_once_ingestion_catches_up() {
        let (store, metrics, queue) = store_and_queue().await;
        let dir = spool_dir();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let (sink, mut batcher) = AuditBatcher::start_with_capacity(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::new(spool),
            leftovers,
            4,
        );
        let workspace: Arc<str> = Arc::from("ws_1");
        for _ in 0..300 {
            sink.record(&event(&workspace).view()).await;
        }
        assert!(
            metrics.audit_spilled.load(Ordering::Relaxed) > 0,
            "300 events without a yield overflow 4 places"
        );
        let query = AuditQuery {
            limit: 1_000,
            ..Default::default()
        };
        // Polled for up to a minute of ticks: the batcher must get there on its own.
        let mut stored = 0;
        for _ in 0..1_200 {
            stored = store
                .query_audit_events("ws_1", &query)
                .await
                .unwrap()
                .len();
            if stored == 300 {
                break;
            }
            tokio::time::sleep(FLUSH_INTERVAL).await;
        }
        assert_eq!(stored, 300, "read back before shutdown");
        batcher.flush_and_stop().await;
        queue.shutdown().await;
        assert_eq!(metrics.audit_pending.load(Ordering::Relaxed), 0);
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
                spool.append(&event(&workspace).view()).unwrap();
            }
        }
        let (store, metrics, queue) = store_and_queue().await;
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert_eq!(leftovers.events(), 25);
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
