//! Directories and files that hold what only this server may read: the data dir and the
//! spools under it (audit events carry paths and client addresses; dead letters carry whole
//! events), secrets, the database.

use std::fs::OpenOptions;
use std::io;
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
}
