//! The one mapping from errors to HTTP answers. Every error body is
//! `{"error": code, "message": words, "request_id": id}`; the request id is filled in by the
//! request-context middleware, which sees every response.

use std::fmt;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::domain::credential_text;
use crate::domain::rate_limit::RateDecision;
use crate::store::{Conflict, Entity, StoreError};
use crate::verify::{Denied, DenyReason};

pub static X_ERROR: HeaderName = HeaderName::from_static("x-error");

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    /// Rate-limit state to report in `RateLimit-*` headers, when known.
    rate: Option<RateDecision>,
}

#[derive(Debug)]
pub enum ErrorKind {
    /// 401. `presented` says whether a credential was sent at all (RFC 6750's `error`).
    InvalidCredentials {
        presented: bool,
    },
    KeyRevoked,
    KeyExpired,
    /// 403; the scope the route needs, or `None` when no scope grants it.
    InsufficientScope {
        scope: Option<&'static str>,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    Unavailable,
    /// 400 with a code naming the field or header.
    BadRequest {
        code: &'static str,
        message: String,
    },
    /// 422 with a code naming the field.
    Unprocessable {
        code: &'static str,
        message: String,
    },
    NotFound {
        code: &'static str,
        message: String,
    },
    Conflict {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge {
        message: String,
    },
    /// The path exists, not for this method. `allow`: the methods it answers, for the
    /// `Allow` header, when known.
    MethodNotAllowed {
        allow: Option<Arc<str>>,
    },
    UnsupportedMediaType {
        message: String,
    },
    /// 431: more header fields than the HTTP layer parses, or more bytes of them than the
    /// request context allows. Both limits are named, as a client cannot tell which it hit.
    HeadersTooLarge {
        max_fields: usize,
        max_bytes: usize,
    },
    /// 414: the request target exceeds the limit, in bytes.
    UriTooLong {
        limit: usize,
    },
    /// 408: the request (its head, or its body once the head is in) did not arrive whole
    /// within this many seconds.
    RequestTimeout {
        secs: u64,
    },
    /// 500; the cause is logged where it happened, never shown.
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ErrorKind::BadRequest {
            code,
            message: message.into(),
        }
        .into()
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ErrorKind::Unprocessable {
            code,
            message: message.into(),
        }
        .into()
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ErrorKind::NotFound {
            code,
            message: message.into(),
        }
        .into()
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ErrorKind::Conflict {
            code,
            message: message.into(),
        }
        .into()
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            ErrorKind::InvalidCredentials { .. } => "invalid_credentials",
            ErrorKind::KeyRevoked => "key_revoked",
            ErrorKind::KeyExpired => "key_expired",
            ErrorKind::InsufficientScope { .. } => "insufficient_scope",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::BadRequest { code, .. }
            | ErrorKind::Unprocessable { code, .. }
            | ErrorKind::NotFound { code, .. }
            | ErrorKind::Conflict { code, .. } => code,
            ErrorKind::PayloadTooLarge { .. } => "body_too_large",
            ErrorKind::MethodNotAllowed { .. } => "method_not_allowed",
            ErrorKind::UnsupportedMediaType { .. } => "unsupported_media_type",
            ErrorKind::HeadersTooLarge { .. } => "headers_too_large",
            ErrorKind::UriTooLong { .. } => "uri_too_long",
            ErrorKind::RequestTimeout { .. } => "request_timeout",
            ErrorKind::Internal => "internal_error",
        }
    }

    /// Words for a person. Never contains a credential or an internal cause.
    pub fn message(&self) -> String {
        match &self.kind {
            ErrorKind::InvalidCredentials { presented: false } => {
                "No credential: send an Authorization: Bearer header.".into()
            }
            ErrorKind::InvalidCredentials { presented: true } => {
                "The credential is malformed, mistyped or unknown.".into()
            }
            ErrorKind::KeyRevoked => "This API key has been revoked.".into(),
            ErrorKind::KeyExpired => {
                "This API key is more than 365 days old and has been disabled; create a new one."
                    .into()
            }
            ErrorKind::InsufficientScope { scope: Some(scope) } => {
                format!("This credential lacks the {scope} scope that the route needs.")
            }
            ErrorKind::InsufficientScope { scope: None } => {
                "No scope grants access to this route.".into()
            }
            ErrorKind::RateLimited { retry_after_secs } => format!(
                "The workspace is over its rate limit; retry in {retry_after_secs} seconds."
            ),
            ErrorKind::Unavailable => {
                // Also the answer of `/readyz` and of the admin API, which check no credential.
                "Storage is unreachable; retry shortly. A 503 never means that a credential is invalid."
                    .into()
            }
            ErrorKind::BadRequest { message, .. }
            | ErrorKind::Unprocessable { message, .. }
            | ErrorKind::NotFound { message, .. }
            | ErrorKind::Conflict { message, .. }
            | ErrorKind::PayloadTooLarge { message }
            | ErrorKind::UnsupportedMediaType { message } => credential_text::without_credentials(message),
            ErrorKind::MethodNotAllowed { allow: None } => {
                "This method is not allowed on this path.".into()
            }
            ErrorKind::MethodNotAllowed { allow: Some(allow) } => {
                format!("This method is not allowed on this path; it answers {allow}.")
            }
            ErrorKind::HeadersTooLarge {
                max_fields,
                max_bytes,
            } => format!(
                "The request headers are too large: at most {max_fields} fields and {max_bytes} bytes in all."
            ),
            ErrorKind::UriTooLong { limit } => {
                format!("The request URI is too long: at most {limit} bytes.")
            }
            ErrorKind::RequestTimeout { secs } => {
                format!("The request did not arrive in time: send it whole within {secs} seconds.")
            }
            ErrorKind::Internal => "Something went wrong on our side; it has been logged.".into(),
        }
    }

