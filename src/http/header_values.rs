//! Header values that forward-auth answers repeat, made once rather than on every answer.
//!
//! `X-StatusPulse-Scopes` depends only on the key's scope set, of which there are 2,048,
//! and every `RateLimit-*` value of the contract's limits is a number from 0 to 1,200: a
//! table holds a value for each. Building the scope list and checking it as a header value
//! cost about 300 instructions per answer, and each number written out an allocation and a
//! free. The values are `'static` on purpose: a clone of a static value is a copy, while a
//! clone of a shared one counts references in memory that every HTTP worker would then
//! write on every request (with all keys holding the same scopes, one cache line passed
//! between the cores on each answer).

use std::sync::LazyLock;

use actix_web::http::header::HeaderValue;

use crate::domain::api_key::Environment;
use crate::domain::scope::ScopeSet;

/// The `X-StatusPulse-Scopes` value of every scope set, by `ScopeSet::index`.
static SCOPES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    static_values(
        (0..ScopeSet::COUNT).map(|index| ScopeSet::from_index(index).to_canonical_string()),
    )
});

/// The values `0..=1200`: the largest limit, so every `RateLimit-*` value of the contract's
/// limits is here.
static NUMBERS: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    static_values((0..=u32::from(Environment::Live.requests_per_minute())).map(|n| n.to_string()))
});

/// Constant tables, computed on first use; their strings (about 100 KiB in all) live as
/// long as the process.
fn static_values(texts: impl Iterator<Item = String>) -> Box<[HeaderValue]> {
    texts
        .map(|text| HeaderValue::from_static(Box::leak(text.into_boxed_str())))
        .collect()
}

/// The `X-StatusPulse-Scopes` value: the set's scopes in canonical order, space-separated.
pub fn scopes(set: ScopeSet) -> HeaderValue {
    SCOPES[set.index()].clone()
}

/// `number` in decimal: from the table when it is there, else written out.
pub fn number(number: u64) -> HeaderValue {
    match usize::try_from(number).ok().and_then(|i| NUMBERS.get(i)) {
        Some(value) => value.clone(),
        None => HeaderValue::from(number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scope::ALL_SCOPES;

    #[test]
    fn every_scope_set_has_its_canonical_list() {
        for index in [0, 1, 2, 3, 1_000, ScopeSet::COUNT - 1] {
            let set = ScopeSet::from_index(index);
            assert_eq!(scopes(set), set.to_canonical_string().as_str());
            assert_eq!(set.index(), index);
        }
        let all = ScopeSet::parse(ALL_SCOPES.iter().map(|s| s.as_str())).unwrap();
        assert_eq!(all.index(), ScopeSet::COUNT - 1);
        assert_eq!(scopes(ScopeSet::EMPTY), "");
        assert_eq!(
            scopes(ScopeSet::parse(["teams:read", "checks:write"]).unwrap()),
            "checks:write teams:read"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 61, 119, 120, 999, 1_200, 1_201, 5_000, u64::MAX] {
            assert_eq!(number(n), n.to_string().as_str());
        }
    }
}
