//! The hot path's hand-off for audit events: a bounded channel into a batcher task that
//! publishes `IngestAudit` jobs of up to `MAX_BATCH` events, or whatever arrived within
//! `FLUSH_INTERVAL`. Requests pay one channel send; storage sees one write per batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Job, JobQueue};
use crate::domain::audit::AuditEvent;
use crate::metrics::Metrics;

const MAX_BATCH: usize = 500;
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Events buffered before senders wait: backpressure instead of unbounded memory.
const CHANNEL_CAPACITY: usize = 65_536;

/// Where requests drop their audit events. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    sender: mpsc::Sender<AuditEvent>,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    /// Hands an event over; waits only if the batcher is `CHANNEL_CAPACITY` events behind.
    pub async fn record(&self, event: AuditEvent) {
        self.metrics.audit_pending.fetch_add(1, Ordering::Relaxed);
        let event = match self.sender.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(event)) => event,
            Err(mpsc::error::TrySendError::Closed(_)) => return self.lost(),
        };
        if self.sender.send(event).await.is_err() {
            self.lost();
        }
    }

    fn lost(&self) {
        // Only possible after shutdown has flushed the batcher, when no request should run.
        self.metrics.audit_pending.fetch_sub(1, Ordering::Relaxed);
        self.metrics.audit_lost.fetch_add(1, Ordering::Relaxed);
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
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_batcher(receiver, stopped, queue));
        (
            AuditSink { sender, metrics },
            AuditBatcher {
                stop: Some(stop),
                task: Some(task),
            },
        )
    }

    /// Publishes every event received so far and stops. Events recorded afterwards are lost
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
    mut receiver: mpsc::Receiver<AuditEvent>,
    mut stopped: oneshot::Receiver<()>,
    queue: Arc<dyn JobQueue>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `batch` is below MAX_BATCH here, so the room is never 0 and receiving 0 means closed.
        let room = MAX_BATCH - batch.len();
        tokio::select! {
            received = receiver.recv_many(&mut batch, room) => {
                if received == 0 {
                    break;
                }
                if batch.len() >= MAX_BATCH {
                    publish(&queue, &mut batch).await;
                }
            }
            _ = ticker.tick() => publish(&queue, &mut batch).await,
            _ = &mut stopped => {
                receiver.close();
                while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    publish(&queue, &mut batch).await;
                }
                break;
            }
        }
    }
    publish(&queue, &mut batch).await;
}

/// Publishes the batch, retrying until the queue takes it: an event leaves the batcher only
/// into a queue that has accepted responsibility for it.
async fn publish(queue: &Arc<dyn JobQueue>, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    let job = Job::IngestAudit { events: Arc::from(std::mem::take(batch)) };
    let mut backoff = Duration::from_millis(50);
    loop {
        match queue.publish(job.clone()).await {
            Ok(()) => return,
            Err(super::QueueError::Closed) => {
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
