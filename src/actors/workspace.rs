//! The per-workspace actor and the state it owns.
//!
//! The actor owns its workspace's hot key cache and rate limiters, but the hot path does not
//! send it a message per request: a cross-thread mailbox round trip costs about a third of
//! the server's throughput. Instead the state sits in an `Arc` that request handlers read
//! and update directly (a read lock for the cache, an uncontended mutex for the limiter),
//! and the actor does the work that is not on the request's critical path: refreshing
//! stale cache entries from storage, and stopping itself when the workspace goes idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::HeaderValue;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};

use super::rate_journal::{JournalSlot, RateJournal};
use super::registry::WorkspaceRegistry;
use crate::clock::RateClock;
use crate::domain::api_key::Environment;
use crate::domain::hashing::{KeyHash, KeyHashState};
use crate::domain::key_record::{key_status, ApiKeyRecord, KeyStatus};
use crate::domain::rate_limit::{RateCounts, RateDecision, RateLimiter};
use crate::domain::scope::ScopeSet;

/// A key in the cache: only what the hot path needs, with the strings that every audit event
/// repeats held as shared `Arc<str>`s. Kept small on purpose: 100,000 of these must fit,
/// with their workspaces, in well under 100 MB.
#[derive(Debug)]
pub struct CachedKey {
    pub id: Arc<str>,
    pub label: Arc<str>,
    /// The workspace's own id `Arc`, not a copy.
    pub workspace_id: Arc<str>,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When this entry was read from storage (ms since the epoch).
    pub fetched_at_ms: u64,
    refresh_pending: AtomicBool,
}

impl CachedKey {
    pub fn new(record: &ApiKeyRecord, workspace_id: Arc<str>, fetched_at_ms: u64) -> CachedKey {
        CachedKey {
            id: Arc::from(record.id.as_str()),
            label: Arc::from(record.label.as_str()),
            workspace_id,
            environment: record.environment,
            scopes: record.scopes,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            fetched_at_ms,
            refresh_pending: AtomicBool::new(false),
        }
    }

    /// The same entry, marked as read from storage at `fetched_at_ms`.
    fn refreshed(&self, fetched_at_ms: u64) -> CachedKey {
        CachedKey {
            id: Arc::clone(&self.id),
            label: Arc::clone(&self.label),
            workspace_id: Arc::clone(&self.workspace_id),
            fetched_at_ms,
            refresh_pending: AtomicBool::new(false),
            ..*self
        }
    }

    /// When the key stops working: its expiry, or the end of a rotation's grace period if
    /// that comes first (a revocation, which sets `revoked_at` to now, ends it at once).
    pub fn stops_working_at(&self) -> DateTime<Utc> {
        self.revoked_at.map_or(self.expires_at, |revoked_at| {
            revoked_at.min(self.expires_at)
        })
    }

    /// Whether the key works at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> KeyStatus {
        key_status(self.revoked_at, self.expires_at, now)
    }

    /// Claims the right to ask for a refresh, so that one stale entry yields one storage read
    /// however many requests see it stale.
    pub fn claim_refresh(&self) -> bool {
        !self.refresh_pending.swap(true, Ordering::AcqRel)
    }
}

/// What a workspace's actor owns; shared with request handlers through an `Arc`.
pub struct WorkspaceState {
    pub id: Arc<str>,
    /// The id as an HTTP header value, made once: forward-auth answers repeat it on every
    /// request. `None` only for an id that is not a valid header value (ids are ASCII
    /// letters, digits and `_`).
    pub id_header: Option<HeaderValue>,
    keys: RwLock<HashMap<KeyHash, Arc<CachedKey>, KeyHashState>>,
    live_limiter: Mutex<JournaledLimiter>,
    test_limiter: Mutex<JournaledLimiter>,
    /// Where the limiters copy their counts to survive a crash; `None` in tests and benches.
    journal: Option<Arc<RateJournal>>,
    last_used_ms: AtomicU64,
    /// Set once, when the actor stops: the state is then out of the registry, and a request
    /// that still holds it must look the workspace up again rather than count against a
    /// limiter nobody else sees.
    retired: AtomicBool,
}

/// A limiter and, once it has counted something, its slot in the rate journal (`None`
/// inside when the journal could not give one).
struct JournaledLimiter {
    limiter: RateLimiter,
    slot: Option<Option<JournalSlot>>,
}

