//! Audit-log ingestion: writes a batch of events. Idempotent (events carry their own ids),
//! so a batch delivered twice is stored once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{JobContext, JobError};
use crate::domain::audit::AuditEvent;

pub async fn ingest(events: &Arc<[AuditEvent]>, context: &JobContext) -> Result<(), JobError> {
    context
        .store
        .insert_audit_events(Arc::clone(events))
        .await?;
    let count = events.len() as u64;
    context
        .metrics
        .audit_ingested
        .fetch_add(count, Ordering::Relaxed);
    context
        .metrics
        .audit_pending
        .fetch_sub(count as i64, Ordering::Relaxed);
    tracing::debug!(count, "ingested audit events");
    Ok(())
}
