//! The production store: PostgreSQL through deadpool-postgres, prepared statements cached
//! per connection.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::deadline::{self, Deadlines};
use super::migrations::POSTGRES as MIGRATIONS;
use super::postgres_connect::ConnectionRuntime;
use super::postgres_tls::{take_tls_settings, TlsSetupError};
use super::{
    change_time, grants_the_same, saved_rate_limit, Conflict, Entity, NewApiKey, NewUser,
    SavedRateLimit, Store, StoreError, KEY_COLUMNS,
};
use crate::domain::api_key::Environment;
use crate::domain::audit::{AuditEvent, AuditQuery, CredentialType};
use crate::domain::audit_codec::EncodedEvents;
use crate::domain::hashing::KeyHash;
use crate::domain::key_record::{ApiKeyRecord, KeyStatus};
use crate::domain::rate_limit::encode_counts;
use crate::domain::scope::ScopeSet;
use crate::domain::workspace::{Membership, Role, User, Workspace};
use crate::error_chain::error_chain;

pub struct PostgresStore {
    pool: Pool,
    /// How long an audit-log query may run on the server (the session's limit is shorter).
    bulk_statement_timeout: Duration,
    /// Connections taken out of the pool past their deadline, until PostgreSQL is done with
    /// them (`Pooled`).
    set_aside: Arc<SetAside>,
    /// Where the pool's connections do their I/O (`postgres_connect`); after `pool`, so
    /// that the pool's connections go first.
    _connections: ConnectionRuntime,
}

/// How many connections are out of the pool and still open, at most as many as the pool
/// holds: a database whose writes hang (a synchronous standby gone) would otherwise have
/// each abandoned operation leave a connection open, until its `max_connections` ran out
/// for every client. Past that, abandoned connections go back to the pool, as before.
struct SetAside {
    open: AtomicUsize,
    max: usize,
}

impl SetAside {
    /// Takes a place, if there is one.
    fn admit(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// PostgreSQL's own limit on a statement: four fifths of the caller's deadline, so that a
/// statement held up on the server (a lock wait, a slow plan) is ended there, and undone,
/// before the caller gives up on it. A change refused that way was not made; one the
/// caller gave up on might still be, once the server gets to it.
fn statement_timeout(deadline: Duration) -> Duration {
    deadline * 4 / 5
}

/// A URL that cannot be used. The messages never contain the URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum BadDatabaseUrl {
    #[error("not a valid PostgreSQL URL: {0}")]
    Unparsable(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot start the thread of its connections: {0}")]
    Thread(#[source] std::io::Error),
}

impl PostgresStore {
    /// Builds a pool for `url`, with TLS as its `sslmode` and `sslrootcert` say
    /// ([`super::postgres_tls`]). Connects lazily: call [`Store::ping`] to check reachability.
    pub fn connect(
        url: &str,
        max_connections: usize,
        deadlines: Deadlines,
    ) -> Result<PostgresStore, BadDatabaseUrl> {
        let (url, tls) = take_tls_settings(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            // With its cause, which names the parameter ("invalid connection string: unknown
            // option `sslcert`"); neither quotes a value, so neither holds the password.
            .map_err(|e| BadDatabaseUrl::Unparsable(error_chain(&e)))?;
        config.ssl_mode(tls.mode.wire());
        // Set on each new connection rather than as a startup `options` parameter, which
        // connection poolers such as PgBouncer refuse; one in the URL's `options` wins.
        let set_statement_timeout = config
            .get_options()
            .is_none_or(|theirs| !theirs.contains("statement_timeout"))
            .then(|| {
                format!(
                    "SET statement_timeout = {}",
                    statement_timeout(deadlines.request).as_millis()
                )
            });
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let connections = ConnectionRuntime::start().map_err(BadDatabaseUrl::Thread)?;
        let manager = Manager::from_connect(
            config,
            connections.connector(tls.connector()?),
            manager_config,
        );
        let mut pool = Pool::builder(manager).max_size(max_connections);
        if let Some(sql) = set_statement_timeout {
            pool = pool.post_create(Hook::async_fn(move |client, _| {
                let sql = sql.clone();
                Box::pin(
                    async move { client.batch_execute(&sql).await.map_err(HookError::Backend) },
                )
            }));
        }
        let pool = pool
            .runtime(Runtime::Tokio1)
            // An outage must answer quickly with 503, not hang the caller.
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| BadDatabaseUrl::Unparsable(e.to_string()))?;
        Ok(PostgresStore {
            pool,
            bulk_statement_timeout: statement_timeout(deadlines.bulk),
            set_aside: Arc::new(SetAside {
                open: AtomicUsize::new(0),
                max: max_connections,
            }),
            _connections: connections,
        })
    }

    async fn client(&self) -> Result<Pooled, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(Pooled {
            client: Some(client),
            abandoned: deadline::abandoned_flag(),
            set_aside: Arc::clone(&self.set_aside),
        })
    }
}

/// A pooled connection that leaves the pool, instead of going back to it, when its
/// operation is abandoned past its deadline (while fewer connections than the pool holds
/// are set aside so, `SetAside`): PostgreSQL may still be working on what was
/// sent (an audit batch's inserts run on), and the next operation given this connection
/// would wait behind that work, past its own deadline (found by a black-box pass, 2
/// December: admin reads and `/readyz` answered 503 in bursts while a slow audit batch
/// was retried).
struct Pooled {
    client: Option<deadpool_postgres::Client>,
    /// The operation's (`deadline::abandoned_flag`); `None` outside a deadline.
    abandoned: Option<Arc<AtomicBool>>,
    set_aside: Arc<SetAside>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let abandoned = self
            .abandoned
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire));
        if !abandoned {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.set_aside.admit() {
            return;
        }
        let Some(client) = self.client.take() else {
            self.set_aside.release();
            return;
        };
        // Out of the pool; closed once PostgreSQL has answered everything sent on it
        // before (answers come in order), which frees its place.
        let client = deadpool_postgres::Object::take(client);
        let set_aside = Arc::clone(&self.set_aside);
        runtime.spawn(async move {
            let _ = client.simple_query("").await;
            drop(client);
            set_aside.release();
        });
    }
}

