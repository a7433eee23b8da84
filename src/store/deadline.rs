//! Time limits on a networked store's operations.
//!
//! The connection pool limits getting a connection (2 s), not what happens on it. A database
//! that keeps its connections open but stops answering (a frozen or overloaded server, a
//! disk that hangs, a lock held by a stuck migration) would otherwise hold every request
//! that reaches storage, the hot path's cache misses and `/readyz` included, for as long as
//! it lasts. Past its deadline an operation ends as `StoreError::Unavailable`: callers
//! answer 503 and jobs retry, as for a database that is down.
//!
//! A write whose deadline passes may still be applied once the database answers (it cannot
//! be told apart from a lost answer); the caller sees 503 and can read back what happened.
//! `migrate` has no deadline: at start it may wait for another server's migration.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewApiKey, NewUser, SavedRateLimit, Store, StoreError};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::audit_codec::EncodedEvents;
use crate::domain::hashing::KeyHash;
use crate::domain::key_record::ApiKeyRecord;
use crate::domain::workspace::{Membership, Role, User, Workspace};

/// How long each kind of operation may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Readiness: an orchestrator's probe gives up after a second or two.
    pub ping: Duration,
    /// One row or a few, for a request that waits on it.
    pub request: Duration,
    /// Work that grows with the data: audit batches (up to 5,000 events), audit-log queries,
    /// every workspace's rate-limit counts at shutdown.
    pub bulk: Duration,
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines {
            ping: Duration::from_secs(2),
            request: Duration::from_secs(5),
            bulk: Duration::from_secs(30),
        }
    }
}

/// A store whose operations end as unavailable past their deadline.
pub struct WithDeadlines<S> {
    inner: S,
    deadlines: Deadlines,
}

impl<S: Store> WithDeadlines<S> {
    pub fn new(inner: S, deadlines: Deadlines) -> WithDeadlines<S> {
        WithDeadlines { inner, deadlines }
    }
}

/// Why an operation ended as unavailable: it ran past its deadline (the database may be
/// down, frozen, or only slow for work this size).
#[derive(Debug, thiserror::Error)]
#[error("the database did not answer within {} ms", .0.as_millis())]
pub struct DeadlinePassed(pub Duration);

tokio::task_local! {
    /// Set while an operation runs under a deadline: whether it was abandoned past it.
    static ABANDONED: Arc<AtomicBool>;
}

/// The flag of the operation under way on this task, set if it is abandoned past its
/// deadline: a store gives it to each connection the operation takes, which then leaves
/// the pool rather than go back to it (`postgres::Pooled`).
pub(super) fn abandoned_flag() -> Option<Arc<AtomicBool>> {
    ABANDONED.try_with(Arc::clone).ok()
}

/// `operation`'s result, or unavailable once `limit` has passed. An operation abandoned so
/// is marked before it is dropped, so that the connections it holds know.
async fn within<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let abandoned = Arc::new(AtomicBool::new(false));
    // Not `tokio::time::timeout` inside the scope: the scope drops a future as soon as it
    // completes, which would be before the flag could be set.
    let operation = ABANDONED.scope(Arc::clone(&abandoned), operation);
    let mut operation = std::pin::pin!(operation);
    tokio::select! {
        biased;
        result = operation.as_mut() => result,
        () = tokio::time::sleep(limit) => {
            // The operation, still pending, is dropped after this, at the end of scope.
            abandoned.store(true, Ordering::Release);
            Err(StoreError::Unavailable(DeadlinePassed(limit).into()))
        }
    }
}

#[async_trait]
impl<S: Store> Store for WithDeadlines<S> {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        within(self.deadlines.ping, self.inner.ping()).await
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        within(
            self.deadlines.request,
            self.inner.create_workspace(workspace),
        )
        .await
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        within(self.deadlines.request, self.inner.get_workspace(id)).await
    }

    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        within(
            self.deadlines.request,
            self.inner.insert_api_key(key, max_active, now),
        )
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
        within(
            self.deadlines.request,
            self.inner
                .rotate_api_key(workspace_id, old_id, replacement, grace, max_active, now),
        )
        .await
    }

    async fn list_api_keys(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        within(
            self.deadlines.request,
            self.inner.list_api_keys(workspace_id, after, limit),
        )
        .await
    }

    async fn get_api_key(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        within(
            self.deadlines.request,
            self.inner.get_api_key(workspace_id, id),
        )
        .await
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        within(
            self.deadlines.request,
            self.inner.revoke_api_key(workspace_id, id, now),
        )
        .await
    }

    async fn find_api_key_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        within(
            self.deadlines.request,
            self.inner.find_api_key_by_hash(hash),
        )
        .await
    }

    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        within(self.deadlines.request, self.inner.create_user(user)).await
    }

    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        within(
            self.deadlines.request,
            self.inner.add_member(workspace_id, user_id, role, now),
        )
        .await
    }

    async fn save_rate_limits(&self, limits: &[SavedRateLimit]) -> Result<(), StoreError> {
        within(self.deadlines.bulk, self.inner.save_rate_limits(limits)).await
    }

    async fn saved_rate_limits(&self) -> Result<Vec<SavedRateLimit>, StoreError> {
        within(self.deadlines.bulk, self.inner.saved_rate_limits()).await
    }

    async fn clear_saved_rate_limits(&self) -> Result<(), StoreError> {
        within(self.deadlines.request, self.inner.clear_saved_rate_limits()).await
    }

    async fn record_hashing_key_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<String, StoreError> {
        within(
            self.deadlines.request,
            self.inner.record_hashing_key_fingerprint(fingerprint),
        )
        .await
    }

    async fn insert_audit_events(&self, events: Arc<EncodedEvents>) -> Result<(), StoreError> {
        within(self.deadlines.bulk, self.inner.insert_audit_events(events)).await
    }

    async fn query_audit_events(
        &self,
        workspace_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        within(
            self.deadlines.bulk,
            self.inner.query_audit_events(workspace_id, query),
        )
        .await
    }
}
