//! Audit-log ingestion: writes a batch of events. Idempotent (events carry their own ids),
//! so a batch delivered twice appears once in the audit log.

use std::sync::Arc;

use super::{JobContext, JobError};
use crate::domain::audit_codec::EncodedEvents;

/// How many times a batch is halved at most: 5,000 events down to pieces of 625, for a
/// database up to about eight times too slow for a whole batch within its deadline. Each
/// level costs a deadline when writes hang while the database otherwise answers (a lock
/// held on the audit table, a synchronous standby that is gone), so the depth bounds how
/// long one try can take.
const MAX_HALVINGS: u32 = 3;

/// Writes `events`, and counts them as ingested once all are written.
pub async fn ingest(events: &Arc<EncodedEvents>, context: &JobContext) -> Result<(), JobError> {
    write(events, context, 0).await?;
    let count = events.len() as u64;
    context.metrics.audit_events_ingested(count);
    tracing::debug!(count, "ingested audit events");
    Ok(())
}

/// A batch that runs past the store's deadline while the database answers otherwise (a
/// ping, on another connection) is written again in halves (`MAX_HALVINGS` deep): a
/// database that is up but slow for a batch this size (a trigger, a loaded disk) would
/// otherwise fail the same batch at each retry, for good, with every later batch waiting
/// behind it (found by a black-box pass, 2 December, with a 10 ms trigger per row: 5,000
/// events never fit in 30 s). A database that does not answer at all (down, frozen) fails
/// the job, which is retried whole, as before; so does one past its shutdown budget. The
/// events carry their ids, so halves already written are written once.
async fn write(
    events: &Arc<EncodedEvents>,
    context: &JobContext,
    halvings: u32,
) -> Result<(), JobError> {
    match context.store.insert_audit_events(Arc::clone(events)).await {
        Err(error)
            if error.is_past_deadline()
                && events.len() > 1
                && halvings < MAX_HALVINGS
                && !context.should_give_up()
                && context.store.ping().await.is_ok() =>
        {
            tracing::warn!(
                events = events.len(),
                "an audit batch ran past its deadline; writing it in halves"
            );
            for half in events.split(events.len().div_ceil(2)) {
                Box::pin(write(&Arc::new(half), context, halvings + 1)).await?;
            }
            Ok(())
        }
        result => Ok(result?),
    }
}
