//! Builds the engine from settings: storage, queue, actors, both listeners.

use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use secrecy::ExposeSecret;

use crate::actors::rate_journal::{Leftovers, RateJournal};
use crate::actors::{CacheSettings, WorkspaceRegistry};
use crate::clock::RateClock;
use crate::config::{ConfigError, Settings};
use crate::data_dir_lock::{lock_data_dir, DataDirLock};
use crate::data_dir_store;
use crate::domain::hashing::KeyHasher;
use crate::error_chain::error_chain;
use crate::http::server::{self, ServerSettings};
use crate::http::state::AppState;
use crate::http::{admin, public};
use crate::jobs::JobContext;
use crate::metrics::{Listener, Metrics};
use crate::queue::audit_sink::AuditBatcher;
use crate::queue::audit_spool::{self, AuditSpool};
use crate::queue::dead_letters::DeadLetters;
use crate::queue::in_process::{resubmit_dead_letters, InProcessQueue};
use crate::queue::JobQueue;
use crate::secrets::{self, AdminToken};
use crate::store::deadline::WithDeadlines;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SharedStore, Store};
use crate::verify::Verifier;

/// Under the data dir: the audit events not yet stored (see `queue::audit_spool`).
const AUDIT_SPOOL_DIR: &str = "audit-spool";

/// Under the data dir: the rate limiters' counts, kept through a crash (see
/// `actors::rate_journal`).
const RATE_JOURNAL_DIR: &str = "rate-limits";
/// How often the rate journal's files are checked for having been deleted.
const RATE_JOURNAL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// In the rate journal's directory: the origin of the limiters' clock (`RateClock`).
const RATE_CLOCK_ORIGIN_FILE: &str = "clock-origin";

/// Under the data dir: jobs that failed for good (see `queue::dead_letters`).
const DEAD_LETTERS_DIR: &str = "dead-letters";

/// The SQLite file of the embedded default, inside the data directory.
pub const SQLITE_FILE: &str = "statuspulse.db";

/// Most threads of each runtime's blocking pool (Tokio's default is 512, which actix-web
/// divides among its workers). Blocking work here is SQLite's (two connections, so more than
/// two threads only wait on their locks), the audit spool's file upkeep and password
/// hashing. Every thread the pool starts keeps its own allocator heap: with the default, a
/// burst of key-cache misses started dozens of threads that each sat on a lock, and the
/// process's resident memory with 100,000 cached keys varied from 94 to 113 MB between runs
/// of `cargo bench --bench cache_memory`; with 8, 85.5 MB every time.
const BLOCKING_THREADS_PER_RUNTIME: usize = 8;

/// The runtime of the main thread: the audit batcher, the job queue and, on SQLite, the
/// audit writes run on it. (The HTTP workers run their own, configured in `build`.)
pub fn main_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_PER_RUNTIME)
        .build()
}

/// A built engine, listening but not yet serving until [`Application::run_until_stopped`].
pub struct Application {
    public_port: u16,
    admin_port: u16,
    public_server: Server,
    admin_server: Server,
    batcher: AuditBatcher,
    queue: Arc<InProcessQueue>,
    jobs: JobContext,
    registry: Arc<WorkspaceRegistry>,
    rate_journal: Arc<RateJournal>,
    /// The admin token generated on this start, to be printed once; `None` if it existed.
    pub generated_admin_token: Option<String>,
    pub store: SharedStore,
    /// Released when `run_until_stopped` returns, after the last audit event is written.
    _data_dir_lock: DataDirLock,
}

/// Stops a running application from elsewhere (tests, signal handlers).
#[derive(Clone)]
pub struct ApplicationHandle {
    public: ServerHandle,
    admin: ServerHandle,
}

impl ApplicationHandle {
    /// Stops accepting, lets requests in flight finish (when `graceful`), then the
    /// application flushes its audit events and `run_until_stopped` returns.
    pub async fn stop(&self, graceful: bool) {
        futures_util::future::join(self.public.stop(graceful), self.admin.stop(graceful)).await;
    }
}

impl Application {
    /// The engine as `serve` runs it; `log_lines_dropped` is the log writer's count, shown
    /// in `/metrics`.
    pub async fn build(
        settings: Settings,
        log_lines_dropped: Arc<AtomicU64>,
    ) -> Result<Application, ConfigError> {
        Application::build_with(settings, CacheSettings::default(), log_lines_dropped).await
    }

    /// For tests: the cache's settings chosen, and no log writer of the process's own.
    pub async fn build_with_cache(
        settings: Settings,
        cache: CacheSettings,
    ) -> Result<Application, ConfigError> {
        Application::build_with(settings, cache, Arc::default()).await
    }

