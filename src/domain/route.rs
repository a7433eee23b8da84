//! The route-to-scope rule: which scope a request to `/v1/...` needs.

use super::scope::{Access, Resource, Scope};

/// What a route demands of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRequirement {
    /// `/v1/me`: any valid credential, no scope.
    NoScope,
    /// A known resource: this scope (which may be one no credential can hold).
    Scope(Scope),
    /// A `/v1/` path whose first segment is no known resource: nothing grants it.
    UnknownResource,
}

/// Why a forwarded method or URI cannot be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the method is not an HTTP method token")]
    BadMethod,
    #[error("the URI is not an absolute path under /v1/")]
    NotUnderV1,
    #[error("the URI is missing")]
    MissingUri,
    #[error("the URI is not visible ASCII (percent-encode other characters)")]
    NotAscii,
    #[error("the URI is longer than 8192 bytes")]
    TooLong,
    #[error("the URI has a fragment (`#`), which no request target has")]
    Fragment,
    #[error("the URI has dot segments, empty segments, backslashes, path parameters (`;`), encoded separators, dots or percent signs, or percent-escapes that are malformed or not UTF-8")]
    Ambiguous,
    #[error("the method header is sent more than once")]
    RepeatedMethod,
    #[error("the URI header is sent more than once")]
    RepeatedUri,
}

/// As the engine's own request targets (`request_context`), and nginx's default line buffer:
/// a URI a gateway passes on is not refused for its length alone.
const MAX_URI_LEN: usize = 8 * 1024;

/// Applies the contract's rule: `GET`/`HEAD` need `<resource>:read`, every other method
/// `<resource>:write`, where the resource is the first path segment under `/v1/`.
///
/// Paths that a gateway or upstream could resolve differently from us (`..`, `.`, `//`,
/// `\`, `;` path parameters as in Tomcat's `/v1/checks/..;/billing`, and encoded `.`, `/`,
/// `\`, `;`, `%` or NUL) are refused outright rather than normalised: a path we read as
/// `/v1/checks/../billing` must never be authorised as `checks`.
pub fn required_scope(method: &str, uri: &str) -> Result<RouteRequirement, RouteError> {
    if method.is_empty() || method.len() > 32 || !method.bytes().all(is_token_byte) {
        return Err(RouteError::BadMethod);
    }
    if uri.len() > MAX_URI_LEN {
        return Err(RouteError::TooLong);
    }
    // A request target never has a fragment (RFC 9112, 3.2), so a `#` here was forwarded
    // raw, and what follows it is part of the path to an upstream that takes it as a
    // character: `/v1/me#/../teams` must not be judged as `/v1/me`.
    if uri.contains('#') {
        return Err(RouteError::Fragment);
    }
    let path = path_of(uri);
    let rest = path.strip_prefix("/v1/").ok_or(RouteError::NotUnderV1)?;
    if path.contains(['\\', ';']) || contains_encoded_separator(path) || has_malformed_escapes(path)
    {
        return Err(RouteError::Ambiguous);
    }
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or_default();
    if first.is_empty() || first == "." || first == ".." {
        return Err(RouteError::Ambiguous);
    }
    // Every later segment must be a real name; only a trailing slash (one empty last
    // segment) is harmless.
    let mut segments = segments.peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if (segment.is_empty() && !is_last) || segment == "." || segment == ".." {
            return Err(RouteError::Ambiguous);
        }
    }
    // Only `/v1/me` itself is free: anything under it is a resource no scope names.
    if rest == "me" || rest == "me/" {
        return Ok(RouteRequirement::NoScope);
    }
    let Some(resource) = Resource::from_path_segment(first) else {
        return Ok(RouteRequirement::UnknownResource);
    };
    // Methods are case-sensitive (RFC 9110, 9.1): `get` is not `GET`, and like every
    // method other than `GET` and `HEAD` it needs the write scope.
    let access = if method == "GET" || method == "HEAD" {
        Access::Read
    } else {
        Access::Write
    };
    Ok(RouteRequirement::Scope(Scope::new(resource, access)))
}

