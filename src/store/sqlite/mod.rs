//! The embedded store: SQLite through rusqlite, a writing connection and two reading ones
//! (one for the audit log's queries), each behind a mutex, every call on the blocking pool
//! but the audit log's writes, which run on a thread of lower priority (`background`).
//! SQLite serialises writers anyway, and the hot path only reaches storage on a cache
//! miss, so a few connections are enough for the embedded default.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

mod audit_log;
mod background;

use self::audit_log::AuditLog;
use self::background::BackgroundThread;
use super::deadline::Deadlines;
use super::migrations::SQLITE as MIGRATIONS;
use super::{
    change_time, grants_the_same, saved_rate_limit, Conflict, Entity, NewApiKey, NewUser,
    SavedRateLimit, Store, StoreError, KEY_COLUMNS,
};
use crate::domain::api_key::Environment;
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::audit_codec::EncodedEvents;
use crate::domain::hashing::KeyHash;
use crate::domain::key_record::ApiKeyRecord;
use crate::domain::rate_limit::encode_counts;
use crate::domain::scope::ScopeSet;
use crate::domain::workspace::{Membership, Role, User, Workspace};

const AUDIT_WRITER: &str = "sqlite-audit-writer";

/// Three connections: one writes, two read. In WAL mode a reader never waits for the
/// writer, so a key-cache miss or an audit-log query is not stuck behind a large audit-log
/// commit; and audit-log queries have a reader of their own, so that one that walks a
/// busy workspace's whole log (seconds) does not hold the key-cache misses, the admin
/// reads and `/readyz` behind it.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    /// Opened with `query_only`: it cannot write even by mistake.
    reader: Arc<Mutex<Connection>>,
    /// The audit log's reader, `query_only` too.
    audit_reader: Arc<Mutex<Connection>>,
    /// Used only by the writer, under the writer's lock.
    audit_log: Arc<Mutex<AuditLog>>,
    /// Where the audit log is written.
    audit_writer: BackgroundThread,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        restrict_to_owner(path).map_err(|e| StoreError::Internal(e.into()))?;
        let writer = SqliteStore::configure(Connection::open(path).map_err(sqlite_error)?)?;
        let open_reader = || -> Result<Connection, StoreError> {
            let reader = SqliteStore::configure(Connection::open(path).map_err(sqlite_error)?)?;
            // Point lookups and paged queries: a small page cache is enough, and every MiB
            // here counts against the process's memory next to the key cache.
            reader
                .execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -2048;")
                .map_err(sqlite_error)?;
            Ok(reader)
        };
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(open_reader()?)),
            audit_reader: Arc::new(Mutex::new(open_reader()?)),
            audit_log: Arc::new(Mutex::new(AuditLog::new())),
            audit_writer: BackgroundThread::start(AUDIT_WRITER)?,
        })
    }

    /// A private in-memory database, for tests and benches. One connection serves both roles:
    /// a second connection to `:memory:` would be another database.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Arc::new(Mutex::new(SqliteStore::configure(
            Connection::open_in_memory().map_err(sqlite_error)?,
        )?));
        Ok(SqliteStore {
            writer: Arc::clone(&conn),
            reader: Arc::clone(&conn),
            audit_reader: conn,
            audit_log: Arc::new(Mutex::new(AuditLog::new())),
            audit_writer: BackgroundThread::start(AUDIT_WRITER)?,
        })
    }

    fn configure(conn: Connection) -> Result<Connection, StoreError> {
        conn.execute_batch(
            // WAL: readers never wait for the writer. NORMAL: fsync at checkpoints, not per
            // commit: a process crash loses nothing, a power cut the last commits. 64 KiB
            // pages (for a new database; an existing one keeps its size): the audit log is
            // written as large blobs, and every page costs system calls, to the WAL and again
            // at the checkpoint (measured at full load: ≈2 µs less system time per request
            // than with 4 KiB pages, one run each). A 16 MiB page cache; a checkpoint every 640 pages (40 MiB).
            "PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 640;",
        )
        .map_err(sqlite_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite_error)?;
        Ok(conn)
    }

    /// Runs `work` on the writing connection, on the blocking pool.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.writer), work).await
    }

    /// Runs `work` on the reading connection, on the blocking pool.
    async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.reader), work).await
    }
}