    async fn build_with(
        settings: Settings,
        cache: CacheSettings,
        log_lines_dropped: Arc<AtomicU64>,
    ) -> Result<Application, ConfigError> {
        // Before anything is created or migrated: this setting cannot work yet.
        if settings.amqp_url.is_some() {
            return Err(ConfigError::new(
                settings.place("amqp_url"),
                "the RabbitMQ transport is not part of this build yet; unset it to use the in-process queue",
            ));
        }
        create_data_dir(&settings)?;
        let data_dir_lock = lock_data_dir(&settings.data_dir)
            .map_err(|problem| ConfigError::new(settings.place("data_dir"), problem))?;
        let secret_error = |e: secrets::SecretFileError| {
            ConfigError::new(settings.place("data_dir"), e.to_string())
        };
        let hashing_key = match settings.hashing_key_bytes() {
            Some(key) => key,
            None => {
                secrets::load_or_create_hashing_key(&settings.data_dir).map_err(secret_error)?
            }
        };
        // A generated token's hash is kept only at the end, once the start has worked.
        let (admin_token, generated_admin_token) = match &settings.admin_token {
            Some(token) => (AdminToken::from_token(token.expose_secret()), None),
            None => {
                match secrets::stored_admin_token_hash(&settings.data_dir).map_err(secret_error)? {
                    Some(hash) => (AdminToken::from_hash(hash), None),
                    None => {
                        let token = secrets::new_admin_token();
                        (AdminToken::from_token(&token), Some(token))
                    }
                }
            }
        };
        // Before the store is opened: a missing URL would create an embedded database.
        data_dir_store::check_and_record(&settings.data_dir, settings.store_kind(), || {
            Ok(
                audit_spool::holds_events(&settings.data_dir.join(AUDIT_SPOOL_DIR))?
                    || DeadLetters::any_in(&settings.data_dir.join(DEAD_LETTERS_DIR))?,
            )
        })
        .map_err(|problem| ConfigError::new(settings.place("data_dir"), problem))?;
        let store = open_store(&settings).await?;
        store.migrate().await.map_err(|e| {
            ConfigError::new(
                settings.store_place(),
                format!("migrations failed: {}", error_chain(&e)),
            )
        })?;

        let hasher = KeyHasher::new(hashing_key);
        check_hashing_key(&store, &hasher, &settings).await?;

        let metrics = Arc::new(Metrics::with_log_lines_dropped(log_lines_dropped));
        let jobs = JobContext::new(Arc::clone(&store), Arc::clone(&metrics));
        let dead_letters =
            DeadLetters::open(&settings.data_dir.join(DEAD_LETTERS_DIR)).map_err(|e| {
                ConfigError::new(
                    settings.place("data_dir"),
                    format!("cannot open the dead letters: {e}"),
                )
            })?;
        let queue = InProcessQueue::start(jobs.clone(), Some(dead_letters.clone()));
        let (spool, leftovers) = AuditSpool::open(&settings.data_dir.join(AUDIT_SPOOL_DIR))
            .map_err(|e| {
                ConfigError::new(
                    settings.place("data_dir"),
                    format!("cannot open the audit spool: {e}"),
                )
            })?;
        let (audit_sink, batcher) = AuditBatcher::start(
            Arc::clone(&queue) as Arc<dyn JobQueue>,
            Arc::clone(&metrics),
            Arc::new(spool),
            leftovers,
        );
        tokio::spawn(resubmit_dead_letters(
            Arc::clone(&queue),
            dead_letters,
            jobs.clone(),
        ));
        let (rate_journal, left_by_a_crash) =
            RateJournal::open(&settings.data_dir.join(RATE_JOURNAL_DIR)).map_err(|e| {
                ConfigError::new(
                    settings.place("data_dir"),
                    format!("cannot open the rate-limit journal: {e}"),
                )
            })?;
        let rate_journal = Arc::new(rate_journal);
        tokio::spawn(keep_rate_journal_files(Arc::downgrade(&rate_journal)));
        let rate_clock = RateClock::start(Some(
            &settings
                .data_dir
                .join(RATE_JOURNAL_DIR)
                .join(RATE_CLOCK_ORIGIN_FILE),
        ));
        let registry = WorkspaceRegistry::new(
            Arc::clone(&store),
            cache,
            Some(Arc::clone(&rate_journal)),
            rate_clock,
        );
        // Bound before the counts are carried over: a taken port, the likeliest failure of
        // a start, then fails before anything is moved (see below for the rest).
        let public_listener = bind(settings.place("public_addr"), settings.public_addr)?;
        let admin_listener = bind(settings.place("admin_addr"), settings.admin_addr)?;
        carry_over_rate_limits(&store, &registry, left_by_a_crash).await;
        // From here the counts of the run before live only in this run's journal slots,
        // which a dropped registry would free: a start that fails now keeps them for the
        // next one.
        let keep_counts_on_failure = |error: ConfigError| {
            rate_journal.keep_for_next_start();
            error
        };
        let state = web::Data::new(AppState {
            verifier: Verifier::new(
                hasher.clone(),
                Arc::clone(&registry),
                audit_sink,
                Arc::clone(&metrics),
            ),
            store: Arc::clone(&store),
            queue: Arc::clone(&queue) as Arc<dyn JobQueue>,
            registry: Arc::clone(&registry),
            hasher,
            metrics,
            admin_token: admin_token.clone(),
        });

        let public_port = local_port(&public_listener);
        let admin_port = local_port(&admin_listener);
        // Signals are `main`'s to handle (`ApplicationHandle::stop`): actix-web's own handling
        // treats Ctrl-C as a forced stop, and stops the whole runtime 300 ms after the first
        // listener is done, cutting off requests still in flight on the other.
        let public_server = server::serve(
            public_listener,
            ServerSettings {
                workers: settings.http_workers,
                max_blocking_threads: BLOCKING_THREADS_PER_RUNTIME,
                next_answer_within: settings.next_answer_within,
            },
            state.clone(),
            Listener::Public,
            public::routes,
        )
        .map_err(|e| ConfigError::new(settings.place("public_addr"), e.to_string()))
        .map_err(keep_counts_on_failure)?;
        let admin_server = server::serve(
            admin_listener,
            ServerSettings {
                workers: Some(1),
                max_blocking_threads: BLOCKING_THREADS_PER_RUNTIME,
                next_answer_within: settings.next_answer_within,
            },
            state,
            Listener::Admin,
            admin::routes,
        )
        .map_err(|e| ConfigError::new(settings.place("admin_addr"), e.to_string()))
        .map_err(keep_counts_on_failure)?;
        if generated_admin_token.is_some() {
            secrets::store_admin_token_hash(&settings.data_dir, admin_token.hash())
                .map_err(secret_error)
                .map_err(keep_counts_on_failure)?;
        }
        Ok(Application {
            public_port,
            admin_port,
            public_server,
            admin_server,
            batcher,
            queue,
            jobs,
            registry,
            rate_journal,
            generated_admin_token,
            store,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// For a start abandoned before it serves (the admin token could not be shown): the
    /// rate-limit counts carried over from the run before stay for the next start.
    pub fn keep_rate_counts_for_next_start(&self) {
        self.rate_journal.keep_for_next_start();
    }

    pub fn public_port(&self) -> u16 {
        self.public_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn handle(&self) -> ApplicationHandle {
        ApplicationHandle {
            public: self.public_server.handle(),
            admin: self.admin_server.handle(),
        }
    }

    /// Serves until both listeners stop (SIGTERM, Ctrl-C or a handle), then flushes every
    /// pending audit event to the audit log before returning.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let handle = self.handle();
        // Either listener stopping (a signal reaches both, a handle stops both) ends serving.
        let public = self.public_server;
        let admin = self.admin_server;
        let (public_result, admin_result) = futures_util::future::join(
            async {
                let result = public.await;
                handle.stop(true).await;
                result
            },
            admin,
        )
        .await;
        tracing::info!("listeners stopped; saving rate-limit counts and flushing audit events");
        save_rate_limits(&self.store, &self.registry, &self.rate_journal).await;
        self.jobs.begin_shutdown();
        self.batcher.flush_and_stop().await;
        self.queue.shutdown().await;
        tracing::info!("shutdown complete");
        public_result.and(admin_result)
    }
}

/// Gives each workspace the rate-limit counts the previous run left: saved to storage at a
/// graceful stop, or in the rate journal after a crash (`left_by_a_crash`), so that a
/// restart gives no workspace a fresh minute. Without them (a first start, storage failing
/// here) limiters start empty; that is logged, not fatal. Both sources are emptied only
/// after the registry has journalled the counts again: a crash before that finds them at
/// the next start.
async fn carry_over_rate_limits(
    store: &SharedStore,
    registry: &WorkspaceRegistry,
    mut left_by_a_crash: Leftovers,
) {
    let mut carried = std::mem::take(&mut left_by_a_crash.counts);
    if !carried.is_empty() {
        tracing::info!(
            limiters = carried.len(),
            "rate-limit counts recovered from the journal after a crash"
        );
    }
    let read_from_storage = match store.saved_rate_limits().await {
        Ok(saved) => {
            carried.extend(saved);
            true
        }
        Err(error) => {
            tracing::warn!(
                error = %error_chain(&error),
                "cannot read the saved rate-limit counts; limiters start without them"
            );
            false
        }
    };
    if !carried.is_empty() {
        tracing::info!(limiters = carried.len(), "rate-limit counts carried over");
        registry.carry_over(carried, registry.rate_now_ms());
    }
    if let Err(error) = left_by_a_crash.forget() {
        tracing::warn!(%error, "cannot delete the last run's rate-limit journal; the next start reads it again and merges it");
    }
    if read_from_storage {
        if let Err(error) = store.clear_saved_rate_limits().await {
            tracing::warn!(
                error = %error_chain(&error),
                "cannot delete the saved rate-limit counts; the next start reads them again and merges them"
            );
        }
    }
}

/// Every second, makes the rate journal's files again if they were deleted while the
/// server runs (`RateJournal::make_again_if_deleted`), on the blocking pool. Ends with the
/// journal.
async fn keep_rate_journal_files(journal: std::sync::Weak<RateJournal>) {
    let mut ticker = tokio::time::interval(RATE_JOURNAL_CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(journal) = journal.upgrade() else {
            return;
        };
        if let Err(error) =
            tokio::task::spawn_blocking(move || journal.make_again_if_deleted()).await
        {
            tracing::error!(%error, "the rate journal's check for deleted files failed");
        }
    }
}

/// Saves every live workspace's rate-limit counts for the next start (after the listeners
/// stopped, so that no request is counted after this), and then empties the rate journal,
/// which would otherwise give the next start the same counts twice. If storage refuses, the
/// journal keeps them, as after a crash.
async fn save_rate_limits(
    store: &SharedStore,
    registry: &WorkspaceRegistry,
    rate_journal: &RateJournal,
) {
    let limits = registry.rate_limits(registry.rate_now_ms());
    match store.save_rate_limits(&limits).await {
        Ok(()) => {
            tracing::info!(limiters = limits.len(), "rate-limit counts saved");
            if let Err(error) = rate_journal.discard() {
                tracing::warn!(%error, "cannot empty the rate-limit journal; the next start counts some requests twice");
            }
        }
        Err(error) => {
            rate_journal.keep_for_next_start();
            tracing::warn!(
                error = %error_chain(&error),
                "cannot save the rate-limit counts; the next start reads them from the journal"
            );
        }
    }
}

/// Refuses a hashing key other than the one the store's API keys were hashed with: with it,
/// every key would answer 401. Servers that share a database must share the key; the first
/// to start records its fingerprint.
async fn check_hashing_key(
    store: &SharedStore,
    hasher: &KeyHasher,
    settings: &Settings,
) -> Result<(), ConfigError> {
    let ours = hasher.fingerprint();
    let recorded = store
        .record_hashing_key_fingerprint(&ours)
        .await
        .map_err(|e| ConfigError::new(settings.store_place(), error_chain(&e)))?;
    if recorded == ours {
        return Ok(());
    }
    Err(ConfigError::new(
        settings.place("hashing_key"),
        "is not the key that this database's API keys were hashed with; every server sharing \
         a database must use the same one (the first server's, from its setting or from \
         hashing.key in its data dir)",
    ))
}

/// Opens the configured store and checks that it answers.
pub async fn open_store(settings: &Settings) -> Result<SharedStore, ConfigError> {
    match &settings.database_url {
        Some(url) => {
            let store = PostgresStore::connect(
                url.expose_secret(),
                settings.database_max_connections,
                settings.database_deadlines,
            )
            .map_err(|e| ConfigError::new(settings.place("database_url"), e.to_string()))?;
            // Over a network a database can stop answering without closing its connections.
            let store = WithDeadlines::new(store, settings.database_deadlines);
            store.ping().await.map_err(|e| {
                ConfigError::new(
                    settings.place("database_url"),
                    format!("cannot reach PostgreSQL: {}", error_chain(&e)),
                )
            })?;
            Ok(Arc::new(store))
        }
        None => {
            let path = settings.data_dir.join(SQLITE_FILE);
            create_data_dir(settings)?;
            let store = SqliteStore::open(&path).map_err(|e| {
                ConfigError::new(
                    settings.place("data_dir"),
                    format!("cannot open {}: {}", path.display(), error_chain(&e)),
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Creates the data dir if needed, readable by this user only: it holds the hashing key,
/// the admin token's hash and the database.
fn create_data_dir(settings: &Settings) -> Result<(), ConfigError> {
    let dir = &settings.data_dir;
    crate::private_dir::create(dir).map_err(|e| {
        ConfigError::new(
            settings.place("data_dir"),
            format!("cannot create {}: {e}", dir.display()),
        )
    })
}

fn bind(variable: String, addr: std::net::SocketAddr) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr)
        .map_err(|e| ConfigError::new(variable, format!("cannot listen on {addr}: {e}")))
}

fn local_port(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or(0)
}
