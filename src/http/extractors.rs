//! Body and query extractor settings whose errors become our JSON errors, naming the
//! problem (serde's messages name the field: "missing field `label`", "unknown field …").

use std::future::Future;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::QueryPayloadError;
use actix_web::http::StatusCode;
use actix_web::mime;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind};
use crate::domain::credential_text::quotable;

/// Admin request bodies are small; anything larger is refused before parsing.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// How long a body may take to arrive once the head has: without a limit, a client that
/// declares a length and sends less holds its request (and a connection) open forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON object request body. Read whole (at most `MAX_JSON_BODY` bytes, within
/// `BODY_TIMEOUT`), declared as JSON (`application/json` or a `+json` type), and parsed
/// straight into `T`, so that a field given twice is refused, as is a JSON array in place
/// of the object. Data errors name the field they are about: serde_json alone says
/// "invalid type: integer, expected a string" without saying where.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_object(request, payload, None);
        Box::pin(async move { body.await.map(JsonBody) })
    }
}

/// A JSON body that may be left out: an empty body means `T::default()`; a present one
/// follows the rules of [`JsonBody`].
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_object(request, payload, Some(T::default));
        Box::pin(async move { body.await.map(OptionalJsonBody) })
    }
}

/// Reads a body that must be one JSON object. `if_empty`, for optional bodies, answers an
/// empty one (before its content type is looked at); a required body is refused for its
/// content type before it is read.
fn json_object<T: DeserializeOwned + 'static>(
    request: &HttpRequest,
    payload: &mut Payload,
    if_empty: Option<fn() -> T>,
) -> impl Future<Output = Result<T, actix_web::Error>> + 'static {
    let declared_json = is_declared_json(request);
    let encoded = encoding_refusal(request);
    let body = read_body(request, payload);
    async move {
        // Refused before the body is read: it would not parse, and the error would say
        // "not JSON" about a body that may well be JSON, compressed.
        if let Some(refusal) = encoded {
            return Err(refusal.into());
        }
        if if_empty.is_none() && !declared_json {
            return Err(not_json().into());
        }
        let body = body.await?;
        if let Some(default) = if_empty {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(default());
            }
        }
        if !declared_json {
            return Err(not_json().into());
        }
        Ok(parse_object(&body)?)
    }
}

fn read_body(
    request: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<web::Bytes, ApiError>> + 'static {
    let bytes = web::Bytes::from_request(request, payload);
    async move {
        match actix_web::rt::time::timeout(BODY_TIMEOUT, bytes).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(error))
                if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ErrorKind::PayloadTooLarge {
                    message: format!("The body is larger than {MAX_JSON_BODY} bytes."),
                }
                .into())
            }
            // The body's framing (chunk sizes, length) is broken: not valid HTTP/1.1.
            Ok(Err(_)) => Err(ApiError::bad_request(
                "malformed_request",
                "The body could not be read: its chunked framing or length is not valid HTTP/1.1.",
            )),
            Err(_elapsed) => Err(ErrorKind::RequestTimeout {
                secs: BODY_TIMEOUT.as_secs(),
            }
            .into()),
        }
    }
}

fn is_declared_json(request: &HttpRequest) -> bool {
    matches!(request.mime_type(), Ok(Some(mime))
        if mime.type_() == mime::APPLICATION
            && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON)))
}

/// A body with a `Content-Encoding` other than `identity`: bodies are taken as sent, never
/// decompressed (an admin body is at most 64 KiB), so an encoded one is refused naming its
/// encoding, rather than read as if it were not encoded.
fn encoding_refusal(request: &HttpRequest) -> Option<ApiError> {
    let encodings: Vec<String> = request
        .headers()
        .get_all(actix_web::http::header::CONTENT_ENCODING)
        .map(|value| {
            value
                .to_str()
                .map_or_else(|_| "(not text)".to_owned(), |text| text.trim().to_owned())
        })
        .filter(|text| !text.eq_ignore_ascii_case("identity") && !text.is_empty())
        .collect();
    if encodings.is_empty() {
        return None;
    }
    let named = quotable(&encodings.join(", "), 64);
    Some(
        ErrorKind::UnsupportedMediaType {
            message: format!(
                "Content-Encoding {named} is not accepted: send the JSON body as is, not encoded."
            ),
        }
        .into(),
    )
}

fn not_json() -> ApiError {
    ErrorKind::UnsupportedMediaType {
        message: "Send a JSON body with Content-Type: application/json.".into(),
    }
    .into()
}

/// Parses a body that must be one JSON object.
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::bad_request(
            "invalid_body",
            "Invalid JSON body: expected a JSON object.",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| invalid_body(&e))?;
    deserializer.end().map_err(|error| {
        ApiError::bad_request(
            "invalid_body",
            format!("Invalid JSON body: {}", describe(&error)),
        )
    })?;
    Ok(value)
}

