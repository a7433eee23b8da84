//! The per-workspace rate limiter: a sliding window of one-second buckets.
//!
//! The contract asks for two things at once: over *any* 60-second span the accepted
//! requests never exceed the limit, and a client pacing itself evenly at 95% of the limit
//! is never refused. A token bucket fails the first (it lets through a full bucket plus a
//! minute of refill, up to twice the limit, in one minute). An exact log of timestamps
//! meets both but costs 1,200 timestamps per workspace. This limiter counts accepted
//! requests per wall-clock second and, before accepting, sums the current second and the
//! 60 before it. That window always covers the 60 seconds that end now, so the first
//! property holds exactly; it is at most one second longer, so an even client at 95% sees
//! at most 95% × 61/60 ≈ 96.6% of the limit and is never refused. It costs 61 counters.

use std::collections::BTreeMap;

/// Seconds in the rate-limit window.
pub const WINDOW_SECS: u64 = 60;
/// One-second buckets the limiter keeps: the window and the second under way.
pub const SLOTS: usize = WINDOW_SECS as usize + 1;

/// The limiter's verdict, with what the `RateLimit-*` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now (after this one, when it was allowed).
    pub remaining: u32,
    /// Seconds until the oldest counted request leaves the window and frees capacity; for a
    /// refused request this is also the `Retry-After`.
    pub reset_secs: u64,
}

/// Counts of accepted requests per second over the last 61 seconds.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    limit: u32,
    /// u16 keeps the window in two cache lines; a limit above 65,535 per minute would not fit.
    counts: [u16; SLOTS],
    /// The second (since the epoch) of the newest bucket.
    newest_second: u64,
    /// The sum of `counts`.
    total: u32,
}

impl RateLimiter {
    pub fn new(limit: u16) -> RateLimiter {
        RateLimiter {
            limit: u32::from(limit),
            counts: [0; SLOTS],
            newest_second: 0,
            total: 0,
        }
    }

    /// Decides one request arriving at `now_ms` (milliseconds since the Unix epoch) and,
    /// when it is allowed, counts it.
    pub fn check(&mut self, now_ms: u64) -> RateDecision {
        let now_second = now_ms / 1000;
        self.advance_to(now_second);
        let allowed = self.total < self.limit;
        if allowed {
            self.counts[slot(now_second)] += 1;
            self.total += 1;
        }
        RateDecision {
            allowed,
            limit: self.limit,
            // Saturating: counts restored from elsewhere can exceed the limit.
            remaining: self.limit.saturating_sub(self.total),
            reset_secs: self.seconds_until_capacity_frees(now_ms),
        }
    }

    /// The second `now_ms` falls in and the count of its bucket: after `check`, the bucket
    /// that request was counted in.
    pub fn count_at(&self, now_ms: u64) -> (u64, u16) {
        let second = now_ms / 1000;
        (second, self.counts[slot(second)])
    }

    /// Reports the state at `now_ms` without counting anything.
    pub fn peek(&mut self, now_ms: u64) -> RateDecision {
        self.advance_to(now_ms / 1000);
        RateDecision {
            allowed: self.total < self.limit,
            limit: self.limit,
            // Saturating: counts restored from elsewhere can exceed the limit.
            remaining: self.limit.saturating_sub(self.total),
            reset_secs: self.seconds_until_capacity_frees(now_ms),
        }
    }

    /// Drops the buckets that have left the window. Time that goes backwards (a clock
    /// step) is treated as the newest second, so counts are never lost by it.
    fn advance_to(&mut self, now_second: u64) {
        if now_second <= self.newest_second {
            return;
        }
        let steps = (now_second - self.newest_second).min(SLOTS as u64);
        for step in 1..=steps {
            let index = slot(self.newest_second + step);
            self.total -= u32::from(self.counts[index]);
            self.counts[index] = 0;
        }
        self.newest_second = now_second;
    }

