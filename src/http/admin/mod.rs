//! The admin listener: `/admin/v1/...` behind the admin token, plus `/metrics` and
//! `/openapi.json`.

pub mod api_keys;
pub mod audit_log;
pub mod users;
pub mod workspaces;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use std::sync::Arc;

use actix_web::{web, FromRequest, Handler, HttpResponse, Resource, Responder, Route};

use super::authorization::authorization_header;
use super::error::{ApiError, ErrorKind};
use super::state::AppState;
use crate::domain::credential_text::holds_credential;
use crate::domain::ids;
use crate::metrics::AdminRoute;
use crate::secrets::AdminToken;
use crate::verify::{bearer_token, DenyReason};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope(SCOPE)
                .wrap(from_fn(require_admin_token))
                .service(scoped(
                    "/admin/v1/workspaces",
                    [on(Method::Post, workspaces::create)],
                ))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}",
                    [on(Method::Read, workspaces::get)],
                ))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}/api-keys",
                    [
                        on(Method::Read, api_keys::list),
                        on(Method::Post, api_keys::create),
                    ],
                ))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}/api-keys/{id}",
                    [
                        on(Method::Read, api_keys::get),
                        on(Method::Delete, api_keys::revoke),
                    ],
                ))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}/api-keys/{id}/rotate",
                    [on(Method::Post, api_keys::rotate)],
                ))
                .service(scoped("/admin/v1/users", [on(Method::Post, users::create)]))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}/members",
                    [on(Method::Post, users::add_member)],
                ))
                .service(scoped(
                    "/admin/v1/workspaces/{ws}/audit-log",
                    [on(Method::Read, audit_log::list)],
                )),
        )
        .service(resource("/metrics", [on(Method::Read, metrics)]))
        .service(resource("/openapi.json", [on(Method::Read, openapi)]))
        .service(resource(
            "/healthz",
            [on(Method::Read, super::public::healthz)],
        ));
}

/// The methods an admin route answers.
#[derive(Clone, Copy)]
enum Method {
    /// `GET`, and `HEAD` with it (`super::read`).
    Read,
    Post,
    Delete,
}

impl Method {
    fn route(self) -> Route {
        match self {
            Method::Read => super::read(),
            Method::Post => web::post(),
            Method::Delete => web::delete(),
        }
    }

    /// As `Allow` lists them.
    fn names(self) -> &'static str {
        match self {
            Method::Read => "GET, HEAD",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A route of an admin path, and the methods it answers.
struct MethodRoute {
    method: Method,
    route: Route,
}

fn on<F, Args>(method: Method, handler: F) -> MethodRoute
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    MethodRoute {
        method,
        route: method.route().to(handler),
    }
}

/// The admin API's paths start with this.
const SCOPE: &str = "/admin/v1";

/// A path of the admin API's scope, given whole (as `/metrics` labels its answers), with
/// its routes.
fn scoped<const N: usize>(path: &'static str, routes: [MethodRoute; N]) -> Resource {
    debug_assert!(path.starts_with(SCOPE));
    resource_at(path, &path[SCOPE.len()..], routes)
}

/// A path of the admin listener, outside the scope, with its routes.
fn resource<const N: usize>(path: &'static str, routes: [MethodRoute; N]) -> Resource {
    resource_at(path, path, routes)
}

/// A path of the admin listener with its routes, its answers counted under `label` in
/// `/metrics`. Any other method gets 405 with the routes' methods in `Allow`, as HTTP
/// requires.
fn resource_at<const N: usize>(
    label: &'static str,
    path: &str,
    routes: [MethodRoute; N],
) -> Resource {
    let allow: Arc<str> = routes
        .iter()
        .map(|route| route.method.names())
        .collect::<Vec<_>>()
        .join(", ")
        .into();
    let counted = match AdminRoute::labelled(label) {
        Some(route) => web::resource(path).app_data(route),
        // Counted with the answers to no route; a test lists every route's label.
        None => web::resource(path),
    };
    routes
        .into_iter()
        .fold(counted, |resource, route| resource.route(route.route))
        .default_service(web::to(move || {
            let allow = Some(Arc::clone(&allow));
            async move { Err::<HttpResponse, ApiError>(ErrorKind::MethodNotAllowed { allow }.into()) }
        }))
}

/// Refuses every admin request without the admin token. The presented token is hashed and
/// compared in constant time with the stored hash.
async fn require_admin_token<B: MessageBody>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let state = request.app_data::<web::Data<AppState>>().cloned();
    // Parsed as on the public listener: a non-UTF-8 or doubled header is a malformed
    // credential, not a missing one.
    let token = bearer_token(authorization_header(request.headers()));
    let allowed = match (&state, &token) {
        (Some(state), Ok(token)) => state.admin_token.is(token),
        _ => false,
    };
    if !allowed {
        let error = ApiError::from(ErrorKind::InvalidCredentials {
            presented: !matches!(token, Err(DenyReason::MissingCredentials)),
        });
        return Ok(request.error_response(error).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(state.registry.live_actors()))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document())
}