impl JournaledLimiter {
    fn new(environment: Environment) -> Mutex<JournaledLimiter> {
        Mutex::new(JournaledLimiter {
            limiter: RateLimiter::new(environment.requests_per_minute()),
            slot: None,
        })
    }
}

impl WorkspaceState {
    pub fn new(id: Arc<str>, now_ms: u64, journal: Option<Arc<RateJournal>>) -> WorkspaceState {
        WorkspaceState {
            id_header: HeaderValue::from_str(&id).ok(),
            id,
            keys: RwLock::new(HashMap::default()),
            live_limiter: JournaledLimiter::new(Environment::Live),
            test_limiter: JournaledLimiter::new(Environment::Test),
            journal,
            last_used_ms: AtomicU64::new(now_ms),
            retired: AtomicBool::new(false),
        }
    }

    pub fn cached_key(&self, hash: &KeyHash) -> Option<Arc<CachedKey>> {
        self.keys.read().get(hash).cloned()
    }

    /// Stores or replaces a key; returns the cached form. A revocation already cached is
    /// never undone: revocations only ever move earlier, so a storage read that started
    /// before a revocation and finishes after it cannot bring the key back to life.
    pub fn put_key(&self, record: &ApiKeyRecord, now_ms: u64) -> Arc<CachedKey> {
        let mut fresh = CachedKey::new(record, Arc::clone(&self.id), now_ms);
        let mut keys = self.keys.write();
        if let Some(cached_revocation) = keys.get(&record.key_hash).and_then(|k| k.revoked_at) {
            fresh.revoked_at = Some(
                fresh
                    .revoked_at
                    .map_or(cached_revocation, |at| at.min(cached_revocation)),
            );
        }
        let fresh = Arc::new(fresh);
        keys.insert(record.key_hash, Arc::clone(&fresh));
        fresh
    }

    /// Caches a key while this state still serves its workspace; `None` once it is retired
    /// (the caller must find the workspace's current state). Decided under the key's
    /// limiter, as retirement is, so a state that takes the key is one the registry still
    /// serves. `touch_ms` (an admin change): the workspace then does not retire for an idle
    /// timeout, so that a storage read of the key that began before the change lands in
    /// this very state, where the change wins (`put_key`), and not in a fresh state that
    /// never saw it.
    pub fn cache_key(
        &self,
        record: &ApiKeyRecord,
        fetched_at_ms: u64,
        touch_ms: Option<u64>,
    ) -> Option<Arc<CachedKey>> {
        let _limiter = self.limiter(record.environment).lock();
        if self.is_retired() {
            return None;
        }
        if let Some(now_ms) = touch_ms {
            self.touch(now_ms);
        }
        Some(self.put_key(record, fetched_at_ms))
    }

    /// Keeps a cached entry as it is now, marked as read at `fetched_at_ms` (a re-read that
    /// storage did not answer: try again one TTL later). Read and replaced under one lock,
    /// so that a change cached meanwhile (a revocation) is kept, not overwritten by the
    /// copy from before it.
    fn keep_cached(&self, hash: &KeyHash, fetched_at_ms: u64) {
        let mut keys = self.keys.write();
        if let Some(cached) = keys.get(hash) {
            let kept = Arc::new(cached.refreshed(fetched_at_ms));
            keys.insert(*hash, kept);
        }
    }

    pub fn remove_key(&self, hash: &KeyHash) {
        self.keys.write().remove(hash);
    }

    pub fn cached_hashes(&self) -> Vec<KeyHash> {
        self.keys.read().keys().copied().collect()
    }

    /// Counts one request against the environment's limit, if there is room. `None` when
    /// this state has been retired: the caller must find the workspace's current state.
    pub fn check_rate(&self, environment: Environment, now_ms: u64) -> Option<RateDecision> {
        self.touch(now_ms);
        let mut limiter = self.limiter(environment).lock();
        if self.retired.load(Ordering::Acquire) {
            return None;
        }
        let decision = limiter.limiter.check(now_ms);
        if decision.allowed {
            let (second, count) = limiter.limiter.count_at(now_ms);
            if let Some(slot) = self.journal_slot(&mut limiter, environment) {
                slot.record(second, count);
            }
        }
        Some(decision)
    }

