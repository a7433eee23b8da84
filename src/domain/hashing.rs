//! Keyed BLAKE3 hashing of credentials. Only these hashes are ever stored; the hashing key
//! is a server secret kept outside the database, so a stolen database alone cannot be used
//! to test guesses offline.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use subtle::ConstantTimeEq;

/// A keyed BLAKE3 hash of a credential.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

/// A `KeyHash` is already uniformly random and unknowable to callers (they do not have the
/// hashing key), so hash tables can use its first eight bytes as is: no SipHash on the hot
/// path, and no way to aim collisions at a bucket.
impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(prefix));
    }
}

/// The hasher for tables keyed by [`KeyHash`]: passes the prefix through.
#[derive(Default, Clone, Copy)]
pub struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than a KeyHash is hashed with it; stay correct.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// `BuildHasher` for `HashMap<KeyHash, _>` and `DashMap<KeyHash, _>`.
pub type KeyHashState = BuildHasherDefault<KeyHashHasher>;

impl KeyHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a hash from stored bytes; `None` when the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<KeyHash> {
        <[u8; 32]>::try_from(bytes).ok().map(KeyHash)
    }

    /// Compares in constant time, for checks against a single expected value.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    // Even a hash is not printed whole: four bytes are enough to correlate log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Hashes credentials under the server's secret hashing key.
#[derive(Clone)]
pub struct KeyHasher {
    key: [u8; 32],
}

impl KeyHasher {
    pub fn new(key: [u8; 32]) -> KeyHasher {
        KeyHasher { key }
    }

    pub fn hash(&self, credential: &str) -> KeyHash {
        KeyHash(*blake3::keyed_hash(&self.key, credential.as_bytes()).as_bytes())
    }

    /// What storage records of this hashing key, so that a server started with another one
    /// is refused rather than answering every key 401: the keyed hash of a fixed text (no
    /// key has that shape), in hex. Like the stored key hashes, it gives away nothing usable
    /// of a key with 256 random bits.
    pub fn fingerprint(&self) -> String {
        self.hash("statuspulse-auth hashing key fingerprint")
            .as_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_the_server_key() {
        let a = KeyHasher::new([1; 32]).hash("sp_live_x");
        let b = KeyHasher::new([2; 32]).hash("sp_live_x");
        assert_ne!(a, b);
        assert!(a.ct_eq(&KeyHasher::new([1; 32]).hash("sp_live_x")));
        assert!(!a.ct_eq(&b));
    }

    #[test]
    fn debug_output_does_not_reveal_the_hash_or_key() {
        let hasher = KeyHasher::new([9; 32]);
        let hash = hasher.hash("secret");
        let printed = format!("{hash:?} {hasher:?}");
        let full_hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!printed.contains(&full_hex[..16]), "{printed}");
        assert!(printed.contains("redacted"));
    }
}
