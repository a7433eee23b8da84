//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft).

use actix_web::http::header::{HeaderMap, HeaderName};

use super::header_values;
use crate::domain::rate_limit::RateDecision;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub fn insert(headers: &mut HeaderMap, rate: &RateDecision) {
    headers.insert(LIMIT.clone(), header_values::number(u64::from(rate.limit)));
    headers.insert(
        REMAINING.clone(),
        header_values::number(u64::from(rate.remaining)),
    );
    headers.insert(RESET.clone(), header_values::number(rate.reset_secs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_are_written() {
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
