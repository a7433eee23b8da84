//! Workspaces.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{existing_workspace, required_text};
use crate::domain::api_key::Environment;
use crate::domain::ids;
use crate::domain::workspace::Workspace;
use crate::http::error::ApiError;
use crate::http::extractors::{JsonBody, NoQuery};
use crate::http::openapi::ErrorBody;
use crate::http::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1 to 100 characters once leading and trailing white space is trimmed (as stored),
    /// none of them a control character.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceView {
    id: String,
    name: String,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    created_at: DateTime<Utc>,
    rate_limits: RateLimits,
}

/// Requests per minute per environment.
#[derive(Serialize, ToSchema)]
pub struct RateLimits {
    live: u16,
    test: u16,
}

impl From<Workspace> for WorkspaceView {
    fn from(ws: Workspace) -> WorkspaceView {
        WorkspaceView {
            id: ws.id,
            name: ws.name,
            created_at: ws.created_at,
            rate_limits: RateLimits {
                live: Environment::Live.requests_per_minute(),
                test: Environment::Test.requests_per_minute(),
            },
        }
    }
}

/// Creates a workspace.
#[utoipa::path(post, path = "/admin/v1/workspaces", tag = "admin", operation_id = "create_workspace", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<CreateWorkspace>,
) -> Result<HttpResponse, ApiError> {
    let name = required_text(&body.name, "invalid_name", "name", 100, &state.admin_token)?;
    let workspace = Workspace {
        id: ids::new_id(ids::WORKSPACE),
        name,
        created_at: crate::clock::to_datetime(crate::clock::now_ms()),
    };
    state.store.create_workspace(&workspace).await?;
    tracing::info!(workspace_id = %workspace.id, "workspace created");
    Ok(HttpResponse::Created().json(WorkspaceView::from(workspace)))
}

/// Reads a workspace.
#[utoipa::path(get, path = "/admin/v1/workspaces/{ws}", tag = "admin", operation_id = "get_workspace",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let workspace = existing_workspace(&state, &path).await?;
    Ok(HttpResponse::Ok().json(WorkspaceView::from(workspace)))
}