async fn run_blocking<T, F>(conn: Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || work(&mut conn.lock()))
        .await
        .map_err(|e| StoreError::Internal(anyhow!("sqlite task failed: {e}")))?
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .map_err(sqlite_error)?;
            for migration in MIGRATIONS {
                let applied: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                        [migration.version],
                        |row| row.get(0),
                    )
                    .map_err(sqlite_error)?;
                if applied {
                    continue;
                }
                tx.execute_batch(migration.sql).map_err(sqlite_error)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![
                        migration.version,
                        migration.name,
                        Utc::now().timestamp_millis()
                    ],
                )
                .map_err(sqlite_error)?;
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "applied migration"
                );
            }
            // Version 3 changed how the audit log is stored; its rows move in Rust.
            let moved = audit_log::convert_version_2_tables(&tx)?;
            if moved > 0 {
                tracing::info!(events = moved, "moved the audit log into chunks");
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sqlite_error)
        })
        .await
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        let ws = workspace.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![ws.id, ws.name, ws.created_at.timestamp_millis()],
            )
            .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |conn| {
            conn.query_row(
                "SELECT id, name, created_at FROM workspaces WHERE id = ?1",
                [&id],
                |row| {
                    Ok(Workspace {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: from_millis(row.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(sqlite_error)
        })
        .await
    }

    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            ensure_workspace(&tx, &key.workspace_id)?;
            let now = change_time(now);
            if count_active(&tx, &key, None, now)? >= max_active {
                return Err(StoreError::Conflict(Conflict::TooManyActiveKeys));
            }
            insert_key(&tx, &key)?;
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn rotate_api_key(
        &self,
        workspace_id: &str,
        old_id: &str,
        replacement: &NewApiKey,
        grace: chrono::Duration,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let (ws, old_id, key) = (
            workspace_id.to_owned(),
            old_id.to_owned(),
            replacement.clone(),
        );
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let now = change_time(now);
            let old_revoked_at = now + grace;
            let old = select_key(&tx, &ws, &old_id)?.ok_or(StoreError::NotFound(Entity::ApiKey))?;
            if old.status_at(now) != crate::domain::key_record::KeyStatus::Active {
                return Err(StoreError::Conflict(Conflict::KeyNotActive));
            }
            // The old key counts while its grace period lasts: with a grace period the
            // replacement needs room beside it.
            let ending_now = (old_revoked_at <= now).then_some(old_id.as_str());
            if count_active(&tx, &key, ending_now, now)? >= max_active {
                return Err(StoreError::Conflict(Conflict::TooManyActiveKeys));
            }
            insert_key(&tx, &key)?;
            tx.execute(
                // A key already in a grace period keeps the earlier end: rotating again may
                // shorten its life, never extend it.
                "UPDATE api_keys SET revoked_at = MIN(COALESCE(revoked_at, ?3), ?3)
                 WHERE workspace_id = ?1 AND id = ?2",
                params![ws, old_id, old_revoked_at.timestamp_millis()],
            )
            .map_err(sqlite_error)?;
            let old = select_key(&tx, &ws, &old_id)?.ok_or(StoreError::NotFound(Entity::ApiKey))?;
            tx.commit().map_err(sqlite_error)?;
            Ok(old)
        })
        .await
    }

    async fn list_api_keys(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let (ws, after) = (
            workspace_id.to_owned(),
            after.unwrap_or_default().to_owned(),
        );
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(sqlite_error)?;
            let rows = stmt
                .query_map(params![ws, after, limit], key_from_row)
                .map_err(sqlite_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
        })
        .await
    }

    async fn get_api_key(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let (ws, id) = (workspace_id.to_owned(), id.to_owned());
        self.with_reader(move |conn| select_key(conn, &ws, &id))
            .await
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let (ws, id) = (workspace_id.to_owned(), id.to_owned());
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let at = change_time(now);
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?3
                 WHERE workspace_id = ?1 AND id = ?2 AND (revoked_at IS NULL OR revoked_at > ?3)",
                params![ws, id, at.timestamp_millis()],
            )
            .map_err(sqlite_error)?;
            let key = select_key(&tx, &ws, &id)?.ok_or(StoreError::NotFound(Entity::ApiKey))?;
            tx.commit().map_err(sqlite_error)?;
            Ok(key)
        })
        .await
    }

    async fn find_api_key_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = *hash;
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"
                ))
                .map_err(sqlite_error)?;
            stmt.query_row([&hash.0[..]], key_from_row)
                .optional()
                .map_err(sqlite_error)
        })
        .await
    }

    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let user = user.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO users (id, email, name, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.id,
                    user.email,
                    user.name,
                    user.password_hash,
                    user.created_at.timestamp_millis()
                ],
            )
            .map_err(|e| match constraint_violation(&e) {
                true => StoreError::Conflict(Conflict::EmailTaken),
                false => sqlite_error(e),
            })?;
            Ok(User {
                id: user.id,
                email: user.email,
                name: user.name,
                created_at: user.created_at,
            })
        })
        .await
    }

    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        let (ws, user) = (workspace_id.to_owned(), user_id.to_owned());
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            ensure_workspace(&tx, &ws)?;
            let user_exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                    [&user],
                    |r| r.get(0),
                )
                .map_err(sqlite_error)?;
            if !user_exists {
                return Err(StoreError::NotFound(Entity::User));
            }
            tx.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![ws, user, role.as_str(), now.timestamp_millis()],
            )
            .map_err(|e| match constraint_violation(&e) {
                true => StoreError::Conflict(Conflict::AlreadyMember),
                false => sqlite_error(e),
            })?;
            tx.commit().map_err(sqlite_error)?;
            Ok(Membership {
                workspace_id: ws,
                user_id: user,
                role,
                created_at: now,
            })
        })
        .await
    }

    async fn save_rate_limits(&self, limits: &[SavedRateLimit]) -> Result<(), StoreError> {
        let limits = limits.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(sqlite_error)?;
            tx.execute("DELETE FROM rate_limit_counts", [])
                .map_err(sqlite_error)?;
            {
                let mut insert = tx
                    .prepare(
                        "INSERT INTO rate_limit_counts (workspace_id, environment, counts)
                         VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sqlite_error)?;
                for limit in &limits {
                    insert
                        .execute(params![
                            limit.workspace_id,
                            limit.environment.as_str(),
                            encode_counts(&limit.counts)
                        ])
                        .map_err(sqlite_error)?;
                }
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn saved_rate_limits(&self) -> Result<Vec<SavedRateLimit>, StoreError> {
        self.with_conn(|conn| {
            let rows = {
                let mut select = conn
                    .prepare("SELECT workspace_id, environment, counts FROM rate_limit_counts")
                    .map_err(sqlite_error)?;
                let rows = select
                    .query_map([], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(sqlite_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)?
            };
            rows.into_iter()
                .map(|(workspace, environment, counts)| {
                    saved_rate_limit(workspace, &environment, &counts)
                })
                .collect()
        })
        .await
    }

    async fn clear_saved_rate_limits(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            conn.execute("DELETE FROM rate_limit_counts", [])
                .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }

    async fn record_hashing_key_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<String, StoreError> {
        let fingerprint = fingerprint.to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO hashing_key_fingerprint (fingerprint) VALUES (?1)",
                [&fingerprint],
            )
            .map_err(sqlite_error)?;
            conn.query_row(
                "SELECT fingerprint FROM hashing_key_fingerprint",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite_error)
        })
        .await
    }

    async fn insert_audit_events(&self, events: Arc<EncodedEvents>) -> Result<(), StoreError> {
        let (log, writer) = (Arc::clone(&self.audit_log), Arc::clone(&self.writer));
        self.audit_writer
            .run(move || {
                let mut conn = writer.lock();
                log.lock().append(&mut conn, &events)
            })
            .await
    }

    async fn query_audit_events(
        &self,
        workspace_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (workspace_id, query) = (workspace_id.to_owned(), query.clone());
        // The deadline counts from here: waiting for the connection is part of the query.
        let deadline = Instant::now() + Deadlines::default().bulk;
        run_blocking(Arc::clone(&self.audit_reader), move |conn| {
            audit_log::query(conn, &workspace_id, &query, deadline)
        })
        .await
    }
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let hash: Vec<u8> = row.get(2)?;
    let environment: String = row.get(5)?;
    let scopes: String = row.get(6)?;
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        key_hash: KeyHash::from_slice(&hash).ok_or_else(|| corrupt(2, "key_hash length"))?,
        key_hint: row.get(3)?,
        label: row.get(4)?,
        environment: Environment::parse(&environment).ok_or_else(|| corrupt(5, "environment"))?,
        scopes: ScopeSet::parse_canonical(&scopes).map_err(|_| corrupt(6, "scopes"))?,
        created_at: from_millis(row.get(7)?),
        expires_at: from_millis(row.get(8)?),
        revoked_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
    })
}

