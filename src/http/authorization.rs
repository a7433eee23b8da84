//! The `Authorization` header, as both listeners read it.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};

/// The value of the request's `Authorization` header. The field is a singleton (RFC 9110,
/// 11.6.2): with two or more, a proxy in front of us could act on another one than we do,
/// so they are answered like a malformed credential, as an empty value.
pub fn authorization_header(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION);
    let first = values.next()?;
    match values.next() {
        None => Some(first.as_bytes()),
        Some(_) => Some(b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn one_header_is_read_and_several_are_malformed() {
        let mut headers = HeaderMap::new();
        assert_eq!(authorization_header(&headers), None);
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(authorization_header(&headers), Some(&b"Bearer a"[..]));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(authorization_header(&headers), Some(&b""[..]));
    }
}
