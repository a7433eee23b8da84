//! Process metrics in Prometheus text format. Fixed arrays of atomics, so the hot path pays
//! a few relaxed increments and no lookup or allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A route of the public API, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotRoute {
    Me = 0,
    Authz = 1,
}
const HOT_ROUTES: [&str; 2] = ["me", "authz"];

/// How a verification ended, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    InvalidCredentials,
    KeyRevoked,
    KeyExpired,
    InvalidRoute,
    RateLimited,
    InsufficientScope,
    Unavailable,
}
const OUTCOMES: [&str; 8] = [
    "ok",
    "invalid_credentials",
    "key_revoked",
    "key_expired",
    "invalid_route",
    "rate_limited",
    "insufficient_scope",
    "unavailable",
];

/// Upper bounds of the verification latency histogram, in microseconds.
const LATENCY_BOUNDS_US: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000];

/// Listener label for HTTP response counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public = 0,
    Admin = 1,
}

/// The admin listener's paths, as a metric label: its answers are counted by path and
/// status class. The public listener's are not (a lookup per answer on the hot path); its
/// two verifying routes are counted by outcome.
const ADMIN_ROUTES: [&str; 12] = [
    "/admin/v1/workspaces",
    "/admin/v1/workspaces/{ws}",
    "/admin/v1/workspaces/{ws}/api-keys",
    "/admin/v1/workspaces/{ws}/api-keys/{id}",
    "/admin/v1/workspaces/{ws}/api-keys/{id}/rotate",
    "/admin/v1/users",
    "/admin/v1/workspaces/{ws}/members",
    "/admin/v1/workspaces/{ws}/audit-log",
    "/metrics",
    "/openapi.json",
    "/healthz",
    // Any other path (404), and a request refused before it reached its route: by the
    // admin token's check (401), by the HTTP parser.
    "other",
];

/// A path of the admin listener, as its answers are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminRoute(usize);

impl AdminRoute {
    /// The route of `path`, one of [`ADMIN_ROUTES`].
    pub fn labelled(path: &str) -> Option<AdminRoute> {
        ADMIN_ROUTES[..ADMIN_ROUTES.len() - 1]
            .iter()
            .position(|route| *route == path)
            .map(AdminRoute)
    }

