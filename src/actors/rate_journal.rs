//! Rate-limit counts that outlive a crash of the server process.
//!
//! A graceful stop saves every limiter's counts to storage (`Store::save_rate_limits`). A
//! crash (`kill -9`, the OOM killer, an abort) saves nothing, and every workspace would
//! start the next run with a fresh minute: a client could get twice its limit within 60
//! seconds across the crash. So each limiter also keeps its counts in a slot of a
//! memory-mapped file (`MAP_SHARED`, as the audit spool does). A count lands in the
//! kernel's page cache with one store, and the page cache outlives the process. The next
//! start reads the slots back, hands them to the registry like counts saved by a graceful
//! stop, and starts an empty journal in new files. The old files are deleted only once the
//! registry has journalled their counts again, so a crash during a start loses nothing: the
//! start after it reads both, and takes the larger count of each second (`merge_counts`). A
//! power cut can lose what the kernel had not written back, as for the spool.
//!
//! Files are `<n>.rates` under `$STATUSPULSE_DATA_DIR/rate-limits/`, each `SLOTS_PER_FILE`
//! slots of `SLOT_WORDS` little-endian 64-bit words:
//! - word 0, the tag: `TAG_MAGIC` in the low 32 bits, the environment in the next 8, the
//!   workspace id's length in the next 8; 0 for a free slot;
//! - words 1–7: the workspace id (at most `MAX_ID_BYTES` bytes);
//! - words 8–68: one word per second of the window, at `second % 61`:
//!   `second << 16 | count`, 0 when empty.
//!
//! Every word is read and written as an `AtomicU64`, so a crash between two stores leaves
//! each word whole. A slot is taken by writing its id and then its tag, and freed by
//! clearing its tag first.
//!
//! A file deleted while the server runs (the directory removed by hand, a clean-up job)
//! would take the counts with it at the next crash, since the mapping then writes to a file
//! nobody can open. `make_again_if_deleted`, run every second, notices it by the file's
//! identity and makes the file again with the counts it held, mapped over the old file's
//! addresses so that every slot writes there from then on (`mapped_file::map_over`), with
//! what limiters wrote during the move copied too.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;
use parking_lot::Mutex;

use crate::domain::api_key::Environment;
use crate::domain::rate_limit::{RateCounts, SLOTS};
use crate::log_throttle::LogThrottle;
use crate::store::SavedRateLimit;

const SLOTS_PER_FILE: usize = 4096;
/// The tag, the id, and one word per second of the window (`SLOTS` of them), rounded up.
const SLOT_WORDS: usize = 72;
const ID_WORDS: usize = 7;
const MAX_ID_BYTES: usize = ID_WORDS * 8;
const FIRST_BUCKET: usize = 1 + ID_WORDS;
const TAG_MAGIC: u64 = 0x5350_524c; // "SPRL"
const SUFFIX: &str = ".rates";
/// A file being made again (`move_to_new_file`), until it takes its name.
const MOVING_SUFFIX: &str = "moving";

const _: () = assert!(FIRST_BUCKET + SLOTS <= SLOT_WORDS);

pub struct RateJournal {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// The number of this run's first file: above any file an earlier run left.
    first_file_number: usize,
    state: Mutex<Slots>,
    /// Set by `keep_for_next_start`: slots keep their counts when their limiters go.
    kept: AtomicBool,
    /// `make_again_if_deleted` runs every second: on a full disk, one line per try would
    /// flood the log.
    failure_log: LogThrottle,
}

/// What an earlier run left in the journal: its counts, and its files, which stay until
/// `forget` (once the counts are journalled again).
pub struct Leftovers {
    pub counts: Vec<SavedRateLimit>,
    files: Vec<PathBuf>,
}

