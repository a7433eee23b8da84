//! Workspaces, users, roles and memberships.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::scope::{Access, Resource, Scope, ScopeSet, ALL_SCOPES};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A workspace member's role, which bounds the scopes the member can consent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// The scopes this role holds, as the contract lists them.
    pub fn scopes(self) -> ScopeSet {
        let mut set = ScopeSet::EMPTY;
        for scope in ALL_SCOPES {
            let held = match self {
                Role::Owner => true,
                Role::Viewer => scope.access == Access::Read && scope.resource != Resource::Billing,
                Role::Member => Role::Viewer.scopes().contains(scope) || is_member_write(scope),
                Role::Admin => {
                    Role::Member.scopes().contains(scope)
                        || scope == Scope::new(Resource::Teams, Access::Write)
                }
            };
            if held {
                set.insert(scope);
            }
        }
        set
    }
}

fn is_member_write(scope: Scope) -> bool {
    scope.access == Access::Write
        && matches!(
            scope.resource,
            Resource::Checks | Resource::Incidents | Resource::Webhooks | Resource::StatusPages
        )
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub workspace_id: String,
    pub user_id: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// Whether `email` (already trimmed) is shaped like an address: one `@`, a local part of at
/// most 64 bytes, a domain of dot-separated non-empty labels with at least one dot, no
/// whitespace or control characters, at most 254 bytes in all. Deliverability is not checked.
pub fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// `email` in Unicode's lower case, character by character, as Go's `strings.ToLower` (and
/// so Ory Kratos) writes it: `str::to_lowercase` writes a word-final Σ as ς, which would
/// make `ΣΑΣ@` and `σασ@` two addresses. Lower case is not full case folding (`ß` stays,
/// and a final ς typed as such stays), again as Kratos.
pub fn email_in_lower_case(email: &str) -> String {
    email
        .chars()
        .flat_map(|c| match c {
            // Go's one exception to Unicode's full lower case: `İ` is `i`, not `i` and a
            // combining dot above.
            '\u{130}' => 'i'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowered_character_by_character() {
        assert_eq!(email_in_lower_case("Ada@Example.COM"), "ada@example.com");
        assert_eq!(email_in_lower_case("Ärger@BÜRO.de"), "ärger@büro.de");
        assert_eq!(email_in_lower_case("\u{212A}im@x.io"), "kim@x.io");
        assert_eq!(email_in_lower_case("ΣΑΣ@x.gr"), "σασ@x.gr");
        assert_eq!(email_in_lower_case("σας@x.gr"), "σας@x.gr");
        assert_eq!(email_in_lower_case("İZMİR@x.tr"), "izmir@x.tr");
    }

    #[test]
    fn roles_hold_the_contract_scopes() {
        assert_eq!(
            Role::Viewer.scopes().to_canonical_string(),
            "checks:read incidents:read webhooks:read status_pages:read teams:read"
        );
        assert_eq!(
            Role::Member.scopes().to_canonical_string(),
            "checks:read checks:write incidents:read incidents:write webhooks:read \
             webhooks:write status_pages:read status_pages:write teams:read"
        );
        assert_eq!(
            Role::Admin.scopes().to_canonical_string(),
            "checks:read checks:write incidents:read incidents:write webhooks:read \
             webhooks:write status_pages:read status_pages:write teams:read teams:write"
        );
        assert_eq!(Role::Owner.scopes().iter().count(), 11);
    }

    #[test]
    fn emails_need_one_at_and_a_dotted_domain() {
        for good in ["a@b.co", "first.last+tag@mail.example.org"] {
            assert!(is_plausible_email(good), "{good}");
        }
        let long_local = format!("{}@example.com", "x".repeat(65));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@b@c.d",
            "a@.com",
            "a@b..com",
            "a@b.com.",
            "a b@c.d",
            "a@b\tc.d",
            &long_local,
        ] {
            assert!(!is_plausible_email(bad), "{bad:?}");
        }
    }
}
