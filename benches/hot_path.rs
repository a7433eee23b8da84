//! Criterion benches of the hot path: each piece, and the whole in-process verification of
//! a cached key (rate-limit decision and audit hand-off included). Target: under 2 µs.
//!
//! `cargo bench --bench hot_path`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use std::hint::black_box;

/// The server's allocator (see `src/main.rs`), so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use secrecy::ExposeSecret;
use statuspulse_auth::actors::rate_journal::RateJournal;
use statuspulse_auth::actors::{CacheSettings, WorkspaceRegistry};
use statuspulse_auth::domain::api_key::{generate_key, parse_key, Environment};
use statuspulse_auth::domain::audit::{AuditEvent, CredentialType};
use statuspulse_auth::domain::audit_codec::EncodedEvents;
use statuspulse_auth::domain::hashing::KeyHasher;
use statuspulse_auth::domain::key_record::expiry_for;
use statuspulse_auth::domain::rate_limit::RateLimiter;
use statuspulse_auth::domain::route::{required_scope, RouteRequirement};
use statuspulse_auth::domain::scope::ScopeSet;
use statuspulse_auth::domain::workspace::Workspace;
use statuspulse_auth::metrics::{HotRoute, Metrics};
use statuspulse_auth::queue::audit_sink::AuditBatcher;
use statuspulse_auth::queue::audit_spool::AuditSpool;
use statuspulse_auth::queue::{Job, JobQueue, QueueError};
use statuspulse_auth::store::sqlite::SqliteStore;
use statuspulse_auth::store::{NewApiKey, SharedStore};
use statuspulse_auth::verify::{AccessRequest, Verifier};

fn pieces(c: &mut Criterion) {
    let hasher = KeyHasher::new([7; 32]);
    let key = generate_key(Environment::Live, &mut rand::thread_rng(), |k| {
        hasher.hash(k)
    });
    let key = key.secret.expose_secret().to_owned();
    c.bench_function("key_parse_and_checksum", |b| {
        b.iter(|| parse_key(black_box(&key)))
    });
    c.bench_function("keyed_blake3_hash", |b| {
        b.iter(|| hasher.hash(black_box(&key)))
    });
    c.bench_function("fresh_request_id", |b| {
        b.iter(statuspulse_auth::http::request_context::fresh_request_id)
    });
    c.bench_function("route_to_scope", |b| {
        b.iter(|| required_scope(black_box("GET"), black_box("/v1/checks/chk_123?page=2")))
    });
    // A limiter that is never full: the common decision. 1,200 per minute would fill within
    // a few iterations, so the clock advances 50 ms per decision (exactly the limit's pace).
    let mut limiter = RateLimiter::new(1_200);
    let mut now_ms = 1_800_000_000_000_u64;
    c.bench_function("rate_limit_decision", |b| {
        b.iter(|| {
            now_ms += 50;
            limiter.check(black_box(now_ms))
        })
    });
}

/// The whole verification of a cached key, with a real SQLite store and audit pipeline.
fn whole_verification(c: &mut Criterion) {
    let system = actix_rt::System::new();
    // As in the server, the audit batcher runs on its own thread (the server's main
    // arbiter), not on the thread that verifies.
    let audit_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (verifier, keys, _batcher) = system.block_on(setup(16_384, &audit_runtime));
    let verifier = Arc::new(verifier);
    let mut group = c.benchmark_group("verify");
    group.bench_function("cached_key_authz", |b| {
        b.iter_custom(|iterations| {
            let verifier = Arc::clone(&verifier);
            let keys = keys.clone();
            system.block_on(async move {
                let started = Instant::now();
                let mut denied = 0_u64;
                for i in 0..iterations {
                    // Spread over 16,384 workspaces (19.7 M allowed requests per minute), so
                    // the bench measures the allowed path, as under real traffic.
                    let key = &keys[(i % keys.len() as u64) as usize];
                    let granted = verifier
                        .verify(AccessRequest {
                            authorization: Some(key.as_bytes()),
                            method: "GET",
                            path: "/v1/checks/chk_1",
                            requirement: Ok(RouteRequirement::Scope(
                                statuspulse_auth::domain::scope::Scope::parse("checks:read")
                                    .unwrap(),
                            )),
                            request_id: "01a21ec3-5252-72e9-a4a8-b808d7aeb367",
                            client_addr: Some("127.0.0.1".to_owned()),
                            route: HotRoute::Authz,
                        })
                        .await;
                    denied += u64::from(black_box(granted.is_err()));
                }
                let elapsed = started.elapsed();
                assert_eq!(denied, 0, "the bench must measure granted requests");
                elapsed
            })
        })
    });
    // The baseline, measured in the same run so that the ratio survives a noisy machine:
    // the least a cached-key check can do, one lookup of the presented header in a map.
    let naive: std::collections::HashMap<String, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    group.bench_function("baseline_plain_map_lookup", |b| {
        let mut i = 0_usize;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(naive.get(black_box(keys[i].as_str())))
        })
    });
    group.finish();
}

