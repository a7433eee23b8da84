//! API key format: `sp_live_` or `sp_test_`, 32 random base62 characters (190 bits) and a
//! 6-character base62 CRC-32 checksum. The checksum lets a mistyped or made-up key be
//! refused before any hashing or storage lookup; it is not a secret and proves nothing.

use std::fmt;

use rand::Rng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::hashing::KeyHash;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const PREFIX_LEN: usize = 8; // "sp_live_" and "sp_test_"
/// The length of every well-formed key.
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;

/// Production (`live`) or sandbox (`test`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Environment> {
        match text {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Environment::Live => "sp_live_",
            Environment::Test => "sp_test_",
        }
    }

    /// Requests per minute a workspace may make with credentials of this environment.
    pub fn requests_per_minute(self) -> u16 {
        match self {
            Environment::Live => 1_200,
            Environment::Test => 120,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a presented string is not a well-formed key. Deliberately coarse: callers answer
/// every one of these with the same `invalid_credentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not an sp_live_ or sp_test_ key")]
    Prefix,
    #[error("wrong length or characters")]
    Shape,
    #[error("checksum mismatch")]
    Checksum,
}

/// A newly generated key: the secret (shown once), its hash and its hint.
pub struct GeneratedKey {
    pub secret: SecretString,
    pub hash: KeyHash,
    pub hint: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// Generates a fresh key for `environment` and hashes it with `hash`.
pub fn generate_key(
    environment: Environment,
    rng: &mut impl Rng,
    hash: impl Fn(&str) -> KeyHash,
) -> GeneratedKey {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(environment.prefix());
    for _ in 0..RANDOM_LEN {
        key.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    let checksum = checksum_digits(checksum_of(&key));
    key.extend(checksum.iter().map(|&b| b as char));
    let hint = key_hint(&key);
    GeneratedKey {
        hash: hash(&key),
        hint,
        secret: SecretString::from(key),
    }
}

/// Checks the prefix, shape and checksum of a presented key and returns its environment.
/// Runs in a few dozen nanoseconds and touches no storage.
pub fn parse_key(key: &str) -> Result<Environment, KeyFormatError> {
    let environment = if key.starts_with("sp_live_") {
        Environment::Live
    } else if key.starts_with("sp_test_") {
        Environment::Test
    } else {
        return Err(KeyFormatError::Prefix);
    };
    let bytes = key.as_bytes();
    if bytes.len() != KEY_LEN || !bytes[PREFIX_LEN..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(KeyFormatError::Shape);
    }
    let (body, checksum) = key.split_at(PREFIX_LEN + RANDOM_LEN);
    if checksum_digits(checksum_of(body)) != checksum.as_bytes() {
        return Err(KeyFormatError::Checksum);
    }
    Ok(environment)
}

/// What listings show instead of the key: its prefix and last four characters.
pub fn key_hint(key: &str) -> String {
    let tail = key.get(key.len().saturating_sub(4)..).unwrap_or_default();
    let prefix = key.get(..PREFIX_LEN).unwrap_or_default();
    format!("{prefix}...{tail}")
}

fn checksum_of(body: &str) -> u32 {
    crc32fast::hash(body.as_bytes())
}

/// Six base62 digits, most significant first; 62^6 > 2^32 so every CRC fits.
fn checksum_digits(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hashing::KeyHasher;
    use secrecy::ExposeSecret;

    fn new_key(env: Environment) -> GeneratedKey {
        let hasher = KeyHasher::new([7; 32]);
        generate_key(env, &mut rand::thread_rng(), |k| hasher.hash(k))
    }

    #[test]
    fn generated_keys_parse_with_their_environment() {
        let live = new_key(Environment::Live);
        let test = new_key(Environment::Test);
        assert!(live.secret.expose_secret().starts_with("sp_live_"));
        assert_eq!(live.secret.expose_secret().len(), KEY_LEN);
        assert_eq!(
            parse_key(live.secret.expose_secret()),
            Ok(Environment::Live)
        );
        assert_eq!(
            parse_key(test.secret.expose_secret()),
            Ok(Environment::Test)
        );
    }

    #[test]
    fn random_part_carries_at_least_160_bits() {
        let bits = RANDOM_LEN as f64 * (BASE62.len() as f64).log2();
        assert!(bits >= 160.0, "{bits}");
        let a = new_key(Environment::Live);
        let b = new_key(Environment::Live);
        assert_ne!(a.secret.expose_secret(), b.secret.expose_secret());
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let key = new_key(Environment::Live)
            .secret
            .expose_secret()
            .to_string();
        for position in PREFIX_LEN..key.len() {
            for replacement in [b'0', b'z', b'Q'] {
                let mut bytes = key.clone().into_bytes();
                if bytes[position] == replacement {
                    continue;
                }
                bytes[position] = replacement;
                let typo = String::from_utf8(bytes).unwrap();
                assert_eq!(
                    parse_key(&typo),
                    Err(KeyFormatError::Checksum),
                    "{position}"
                );
            }
        }
    }

    #[test]
    fn swapped_adjacent_characters_are_caught() {
        let key = new_key(Environment::Test)
            .secret
            .expose_secret()
            .to_string();
        let mut bytes = key.into_bytes();
        let i = (PREFIX_LEN..bytes.len() - 1)
            .find(|&i| bytes[i] != bytes[i + 1])
            .unwrap();
        bytes.swap(i, i + 1);
        let swapped = String::from_utf8(bytes).unwrap();
        assert_eq!(parse_key(&swapped), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn malformed_keys_are_refused_by_shape() {
        assert_eq!(parse_key("sk_live_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(parse_key(""), Err(KeyFormatError::Prefix));
        assert_eq!(parse_key("sp_live_short"), Err(KeyFormatError::Shape));
        let key = new_key(Environment::Live)
            .secret
            .expose_secret()
            .to_string();
        assert_eq!(parse_key(&format!("{key}x")), Err(KeyFormatError::Shape));
        let mut with_symbol = key.clone();
        with_symbol.replace_range(10..11, "-");
        assert_eq!(parse_key(&with_symbol), Err(KeyFormatError::Shape));
        let mut multibyte = key[..KEY_LEN - 2].to_string();
        multibyte.push('é');
        assert_eq!(parse_key(&multibyte), Err(KeyFormatError::Shape));
        // A live key relabelled as test fails the checksum: the prefix is covered by it.
        let relabelled = key.replacen("sp_live_", "sp_test_", 1);
        assert_eq!(parse_key(&relabelled), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn hint_shows_prefix_and_last_four_only() {
        let generated = new_key(Environment::Live);
        let key = generated.secret.expose_secret();
        assert_eq!(
            generated.hint,
            format!("sp_live_...{}", &key[key.len() - 4..])
        );
    }
}
