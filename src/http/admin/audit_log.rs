//! The audit log: newest first, filtered, with cursor pagination.

use std::borrow::Cow;

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
    #[param(max_length = 200)]
    key_label: Option<String>,
    /// Exact OAuth application name.
    #[param(max_length = 200)]
    app: Option<String>,
    /// A scope name: events that consumed it.
    #[param(value_type = Option<crate::http::openapi::RequiredScopeName>)]
    scope: Option<String>,
    #[param(max_length = 200)]
    request_id: Option<String>,
    /// RFC 3339; events at or after it.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// RFC 3339; events before it (later than `since`).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
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
#[utoipa::path(get, path = "/admin/v1/workspaces/{ws}/audit-log", tag = "admin", operation_id = "list_audit_events",
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
        if Scope::parse_required(scope).is_none() {
            return Err(ApiError::bad_request(
                "invalid_scope",
                "scope must be one of the eleven scope names, or billing:write (required by \
                 writes to /v1/billing, which no key can hold).",
            ));
        }
    }
    let before = params
        .cursor
        .as_deref()
        .map(|c| Uuid::parse_str(c).map_err(|_| invalid_cursor()))
        .transpose()?;
    let since = parse_time(params.since.as_deref(), "invalid_since", "since")?;
    let until = parse_time(params.until.as_deref(), "invalid_until", "until")?;
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            // An empty window is a mistake, not a question with an empty answer.
            return Err(ApiError::bad_request(
                "invalid_until",
                "until must be later than since (since is inclusive, until exclusive).",
            ));
        }
    }
    let query = AuditQuery {
        key_label: text_filter(params.key_label, "invalid_key_label", "key_label")?,
        app: text_filter(params.app, "invalid_app", "app")?,
        scope: params.scope,
        request_id: text_filter(params.request_id, "invalid_request_id", "request_id")?,
        since,
        until,
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
        DateTime::parse_from_rfc3339(&with_plus_offset(t))
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(
                    code,
                    format!(
                        "{name} must be an RFC 3339 time, like 2026-01-31T12:00:00Z \
                         (in a query string, write an offset's + as %2B)."
                    ),
                )
            })
    })
    .transpose()
}

/// A time whose offset lost its `+` to query decoding (`...T12:00:00 02:00`, sent unencoded
/// as `+02:00`) gets it back: RFC 3339 has no other place for a space followed by `hh:mm`
/// at the end.
fn with_plus_offset(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let offset_at = bytes.len().wrapping_sub(6);
    let lost_plus = bytes.len() > 6
        && bytes[offset_at] == b' '
        && bytes[offset_at + 1..offset_at + 3]
            .iter()
            .all(u8::is_ascii_digit)
        && bytes[offset_at + 3] == b':'
        && bytes[offset_at + 4..].iter().all(u8::is_ascii_digit);
    if lost_plus {
        Cow::Owned(format!("{}+{}", &text[..offset_at], &text[offset_at + 1..]))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_whose_plus_became_a_space_gets_it_back() {
        assert_eq!(
            with_plus_offset("2026-12-01T12:00:00 02:00"),
            "2026-12-01T12:00:00+02:00"
        );
        assert_eq!(
            with_plus_offset("2026-12-01T12:00:00.5 14:00"),
            "2026-12-01T12:00:00.5+14:00"
        );
        for unchanged in [
            "2026-12-01T12:00:00Z",
            "2026-12-01T12:00:00-02:00",
            "2026-12-01 12:00:00Z",
            " 02:00",
            "",
            "x 0a:00",
        ] {
            assert_eq!(with_plus_offset(unchanged), unchanged);
        }
        let parsed = parse_time(Some("2026-12-01T12:00:00 02:00"), "invalid_since", "since")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.to_rfc3339(), "2026-12-01T10:00:00+00:00");
    }
}
