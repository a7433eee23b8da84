//! The embedded job queue: a channel and a task that runs each job against the store.
//! Jobs that fail because storage is unavailable are retried with backoff rather than
//! dropped; a job that fails otherwise (for good) is retried a few times, then set aside in
//! the dead letters (`dead_letters.rs`) so that the jobs behind it can run.
//!
//! Nothing here survives the process, so a job counts as taken for good only once it has
//! run: `publish` returns then (a broker's `publish` returns once the broker has the job
//! on disk). Until then its events stay in the audit spool.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::dead_letters::DeadLetters;
use super::{Job, JobQueue, QueueError};
use crate::jobs::JobContext;

/// Jobs waiting to run before publishers wait. Bounded so that when storage falls behind,
/// the wait reaches the audit batcher and then the hot path, instead of memory growing; as
/// deep as the audit batcher's `IN_FLIGHT`.
const CAPACITY: usize = super::audit_sink::IN_FLIGHT;
/// Runs of a job that fails for good before it is set aside (with backoff: about 0.75 s).
const PERMANENT_FAILURES_BEFORE_DEAD_LETTER: u32 = 5;

/// A job and whom to tell once it has run.
type Delivery = (Job, oneshot::Sender<()>);

pub struct InProcessQueue {
    sender: parking_lot::Mutex<Option<mpsc::Sender<Delivery>>>,
    runner: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl InProcessQueue {
    /// Starts the runner task on the current Tokio runtime. Jobs that fail for good go to
    /// `dead_letters`; without it they are retried until shutdown.
    pub fn start(context: JobContext, dead_letters: Option<DeadLetters>) -> Arc<InProcessQueue> {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let runner = tokio::spawn(run_jobs(receiver, context, dead_letters));
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
async fn run_jobs(
    mut receiver: mpsc::Receiver<Delivery>,
    context: JobContext,
    dead_letters: Option<DeadLetters>,
) {
    while let Some((job, publisher)) = receiver.recv().await {
        if run_with_retries(&job, &context, dead_letters.as_ref()).await {
            // A publisher that stopped waiting needs no answer.
            let _ = publisher.send(());
        }
    }
}

/// Runs a job until it is done (`true`): it succeeded, or it failed for good several times
/// and is now in the dead letters. Dropping a failed job would lose audit events, so while
/// storage is unavailable it is retried with backoff for as long as the server runs, and
/// for a bounded time once shutdown has begun (then `false`: the events stay in the spool
/// for the next start).
async fn run_with_retries(
    job: &Job,
    context: &JobContext,
    dead_letters: Option<&DeadLetters>,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let mut permanent_failures = 0;
    if context.has_given_up() {
        context.job_abandoned(job);
        return false;
    }
    loop {
        let Err(error) = crate::jobs::run(job, context).await else {
            return true;
        };
        // In a row: an outage in between says nothing about the job.
        if error.is_permanent() {
            permanent_failures += 1;
        } else {
            permanent_failures = 0;
        }
        if let Some(dead_letters) = dead_letters {
            if permanent_failures >= PERMANENT_FAILURES_BEFORE_DEAD_LETTER {
                match dead_letters.keep(job) {
                    Ok(path) => {
                        tracing::error!(
                            %error,
                            path = %path.display(),
                            "a job failed for good; set aside in the dead letters (retried at the next start)"
                        );
                        context.job_dead_lettered(job);
                        return true;
                    }
                    Err(io_error) => tracing::error!(
                        %error,
                        %io_error,
                        "a job failed for good and cannot be set aside; retrying it"
                    ),
                }
            }
        }
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

/// Hands the dead letters of earlier runs back to the queue, one at a time, each file
/// removed once its job is done (a job that fails for good again is written to a new file
/// first). Runs in the background: a start must not wait for a backlog.
pub async fn resubmit_dead_letters(
    queue: Arc<InProcessQueue>,
    dead_letters: DeadLetters,
    context: JobContext,
) {
    let kept = match dead_letters.all() {
        Ok(kept) => kept,
        Err(error) => {
            tracing::error!(%error, "cannot read the dead letters");
            return;
        }
    };
    if kept.is_empty() {
        return;
    }
    tracing::info!(jobs = kept.len(), "retrying the jobs in the dead letters");
    for (path, job) in kept {
        context.job_resubmitted(&job);
        if queue.publish(job).await.is_err() {
            // Shutting down: the file stays for the next start.
            return;
        }
        if let Err(error) = dead_letters.remove(&path) {
            tracing::error!(%error, path = %path.display(), "cannot remove a dead letter that was retried");
        }
    }
}