    fn seconds_until_capacity_frees(&self, now_ms: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The oldest non-empty bucket, scanning the ring from the oldest second's slot once
        // (no division per bucket: with sparse traffic most of the 61 are empty).
        let oldest_second = (self.newest_second + 1).saturating_sub(SLOTS as u64);
        let start = slot(oldest_second);
        let (older, newer) = self.counts.split_at(start);
        let Some(age) = newer.iter().chain(older).position(|&count| count > 0) else {
            return 0;
        };
        // Bucket `second` stops being counted once `second + 61` is the newest.
        let frees_at_ms = (oldest_second + age as u64 + SLOTS as u64) * 1000;
        frees_at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }
}

/// A limiter's counts, to carry them over a restart: accepted requests per second (since
/// the Unix epoch), oldest first, empty seconds left out.
pub type RateCounts = Vec<(u64, u16)>;

impl RateLimiter {
    /// The counts still in the window at `now_ms`.
    pub fn counts(&mut self, now_ms: u64) -> RateCounts {
        self.advance_to(now_ms / 1000);
        let oldest_second = (self.newest_second + 1).saturating_sub(SLOTS as u64);
        (oldest_second..=self.newest_second)
            .map(|second| (second, self.counts[slot(second)]))
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    /// Adds counts taken from another limiter (before a restart) to this one's, keeping
    /// those still in the window at `now_ms`. A second after `now_ms` (the clock stepped
    /// back since) counts as `now_ms`'s, as `check` treats time going backwards; seconds
    /// that had left the window of the counts' own newest second are dropped first (a
    /// journal slot can hold words from an earlier minute), so that folding cannot add up
    /// two minutes' counts.
    pub fn restore(&mut self, counts: &[(u64, u16)], now_ms: u64) {
        let now_second = now_ms / 1000;
        self.advance_to(now_second);
        let newest = self.newest_second;
        let counts_newest = counts.iter().map(|&(second, _)| second).max().unwrap_or(0);
        for &(second, count) in counts {
            if counts_newest - second >= SLOTS as u64 {
                continue;
            }
            let second = second.min(newest);
            if newest - second >= SLOTS as u64 {
                continue;
            }
            let bucket = &mut self.counts[slot(second)];
            let added = count.min(u16::MAX - *bucket);
            *bucket += added;
            self.total += u32::from(added);
        }
    }
}

/// Two copies of one limiter's counts as one, each second's larger count. Copies meet after
/// a crash during a start (the journal of the run before it, and the start's own journal of
/// the same counts) or after a graceful stop that could not empty the journal (storage and
/// journal). A copy only ever adds to a count, so the larger is the later.
pub fn merge_counts(a: &[(u64, u16)], b: &[(u64, u16)]) -> RateCounts {
    let mut merged: BTreeMap<u64, u16> = a.iter().copied().collect();
    for &(second, count) in b {
        let kept = merged.entry(second).or_default();
        *kept = (*kept).max(count);
    }
    merged.into_iter().collect()
}

/// Counts as text, for storage: "second:count" pairs, space-separated.
pub fn encode_counts(counts: &[(u64, u16)]) -> String {
    counts
        .iter()
        .map(|(second, count)| format!("{second}:{count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The counts `encode_counts` wrote; `None` for anything else.
pub fn decode_counts(text: &str) -> Option<RateCounts> {
    text.split_whitespace()
        .map(|pair| {
            let (second, count) = pair.split_once(':')?;
            Some((second.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

fn slot(second: u64) -> usize {
    (second % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const START_MS: u64 = 1_800_000_000_000;

    /// Runs `arrivals` (ms offsets) through a limiter and returns the accepted times.
    fn accepted(limit: u32, arrivals: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut limiter = RateLimiter::new(limit as u16);
        arrivals
            .into_iter()
            .filter(|t| limiter.check(START_MS + t).allowed)
            .collect()
    }

    /// The largest number of accepted requests in any half-open 60-second span.
    fn max_in_any_window(accepted: &[u64]) -> usize {
        let mut window = VecDeque::new();
        let mut max = 0;
        for &t in accepted {
            window.push_back(t);
            while let Some(&first) = window.front() {
                if first + WINDOW_SECS * 1000 <= t {
                    window.pop_front();
                } else {
                    break;
                }
            }
            max = max.max(window.len());
        }
        max
    }

    #[test]
    fn a_burst_is_cut_at_exactly_the_limit() {
        let got = accepted(120, (0..500).map(|i| i * 10));
        assert_eq!(got.len(), 120);
    }

    #[test]
    fn client_at_exactly_the_limit_is_refused_nothing_and_never_exceeds_it() {
        // 1,200 per minute evenly: one every 50 ms, for five minutes.
        let arrivals: Vec<u64> = (0..6_000).map(|i| i * 50).collect();
        let got = accepted(1_200, arrivals.clone());
        assert!(max_in_any_window(&got) <= 1_200);
        // The window is up to a second longer than 60 s, so a client at exactly 100% sees
        // a few refusals per minute; what matters is that the cap holds.
        assert!(got.len() >= arrivals.len() * 95 / 100, "{}", got.len());
    }

    #[test]
    fn client_at_95_percent_is_never_refused() {
        for limit in [120_u32, 1_200] {
            let interval_ms = 60_000.0 / (limit as f64 * 0.95);
            let arrivals: Vec<u64> = (0..limit as u64 * 10)
                .map(|i| (i as f64 * interval_ms) as u64)
                .collect();
            let got = accepted(limit, arrivals.clone());
            assert_eq!(got.len(), arrivals.len(), "limit {limit}");
        }
    }

    #[test]
    fn no_sixty_second_span_exceeds_the_limit_under_bursty_traffic() {
        // Bursts at second boundaries and in between, over several minutes.
        let mut arrivals = Vec::new();
        for minute in 0..5_u64 {
            for burst_at in [0_u64, 999, 1_000, 30_500, 59_999, 60_000] {
                for i in 0..200 {
                    arrivals.push(minute * 61_000 + burst_at + i);
                }
            }
        }
        arrivals.sort_unstable();
        let got = accepted(120, arrivals);
        assert!(
            max_in_any_window(&got) <= 120,
            "{}",
            max_in_any_window(&got)
        );
    }

    #[test]
    fn refusal_reports_when_capacity_frees() {
        let mut limiter = RateLimiter::new(2);
        assert!(limiter.check(START_MS).allowed);
        assert!(limiter.check(START_MS + 10_000).allowed);
        let refused = limiter.check(START_MS + 20_000);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // The first request's bucket leaves the window 61 s after its second began.
        assert_eq!(refused.reset_secs, 41);
        assert!(!limiter.check(START_MS + 60_999).allowed);
        assert!(limiter.check(START_MS + 61_000).allowed);
    }

    #[test]
    fn reset_is_when_the_oldest_counted_request_leaves_the_window() {
        // Irregular arrivals over several minutes, so the oldest counted bucket sits at
        // every position of the ring, before and after the newest one.
        let mut limiter = RateLimiter::new(50);
        let mut accepted_seconds: Vec<u64> = Vec::new();
        let mut now_ms = START_MS + 777;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            now_ms += (seed >> 33) % 2_500;
            let decision = limiter.check(now_ms);
            let second = now_ms / 1000;
            if decision.allowed {
                accepted_seconds.push(second);
            }
            let oldest_counted = accepted_seconds
                .iter()
                .find(|&&s| s + WINDOW_SECS >= second)
                .copied();
            let expected = oldest_counted.map_or(0, |oldest| {
                ((oldest + SLOTS as u64) * 1000 - now_ms)
                    .div_ceil(1000)
                    .max(1)
            });
            assert_eq!(decision.reset_secs, expected, "at {now_ms}");
        }
    }

    #[test]
    fn remaining_counts_down_and_idle_time_restores_it() {
        let mut limiter = RateLimiter::new(3);
        assert_eq!(limiter.check(START_MS).remaining, 2);
        assert_eq!(limiter.check(START_MS).remaining, 1);
        assert_eq!(limiter.peek(START_MS + 5 * 60_000).remaining, 3);
        assert_eq!(limiter.peek(START_MS + 5 * 60_000).reset_secs, 0);
    }

    #[test]
    fn times_near_the_epoch_do_not_underflow() {
        let mut limiter = RateLimiter::new(2);
        assert!(limiter.check(1_000).allowed);
        assert!(limiter.check(2_000).allowed);
        assert!(!limiter.check(3_000).allowed);
    }

    #[test]
    fn merged_copies_keep_each_seconds_larger_count_oldest_first() {
        let older = vec![(10, 5), (11, 7), (13, 1)];
        let later = vec![(11, 9), (12, 2), (13, 1)];
        let expected = vec![(10, 5), (11, 9), (12, 2), (13, 1)];
        assert_eq!(merge_counts(&older, &later), expected);
        assert_eq!(merge_counts(&later, &older), expected);
        assert_eq!(merge_counts(&later, &later), later);
    }

    #[test]
    fn restored_counts_keep_the_limit_exact_across_a_restart() {
        // 100 accepted over the first 30 s, then a restart at 45 s.
        let mut before = RateLimiter::new(120);
        for i in 0..100 {
            assert!(before.check(START_MS + i * 300).allowed);
        }
        let counts = before.counts(START_MS + 45_000);
        assert_eq!(counts.iter().map(|&(_, c)| u32::from(c)).sum::<u32>(), 100);
        let mut after = RateLimiter::new(120);
        after.restore(&counts, START_MS + 45_000);
        let accepted = (0..200)
            .filter(|i| after.check(START_MS + 45_000 + i).allowed)
            .count();
        assert_eq!(accepted, 20);
        // Each restored second frees capacity 61 s after it began, as it would have.
        assert!(!after.check(START_MS + 60_999).allowed);
        assert!(after.check(START_MS + 61_000).allowed);
    }

    #[test]
    fn counts_survive_their_text_form() {
        let counts = vec![(1_800_000_000, 3), (1_800_000_059, 65_535)];
        assert_eq!(encode_counts(&counts), "1800000000:3 1800000059:65535");
        assert_eq!(decode_counts(&encode_counts(&counts)), Some(counts));
        assert_eq!(decode_counts(""), Some(vec![]));
        for bad in ["1:2:3", "x:1", "1:70000", "1"] {
            assert_eq!(decode_counts(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_older_than_the_window_are_not_restored() {
        let mut before = RateLimiter::new(5);
        for _ in 0..5 {
            before.check(START_MS);
        }
        let counts = before.counts(START_MS + 1_000);
        let mut after = RateLimiter::new(5);
        after.restore(&counts, START_MS + 61_000);
        assert_eq!(after.peek(START_MS + 61_000).remaining, 5);
        let mut soon_after = RateLimiter::new(5);
        soon_after.restore(&counts, START_MS + 60_999);
        assert_eq!(soon_after.peek(START_MS + 60_999).remaining, 0);
        // Seconds from a clock that has since stepped back count as now.
        let mut stepped = RateLimiter::new(5);
        stepped.restore(&[(START_MS / 1000 + 30, 3)], START_MS);
        assert_eq!(stepped.peek(START_MS).remaining, 2);
    }

    #[test]
    fn counts_from_two_minutes_are_not_folded_into_one() {
        // A journal slot with a full minute long past and a full minute since, both after
        // now (the clock stepped back): only the newer minute is restored, and the limiter
        // reports nothing left rather than wrapping around.
        let second = START_MS / 1000;
        let counts = [(second + 100, 5), (second + 300, 5)];
        let mut stepped = RateLimiter::new(5);
        stepped.restore(&counts, START_MS);
        let decision = stepped.peek(START_MS);
        assert!(!decision.allowed);
        assert_eq!(decision.remaining, 0);
        // Counts over the limit in one window (a tampered or merged copy) still report 0.
        let mut over = RateLimiter::new(5);
        over.restore(&[(second, 4), (second + 1, 4)], START_MS + 1_000);
        assert_eq!(over.peek(START_MS + 1_000).remaining, 0);
        assert_eq!(over.check(START_MS + 1_000).remaining, 0);
    }

    #[test]
    fn a_clock_step_backwards_loses_no_counts() {
        let mut limiter = RateLimiter::new(2);
        assert!(limiter.check(START_MS + 5_000).allowed);
        assert!(limiter.check(START_MS).allowed);
        assert!(!limiter.check(START_MS + 1).allowed);
    }
}
