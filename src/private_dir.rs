//! Directories and files that hold what only this server may read: the data dir and the
//! spools under it (audit events carry paths and client addresses; dead letters carry whole
//! events), secrets, the database.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Options for a file that the server's user alone may read (`0600` when it is created;
/// on other systems, as the platform creates files). The caller says how it is opened.
pub fn file_options() -> OpenOptions {
    // Changed only on Unix, where files have a mode.
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `bytes` to `path` whole or not at all, readable by this user only: to a
/// temporary file beside it, synced, renamed into place, and the directory synced, so that
/// a crash leaves the old file or the new one, never a part. A failed write leaves no
/// temporary file behind (a full disk: the caller may retry).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let written = (|| {
        let mut file = file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, readable by this user only (`0700`; on other
/// systems, as the platform creates directories). An existing directory keeps its mode:
/// the data dir may be one the operator made and shares on purpose.
pub fn create(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_directories_are_private_and_existing_ones_keep_their_mode() {
        let root =
            std::env::temp_dir().join(format!("statuspulse-private-dir-{}", std::process::id()));
        let nested = root.join("a").join("b");
        super::create(&nested).unwrap();
        for dir in [&root.join("a"), &nested] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o750)).unwrap();
        super::create(&nested).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_written_atomically_replaces_the_old_one_whole_and_is_private() {
        let dir = std::env::temp_dir().join(format!("statuspulse-atomic-{}", std::process::id()));
        super::create(&dir).unwrap();
        let path = dir.join("record");
        super::write_atomically(&path, b"old").unwrap();
        super::write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(super::write_atomically(&dir.join("missing").join("record"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
