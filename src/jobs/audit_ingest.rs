//! Audit-log ingestion: writes a batch of events. Idempotent (events carry their own ids),
//! so a batch delivered twice appears once in the audit log.

use std::sync::Arc;

use super::{JobContext, JobError};
use crate::domain::audit_codec::EncodedEvents;

pub async fn ingest(events: &Arc<EncodedEvents>, context: &JobContext) -> Result<(), JobError> {
    context
        .store
        .insert_audit_events(Arc::clone(events))
        .await?;
    let count = events.len() as u64;
    context.metrics.audit_events_ingested(count);
    tracing::debug!(count, "ingested audit events");
    Ok(())
}