// The connection is taken out only in `drop`, after which nothing can dereference it: the
// `Option` is there for `drop` to move it out.
#[allow(clippy::expect_used)]
impl std::ops::Deref for Pooled {
    type Target = deadpool_postgres::Client;

    fn deref(&self) -> &Self::Target {
        self.client.as_ref().expect("taken only when dropped")
    }
}

#[allow(clippy::expect_used)]
impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.client.as_mut().expect("taken only when dropped")
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Quiet "already exists, skipping" notices of the idempotent statements below; no
        // time limit: a migration may wait for another server's, and may rewrite a table.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning; SET LOCAL statement_timeout = 0",
        )
        .await
        .map_err(pg)?;
        // Serialises concurrent migrators (several servers starting at once).
        tx.execute("SELECT pg_advisory_xact_lock(7316021)", &[])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .map_err(pg)?;
        for migration in MIGRATIONS {
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[&migration.version],
                )
                .await
                .map_err(pg)?
                .is_some();
            if applied {
                continue;
            }
            tx.batch_execute(migration.sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(pg)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        tx.commit().await.map_err(pg)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
                &[&workspace.id, &workspace.name, &workspace.created_at],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT id, name, created_at FROM workspaces WHERE id = $1")
            .await
            .map_err(pg)?;
        let row = client.query_opt(&stmt, &[&id]).await.map_err(pg)?;
        Ok(row.map(|r| Workspace {
            id: r.get(0),
            name: r.get(1),
            created_at: r.get(2),
        }))
    }

    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_workspace(&tx, &key.workspace_id).await?;
        let now = change_time(now);
        if count_active(&tx, key, None, now).await? >= i64::from(max_active) {
            return Err(StoreError::Conflict(Conflict::TooManyActiveKeys));
        }
        insert_key(&tx, key).await?;
        tx.commit().await.map_err(pg)
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_workspace(&tx, workspace_id).await?;
        let now = change_time(now);
        let old_revoked_at = now + grace;
        let old = select_key(&tx, workspace_id, old_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        if old.status_at(now) != KeyStatus::Active {
            return Err(StoreError::Conflict(Conflict::KeyNotActive));
        }
        // The old key counts while its grace period lasts: with a grace period the
        // replacement needs room beside it.
        let ending_now = (old_revoked_at <= now).then_some(old_id);
        if count_active(&tx, replacement, ending_now, now).await? >= i64::from(max_active) {
            return Err(StoreError::Conflict(Conflict::TooManyActiveKeys));
        }
        insert_key(&tx, replacement).await?;
        tx.execute(
            // A key already in a grace period keeps the earlier end: rotating again may
            // shorten its life, never extend it.
            "UPDATE api_keys SET revoked_at = LEAST(COALESCE(revoked_at, $3), $3)
             WHERE workspace_id = $1 AND id = $2",
            &[&workspace_id, &old_id, &old_revoked_at],
        )
        .await
        .map_err(pg)?;
        let old = select_key(&tx, workspace_id, old_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        tx.commit().await.map_err(pg)?;
        Ok(old)
    }

    async fn list_api_keys(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = $1 AND id > $2
                     ORDER BY id LIMIT $3"
                ),
                &[&workspace_id, &after.unwrap_or_default(), &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_api_key(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        select_key(&*client, workspace_id, id).await
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        // One transaction: a connection lost between the change and the read of its result
        // must leave no change behind an answer of 503.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_workspace(&tx, workspace_id).await?;
        let at = change_time(now);
        tx.execute(
            "UPDATE api_keys SET revoked_at = $3
             WHERE workspace_id = $1 AND id = $2 AND (revoked_at IS NULL OR revoked_at > $3)",
            &[&workspace_id, &id, &at],
        )
        .await
        .map_err(pg)?;
        let key = select_key(&tx, workspace_id, id)
            .await?
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        tx.commit().await.map_err(pg)?;
        Ok(key)
    }

    async fn find_api_key_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
            ))
            .await
            .map_err(pg)?;
        let row = client.query_opt(&stmt, &[&&hash.0[..]]).await.map_err(pg)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO users (id, email, name, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &user.id,
                    &user.email,
                    &user.name,
                    &user.password_hash,
                    &user.created_at,
                ],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => StoreError::Conflict(Conflict::EmailTaken),
                _ => pg(e),
            })?;
        Ok(User {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            created_at: user.created_at,
        })
    }

    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_workspace(&tx, workspace_id).await?;
        if tx
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id])
            .await
            .map_err(pg)?
            .is_none()
        {
            return Err(StoreError::NotFound(Entity::User));
        }
        tx.execute(
            "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
             VALUES ($1, $2, $3, $4)",
            &[&workspace_id, &user_id, &role.as_str(), &now],
        )
        .await
        .map_err(|e| match e.code() {
            Some(&SqlState::UNIQUE_VIOLATION) => StoreError::Conflict(Conflict::AlreadyMember),
            _ => pg(e),
        })?;
        tx.commit().await.map_err(pg)?;
        Ok(Membership {
            workspace_id: workspace_id.to_owned(),
            user_id: user_id.to_owned(),
            role,
            created_at: now,
        })
    }

    async fn save_rate_limits(&self, limits: &[SavedRateLimit]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM rate_limit_counts", &[])
            .await
            .map_err(pg)?;
        // One statement for all rows: a server may hold thousands of active workspaces.
        let workspaces: Vec<&str> = limits.iter().map(|l| l.workspace_id.as_str()).collect();
        let environments: Vec<&str> = limits.iter().map(|l| l.environment.as_str()).collect();
        let counts: Vec<String> = limits.iter().map(|l| encode_counts(&l.counts)).collect();
        tx.execute(
            "INSERT INTO rate_limit_counts (workspace_id, environment, counts)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
            &[&workspaces, &environments, &counts],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn saved_rate_limits(&self) -> Result<Vec<SavedRateLimit>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT workspace_id, environment, counts FROM rate_limit_counts",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.into_iter()
            .map(|row| {
                saved_rate_limit(
                    row.try_get(0).map_err(pg)?,
                    row.try_get(1).map_err(pg)?,
                    row.try_get(2).map_err(pg)?,
                )
            })
            .collect()
    }

    async fn clear_saved_rate_limits(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM rate_limit_counts", &[])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn record_hashing_key_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<String, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hashing_key_fingerprint (fingerprint) VALUES ($1)
                 ON CONFLICT (only_row) DO NOTHING",
                &[&fingerprint],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one("SELECT fingerprint FROM hashing_key_fingerprint", &[])
            .await
            .map_err(pg)?;
        row.try_get(0).map_err(pg)
    }

    async fn insert_audit_events(&self, events: Arc<EncodedEvents>) -> Result<(), StoreError> {
        // Our own encoding (from the spool or the batcher), so nothing is skipped here.
        let events = events.decode();
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO audit_events (id, occurred_at, workspace_id, credential_type,
                    credential_id, key_label, app_name, method, path, scope, status, error_code,
                    request_id, client_addr)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (workspace_id, id) DO NOTHING",
            )
            .await
            .map_err(pg)?;
        // tokio-postgres pipelines these: one round trip's worth of latency for the batch.
        let inserts = events.iter().map(|e| {
            let status = i32::from(e.status);
            let stmt = &stmt;
            let tx = &tx;
            async move {
                tx.execute(
                    stmt,
                    &[
                        &e.id,
                        &e.occurred_at,
                        &&*e.workspace_id,
                        &e.credential_type.as_str(),
                        &&*e.credential_id,
                        &e.key_label.as_deref(),
                        &e.app_name.as_deref(),
                        &e.method.as_ref(),
                        &e.path,
                        &e.scope.as_deref(),
                        &status,
                        &e.error_code.as_deref(),
                        &e.request_id,
                        &e.client_addr,
                    ],
                )
                .await
            }
        });
        futures_util::future::try_join_all(inserts)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn query_audit_events(
        &self,
        workspace_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT id, occurred_at, workspace_id, credential_type, credential_id, key_label,
                    app_name, method, path, scope, status, error_code, request_id, client_addr
             FROM audit_events WHERE workspace_id = $1",
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&workspace_id];
        let text_filters = [
            ("key_label", &query.key_label),
            ("app_name", &query.app),
            ("scope", &query.scope),
            ("request_id", &query.request_id),
        ];
        for (column, filter) in &text_filters {
            if let Some(value) = filter {
                params.push(value);
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        }
        if let Some(since) = &query.since {
            params.push(since);
            sql.push_str(&format!(" AND occurred_at >= ${}", params.len()));
        }
        if let Some(until) = &query.until {
            params.push(until);
            sql.push_str(&format!(" AND occurred_at < ${}", params.len()));
        }
        if let Some(before) = &query.before {
            params.push(before);
            sql.push_str(&format!(" AND id < ${}", params.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", query.limit));
        let mut client = self.client().await?;
        // A workspace's log can be long: this query may take longer than a request's.
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            self.bulk_statement_timeout.as_millis()
        ))
        .await
        .map_err(pg)?;
        let rows = tx.query(&sql, &params).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        rows.iter().map(audit_from_row).collect()
    }
}

fn key_from_row(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    let hash: &[u8] = row.try_get(2).map_err(pg)?;
    let environment: &str = row.try_get(5).map_err(pg)?;
    let scopes: &str = row.try_get(6).map_err(pg)?;
    Ok(ApiKeyRecord {
        id: row.try_get(0).map_err(pg)?,
        workspace_id: row.try_get(1).map_err(pg)?,
        key_hash: KeyHash::from_slice(hash).ok_or_else(|| corrupt("key_hash length"))?,
        key_hint: row.try_get(3).map_err(pg)?,
        label: row.try_get(4).map_err(pg)?,
        environment: Environment::parse(environment).ok_or_else(|| corrupt("environment"))?,
        scopes: ScopeSet::parse_canonical(scopes).map_err(|_| corrupt("scopes"))?,
        created_at: row.try_get(7).map_err(pg)?,
        expires_at: row.try_get(8).map_err(pg)?,
        revoked_at: row.try_get(9).map_err(pg)?,
    })
}

fn audit_from_row(row: &Row) -> Result<AuditEvent, StoreError> {
    let status: i32 = row.try_get(10).map_err(pg)?;
    let credential_type: &str = row.try_get(3).map_err(pg)?;
    let text = |i: usize| row.try_get::<_, String>(i).map_err(pg);
    let optional = |i: usize| row.try_get::<_, Option<String>>(i).map_err(pg);
    Ok(AuditEvent {
        id: row.try_get::<_, Uuid>(0).map_err(pg)?,
        occurred_at: row.try_get(1).map_err(pg)?,
        workspace_id: text(2)?.into(),
        credential_type: CredentialType::parse(credential_type)
            .ok_or_else(|| corrupt("audit credential type"))?,
        credential_id: text(4)?.into(),
        key_label: optional(5)?.map(Into::into),
        app_name: optional(6)?.map(Into::into),
        method: text(7)?.into(),
        path: text(8)?,
        scope: optional(9)?.map(Into::into),
        status: u16::try_from(status).map_err(|_| corrupt("audit status"))?,
        error_code: optional(11)?.map(Into::into),
        request_id: row.try_get(12).map_err(pg)?,
        client_addr: row.try_get(13).map_err(pg)?,
    })
}

async fn select_key(
    client: &impl GenericClient,
    workspace_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = $1 AND id = $2"),
            &[&workspace_id, &id],
        )
        .await
        .map_err(pg)?;
    row.as_ref().map(key_from_row).transpose()
}

