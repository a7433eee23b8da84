//! Storage: one trait, one error type, a PostgreSQL and an SQLite implementation chosen
//! once at start. Nothing here knows about HTTP.

pub mod deadline;
mod migrations;
pub mod postgres;
mod postgres_connect;
pub mod postgres_tls;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::api_key::Environment;
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::audit_codec::EncodedEvents;
use crate::domain::hashing::KeyHash;
use crate::domain::key_record::ApiKeyRecord;
use crate::domain::rate_limit::RateCounts;
use crate::domain::scope::ScopeSet;
use crate::domain::workspace::{Membership, Role, User, Workspace};

/// The `api_keys` columns in the order both stores read them.
const KEY_COLUMNS: &str = "id, workspace_id, key_hash, key_hint, label, environment, scopes, \
                           created_at, expires_at, revoked_at";

/// Whether a stored key's scopes (as `api_keys.scopes` holds them) grant exactly what
/// `scopes` grants. The two-active-keys rule compares what keys can do, so
/// `checks:write checks:read` and `checks:write` are one scope set: `X:write` implies
/// `X:read`, and listing the implied scope must not make room for a third key.
fn grants_the_same(stored: &str, scopes: ScopeSet) -> Result<bool, StoreError> {
    let stored = ScopeSet::parse_canonical(stored)
        .map_err(|_| StoreError::Internal(anyhow::anyhow!("corrupt scopes in api_keys")))?;
    Ok(stored.effective() == scopes.effective())
}

/// A `rate_limit_counts` row, read back.
fn saved_rate_limit(
    workspace_id: String,
    environment: &str,
    counts: &str,
) -> Result<SavedRateLimit, StoreError> {
    let corrupt = || StoreError::Internal(anyhow::anyhow!("corrupt row in rate_limit_counts"));
    Ok(SavedRateLimit {
        workspace_id,
        environment: Environment::parse(environment).ok_or_else(corrupt)?,
        counts: crate::domain::rate_limit::decode_counts(counts).ok_or_else(corrupt)?,
    })
}

/// What can go wrong in storage, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out: callers answer 503, never 401.
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("conflict: {0:?}")]
    Conflict(Conflict),
    /// Anything else: a bug or corrupt data.
    #[error("storage error")]
    Internal(#[source] anyhow::Error),
}

impl StoreError {
    /// Whether the operation ran past its deadline (`deadline::WithDeadlines`).
    pub fn is_past_deadline(&self) -> bool {
        matches!(self, StoreError::Unavailable(cause) if cause.is::<deadline::DeadlinePassed>())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Workspace,
    ApiKey,
    User,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Workspace => "workspace",
            Entity::ApiKey => "api key",
            Entity::User => "user",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Two active keys already share this workspace, environment and scope set.
    TooManyActiveKeys,
    /// The key to rotate is revoked or expired.
    KeyNotActive,
    EmailTaken,
    AlreadyMember,
}

/// A workspace's rate-limit counts for one environment, kept over a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRateLimit {
    pub workspace_id: String,
    pub environment: Environment,
    pub counts: RateCounts,
}

/// A key about to be stored. `id` and times are decided by the caller.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub workspace_id: String,
    pub key_hash: KeyHash,
    pub key_hint: String,
    pub label: String,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewApiKey {
    pub fn into_record(self) -> ApiKeyRecord {
        ApiKeyRecord {
            id: self.id,
            workspace_id: self.workspace_id,
            key_hash: self.key_hash,
            key_hint: self.key_hint,
            label: self.label,
            environment: self.environment,
            scopes: self.scopes,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: None,
        }
    }
}

/// A user about to be stored; the password is already an Argon2id PHC string.
#[derive(Clone)]
pub struct NewUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// When a change to a key takes effect: `now` (the request's time) or, if later, the clock
/// as read by a store once it holds the lock that orders changes to the workspace's keys.
/// The request's time is read before that lock is taken, so of two concurrent changes the
/// one applied second could otherwise be dated before the first: a second rotation would
/// find the key still active at its earlier time, and make a second replacement of a key
/// the first had already ended (found by a black-box pass on PostgreSQL, 2 December).
pub fn change_time(now: DateTime<Utc>) -> DateTime<Utc> {
    // To the millisecond, as the request's time and SQLite's columns are.
    now.max(crate::clock::to_datetime(crate::clock::now_ms()))
}

/// The engine's storage. Implementations must make `insert_api_key` and `rotate_api_key`
/// atomic with their active-key count, so that concurrent creations cannot exceed it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError>;
    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError>;

    /// Stores a key unless `max_active` active keys already share its workspace,
    /// environment and scope set (compared by what the scopes grant) at `change_time(now)`
    /// (`Conflict::TooManyActiveKeys`): a key that a rotation applied just before ended
    /// no longer counts.
    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Stores `replacement` and schedules the old key's revocation `grace` after the
    /// rotation, in one transaction. The old key counts toward `max_active` unless it ends
    /// now; a key already in a grace period keeps the earlier end. The rotation is dated by
    /// `change_time(now)` under the lock that orders it (see there).
    async fn rotate_api_key(
        &self,
        workspace_id: &str,
        old_id: &str,
        replacement: &NewApiKey,
        grace: chrono::Duration,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError>;
    /// A workspace's keys by id (so by creation), after the key `after` when given, at most
    /// `limit`.
    async fn list_api_keys(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;
    async fn get_api_key(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Revokes a key (keeping an earlier revocation time) and returns it, in one
    /// transaction. The revocation is dated by `change_time(now)` under the lock that orders
    /// it (see there).
    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError>;
    /// The hot path's only storage read, on a cache miss.
    async fn find_api_key_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError>;
    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError>;

    /// Replaces the saved rate-limit counts with `limits` (at a graceful shutdown).
    async fn save_rate_limits(&self, limits: &[SavedRateLimit]) -> Result<(), StoreError>;
    /// The saved rate-limit counts (at start). They stay saved until
    /// `clear_saved_rate_limits`, once the rate journal holds them, so that a crash during
    /// the start loses none.
    async fn saved_rate_limits(&self) -> Result<Vec<SavedRateLimit>, StoreError>;
    /// Deletes the saved rate-limit counts: a later crash must not bring back counts that
    /// the running server has since moved past.
    async fn clear_saved_rate_limits(&self) -> Result<(), StoreError>;

    /// Records the hashing key's fingerprint unless one is recorded; returns the one recorded
    /// (this one, or the first server's).
    async fn record_hashing_key_fingerprint(&self, fingerprint: &str)
        -> Result<String, StoreError>;

    /// Inserts events, ignoring ids already stored (redelivery is expected).
    async fn insert_audit_events(&self, events: Arc<EncodedEvents>) -> Result<(), StoreError>;
    /// Events of a workspace, newest first.
    async fn query_audit_events(
        &self,
        workspace_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// The store chosen at start.
pub type SharedStore = Arc<dyn Store>;
