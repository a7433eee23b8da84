//! Body and query extractor settings whose errors become our JSON errors, naming the
//! problem (serde's messages name the field: "missing field `label`", "unknown field …").

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::web;

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
/// otherwise quote the input) and whole for data errors (which name the field).
pub fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => error.to_string(),
        Category::Syntax | Category::Eof | Category::Io => {
            format!(
                "malformed JSON at line {} column {}",
                error.line(),
                error.column()
            )
        }
    }
}
