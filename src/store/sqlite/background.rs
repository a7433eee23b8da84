//! A thread at low CPU priority for the embedded store's work that no request waits for:
//! writing the audit log and regrouping it.
//!
//! On the two cores this engine is measured on, the HTTP workers and the audit writes take
//! turns on the same CPUs. At equal priority a regrouping (0.1–0.5 s of CPU every 50,000
//! events under full load) delays the requests that happen to queue behind it; at nice 10
//! the workers go first and the writes use what they leave. Measured with the open-loop
//! client at 20,000 requests/s against the build before (`loadtest/compare_latency`, 8
//! rounds): median p99 2.13 ms against 2.52 ms, lower in 7 of 8 rounds; throughput under wrk
//! unchanged. Under a saturating load the audit backlog then grows further before the writes
//! catch up (35,000 events at most in a 20 s wrk run, against 12,000), which costs memory
//! only: past the batcher's capacity, events wait in the spool.
//!
//! Lowering a thread's priority needs no privilege, raising it back does: hence a thread of
//! its own rather than a thread of the blocking pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use anyhow::anyhow;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// How much lower than the HTTP workers (nice 0). At 10, CFS gives such a thread about a
/// tenth of a busy CPU; at 5, a quarter, and p99 improved less (background threads reniced
/// by hand, 4 rounds each: 1.66–2.03 ms against 2.01–2.16 ms at nice 0; at 10, 1.65–2.11
/// against 2.05–2.74 ms).
const BACKGROUND_NICE: i32 = 10;

type Work = Box<dyn FnOnce() + Send>;

/// The thread, fed through a channel. It ends when this is dropped.
pub(super) struct BackgroundThread {
    work: mpsc::Sender<Work>,
}

impl BackgroundThread {
    pub(super) fn start(name: &str) -> Result<BackgroundThread, StoreError> {
        let (work, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lower_priority();
                for work in queue {
                    // A panic fails that call (its answer is dropped), not the thread.
                    let _ = catch_unwind(AssertUnwindSafe(work));
                }
            })
            .map_err(|e| StoreError::Internal(anyhow!("cannot start the {name} thread: {e}")))?;
        Ok(BackgroundThread { work })
    }

    /// Runs `work` on the thread, after what is already queued there, and returns its result.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        self.work
            .send(Box::new(move || {
                // The caller may have stopped waiting.
                let _ = answer.send(work());
            }))
            .map_err(|_| StoreError::Internal(anyhow!("the background thread has stopped")))?;
        answered
            .await
            .map_err(|_| StoreError::Internal(anyhow!("background work panicked")))?
    }
}

/// Linux keeps a nice value per thread, so this lowers the calling thread alone. Elsewhere
/// `nice` applies to the whole process, so there it is left alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::nice(BACKGROUND_NICE) {
        tracing::warn!(%error, "cannot lower the priority of the audit writer thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_in_order_and_survives_a_panic() {
        let thread = BackgroundThread::start("test-background").unwrap();
        let name = thread
            .run(|| Ok(std::thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-background"));

        let failed = thread.run(|| -> Result<(), StoreError> { panic!("boom") });
        assert!(matches!(failed.await, Err(StoreError::Internal(_))));
        assert_eq!(thread.run(|| Ok(2 + 2)).await.unwrap(), 4);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_lower_priority() {
        let thread = BackgroundThread::start("test-priority").unwrap();
        let own = rustix::process::getpriority_process(None).unwrap();
        let background = thread
            .run(|| {
                rustix::process::getpriority_process(None)
                    .map_err(|e| StoreError::Internal(anyhow!("{e}")))
            })
            .await
            .unwrap();
        assert_eq!(background, (own + BACKGROUND_NICE).min(19));
    }
}
