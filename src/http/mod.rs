//! HTTP: the two listeners' routes, the middleware, the error mapping. Handlers stay thin:
//! they parse, call the domain, store and verifier, and shape the answer.

pub mod admin;
pub mod error;
pub mod extractors;
pub mod openapi;
pub mod public;
pub mod rate_headers;
pub mod request_context;
pub mod state;

use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::metrics::Listener;
use state::AppState;

/// The public listener's application.
pub fn public_app(
    state: web::Data<AppState>,
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
        .app_data(Listener::Public)
        .app_data(extractors::json_config())
        .app_data(extractors::query_config())
        .app_data(extractors::path_config())
        .configure(public::routes)
        .default_service(web::to(request_context::no_route))
        .wrap(from_fn(request_context::request_context))
}

/// The admin listener's application.
pub fn admin_app(
    state: web::Data<AppState>,
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
        .app_data(Listener::Admin)
        .app_data(extractors::json_config())
        .app_data(extractors::query_config())
        .app_data(extractors::path_config())
        .configure(admin::routes)
        .default_service(web::to(request_context::no_route))
        .wrap(from_fn(request_context::request_context))
}
