//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft).

use actix_web::http::header::HeaderName;
use actix_web::HttpResponseBuilder;

use crate::domain::rate_limit::RateDecision;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub fn insert(response: &mut HttpResponseBuilder, rate: &RateDecision) {
    let mut buffer = itoa::Buffer::new();
    response.insert_header((LIMIT.clone(), buffer.format(rate.limit)));
    response.insert_header((REMAINING.clone(), buffer.format(rate.remaining)));
    response.insert_header((RESET.clone(), buffer.format(rate.reset_secs)));
}
