//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft).

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::rate_limit::RateDecision;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub fn insert(headers: &mut HeaderMap, rate: &RateDecision) {
    headers.insert(LIMIT.clone(), limit_value(rate.limit));
    // Integers make header values without the check that text needs.
    headers.insert(REMAINING.clone(), HeaderValue::from(rate.remaining));
    headers.insert(RESET.clone(), HeaderValue::from(rate.reset_secs));
}

/// The contract's two limits are static values (no allocation on every answer); any other
/// is written out.
fn limit_value(limit: u32) -> HeaderValue {
    match limit {
        1_200 => HeaderValue::from_static("1200"),
        120 => HeaderValue::from_static("120"),
        other => HeaderValue::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_in_decimal() {
        for limit in [0, 120, 1_200, 5_000] {
            assert_eq!(limit_value(limit), limit.to_string().as_str());
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
