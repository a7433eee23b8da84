//! The hot path: from an `Authorization` header to a decision, with the rate-limit check and
//! the audit hand-off. Shared by `/v1/me`, `/v1/authz` and the benches.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::{NoContext, Timestamp, Uuid};

use crate::actors::{CacheLookup, CachedKey, WorkspaceRegistry, WorkspaceState};
use crate::clock;
use crate::domain::api_key::parse_key;
use crate::domain::audit::CredentialType;
use crate::domain::audit_codec::EventView;
use crate::domain::credential_text::{mentions_credential, without_credentials};
use crate::domain::hashing::KeyHasher;
use crate::domain::key_record::KeyStatus;
use crate::domain::rate_limit::RateDecision;
use crate::domain::route::{path_of, RouteError, RouteRequirement};
use crate::domain::scope::Scope;
use crate::log_throttle::LogThrottle;
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
    pub request_id: &'a str,
    pub client_addr: Option<String>,
    pub route: HotRoute,
}

/// What the audit log records of a request, besides its key and outcome.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub client_addr: Option<String>,
}

/// A request that may proceed.
pub struct Granted {
    pub workspace: Arc<WorkspaceState>,
    pub key: Arc<CachedKey>,
    pub rate: RateDecision,
    pub scope: Option<Scope>,
}

/// What `authorize` decides for a request that may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allowed {
    rate: RateDecision,
    /// The scope the request consumes; none for routes that need none.
    scope: Option<Scope>,
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
    /// The listener has no such route (only recorded, never returned by `verify`).
    NoRoute,
    /// The request's header fields or target were past the limits (only recorded).
    HeadersTooLarge,
    UriTooLong,
}

