//! API keys: create (the key is shown once), list, get, revoke, rotate.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{existing_workspace, invalid_cursor, page_limit, required_text};
use crate::domain::api_key::{generate_key, Environment};
use crate::domain::ids;
use crate::domain::key_record::{expiry_for, ApiKeyRecord, MAX_ACTIVE_KEYS_PER_SCOPE_SET};
use crate::domain::scope::ScopeSet;
use crate::http::error::ApiError;
use crate::http::extractors::{JsonBody, NoQuery, OptionalJsonBody};
use crate::http::openapi::{ErrorBody, ScopeName};
use crate::http::state::AppState;
use crate::store::{NewApiKey, StoreError};

/// The longest grace period a rotation may give the old key.
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
/// Keys per page of a listing, by default and at most.
const MAX_PAGE: u32 = 100;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1 to 100 characters once leading and trailing white space is trimmed (as stored),
    /// none of them a control character, e.g. `deploy-pipeline-prod`.
    #[schema(min_length = 1, max_length = 100)]
    label: String,
    /// `live` (default) or `test`.
    #[schema(value_type = Option<Environment>)]
    environment: Option<String>,
    /// At least one of the eleven scopes; fixed for the key's life.
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    scopes: Vec<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// How long the old key keeps working, 0 (default) to 604800 seconds.
    #[schema(minimum = 0, maximum = 604800)]
    #[serde(default, deserialize_with = "whole_seconds")]
    grace_seconds: Option<i64>,
}

/// A whole number of seconds, also when written with a zero fraction (`60.0`): JSON Schema's
/// `integer`, which the OpenAPI document promises, admits it.
fn whole_seconds<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|seconds| seconds.fract() == 0.0 && seconds.abs() <= 1e15)
                .map(|seconds| seconds as i64)
        })
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom("grace_seconds must be a whole number of seconds, from 0 to 604800")
        })
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    id: String,
    workspace_id: String,
    label: String,
    environment: Environment,
    scopes: Vec<&'static str>,
    /// The prefix and last four characters of the key.
    key_hint: String,
    /// `active`, `revoked` or `expired`.
    status: &'static str,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::timestamp::optional_rfc3339_millis")]
    revoked_at: Option<DateTime<Utc>>,
}

/// A key with its secret: returned once, by creation and rotation.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    api_key: ApiKeyView,
    /// The full key. It is not stored and cannot be shown again.
    key: String,
    /// For a rotation: the key it replaces, with the time it stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<ApiKeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    data: Vec<ApiKeyView>,
    has_more: bool,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A page of a key listing, as Stripe's lists page: oldest first, `cursor` the last key id
/// of the previous page.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyListParams {
    /// 1 to 100, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl ApiKeyView {
    fn new(record: &ApiKeyRecord, now: DateTime<Utc>) -> ApiKeyView {
        ApiKeyView {
            id: record.id.clone(),
            workspace_id: record.workspace_id.clone(),
            label: record.label.clone(),
            environment: record.environment,
            scopes: record.scopes.names(),
            key_hint: record.key_hint.clone(),
            status: record.status_at(now).as_str(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
        }
    }
}

/// Creates a key. At most two active keys may share a workspace, environment and scope set.
#[utoipa::path(post, path = "/admin/v1/workspaces/{ws}/api-keys", tag = "admin", operation_id = "create_api_key", request_body = CreateApiKey,
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body;
    let label = required_text(
        &body.label,
        "invalid_label",
        "label",
        100,
        &state.admin_token,
    )?;
    let environment = match body.environment.as_deref() {
        None => Environment::Live,
        Some(text) => Environment::parse(text).ok_or_else(|| {
            ApiError::unprocessable("invalid_environment", "environment must be live or test.")
        })?,
    };
    let scopes = parse_scopes(&body.scopes)?;
    let workspace = existing_workspace(&state, &path).await?;
    let now = now();
    let (new_key, secret) = new_key(&state, &workspace.id, label, environment, scopes, now);
    state
        .store
        .insert_api_key(&new_key, MAX_ACTIVE_KEYS_PER_SCOPE_SET, now)
        .await?;
    state.registry.key_created(&new_key.key_hash);
    let record = new_key.into_record();
    tracing::info!(workspace_id = %record.workspace_id, key_id = %record.id, "api key created");
    Ok(HttpResponse::Created().json(CreatedApiKey {
        api_key: ApiKeyView::new(&record, now),
        key: secret,
        replaces: None,
    }))
}

/// Lists a workspace's keys (hints only), oldest first, a page at a time.
#[utoipa::path(get, path = "/admin/v1/workspaces/{ws}/api-keys", tag = "admin", operation_id = "list_api_keys",
    params(("ws" = String, Path, description = "workspace id"), ApiKeyListParams),
    responses((status = 200, body = ApiKeyList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<ApiKeyListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let limit = page_limit(params.limit.as_deref(), MAX_PAGE, MAX_PAGE)?;
    if let Some(cursor) = &params.cursor {
        if !ids::looks_like_id(cursor, ids::API_KEY) {
            return Err(invalid_cursor());
        }
    }
    let workspace = existing_workspace(&state, &path).await?;
    let now = now();
    // One more than asked tells whether another page exists.
    let mut keys = state
        .store
        .list_api_keys(&workspace.id, params.cursor.as_deref(), limit + 1)
        .await?;
    let has_more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let next_cursor = if has_more {
        keys.last().map(|k| k.id.clone())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ApiKeyList {
        data: keys.iter().map(|k| ApiKeyView::new(k, now)).collect(),
        has_more,
        next_cursor,
    }))
}

