//! Credentials in text that a caller sent. A caller may paste a key into the wrong place (a
//! scope, a field name, a request id, a path); what comes back in an answer, or goes into a
//! log or the audit log, must not carry it. Keys and admin tokens have fixed prefixes, so
//! they are found by those and cut after the prefix.

/// Prefixes of the credentials this engine issues.
pub const CREDENTIAL_PREFIXES: [&str; 3] = ["sp_live_", "sp_test_", "sp_admin_"];

/// Whether `text` holds something that starts like a credential. Runs on every audited
/// path: a byte loop, which for short text costs less than setting up a substring search.
pub fn mentions_credential(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|at| {
        bytes[at] == b's'
            && CREDENTIAL_PREFIXES
                .iter()
                .any(|prefix| bytes[at..].starts_with(prefix.as_bytes()))
    })
}

/// `text` with everything after a credential's prefix cut out (`sp_live_…`).
pub fn without_credentials(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = CREDENTIAL_PREFIXES
        .iter()
        .filter_map(|prefix| rest.find(prefix).map(|at| (at, *prefix)))
        .min_by_key(|&(at, _)| at)
    {
        let secret_starts = at + prefix.len();
        kept.push_str(&rest[..secret_starts]);
        kept.push('…');
        let secret = &rest[secret_starts..];
        let secret_len = secret
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(secret.len());
        rest = &secret[secret_len..];
    }
    kept.push_str(rest);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_cut_after_their_prefix() {
        let text =
            "unknown scope \"sp_live_4Fh8kQz0Rj2mXc9v\"; also `sp_admin_00ff` and sp_test_x-y_z.";
        assert_eq!(
            without_credentials(text),
            "unknown scope \"sp_live_…\"; also `sp_admin_…` and sp_test_…."
        );
        assert_eq!(without_credentials("no secret here"), "no secret here");
        assert_eq!(without_credentials("sp_live_"), "sp_live_…");
    }

    #[test]
    fn mentions_are_found_anywhere_and_only_with_a_whole_prefix() {
        assert!(mentions_credential("sp_live_abc"));
        assert!(mentions_credential("/v1/checks/sp_test_abc"));
        assert!(mentions_credential("x-sp_sp_admin_1"));
        assert!(!mentions_credential("sp_live"));
        assert!(!mentions_credential("/v1/sp_checks/sp_"));
        assert!(!mentions_credential("req-123"));
    }
}