impl DenyReason {
    fn outcome(self) -> Outcome {
        match self {
            DenyReason::MissingCredentials | DenyReason::InvalidCredentials => {
                Outcome::InvalidCredentials
            }
            DenyReason::KeyRevoked => Outcome::KeyRevoked,
            DenyReason::KeyExpired => Outcome::KeyExpired,
            DenyReason::InvalidRoute(_)
            | DenyReason::NoRoute
            | DenyReason::HeadersTooLarge
            | DenyReason::UriTooLong => Outcome::InvalidRoute,
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
            DenyReason::InvalidRoute(RouteError::BadMethod | RouteError::RepeatedMethod) => {
                (400, "invalid_forwarded_method")
            }
            DenyReason::InvalidRoute(_) => (400, "invalid_forwarded_uri"),
            DenyReason::RateLimited => (429, "rate_limited"),
            DenyReason::InsufficientScope(_) => (403, "insufficient_scope"),
            DenyReason::Unavailable => (503, "unavailable"),
            DenyReason::NoRoute => (404, "not_found"),
            DenyReason::HeadersTooLarge => (431, "headers_too_large"),
            DenyReason::UriTooLong => (414, "uri_too_long"),
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
    /// Cache misses that storage could not answer: one warning per interval, not per request.
    unavailable_log: LogThrottle,
}

/// How often a storage outage seen by cache misses is logged.
const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(10);

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
            unavailable_log: LogThrottle::new(UNAVAILABLE_LOG_EVERY),
        }
    }

    pub async fn verify(&self, request: AccessRequest<'_>) -> Result<Granted, Denied> {
        let started = Instant::now();
        let now_ms = clock::now_ms();
        let route = request.route;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            // Credentials that name no key belong to no workspace: there is no audit log to
            // write them to. They are counted in the metrics.
            let Identified { workspace, key } =
                match self.identify(request.authorization, now_ms).await {
                    Ok(identified) => identified,
                    Err(denied) => break Err(denied),
                };
            let rate_now_ms = self.registry.rate_now_ms();
            let decision = authorize(&workspace, &key, request.requirement, now_ms, rate_now_ms);
            let (scope, denied) = match &decision {
                Ok(allowed) => (allowed.scope, None),
                Err(Refusal::Denied(denied, scope)) => (*scope, Some(denied.reason)),
                // The workspace's actor stopped as this request arrived (only after minutes
                // without traffic): look again, which finds or starts its successor.
                Err(Refusal::Retired) if attempts < 3 => continue,
                Err(Refusal::Retired) => (None, Some(DenyReason::Unavailable)),
            };
            let facts = RequestFacts {
                method: request.method,
                path: request.path,
                request_id: request.request_id,
                client_addr: request.client_addr,
            };
            self.audit(facts, now_ms, &workspace, &key, scope, denied)
                .await;
            break decision
                .map(|Allowed { rate, scope }| Granted {
                    workspace,
                    key,
                    rate,
                    scope,
                })
                .map_err(Refusal::into_denied);
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(denied) => denied.reason.outcome(),
        };
        self.metrics
            .record_verification(route, outcome, started.elapsed());
        result
    }

    /// Finds the key a credential names: shape and checksum first (a forged or mistyped key
    /// costs no hashing or lookup), then the cache, then storage on a miss.
    async fn identify(
        &self,
        authorization: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<Identified, Denied> {
        let deny = |reason| Denied { reason, rate: None };
        let token = bearer_token(authorization).map_err(deny)?;
        parse_key(token).map_err(|_| deny(DenyReason::InvalidCredentials))?;
        let hash = self.hasher.hash(token);
        let (workspace, key) = match self.registry.lookup(&hash, now_ms) {
            CacheLookup::Hit(workspace, key) => {
                self.metrics.cache_hits.fetch_add(1, Relaxed);
                (workspace, key)
            }
            CacheLookup::KnownUnknown => {
                self.metrics.negative_cache_hits.fetch_add(1, Relaxed);
                return Err(deny(DenyReason::InvalidCredentials));
            }
            CacheLookup::Miss => {
                self.metrics.cache_misses.fetch_add(1, Relaxed);
                match self.registry.load(&hash, now_ms).await {
                    Ok(Some(found)) => found,
                    Ok(None) => return Err(deny(DenyReason::InvalidCredentials)),
                    Err(error) => {
                        if let Some(skipped) = self.unavailable_log.admit(now_ms) {
                            tracing::warn!(
                                // With its cause: "storage unavailable" alone says nothing.
                                error = %crate::error_chain::error_chain(&error),
                                skipped,
                                "storage unavailable on key cache miss: answering 503 (logged once per {} s; `skipped` since the last line)",
                                UNAVAILABLE_LOG_EVERY.as_secs()
                            );
                        }
                        return Err(deny(DenyReason::Unavailable));
                    }
                }
            }
        };
        Ok(Identified { workspace, key })
    }

    /// A request on a route that checks no credential (a health probe, or a route the
    /// listener does not have, `DenyReason::NoRoute`), answered as `denied` says: when its
    /// credential names a key, the audit log records it (every request that presents a
    /// credential yields an event). Nothing is counted against the rate limit.
    pub async fn record_unchecked(
        &self,
        authorization: &[u8],
        facts: RequestFacts<'_>,
        denied: Option<DenyReason>,
    ) {
        let now_ms = clock::now_ms();
        if let Ok(Identified { workspace, key }) = self.identify(Some(authorization), now_ms).await
        {
            self.audit(facts, now_ms, &workspace, &key, None, denied)
                .await;
        }
    }

    async fn audit(
        &self,
        request: RequestFacts<'_>,
        now_ms: u64,
        workspace: &WorkspaceState,
        key: &CachedKey,
        scope: Option<Scope>,
        denied: Option<DenyReason>,
    ) {
        let (status, error_code) = match denied {
            Some(reason) => {
                let (status, code) = reason.status_and_code();
                (status, Some(code))
            }
            None => (200, None),
        };
        let method = audit_method(request.method);
        // Borrowed from the request and the key cache: the spool encodes the event in place,
        // so a request allocates nothing for it and shares no reference count with the
        // thread that stores it.
        let event = EventView {
            // From the request's own clock reading: no second reading, and not
            // `Uuid::now_v7`, whose counter sits behind a process-wide lock. Ids stay unique
            // (74 random bits) and ordered by millisecond, which is what paging needs.
            id: Uuid::new_v7(Timestamp::from_unix(
                NoContext,
                now_ms / 1000,
                (now_ms % 1000) as u32 * 1_000_000,
            )),
            occurred_at_nanos: clock::to_datetime(now_ms)
                .timestamp_nanos_opt()
                .unwrap_or(i64::MAX),
            credential_type: CredentialType::ApiKey,
            status,
            workspace_id: &workspace.id,
            credential_id: &key.id,
            key_label: Some(&key.label),
            app_name: None,
            method: &method,
            path: &audit_path(request.path),
            scope: scope.map(Scope::as_str),
            error_code,
            request_id: request.request_id,
            client_addr: request.client_addr.as_deref(),
        };
        self.audit.record(&event).await;
    }
}

