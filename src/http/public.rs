//! The public listener: `/v1/me`, `/v1/authz`, health.

use std::net::IpAddr;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::authorization::{authorization_header, single_value, Repeated};
use super::error::ApiError;
use super::state::AppState;
use super::{header_values, rate_headers};
use crate::domain::route::{required_scope, RouteError, RouteRequirement};
use crate::metrics::HotRoute;
use crate::request_scope;
use crate::verify::{AccessRequest, DenyReason, RequestFacts};

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_WORKSPACE: HeaderName = HeaderName::from_static("x-statuspulse-workspace");
static X_SCOPES: HeaderName = HeaderName::from_static("x-statuspulse-scopes");
static X_CREDENTIAL: HeaderName = HeaderName::from_static("x-statuspulse-credential");
static X_ENVIRONMENT: HeaderName = HeaderName::from_static("x-statuspulse-environment");

pub fn routes(config: &mut web::ServiceConfig) {
    config
        // Gateways call forward-auth with various methods; the forwarded one is what counts.
        // First: routes are matched in order, and this is the hot one.
        .route("/v1/authz", web::route().to(authz))
        .route("/v1/me", super::read().to(me))
        .route("/healthz", super::read().to(healthz))
        .route("/readyz", super::read().to(readyz))
        .default_service(web::to(unrouted));
}

/// Any other request: 404, after recording its audit event.
async fn unrouted(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    record_credential(&request, &state, Some(DenyReason::NoRoute)).await;
    crate::http::request_context::no_route().await
}

/// The audit event of a request on a route that checks no credential, answered as `denied`
/// says, when it presents a credential that names a key (every request that presents a
/// credential yields one).
pub(crate) async fn record_credential(
    request: &HttpRequest,
    state: &AppState,
    denied: Option<DenyReason>,
) {
    if let Some(authorization) = authorization_header(request.headers()) {
        let request_id = request_scope::current_id();
        let facts = RequestFacts {
            method: request.method().as_str(),
            path: request.path(),
            request_id: &request_id,
            client_addr: request.peer_addr().map(|a| ip_text(a.ip())),
        };
        state
            .verifier
            .record_unchecked(authorization, facts, denied)
            .await;
    }
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    workspace_id: String,
    credential: CredentialView,
    scopes: Vec<&'static str>,
    /// When the key stops working: 365 days after its creation, or the end of the grace
    /// period of a rotation that replaced it, if sooner.
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    expires_at: chrono::DateTime<chrono::Utc>,
    rate_limit: RateLimitView,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialView {
    /// `api_key` (OAuth tokens come later).
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    label: String,
    environment: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct RateLimitView {
    limit: u32,
    remaining: u32,
    /// Seconds until capacity frees up.
    reset: u64,
}

/// Who the credential is.
#[utoipa::path(get, path = "/v1/me", tag = "public",
    responses(
        (status = 200, body = MeResponse, headers(
            ("RateLimit-Limit" = u32, description = "requests per minute for the key's environment"),
            ("RateLimit-Remaining" = u32, description = "requests left in the current window"),
            ("RateLimit-Reset" = u64, description = "seconds until capacity frees up"))),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 429, body = super::openapi::ErrorBody, headers(
            ("Retry-After" = u64, description = "seconds until a request can be accepted"),
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64))),
        (status = 503, body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn me(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request_id = request_scope::current_id();
    let granted = state
        .verifier
        .verify(AccessRequest {
            authorization: authorization_header(request.headers()),
            method: request.method().as_str(),
            path: request.path(),
            requirement: Ok(RouteRequirement::NoScope),
            request_id: &request_id,
            client_addr: request.peer_addr().map(|a| ip_text(a.ip())),
            route: HotRoute::Me,
        })
        .await?;
    let key = &granted.key;
    let body = MeResponse {
        workspace_id: key.workspace_id.to_string(),
        credential: CredentialView {
            kind: "api_key",
            id: key.id.to_string(),
            label: key.label.to_string(),
            environment: key.environment.as_str(),
        },
        scopes: key.scopes.names(),
        expires_at: key.stops_working_at(),
        rate_limit: RateLimitView {
            limit: granted.rate.limit,
            remaining: granted.rate.remaining,
            reset: granted.rate.reset_secs,
        },
    };
    let mut response = HttpResponse::Ok().json(body);
    rate_headers::insert(response.headers_mut(), &granted.rate);
    Ok(response)
}

/// Forward-auth for gateways: authorises the forwarded method and URI. Answered for any
/// method the gateway calls it with (declared here as GET): the forwarded one is what
/// counts.
#[utoipa::path(get, path = "/v1/authz", tag = "public",
    params(
        ("X-Forwarded-Method" = String, Header, description = "method of the request being authorised"),
        ("X-Forwarded-Uri" = String, Header, description = "path (and query) of the request being authorised")),
    responses(
        (status = 200, description = "allowed", headers(
            ("X-StatusPulse-Workspace" = String, description = "the key's workspace id"),
            ("X-StatusPulse-Scopes" = String, description = "the key's effective scopes, space-separated"),
            ("X-StatusPulse-Credential" = String, description = "`api_key:<key id>`"),
            ("X-StatusPulse-Environment" = String, description = "`live` or `test`"),
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64))),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 429, body = super::openapi::ErrorBody, headers(
            ("Retry-After" = u64, description = "seconds until a request can be accepted"),
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64))),
        (status = 503, body = super::openapi::ErrorBody)),
    security(("api_key" = [])))]
