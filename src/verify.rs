//! The hot path: from an `Authorization` header to a decision, with the rate-limit check and
//! the audit hand-off. Shared by `/v1/me`, `/v1/authz` and the benches.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::actors::{CacheLookup, CachedKey, WorkspaceHandle, WorkspaceRegistry};
use crate::clock;
use crate::domain::api_key::parse_key;
use crate::domain::audit::{AuditEvent, CredentialType};
use crate::domain::hashing::KeyHasher;
use crate::domain::key_record::KeyStatus;
use crate::domain::rate_limit::RateDecision;
use crate::domain::route::{RouteError, RouteRequirement};
use crate::domain::scope::Scope;
use crate::metrics::{HotRoute, Metrics, Outcome};
use crate::queue::audit_sink::AuditSink;

/// One request to authorise.
pub struct AccessRequest<'a> {
    /// The raw `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The method and path being authorised (for `/v1/authz`, the forwarded ones), for the
    /// audit log.
    pub method: &'a str,
    pub path: &'a str,
    /// What the route demands, or why it could not be worked out.
    pub requirement: Result<RouteRequirement, RouteError>,
    pub request_id: String,
    pub client_addr: Option<String>,
    pub route: HotRoute,
}

/// A request that may proceed.
pub struct Granted {
    pub key: Arc<CachedKey>,
    pub rate: RateDecision,
    pub scope: Option<Scope>,
}

/// Why a request was refused, and the rate-limit state to report when it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub rate: Option<RateDecision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No credential at all (no `error` in `WWW-Authenticate`).
    MissingCredentials,
    /// Malformed, bad checksum, or unknown.
    InvalidCredentials,
    KeyRevoked,
    KeyExpired,
    InvalidRoute(RouteError),
    RateLimited,
    /// The scope the route needs; `None` when no scope grants the route.
    InsufficientScope(Option<Scope>),
    /// Storage is unreachable and the key is not cached.
    Unavailable,
}

impl DenyReason {
    fn outcome(self) -> Outcome {
        match self {
            DenyReason::MissingCredentials | DenyReason::InvalidCredentials => {
                Outcome::InvalidCredentials
            }
            DenyReason::KeyRevoked => Outcome::KeyRevoked,
            DenyReason::KeyExpired => Outcome::KeyExpired,
            DenyReason::InvalidRoute(_) => Outcome::InvalidRoute,
            DenyReason::RateLimited => Outcome::RateLimited,
            DenyReason::InsufficientScope(_) => Outcome::InsufficientScope,
            DenyReason::Unavailable => Outcome::Unavailable,
        }
    }

    /// The status and error code of the contract, for the audit log.
    pub fn status_and_code(self) -> (u16, &'static str) {
        match self {
            DenyReason::MissingCredentials | DenyReason::InvalidCredentials => {
                (401, "invalid_credentials")
            }
            DenyReason::KeyRevoked => (403, "key_revoked"),
            DenyReason::KeyExpired => (403, "key_expired"),
            DenyReason::InvalidRoute(RouteError::BadMethod) => (400, "invalid_forwarded_method"),
            DenyReason::InvalidRoute(_) => (400, "invalid_forwarded_uri"),
            DenyReason::RateLimited => (429, "rate_limited"),
            DenyReason::InsufficientScope(_) => (403, "insufficient_scope"),
            DenyReason::Unavailable => (503, "unavailable"),
        }
    }
}

/// Verifies credentials against the cache (storage on a miss), applies the workspace's rate
/// limit and the route's scope, and records the audit event.
pub struct Verifier {
    hasher: KeyHasher,
    registry: Arc<WorkspaceRegistry>,
    audit: AuditSink,
    metrics: Arc<Metrics>,
}

impl Verifier {
    pub fn new(
        hasher: KeyHasher,
        registry: Arc<WorkspaceRegistry>,
        audit: AuditSink,
        metrics: Arc<Metrics>,
    ) -> Verifier {
        Verifier {
            hasher,
            registry,
            audit,
            metrics,
        }
    }