/// A credential that named a key.
struct Identified {
    workspace: Arc<WorkspaceState>,
    key: Arc<CachedKey>,
}

/// Why an identified key's request did not go through.
enum Refusal {
    /// Refused, with the scope it concerned (for the audit log).
    Denied(Denied, Option<Scope>),
    /// The workspace state was retired under the request; it must be looked up again.
    Retired,
}

impl Refusal {
    fn into_denied(self) -> Denied {
        match self {
            Refusal::Denied(denied, _) => denied,
            Refusal::Retired => Denied {
                reason: DenyReason::Unavailable,
                rate: None,
            },
        }
    }
}

/// Decides an identified key's request, in the documented order: revoked or expired, an
/// unreadable route, the workspace's rate limit, the route's scope. Counts the request
/// against the limit when it gets that far and there is room. `now_ms` is the wall clock's
/// (expiry, revocation), `rate_now_ms` the limiters' (`RateClock`).
fn authorize(
    workspace: &WorkspaceState,
    key: &CachedKey,
    requirement: Result<RouteRequirement, RouteError>,
    now_ms: u64,
    rate_now_ms: u64,
) -> Result<Allowed, Refusal> {
    let refuse = |reason, rate, scope| Refusal::Denied(Denied { reason, rate }, scope);
    // Refusals before the limit is checked still report it (every public answer carries
    // `RateLimit-*`), without counting the request.
    let current_rate = || Some(workspace.peek_rate(key.environment, rate_now_ms));
    match key.status_at(clock::to_datetime(now_ms)) {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(refuse(DenyReason::KeyRevoked, current_rate(), None)),
        KeyStatus::Expired => return Err(refuse(DenyReason::KeyExpired, current_rate(), None)),
    }
    let requirement = requirement
        .map_err(|error| refuse(DenyReason::InvalidRoute(error), current_rate(), None))?;
    let needed = match requirement {
        RouteRequirement::Scope(scope) => Some(scope),
        RouteRequirement::NoScope | RouteRequirement::UnknownResource => None,
    };
    let Some(rate) = workspace.check_rate(key.environment, rate_now_ms) else {
        return Err(Refusal::Retired);
    };
    if !rate.allowed {
        return Err(refuse(DenyReason::RateLimited, Some(rate), needed));
    }
    match requirement {
        RouteRequirement::NoScope => Ok(Allowed { rate, scope: None }),
        RouteRequirement::Scope(scope) if key.scopes.grants(scope) => Ok(Allowed {
            rate,
            scope: Some(scope),
        }),
        RouteRequirement::Scope(scope) => Err(refuse(
            DenyReason::InsufficientScope(Some(scope)),
            Some(rate),
            Some(scope),
        )),
        RouteRequirement::UnknownResource => Err(refuse(
            DenyReason::InsufficientScope(None),
            Some(rate),
            None,
        )),
    }
}

/// The method for the audit log, as sent (methods are case-sensitive, and `get` was
/// authorised as the unknown method it is): the standard ones borrowed (no allocation per
/// request), anything else copied and capped, with any credential in it cut first (a key
/// sent as `X-Forwarded-Method`). Capped first, a key would leave its prefix and part of
/// its secret, and a secret without its prefix, cut short, could no longer be recognised.
fn audit_method(method: &str) -> Cow<'static, str> {
    const STANDARD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if let Some(known) = STANDARD.iter().find(|known| **known == method) {
        return Cow::Borrowed(known);
    }
    let method = if mentions_credential(method) {
        Cow::Owned(without_credentials(method))
    } else {
        Cow::Borrowed(method)
    };
    Cow::Owned(truncate(&method, 16).to_owned())
}