fn select_key(conn: &Connection, ws: &str, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 AND id = ?2"
        ))
        .map_err(sqlite_error)?;
    stmt.query_row([ws, id], key_from_row)
        .optional()
        .map_err(sqlite_error)
}

fn ensure_workspace(conn: &Connection, ws: &str) -> Result<(), StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = ?1)",
            [ws],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound(Entity::Workspace))
    }
}

fn count_active(
    conn: &Connection,
    key: &NewApiKey,
    excluding: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT scopes FROM api_keys
             WHERE workspace_id = ?1 AND environment = ?2
               AND (revoked_at IS NULL OR revoked_at > ?3) AND expires_at > ?3
               AND id <> COALESCE(?4, '')",
        )
        .map_err(sqlite_error)?;
    let rows = statement
        .query_map(
            params![
                key.workspace_id,
                key.environment.as_str(),
                now.timestamp_millis(),
                excluding
            ],
            |row| row.get::<_, String>(0),
        )
        .map_err(sqlite_error)?;
    let mut same = 0;
    for scopes in rows {
        if grants_the_same(&scopes.map_err(sqlite_error)?, key.scopes)? {
            same += 1;
        }
    }
    Ok(same)
}

fn insert_key(conn: &Connection, key: &NewApiKey) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_keys (id, workspace_id, key_hash, key_hint, label, environment, scopes,
                               created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            key.id,
            key.workspace_id,
            &key.key_hash.0[..],
            key.key_hint,
            key.label,
            key.environment.as_str(),
            key.scopes.to_canonical_string(),
            key.created_at.timestamp_millis(),
            key.expires_at.timestamp_millis(),
        ],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

