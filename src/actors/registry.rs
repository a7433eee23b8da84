//! Finds the actor of a workspace, and the workspace of a cached key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Actor, Addr};
use dashmap::DashMap;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::rate_journal::{JournalSlot, RateJournal};
use super::workspace::{CachedKey, RefreshKey, WorkspaceActor, WorkspaceState};
use crate::clock::RateClock;
use crate::domain::api_key::Environment;
use crate::domain::hashing::{KeyHash, KeyHashState};
use crate::domain::key_record::ApiKeyRecord;
use crate::domain::rate_limit::{merge_counts, RateCounts, WINDOW_SECS};
use crate::store::{SavedRateLimit, SharedStore, StoreError};

/// How long things stay cached.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// An actor whose workspace saw no request for this long stops and frees its memory.
    /// Must exceed the 60-second rate-limit window, so that a restarted actor's empty
    /// limiter is exactly what the old one would have held.
    pub idle_timeout: Duration,
    /// A cached key older than this is re-read from storage in the background, so that
    /// changes made by another server instance reach this one.
    pub key_ttl: Duration,
    /// How long an unknown key is remembered as unknown.
    pub negative_ttl: Duration,
    /// At most this many unknown keys are remembered; past it they reach storage again.
    pub negative_capacity: usize,
}

impl Default for CacheSettings {
    fn default() -> CacheSettings {
        CacheSettings {
            idle_timeout: Duration::from_secs(300),
            key_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(30),
            negative_capacity: 100_000,
        }
    }
}

/// A live workspace: its actor and the state it owns.
#[derive(Clone)]
pub struct WorkspaceHandle {
    pub addr: Addr<WorkspaceActor>,
    pub state: Arc<WorkspaceState>,
}

/// What the cache knows about a key hash.
pub enum CacheLookup {
    Hit(Arc<WorkspaceState>, Arc<CachedKey>),
    KnownUnknown,
    Miss,
}

pub struct WorkspaceRegistry {
    /// Workspace ids come from storage, never from callers, so a fast non-keyed hash is safe.
    workspaces: DashMap<Arc<str>, WorkspaceHandle, FxBuildHasher>,
    /// Which workspace's cache holds a key: its state directly, so that a cached
    /// verification costs one lookup here and one in that workspace's own cache.
    key_index: DashMap<KeyHash, Arc<WorkspaceState>, KeyHashState>,
    /// Keys storage did not know, with when to forget that (ms since the epoch).
    unknown_keys: DashMap<KeyHash, u64, KeyHashState>,
    /// When `unknown_keys` was last swept for expired entries (ms since the epoch).
    unknown_keys_swept_at_ms: AtomicU64,
    store: SharedStore,
    settings: CacheSettings,
    /// Rate-limit counts from before a restart, by workspace, waiting for each workspace's
    /// first actor.
    carried_over: Mutex<CarriedOver>,
    /// Where each workspace's limiters keep their counts through a crash.
    rate_journal: Option<Arc<RateJournal>>,
    /// The time of every workspace's limiters and idle timers: it never steps.
    rate_clock: RateClock,
    /// The last answer to "does storage answer?", shared by every idle actor that asks.
    /// Held across the question, so that actors going idle together ask it once.
    storage_check: tokio::sync::Mutex<Option<StorageCheck>>,
    this: Weak<WorkspaceRegistry>,
}

/// Whether storage answered a ping, and when it was asked (ms since the epoch).
#[derive(Clone, Copy)]
struct StorageCheck {
    at_ms: u64,
    answered: bool,
}

/// How often, at most, a full memory of unknown keys is swept for expired entries.
const UNKNOWN_SWEEP_EVERY_MS: u64 = 1_000;

/// How long an answer to "does storage answer?" stands: however many actors go idle, storage
/// is asked at most about once a second.
const STORAGE_CHECK_EVERY_MS: u64 = 1_000;

/// Rate-limit counts saved by the previous run, until they have all left the window.
#[derive(Default)]
struct CarriedOver {
    by_workspace: FxHashMap<String, Vec<CarriedLimit>>,
    /// After this (ms since the epoch) every count has left the window.
    until_ms: u64,
}

