//! Credentials in text that a caller sent. A caller may paste a key into the wrong place (a
//! scope, a field name, a request id, a path); what comes back in an answer, or goes into a
//! log or the audit log, must not carry it. Keys and admin tokens have fixed prefixes, so
//! they are found by those and cut after the prefix; a key's secret part standing without
//! its prefix is found by its checksum and cut whole.

use std::ops::Range;

use super::api_key::{parse_key, KEY_LEN};

/// Prefixes of the credentials this engine issues.
pub const CREDENTIAL_PREFIXES: [&str; 3] = [KEY_PREFIXES[0], KEY_PREFIXES[1], ADMIN_TOKEN_PREFIX];
/// A generated admin token: this prefix and its random bytes in hex.
pub const ADMIN_TOKEN_PREFIX: &str = "sp_admin_";
pub const ADMIN_TOKEN_RANDOM_BYTES: usize = 30;
pub const ADMIN_TOKEN_DIGITS: usize = 2 * ADMIN_TOKEN_RANDOM_BYTES;

/// Whether `text` holds something that starts like a credential, or a key's secret part
/// without its prefix. Runs on every audited path: byte loops, which for short text cost
/// less than setting up a substring search (the checksum is computed only for a run of
/// letters and digits exactly as long as a key's secret part).
pub fn mentions_credential(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|at| {
        bytes[at] == b's'
            && CREDENTIAL_PREFIXES
                .iter()
                .any(|prefix| bytes[at..].starts_with(prefix.as_bytes()))
    }) || runs_holding_key_bodies(text).next().is_some()
}

/// A key without its prefix: its random part and checksum.
const KEY_BODY_LEN: usize = KEY_LEN - KEY_PREFIXES[0].len();

/// Whether `body` is a key's secret part: with one of the prefixes, its checksum holds.
/// Put together on the stack: this runs on audited paths.
fn is_key_body(body: &str) -> bool {
    if body.len() != KEY_BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    KEY_PREFIXES.iter().any(|prefix| {
        let mut key = [0u8; KEY_LEN];
        key[..prefix.len()].copy_from_slice(prefix.as_bytes());
        key[prefix.len()..].copy_from_slice(body.as_bytes());
        std::str::from_utf8(&key).is_ok_and(|key| parse_key(key).is_ok())
    })
}

/// The runs of ASCII letters and digits in `text` (longest, so single-byte characters: byte
/// ranges on character boundaries) that are a key's secret part: of its length exactly, so
/// that the cost stays one checksum per such run however long the text (a secret glued to
/// other letters is not looked for here; stored text is checked at every offset, by
/// [`holds_credential`]).
fn runs_holding_key_bodies(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            if !bytes[at].is_ascii_alphanumeric() {
                at += 1;
                continue;
            }
            let start = at;
            while at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
                at += 1;
            }
            if at - start == KEY_BODY_LEN && is_key_body(&text[start..at]) {
                return Some(start..at);
            }
        }
        None
    })
}

/// Whether `text` holds a whole credential of ours: an API key whose checksum holds, or an
/// admin token as `serve` generates them (`sp_admin_` and 60 hex digits). Stricter than
/// [`mentions_credential`], for text that is stored: a label such as `sp_live_deploy` is a
/// name, where a key that passes its checksum is a secret pasted into the wrong field.
pub fn holds_credential(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|at| {
        let rest = &bytes[at..];
        let key = || {
            text.get(at..at + KEY_LEN)
                .is_some_and(|candidate| parse_key(candidate).is_ok())
        };
        let admin_token = || {
            rest.strip_prefix(ADMIN_TOKEN_PREFIX.as_bytes())
                .is_some_and(|digits| {
                    digits.len() >= ADMIN_TOKEN_DIGITS
                        && digits[..ADMIN_TOKEN_DIGITS]
                            .iter()
                            .all(u8::is_ascii_hexdigit)
                })
        };
        // The secret part alone: whoever reads the label can put the prefix back.
        let key_without_prefix = || text.get(at..at + KEY_BODY_LEN).is_some_and(is_key_body);
        (bytes[at] == b's' && (key() || admin_token())) || key_without_prefix()
    })
}

