//! The embedded job queue: a channel and a task that runs each job against the store.
//! Jobs that fail (storage down) are retried with backoff rather than dropped.
//!
//! Nothing here survives the process, so a job counts as taken for good only once it has
//! run: `publish` returns then (a broker's `publish` returns once the broker has the job
//! on disk). Until then its events stay in the audit spool.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Job, JobQueue, QueueError};
use crate::jobs::JobContext;

/// Jobs waiting to run before publishers wait. Bounded so that when storage falls behind,
/// the wait reaches the audit batcher and then the hot path, instead of memory growing; as
/// deep as the audit batcher's `IN_FLIGHT`.
const CAPACITY: usize = super::audit_sink::IN_FLIGHT;

/// A job and whom to tell once it has run.
type Delivery = (Job, oneshot::Sender<()>);

pub struct InProcessQueue {
    sender: parking_lot::Mutex<Option<mpsc::Sender<Delivery>>>,
    runner: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl InProcessQueue {
    /// Starts the runner task on the current Tokio runtime.
    pub fn start(context: JobContext) -> Arc<InProcessQueue> {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let runner = tokio::spawn(run_jobs(receiver, context));
        Arc::new(InProcessQueue {
            sender: parking_lot::Mutex::new(Some(sender)),
            runner: parking_lot::Mutex::new(Some(runner)),
        })
    }

    /// Stops taking jobs and waits until every job already taken has run.
    pub async fn shutdown(&self) {
        self.sender.lock().take();
        let runner = self.runner.lock().take();
        if let Some(runner) = runner {
            if let Err(error) = runner.await {
                tracing::error!(%error, "job runner failed");
            }
        }
    }
}

#[async_trait]
impl JobQueue for InProcessQueue {
    /// Returns once the job has run. `Closed` if the queue shut down first (or gave up on
    /// the job at shutdown).
    async fn publish(&self, job: Job) -> Result<(), QueueError> {
        let sender = self.sender.lock().clone().ok_or(QueueError::Closed)?;
        let (ran, done) = oneshot::channel();
        sender
            .send((job, ran))
            .await
            .map_err(|_| QueueError::Closed)?;
        done.await.map_err(|_| QueueError::Closed)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        match self.sender.lock().as_ref() {
            Some(sender) if !sender.is_closed() => Ok(()),
            _ => Err(QueueError::Closed),
        }
    }
}

/// One job at a time, in order. (Batches that queued up behind a long write used to be
/// merged into one transaction, by copying their events: in SQLite a batch is now one row,
/// so there is nothing left to save by merging.)
async fn run_jobs(mut receiver: mpsc::Receiver<Delivery>, context: JobContext) {
    while let Some((job, publisher)) = receiver.recv().await {
        if run_with_retries(&job, &context).await {
            // A publisher that stopped waiting needs no answer.
            let _ = publisher.send(());
        }
    }
}

/// Runs a job until it succeeds (`true`). Dropping a failed job would lose audit events, so
/// it is retried with backoff for as long as the server runs, and for a bounded time once
/// shutdown has begun (then `false`: the events stay in the spool for the next start).
async fn run_with_retries(job: &Job, context: &JobContext) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Err(error) = crate::jobs::run(job, context).await else {
            return true;
        };
        if context.should_give_up() {
            tracing::error!(%error, "giving up on a job at shutdown");
            context.job_abandoned(job);
            return false;
        }
        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "job failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