    const OTHER: AdminRoute = AdminRoute(ADMIN_ROUTES.len() - 1);
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// `Listener`'s values, as a metric label.
const LISTENERS: [&str; 2] = ["public", "admin"];

/// A counter with two labels: its help and type lines, then one line for every pair of
/// label values, `counts[a][b]` for the `a`-th value of the first label and the `b`-th of
/// the second.
fn write_counter_table<const A: usize, const B: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    (first, first_values): (&str, &[&str; A]),
    (second, second_values): (&str, &[&str; B]),
    counts: &[[AtomicU64; B]; A],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (a, first_value) in first_values.iter().enumerate() {
        for (b, second_value) in second_values.iter().enumerate() {
            let value = counts[a][b].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}{{{first}=\"{first_value}\",{second}=\"{second_value}\"}} {value}"
            );
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    verifications: [[AtomicU64; OUTCOMES.len()]; HOT_ROUTES.len()],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_ns: AtomicU64,
    responses: [[AtomicU64; CLASSES.len()]; LISTENERS.len()],
    admin_responses: [[AtomicU64; CLASSES.len()]; ADMIN_ROUTES.len()],
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub negative_cache_hits: AtomicU64,
    /// Events handed to the audit sink and not yet written to the audit log.
    pub audit_pending: AtomicI64,
    pub audit_ingested: AtomicU64,
    pub audit_lost: AtomicU64,
    /// Events of jobs that failed for good, kept in the dead-letter directory.
    pub audit_dead_lettered: AtomicU64,
    /// Events that could not be written to the audit spool (held in memory only).
    pub audit_spool_failures: AtomicU64,
    /// Events that left memory for the spool alone while ingestion was behind.
    pub audit_spilled: AtomicU64,
    /// Log lines dropped because the log's reader was behind (`log_writer`): shared with
    /// the writer, which `main` starts before anything else.
    log_lines_dropped: Arc<AtomicU64>,
}

impl Metrics {
    /// Metrics that show `log_lines_dropped`, the log writer's count.
    pub fn with_log_lines_dropped(log_lines_dropped: Arc<AtomicU64>) -> Metrics {
        Metrics {
            log_lines_dropped,
            ..Metrics::default()
        }
    }

    /// `count` pending audit events were written to the audit log.
    pub fn audit_events_ingested(&self, count: u64) {
        self.audit_ingested.fetch_add(count, Relaxed);
        self.audit_pending.fetch_sub(count as i64, Relaxed);
    }

    /// `count` pending audit events were set aside with a job that failed for good.
    pub fn audit_events_dead_lettered(&self, count: u64) {
        self.audit_dead_lettered.fetch_add(count, Relaxed);
        self.audit_pending.fetch_sub(count as i64, Relaxed);
    }

    /// `count` pending audit events can never be written.
    pub fn audit_events_lost(&self, count: u64) {
        self.audit_lost.fetch_add(count, Relaxed);
        self.audit_pending.fetch_sub(count as i64, Relaxed);
    }

    pub fn record_verification(&self, route: HotRoute, outcome: Outcome, took: Duration) {
        self.verifications[route as usize][outcome as usize].fetch_add(1, Relaxed);
        let micros = took.as_micros() as u64;
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| micros < b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// An answer of `listener`; on the admin listener, of `admin_route` (none: no route's).
    pub fn record_response(
        &self,
        listener: Listener,
        admin_route: Option<AdminRoute>,
        status: u16,
    ) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.responses[listener as usize][class].fetch_add(1, Relaxed);
        if listener == Listener::Admin {
            let route = admin_route.unwrap_or(AdminRoute::OTHER);
            self.admin_responses[route.0][class].fetch_add(1, Relaxed);
        }
    }

    /// Renders every metric; `live_actors` is read from the registry by the caller.
    pub fn render(&self, live_actors: usize) -> String {
        let mut out = String::with_capacity(4096);
        write_counter_table(
            &mut out,
            "statuspulse_verifications_total",
            "Credential verifications by route and outcome.",
            ("route", &HOT_ROUTES),
            ("outcome", &OUTCOMES),
            &self.verifications,
        );
        let _ = writeln!(out, "# HELP statuspulse_verification_duration_seconds Time to verify a credential, rate limit and audit hand-off included.");
        let _ = writeln!(
            out,
            "# TYPE statuspulse_verification_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "statuspulse_verification_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += self.latency_buckets[LATENCY_BOUNDS_US.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "statuspulse_verification_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "statuspulse_verification_duration_seconds_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "statuspulse_verification_duration_seconds_count {cumulative}"
        );
        write_counter_table(
            &mut out,
            "statuspulse_http_responses_total",
            "HTTP responses by listener and status class.",
            ("listener", &LISTENERS),
            ("class", &CLASSES),
            &self.responses,
        );
        write_counter_table(
            &mut out,
            "statuspulse_admin_responses_total",
            "Admin listener answers by path and status class.",
            ("route", &ADMIN_ROUTES),
            ("class", &CLASSES),
            &self.admin_responses,
        );
        let counters = [
            (
                "statuspulse_key_cache_hits_total",
                "Verifications answered from the key cache.",
                self.cache_hits.load(Relaxed),
            ),
            (
                "statuspulse_key_cache_misses_total",
                "Verifications that read storage.",
                self.cache_misses.load(Relaxed),
            ),
            (
                "statuspulse_negative_cache_hits_total",
                "Unknown keys refused from the negative cache.",
                self.negative_cache_hits.load(Relaxed),
            ),
            (
                "statuspulse_audit_events_ingested_total",
                "Audit events written to the audit log.",
                self.audit_ingested.load(Relaxed),
            ),
            (
                "statuspulse_audit_events_lost_total",
                "Audit events that could not be delivered (should stay 0).",
                self.audit_lost.load(Relaxed),
            ),
            (
                "statuspulse_audit_events_dead_lettered_total",
                "Audit events of jobs that failed for good, kept in the dead-letter directory and retried at each start (should stay 0).",
                self.audit_dead_lettered.load(Relaxed),
            ),
            (
                "statuspulse_audit_spool_failures_total",
                "Audit events that could not be written to the crash spool (should stay 0).",
                self.audit_spool_failures.load(Relaxed),
            ),
            (
                "statuspulse_audit_events_spilled_total",
                "Audit events kept only in the spool while ingestion was behind, read back later.",
                self.audit_spilled.load(Relaxed),
            ),
            (
                "statuspulse_log_lines_dropped_total",
                "Log lines dropped because stdout's reader was behind (should stay 0).",
                self.log_lines_dropped.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "statuspulse_workspace_actors",
                "Live per-workspace actors.",
                live_actors as i64,
            ),
            (
                "statuspulse_audit_events_pending",
                "Audit events queued and not yet ingested.",
                self.audit_pending.load(Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.record_verification(HotRoute::Authz, Outcome::Ok, Duration::from_nanos(1_500));
        metrics.record_verification(
            HotRoute::Authz,
            Outcome::RateLimited,
            Duration::from_micros(30),
        );
        let text = metrics.render(3);
        assert!(text.contains("statuspulse_verifications_total{route=\"authz\",outcome=\"ok\"} 1"));
        assert!(text.contains(
            "statuspulse_verifications_total{route=\"authz\",outcome=\"rate_limited\"} 1"
        ));
        assert!(
            text.contains("statuspulse_verification_duration_seconds_bucket{le=\"0.000002\"} 1")
        );
        assert!(text.contains("statuspulse_verification_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("statuspulse_workspace_actors 3"));
    }
}