impl Leftovers {
    /// Deletes the earlier run's files.
    pub fn forget(self) -> io::Result<()> {
        for path in self.files {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Slots {
    files: Vec<JournalFile>,
    /// Slots given back, to hand out again before growing.
    free: Vec<(usize, usize)>,
    /// The next never-used slot: file and index.
    next: (usize, usize),
    /// Set by `discard`: the files are gone on purpose, not to be made again.
    discarded: bool,
}

/// One of this run's files: its mapping, and which file it is on disk.
struct JournalFile {
    mapping: Arc<MmapRaw>,
    /// The file, open: once deleted, its words can be read only through it.
    file: std::fs::File,
    /// Device and inode of the file made at its path: none there, or another, means it was
    /// deleted.
    identity: (u64, u64),
}

/// One limiter's slot; freed when dropped.
pub struct JournalSlot {
    file: Arc<MmapRaw>,
    index: usize,
    file_number: usize,
    shared: Arc<Shared>,
}

impl RateJournal {
    /// Opens the journal in `dir` (creating it): an empty journal, and what a crash left
    /// there (the same counts may be there twice, after a crash during a start).
    pub fn open(dir: &Path) -> io::Result<(RateJournal, Leftovers)> {
        crate::private_dir::create(dir)?;
        let mut left = Leftovers {
            counts: Vec::new(),
            files: Vec::new(),
        };
        let mut first_file_number = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            // A file being made again when the last run ended (`move_to_new_file`) holds
            // its counts as far as they were copied: read like the others.
            let Some(file_number) = path.file_name().and_then(|name| {
                let name = name.to_str()?;
                let number = name
                    .strip_suffix(SUFFIX)
                    .or_else(|| name.strip_suffix(&format!(".{MOVING_SUFFIX}")))?;
                number.parse::<usize>().ok()
            }) else {
                continue;
            };
            first_file_number = first_file_number.max(file_number + 1);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            if file.metadata()?.len() == file_bytes() as u64 {
                let (counts, damaged) = read_slots(&MmapRaw::map_raw(&file)?);
                if damaged > 0 {
                    tracing::warn!(path = %path.display(), damaged, "rate-limit journal slots that are not slots ignored; the file was damaged or is not a journal");
                }
                left.counts.extend(counts);
            } else {
                tracing::warn!(path = %path.display(), "rate-limit journal file of the wrong size ignored");
            }
            left.files.push(path);
        }
        let journal = RateJournal {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                first_file_number,
                state: Mutex::new(Slots::default()),
                kept: AtomicBool::new(false),
                failure_log: LogThrottle::new(std::time::Duration::from_secs(60)),
            }),
        };
        // The first file now, so that no request waits on its creation.
        let first = journal.shared.create_file(0)?;
        journal.shared.state.lock().files.push(first);
        Ok((journal, left))
    }

    /// A slot for one limiter. `None` (logged) for an id too long for a slot or a file that
    /// cannot be made: that limiter then works without surviving a crash.
    pub fn slot(&self, workspace_id: &str, environment: Environment) -> Option<JournalSlot> {
        if workspace_id.len() > MAX_ID_BYTES {
            tracing::warn!(
                workspace_id,
                "workspace id too long for the rate-limit journal"
            );
            return None;
        }
        let (file_number, index) = match self.shared.take_slot() {
            Ok(slot) => slot,
            Err(error) => {
                tracing::warn!(%error, "rate-limit journal full or unwritable; counts of this limiter will not survive a crash");
                return None;
            }
        };
        let file = Arc::clone(&self.shared.state.lock().files[file_number].mapping);
        let slot = JournalSlot {
            file,
            index,
            file_number,
            shared: Arc::clone(&self.shared),
        };
        for bucket in 0..SLOTS {
            slot.word(FIRST_BUCKET + bucket).store(0, Ordering::Relaxed);
        }
        let mut id = [0u8; MAX_ID_BYTES];
        id[..workspace_id.len()].copy_from_slice(workspace_id.as_bytes());
        for (i, chunk) in id.chunks_exact(8).enumerate() {
            let bytes = chunk.try_into().unwrap_or([0; 8]);
            slot.word(1 + i)
                .store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        let tag = TAG_MAGIC
            | u64::from(environment_code(environment)) << 32
            | (workspace_id.len() as u64) << 40;
        slot.word(0).store(tag, Ordering::Release);
        Some(slot)
    }

    /// Keeps every slot's counts for the next start, as a crash would leave them: for a
    /// graceful stop that could not save the counts to storage. Without it, the limiters
    /// dropped at the end of the run would free their slots, and the next start would give
    /// every workspace a fresh minute.
    pub fn keep_for_next_start(&self) {
        self.shared.kept.store(true, Ordering::Release);
    }

    /// Empties the journal, after a graceful stop has saved the counts to storage (the
    /// next start must not count them twice).
    pub fn discard(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.discarded = true;
        for (file_number, _) in state.files.iter().enumerate() {
            std::fs::remove_file(self.shared.file_path(file_number))?;
        }
        Ok(())
    }

    /// Makes again, with the counts they held, this run's files that were deleted while it
    /// runs (their directory included), and logs each. Meant to run every second, off the
    /// request path: it takes the lock that a new limiter's slot waits on, and a file made
    /// again is 2.3 MB written.
    pub fn make_again_if_deleted(&self) {
        let mut state = self.shared.state.lock();
        if state.discarded {
            return;
        }
        for (file_number, file) in state.files.iter_mut().enumerate() {
            let path = self.shared.file_path(file_number);
            if identity_at(&path) == Some(file.identity) {
                continue;
            }
            match self.shared.move_to_new_file(file, &path) {
                Ok(()) => tracing::warn!(
                    path = %path.display(),
                    "rate-limit journal file deleted while the server ran; made again with the counts it held"
                ),
                Err(error) => {
                    if let Some(skipped) = self.shared.failure_log.admit(crate::clock::now_ms()) {
                        tracing::error!(
                            path = %path.display(),
                            %error,
                            skipped,
                            "rate-limit journal file deleted while the server ran and cannot be made again; its counts will not survive a crash"
                        );
                    }
                }
            }
        }
    }
}

impl Shared {
    /// The path of this run's `file_number`th file.
    fn file_path(&self, file_number: usize) -> PathBuf {
        let number = self.first_file_number + file_number;
        self.dir.join(format!("{number:06}{SUFFIX}"))
    }

