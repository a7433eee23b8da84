//! What each background job does. Called by the in-process queue in embedded mode, and by
//! `statuspulse-worker` when jobs arrive through RabbitMQ.

pub mod audit_ingest;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::queue::Job;
use crate::store::{SharedStore, StoreError};

/// What jobs need to run.
#[derive(Clone)]
pub struct JobContext {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
}

impl JobContext {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>) -> JobContext {
        JobContext {
            store,
            metrics,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the start of shutdown: failing jobs stop retrying after a bounded time.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Records a job that could not be run at all (only at shutdown with storage down).
    pub fn job_abandoned(&self, job: &Job) {
        match job {
            Job::IngestAudit { events } => {
                self.metrics
                    .audit_lost
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                self.metrics
                    .audit_pending
                    .fetch_sub(events.len() as i64, Ordering::Relaxed);
            }
        }
    }
}

/// Why a job failed; every failure is worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs one job to completion.
pub async fn run(job: &Job, context: &JobContext) -> Result<(), JobError> {
    match job {
        Job::IngestAudit { events } => audit_ingest::ingest(events, context).await,
    }
}