/// Locks the workspace row for the transaction, so that key counts and inserts of one
/// workspace happen one at a time; fails with `NotFound` when there is no such workspace.
async fn lock_workspace(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace_id: &str,
) -> Result<(), StoreError> {
    tx.query_opt(
        "SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE",
        &[&workspace_id],
    )
    .await
    .map_err(pg)?
    .map(|_| ())
    .ok_or(StoreError::NotFound(Entity::Workspace))
}

async fn count_active(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &NewApiKey,
    excluding: Option<&str>,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let rows = tx
        .query(
            "SELECT scopes FROM api_keys
             WHERE workspace_id = $1 AND environment = $2
               AND (revoked_at IS NULL OR revoked_at > $3) AND expires_at > $3
               AND id <> COALESCE($4, '')",
            &[
                &key.workspace_id,
                &key.environment.as_str(),
                &now,
                &excluding,
            ],
        )
        .await
        .map_err(pg)?;
    let mut same = 0;
    for row in rows {
        if grants_the_same(row.try_get(0).map_err(pg)?, key.scopes)? {
            same += 1;
        }
    }
    Ok(same)
}

async fn insert_key(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &NewApiKey,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO api_keys (id, workspace_id, key_hash, key_hint, label, environment, scopes,
                               created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &key.id,
            &key.workspace_id,
            &&key.key_hash.0[..],
            &key.key_hint,
            &key.label,
            &key.environment.as_str(),
            &key.scopes.to_canonical_string(),
            &key.created_at,
            &key.expires_at,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(anyhow!("corrupt {what} in api_keys"))
}

/// No answer (closed connection, I/O) or an answer that says "not now" means PostgreSQL is
/// unavailable: callers answer 503 and jobs retry. Any other database error (constraint,
/// syntax, bad data) is ours to fix.
fn pg(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error().map(|db| db.code().code()) {
        Some(code) if is_transient(code) => StoreError::Unavailable(error.into()),
        Some(_) => StoreError::Internal(error.into()),
        None => StoreError::Unavailable(error.into()),
    }
}

/// SQLSTATEs that go away by themselves: connection exceptions (08), insufficient resources
/// (53: too many connections, disk full), operator intervention (57: shutdown, restart,
/// statement timeout), serialization failure and deadlock (40001, 40P01), and a read-only
/// server during a failover (25006).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || matches!(code, "40001" | "40P01" | "25006")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_url_names_the_parameter_and_never_the_password() {
        for (url, named) in [
            (
                "postgres://u:hunter2@h/db?frobnicate=1",
                "unknown option `frobnicate`",
            ),
            (
                "postgres://u:hunter2@h:99999/db",
                "invalid value for option `port`",
            ),
        ] {
            let error = PostgresStore::connect(url, 1, Deadlines::default())
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(named), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