/// One limiter's counts from before a restart, waiting for its workspace's first actor. They
/// sit in a journal slot of their own meanwhile, so that a crash before that actor starts
/// does not lose them (the actor's limiter journals them in its own slot, and this one is
/// freed when the entry is dropped).
struct CarriedLimit {
    environment: Environment,
    counts: RateCounts,
    _slot: Option<JournalSlot>,
}

impl WorkspaceRegistry {
    /// `rate_journal`: where limiters keep their counts through a crash (`None`: they do
    /// not, as in benches); `rate_clock`: their time.
    pub fn new(
        store: SharedStore,
        settings: CacheSettings,
        rate_journal: Option<Arc<RateJournal>>,
        rate_clock: RateClock,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| WorkspaceRegistry {
            workspaces: DashMap::default(),
            key_index: DashMap::default(),
            unknown_keys: DashMap::default(),
            unknown_keys_swept_at_ms: AtomicU64::new(0),
            store,
            settings,
            carried_over: Mutex::default(),
            rate_journal,
            rate_clock,
            storage_check: tokio::sync::Mutex::new(None),
            this: this.clone(),
        })
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Now, in the limiters' time (`RateClock`): what `check_rate`, `rate_limits` and
    /// `carry_over` are given.
    pub fn rate_now_ms(&self) -> u64 {
        self.rate_clock.now_ms()
    }

    /// Whether storage answers (as of at most `STORAGE_CHECK_EVERY_MS` ago). An idle actor
    /// asks before it stops: its cached keys are what keeps its workspace served through an
    /// outage, and a key dropped then could not be loaded again until storage is back.
    pub async fn storage_answers(&self) -> bool {
        let mut last = self.storage_check.lock().await;
        if let Some(check) = *last {
            if crate::clock::now_ms().saturating_sub(check.at_ms) < STORAGE_CHECK_EVERY_MS {
                return check.answered;
            }
        }
        let answered = self.store.ping().await.is_ok();
        *last = Some(StorageCheck {
            at_ms: crate::clock::now_ms(),
            answered,
        });
        answered
    }

    pub fn live_actors(&self) -> usize {
        self.workspaces.len()
    }

    pub fn cached_keys(&self) -> usize {
        self.key_index.len()
    }

    /// The cache's answer for a key, without touching storage. A stale hit also asks the
    /// workspace actor to refresh the entry in the background.
    pub fn lookup(&self, hash: &KeyHash, now_ms: u64) -> CacheLookup {
        if let Some(state) = self.key_index.get(hash) {
            if !state.is_retired() {
                if let Some(key) = state.cached_key(hash) {
                    let stale = now_ms.saturating_sub(key.fetched_at_ms)
                        > self.settings.key_ttl.as_millis() as u64;
                    if stale && key.claim_refresh() {
                        if let Some(handle) = self.workspaces.get(&*state.id) {
                            handle.addr.do_send(RefreshKey(*hash));
                        }
                    }
                    return CacheLookup::Hit(Arc::clone(&state), key);
                }
            }
        }
        if let Some(until) = self.unknown_keys.get(hash) {
            if *until > now_ms {
                return CacheLookup::KnownUnknown;
            }
        }
        CacheLookup::Miss
    }

    /// Reads a key from storage after a miss and caches the answer, positive or negative.
    pub async fn load(
        &self,
        hash: &KeyHash,
        now_ms: u64,
    ) -> Result<Option<(Arc<WorkspaceState>, Arc<CachedKey>)>, StoreError> {
        match self.store.find_api_key_by_hash(hash).await? {
            Some(record) => {
                self.unknown_keys.remove(hash);
                Ok(Some(self.cache_key(&record, now_ms, false)))
            }
            None => {
                self.remember_unknown(*hash, now_ms);
                Ok(None)
            }
        }
    }

