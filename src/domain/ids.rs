//! Prefixed, time-ordered identifiers (`ws_…`, `key_…`, `usr_…`), Stripe style: the prefix
//! says what an id names, the UUIDv7 body sorts by creation time.

use uuid::Uuid;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

/// Whether `text` could be an id with `prefix`; lets handlers refuse junk before storage.
pub fn looks_like_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| body.len() == 32 && body.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub const WORKSPACE: &str = "ws";
pub const API_KEY: &str = "key";
pub const USER: &str = "usr";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = new_id(WORKSPACE);
        let b = new_id(WORKSPACE);
        assert!(looks_like_id(&a, WORKSPACE));
        assert!(!looks_like_id(&a, API_KEY));
        assert!(a < b);
        assert!(!looks_like_id("ws_../../etc", WORKSPACE));
    }
}
