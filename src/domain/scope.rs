//! Scopes: the eleven permissions a credential can hold, and the sets they form.

use std::fmt;

use super::credential_text::quotable;

/// An API resource, the first path segment under `/v1/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Checks,
    Incidents,
    Webhooks,
    StatusPages,
    Billing,
    Teams,
}

impl Resource {
    /// Maps a `/v1/<segment>` path segment to its resource.
    pub fn from_path_segment(segment: &str) -> Option<Resource> {
        Some(match segment {
            "checks" => Resource::Checks,
            "incidents" => Resource::Incidents,
            "webhooks" => Resource::Webhooks,
            // The contract spells the path with a dash and the scope with an underscore;
            // the underscore form is accepted too so that either spelling is gated.
            "status-pages" | "status_pages" => Resource::StatusPages,
            "billing" => Resource::Billing,
            "teams" => Resource::Teams,
            _ => return None,
        })
    }
}

/// Read or write access to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// A resource and an access level. Not every pair is a grantable scope: `billing:write`
/// exists only as a route requirement that no credential can satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub access: Access,
}

/// Every grantable scope, in canonical order (the order of the product documentation).
pub const ALL_SCOPES: [Scope; 11] = [
    Scope::new(Resource::Checks, Access::Read),
    Scope::new(Resource::Checks, Access::Write),
    Scope::new(Resource::Incidents, Access::Read),
    Scope::new(Resource::Incidents, Access::Write),
    Scope::new(Resource::Webhooks, Access::Read),
    Scope::new(Resource::Webhooks, Access::Write),
    Scope::new(Resource::StatusPages, Access::Read),
    Scope::new(Resource::StatusPages, Access::Write),
    Scope::new(Resource::Billing, Access::Read),
    Scope::new(Resource::Teams, Access::Read),
    Scope::new(Resource::Teams, Access::Write),
];

impl Scope {
    pub const fn new(resource: Resource, access: Access) -> Scope {
        Scope { resource, access }
    }

    /// Whether a credential can hold this scope (`billing:write` is only ever required).
    pub const fn is_grantable(self) -> bool {
        self.bit().is_some()
    }

    /// The bit of this scope in a [`ScopeSet`], or `None` for a pair that is not grantable.
    const fn bit(self) -> Option<u16> {
        let index = match (self.resource, self.access) {
            (Resource::Checks, Access::Read) => 0,
            (Resource::Checks, Access::Write) => 1,
            (Resource::Incidents, Access::Read) => 2,
            (Resource::Incidents, Access::Write) => 3,
            (Resource::Webhooks, Access::Read) => 4,
            (Resource::Webhooks, Access::Write) => 5,
            (Resource::StatusPages, Access::Read) => 6,
            (Resource::StatusPages, Access::Write) => 7,
            (Resource::Billing, Access::Read) => 8,
            (Resource::Billing, Access::Write) => return None,
            (Resource::Teams, Access::Read) => 9,
            (Resource::Teams, Access::Write) => 10,
        };
        Some(1 << index)
    }

    /// Parses one of the eleven scope names; anything else is `None`.
    pub fn parse(name: &str) -> Option<Scope> {
        ALL_SCOPES.iter().copied().find(|s| s.as_str() == name)
    }

    /// Parses the name of any scope a route can require: the eleven, and `billing:write`
    /// (which audit events of writes to `/v1/billing` record, though no key can hold it).
    pub fn parse_required(name: &str) -> Option<Scope> {
        const BILLING_WRITE: Scope = Scope::new(Resource::Billing, Access::Write);
        Scope::parse(name).or((name == BILLING_WRITE.as_str()).then_some(BILLING_WRITE))
    }

    /// The scope's wire name, such as `checks:read`.
    pub const fn as_str(self) -> &'static str {
        match (self.resource, self.access) {
            (Resource::Checks, Access::Read) => "checks:read",
            (Resource::Checks, Access::Write) => "checks:write",
            (Resource::Incidents, Access::Read) => "incidents:read",
            (Resource::Incidents, Access::Write) => "incidents:write",
            (Resource::Webhooks, Access::Read) => "webhooks:read",
            (Resource::Webhooks, Access::Write) => "webhooks:write",
            (Resource::StatusPages, Access::Read) => "status_pages:read",
            (Resource::StatusPages, Access::Write) => "status_pages:write",
            (Resource::Billing, Access::Read) => "billing:read",
            (Resource::Billing, Access::Write) => "billing:write",
            (Resource::Teams, Access::Read) => "teams:read",
            (Resource::Teams, Access::Write) => "teams:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of grantable scopes, one bit each. Copy-sized so the hot path never allocates for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u16);

/// A scope name that is not one of the eleven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}")]
pub struct UnknownScope(pub String);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);
    /// How many sets there are: every one is `from_index(i)` for one `i` below this.
    pub const COUNT: usize = 1 << ALL_SCOPES.len();

