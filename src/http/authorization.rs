//! Headers that must be sent once: `Authorization` on both listeners, and the forwarded
//! method and URI of `/v1/authz`. With two or more, a proxy in front of us could act on
//! another one than we do, so none is picked.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

/// A header field sent more than once where one value is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeated;

/// The value of a singleton header field (RFC 9110, 5.3), if it was sent.
pub fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, Repeated> {
    let mut values = headers.get_all(name);
    let first = values.next();
    match values.next() {
        None => Ok(first),
        Some(_) => Err(Repeated),
    }
}

/// The value of the request's `Authorization` header. Two or more are answered like a
/// malformed credential, as an empty value.
pub fn authorization_header(headers: &HeaderMap) -> Option<&[u8]> {
    match single_value(headers, &AUTHORIZATION) {
        Ok(value) => value.map(HeaderValue::as_bytes),
        Err(Repeated) => Some(b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_is_read_and_several_are_malformed() {
        let mut headers = HeaderMap::new();
        assert_eq!(authorization_header(&headers), None);
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(authorization_header(&headers), Some(&b"Bearer a"[..]));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(authorization_header(&headers), Some(&b""[..]));
        assert_eq!(single_value(&headers, &AUTHORIZATION), Err(Repeated));
    }
}