    /// Caches a key read from storage (or changed by an admin) in its workspace's current
    /// state and indexes it there. A state that retires meanwhile refuses it, and the next
    /// one takes it. `changed`: an admin change, which keeps the workspace from retiring
    /// for an idle timeout (see `WorkspaceState::cache_key`).
    fn cache_key(
        &self,
        record: &ApiKeyRecord,
        fetched_at_ms: u64,
        changed: bool,
    ) -> (Arc<WorkspaceState>, Arc<CachedKey>) {
        loop {
            let state = self.workspace(&record.workspace_id).state;
            let touch_ms = changed.then(|| self.rate_now_ms());
            let Some(key) = state.cache_key(record, fetched_at_ms, touch_ms) else {
                continue;
            };
            self.key_index.insert(record.key_hash, Arc::clone(&state));
            // Retired between the two (its removal may have missed this entry): an index
            // entry would keep the retired state's memory and journal slots alive.
            if state.is_retired() {
                self.key_index
                    .remove_if(&record.key_hash, |_, indexed| Arc::ptr_eq(indexed, &state));
            }
            return (state, key);
        }
    }

    /// The handle of a workspace, starting its actor if it has none.
    pub fn workspace(&self, workspace_id: &str) -> WorkspaceHandle {
        if let Some(handle) = self.workspaces.get(workspace_id) {
            if !handle.state.is_retired() {
                return handle.clone();
            }
        }
        let id: Arc<str> = Arc::from(workspace_id);
        let mut entry = self
            .workspaces
            .entry(Arc::clone(&id))
            .or_insert_with(|| self.start(&id));
        if !entry.state.is_retired() {
            return entry.clone();
        }
        // A retired actor that has not yet removed itself is replaced. Its own removal
        // checks identity and so leaves the replacement alone, and its keys' index entries
        // with it: they are removed here.
        let retired = std::mem::replace(&mut *entry, self.start(&id));
        let handle = entry.clone();
        drop(entry);
        self.forget_keys_of(&retired.state);
        handle
    }

    fn start(&self, id: &Arc<str>) -> WorkspaceHandle {
        let now_ms = self.rate_now_ms();
        let state = Arc::new(WorkspaceState::new(
            Arc::clone(id),
            now_ms,
            self.rate_journal.clone(),
        ));
        for carried in self.take_carried_over(id, now_ms) {
            state.restore_rate(carried.environment, &carried.counts, now_ms);
        }
        let actor = WorkspaceActor::new(
            Arc::clone(&state),
            self.this.clone(),
            self.settings.idle_timeout,
            self.rate_clock,
        );
        WorkspaceHandle {
            addr: actor.start(),
            state,
        }
    }

    /// Every live workspace's rate-limit counts, to save at shutdown.
    /// Counts carried over from the previous run that no actor has taken yet are included:
    /// a restart with no request in between must not lose them.
    pub fn rate_limits(&self, now_ms: u64) -> Vec<SavedRateLimit> {
        let mut saved = Vec::new();
        for handle in self.workspaces.iter() {
            for (environment, counts) in handle.state.rate_counts(now_ms) {
                saved.push(SavedRateLimit {
                    workspace_id: handle.state.id.to_string(),
                    environment,
                    counts,
                });
            }
        }
        let carried = self.carried_over.lock();
        for (workspace_id, limits) in &carried.by_workspace {
            for limit in limits {
                saved.push(SavedRateLimit {
                    workspace_id: workspace_id.clone(),
                    environment: limit.environment,
                    counts: limit.counts.clone(),
                });
            }
        }
        saved
    }

    /// Counts saved before a restart: each workspace's first actor starts with them, so
    /// that the restart gives no workspace a fresh minute. Call before serving. Two copies
    /// of one limiter's counts are merged (`merge_counts`), not added up.
    pub fn carry_over(&self, saved: Vec<SavedRateLimit>, now_ms: u64) {
        let mut by_limiter: FxHashMap<(String, Environment), RateCounts> = FxHashMap::default();
        for limit in saved {
            let key = (limit.workspace_id, limit.environment);
            match by_limiter.get_mut(&key) {
                Some(counts) => *counts = merge_counts(counts, &limit.counts),
                None => {
                    by_limiter.insert(key, limit.counts);
                }
            }
        }
        let mut carried = self.carried_over.lock();
        let window_ms = (WINDOW_SECS + 1) * 1000;
        for ((workspace_id, environment), counts) in by_limiter {
            let newest_ms = counts.last().map_or(0, |&(second, _)| second * 1000);
            if newest_ms + window_ms <= now_ms {
                continue;
            }
            carried.until_ms = carried.until_ms.max(newest_ms + window_ms);
            let slot = self
                .rate_journal
                .as_ref()
                .and_then(|journal| journal.slot(&workspace_id, environment));
            if let Some(slot) = &slot {
                for &(second, count) in &counts {
                    slot.record(second, count);
                }
            }
            carried
                .by_workspace
                .entry(workspace_id)
                .or_default()
                .push(CarriedLimit {
                    environment,
                    counts,
                    _slot: slot,
                });
        }
    }

