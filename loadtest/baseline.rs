//! Baseline for the load tests: a bare actix-web server with the same route shape as the
//! engine's hot path, doing as little as possible. `GET /v1/authz` only looks at the
//! `Authorization` header (401 without it, 200 with an empty body otherwise); `GET /healthz`
//! answers 200. Whatever the engine costs above this is the engine's own work.
//!
//! Environment: `BASELINE_ADDR` (default 127.0.0.1:8090), `BASELINE_WORKERS` (default: one
//! per CPU).

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

async fn authz(request: HttpRequest) -> HttpResponse {
    if request.headers().contains_key(AUTHORIZATION) {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::Unauthorized().finish()
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn invalid(variable: &str, problem: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{variable}: {problem}"),
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BASELINE_ADDR")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| invalid("BASELINE_ADDR", e))?;
    let workers = match std::env::var("BASELINE_WORKERS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            Ok(_) => return Err(invalid("BASELINE_WORKERS", "must be at least 1")),
            Err(e) => return Err(invalid("BASELINE_WORKERS", e)),
        },
        None => std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
    };
    eprintln!("bare_authz listening on http://{addr} with {workers} worker(s)");
    HttpServer::new(|| {
        App::new()
            .route("/v1/authz", web::get().to(authz))
            .route("/healthz", web::get().to(healthz))
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
