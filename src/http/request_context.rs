//! The outermost middleware of both listeners: gives every request an id (the caller's
//! `X-Request-ID` when sane), serves it with that id on every log line, returns the id
//! on every answer, writes the JSON body of every error, and counts responses.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use uuid::{NoContext, Timestamp, Uuid};

use super::error::{ApiError, ErrorKind, X_ERROR};
use super::parse_refusals::MAX_HEADER_FIELDS;
use super::public;
use super::state::AppState;
use crate::domain::credential_text::mentions_credential;
use crate::metrics::{AdminRoute, Listener};
use crate::request_scope;
use crate::verify::DenyReason;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn request_context<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let id_header = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            v.to_str()
                .is_ok_and(|id| is_sane_request_id(id) && !holds_admin_token(&request, id))
        })
        .cloned()
        .unwrap_or_else(fresh_request_id);
    // Both kinds are visible ASCII, so this is never empty.
    let id = id_header.to_str().unwrap_or_default().into();
    request_scope::run(id, respond(request, next, id_header)).await
}

async fn respond<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
    id_header: HeaderValue,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    // Inner middleware answers errors as responses (never `Err`), so every error passes
    // through the body writer below.
    let response = match oversized_head(&request) {
        Some(oversized) => {
            record_oversized(&request, oversized).await;
            request
                .error_response(oversized.error())
                .map_into_right_body()
        }
        None => next.call(request).await?.map_into_left_body(),
    };
    let mut response = if response.status().is_client_error() || response.status().is_server_error()
    {
        with_json_error_body(response, id_header.to_str().unwrap_or_default())
    } else {
        response
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id_header);
    if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
        let listener = *response
            .request()
            .app_data::<Listener>()
            .unwrap_or(&Listener::Public);
        // Looked up on the admin listener only: not a cost of the hot path.
        let admin_route = (listener == Listener::Admin)
            .then(|| response.request().app_data::<AdminRoute>().copied())
            .flatten();
        state
            .metrics
            .record_response(listener, admin_route, response.status().as_u16());
    }
    Ok(response)
}

/// Most bytes of header fields (names, values, and 4 per line for `: ` and CRLF), as Node.js
/// and http.sys allow; the HTTP layer itself refuses past 128 KiB or 96 fields (answered in
/// our form by `parse_refusals`). A credential is under 100 bytes.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most bytes of a request target (path and query).
const MAX_URI_BYTES: usize = 8 * 1024;

/// Which of our limits a request head is past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Oversized {
    Uri,
    Headers,
}

impl Oversized {
    /// The JSON error that names the problem.
    fn error(self) -> ApiError {
        match self {
            Oversized::Uri => uri_too_long(),
            Oversized::Headers => headers_too_large(),
        }
    }
}

/// Finds a request head past our limits, to be refused before any handler reads it.
fn oversized_head(request: &ServiceRequest) -> Option<Oversized> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Some(Oversized::Uri);
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (header_bytes > MAX_HEADER_BYTES).then_some(Oversized::Headers)
}

/// The audit event of an oversized request to the public listener that presents a key:
/// refused before any handler, it still yields one (with its own method and path, cut as
/// every audited path is), and is not counted against the limit.
async fn record_oversized(request: &ServiceRequest, oversized: Oversized) {
    if request.app_data::<Listener>() != Some(&Listener::Public) {
        return;
    }
    let Some(state) = request.app_data::<web::Data<AppState>>() else {
        return;
    };
    let reason = match oversized {
        Oversized::Uri => DenyReason::UriTooLong,
        Oversized::Headers => DenyReason::HeadersTooLarge,
    };
    public::record_credential(request.request(), state, Some(reason)).await;
}

/// The 431 for a head past either limit: ours in bytes, or the HTTP layer's in fields.
pub fn headers_too_large() -> ApiError {
    ErrorKind::HeadersTooLarge {
        max_fields: MAX_HEADER_FIELDS,
        max_bytes: MAX_HEADER_BYTES,
    }
    .into()
}

/// The 414 for a request target past our limit.
pub fn uri_too_long() -> ApiError {
    ErrorKind::UriTooLong {
        limit: MAX_URI_BYTES,
    }
    .into()
}