    fn take_carried_over(&self, id: &str, now_ms: u64) -> Vec<CarriedLimit> {
        let mut carried = self.carried_over.lock();
        if carried.by_workspace.is_empty() {
            return Vec::new();
        }
        if now_ms >= carried.until_ms {
            // Whatever is left has left the window: free it.
            *carried = CarriedOver::default();
            return Vec::new();
        }
        carried.by_workspace.remove(id).unwrap_or_default()
    }

    /// Applies an admin change (revocation, rotation) to the cache at once, so that it holds
    /// on the very next request. The key is cached even if it was not: a cache miss being
    /// served right now may have read the key before the change, and the cached revocation
    /// is what keeps that stale read from being cached over it (see `put_key`).
    pub fn key_changed(&self, record: &ApiKeyRecord) {
        self.cache_key(record, crate::clock::now_ms(), true);
    }

    /// Called when a key is created: a hash remembered as unknown must not stay so.
    pub fn key_created(&self, hash: &KeyHash) {
        self.unknown_keys.remove(hash);
    }

    /// Drops a key from the cache (a change to it may or may not have been stored): its
    /// next request reads it from storage, and while storage is down is answered 503.
    pub fn key_in_doubt(&self, hash: &KeyHash) {
        if let Some((_, state)) = self.key_index.remove(hash) {
            state.remove_key(hash);
        }
    }

    /// Drops a key from the index (it vanished from storage).
    pub fn forget_key(&self, hash: &KeyHash) {
        self.key_index.remove(hash);
    }

    /// Removes a stopping workspace, if the registry still points at this very state (a
    /// newer actor may already have replaced it), along with its keys' index entries.
    pub fn forget_workspace(&self, state: &Arc<WorkspaceState>) {
        let removed = self
            .workspaces
            .remove_if(&state.id, |_, handle| Arc::ptr_eq(&handle.state, state))
            .is_some();
        if removed {
            self.forget_keys_of(state);
        }
    }

    /// Removes the index entries that point at a retired state.
    fn forget_keys_of(&self, state: &Arc<WorkspaceState>) {
        for hash in state.cached_hashes() {
            self.key_index
                .remove_if(&hash, |_, indexed| Arc::ptr_eq(indexed, state));
        }
    }

    fn remember_unknown(&self, hash: KeyHash, now_ms: u64) {
        if self.unknown_keys.len() >= self.settings.negative_capacity
            && !self.forget_expired_unknown_keys(now_ms)
        {
            return;
        }
        self.unknown_keys
            .insert(hash, now_ms + self.settings.negative_ttl.as_millis() as u64);
    }

