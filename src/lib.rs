//! StatusPulse Auth: the authentication engine in front of the StatusPulse API.
//!
//! The server (`src/main.rs`), the worker (`workers/`), the benches and the tests all use
//! this library. Dependencies point one way: `http`, `actors`, `jobs` and `verify` use
//! `domain`, `store` and `queue`; `domain` uses nothing of ours.

pub mod actors;
pub mod clock;
pub mod config;
pub mod data_dir_lock;
pub mod data_dir_store;
pub mod domain;
pub mod error_chain;
pub mod http;
pub mod jobs;
pub mod log_throttle;
pub mod log_writer;
pub mod mapped_file;
pub mod metrics;
pub mod private_dir;
pub mod queue;
pub mod request_scope;
pub mod secrets;
pub mod startup;
pub mod stop_signals;
pub mod store;
pub mod telemetry;
pub mod verify;