/// Extracts the token of `Authorization: Bearer <token>`. On bytes: the scheme and the
/// separator are ASCII, so only the token is checked as text.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, DenyReason> {
    const SCHEME: &[u8] = b"bearer ";
    let header = header.ok_or(DenyReason::MissingCredentials)?;
    let (scheme, token) = header
        .split_at_checked(SCHEME.len())
        .ok_or(DenyReason::InvalidCredentials)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(DenyReason::InvalidCredentials);
    }
    let token = token.trim_ascii();
    if token.is_empty() {
        return Err(DenyReason::InvalidCredentials);
    }
    std::str::from_utf8(token).map_err(|_| DenyReason::InvalidCredentials)
}

/// The path for the audit log: the part the route rule judged, without the query (which
/// may carry secrets), with any credential in it cut (a key pasted into a path must not
/// reach the log), then capped. Cut first, as for the method: capped first, a secret
/// without its prefix that straddles the cap would lose its last characters, no longer be
/// recognised, and reach the log with all of its randomness.
fn audit_path(uri: &str) -> Cow<'_, str> {
    const MAX_BYTES: usize = 512;
    let path = path_of(uri);
    if mentions_credential(path) {
        Cow::Owned(truncate(&without_credentials(path), MAX_BYTES).to_owned())
    } else {
        Cow::Borrowed(truncate(path, MAX_BYTES))
    }
}