/// Checks the shape of a workspace id and that it exists.
pub(crate) async fn existing_workspace(
    state: &AppState,
    workspace_id: &str,
) -> Result<crate::domain::workspace::Workspace, ApiError> {
    let not_found = || ApiError::not_found("workspace_not_found", "No such workspace.");
    if !ids::looks_like_id(workspace_id, ids::WORKSPACE) {
        return Err(not_found());
    }
    state
        .store
        .get_workspace(workspace_id)
        .await?
        .ok_or_else(not_found)
}

/// Trims a required text field and checks its length and characters, and that it holds no
/// credential (a key, or this server's admin token).
pub(crate) fn required_text(
    value: &str,
    code: &'static str,
    field: &str,
    max_chars: usize,
    admin_token: &AdminToken,
) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.chars().all(is_invisible) {
        return Err(ApiError::unprocessable(
            code,
            format!("{field} must not be empty or invisible."),
        ));
    }
    if let Some(problem) = text_problem(trimmed, field, max_chars) {
        return Err(ApiError::unprocessable(code, problem));
    }
    refuse_secrets(trimmed, code, field, admin_token)?;
    Ok(trimmed.to_owned())
}

/// Refuses text that is stored and listed as written when it holds a secret: an API key, a
/// generated admin token, or this server's admin token. Kept, it would sit at rest in plain
/// text, where keys and tokens are kept only as hashes.
pub(crate) fn refuse_secrets(
    text: &str,
    code: &'static str,
    field: &str,
    admin_token: &AdminToken,
) -> Result<(), ApiError> {
    if holds_credential(text) || admin_token.appears_in(text) {
        return Err(ApiError::unprocessable(
            code,
            format!(
                "{field} must not hold an API key or admin token: it is stored and shown in \
                 plain text, and keys are kept only as hashes."
            ),
        ));
    }
    Ok(())
}

/// What is wrong with a text field or parameter, in words naming it: too long, or holding
/// control characters (which no stored text has, and which PostgreSQL refuses as NUL).
pub(crate) fn text_problem(text: &str, field: &str, max_chars: usize) -> Option<String> {
    if text.chars().count() > max_chars {
        return Some(format!("{field} must be at most {max_chars} characters."));
    }
    if text.chars().any(char::is_control) {
        return Some(format!("{field} must not contain control characters."));
    }
    if text.chars().any(is_bidi_control) {
        return Some(format!(
            "{field} must not contain bidirectional control characters."
        ));
    }
    None
}

/// Characters that reorder the text around them (bidirectional embeddings, overrides and
/// isolates): in a name shown to people they can make one name read as another.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing: white space, and Unicode's default-ignorable and filler
/// characters (zero-width spaces and joiners, variation selectors, Hangul fillers, tags).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}'
            | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{E0000}'..='\u{E0FFF}')
}

/// A list's `limit` parameter: `default` when absent, else a number from 1 to `max`.
pub(crate) fn page_limit(limit: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = limit else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request("invalid_limit", format!("limit must be from 1 to {max}."))
        })
}

/// The error for a `cursor` this API did not hand out.
pub(crate) fn invalid_cursor() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "cursor is not a cursor this API returned.",
    )
}