/// A new request id: a UUIDv7 from this instant. Not `Uuid::now_v7`, whose counter sits
/// behind a process-wide lock that every request would take.
pub fn fresh_request_id() -> HeaderValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        now.as_secs(),
        now.subsec_nanos(),
    ));
    let mut text = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Whether a request id sent to the admin listener holds the operator's admin token (which
/// has no shape of its own: found by its hash, span by span). Not looked for on the public
/// listener, where gateways send an id with every request and the spans' hashes would cost
/// the hot path several microseconds; no caller there is given the admin token.
fn holds_admin_token(request: &ServiceRequest, id: &str) -> bool {
    request.app_data::<Listener>() == Some(&Listener::Admin)
        && request
            .app_data::<web::Data<AppState>>()
            .is_some_and(|state| state.admin_token.appears_in(id))
}

/// Letters, digits and `._:-`, at most 128 characters: anything else could forge log lines
/// or smuggle content into headers, so it is replaced by a fresh id. So is an id that
/// starts like a credential: the id goes into every log line and the audit log.
fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !mentions_credential(id)
}

fn with_json_error_body<B: MessageBody + 'static>(
    response: ServiceResponse<EitherBody<B>>,
    request_id: &str,
) -> ServiceResponse<EitherBody<B>> {
    let status = response.status();
    let (body, framework_code) = match response.response().error() {
        Some(error) => match error.as_error::<ApiError>() {
            Some(api_error) => {
                // A 503 is an outage, logged (once per interval) where it is found; a line
                // per refused request would flood the log while it lasts.
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    let request = response.request();
                    tracing::error!(
                        code = api_error.code(),
                        method = %request.method(),
                        path = request.path(),
                        "request failed"
                    );
                }
                // Keys are cut from messages where they are made; the operator's admin token
                // has no shape of its own, so it is cut here, where the server knows it (on
                // the admin listener: as for request ids, see `holds_admin_token`).
                let mut message = api_error.message();
                let request = response.request();
                if api_error.quotes_the_caller()
                    && request.app_data::<Listener>() == Some(&Listener::Admin)
                {
                    if let Some(state) = request.app_data::<web::Data<AppState>>() {
                        message = state.admin_token.cut_from(&message).into_owned();
                    }
                }
                (api_error.body_with_message(request_id, &message), None)
            }
            None => {
                tracing::debug!(%error, "framework error");
                let api_error = framework_error(status);
                (api_error.body(request_id), Some(api_error.code()))
            }
        },
        None => {
            let api_error = framework_error(status);
            (api_error.body(request_id), Some(api_error.code()))
        }
    };
    response.map_body(|head, _| {
        head.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Our own errors carry `X-Error` already; the framework's get it here.
        if let Some(code) = framework_code {
            head.headers
                .insert(X_ERROR.clone(), HeaderValue::from_static(code));
        }
        EitherBody::right(BoxBody::new(body))
    })
}

/// The error for a status raised by the framework rather than by our handlers (unmatched
/// routes, methods, oversized or unreadable requests), in the one error vocabulary.
fn framework_error(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found("not_found", "No such route."),
        StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed { allow: None }.into(),
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge {
            message: "The request body is too large.".into(),
        }
        .into(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => headers_too_large(),
        StatusCode::URI_TOO_LONG => uri_too_long(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType {
            message: "Send a JSON body with Content-Type: application/json.".into(),
        }
        .into(),
        s if s.is_client_error() => {
            ApiError::bad_request("bad_request", "The request could not be read.")
        }
        _ => ErrorKind::Internal.into(),
    }
}

/// A default service answer for unmatched routes, so they go through the same body writer.
pub async fn no_route() -> Result<actix_web::HttpResponse, ApiError> {
    Err(framework_error(StatusCode::NOT_FOUND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_sane_uuids() {
        let first = fresh_request_id();
        let second = fresh_request_id();
        assert_ne!(first, second);
        let text = first.to_str().unwrap();
        assert!(is_sane_request_id(text));
        assert_eq!(Uuid::parse_str(text).unwrap().get_version_num(), 7);
    }

    #[test]
    fn request_ids_are_checked_for_sanity() {
        assert!(is_sane_request_id("req_123-abc.def:9"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("a b"));
        assert!(!is_sane_request_id("a\nb"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
        assert!(!is_sane_request_id("sp_live_4Fh8kQz0Rj2mXc9v"));
        assert!(!is_sane_request_id("id-sp_admin_00ff"));
    }
}
