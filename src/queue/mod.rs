//! The job queue: what the server hands to background work. The in-process queue runs jobs
//! inside `serve` (the embedded default); a RabbitMQ transport will implement the same trait
//! so that `statuspulse-worker` processes run them.

pub mod audit_sink;
pub mod audit_spool;
pub mod dead_letters;
pub mod in_process;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::audit_codec::EncodedEvents;

/// A unit of background work. Serializable: it must survive a trip through a broker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Write a batch of audit events to the audit log. The events travel encoded, as the
    /// audit spool holds them.
    IngestAudit { events: Arc<EncodedEvents> },
}

impl Job {
    /// The audit events a job carries, for the pending-events gauge.
    pub fn audit_events(&self) -> u64 {
        match self {
            Job::IngestAudit { events } => events.len() as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("job queue is shut down")]
    Closed,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Hands a job over, waiting while the queue is full. `Ok` means the queue has taken
    /// responsibility for it for good: a crash of this process can no longer lose it (a
    /// broker has it on disk; the in-process queue has run it). Jobs are cheap to clone (their payloads are shared), so a
    /// caller keeps a copy to retry with.
    async fn publish(&self, job: Job) -> Result<(), QueueError>;
    /// Whether the queue can take jobs, for readiness.
    async fn ping(&self) -> Result<(), QueueError>;
}
