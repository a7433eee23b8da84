//! Which kind of store a data dir serves. The audit spool and the dead letters hold events
//! on their way to one store's audit log; a start on the other kind (PostgreSQL's data dir
//! started once without `STATUSPULSE_DATABASE_URL`) would hand them to a fresh embedded
//! database instead, where no one looks. So the data dir records its kind (`store`), and a
//! start on another kind is refused while such events wait. With none waiting, switching
//! kinds is allowed: that is moving an installation, not losing its events.

use std::fs;
use std::io;
use std::path::Path;

pub use crate::config::StoreKind;

const STORE_FILE: &str = "store";

/// The kind as the record writes it.
fn record_text(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Sqlite => "sqlite",
        StoreKind::Postgres => "postgres",
    }
}

fn parse_record(text: &str) -> Option<StoreKind> {
    match text.trim() {
        "sqlite" => Some(StoreKind::Sqlite),
        "postgres" => Some(StoreKind::Postgres),
        _ => None,
    }
}

/// How to start on `kind` again, for the refusal.
fn how_to_start(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Sqlite => "the embedded SQLite store; start without STATUSPULSE_DATABASE_URL",
        StoreKind::Postgres => {
            "PostgreSQL; start with STATUSPULSE_DATABASE_URL set to that database"
        }
    }
}

/// Checks that the data dir may serve `serving`, then records it. `events_waiting` says
/// whether the spool or the dead letters hold events; it is asked only on a change of kind.
pub fn check_and_record(
    data_dir: &Path,
    serving: StoreKind,
    events_waiting: impl FnOnce() -> io::Result<bool>,
) -> Result<(), String> {
    let path = data_dir.join(STORE_FILE);
    let recorded = match fs::read_to_string(&path) {
        Ok(text) => parse_record(&text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    if let Some(recorded) = recorded.filter(|&recorded| recorded != serving) {
        let waiting =
            events_waiting().map_err(|error| format!("cannot look for audit events: {error}"))?;
        if waiting {
            return Err(format!(
                "it holds audit events of a run on {} so that they reach that store's audit \
                 log (audit-spool/, dead-letters/; to give them up, move those two out of \
                 the data dir)",
                how_to_start(recorded)
            ));
        }
    }
    if recorded != Some(serving) {
        // Written whole or not at all: a crash must not leave an empty record, which
        // would let the next start on the other kind through unchecked.
        crate::private_dir::write_atomically(
            &path,
            format!("{}\n", record_text(serving)).as_bytes(),
        )
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("statuspulse-store-{}", uuid::Uuid::now_v7()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn recorded(dir: &Path) -> String {
        fs::read_to_string(dir.join(STORE_FILE)).unwrap()
    }

    #[test]
    fn a_new_data_dir_records_its_kind_and_keeps_serving_it() {
        let dir = data_dir();
        check_and_record(&dir, StoreKind::Postgres, || panic!("not asked")).unwrap();
        assert_eq!(recorded(&dir), "postgres\n");
        check_and_record(&dir, StoreKind::Postgres, || panic!("not asked")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_kind_is_refused_while_events_wait_and_allowed_once_none_do() {
        let dir = data_dir();
        check_and_record(&dir, StoreKind::Postgres, || Ok(true)).unwrap();
        let refused = check_and_record(&dir, StoreKind::Sqlite, || Ok(true)).unwrap_err();
        assert!(
            refused.contains("PostgreSQL; start with STATUSPULSE_DATABASE_URL"),
            "{refused}"
        );
        assert_eq!(
            recorded(&dir),
            "postgres\n",
            "a refused start changes nothing"
        );
        check_and_record(&dir, StoreKind::Sqlite, || Ok(false)).unwrap();
        assert_eq!(recorded(&dir), "sqlite\n");
        let refused = check_and_record(&dir, StoreKind::Postgres, || Ok(true)).unwrap_err();
        assert!(
            refused.contains("without STATUSPULSE_DATABASE_URL"),
            "{refused}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_record_is_rewritten() {
        let dir = data_dir();
        fs::write(dir.join(STORE_FILE), "mysql").unwrap();
        check_and_record(&dir, StoreKind::Sqlite, || panic!("not asked")).unwrap();
        assert_eq!(recorded(&dir), "sqlite\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