pub async fn authz(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request_id = request_scope::current_id();
    let headers = request.headers();
    let method =
        single_value(headers, &X_FORWARDED_METHOD).map(|v| v.and_then(|v| v.to_str().ok()));
    // `Ok(None)`: no header; `Ok(Some(None))`: not UTF-8.
    let uri = single_value(headers, &X_FORWARDED_URI).map(|v| v.map(|v| v.to_str().ok()));
    let requirement = match (method, uri) {
        (Err(Repeated), _) => Err(RouteError::RepeatedMethod),
        (Ok(None), _) => Err(RouteError::BadMethod),
        (_, Err(Repeated)) => Err(RouteError::RepeatedUri),
        (_, Ok(None)) => Err(RouteError::MissingUri),
        (_, Ok(Some(None))) => Err(RouteError::NotAscii),
        (Ok(Some(method)), Ok(Some(Some(uri)))) => required_scope(method, uri),
    };
    // Behind a gateway the peer is the gateway; the client is the first forwarded hop, when
    // that is an address (anything else would reach the audit log as the caller wrote it).
    let client_addr = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .or_else(|| request.peer_addr().map(|a| a.ip()))
        .map(ip_text);
    let granted = state
        .verifier
        .verify(AccessRequest {
            authorization: authorization_header(headers),
            method: method.ok().flatten().unwrap_or("?"),
            path: uri.ok().flatten().flatten().unwrap_or(""),
            requirement,
            request_id: &request_id,
            client_addr,
            route: HotRoute::Authz,
        })
        .await?;
    let key = &granted.key;
    let mut response = HttpResponse::Ok().finish();
    let answer = response.headers_mut();
    rate_headers::insert(answer, &granted.rate);
    // `None` only for an id that is no header value: `id_value` would refuse it too.
    let workspace = granted.workspace.id_header.clone().ok_or_else(corrupt_id)?;
    answer.insert(X_WORKSPACE.clone(), workspace);
    answer.insert(
        X_SCOPES.clone(),
        header_values::scopes(key.scopes.effective()),
    );
    answer.insert(X_CREDENTIAL.clone(), id_value(credential_header(&key.id))?);
    // A static value: no copy, unlike a `&str` turned into a header value.
    answer.insert(
        X_ENVIRONMENT.clone(),
        HeaderValue::from_static(key.environment.as_str()),
    );
    Ok(response)
}

/// A header value of an id that storage gave us: ids are ASCII letters, digits and `_`, so
/// this fails only on a corrupted row.
fn id_value<T>(id: T) -> Result<HeaderValue, ApiError>
where
    HeaderValue: TryFrom<T>,
{
    HeaderValue::try_from(id).map_err(|_| corrupt_id())
}

fn corrupt_id() -> ApiError {
    tracing::error!("an id from storage is not a valid header value");
    super::error::ErrorKind::Internal.into()
}

/// `api_key:<id>`, without the formatting machinery (this runs on every request).
fn credential_header(key_id: &str) -> String {
    let mut value = String::with_capacity(8 + key_id.len());
    value.push_str("api_key:");
    value.push_str(key_id);
    value
}

/// An address as text. `Ipv4Addr`'s `Display` goes through the formatting machinery
/// (measured: about 1% of the engine's CPU at full load); four `itoa` calls do not.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, body = super::openapi::HealthBody)))]
pub async fn healthz(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    record_credential(&request, &state, None).await;
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: storage and the job queue are reachable.
#[utoipa::path(get, path = "/readyz", tag = "public", responses((status = 200, body = super::openapi::HealthBody), (status = 503, body = super::openapi::ErrorBody)))]
pub async fn readyz(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ready = readiness(&state).await;
    let denied = ready.is_err().then_some(DenyReason::Unavailable);
    record_credential(&request, &state, denied).await;
    ready.map(|()| HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

async fn readiness(state: &AppState) -> Result<(), ApiError> {
    state.store.ping().await?;
    if let Err(error) = state.queue.ping().await {
        tracing::warn!(%error, "job queue not ready");
        return Err(super::error::ErrorKind::Unavailable.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        assert_eq!(credential_header("key_1"), "api_key:key_1");
    }
}
