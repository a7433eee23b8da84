//! The audit event every credentialed request yields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One request's use of a credential. Serializable because it travels through the job
/// queue; the field names are the audit-log API's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// UUIDv7: unique and ordered by time, so it doubles as the pagination cursor and makes
    /// re-delivered events idempotent.
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub workspace_id: String,
    /// `api_key` or `oauth`.
    pub credential_type: String,
    pub credential_id: String,
    pub key_label: Option<String>,
    pub app_name: Option<String>,
    pub method: String,
    pub path: String,
    /// The scope the request consumed; none for `/v1/me` or requests refused before it.
    pub scope: Option<String>,
    pub status: u16,
    pub error_code: Option<String>,
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
