//! The `X-StatusPulse-Scopes` values of forward-auth answers, made once rather than on every
//! answer.
//!
//! The value depends only on the key's scope set, of which there are 2,048: the
//! table holds a value for each. Building the space-separated list and checking it as a
//! header value cost about 300 instructions per answer. The values are `'static` on purpose:
//! a clone of a static value is a copy, while a clone of a shared one counts references in
//! memory that every HTTP worker would then write on every request (with all keys holding
//! the same scopes, one cache line passed between the cores on each answer).

use std::sync::LazyLock;

use actix_web::http::header::HeaderValue;

use crate::domain::scope::ScopeSet;

/// The `X-StatusPulse-Scopes` value of every scope set, by `ScopeSet::index`. A constant
/// table, computed on first use; its strings (about 100 KiB) live as long as the process.
static SCOPE_VALUES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    (0..ScopeSet::COUNT)
        .map(|index| {
            let text: &'static str = Box::leak(
                ScopeSet::from_index(index)
                    .to_canonical_string()
                    .into_boxed_str(),
            );
            HeaderValue::from_static(text)
        })
        .collect()
});

/// The `X-StatusPulse-Scopes` value: the set's scopes in canonical order, space-separated.
pub fn scopes_value(scopes: ScopeSet) -> HeaderValue {
    SCOPE_VALUES[scopes.index()].clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scope::ALL_SCOPES;

    #[test]
    fn every_scope_set_has_its_canonical_list() {
        for index in [0, 1, 2, 3, 1_000, ScopeSet::COUNT - 1] {
            let set = ScopeSet::from_index(index);
            assert_eq!(scopes_value(set), set.to_canonical_string().as_str());
            assert_eq!(set.index(), index);
        }
        let all = ScopeSet::parse(ALL_SCOPES.iter().map(|s| s.as_str())).unwrap();
        assert_eq!(all.index(), ScopeSet::COUNT - 1);
        assert_eq!(scopes_value(ScopeSet::EMPTY), "");
        assert_eq!(
            scopes_value(ScopeSet::parse(["teams:read", "checks:write"]).unwrap()),
            "checks:write teams:read"
        );
    }
}
