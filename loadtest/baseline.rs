//! Baseline for the load tests: a bare actix-web server with the same route shape as the
//! engine's hot path, doing as little as possible. `GET /v1/authz` only looks at the
//! `Authorization` header (401 without it, 200 with an empty body otherwise); `GET /healthz`
//! answers 200. Whatever the engine costs above this is the engine's own work.
//!
//! Environment: `BASELINE_ADDR` (default 127.0.0.1:8090), `BASELINE_WORKERS` (default: one
//! per CPU).

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

#[path = "server_env.rs"]
mod server_env;

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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = server_env::addr("BASELINE_ADDR", "127.0.0.1:8090")?;
    let workers = server_env::workers("BASELINE_WORKERS")?;
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