/// The prefixes of API keys, of one length.
const KEY_PREFIXES: [&str; 2] = ["sp_live_", "sp_test_"];

/// `text` with every credential in it cut: everything after a credential's prefix
/// (`sp_live_…`), and a key's secret part standing without its prefix (`…`).
pub fn without_credentials(text: &str) -> String {
    let cut = without_prefixed_credentials(text);
    let mut kept = String::with_capacity(cut.len());
    let mut from = 0;
    for run in runs_holding_key_bodies(&cut) {
        kept.push_str(&cut[from..run.start]);
        kept.push('…');
        from = run.end;
    }
    kept.push_str(&cut[from..]);
    kept
}

/// Caller's text to quote back: credentials cut first, then at most `max_chars` kept. In
/// that order: capped first, a secret part straddling the cap would lose its last
/// characters, no longer be recognised, and be quoted with nearly all of its randomness.
pub fn quotable(text: &str, max_chars: usize) -> String {
    without_credentials(text).chars().take(max_chars).collect()
}

fn without_prefixed_credentials(text: &str) -> String {
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
pub(crate) mod tests {
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

    /// A freshly generated key, as its holder sees it (for tests across the crate).
    pub(crate) fn fresh_key(environment: crate::domain::api_key::Environment) -> String {
        use crate::domain::api_key::generate_key;
        use crate::domain::hashing::KeyHasher;
        use secrecy::ExposeSecret;
        let hasher = KeyHasher::new([7; 32]);
        let generated = generate_key(environment, &mut rand::thread_rng(), |k| hasher.hash(k));
        generated.secret.expose_secret().to_owned()
    }

    #[test]
    fn a_keys_secret_part_without_its_prefix_is_found_and_cut_whole() {
        let key = fresh_key(crate::domain::api_key::Environment::Test);
        let body = &key["sp_test_".len()..];
        let text = format!("unknown scope \"{body}\"; path /v1/checks/{body}/runs");
        assert!(mentions_credential(&text));
        assert_eq!(
            without_credentials(&text),
            "unknown scope \"…\"; path /v1/checks/…/runs"
        );
        // A run of the same length whose checksum fails is left alone.
        let mut mistyped = body.to_owned().into_bytes();
        mistyped[3] = if mistyped[3] == b'a' { b'b' } else { b'a' };
        let mistyped = String::from_utf8(mistyped).unwrap();
        assert!(!mentions_credential(&mistyped));
        assert_eq!(without_credentials(&mistyped), mistyped);
        assert_eq!(without_credentials("ünïcödé ök"), "ünïcödé ök");
    }

    #[test]
    fn whole_credentials_are_found_anywhere_and_names_that_only_look_alike_are_not() {
        let key = fresh_key(crate::domain::api_key::Environment::Live);
        assert!(holds_credential(&key));
        assert!(holds_credential(&format!("deploy ({key}) prod")));
        assert!(holds_credential(&format!(
            "deploy {}",
            &key["sp_live_".len()..]
        )));
        let token = crate::secrets::new_admin_token();
        assert!(holds_credential(&format!("token {token}")));
        // A mistyped key, a prefix used as a name, a short token: not credentials.
        let mut mistyped = key.clone().into_bytes();
        mistyped[10] = if mistyped[10] == b'a' { b'b' } else { b'a' };
        assert!(!holds_credential(std::str::from_utf8(&mistyped).unwrap()));
        assert!(!holds_credential(
            &std::str::from_utf8(&mistyped).unwrap()[8..]
        ));
        assert!(!holds_credential(&"a".repeat(100)));
        assert!(!holds_credential("sp_live_deploy-pipeline"));
        assert!(!holds_credential("sp_admin_00ff"));
        assert!(!holds_credential(&key[..KEY_LEN - 1]));
        assert!(!holds_credential("ünïcödé sp_"));
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
