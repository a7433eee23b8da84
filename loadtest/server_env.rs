//! Settings of the load tests' comparison servers (`baseline.rs`, `floor.rs`), read from
//! the environment; included by both with `#[path]`.

use std::io;
use std::net::SocketAddr;

/// A variable's value; unset and empty are the same.
pub fn var(variable: &str) -> Option<String> {
    std::env::var(variable).ok().filter(|v| !v.is_empty())
}

/// The listening address, `default` when unset.
pub fn addr(variable: &str, default: &str) -> io::Result<SocketAddr> {
    var(variable)
        .unwrap_or_else(|| default.to_owned())
        .parse()
        .map_err(|e| invalid(variable, e))
}

/// The HTTP worker count, one per CPU when unset.
pub fn workers(variable: &str) -> io::Result<usize> {
    match var(variable) {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            Ok(_) => Err(invalid(variable, "must be at least 1")),
            Err(e) => Err(invalid(variable, e)),
        },
        None => Ok(std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)),
    }
}

pub fn invalid(variable: &str, problem: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{variable}: {problem}"),
    )
}
