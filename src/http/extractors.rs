//! Body and query extractor settings whose errors become our JSON errors, naming the
//! problem (serde's messages name the field: "missing field `label`", "unknown field …").

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind};

/// Admin request bodies are small; anything larger is refused before parsing.
pub const MAX_JSON_BODY: usize = 64 * 1024;

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_JSON_BODY)
        .error_handler(|error, _request| {
            let api_error: ApiError = match &error {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => ErrorKind::PayloadTooLarge {
                    message: format!("The body is larger than {MAX_JSON_BODY} bytes."),
                }
                .into(),
                JsonPayloadError::ContentType => ErrorKind::UnsupportedMediaType {
                    message: "Send a JSON body with Content-Type: application/json.".into(),
                }
                .into(),
                JsonPayloadError::Deserialize(cause) => ApiError::bad_request(
                    "invalid_body",
                    format!("Invalid JSON body: {}", describe(cause)),
                ),
                _ => ApiError::bad_request("invalid_body", "The body could not be read as JSON."),
            };
            api_error.into()
        })
}

/// A JSON request body, as `web::Json` reads it (same limit, content type and syntax
/// errors, from `json_config`), but whose data errors name the field they are about:
/// serde_json alone says "invalid type: integer, expected a string" without saying where.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(request, payload);
        Box::pin(async move {
            let web::Json(value) = json.await?;
            serde_path_to_error::deserialize(value)
                .map(JsonBody)
                .map_err(|error| invalid_body(&error).into())
        })
    }
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

/// Raw bodies (`web::Bytes`, for optional bodies) get the same size limit as JSON ones.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_JSON_BODY)
}

/// An optional JSON body, with the same rules as `web::Json`: an empty body means
/// `T::default()`; otherwise it must be declared `application/json` and parse.
pub fn optional_json<T: DeserializeOwned + Default>(
    request: &HttpRequest,
    body: &web::Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json =
        matches!(request.mime_type(), Ok(Some(m)) if m.essence_str() == "application/json");
    if !is_json {
        return Err(ErrorKind::UnsupportedMediaType {
            message: "Send a JSON body with Content-Type: application/json.".into(),
        }
        .into());
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(|error| invalid_body(&error))
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
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            let error = serde_path_to_error::deserialize::<_, Body>(value).unwrap_err();
            invalid_body(&error).to_string()
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