    /// The limiter's journal slot, asked for the first time it is needed.
    fn journal_slot<'l>(
        &self,
        limiter: &'l mut JournaledLimiter,
        environment: Environment,
    ) -> Option<&'l JournalSlot> {
        let journal = self.journal.as_ref()?;
        limiter
            .slot
            .get_or_insert_with(|| journal.slot(&self.id, environment))
            .as_ref()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Retires the state if it has seen no request for `idle_ms`. Decided while holding both
    /// limiters, so no request can be counted here after the decision: every count lands in
    /// a state the registry still serves, which keeps the limit exact across actor restarts.
    fn retire_if_idle(&self, now_ms: u64, idle_ms: u64) -> bool {
        let _live = self.live_limiter.lock();
        let _test = self.test_limiter.lock();
        if self.idle_for_ms(now_ms) < idle_ms {
            return false;
        }
        self.retired.store(true, Ordering::Release);
        true
    }

    /// The limiter state without counting a request (for refusals that come before the
    /// limit is checked).
    pub fn peek_rate(&self, environment: Environment, now_ms: u64) -> RateDecision {
        self.limiter(environment).lock().limiter.peek(now_ms)
    }

    /// Each environment's counts still in the window at `now_ms`, where there are any.
    pub fn rate_counts(&self, now_ms: u64) -> Vec<(Environment, RateCounts)> {
        [Environment::Live, Environment::Test]
            .into_iter()
            .map(|environment| {
                let counts = self.limiter(environment).lock().limiter.counts(now_ms);
                (environment, counts)
            })
            .filter(|(_, counts)| !counts.is_empty())
            .collect()
    }

    /// Adds counts carried over a restart to an environment's limiter, and to its journal
    /// slot, so that they survive a crash of this run too.
    pub fn restore_rate(&self, environment: Environment, counts: &[(u64, u16)], now_ms: u64) {
        let mut limiter = self.limiter(environment).lock();
        limiter.limiter.restore(counts, now_ms);
        let restored = limiter.limiter.counts(now_ms);
        if let Some(slot) = self.journal_slot(&mut limiter, environment) {
            for (second, count) in restored {
                slot.record(second, count);
            }
        }
    }

    fn limiter(&self, environment: Environment) -> &Mutex<JournaledLimiter> {
        match environment {
            Environment::Live => &self.live_limiter,
            Environment::Test => &self.test_limiter,
        }
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    fn idle_for_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_used_ms.load(Ordering::Relaxed))
    }
}

/// The actor of one workspace.
pub struct WorkspaceActor {
    state: Arc<WorkspaceState>,
    registry: Weak<WorkspaceRegistry>,
    idle_timeout: Duration,
    /// The registry's: the state's last use is in the limiters' time.
    rate_clock: RateClock,
    /// Idle, and asking whether storage answers before stopping.
    checking_storage: bool,
}

impl WorkspaceActor {
    pub fn new(
        state: Arc<WorkspaceState>,
        registry: Weak<WorkspaceRegistry>,
        idle_timeout: Duration,
        rate_clock: RateClock,
    ) -> WorkspaceActor {
        WorkspaceActor {
            state,
            registry,
            idle_timeout,
            rate_clock,
            checking_storage: false,
        }
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Stops the actor once idle, unless storage does not answer: then its cached keys are
    /// all that serves its workspace until storage is back, and they stay.
    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.state.idle_for_ms(self.rate_clock.now_ms()) >= self.idle_ms();
        if !idle || self.checking_storage {
            return;
        }
        let Some(registry) = self.registry.upgrade() else {
            // Shutting down: nothing is served any more.
            return self.retire_if_idle(ctx);
        };
        self.checking_storage = true;
        let check = async move { registry.storage_answers().await };
        ctx.spawn(check.into_actor(self).map(|answered, actor, ctx| {
            actor.checking_storage = false;
            if answered {
                actor.retire_if_idle(ctx);
            }
        }));
    }

    /// Stops the actor if it is still idle: a request may have arrived meanwhile.
    fn retire_if_idle(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.rate_clock.now_ms();
        if !self.state.retire_if_idle(now_ms, self.idle_ms()) {
            return;
        }
        if let Some(registry) = self.registry.upgrade() {
            registry.forget_workspace(&self.state);
        }
        ctx.stop();
    }
}

impl Actor for WorkspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Checking a few times per timeout bounds how long an idle actor outlives it.
        let every = (self.idle_timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(every, |actor, ctx| actor.stop_if_idle(ctx));
    }
}

