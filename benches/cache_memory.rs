//! Memory of the key cache: 100,000 cached keys across 10,000 workspaces (one actor each)
//! must stay under 100 MB resident for the whole process.
//!
//! `cargo bench --bench cache_memory` — seeds an SQLite file with the keys, loads every key
//! into the cache the way a cache miss does, and prints the resident set size before and
//! after. Exits non-zero if the cache does not hold every key or the process is over 100 MB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::Utc;
use statuspulse_auth::actors::{CacheSettings, WorkspaceRegistry};
use statuspulse_auth::domain::api_key::{generate_key, Environment};
use statuspulse_auth::domain::hashing::{KeyHash, KeyHasher};
use statuspulse_auth::domain::key_record::expiry_for;
use statuspulse_auth::domain::scope::{ScopeSet, ALL_SCOPES};
use statuspulse_auth::domain::workspace::Workspace;
use statuspulse_auth::store::sqlite::SqliteStore;
use statuspulse_auth::store::{NewApiKey, SharedStore};

/// The server's allocator (see `src/main.rs`), so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKSPACES: usize = 10_000;
const KEYS_PER_WORKSPACE: usize = 10;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing. Both run it.
    let dir = std::env::temp_dir().join(format!("statuspulse-memory-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    // The server's runtime: its bounded blocking pool is part of what keeps memory down.
    let runtime = statuspulse_auth::startup::main_runtime().unwrap();
    let system = actix_rt::System::with_tokio_rt(move || runtime);
    let (before, after, keys, actors) = system.block_on(async {
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.join("memory.db")).unwrap());
        store.migrate().await.unwrap();
        let hasher = KeyHasher::new([3; 32]);
        let now = Utc::now();
        let mut hashes: Vec<KeyHash> = Vec::with_capacity(WORKSPACES * KEYS_PER_WORKSPACE);
        for w in 0..WORKSPACES {
            let workspace = Workspace {
                id: format!("ws_{w:032x}"),
                name: format!("workspace {w}"),
                created_at: now,
            };
            store.create_workspace(&workspace).await.unwrap();
            for (k, scope) in ALL_SCOPES.iter().enumerate().take(KEYS_PER_WORKSPACE) {
                // A different scope set per key, so the two-active-keys rule allows ten.
                let mut scopes = ScopeSet::EMPTY;
                scopes.insert(*scope);
                let generated = generate_key(Environment::Live, &mut rand::thread_rng(), |s| {
                    hasher.hash(s)
                });
                let key = NewApiKey {
                    id: format!("key_{:032x}", w * KEYS_PER_WORKSPACE + k),
                    workspace_id: workspace.id.clone(),
                    key_hash: generated.hash,
                    key_hint: generated.hint,
                    label: format!("deploy-pipeline-{k}"),
                    environment: Environment::Live,
                    scopes,
                    created_at: now,
                    expires_at: expiry_for(now),
                };
                store.insert_api_key(&key, 2, now).await.unwrap();
                hashes.push(generated.hash);
            }
        }
        let registry = WorkspaceRegistry::new(
            Arc::clone(&store),
            CacheSettings::default(),
            None,
            statuspulse_auth::clock::RateClock::start(None),
        );
        let before = resident_kib();
        let now_ms = statuspulse_auth::clock::now_ms();
        for hash in &hashes {
            registry
                .load(hash, now_ms)
                .await
                .unwrap()
                .expect("every key is found");
        }
        // Let every actor run its `started` hook, as it would in the server.
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        (
            before,
            resident_kib(),
            registry.cached_keys(),
            registry.live_actors(),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!("cached keys: {keys}, workspace actors: {actors}");
    println!("resident before caching: {:.1} MB", before as f64 / 1024.0);
    println!(
        "resident after caching:  {:.1} MB (cache: {:.1} MB, {:.0} bytes per key)",
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / keys as f64
    );
    assert_eq!(keys, WORKSPACES * KEYS_PER_WORKSPACE);
    assert_eq!(actors, WORKSPACES);
    // The target of issue #2. Resident memory, unlike time, does not depend on machine load.
    assert!(after < 100 * 1024, "over the 100 MB target");
}
