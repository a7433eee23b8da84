//! The floor for the load tests: the least a server can do to give the contract's answer to
//! `GET /v1/authz` for a cached key, on actix-web like the engine. It checks the key's shape
//! and checksum and hashes it with the engine's own code, looks the hash up in a table built
//! at start, and answers 200 with every header the contract puts on that answer
//! (`X-Request-ID` with a fresh UUIDv7, `RateLimit-Limit/Remaining/Reset`,
//! `X-StatusPulse-Workspace/Scopes/Credential/Environment`), their values made once per key.
//! No rate limit, no scope check, no audit event, no metrics, no logs: everything the engine
//! does on top of this is left out, so what this server loses to the bare handler
//! (`loadtest/baseline.rs`) no implementation of the contract can win back.
//! `loadtest/compare_floor` runs the three side by side.
//!
//! Environment: `FLOOR_ADDR` (default 127.0.0.1:8091), `FLOOR_WORKERS` (default: one per
//! CPU), `FLOOR_KEYS` (a file of keys, one a line, as `loadtest/seed.py` writes them).

use std::collections::HashMap;

use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use statuspulse_auth::domain::api_key::parse_key;
use statuspulse_auth::domain::hashing::{KeyHash, KeyHashHasher, KeyHasher};
use statuspulse_auth::http::request_context::fresh_request_id;

#[path = "server_env.rs"]
mod server_env;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static WORKSPACE: HeaderName = HeaderName::from_static("x-statuspulse-workspace");
static SCOPES: HeaderName = HeaderName::from_static("x-statuspulse-scopes");
static CREDENTIAL: HeaderName = HeaderName::from_static("x-statuspulse-credential");
static ENVIRONMENT: HeaderName = HeaderName::from_static("x-statuspulse-environment");

/// What the answer for one key carries, made at start.
struct Answer {
    workspace: HeaderValue,
    scopes: HeaderValue,
    credential: HeaderValue,
}

type Keys = HashMap<KeyHash, Answer, std::hash::BuildHasherDefault<KeyHashHasher>>;

struct Floor {
    hasher: KeyHasher,
    keys: Keys,
}

async fn authz(request: HttpRequest, floor: web::Data<Floor>) -> HttpResponse {
    let Some(answer) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|token| parse_key(token).is_ok())
        .and_then(|token| floor.keys.get(&floor.hasher.hash(token)))
    else {
        return HttpResponse::Unauthorized().finish();
    };
    let mut response = HttpResponse::Ok().finish();
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), fresh_request_id());
    headers.insert(LIMIT.clone(), HeaderValue::from_static("1200"));
    headers.insert(REMAINING.clone(), HeaderValue::from_static("1199"));
    headers.insert(RESET.clone(), HeaderValue::from_static("60"));
    headers.insert(WORKSPACE.clone(), answer.workspace.clone());
    headers.insert(SCOPES.clone(), answer.scopes.clone());
    headers.insert(CREDENTIAL.clone(), answer.credential.clone());
    headers.insert(ENVIRONMENT.clone(), HeaderValue::from_static("live"));
    response
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// One answer per key of the file; ids as long as the engine's, made up from the line number.
fn load_keys(path: &str, hasher: &KeyHasher) -> std::io::Result<Keys> {
    let text = std::fs::read_to_string(path).map_err(|e| server_env::invalid("FLOOR_KEYS", e))?;
    let mut keys = Keys::default();
    for (line, key) in text
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
    {
        let value = |text: String| {
            HeaderValue::try_from(text).map_err(|e| server_env::invalid("FLOOR_KEYS", e))
        };
        keys.insert(
            hasher.hash(key),
            Answer {
                workspace: value(format!("ws_{line:026}"))?,
                scopes: HeaderValue::from_static("checks:read checks:write incidents:read"),
                credential: value(format!("api_key:key_{line:026}"))?,
            },
        );
    }
    Ok(keys)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = server_env::addr("FLOOR_ADDR", "127.0.0.1:8091")?;
    let workers = server_env::workers("FLOOR_WORKERS")?;
    let keys_path = server_env::var("FLOOR_KEYS")
        .ok_or_else(|| server_env::invalid("FLOOR_KEYS", "not set"))?;
    let hasher = KeyHasher::new(rand::random());
    let keys = load_keys(&keys_path, &hasher)?;
    eprintln!(
        "floor_authz listening on http://{addr} with {workers} worker(s), {} keys",
        keys.len()
    );
    let floor = web::Data::new(Floor { hasher, keys });
    HttpServer::new(move || {
        App::new()
            .app_data(floor.clone())
            .route("/v1/authz", web::get().to(authz))
            .route("/healthz", web::get().to(healthz))
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