    pub async fn verify(&self, request: AccessRequest<'_>) -> Result<Granted, Denied> {
        let started = Instant::now();
        let now_ms = clock::now_ms();
        let result = self.decide(&request, now_ms).await;
        let route = request.route;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err((denied, _)) => denied.reason.outcome(),
        };
        let result = match result {
            Ok((granted, handle)) => {
                self.audit(request, now_ms, &handle, &granted.key, granted.scope, None)
                    .await;
                Ok(granted)
            }
            Err((denied, Some((handle, key)))) => {
                let scope = match (denied.reason, request.requirement) {
                    (DenyReason::InsufficientScope(scope), _) => scope,
                    (DenyReason::RateLimited, Ok(RouteRequirement::Scope(scope))) => Some(scope),
                    _ => None,
                };
                self.audit(request, now_ms, &handle, &key, scope, Some(denied.reason))
                    .await;
                Err(denied)
            }
            // Credentials that name no key belong to no workspace: there is no audit log to
            // write them to. They are counted in the metrics.
            Err((denied, None)) => Err(denied),
        };
        self.metrics
            .record_verification(route, outcome, started.elapsed());
        result
    }

    #[allow(clippy::type_complexity)]
    async fn decide(
        &self,
        request: &AccessRequest<'_>,
        now_ms: u64,
    ) -> Result<(Granted, WorkspaceHandle), (Denied, Option<(WorkspaceHandle, Arc<CachedKey>)>)>
    {
        let deny = |reason| Denied { reason, rate: None };
        let token = bearer_token(request.authorization).map_err(|reason| (deny(reason), None))?;
        // Shape and checksum first: a forged or mistyped key costs no hashing or lookup.
        parse_key(token).map_err(|_| (deny(DenyReason::InvalidCredentials), None))?;
        let hash = self.hasher.hash(token);
        let (handle, key) = match self.registry.lookup(&hash, now_ms) {
            CacheLookup::Hit(handle, key) => {
                self.metrics
                    .cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (handle, key)
            }
            CacheLookup::KnownUnknown => {
                self.metrics
                    .negative_cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err((deny(DenyReason::InvalidCredentials), None));
            }
            CacheLookup::Miss => {
                self.metrics
                    .cache_misses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.registry.load(&hash, now_ms).await {
                    Ok(Some(found)) => found,
                    Ok(None) => return Err((deny(DenyReason::InvalidCredentials), None)),
                    Err(error) => {
                        tracing::warn!(%error, "storage unavailable on key cache miss");
                        return Err((deny(DenyReason::Unavailable), None));
                    }
                }
            }
        };
        let identified = |reason, rate| {
            (
                Denied { reason, rate },
                Some((handle.clone(), Arc::clone(&key))),
            )
        };
        match key.status_at(clock::to_datetime(now_ms)) {
            KeyStatus::Active => {}
            KeyStatus::Revoked => return Err(identified(DenyReason::KeyRevoked, None)),
            KeyStatus::Expired => return Err(identified(DenyReason::KeyExpired, None)),
        }
        let requirement = match request.requirement {
            Ok(requirement) => requirement,
            Err(error) => return Err(identified(DenyReason::InvalidRoute(error), None)),
        };
        let rate = handle.state.check_rate(key.environment, now_ms);
        if !rate.allowed {
            return Err(identified(DenyReason::RateLimited, Some(rate)));
        }
        let scope = match requirement {
            RouteRequirement::NoScope => None,
            RouteRequirement::Scope(scope) if key.scopes.grants(scope) => Some(scope),
            RouteRequirement::Scope(scope) => {
                return Err(identified(
                    DenyReason::InsufficientScope(Some(scope)),
                    Some(rate),
                ))
            }
            RouteRequirement::UnknownResource => {
                return Err(identified(DenyReason::InsufficientScope(None), Some(rate)))
            }
        };
        Ok((Granted { key, rate, scope }, handle))
    }

    async fn audit(
        &self,
        request: AccessRequest<'_>,
        now_ms: u64,
        handle: &WorkspaceHandle,
        key: &CachedKey,
        scope: Option<Scope>,
        denied: Option<DenyReason>,
    ) {
        let (status, error_code) = match denied {
            Some(reason) => {
                let (status, code) = reason.status_and_code();
                (status, Some(Cow::Borrowed(code)))
            }
            None => (200, None),
        };
        let event = AuditEvent {
            id: Uuid::now_v7(),
            occurred_at: clock::to_datetime(now_ms),
            workspace_id: Arc::clone(&handle.state.id),
            credential_type: CredentialType::ApiKey,
            credential_id: Arc::clone(&key.id),
            key_label: Some(Arc::clone(&key.label)),
            app_name: None,
            method: truncate(request.method, 16),
            path: truncate(request.path.split('?').next().unwrap_or_default(), 512),
            scope: scope.map(|s| Cow::Borrowed(s.as_str())),
            status,
            error_code,
            request_id: request.request_id,
            client_addr: request.client_addr,
        };
        self.audit.record(event).await;
    }

    pub fn registry(&self) -> &Arc<WorkspaceRegistry> {
        &self.registry
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }
}

/// Extracts the token of `Authorization: Bearer <token>`.
fn bearer_token(header: Option<&[u8]>) -> Result<&str, DenyReason> {
    let header = header.ok_or(DenyReason::MissingCredentials)?;
    let value = std::str::from_utf8(header).map_err(|_| DenyReason::InvalidCredentials)?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(DenyReason::InvalidCredentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(DenyReason::InvalidCredentials);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(DenyReason::InvalidCredentials);
    }
    Ok(token)
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some(b"bearer  abc ")), Ok("abc"));
        assert_eq!(
            bearer_token(Some(b"Basic abc")),
            Err(DenyReason::InvalidCredentials)
        );
        assert_eq!(
            bearer_token(Some(b"Bearer ")),
            Err(DenyReason::InvalidCredentials)
        );
        assert_eq!(
            bearer_token(Some(b"\xff\xfe")),
            Err(DenyReason::InvalidCredentials)
        );
        assert_eq!(bearer_token(None), Err(DenyReason::MissingCredentials));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