    fn take_slot(&self) -> io::Result<(usize, usize)> {
        let mut state = self.state.lock();
        if let Some(slot) = state.free.pop() {
            return Ok(slot);
        }
        let (file_number, index) = state.next;
        if file_number == state.files.len() {
            let file = self.create_file(file_number)?;
            state.files.push(file);
        }
        state.next = if index + 1 == SLOTS_PER_FILE {
            (file_number + 1, 0)
        } else {
            (file_number, index + 1)
        };
        Ok((file_number, index))
    }

    /// A journal file, allocated on disk: a full disk fails here, not in a limiter's
    /// write into the mapping (`mapped_file`).
    fn create_file(&self, file_number: usize) -> io::Result<JournalFile> {
        let file = create_allocated(&self.file_path(file_number))?;
        Ok(JournalFile {
            mapping: Arc::new(MmapRaw::map_raw(&file)?),
            identity: identity(&file.metadata()?),
            file,
        })
    }

    /// Makes `file` again at `path` (and the directory, if it went too): a new file with
    /// its words, mapped over its addresses, and only then given its name. Until it has
    /// its name, the new file is `<n>.moving`, which the next start reads too.
    fn move_to_new_file(&self, file: &mut JournalFile, path: &Path) -> io::Result<()> {
        crate::private_dir::create(&self.dir)?;
        let temporary = path.with_extension(MOVING_SUFFIX);
        if identity_at(&temporary) == Some(file.identity) {
            // Moved by an earlier check whose renaming failed: only the name is missing.
            return std::fs::rename(&temporary, path);
        }
        // Not the mapped file (checked above), so it may be emptied.
        let new_file = create_allocated(&temporary)?;
        let moved = move_words(file, new_file).and_then(|()| std::fs::rename(&temporary, path));
        if moved.is_err() && identity_at(&temporary) != Some(file.identity) {
            // Not mapped: a file left half made.
            let _ = std::fs::remove_file(&temporary);
        }
        moved
    }
}

/// Copies `file`'s words into `new_file` and maps `new_file` over `file`'s addresses, then
/// takes it as `file`. Limiters keep writing meanwhile, so the words are copied twice: once
/// before the new file takes the old one's place under their pointers, and once after, for
/// each word written into the old file since its first copy and not yet again into the new
/// one. No count is lost. (A slot taken and freed during the move can keep its tag, and its
/// counts come back after a crash, merged with its workspace's own by each second's larger
/// count: a few seconds of counts that were real.)
fn move_words(file: &mut JournalFile, new_file: std::fs::File) -> io::Result<()> {
    let old_view = MmapRaw::map_raw(&file.file)?;
    let new_view = MmapRaw::map_raw(&new_file)?;
    let new_identity = identity(&new_file.metadata()?);
    let copied: Vec<u64> = (0..file_bytes() / 8)
        .map(|word| {
            let value = word_at(&old_view, word).load(Ordering::Acquire);
            word_at(&new_view, word).store(value, Ordering::Release);
            value
        })
        .collect();
    #[allow(unsafe_code)]
    // SAFETY: the journal's mappings are only ever accessed through atomics (`word_at`),
    // and both files have the mapping's length (`create_allocated`).
    unsafe {
        crate::mapped_file::map_over(&file.mapping, &new_file, &file.file)?;
    }
    file.file = new_file;
    file.identity = new_identity;
    for (word, &first_copy) in copied.iter().enumerate() {
        let latest = word_at(&old_view, word).load(Ordering::Acquire);
        if latest != first_copy {
            // Written into the old file after its first copy. Unless a limiter has written
            // the word into the new file since (the newer write: keep it).
            let _ = word_at(&new_view, word).compare_exchange(
                first_copy,
                latest,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
    Ok(())
}

/// A journal file at `path`, made empty and allocated on disk.
fn create_allocated(path: &Path) -> io::Result<std::fs::File> {
    let mut options = crate::private_dir::file_options();
    options.read(true).write(true).create(true).truncate(true);
    crate::mapped_file::create_allocated(&options, path, file_bytes() as u64)
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// The identity of the file at `path`; `None` if there is none.
fn identity_at(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| identity(&metadata))
}

impl JournalSlot {
    /// Records the count of a second of the window.
    pub fn record(&self, second: u64, count: u16) {
        let bucket = (second % SLOTS as u64) as usize;
        self.word(FIRST_BUCKET + bucket)
            .store(second << 16 | u64::from(count), Ordering::Relaxed);
    }

    fn word(&self, word: usize) -> &AtomicU64 {
        word_at(&self.file, self.index * SLOT_WORDS + word)
    }
}

impl Drop for JournalSlot {
    fn drop(&mut self) {
        if self.shared.kept.load(Ordering::Acquire) {
            return;
        }
        self.word(0).store(0, Ordering::Release);
        self.shared
            .state
            .lock()
            .free
            .push((self.file_number, self.index));
    }
}

/// The `word`th 64-bit word of a journal file's mapping.
#[allow(unsafe_code)]
fn word_at(mapping: &MmapRaw, word: usize) -> &AtomicU64 {
    assert!(
        (word + 1) * 8 <= mapping.len(),
        "a word past the file's end"
    );
    // SAFETY: the word lies inside the mapping (checked above), which lives as long as the
    // borrow of `mapping`. The mapping starts on a page boundary, so every 8-byte word is
    // aligned for `AtomicU64`, which has the size and layout of a `u64` and is valid for any
    // bit pattern. The mapping's memory is only ever accessed through these atomics, never
    // through plain references. The file is this process's own (created with mode 0600)
    // and is never truncated while mapped.
    unsafe { &*mapping.as_mut_ptr().cast::<AtomicU64>().add(word) }
}

fn file_bytes() -> usize {
    SLOTS_PER_FILE * SLOT_WORDS * 8
}

fn environment_code(environment: Environment) -> u8 {
    match environment {
        Environment::Live => 1,
        Environment::Test => 2,
    }
}

/// The counts in a file's taken slots, and how many slots are neither free nor taken: a
/// tag that no slot is given (the file damaged, or not a journal at all).
fn read_slots(mapping: &MmapRaw) -> (Vec<SavedRateLimit>, usize) {
    let mut saved = Vec::new();
    let mut damaged = 0;
    for index in 0..SLOTS_PER_FILE {
        let word = |w: usize| word_at(mapping, index * SLOT_WORDS + w).load(Ordering::Acquire);
        let tag = word(0);
        if tag == 0 {
            continue;
        }
        let environment = match (tag >> 32) & 0xff {
            _ if tag & 0xffff_ffff != TAG_MAGIC || tag >> 48 != 0 => None,
            1 => Some(Environment::Live),
            2 => Some(Environment::Test),
            _ => None,
        };
        let id_len = ((tag >> 40) & 0xff) as usize;
        let id: Vec<u8> = (1..=ID_WORDS)
            .flat_map(|w| word(w).to_le_bytes())
            .take(id_len)
            .collect();
        let (Some(environment), true, Ok(workspace_id)) =
            (environment, id_len <= MAX_ID_BYTES, String::from_utf8(id))
        else {
            damaged += 1;
            continue;
        };
        let mut counts: RateCounts = (0..SLOTS)
            .map(|bucket| word(FIRST_BUCKET + bucket))
            .filter(|&value| value != 0)
            .map(|value| (value >> 16, (value & 0xffff) as u16))
            .collect();
        if counts.is_empty() {
            continue;
        }
        counts.sort_unstable();
        saved.push(SavedRateLimit {
            workspace_id,
            environment,
            counts,
        });
    }
    (saved, damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("statuspulse-rates-{}", uuid::Uuid::now_v7()))
    }

    /// What a crash does: the process goes without freeing its slots; the files stay.
    fn crash(journal: RateJournal, slots: Vec<JournalSlot>) {
        std::mem::forget(slots);
        drop(journal);
    }

    #[test]
    fn counts_in_taken_slots_come_back_once_and_freed_slots_do_not() {
        let dir = temp_dir();
        let (journal, left) = RateJournal::open(&dir).unwrap();
        assert!(left.counts.is_empty());
        let live = journal.slot("ws_live", Environment::Live).unwrap();
        let test = journal.slot("ws_test", Environment::Test).unwrap();
        let freed = journal.slot("ws_gone", Environment::Live).unwrap();
        live.record(1_000, 5);
        live.record(1_001, 7);
        // A later second in the same bucket replaces the older one.
        live.record(1_000 + SLOTS as u64, 2);
        test.record(1_030, 1);
        freed.record(1_030, 9);
        drop(freed);
        crash(journal, vec![live, test]);

        let (journal, left) = RateJournal::open(&dir).unwrap();
        let mut counts = left.counts.clone();
        counts.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].workspace_id, "ws_live");
        assert_eq!(counts[0].environment, Environment::Live);
        assert_eq!(
            counts[0].counts,
            vec![(1_001, 7), (1_000 + SLOTS as u64, 2)]
        );
        assert_eq!(counts[1].workspace_id, "ws_test");
        assert_eq!(counts[1].environment, Environment::Test);
        assert_eq!(counts[1].counts, vec![(1_030, 1)]);
        // Forgotten once carried over: the next start finds an empty journal.
        left.forget().unwrap();
        drop(journal);
        let (_journal, left) = RateJournal::open(&dir).unwrap();
        assert!(left.counts.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_during_a_start_leaves_the_earlier_runs_counts_for_the_next() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let slot = journal.slot("ws_a", Environment::Live).unwrap();
        slot.record(1_000, 5);
        crash(journal, vec![slot]);
        // A start that journals the counts again, and crashes before forgetting the files
        // they came from; and one that crashes before journalling them at all.
        let (journal, left) = RateJournal::open(&dir).unwrap();
        let again = journal.slot("ws_a", Environment::Live).unwrap();
        again.record(1_000, 5);
        again.record(1_001, 1);
        crash(journal, vec![again]);
        drop(left);
        let (journal, _) = RateJournal::open(&dir).unwrap();
        crash(journal, Vec::new());
        // Both copies come back, for the registry to merge.
        let (_journal, left) = RateJournal::open(&dir).unwrap();
        let mut counts: Vec<_> = left.counts.iter().map(|l| l.counts.clone()).collect();
        counts.sort();
        assert_eq!(counts, vec![vec![(1_000, 5)], vec![(1_000, 5), (1_001, 1)]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_freed_slot_is_reused_and_holds_nothing_of_its_last_owner() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let first = journal.slot("ws_a", Environment::Live).unwrap();
        first.record(500, 3);
        let index = first.index;
        drop(first);
        let second = journal.slot("ws_b", Environment::Test).unwrap();
        assert_eq!(second.index, index);
        crash(journal, vec![second]);
        let (_journal, left) = RateJournal::open(&dir).unwrap();
        assert!(
            left.counts.is_empty(),
            "ws_b counted nothing; ws_a's count is gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_discarded_journal_leaves_nothing_for_the_next_start() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let slot = journal.slot("ws_a", Environment::Live).unwrap();
        slot.record(500, 3);
        journal.discard().unwrap();
        crash(journal, vec![slot]);
        let (_journal, left) = RateJournal::open(&dir).unwrap();
        assert!(left.counts.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kept_journal_gives_the_next_start_the_counts_of_limiters_that_went() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let slot = journal.slot("ws_a", Environment::Live).unwrap();
        slot.record(500, 3);
        journal.keep_for_next_start();
        // The end of a graceful run: the limiters go, then the journal.
        drop(slot);
        drop(journal);
        let (_journal, left) = RateJournal::open(&dir).unwrap();
        assert_eq!(left.counts.len(), 1);
        assert_eq!(left.counts[0].workspace_id, "ws_a");
        assert_eq!(left.counts[0].counts, vec![(500, 3)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_deleted_while_running_are_made_again_with_their_counts_and_written_on() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let slot = journal.slot("ws_a", Environment::Live).unwrap();
        slot.record(1_000, 5);
        // Nothing deleted: nothing made again.
        let path = journal.shared.file_path(0);
        let before = identity_at(&path);
        journal.make_again_if_deleted();
        assert_eq!(identity_at(&path), before);

        std::fs::remove_dir_all(&dir).unwrap();
        journal.make_again_if_deleted();
        assert!(path.exists(), "the file is made again");
        // The slot writes to the new file from now on.
        slot.record(1_001, 2);
        let other = journal.slot("ws_b", Environment::Test).unwrap();
        other.record(1_001, 1);
        crash(journal, vec![slot, other]);

        let (_journal, left) = RateJournal::open(&dir).unwrap();
        let mut counts: Vec<_> = left
            .counts
            .iter()
            .map(|l| (l.workspace_id.clone(), l.counts.clone()))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![
                ("ws_a".to_owned(), vec![(1_000, 5), (1_001, 2)]),
                ("ws_b".to_owned(), vec![(1_001, 1)]),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_count_recorded_while_a_file_is_made_again_is_lost() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        let slots: Vec<JournalSlot> = (0..SLOTS_PER_FILE)
            .map(|i| journal.slot(&format!("ws_{i}"), Environment::Live).unwrap())
            .collect();
        const FIRST_SECOND: u64 = 1_000_000;
        let first_round_done = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(AtomicBool::new(false));
        // Round after round, a new count in every bucket of every slot, until the move is
        // over; the last count written to each bucket must be the one that comes back.
        let writer = std::thread::spawn({
            let (first_round_done, moved) = (Arc::clone(&first_round_done), Arc::clone(&moved));
            move || {
                let mut last = vec![0u16; SLOTS_PER_FILE * SLOTS];
                for round in 1..=u16::MAX {
                    for (i, slot) in slots.iter().enumerate() {
                        for bucket in 0..SLOTS {
                            slot.record(FIRST_SECOND + bucket as u64, round);
                            last[i * SLOTS + bucket] = round;
                        }
                    }
                    first_round_done.store(true, Ordering::Release);
                    if moved.load(Ordering::Acquire) {
                        break;
                    }
                }
                (slots, last)
            }
        });
        while !first_round_done.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        journal.make_again_if_deleted();
        moved.store(true, Ordering::Release);
        let (slots, last) = writer.join().unwrap();
        crash(journal, slots);

        let (_journal, left) = RateJournal::open(&dir).unwrap();
        assert_eq!(left.counts.len(), SLOTS_PER_FILE);
        let mut lost = 0;
        for limiter in &left.counts {
            let i: usize = limiter.workspace_id["ws_".len()..].parse().unwrap();
            for (bucket, &count) in last[i * SLOTS..(i + 1) * SLOTS].iter().enumerate() {
                if !limiter
                    .counts
                    .contains(&(FIRST_SECOND + bucket as u64, count))
                {
                    lost += 1;
                }
            }
        }
        assert_eq!(lost, 0, "counts recorded during the move were lost");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_discarded_journal_is_not_made_again() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        journal.discard().unwrap();
        journal.make_again_if_deleted();
        assert!(!journal.shared.file_path(0).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn map_for_reading(path: &Path) -> MmapRaw {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        MmapRaw::map_raw(&file).unwrap()
    }

    #[test]
    fn a_file_of_garbage_gives_no_counts_and_is_told_apart_from_an_empty_one() {
        let dir = temp_dir();
        crate::private_dir::create(&dir).unwrap();
        let path = dir.join(format!("000000{SUFFIX}"));
        std::fs::write(&path, vec![0xab; file_bytes()]).unwrap();
        let garbage = map_for_reading(&path);
        let (counts, damaged) = read_slots(&garbage);
        assert!(counts.is_empty());
        assert_eq!(damaged, SLOTS_PER_FILE);
        std::fs::write(&path, vec![0; file_bytes()]).unwrap();
        let empty = map_for_reading(&path);
        assert_eq!(read_slots(&empty).1, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_id_too_long_for_a_slot_gets_none() {
        let dir = temp_dir();
        let (journal, _) = RateJournal::open(&dir).unwrap();
        assert!(journal
            .slot(&"w".repeat(MAX_ID_BYTES + 1), Environment::Live)
            .is_none());
        assert!(journal
            .slot(&"w".repeat(MAX_ID_BYTES), Environment::Live)
            .is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
