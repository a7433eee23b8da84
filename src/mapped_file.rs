//! Files written through a shared memory mapping: the audit spool's segments and the rate
//! journal. A write into a mapping cannot report an error: when the page it lands on has no
//! disk block yet and the disk is full, the kernel sends SIGBUS, which kills the whole
//! server. So these files are created with every block allocated. A full disk is then an
//! `io::Error` at creation, which the caller handles, and on ext4, XFS and tmpfs writes into
//! the mapping need no more space. (Copy-on-write file systems, ZFS and btrfs after a
//! snapshot, allocate again on write, and ZFS's compression turns written zeros back into
//! holes: there a full disk can still end the server.)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use memmap2::MmapRaw;

/// Creates the file at `path` with `options` (which must open it for reading and writing,
/// and create it empty), allocates its `bytes` on disk, and maps it, shared. A file that
/// could not be allocated is removed, so that a later attempt starts afresh.
pub fn create(options: &OpenOptions, path: &Path, bytes: u64) -> io::Result<MmapRaw> {
    let file = options.open(path)?;
    match allocate(&file, bytes).and_then(|()| MmapRaw::map_raw(&file)) {
        Ok(mapping) => Ok(mapping),
        Err(error) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(error)
        }
    }
}

/// Gives the (empty) file `bytes` of zeros that hold disk blocks, not a sparse hole.
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => return Ok(()),
        // A file system without `fallocate` (some network ones), or a sandbox without
        // the system call (seccomp, gVisor): written zeros take their blocks too.
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {}
        Err(error) => return Err(error.into()),
    }
    write_zeros(file, bytes)
}

fn write_zeros(mut file: &File, bytes: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = [0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let now = left.min(CHUNK as u64) as usize;
        file.write_all(&zeros[..now])?;
        left -= now as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "statuspulse-mapped-file-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_write_new() -> OpenOptions {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        options
    }

    #[test]
    fn the_file_is_allocated_not_sparse() {
        let dir = scratch("allocated");
        let path = dir.join("segment");
        let bytes = 1024 * 1024;
        let mapping = create(&read_write_new(), &path, bytes).unwrap();
        assert_eq!(mapping.len() as u64, bytes);
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.len(), bytes);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // st_blocks counts 512-byte units: a sparse file of this size would hold none.
            assert!(
                metadata.blocks() * 512 >= bytes,
                "{} blocks for {bytes} bytes",
                metadata.blocks()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zeros_written_by_hand_are_the_length_asked_for() {
        let dir = scratch("zeros");
        let path = dir.join("file");
        let file = read_write_new().open(&path).unwrap();
        write_zeros(&file, 200_000).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), 200_000);
        assert!(written.iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_created_is_an_error_and_leaves_nothing() {
        let dir = scratch("refused");
        let path = dir.join("segment");
        std::fs::write(&path, b"taken").unwrap();
        assert!(create(&read_write_new(), &path, 4096).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"taken",
            "not the new file's to remove"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
