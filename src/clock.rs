//! Wall-clock time in the two forms the engine uses, and the rate limiters' own clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The rate limiters' time, in milliseconds since the epoch: the wall clock at the start of
/// the run, advanced by the monotonic clock. A step of the system clock (an NTP correction,
/// `date -s`) does not move it, so a limiter's 60-second window is 60 real seconds whatever
/// the wall clock does: stepped forward, the wall clock would hand every workspace a fresh
/// minute at once; stepped back, it would refuse even clients well within their limit until
/// it caught up. Wall time stays right for what must name the hour (audit events, expiry),
/// which is why this clock is the limiters' alone. Counts carried over a restart are in
/// the previous run's rate time, which is its wall time unless the clock stepped during it.
#[derive(Clone, Copy, Debug)]
pub struct RateClock {
    wall_at_start_ms: u64,
    started: Instant,
}

impl RateClock {
    pub fn start() -> RateClock {
        RateClock {
            wall_at_start_ms: now_ms(),
            started: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start_ms.saturating_add(elapsed)
    }
}

/// The same instant as a UTC date-time.
pub fn to_datetime(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}