/// Reads one key (hint only).
#[utoipa::path(get, path = "/admin/v1/workspaces/{ws}/api-keys/{id}", tag = "admin", operation_id = "get_api_key",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "key id")),
    responses((status = 200, body = ApiKeyView), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (workspace_id, key_id) = path.into_inner();
    let record = existing_key(&state, &workspace_id, &key_id).await?;
    Ok(HttpResponse::Ok().json(ApiKeyView::new(&record, now())))
}

/// Revokes a key at once; the next request with it is refused. Idempotent.
#[utoipa::path(delete, path = "/admin/v1/workspaces/{ws}/api-keys/{id}", tag = "admin", operation_id = "revoke_api_key",
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "key id")),
    responses((status = 200, body = ApiKeyView), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn revoke(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (workspace_id, key_id) = path.into_inner();
    let key = existing_key(&state, &workspace_id, &key_id).await?;
    let revoked = state
        .store
        .revoke_api_key(&workspace_id, &key_id, now())
        .await;
    let record = unless_in_doubt(&state, &key, revoked)?;
    state.registry.key_changed(&record);
    tracing::info!(workspace_id = %workspace_id, key_id = %key_id, "api key revoked");
    // Read after the store dated the revocation (`store::change_time`), so the key shows
    // as revoked.
    Ok(HttpResponse::Ok().json(ApiKeyView::new(&record, now())))
}

/// Replaces a key with a new one of the same label, environment and scopes. The old key
/// keeps working for `grace_seconds` (default 0: it stops at once).
#[utoipa::path(post, path = "/admin/v1/workspaces/{ws}/api-keys/{id}/rotate", tag = "admin", operation_id = "rotate_api_key", request_body = Option<RotateApiKey>,
    params(("ws" = String, Path, description = "workspace id"), ("id" = String, Path, description = "key id")),
    responses((status = 201, body = CreatedApiKey), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn rotate(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    // Optional: no body means the defaults.
    OptionalJsonBody(options): OptionalJsonBody<RotateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let (workspace_id, key_id) = path.into_inner();
    let grace_seconds = options.grace_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
        return Err(ApiError::unprocessable(
            "invalid_grace_seconds",
            format!("grace_seconds must be from 0 to {MAX_GRACE_SECONDS}."),
        ));
    }
    let old = existing_key(&state, &workspace_id, &key_id).await?;
    let now = now();
    let (replacement, secret) = new_key(
        &state,
        &workspace_id,
        old.label.clone(),
        old.environment,
        old.scopes,
        now,
    );
    let rotated = state
        .store
        .rotate_api_key(
            &workspace_id,
            &key_id,
            &replacement,
            Duration::seconds(grace_seconds),
            MAX_ACTIVE_KEYS_PER_SCOPE_SET,
            now,
        )
        .await;
    let old = unless_in_doubt(&state, &old, rotated)?;
    state.registry.key_created(&replacement.key_hash);
    state.registry.key_changed(&old);
    let record = replacement.into_record();
    tracing::info!(workspace_id = %workspace_id, old_key_id = %old.id, key_id = %record.id, grace_seconds, "api key rotated");
    // Read after the store dated the rotation (`store::change_time`): with no grace
    // period the old key shows as revoked.
    let viewed_at = self::now();
    Ok(HttpResponse::Created().json(CreatedApiKey {
        api_key: ApiKeyView::new(&record, viewed_at),
        key: secret,
        replaces: Some(ApiKeyView::new(&old, viewed_at)),
    }))
}

fn parse_scopes(names: &[String]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_scopes",
            "scopes must name at least one scope.",
        ));
    }
    if names.len() > 64 {
        return Err(ApiError::unprocessable(
            "invalid_scopes",
            "scopes lists at most 64 names.",
        ));
    }
    ScopeSet::parse(names.iter().map(String::as_str)).map_err(|unknown| {
        ApiError::unprocessable(
            "invalid_scopes",
            format!(
                "{unknown}; known scopes: {}",
                crate::domain::scope::ALL_SCOPES
                    .map(|s| s.as_str())
                    .join(" ")
            ),
        )
    })
}

fn new_key(
    state: &AppState,
    workspace_id: &str,
    label: String,
    environment: Environment,
    scopes: ScopeSet,
    now: DateTime<Utc>,
) -> (NewApiKey, String) {
    let generated = generate_key(environment, &mut rand::thread_rng(), |k| {
        state.hasher.hash(k)
    });
    let key = NewApiKey {
        id: ids::new_id(ids::API_KEY),
        workspace_id: workspace_id.to_owned(),
        key_hash: generated.hash,
        key_hint: generated.hint,
        label,
        environment,
        scopes,
        created_at: now,
        expires_at: expiry_for(now),
    };
    (key, generated.secret.expose_secret().to_owned())
}

/// The result of a change to `key`. When storage did not say how it went (it may still
/// apply the change once it answers), the key leaves the cache: it is trusted again only as
/// storage then says, instead of as it was before the change (a key whose revocation timed
/// out would otherwise keep verifying here until its cache entry went stale).
fn unless_in_doubt<T>(
    state: &AppState,
    key: &ApiKeyRecord,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(StoreError::Unavailable(_)) = &result {
        state.registry.key_in_doubt(&key.key_hash);
    }
    result
}

async fn existing_key(
    state: &AppState,
    workspace_id: &str,
    key_id: &str,
) -> Result<ApiKeyRecord, ApiError> {
    existing_workspace(state, workspace_id).await?;
    let not_found =
        || ApiError::not_found("api_key_not_found", "No such API key in this workspace.");
    if !ids::looks_like_id(key_id, ids::API_KEY) {
        return Err(not_found());
    }
    state
        .store
        .get_api_key(workspace_id, key_id)
        .await?
        .ok_or_else(not_found)
}

fn now() -> DateTime<Utc> {
    crate::clock::to_datetime(crate::clock::now_ms())
}
