//! One listener's HTTP server. This is what actix-web's `HttpServer` builds, with the same
//! settings, assembled here so that each connection's stream can be wrapped in
//! `AnswerDeadline` and `ParseRefusals` (which `HttpServer` offers no way to do).

use std::future::ready;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, Protocol};
use actix_rt::net::TcpStream;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::web;

use super::answer_deadline::AnswerDeadline;
use super::parse_refusals::ParseRefusals;
use super::state::AppState;
use crate::metrics::Listener;

/// How long a client has to send a request's head (actix-web's default); past it the
/// connection gets a 408 and is closed.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How a listener's server runs.
pub struct ServerSettings {
    /// HTTP worker threads; `None` for one per core.
    pub workers: Option<usize>,
    /// Most threads of each worker runtime's blocking pool.
    pub max_blocking_threads: usize,
    /// How long after its last answer a connection may still be read (`AnswerDeadline`).
    pub next_answer_within: Duration,
}

/// Serves `routes` on `tcp` until stopped through the returned server's handle. Signals are
/// left to the caller.
pub fn serve(
    tcp: TcpListener,
    settings: ServerSettings,
    state: web::Data<AppState>,
    listener: Listener,
    routes: fn(&mut web::ServiceConfig),
) -> io::Result<Server> {
    let addr = tcp.local_addr()?;
    let mut builder = Server::build();
    if let Some(workers) = settings.workers {
        builder = builder.workers(workers);
    }
    // Tells each connection when a graceful stop begins, so that idle keep-alive
    // connections close at once instead of holding the stop up.
    let stopping = builder.graceful_shutdown_signal();
    let next_answer_within = settings.next_answer_within;
    let server = builder
        .disable_signals()
        .worker_max_blocking_threads(settings.max_blocking_threads)
        .listen(format!("statuspulse-{listener:?}-{addr}"), tcp, move || {
            let stopping = stopping.clone();
            let metrics = Arc::clone(&state.metrics);
            let app = super::listener_app(state.clone(), listener, routes)
                .into_factory()
                .map_err(|error| error.error_response());
            // HttpServer's defaults.
            let http = HttpService::build()
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                // HttpServer gives the app its bound address as host here; nothing reads it
                // (no URL generation), and the constructor for it is private to actix-web.
                .finish(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                let io = AnswerDeadline::new(io, next_answer_within);
                let io = ParseRefusals::new(io, Arc::clone(&metrics), listener);
                ready(Ok((io, Protocol::Http1, peer)))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}
