//! HTTP: the two listeners' routes, the middleware, the error mapping. Handlers stay thin:
//! they parse, call the domain, store and verifier, and shape the answer.

pub mod admin;
pub mod answer_deadline;
pub mod authorization;
pub mod error;
pub mod extractors;
pub mod header_values;
pub mod openapi;
pub mod parse_refusals;
pub mod public;
pub mod rate_headers;
pub mod request_context;
pub mod server;
pub mod state;

use actix_web::middleware::from_fn;
use actix_web::{guard, web, App, Route};

use crate::metrics::Listener;
use state::AppState;

/// The application of one listener: shared state, extractor settings that turn bad input
/// into our JSON errors, the listener's routes, and the request-context middleware outermost.
pub fn listener_app(
    state: web::Data<AppState>,
    listener: Listener,
    routes: fn(&mut web::ServiceConfig),
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(listener)
        .app_data(extractors::query_config())
        .app_data(extractors::path_config())
        .app_data(extractors::payload_config())
        // Before the routes, which may set their own.
        .default_service(web::to(request_context::no_route))
        .configure(routes)
        .wrap(from_fn(request_context::request_context))
}

/// A route for reading: `GET`, and `HEAD`, which every resource that answers `GET` must
/// answer too (RFC 9110, 9.1; load balancers' health checks use it). The HTTP layer sends
/// a `HEAD` answer's headers without its body.
pub fn read() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}
