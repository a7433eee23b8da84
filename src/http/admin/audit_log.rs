//! The audit log: newest first, filtered, with cursor pagination.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{existing_workspace, invalid_cursor, page_limit, text_problem};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::scope::Scope;
use crate::http::error::ApiError;
use crate::http::openapi::ErrorBody;
use crate::http::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1_000;

/// Filters; all optional and combined with AND. Parsed by hand so that each bad value gets
/// an error naming its parameter.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// A mistyped filter must be an error, not silently ignored (returning everything).
#[serde(deny_unknown_fields)]
pub struct AuditLogParams {
    /// Exact key label.
    key_label: Option<String>,
    /// Exact OAuth application name.
    app: Option<String>,
    /// A scope name: events that consumed it.
    scope: Option<String>,
    request_id: Option<String>,
    /// RFC 3339; events at or after it.
    since: Option<String>,
    /// RFC 3339; events before it.
    until: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditLogPage {
    data: Vec<AuditEvent>,
    has_more: bool,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Lists audit events of a workspace.
#[utoipa::path(get, path = "/admin/v1/workspaces/{ws}/audit-log", tag = "admin",
    params(("ws" = String, Path, description = "workspace id"), AuditLogParams),
    responses((status = 200, body = AuditLogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<AuditLogParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let limit = page_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(scope) = &params.scope {
        if Scope::parse(scope).is_none() {
            return Err(ApiError::bad_request(
                "invalid_scope",
                "scope must be one of the eleven scope names.",
            ));
        }
    }
    let before = params
        .cursor
        .as_deref()
        .map(|c| Uuid::parse_str(c).map_err(|_| invalid_cursor()))
        .transpose()?;
    let query = AuditQuery {
        key_label: text_filter(params.key_label, "invalid_key_label", "key_label")?,
        app: text_filter(params.app, "invalid_app", "app")?,
        scope: params.scope,
        request_id: text_filter(params.request_id, "invalid_request_id", "request_id")?,
        since: parse_time(params.since.as_deref(), "invalid_since", "since")?,
        until: parse_time(params.until.as_deref(), "invalid_until", "until")?,
        before,
        // One more than asked tells whether another page exists.
        limit: limit + 1,
    };
    let workspace = existing_workspace(&state, &path).await?;
    let mut events = state
        .store
        .query_audit_events(&workspace.id, &query)
        .await?;
    let has_more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = if has_more {
        events.last().map(|e| e.id.hyphenated().to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AuditLogPage {
        data: events,
        has_more,
        next_cursor,
    }))
}

/// Longest text filter: past every label, application name and request id the engine keeps.
const MAX_FILTER_CHARS: usize = 200;

/// A text filter as given, or an error naming it. Without this check a NUL (`?key_label=%00`)
/// failed the query on PostgreSQL with a 500.
fn text_filter(
    value: Option<String>,
    code: &'static str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match value
        .as_deref()
        .and_then(|text| text_problem(text, name, MAX_FILTER_CHARS))
    {
        Some(problem) => Err(ApiError::bad_request(code, problem)),
        None => Ok(value),
    }
}

fn parse_time(
    text: Option<&str>,
    code: &'static str,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(
                    code,
                    format!("{name} must be an RFC 3339 time, like 2026-01-31T12:00:00Z."),
                )
            })
    })
    .transpose()
}
