//! `statuspulse-worker`: the separate process that consumes jobs from RabbitMQ and runs the
//! job functions of `statuspulse_auth::jobs`.
//!
//! In this version jobs run inside `statuspulse-auth serve` through the in-process queue
//! (the embedded default); the RabbitMQ transport, and with it this process's consumer
//! loop, is the next step. Until then the worker says so plainly instead of pretending.

use std::process::ExitCode;

use statuspulse_auth::config::Settings;

fn main() -> ExitCode {
    let settings = match Settings::load(None) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("statuspulse-worker: {error}");
            return ExitCode::from(2);
        }
    };
    if settings.amqp_url.is_none() {
        eprintln!(
            "statuspulse-worker: STATUSPULSE_AMQP_URL: required. Without it, jobs run inside \
             `statuspulse-auth serve` and no worker is needed."
        );
    } else {
        eprintln!(
            "statuspulse-worker: STATUSPULSE_AMQP_URL: the RabbitMQ transport is not part of this \
             build yet; run `statuspulse-auth serve` without it (jobs then run in-process)."
        );
    }
    ExitCode::from(2)
}
