//! The audit event every credentialed request yields.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kind of credential a request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    ApiKey,
    Oauth,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::Oauth => "oauth",
        }
    }

    pub fn parse(text: &str) -> Option<CredentialType> {
        match text {
            "api_key" => Some(CredentialType::ApiKey),
            "oauth" => Some(CredentialType::Oauth),
            _ => None,
        }
    }
}

/// One request's use of a credential, as the audit log records it.
// Serializable because it travels through the job queue; the field names are the audit-log
// API's. (The doc comment above is the OpenAPI schema's description.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// UUIDv7: unique and ordered by time, so it doubles as the pagination cursor and makes
    /// re-delivered events idempotent.
    pub id: Uuid,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub workspace_id: Arc<str>,
    pub credential_type: CredentialType,
    #[schema(value_type = String)]
    pub credential_id: Arc<str>,
    #[schema(value_type = Option<String>)]
    pub key_label: Option<Arc<str>>,
    #[schema(value_type = Option<String>)]
    pub app_name: Option<Arc<str>>,
    #[schema(value_type = String)]
    pub method: Cow<'static, str>,
    pub path: String,
    /// The scope the request consumed (or was refused for); none for `/v1/me` and for
    /// requests refused before the scope was known.
    #[schema(value_type = Option<String>)]
    pub scope: Option<Cow<'static, str>>,
    pub status: u16,
    #[schema(value_type = Option<String>)]
    pub error_code: Option<Cow<'static, str>>,
    pub request_id: String,
    pub client_addr: Option<String>,
}

/// Filters of the audit-log API. All optional; `before` is the pagination cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub key_label: Option<String>,
    pub app: Option<String>,
    pub scope: Option<String>,
    pub request_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only events older than this id (newest first paging).
    pub before: Option<Uuid>,
    pub limit: u32,
}
