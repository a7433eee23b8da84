//! Migrations embedded in the binary. Both backends carry the same version numbers so that
//! a schema change is always made twice, side by side.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "audit_inbox",
        sql: include_str!("../../migrations/postgres/0002_audit_inbox.sql"),
    },
    Migration {
        version: 3,
        name: "audit_chunks",
        sql: include_str!("../../migrations/postgres/0003_audit_chunks.sql"),
    },
    Migration {
        version: 4,
        name: "audit_chains",
        sql: include_str!("../../migrations/postgres/0004_audit_chains.sql"),
    },
    Migration {
        version: 5,
        name: "rate_limit_counts",
        sql: include_str!("../../migrations/postgres/0005_rate_limit_counts.sql"),
    },
    Migration {
        version: 6,
        name: "hashing_key_fingerprint",
        sql: include_str!("../../migrations/postgres/0006_hashing_key_fingerprint.sql"),
    },
];

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "audit_inbox",
        sql: include_str!("../../migrations/sqlite/0002_audit_inbox.sql"),
    },
    Migration {
        version: 3,
        name: "audit_chunks",
        sql: include_str!("../../migrations/sqlite/0003_audit_chunks.sql"),
    },
    Migration {
        version: 4,
        name: "audit_chains",
        sql: include_str!("../../migrations/sqlite/0004_audit_chains.sql"),
    },
    Migration {
        version: 5,
        name: "rate_limit_counts",
        sql: include_str!("../../migrations/sqlite/0005_rate_limit_counts.sql"),
    },
    Migration {
        version: 6,
        name: "hashing_key_fingerprint",
        sql: include_str!("../../migrations/sqlite/0006_hashing_key_fingerprint.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_versions_in_order() {
        let pg: Vec<_> = POSTGRES.iter().map(|m| (m.version, m.name)).collect();
        let lite: Vec<_> = SQLITE.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(pg, lite);
        assert!(pg.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