/// At most `max_bytes` of `text`, cut at a character boundary.
fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::api_key::Environment;
    use crate::domain::hashing::KeyHash;
    use crate::domain::key_record::{expiry_for, ApiKeyRecord};
    use crate::domain::scope::ScopeSet;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn key(
        environment: Environment,
        scopes: &[&str],
        revoked: bool,
    ) -> (WorkspaceState, Arc<CachedKey>) {
        let created = clock::to_datetime(NOW_MS - 1_000);
        let record = ApiKeyRecord {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            key_hash: KeyHash([1; 32]),
            key_hint: "sp_test_...abcd".into(),
            label: "ci".into(),
            environment,
            scopes: ScopeSet::parse(scopes.iter().copied()).unwrap(),
            created_at: created,
            expires_at: expiry_for(created),
            revoked_at: revoked.then_some(created),
        };
        let state = WorkspaceState::new(Arc::from("ws_1"), NOW_MS, None);
        let cached = state.put_key(&record, NOW_MS);
        (state, cached)
    }

    fn read(resource: &str) -> Result<RouteRequirement, RouteError> {
        crate::domain::route::required_scope("GET", resource)
    }

    fn reason(result: Result<Allowed, Refusal>) -> Option<DenyReason> {
        match result {
            Ok(_) => None,
            Err(Refusal::Denied(denied, _)) => Some(denied.reason),
            Err(Refusal::Retired) => panic!("retired"),
        }
    }

    #[test]
    fn revocation_is_decided_before_the_route_and_costs_no_budget() {
        let (state, key) = key(Environment::Test, &["checks:read"], true);
        let bad_route = Err(RouteError::Ambiguous);
        assert_eq!(
            reason(authorize(&state, &key, bad_route, NOW_MS, NOW_MS)),
            Some(DenyReason::KeyRevoked)
        );
        assert_eq!(state.peek_rate(Environment::Test, NOW_MS).remaining, 120);
    }

    #[test]
    fn an_unreadable_route_costs_no_budget() {
        let (state, key) = key(Environment::Test, &["checks:read"], false);
        let result = authorize(&state, &key, Err(RouteError::NotUnderV1), NOW_MS, NOW_MS);
        assert_eq!(
            reason(result),
            Some(DenyReason::InvalidRoute(RouteError::NotUnderV1))
        );
        assert_eq!(state.peek_rate(Environment::Test, NOW_MS).remaining, 120);
    }

    #[test]
    fn scope_refusals_count_against_the_limit_and_the_limit_comes_first() {
        let (state, key) = key(Environment::Test, &["checks:read"], false);
        for _ in 0..120 {
            let refused = authorize(&state, &key, read("/v1/billing"), NOW_MS, NOW_MS);
            assert!(matches!(
                reason(refused),
                Some(DenyReason::InsufficientScope(Some(_)))
            ));
        }
        let limited = authorize(&state, &key, read("/v1/checks"), NOW_MS, NOW_MS);
        assert_eq!(reason(limited), Some(DenyReason::RateLimited));
    }

    #[test]
    fn granted_requests_report_the_scope_they_consumed() {
        let (state, key) = key(Environment::Live, &["checks:write"], false);
        let granted = authorize(&state, &key, read("/v1/checks"), NOW_MS, NOW_MS)
            .ok()
            .unwrap();
        assert_eq!(granted.scope.map(Scope::as_str), Some("checks:read"));
        assert_eq!(granted.rate.remaining, 1_199);
        let me = authorize(&state, &key, Ok(RouteRequirement::NoScope), NOW_MS, NOW_MS)
            .ok()
            .unwrap();
        assert_eq!(me.scope, None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some(b"bearer  abc ")), Ok("abc"));
        let refused: [&[u8]; 6] = [
            b"Basic abc",
            b"Bearer ",
            b"\xff\xfe",
            b"Bearerabc",
            b"Bearer \xff",
            b"BEARER\tabc",
        ];
        for header in refused {
            assert_eq!(
                bearer_token(Some(header)),
                Err(DenyReason::InvalidCredentials),
                "{header:?}"
            );
        }
        assert_eq!(bearer_token(None), Err(DenyReason::MissingCredentials));
    }

    #[test]
    fn audit_paths_lose_the_query() {
        assert_eq!(audit_path("/v1/checks/1?token=abc"), "/v1/checks/1");
        // A `#` is refused by the route rule, and recorded as sent: what followed it was
        // part of the path to an upstream that took it as a character.
        assert_eq!(audit_path("/v1/checks/1#top"), "/v1/checks/1#top");
        assert_eq!(audit_path("/v1/checks/1#top?x=1"), "/v1/checks/1#top");
        assert_eq!(audit_path(&"/v1/".repeat(200)).len(), 512);
        assert_eq!(
            audit_path("/v1/checks/sp_live_4Fh8kQz0Rj2mXc9v/x?y=1"),
            "/v1/checks/sp_live_…/x"
        );
    }

    #[test]
    fn standard_methods_are_borrowed_and_others_capped() {
        assert!(matches!(audit_method("GET"), Cow::Borrowed("GET")));
        assert!(matches!(audit_method("get"), Cow::Owned(m) if m == "get"));
        assert!(matches!(audit_method("DELETE"), Cow::Borrowed("DELETE")));
        assert_eq!(audit_method("PROPFIND"), "PROPFIND");
        assert_eq!(audit_method(&"X".repeat(40)).len(), 16);
    }

    /// Found by a black-box pass: a key sent as the forwarded method left its prefix and 8
    /// characters of its secret in the audit log, its secret alone 16 characters.
    #[test]
    fn a_key_sent_as_the_method_is_cut_before_the_method_is_capped() {
        let key = &crate::domain::credential_text::tests::fresh_key(
            crate::domain::api_key::Environment::Live,
        );
        let secret = &key["sp_live_".len()..];
        assert_eq!(audit_method(key), "sp_live_…");
        assert_eq!(audit_method(secret), "…");
        assert_eq!(audit_method(&format!("X{key}")), "Xsp_live_…");
    }

    #[test]
    fn a_key_in_a_path_is_cut_before_the_path_is_capped() {
        let key = &crate::domain::credential_text::tests::fresh_key(
            crate::domain::api_key::Environment::Live,
        );
        let secret = &key["sp_live_".len()..];
        // The secret alone, straddling the 512-byte cap: capped first, 37 of its 38
        // characters stayed, too short to be recognised as a key's secret part.
        let filler = "x".repeat(512 - "/v1/checks/".len() - 1 - (secret.len() - 1));
        let path = format!("/v1/checks/{filler}/{secret}");
        assert!(path.len() > 512);
        let audited = audit_path(&path);
        assert!(audited.len() <= 512);
        assert!(!audited.contains(&secret[..20]), "{audited}");
        assert!(audited.ends_with("/…"), "{audited}");
        // With its prefix, cut after the prefix wherever it stands.
        let filler = "x".repeat(500);
        let path = format!("/v1/{filler}/{key}");
        let audited = audit_path(&path);
        assert!(!audited.contains(&secret[..4]), "{audited}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
