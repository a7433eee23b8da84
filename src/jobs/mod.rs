//! What each background job does. Called by the in-process queue in embedded mode; once the
//! RabbitMQ transport exists, by `statuspulse-worker` too.

pub mod audit_ingest;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::queue::Job;
use crate::store::{SharedStore, StoreError};

/// How long, in all, failing jobs keep being retried once shutdown has begun.
const SHUTDOWN_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// What jobs need to run.
#[derive(Clone)]
pub struct JobContext {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins: one deadline for every job, so that a backlog of failing
    /// jobs cannot stretch shutdown to a multiple of the budget.
    give_up_at: Arc<OnceLock<Instant>>,
    /// Set once a job has been given up at shutdown: the jobs behind it are given up
    /// without being tried. Each try of a database that stops answering lasts its whole
    /// deadline (30 s for an audit batch), so trying each once made a stop with a frozen
    /// PostgreSQL and a backlog last minutes per batch (found by a black-box pass, 2
    /// December). Their events stay in the spool for the next start.
    given_up: Arc<AtomicBool>,
}

impl JobContext {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>) -> JobContext {
        JobContext {
            store,
            metrics,
            give_up_at: Arc::new(OnceLock::new()),
            given_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the start of shutdown: failing jobs stop retrying `SHUTDOWN_RETRY_BUDGET` from
    /// now.
    pub fn begin_shutdown(&self) {
        let _ = self.give_up_at.set(Instant::now() + SHUTDOWN_RETRY_BUDGET);
    }

    /// Whether a failing job should stop being retried.
    pub fn should_give_up(&self) -> bool {
        self.give_up_at
            .get()
            .is_some_and(|deadline| Instant::now() >= *deadline)
    }

    /// Counts a job's events as pending: a job that did not come from the audit batcher
    /// (one handed back from the dead letters at start), whose completion will count them
    /// done.
    pub fn job_resubmitted(&self, job: &Job) {
        self.metrics
            .audit_pending
            .fetch_add(job.audit_events() as i64, Ordering::Relaxed);
    }

    /// Records a job set aside in the dead letters.
    pub fn job_dead_lettered(&self, job: &Job) {
        self.metrics.audit_events_dead_lettered(job.audit_events());
    }

    /// Records a job that could not be run (only at shutdown with storage down). Its audit
    /// events are no longer pending in this run; the batcher knows which of them are in the
    /// spool for the next start and counts the others as lost.
    pub fn job_abandoned(&self, job: &Job) {
        self.given_up.store(true, Ordering::Relaxed);
        self.metrics
            .audit_pending
            .fetch_sub(job.audit_events() as i64, Ordering::Relaxed);
    }

    /// Whether a job has been given up at shutdown: the rest are given up untried.
    pub fn has_given_up(&self) -> bool {
        self.given_up.load(Ordering::Relaxed)
    }
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JobError {
    /// Whether running the job again can only fail again: anything but storage being
    /// unreachable or busy (a bug, or data that storage refuses).
    pub fn is_permanent(&self) -> bool {
        match self {
            JobError::Store(StoreError::Unavailable(_)) => false,
            JobError::Store(_) => true,
        }
    }
}

/// Runs one job to completion.
pub async fn run(job: &Job, context: &JobContext) -> Result<(), JobError> {
    match job {
        Job::IngestAudit { events } => audit_ingest::ingest(events, context).await,
    }
}
