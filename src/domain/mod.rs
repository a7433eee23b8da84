//! Pure types and rules: no I/O, no HTTP, no storage.

pub mod api_key;
pub mod audit;
pub mod audit_codec;
pub mod credential_text;
pub mod hashing;
pub mod ids;
pub mod key_record;
pub mod rate_limit;
pub mod route;
pub mod scope;
pub mod timestamp;
pub mod workspace;
