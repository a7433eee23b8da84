//! Secrets kept in the data directory: the key-hashing key and the admin token's hash.
//! Files are created with mode 0600 and never hold a credential in clear.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use rand::RngCore;

use crate::config::decode_hex_32;
use crate::domain::credential_text::{ADMIN_TOKEN_PREFIX, ADMIN_TOKEN_RANDOM_BYTES};
use crate::domain::hashing::KeyHash;

const HASHING_KEY_FILE: &str = "hashing.key";
const ADMIN_TOKEN_HASH_FILE: &str = "admin_token.blake3";

/// A secret file problem, reported with its path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct SecretFileError {
    pub path: String,
    pub problem: String,
}

/// The hash the admin token is compared by. The token has 240 bits of randomness (or is
/// chosen by the operator), so a fast hash is enough; what matters is not keeping it.
pub fn admin_token_hash(token: &str) -> KeyHash {
    KeyHash(*blake3::hash(token.as_bytes()).as_bytes())
}

/// Reads the key-hashing key from the data directory, generating it on first start.
pub fn load_or_create_hashing_key(data_dir: &Path) -> Result<[u8; 32], SecretFileError> {
    let path = data_dir.join(HASHING_KEY_FILE);
    if let Some(text) = read_optional(&path)? {
        return decode_hex_32(text.trim()).ok_or_else(|| SecretFileError {
            path: path.display().to_string(),
            problem: "is not 64 hexadecimal characters".into(),
        });
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    write_private(&path, &hex(&key))?;
    Ok(key)
}

/// The hash of the admin token generated on an earlier start, if there was one.
pub fn stored_admin_token_hash(data_dir: &Path) -> Result<Option<KeyHash>, SecretFileError> {
    let path = data_dir.join(ADMIN_TOKEN_HASH_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    decode_hex_32(text.trim())
        .map(|bytes| Some(KeyHash(bytes)))
        .ok_or_else(|| SecretFileError {
            path: path.display().to_string(),
            problem: "is not a 64-character hex hash; delete it to generate a new admin token"
                .into(),
        })
}

/// Keeps a generated token's hash. A start calls it once nothing else can fail, just before
/// the token is printed: a start that failed after generating a token it never printed must
/// not keep that token's hash, or no one could ever use the admin API.
pub fn store_admin_token_hash(data_dir: &Path, hash: &KeyHash) -> Result<(), SecretFileError> {
    write_private(&data_dir.join(ADMIN_TOKEN_HASH_FILE), &hex(hash.as_bytes()))
}

/// A fresh admin token: the prefix and 240 random bits in hex.
pub fn new_admin_token() -> String {
    let mut random = [0u8; ADMIN_TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!("{ADMIN_TOKEN_PREFIX}{}", hex(&random))
}

fn read_optional(path: &Path) -> Result<Option<String>, SecretFileError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            if let Some(mode) = readable_by_others(path) {
                // A warning, not a refusal (as ssh's): a mounted secret is often 0644.
                tracing::warn!(
                    path = %path.display(),
                    mode = %format!("{mode:o}"),
                    "a secret file is readable by users other than its owner; chmod 600 it"
                );
            }
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SecretFileError {
            path: path.display().to_string(),
            problem: e.to_string(),
        }),
    }
}

/// The file's permission bits when its group or other users may read or write it.
fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), SecretFileError> {
    let fail = |e: std::io::Error| SecretFileError {
        path: path.display().to_string(),
        problem: e.to_string(),
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_once_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("sp-secrets-{}", uuid::Uuid::now_v7()));
        fs::create_dir_all(&dir).unwrap();
        let key = load_or_create_hashing_key(&dir).unwrap();
        assert_eq!(load_or_create_hashing_key(&dir).unwrap(), key);
        assert_eq!(stored_admin_token_hash(&dir).unwrap(), None);
        let token = new_admin_token();
        let hash = admin_token_hash(&token);
        store_admin_token_hash(&dir, &hash).unwrap();
        assert_eq!(stored_admin_token_hash(&dir).unwrap(), Some(hash));
        assert!(
            store_admin_token_hash(&dir, &hash).is_err(),
            "a stored hash is never overwritten"
        );
        let stored = fs::read_to_string(dir.join(ADMIN_TOKEN_HASH_FILE)).unwrap();
        assert!(!stored.contains(&token));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(HASHING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let path = dir.join(HASHING_KEY_FILE);
            assert_eq!(readable_by_others(&path), None);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(readable_by_others(&path), Some(0o644));
        }
    }
}