    /// Whether the message quotes what the caller sent (a field, a scope, a parameter):
    /// only such messages can carry a secret the caller pasted in the wrong place.
    pub fn quotes_the_caller(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::BadRequest { .. }
                | ErrorKind::Unprocessable { .. }
                | ErrorKind::NotFound { .. }
                | ErrorKind::Conflict { .. }
                | ErrorKind::PayloadTooLarge { .. }
                | ErrorKind::UnsupportedMediaType { .. }
        )
    }

    /// A JSON body, for callers that build their own responses (the middleware, tests).
    pub fn body(&self, request_id: &str) -> String {
        self.body_with_message(request_id, &self.message())
    }

    /// A JSON body with `message` in place of [`ApiError::message`] (the middleware's, with
    /// the admin token cut from it).
    pub fn body_with_message(&self, request_id: &str, message: &str) -> String {
        serde_json::json!({
            "error": self.code(),
            "message": message,
            "request_id": request_id,
        })
        .to_string()
    }
}

impl From<ErrorKind> for ApiError {
    fn from(kind: ErrorKind) -> ApiError {
        ApiError { kind, rate: None }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match &self.kind {
            ErrorKind::InvalidCredentials { .. } => StatusCode::UNAUTHORIZED,
            ErrorKind::KeyRevoked | ErrorKind::KeyExpired | ErrorKind::InsufficientScope { .. } => {
                StatusCode::FORBIDDEN
            }
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ErrorKind::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound { .. } => StatusCode::NOT_FOUND,
            ErrorKind::Conflict { .. } => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ErrorKind::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Status and headers; the body is written by the middleware, which knows the request id.
    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((X_ERROR.clone(), HeaderValue::from_static(self.code())));
        match &self.kind {
            ErrorKind::InvalidCredentials { presented } => {
                let challenge = if *presented {
                    "Bearer realm=\"statuspulse\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"statuspulse\""
                };
                response.insert_header((WWW_AUTHENTICATE, challenge));
            }
            ErrorKind::InsufficientScope { scope } => {
                let challenge = match scope {
                    Some(scope) => format!(
                        "Bearer realm=\"statuspulse\", error=\"insufficient_scope\", scope=\"{scope}\""
                    ),
                    None => "Bearer realm=\"statuspulse\", error=\"insufficient_scope\"".to_owned(),
                };
                response.insert_header((WWW_AUTHENTICATE, challenge));
            }
            ErrorKind::RateLimited { retry_after_secs } => {
                response.insert_header((RETRY_AFTER, retry_after_secs.to_string()));
            }
            ErrorKind::MethodNotAllowed { allow: Some(allow) } => {
                response.insert_header((ALLOW, allow.as_ref()));
            }
            // The body was not read to its end: the connection cannot carry another request
            // (the rest of the body would be read as one), and the HTTP layer would otherwise
            // read a chunked body's rest to keep it.
            ErrorKind::RequestTimeout { .. } | ErrorKind::PayloadTooLarge { .. } => {
                response.force_close();
            }
            _ => {}
        }
        let mut response = response.finish();
        if let Some(rate) = &self.rate {
            super::rate_headers::insert(response.headers_mut(), rate);
        }
        response
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        let kind = match denied.reason {
            DenyReason::MissingCredentials => ErrorKind::InvalidCredentials { presented: false },
            DenyReason::InvalidCredentials => ErrorKind::InvalidCredentials { presented: true },
            DenyReason::KeyRevoked => ErrorKind::KeyRevoked,
            DenyReason::KeyExpired => ErrorKind::KeyExpired,
            DenyReason::InvalidRoute(error) => {
                let (_, code) = denied.reason.status_and_code();
                ErrorKind::BadRequest {
                    code,
                    message: format!("X-Forwarded-Method/X-Forwarded-Uri: {error}."),
                }
            }
            DenyReason::RateLimited => ErrorKind::RateLimited {
                retry_after_secs: denied.rate.map(|r| r.reset_secs).unwrap_or(1),
            },
            // The challenge names only a scope a credential could be given.
            DenyReason::InsufficientScope(scope) => ErrorKind::InsufficientScope {
                scope: scope.filter(|s| s.is_grantable()).map(|s| s.as_str()),
            },
            DenyReason::Unavailable => ErrorKind::Unavailable,
            DenyReason::NoRoute => ErrorKind::NotFound {
                code: "not_found",
                message: "No such route.".into(),
            },
            DenyReason::HeadersTooLarge => return super::request_context::headers_too_large(),
            DenyReason::UriTooLong => return super::request_context::uri_too_long(),
        };
        ApiError {
            kind,
            rate: denied.rate,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Unavailable(cause) => {
                // With its causes ("…: db error: FATAL: the database system is starting up"):
                // alone, deadpool's outer error says only that a connection was not made.
                tracing::warn!(error = %format!("{cause:#}"), "storage unavailable");
                ErrorKind::Unavailable.into()
            }
            StoreError::NotFound(entity) => {
                let code = match entity {
                    Entity::Workspace => "workspace_not_found",
                    Entity::ApiKey => "api_key_not_found",
                    Entity::User => "user_not_found",
                };
                ApiError::not_found(code, format!("No such {entity}."))
            }
            StoreError::Conflict(Conflict::TooManyActiveKeys) => ApiError::conflict(
                "too_many_active_keys",
                "Two active keys already exist for this workspace, environment and scope set; \
                 revoke or rotate one first.",
            ),
            StoreError::Conflict(Conflict::KeyNotActive) => {
                ApiError::conflict("key_not_active", "Only an active key can be rotated.")
            }
            StoreError::Conflict(Conflict::EmailTaken) => {
                ApiError::conflict("email_taken", "A user with this email already exists.")
            }
            StoreError::Conflict(Conflict::AlreadyMember) => ApiError::conflict(
                "already_member",
                "This user is already a member of the workspace.",
            ),
            StoreError::Internal(cause) => {
                // The causes on one line; `Debug` would add a backtrace wherever
                // RUST_BACKTRACE is set, some eighty lines per failing request.
                tracing::error!(error = %format!("{cause:#}"), "storage error");
                ErrorKind::Internal.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_quote_a_credential() {
        let key = "sp_live_4Fh8kQz0Rj2mXc9vB1nT7yLpW3sD6gHq5aE0uK";
        let error = ApiError::unprocessable("invalid_scopes", format!("unknown scope \"{key}\""));
        assert_eq!(error.message(), "unknown scope \"sp_live_…\"");
        assert!(!error.body("r").contains("4Fh8kQz0"));
    }

    #[test]
    fn codes_map_to_the_contract_statuses() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ErrorKind::InvalidCredentials { presented: true }.into(),
                401,
                "invalid_credentials",
            ),
            (ErrorKind::KeyRevoked.into(), 403, "key_revoked"),
            (ErrorKind::KeyExpired.into(), 403, "key_expired"),
            (
                ErrorKind::InsufficientScope {
                    scope: Some("checks:write"),
                }
                .into(),
                403,
                "insufficient_scope",
            ),
            (
                ErrorKind::RateLimited {
                    retry_after_secs: 3,
                }
                .into(),
                429,
                "rate_limited",
            ),
            (ErrorKind::Unavailable.into(), 503, "unavailable"),
            (
                ErrorKind::HeadersTooLarge {
                    max_fields: 96,
                    max_bytes: 16,
                }
                .into(),
                431,
                "headers_too_large",
            ),
            (
                ErrorKind::UriTooLong { limit: 8 }.into(),
                414,
                "uri_too_long",
            ),
            (
                ErrorKind::RequestTimeout { secs: 5 }.into(),
                408,
                "request_timeout",
            ),
            (
                ApiError::unprocessable("invalid_scopes", "x"),
                422,
                "invalid_scopes",
            ),
            (
                ApiError::bad_request("invalid_body", "x"),
                400,
                "invalid_body",
            ),
            (
                StoreError::Conflict(Conflict::TooManyActiveKeys).into(),
                409,
                "too_many_active_keys",
            ),
            (
                StoreError::NotFound(Entity::Workspace).into(),
                404,
                "workspace_not_found",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status_code().as_u16(), status, "{code}");
            assert_eq!(error.code(), code);
            let response = error.error_response();
            assert_eq!(response.headers().get("x-error").unwrap(), code);
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let response = ApiError::from(ErrorKind::InsufficientScope {
            scope: Some("checks:write"),
        })
        .error_response();
        assert_eq!(
            response.headers().get(WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"statuspulse\", error=\"insufficient_scope\", scope=\"checks:write\""
        );
        let response = ApiError::from(ErrorKind::RateLimited {
            retry_after_secs: 7,
        })
        .error_response();
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "7");
    }
}