/// A verifier with `workspaces` workspaces of one cached live key each; returns the keys as
/// `Authorization` header values.
async fn setup(
    workspaces: usize,
    audit_runtime: &tokio::runtime::Runtime,
) -> (Verifier, Vec<String>, AuditBatcher) {
    let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.migrate().await.unwrap();
    let metrics = Arc::new(Metrics::default());
    // The audit spool, channel and batcher are the real ones (the spool in a temporary
    // directory: one copy into a mapped file per event); the jobs they publish are dropped, so that this
    // bench measures the hand-off and not the audit log's write rate, which `audit_ingest`
    // measures on its own.
    let spool_dir =
        std::env::temp_dir().join(format!("statuspulse-bench-spool-{}", uuid::Uuid::now_v7()));
    let (spool, leftovers) = AuditSpool::open(&spool_dir).unwrap();
    let (sink, batcher) = {
        let _on_audit_runtime = audit_runtime.enter();
        AuditBatcher::start(
            Arc::new(DroppedJobs),
            Arc::clone(&metrics),
            Arc::new(spool),
            leftovers,
        )
    };
    let hasher = KeyHasher::new([7; 32]);
    // The rate journal is the real one too: one store into a mapped file per counted request.
    let (rate_journal, _) = RateJournal::open(&spool_dir.join("rate-limits")).unwrap();
    let registry = WorkspaceRegistry::new(
        Arc::clone(&store),
        CacheSettings {
            key_ttl: Duration::from_secs(3600),
            ..Default::default()
        },
        Some(Arc::new(rate_journal)),
        statuspulse_auth::clock::RateClock::start(None),
    );
    let verifier = Verifier::new(hasher.clone(), registry, sink, metrics);
    let mut headers = Vec::new();
    let now = Utc::now();
    for i in 0..workspaces {
        let workspace = Workspace {
            id: format!("ws_{i:032x}"),
            name: format!("bench {i}"),
            created_at: now,
        };
        store.create_workspace(&workspace).await.unwrap();
        let generated = generate_key(Environment::Live, &mut rand::thread_rng(), |k| {
            hasher.hash(k)
        });
        let key = NewApiKey {
            id: format!("key_{i:032x}"),
            workspace_id: workspace.id.clone(),
            key_hash: generated.hash,
            key_hint: generated.hint.clone(),
            label: "bench".into(),
            environment: Environment::Live,
            scopes: ScopeSet::parse(["checks:read"]).unwrap(),
            created_at: now,
            expires_at: expiry_for(now),
        };
        store.insert_api_key(&key, 2, now).await.unwrap();
        let header = format!("Bearer {}", generated.secret.expose_secret());
        // The first verification loads the key into the cache.
        verifier
            .verify(AccessRequest {
                authorization: Some(header.as_bytes()),
                method: "GET",
                path: "/v1/me",
                requirement: Ok(RouteRequirement::NoScope),
                request_id: "warmup",
                client_addr: None,
                route: HotRoute::Me,
            })
            .await
            .map_err(|d| format!("{d:?}"))
            .unwrap();
        headers.push(header);
    }
    // Let the workspace actors run their `started` hook before measuring.
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    (verifier, headers, batcher)
}

/// A queue that takes every job and does nothing with it (bench harness only).
struct DroppedJobs;

#[async_trait::async_trait]
impl JobQueue for DroppedJobs {
    async fn publish(&self, _job: Job) -> Result<(), QueueError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Audit-log write rate: batches into an SQLite file
/// in WAL mode, as in the embedded default. Reported per batch; divide by 500 per event.
fn audit_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("statuspulse-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap());
    runtime.block_on(store.migrate()).unwrap();
    let template = AuditEvent {
        id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        workspace_id: Arc::from("ws_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa"),
        credential_type: CredentialType::ApiKey,
        credential_id: Arc::from("key_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa"),
        key_label: Some(Arc::from("deploy-pipeline-prod")),
        app_name: None,
        method: "GET".into(),
        path: "/v1/checks/chk_1".into(),
        scope: Some("checks:read".into()),
        status: 200,
        error_code: None,
        request_id: "01a21ec3-5252-72e9-a4a8-b808d7aeb367".into(),
        client_addr: Some("127.0.0.1".into()),
    };
    let workspaces: Vec<Arc<str>> = (0..5_000)
        .map(|i| Arc::from(format!("ws_{i:032x}")))
        .collect();
    let mut group = c.benchmark_group("audit_ingest");
    // 500: a quiet server's batch; 5,000: the batcher's maximum, reached under load.
    for batch_size in [500_usize, 5_000] {
        group.throughput(criterion::Throughput::Elements(batch_size as u64));
        group.bench_function(format!("sqlite_batch_of_{batch_size}"), |b| {
            b.iter_batched(
                || {
                    // Events of many workspaces, as under real traffic (5,000 active).
                    let batch: Vec<AuditEvent> = (0..batch_size)
                        .map(|_| AuditEvent {
                            id: uuid::Uuid::now_v7(),
                            workspace_id: Arc::clone(
                                &workspaces[rand::random::<usize>() % workspaces.len()],
                            ),
                            ..template.clone()
                        })
                        .collect();
                    Arc::new(EncodedEvents::from_events(&batch))
                },
                |batch| runtime.block_on(store.insert_audit_events(batch)).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pieces, whole_verification, audit_ingest);
criterion_main!(benches);