fn invalid_body(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let problem = describe(error.inner());
    let message = if path == "." {
        // About the body itself ("missing field `label`"): the message names the field.
        format!("Invalid JSON body: {problem}")
    } else {
        format!("Invalid JSON body: `{path}`: {problem}")
    };
    ApiError::bad_request("invalid_body", message)
}

/// Raw bodies get the same size limit as JSON ones.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_JSON_BODY)
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _request| {
        let message = match &error {
            QueryPayloadError::Deserialize(cause) => format!("Invalid query string: {cause}"),
            _ => "Invalid query string.".to_owned(),
        };
        ApiError::bad_request("invalid_query", message).into()
    })
}

/// For an operation that takes no query parameters: a query string is refused (400
/// `invalid_query`), as the list operations refuse parameters they do not know, rather
/// than ignored, so that a mistyped request is not mistaken for the one meant. The message
/// does not quote the query: it could hold anything, a key included.
pub struct NoQuery;

impl FromRequest for NoQuery {
    type Error = ApiError;
    type Future = std::future::Ready<Result<NoQuery, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(if request.query_string().is_empty() {
            Ok(NoQuery)
        } else {
            Err(ApiError::bad_request(
                "invalid_query",
                "This operation takes no query parameters.",
            ))
        })
    }
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_error, _request| {
        ApiError::not_found("not_found", "No such resource.").into()
    })
}

/// serde_json's message, kept to its category and position for syntax errors (which could
/// otherwise quote the input), and for data errors whole (they name the field) except for the
/// offending value: "invalid type: integer `12345678`" could be a password.
pub fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => without_value(&error.to_string()),
        Category::Syntax | Category::Eof | Category::Io => {
            format!(
                "malformed JSON at line {} column {}",
                error.line(),
                error.column()
            )
        }
    }
}

/// "invalid type: string \"hunter2\", expected u32" → "invalid type: string, expected u32".
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((unexpected, rest)) = message
            .strip_prefix(prefix)
            .and_then(|m| m.split_once(", expected"))
        {
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or_default()
                .trim();
            return format!("{prefix}{kind}, expected{rest}");
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_a_content_encoding_is_cut_before_the_list_is_capped() {
        let key = &crate::domain::credential_text::tests::fresh_key(
            crate::domain::api_key::Environment::Live,
        );
        let secret = &key["sp_live_".len()..];
        // 27 characters, then the secret: the 64th character is its next to last.
        let encoding = format!("gzip, deflate, br, zstd, x-{secret}");
        let request = actix_web::test::TestRequest::default()
            .insert_header(("Content-Encoding", encoding.as_str()))
            .to_http_request();
        let message = encoding_refusal(&request).unwrap().message();
        assert!(!message.contains(&secret[..20]), "{message}");
        assert!(message.contains("x-…"), "{message}");
    }

    fn message_for(body: &str) -> String {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            password: String,
            count: u32,
        }
        describe(&serde_json::from_str::<Body>(body).unwrap_err())
    }

    #[test]
    fn type_errors_name_the_field_they_are_about() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: String,
            scopes: Vec<String>,
        }
        let message = |body: &str| {
            parse_object::<Body>(body.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let wrong = message(r#"{"name": 5, "scopes": []}"#);
        assert!(
            wrong.contains("`name`: invalid type: integer, expected a string"),
            "{wrong}"
        );
        let nested = message(r#"{"name": "x", "scopes": ["a", 7]}"#);
        assert!(nested.contains("`scopes[1]`"), "{nested}");
        let missing = message(r#"{"name": "x"}"#);
        assert!(missing.contains("missing field `scopes`"), "{missing}");
    }

    #[test]
    fn a_body_must_be_one_object_with_each_field_once() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let error = |body: &str| {
            parse_object::<Body>(body.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(error(r#"["x"]"#).contains("expected a JSON object"));
        assert!(error(r#"{"name": "a", "name": "b"}"#).contains("duplicate field `name`"));
        assert!(error(r#"{"name": "a"} {"name": "b"}"#).contains("malformed JSON"));
        assert!(error("").contains("malformed JSON"));
        assert_eq!(
            parse_object::<Body>(br#" {"name": "a"} "#).unwrap().name,
            "a"
        );
    }

    #[test]
    fn data_errors_name_the_field_but_not_the_value() {
        let wrong_type = message_for(r#"{"password": 12345678, "count": 1}"#);
        assert!(!wrong_type.contains("12345678"), "{wrong_type}");
        assert!(
            wrong_type.starts_with("invalid type: integer, expected a string"),
            "{wrong_type}"
        );
        let wrong_value = message_for(r#"{"password": "x", "count": "hunter2"}"#);
        assert!(!wrong_value.contains("hunter2"), "{wrong_value}");
        let missing = message_for(r#"{"count": 1}"#);
        assert!(missing.contains("missing field `password`"), "{missing}");
    }
}
