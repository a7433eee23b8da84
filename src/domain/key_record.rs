//! A stored API key, as the engine knows it (everything but the key itself).

use chrono::{DateTime, Duration, Utc};

use super::api_key::Environment;
use super::hashing::KeyHash;
use super::scope::ScopeSet;

/// Keys are disabled this long after creation.
pub const KEY_LIFETIME_DAYS: i64 = 365;
/// At most this many active keys per (workspace, environment, scope set).
pub const MAX_ACTIVE_KEYS_PER_SCOPE_SET: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub key_hash: KeyHash,
    pub key_hint: String,
    pub label: String,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the key stops working: set by revocation (now) or rotation (now + grace).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a key works at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }
}

impl ApiKeyRecord {
    /// The key's status at `now`. Revocation wins over expiry: it is the more specific fact.
    pub fn status_at(&self, now: DateTime<Utc>) -> KeyStatus {
        key_status(self.revoked_at, self.expires_at, now)
    }
}

/// The status rule, for anything that holds a key's revocation and expiry times.
pub fn key_status(
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> KeyStatus {
    match revoked_at {
        Some(at) if at <= now => KeyStatus::Revoked,
        _ if expires_at <= now => KeyStatus::Expired,
        _ => KeyStatus::Active,
    }
}

/// The expiry of a key created at `created_at`.
pub fn expiry_for(created_at: DateTime<Utc>) -> DateTime<Utc> {
    created_at + Duration::days(KEY_LIFETIME_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created_at: DateTime<Utc>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            key_hash: KeyHash([0; 32]),
            key_hint: "sp_live_...abcd".into(),
            label: "ci".into(),
            environment: Environment::Live,
            scopes: ScopeSet::EMPTY,
            created_at,
            expires_at: expiry_for(created_at),
            revoked_at: None,
        }
    }

    #[test]
    fn a_key_expires_365_days_after_creation() {
        let created = Utc::now();
        let key = record(created);
        assert_eq!(
            key.status_at(created + Duration::days(364)),
            KeyStatus::Active
        );
        assert_eq!(
            key.status_at(created + Duration::days(365)),
            KeyStatus::Expired
        );
    }

    #[test]
    fn revocation_can_be_scheduled_for_a_grace_period() {
        let now = Utc::now();
        let mut key = record(now);
        key.revoked_at = Some(now + Duration::seconds(30));
        assert_eq!(key.status_at(now), KeyStatus::Active);
        assert_eq!(
            key.status_at(now + Duration::seconds(30)),
            KeyStatus::Revoked
        );
    }
}