    /// The set's position among all `COUNT` sets, for tables indexed by set.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The set at `index` (bits past the eleven scopes are ignored).
    pub fn from_index(index: usize) -> ScopeSet {
        ScopeSet((index % ScopeSet::COUNT) as u16)
    }

    /// Parses scope names, failing on the first unknown one. Duplicates collapse.
    pub fn parse<'a, I: IntoIterator<Item = &'a str>>(names: I) -> Result<ScopeSet, UnknownScope> {
        let mut set = ScopeSet::EMPTY;
        for name in names {
            let scope = Scope::parse(name).ok_or_else(|| UnknownScope(quotable(name, 64)))?;
            set.insert(scope);
        }
        Ok(set)
    }

    /// Parses the canonical space-separated form written by [`ScopeSet::to_canonical_string`].
    pub fn parse_canonical(text: &str) -> Result<ScopeSet, UnknownScope> {
        ScopeSet::parse(text.split_ascii_whitespace())
    }

    pub fn insert(&mut self, scope: Scope) {
        if let Some(bit) = scope.bit() {
            self.0 |= bit;
        }
    }

    pub fn contains(self, scope: Scope) -> bool {
        scope.bit().is_some_and(|bit| self.0 & bit != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a credential holding this set may use `scope`: it holds it, or it holds the
    /// write scope of the same resource (`X:write` implies `X:read`).
    pub fn grants(self, scope: Scope) -> bool {
        self.contains(scope)
            || (scope.access == Access::Read
                && self.contains(Scope::new(scope.resource, Access::Write)))
    }

    /// The set with every implied read scope added.
    pub fn effective(self) -> ScopeSet {
        let mut out = self;
        for scope in self.iter() {
            if scope.access == Access::Write {
                out.insert(Scope::new(scope.resource, Access::Read));
            }
        }
        out
    }

    /// The scopes in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        ALL_SCOPES.into_iter().filter(move |s| self.contains(*s))
    }

    /// Scope names in canonical order, separated by one space: the storage and header form.
    pub fn to_canonical_string(self) -> String {
        let mut out = String::with_capacity(64);
        for scope in self.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(scope.as_str());
        }
        out
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_scope_parses_and_round_trips() {
        let names = "checks:read checks:write incidents:read incidents:write webhooks:read \
                     webhooks:write status_pages:read status_pages:write billing:read teams:read teams:write";
        let set = ScopeSet::parse_canonical(names).unwrap();
        assert_eq!(set.iter().count(), 11);
        assert_eq!(
            set.to_canonical_string(),
            names.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn unknown_scopes_are_refused() {
        for bad in [
            "billing:write",
            "checks",
            "checks:admin",
            "CHECKS:READ",
            "",
            "teams:read ",
        ] {
            assert!(Scope::parse(bad).is_none(), "{bad:?} must not parse");
        }
        assert_eq!(
            ScopeSet::parse(["checks:read", "foo:bar"]),
            Err(UnknownScope("foo:bar".into()))
        );
    }

    #[test]
    fn a_key_in_an_unknown_scope_is_cut_before_the_name_is_capped() {
        let key = &crate::domain::credential_text::tests::fresh_key(
            crate::domain::api_key::Environment::Test,
        );
        let secret = &key["sp_test_".len()..];
        // 27 characters, then the secret: the 64th character is its next to last.
        let name = format!("checks:read-and-more-words-{secret}");
        let Err(UnknownScope(quoted)) = ScopeSet::parse([name.as_str()]) else {
            panic!("{name} parsed");
        };
        assert_eq!(quoted, "checks:read-and-more-words-…");
    }

    #[test]
    fn write_implies_read_of_the_same_resource_only() {
        let set = ScopeSet::parse(["checks:write"]).unwrap();
        assert!(set.grants(Scope::new(Resource::Checks, Access::Read)));
        assert!(set.grants(Scope::new(Resource::Checks, Access::Write)));
        assert!(!set.grants(Scope::new(Resource::Incidents, Access::Read)));
        let read_only = ScopeSet::parse(["checks:read"]).unwrap();
        assert!(!read_only.grants(Scope::new(Resource::Checks, Access::Write)));
        assert_eq!(set.effective().names(), vec!["checks:read", "checks:write"]);
    }

    #[test]
    fn billing_write_is_never_granted() {
        let all = ScopeSet::parse(ALL_SCOPES.iter().map(|s| s.as_str())).unwrap();
        assert!(!all.grants(Scope::new(Resource::Billing, Access::Write)));
    }

    #[test]
    fn canonical_form_is_order_independent() {
        let a = ScopeSet::parse(["teams:read", "checks:read", "checks:read"]).unwrap();
        let b = ScopeSet::parse(["checks:read", "teams:read"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_canonical_string(), "checks:read teams:read");
    }
}
