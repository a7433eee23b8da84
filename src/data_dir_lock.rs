//! One server per data dir. Its audit spool and rate journal belong to the server that
//! opened them: a second server on the same dir would, at its own stop, delete the first
//! one's spool segments and journal, and the first would lose what makes it crash-safe.
//! So a server holds an exclusive lock on `lock` in the data dir while it runs; the kernel
//! releases it when the process ends, however it ends (no stale lock after a `kill -9`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const LOCK_FILE: &str = "lock";

/// Held for as long as the server runs.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data dir's lock, or says who holds it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, String> {
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // The holder's process id, for whoever finds the lock taken. Informational:
            // the lock itself is what counts.
            let _ = file
                .set_len(0)
                .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()));
            Ok(DataDirLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_string(&mut holder));
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            };
            Err(format!(
                "{} is in use by another running server{holder}; every server needs a data dir of its own",
                dir.display()
            ))
        }
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("statuspulse-lock-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock_data_dir(&dir).unwrap();
        let refused = lock_data_dir(&dir).unwrap_err();
        assert!(
            refused.ends_with(&format!(
                "is in use by another running server (process {}); every server needs a data dir of its own",
                std::process::id()
            )),
            "{refused}"
        );
        drop(first);
        let _again = lock_data_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