/// A byte of an HTTP token (RFC 9110, 5.6.2), which a method is: letters, digits and
/// `!#$%&'*+-.^_`|~`. Registered methods have hyphens (`VERSION-CONTROL`), and so do some
/// in use (`M-SEARCH` of UPnP). Every method but `GET` and `HEAD` needs the write scope,
/// whatever its bytes.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A request target's path: without its query. (A `#` is refused, not cut: see
/// `required_scope`.)
pub fn path_of(uri: &str) -> &str {
    uri.split('?').next().unwrap_or_default()
}

/// Percent-escapes that are not `%` and two hex digits (`%u002e`, an old IIS form of `.`), or
/// whose bytes are not UTF-8 (`%c0%ae`, an overlong `.` that old decoders took for one). A
/// valid URI has neither (RFC 3986, 2.1), so refusing them costs no honest caller; paths
/// without `%` are not looked at twice.
fn has_malformed_escapes(path: &str) -> bool {
    if !path.contains('%') {
        return false;
    }
    let bytes = path.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(at, &b)| {
        b != b'%'
            || bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    !well_formed
        || percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .is_err()
}

/// `%2e` (`.`), `%2f` (`/`), `%5c` (`\`), `%3b` (`;`), `%00`, and `%25` (`%`: a server that
/// decodes twice would see `%252e` as `.`).
fn contains_encoded_separator(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()),
                (b'2', b'e')
                    | (b'2', b'f')
                    | (b'5', b'c')
                    | (b'3', b'b')
                    | (b'0', b'0')
                    | (b'2', b'5')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_v1_me_itself_is_free() {
        assert_eq!(
            required_scope("GET", "/v1/me"),
            Ok(RouteRequirement::NoScope)
        );
        assert_eq!(
            required_scope("GET", "/v1/me/"),
            Ok(RouteRequirement::NoScope)
        );
        assert_eq!(
            required_scope("DELETE", "/v1/me/webhooks/123"),
            Ok(RouteRequirement::UnknownResource)
        );
    }

    fn scope_for(method: &str, uri: &str) -> String {
        match required_scope(method, uri) {
            Ok(RouteRequirement::Scope(s)) => s.as_str().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn get_and_head_need_read_everything_else_write() {
        assert_eq!(scope_for("GET", "/v1/checks"), "checks:read");
        assert_eq!(scope_for("HEAD", "/v1/checks/chk_1"), "checks:read");
        assert_eq!(scope_for("POST", "/v1/checks"), "checks:write");
        assert_eq!(scope_for("PUT", "/v1/incidents/1"), "incidents:write");
        assert_eq!(scope_for("PATCH", "/v1/webhooks/1"), "webhooks:write");
        assert_eq!(scope_for("DELETE", "/v1/teams/1/members/2"), "teams:write");
        assert_eq!(scope_for("OPTIONS", "/v1/billing"), "billing:write");
        assert_eq!(
            scope_for("GET", "/v1/billing/invoices?page=2"),
            "billing:read"
        );
        assert_eq!(scope_for("get", "/v1/checks"), "checks:write");
        assert_eq!(scope_for("Head", "/v1/checks"), "checks:write");
    }

    #[test]
    fn status_pages_path_maps_to_status_pages_scope() {
        assert_eq!(
            scope_for("GET", "/v1/status-pages/abc"),
            "status_pages:read"
        );
        assert_eq!(scope_for("POST", "/v1/status-pages"), "status_pages:write");
    }

    #[test]
    fn me_needs_no_scope_and_unknown_resources_are_marked() {
        assert_eq!(
            required_scope("POST", "/v1/me"),
            Ok(RouteRequirement::NoScope)
        );
        assert_eq!(
            required_scope("GET", "/v1/me/"),
            Ok(RouteRequirement::NoScope)
        );
        assert_eq!(
            required_scope("GET", "/v1/secrets"),
            Ok(RouteRequirement::UnknownResource)
        );
    }

    #[test]
    fn a_fragment_is_refused_wherever_it_is() {
        for uri in [
            "/v1/me#/../teams/1",
            "/v1/checks#x",
            "/v1/checks?q=1#/../billing",
        ] {
            assert_eq!(
                required_scope("DELETE", uri),
                Err(RouteError::Fragment),
                "{uri}"
            );
        }
        // Dot segments in a query are no path: the route is the path before `?`.
        assert_eq!(
            required_scope("GET", "/v1/me?/../billing"),
            Ok(RouteRequirement::NoScope)
        );
    }

    #[test]
    fn ambiguous_and_foreign_paths_are_refused() {
        for uri in [
            "/v1/checks/../billing",
            "/v1/checks/./x",
            "/v1//checks",
            "/v1/checks//x",
            "/v1/checks%2f..%2fbilling",
            "/v1/checks/%2E%2E/billing",
            "/v1/checks\\..\\billing",
            "/v1/../v1/billing",
            "/v1/checks/..;/billing",
            "/v1/checks;x=1/..;/billing",
            "/v1/checks/%3b/x",
            "/v1/checks/%252e%252e/billing",
            "/v1/checks/a%00",
            "/v1/checks/%c0%ae%c0%ae/teams",
            "/v1/checks/%C0%AE%C0%AE/teams",
            "/v1/checks/%e0%80%ae/x",
            "/v1/checks/%u002e%u002e/teams",
            "/v1/checks/%zz",
            "/v1/checks/x%",
            "/v1/checks/x%4",
        ] {
            assert_eq!(
                required_scope("GET", uri),
                Err(RouteError::Ambiguous),
                "{uri}"
            );
        }
        for uri in [
            "",
            "/",
            "/v2/checks",
            "v1/checks",
            "/v1",
            "http://x/v1/checks",
        ] {
            assert_eq!(
                required_scope("GET", uri),
                Err(RouteError::NotUnderV1),
                "{uri}"
            );
        }
        let longest = format!(
            "/v1/checks/{}",
            "x".repeat(MAX_URI_LEN - "/v1/checks/".len())
        );
        assert_eq!(scope_for("GET", &longest), "checks:read");
        // Well-formed escapes of UTF-8 are names like any other.
        assert_eq!(scope_for("GET", "/v1/checks/caf%C3%A9"), "checks:read");
        assert_eq!(scope_for("GET", "/v1/checks/a%20b?q=%zz"), "checks:read");
        assert_eq!(
            required_scope("GET", &format!("{longest}x")),
            Err(RouteError::TooLong)
        );
        assert_eq!(
            required_scope("G ET", "/v1/checks"),
            Err(RouteError::BadMethod)
        );
        assert_eq!(required_scope("", "/v1/checks"), Err(RouteError::BadMethod));
    }

    #[test]
    fn any_method_token_is_judged_and_nothing_else() {
        for method in [
            "VERSION-CONTROL",
            "BASELINE-CONTROL",
            "M-SEARCH",
            "X1",
            "A.B",
            "get",
        ] {
            assert_eq!(scope_for(method, "/v1/checks"), "checks:write", "{method}");
        }
        assert_eq!(scope_for("GET", "/v1/checks"), "checks:read");
        for method in [
            "G ET", "GET\t", "GÉT", "GET/1", "(GET)", "GET,POST", "GET\0", "\"GET\"",
        ] {
            assert_eq!(
                required_scope(method, "/v1/checks"),
                Err(RouteError::BadMethod),
                "{method:?}"
            );
        }
        assert_eq!(
            required_scope(&"A".repeat(33), "/v1/checks"),
            Err(RouteError::BadMethod)
        );
    }
}
