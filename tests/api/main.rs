//! The integration suite: one binary, every test against a real server on port 0.
//!
//! Runs on embedded SQLite by default. With `STATUSPULSE_TEST_DATABASE_URL` set (a
//! PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432/postgres) every test
//! gets a fresh PostgreSQL database instead. `.ci/run` runs the suite both ways.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_api;
mod audit_log;
mod helpers;
mod hot_path;
mod operations;
mod postgres_pool;
mod postgres_tls;
mod secrets_at_rest;
