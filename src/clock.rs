//! Wall-clock time in the two forms the engine uses, and the rate limiters' own clock.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The rate limiters' time, in milliseconds since the epoch: the wall clock at a fixed
/// origin, advanced by the monotonic clock. A step of the system clock (an NTP correction,
/// `date -s`) does not move it, so a limiter's 60-second window is 60 real seconds whatever
/// the wall clock does: stepped forward, the wall clock would hand every workspace a fresh
/// minute at once; stepped back, it would refuse even clients well within their limit until
/// it caught up. Wall time stays right for what must name the hour (audit events, expiry),
/// which is why this clock is the limiters' alone.
///
/// Counts carried over a restart must be in the same time as the next run's. So the origin
/// is the machine's boot (Linux's `/proc/uptime`, suspends included), kept in a file with
/// the boot's id: the boot's first run writes the wall time of the boot as it then sees it,
/// and every later run of that boot reads it back, whatever the wall clock did in between.
/// Without the file (or off Linux) the origin is the start of the run.
#[derive(Clone, Copy, Debug)]
pub struct RateClock {
    /// The clock's reading when `started` was taken: the boot's origin plus the time since
    /// boot, or the wall clock without an origin.
    at_start_ms: u64,
    started: Instant,
}

impl RateClock {
    /// This run's clock; `origin_file` keeps the boot's origin (in the data dir).
    pub fn start(origin_file: Option<&Path>) -> RateClock {
        let started = Instant::now();
        let at_start_ms = origin_file
            .and_then(boot_anchored_now_ms)
            .unwrap_or_else(now_ms);
        RateClock {
            at_start_ms,
            started,
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_start_ms.saturating_add(elapsed)
    }
}

/// Now, as the wall time of this boot's origin (read from `origin_file`, or written there by
/// the boot's first run) plus the time since boot. `None` when the boot cannot be told (off
/// Linux). The time since boot is read from `/proc/uptime` (to 10 ms), once per run: not
/// from the vDSO, whose parsing by hand (rustix) crashes under valgrind.
fn boot_anchored_now_ms(origin_file: &Path) -> Option<u64> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot_id = boot_id.trim();
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot_secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let since_boot_ms = (since_boot_secs * 1000.0) as u64;
    let recorded = std::fs::read_to_string(origin_file).ok().and_then(|text| {
        let (id, origin) = text.trim().split_once(' ')?;
        (id == boot_id)
            .then(|| origin.parse::<u64>().ok())
            .flatten()
    });
    let origin_ms = match recorded {
        Some(origin_ms) => origin_ms,
        None => {
            let origin_ms = now_ms().checked_sub(since_boot_ms)?;
            if let Err(error) = write_origin(origin_file, boot_id, origin_ms) {
                tracing::warn!(%error, path = %origin_file.display(), "cannot keep the rate limiters' clock origin; a restart after a step of the system clock may count a minute anew");
            }
            origin_ms
        }
    };
    Some(origin_ms + since_boot_ms)
}

/// Writes the origin whole or not at all (a crash mid-write must not leave half a number).
fn write_origin(origin_file: &Path, boot_id: &str, origin_ms: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = origin_file.with_extension("tmp");
    let mut file = crate::private_dir::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    writeln!(file, "{boot_id} {origin_ms}")?;
    file.sync_all()?;
    std::fs::rename(&temporary, origin_file)
}

/// The same instant as a UTC date-time.
pub fn to_datetime(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}
