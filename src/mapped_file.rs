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
/// and create it empty), allocates its `bytes` on disk, and maps it, shared; the mapping and
/// the file, still open. A file that could not be allocated is removed, so that a later
/// attempt starts afresh.
pub fn create(options: &OpenOptions, path: &Path, bytes: u64) -> io::Result<(MmapRaw, File)> {
    let file = create_allocated(options, path, bytes)?;
    match MmapRaw::map_raw(&file) {
        Ok(mapping) => Ok((mapping, file)),
        Err(error) => {
            let _ = std::fs::remove_file(path);
            Err(error)
        }
    }
}

/// `create`, without the mapping: the file, open.
pub fn create_allocated(options: &OpenOptions, path: &Path, bytes: u64) -> io::Result<File> {
    let file = options.open(path)?;
    match allocate(&file, bytes) {
        Ok(()) => Ok(file),
        Err(error) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(error)
        }
    }
}

/// Maps `file` over `mapping`'s addresses, shared, for reading and writing (`MAP_FIXED`):
/// from then on every access through `mapping` reads and writes `file`, and what `mapping`
/// mapped before is let go. For a mapping whose file was deleted: its contents copied into
/// a new file, the new file takes its place under the pointers that the rest of the program
/// holds. If that fails, `mapping`'s own file (`old_file`) is mapped back, since Linux
/// before 6.12 can leave the range unmapped when `MAP_FIXED` fails, where the next access
/// would crash; and if even that fails, the process aborts rather than run on with a hole.
///
/// # Safety
///
/// `mapping` must be accessed only through atomics while this runs (a plain reference into
/// it could see its bytes change under it), and both files must be at least as long as it.
#[cfg(unix)]
#[allow(unsafe_code)]
pub unsafe fn map_over(mapping: &MmapRaw, file: &File, old_file: &File) -> io::Result<()> {
    for candidate in [file, old_file] {
        if candidate.metadata()?.len() < mapping.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a file is shorter than the mapping",
            ));
        }
    }
    // SAFETY: as the caller promises, with the lengths checked above.
    let Err(error) = (unsafe { map_fixed(mapping, file) }) else {
        return Ok(());
    };
    // SAFETY: the same range and conditions, with the file it mapped before.
    if let Err(again) = unsafe { map_fixed(mapping, old_file) } {
        tracing::error!(%error, %again, "a memory mapping could be neither moved nor restored; aborting");
        std::process::abort();
    }
    Err(error)
}

/// One `mmap` with `MAP_FIXED` of `file` over `mapping`'s range.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe fn map_fixed(mapping: &MmapRaw, file: &File) -> io::Result<()> {
    use rustix::mm::{MapFlags, ProtFlags};
    // SAFETY: the range is exactly `mapping`'s own (memmap2 maps a file from offset 0 at a
    // page boundary), so nothing else of the process is replaced; when the call succeeds,
    // the kernel has swapped the pages under its memory-map lock, so a thread touching the
    // range meanwhile sees either the old page or the new one. `MmapRaw`'s drop unmaps the
    // same range later, whatever is mapped there then.
    unsafe {
        rustix::mm::mmap(
            mapping.as_mut_ptr().cast(),
            mapping.len(),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::FIXED,
            file,
            0,
        )?;
    }
    Ok(())
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
        let (mapping, _file) = create(&read_write_new(), &path, bytes).unwrap();
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
    fn a_file_mapped_over_a_mapping_takes_its_place_under_the_same_pointer() {
        let dir = scratch("map-over");
        let (old_path, new_path) = (dir.join("old"), dir.join("new"));
        let old_file = create_allocated(&read_write_new(), &old_path, 8192).unwrap();
        let mapping = MmapRaw::map_raw(&old_file).unwrap();
        let pointer = mapping.as_mut_ptr();
        std::fs::remove_file(&old_path).unwrap();
        let new_file = create_allocated(&read_write_new(), &new_path, 8192).unwrap();
        std::fs::write(&new_path, [7u8; 8192]).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: nothing else touches the mapping; the files are as long as it.
        unsafe {
            map_over(&mapping, &new_file, &old_file).unwrap();
            assert_eq!(mapping.as_mut_ptr(), pointer);
            assert_eq!(*pointer.add(100), 7, "reads come from the new file");
            *pointer.add(200) = 9;
        }
        mapping.flush().unwrap();
        assert_eq!(std::fs::read(&new_path).unwrap()[200], 9, "writes reach it");
        let short = create_allocated(&read_write_new(), &dir.join("short"), 4096).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: refused before anything is mapped.
        let refused = unsafe { map_over(&mapping, &short, &new_file) };
        assert!(
            refused.is_err(),
            "a file shorter than the mapping is refused"
        );
        drop(mapping);
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
