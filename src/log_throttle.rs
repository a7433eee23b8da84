//! A log line that a condition could write once per request, written at most once per
//! interval instead: during a storage outage every cache miss fails the same way, and a
//! line per request would flood the log (and cost the hot path) while saying nothing new.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub struct LogThrottle {
    every_ms: u64,
    /// When the next line may be written (milliseconds since the epoch).
    next_ms: AtomicU64,
    /// Lines not written since the last one that was.
    skipped: AtomicU64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether the line due at `now_ms` is to be written; if so, how many were skipped
    /// since the last one written. Of threads racing at the interval's end, one wins.
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms.saturating_add(self.every_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Relaxed));
        }
        self.skipped.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_line_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.admit(1_000), Some(0));
        assert_eq!(throttle.admit(1_001), None);
        assert_eq!(throttle.admit(10_999), None);
        assert_eq!(throttle.admit(11_000), Some(2));
        assert_eq!(throttle.admit(11_000), None);
        assert_eq!(throttle.admit(30_000), Some(1));
    }
}
