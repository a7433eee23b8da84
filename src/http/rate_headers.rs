//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft).

use std::sync::LazyLock;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::api_key::Environment;
use crate::domain::rate_limit::RateDecision;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The values `0..=1200` (the largest limit: every `RateLimit-*` value of the contract's
/// limits is in range), as static header values: an answer writes three numbers, and a
/// number written out is an allocation and a free on every answer. A constant table,
/// computed on first use; its strings (about 5 KiB) live as long as the process.
static NUMBERS: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    (0..=u32::from(Environment::Live.requests_per_minute()))
        .map(|number| {
            let text: &'static str = Box::leak(number.to_string().into_boxed_str());
            HeaderValue::from_static(text)
        })
        .collect()
});

pub fn insert(headers: &mut HeaderMap, rate: &RateDecision) {
    headers.insert(LIMIT.clone(), number_value(u64::from(rate.limit)));
    headers.insert(REMAINING.clone(), number_value(u64::from(rate.remaining)));
    headers.insert(RESET.clone(), number_value(rate.reset_secs));
}

/// `number` in decimal: from the table when it is there, else written out.
fn number_value(number: u64) -> HeaderValue {
    match usize::try_from(number).ok().and_then(|i| NUMBERS.get(i)) {
        Some(value) => value.clone(),
        None => HeaderValue::from(number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_in_decimal() {
        for number in [0, 1, 61, 119, 120, 999, 1_200, 1_201, 5_000, u64::MAX] {
            assert_eq!(number_value(number), number.to_string().as_str());
        }
        let mut headers = HeaderMap::new();
        let rate = RateDecision {
            allowed: true,
            limit: 1_200,
            remaining: 1_199,
            reset_secs: 61,
        };
        insert(&mut headers, &rate);
        assert_eq!(headers.get(&LIMIT).unwrap(), "1200");
        assert_eq!(headers.get(&REMAINING).unwrap(), "1199");
        assert_eq!(headers.get(&RESET).unwrap(), "61");
    }
}
