//! Audit-log ingestion: writes a batch of events. Idempotent (events carry their own ids),
//! so a batch delivered twice appears once in the audit log.

use std::sync::Arc;

use super::{JobContext, JobError};
use crate::domain::audit_codec::EncodedEvents;

/// Writes `events`. A batch that runs past the store's deadline while the database answers
/// otherwise (a ping, on another connection) is written again in halves, down to single
/// events: a database that is up but slow for a batch this size (a trigger, a loaded disk)
/// would otherwise fail the same batch at each retry, for good, with every later batch
/// waiting behind it (found by a black-box pass, 2 December, with a 10 ms trigger per row:
/// 5,000 events never fit in 30 s). A database that does not answer at all (down, frozen)
/// fails the job, which is retried whole, as before: halving would only wait out a
/// deadline per half. The events carry their ids, so halves already written are written
/// once.
pub async fn ingest(events: &Arc<EncodedEvents>, context: &JobContext) -> Result<(), JobError> {
    match context.store.insert_audit_events(Arc::clone(events)).await {
        Err(error)
            if error.is_past_deadline()
                && events.len() > 1
                && context.store.ping().await.is_ok() =>
        {
            tracing::warn!(
                events = events.len(),
                "an audit batch ran past its deadline; writing it in halves"
            );
            for half in events.split(events.len().div_ceil(2)) {
                Box::pin(ingest(&Arc::new(half), context)).await?;
            }
            return Ok(());
        }
        result => result?,
    }
    let count = events.len() as u64;
    context.metrics.audit_events_ingested(count);
    tracing::debug!(count, "ingested audit events");
    Ok(())
}