/// Creates the database file if needed, and makes it readable and writable by this user
/// only, before SQLite opens it: it holds password and key hashes. SQLite gives the
/// write-ahead log and its index the database file's permissions.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // A file made by an earlier version (or a wider umask) is narrowed too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    options.open(path).map(drop)
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        anyhow!("corrupt {what}").into(),
    )
}

fn constraint_violation(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// The one mapping of SQLite errors: a busy, locked or unopenable database, or a full or
/// failing disk, means "try again later" (503, jobs retry); anything else, errors without an
/// SQLite code included (a value that does not convert: corrupt data), is a bug, not an
/// outage.
fn sqlite_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        // A full or failing disk is the database's file system, not the request nor the
        // engine: an outage to retry after, as PostgreSQL's class 53 (disk full) is.
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(error.into()),
        _ => StoreError::Internal(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    // On purpose: the guard stands for a query under way on another thread.
    #[allow(clippy::await_holding_lock)]
    async fn an_audit_log_query_under_way_does_not_hold_key_lookups() {
        let dir = std::env::temp_dir().join(format!("sp-sqlite-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("test.db")).unwrap();
        store.migrate().await.unwrap();
        // A long audit-log query holds its connection for as long as it walks.
        let query_under_way = store.audit_reader.lock();
        // Bounded only so that a regression fails instead of hanging: this is no timing.
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store.find_api_key_by_hash(&KeyHash([1; 32])),
        )
        .await;
        drop(query_under_way);
        assert!(matches!(lookup, Ok(Ok(None))));
        assert!(store.ping().await.is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
