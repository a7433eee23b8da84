//! The request being served, for the code that serves it: its id, in a task-local that the
//! request-context middleware sets around the whole request. Log lines (`telemetry`) and the
//! request's audit event read it from here, so both always carry the same id.
//!
//! A task-local rather than a tracing span or the request's extensions: a span per request
//! cost about 4 µs of CPU at full load (a sixth of the engine's CPU on `/v1/authz`,
//! `loadtest/compare_builds`), and an extension a type-map allocation, insertion and removal
//! per request (about 2% of the instructions; callgrind). This costs a thread-local swap
//! each time the request's future is polled. The id is an `Rc<str>`: a request is served on
//! one thread, and the handler takes its own reference without copying the text.

use std::future::Future;
use std::rc::Rc;

tokio::task_local! {
    static REQUEST_ID: Rc<str>;
}

/// Runs `future` as the serving of request `id`.
pub fn run<F: Future>(id: Rc<str>, future: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, future)
}

/// Runs `f` as the serving of request `id`, synchronously.
#[cfg(test)]
pub fn run_sync<R>(id: Rc<str>, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}

/// Calls `f` with the id of the request being served; `None` outside a request.
pub fn with_id<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    REQUEST_ID.try_with(|id| f(id)).ok()
}

/// The id of the request being served; empty outside a request (handlers called directly,
/// as in unit tests).
pub fn current_id() -> Rc<str> {
    REQUEST_ID
        .try_with(Rc::clone)
        .unwrap_or_else(|_| Rc::from(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn each_request_sees_its_own_id_across_awaits() {
        let request = |id: &'static str| {
            run(id.into(), async {
                tokio::task::yield_now().await;
                current_id()
            })
        };
        let (a, b) = futures_util::future::join(request("a-1"), request("b-2")).await;
        assert_eq!((&*a, &*b), ("a-1", "b-2"));
        assert_eq!(&*current_id(), "");
        assert_eq!(&*run_sync("c-3".into(), current_id), "c-3");
    }
}