/// Re-reads one cached key from storage (its entry is stale). Sent fire-and-forget by the
/// hot path, which keeps answering from the stale entry meanwhile; if storage is down the
/// stale entry stays, so cached keys keep working through an outage.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshKey(pub KeyHash);

impl Handler<RefreshKey> for WorkspaceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RefreshKey, _ctx: &mut Self::Context) -> Self::Result {
        let state = Arc::clone(&self.state);
        let registry = self.registry.clone();
        Box::pin(async move {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            match registry.store().find_api_key_by_hash(&msg.0).await {
                Ok(Some(record)) if record.workspace_id.as_str() == &*state.id => {
                    state.put_key(&record, crate::clock::now_ms());
                }
                Ok(_) => {
                    state.remove_key(&msg.0);
                    registry.forget_key(&msg.0);
                }
                Err(error) => {
                    tracing::warn!(workspace_id = %state.id, error = %crate::error_chain::error_chain(&error), "key refresh failed; serving cached entry");
                    // Keep the entry and try again one TTL later, not on every request.
                    state.keep_cached(&msg.0, crate::clock::now_ms());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revoked_at: Option<DateTime<Utc>>) -> ApiKeyRecord {
        let created = crate::clock::to_datetime(1_800_000_000_000);
        ApiKeyRecord {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            key_hash: KeyHash([5; 32]),
            key_hint: "sp_live_...abcd".into(),
            label: "ci".into(),
            environment: Environment::Live,
            scopes: ScopeSet::EMPTY,
            created_at: created,
            expires_at: crate::domain::key_record::expiry_for(created),
            revoked_at,
        }
    }

    #[test]
    fn a_stale_read_cannot_undo_a_cached_revocation() {
        let state = WorkspaceState::new(Arc::from("ws_1"), 0, None);
        let revoked_at = crate::clock::to_datetime(1_800_000_100_000);
        state.put_key(&record(Some(revoked_at)), 1);
        // A storage read that began before the revocation lands afterwards.
        let cached = state.put_key(&record(None), 2);
        assert_eq!(cached.revoked_at, Some(revoked_at));
        // An earlier revocation (a rotation's grace cut short) still wins.
        let earlier = crate::clock::to_datetime(1_800_000_050_000);
        assert_eq!(
            state.put_key(&record(Some(earlier)), 3).revoked_at,
            Some(earlier)
        );
    }

    #[test]
    fn a_changed_key_keeps_its_workspace_from_retiring() {
        let state = WorkspaceState::new(Arc::from("ws_1"), 0, None);
        let revoked_at = crate::clock::to_datetime(1_800_000_100_000);
        assert!(state
            .cache_key(&record(Some(revoked_at)), 1, Some(50_000))
            .is_some());
        assert!(
            !state.retire_if_idle(61_000, 60_000),
            "changed 11 s ago: not idle"
        );
        // A read that only fills the cache does not hold the workspace.
        assert!(state.cache_key(&record(None), 2, None).is_some());
        assert!(state.retire_if_idle(110_000, 60_000));
        assert!(state.cache_key(&record(None), 3, Some(110_000)).is_none());
    }

    #[test]
    fn an_entry_kept_after_a_failed_re_read_keeps_its_cached_revocation() {
        let state = WorkspaceState::new(Arc::from("ws_1"), 0, None);
        state.put_key(&record(None), 1);
        let revoked_at = crate::clock::to_datetime(1_800_000_100_000);
        state.put_key(&record(Some(revoked_at)), 2);
        state.keep_cached(&KeyHash([5; 32]), 3);
        let kept = state.cached_key(&KeyHash([5; 32])).unwrap();
        assert_eq!((kept.revoked_at, kept.fetched_at_ms), (Some(revoked_at), 3));
    }

    #[test]
    fn an_idle_state_retires_and_then_counts_nothing() {
        let state = WorkspaceState::new(Arc::from("ws_1"), 0, None);
        assert!(state.check_rate(Environment::Live, 1_000).is_some());
        assert!(
            !state.retire_if_idle(30_000, 60_000),
            "used 29 s ago: not idle"
        );
        assert!(!state.is_retired());
        assert!(state.retire_if_idle(61_000, 60_000));
        assert!(state.is_retired());
        assert_eq!(state.check_rate(Environment::Live, 61_001), None);
    }
}