    /// Forgets the unknown keys whose time is up, at most once per `UNKNOWN_SWEEP_EVERY_MS`;
    /// whether there is room now. A sweep visits every entry, and while a flood of distinct
    /// unknown keys keeps the memory full of live ones it frees nothing: swept on every
    /// miss, each bogus key would cost a walk over all of them.
    fn forget_expired_unknown_keys(&self, now_ms: u64) -> bool {
        let last = self.unknown_keys_swept_at_ms.load(Ordering::Relaxed);
        // A clock stepped back is due too, rather than waiting until it passes `last`.
        let due = now_ms < last || now_ms - last >= UNKNOWN_SWEEP_EVERY_MS;
        if !due
            || self
                .unknown_keys_swept_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.unknown_keys.retain(|_, until| *until > now_ms);
        self.unknown_keys.len() < self.settings.negative_capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn saved(workspace_id: &str, environment: Environment, counts: RateCounts) -> SavedRateLimit {
        SavedRateLimit {
            workspace_id: workspace_id.into(),
            environment,
            counts,
        }
    }

    #[test]
    fn two_copies_of_one_limiters_counts_are_carried_over_once() {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        let registry = WorkspaceRegistry::new(
            store,
            CacheSettings::default(),
            None,
            RateClock::start(None),
        );
        let second = NOW_MS / 1000 - 10;
        registry.carry_over(
            vec![
                // The journal of a start that crashed, and the run before it.
                saved("ws_a", Environment::Live, vec![(second, 40)]),
                saved(
                    "ws_a",
                    Environment::Live,
                    vec![(second, 40), (second + 1, 3)],
                ),
                // Another environment and another workspace are their own limiters.
                saved("ws_a", Environment::Test, vec![(second, 2)]),
                saved("ws_b", Environment::Live, vec![(second, 7)]),
            ],
            NOW_MS,
        );
        let mut carried = registry.rate_limits(NOW_MS);
        carried.sort_by_key(|l| (l.workspace_id.clone(), l.environment.as_str()));
        assert_eq!(
            carried,
            vec![
                saved(
                    "ws_a",
                    Environment::Live,
                    vec![(second, 40), (second + 1, 3)]
                ),
                saved("ws_a", Environment::Test, vec![(second, 2)]),
                saved("ws_b", Environment::Live, vec![(second, 7)]),
            ]
        );
    }

    #[actix_web::test]
    async fn a_full_memory_of_unknown_keys_is_swept_at_most_once_a_second() {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        let settings = CacheSettings {
            negative_ttl: Duration::from_millis(100),
            negative_capacity: 2,
            ..CacheSettings::default()
        };
        let registry = WorkspaceRegistry::new(store, settings, None, RateClock::start(None));
        let hash = |n: u8| KeyHash::from_slice(&[n; 32]).unwrap();
        let unknown = |n: u8, now_ms: u64| {
            matches!(registry.lookup(&hash(n), now_ms), CacheLookup::KnownUnknown)
        };
        registry.remember_unknown(hash(1), NOW_MS);
        registry.remember_unknown(hash(2), NOW_MS + 50);
        // Full of live entries: swept, nothing freed, the third not remembered.
        registry.remember_unknown(hash(3), NOW_MS + 60);
        assert!(!unknown(3, NOW_MS + 60));
        // The first has expired, but the last sweep was 60 ms ago: no walk over them all.
        registry.remember_unknown(hash(4), NOW_MS + 120);
        assert!(!unknown(4, NOW_MS + 120));
        assert!(unknown(2, NOW_MS + 120));
        // A second later the sweep frees both, and there is room again.
        registry.remember_unknown(hash(5), NOW_MS + 1_060);
        assert!(unknown(5, NOW_MS + 1_060));
    }

    #[actix_web::test]
    async fn a_key_in_doubt_leaves_the_cache() {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        let registry = WorkspaceRegistry::new(
            store,
            CacheSettings::default(),
            None,
            RateClock::start(None),
        );
        let created_at = crate::clock::to_datetime(NOW_MS);
        let record = ApiKeyRecord {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            key_hash: KeyHash::from_slice(&[7; 32]).unwrap(),
            key_hint: "sp_live_...abcd".into(),
            label: "ci".into(),
            environment: Environment::Live,
            scopes: crate::domain::scope::ScopeSet::parse_canonical("checks:read").unwrap(),
            created_at,
            expires_at: crate::domain::key_record::expiry_for(created_at),
            revoked_at: None,
        };
        registry.key_changed(&record);
        assert!(matches!(
            registry.lookup(&record.key_hash, NOW_MS),
            CacheLookup::Hit(..)
        ));
        registry.key_in_doubt(&record.key_hash);
        assert!(matches!(
            registry.lookup(&record.key_hash, NOW_MS),
            CacheLookup::Miss
        ));
    }
}
