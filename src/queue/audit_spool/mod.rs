//! The audit spool: where an audit event is written before its request is answered, so that
//! a crash of the server process (`kill -9`, the OOM killer, an abort) loses no event.
//!
//! The batcher holds events in memory for up to 50 ms before handing them to the job queue;
//! without the spool, a crash loses those. With it, each event is copied into the current
//! segment file before the request is answered. Segments are memory-mapped (`MAP_SHARED`):
//! the copy lands in the kernel's page cache, which outlives the process, so a crash of the
//! server loses nothing, at the cost of a `memcpy` instead of a `write(2)` per request
//! (measured, the whole verification of a cached key: 0.67 µs without a spool, 2.7 µs with a
//! JSON line and a `write` per event, 0.85 µs as it is now). `maintain` does the file system
//! work (new segments, prefaulting, deletes) on the blocking pool. A power cut can still lose
//! what the kernel had not written back, as with `synchronous = NORMAL` in SQLite.
//!
//! A segment is deleted once it is closed and every event in it has been *released*: taken
//! over by the job queue for good (the in-process queue: written to the audit log; a broker:
//! confirmed). At start, the events of segments a crash left behind are handed to the queue
//! again; the audit log keeps one copy per id (PostgreSQL ignores ids it has, SQLite reads a
//! stored-twice event once), so an event written both before the crash and again now appears
//! once.
//!
//! Every segment's file is kept open while the segment is in the spool. A segment whose name
//! is deleted under the running server (by hand, a cleanup job, the whole directory) would
//! take its events with it at the next crash, and those spilled out of memory at once; so
//! `maintain` notices, moves writing to a new segment, and copies each such file back under
//! its name from the open file.
//!
//! Format: records `[length: u32 LE][CRC-32 of the payload: u32 LE][payload: the event, see
//! `domain::audit_codec`]`, one after the other, written under a lock; the zero-filled rest of a segment ends
//! it. A crash in the middle of a copy can leave a torn last record: its checksum fails, it is
//! skipped at replay, and its request was never answered.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use memmap2::{Advice, MmapRaw};
use parking_lot::Mutex;

use crate::domain::audit_codec::{self, EncodedEvents, EventView};
use crate::log_throttle::LogThrottle;

/// Size of a segment file, all of it allocated on disk when it is created (`mapped_file`):
/// the current segment and the next take 32 MiB while ingestion keeps up. When the next record does
/// not fit, the segment is closed and a new one started, so that released segments are
/// deleted while the server keeps running.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Length and checksum before each record's payload.
const RECORD_HEADER: usize = 8;
/// How far past the write position `maintain` prefaults the mapping for writing, so that
/// requests do not take the page faults: on ext4 the first write to a page updates the
/// file's mtime, which waits for the journal, and that wait was measured at tens of
/// milliseconds while SQLite checkpoints. At 60,000 events a second this is about 0.4 s of
/// events; `maintain` runs every 50 ms.
const PREFAULT_AHEAD: usize = 4 * 1024 * 1024;
const SUFFIX: &str = "spool";
/// A segment's copy while it is being made, renamed to the segment's name once whole.
const RESTORING_SUFFIX: &str = "restoring";

/// Which segment an event went to; handed back to [`AuditSpool::release`].
pub type Segment = u64;

/// Where an appended event lies: its segment, and its record's bytes `start..end` there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSlot {
    pub segment: Segment,
    pub start: usize,
    pub end: usize,
}

pub struct AuditSpool {
    dir: PathBuf,
    state: Mutex<SpoolState>,
    segment_bytes: u64,
    /// `maintain` runs every 50 ms: on a full disk, one line per try would flood the log.
    creation_failures_log: LogThrottle,
    /// The same for failures to copy a deleted segment back under its name.
    restore_failures_log: LogThrottle,
}

/// How often a failure to create the next segment is logged while it lasts.
const CREATION_FAILURES_LOG_EVERY: Duration = Duration::from_secs(10);

struct SpoolState {
    current: Arc<MmapRaw>,
    current_segment: Segment,
    /// Where the next record goes in `current`.
    current_bytes: usize,
    /// Events written and not yet released, by segment (the current one included).
    outstanding: BTreeMap<Segment, u64>,
    /// The highest segment number handed out: numbers only grow.
    last_segment: Segment,
    /// A segment created ahead by `maintain`, so that a request that fills the current one
    /// does not create a file: file system work can wait on the journal for milliseconds.
    next: Option<(Segment, Arc<MmapRaw>)>,
    /// Mappings of segments closed since the last `maintain`, which unmaps them (rather
    /// than a request). Until then the batcher copies events out of them.
    retired: BTreeMap<Segment, Arc<MmapRaw>>,
    /// The last try to create a segment failed (a full disk): until `maintain` succeeds,
    /// `rotate` does not try again on the request path, where each try would create,
    /// allocate and delete a file under the lock, for every request.
    creation_failing: bool,
    /// The open file of every segment on disk: those in `outstanding` and the `next` one.
    files: BTreeMap<Segment, KeptFile>,
}

/// A segment's file, open for as long as the segment is in the spool: its events can be
/// read, and copied back under its name, after the name was deleted.
#[derive(Clone)]
struct KeptFile {
    file: Arc<File>,
    /// Device and inode: whether the segment's path still names this file.
    identity: (u64, u64),
}

impl KeptFile {
    fn new(file: File) -> io::Result<KeptFile> {
        let metadata = file.metadata()?;
        Ok(KeptFile {
            file: Arc::new(file),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    fn is_named(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity)
    }
}

/// The segments a previous run left behind with events in them, oldest first. Their events
/// are counted at start and read again one segment at a time when their turn comes
/// ([`AuditSpool::read_leftover`]): a backlog of gigabytes (a long storage outage under
/// load) is never held in memory at once, which would end the start that replays it, and
/// every start after it, in the OOM killer.
pub struct Leftovers {
    pub segments: Vec<LeftoverSegment>,
}

/// A segment a previous run left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftoverSegment {
    pub segment: Segment,
    /// How many events it holds, for [`AuditSpool::release`].
    pub events: u64,
    /// The bytes at its start that hold them.
    pub bytes: usize,
}

impl Leftovers {
    /// Events in all the leftover segments.
    pub fn events(&self) -> u64 {
        self.segments.iter().map(|leftover| leftover.events).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Each segment's count, as [`AuditSpool::release`] takes them.
    pub fn counts(&self) -> Vec<(Segment, u64)> {
        self.segments
            .iter()
            .map(|leftover| (leftover.segment, leftover.events))
            .collect()
    }
}

impl AuditSpool {
    /// Opens the spool in `dir` (created if missing) and reads what a previous run left.
    /// Leftover segments stay on disk until their events are released.
    pub fn open(dir: &Path) -> io::Result<(AuditSpool, Leftovers)> {
        AuditSpool::open_with_segment_size(dir, SEGMENT_BYTES)
    }

    fn open_with_segment_size(
        dir: &Path,
        segment_bytes: u64,
    ) -> io::Result<(AuditSpool, Leftovers)> {
        crate::private_dir::create(dir)?;
        remove_unfinished_copies(dir)?;
        let mut existing = segments_in(dir)?;
        existing.sort_unstable();
        let mut leftovers = Leftovers {
            segments: Vec::new(),
        };
        let mut outstanding = BTreeMap::new();
        let mut files = BTreeMap::new();
        for &segment in &existing {
            let path = segment_path(dir, segment);
            // Counted, not kept: one segment's events in memory at a time.
            let (file, Parsed { events, bytes }) = read_segment(&path)?;
            if events.is_empty() {
                std::fs::remove_file(path)?;
                continue;
            }
            let events = events.len() as u64;
            outstanding.insert(segment, events);
            files.insert(segment, file);
            leftovers.segments.push(LeftoverSegment {
                segment,
                events,
                bytes,
            });
        }
        // Past every existing segment. A file appearing under our feet means another spool
        // is still running in this directory (a test's abandoned one): step past it.
        let mut current_segment = existing.last().map_or(1, |last| last + 1);
        let (current, current_file) = loop {
            match create_segment(dir, current_segment, segment_bytes) {
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => current_segment += 1,
                result => break result?,
            }
        };
        outstanding.insert(current_segment, 0);
        files.insert(current_segment, current_file);
        let spool = AuditSpool {
            dir: dir.to_owned(),
            state: Mutex::new(SpoolState {
                current,
                current_segment,
                current_bytes: 0,
                outstanding,
                last_segment: current_segment,
                next: None,
                retired: BTreeMap::new(),
                creation_failing: false,
                files,
            }),
            segment_bytes,
            creation_failures_log: LogThrottle::new(CREATION_FAILURES_LOG_EVERY),
            restore_failures_log: LogThrottle::new(CREATION_FAILURES_LOG_EVERY),
        };
        Ok((spool, leftovers))
    }

    /// Appends `event`; once this returns, the event survives a crash of this process.
    pub fn append(&self, event: &EventView<'_>) -> io::Result<RecordSlot> {
        let payload_len = audit_codec::encoded_len(event);
        let length = u32::try_from(payload_len)
            .ok()
            .filter(|_| (RECORD_HEADER + payload_len) as u64 <= self.segment_bytes)
            .ok_or_else(|| io::Error::other("audit event larger than a spool segment"))?;
        let mut state = self.state.lock();
        if state.current_bytes + RECORD_HEADER + payload_len > state.current.len() {
            self.rotate(&mut state)?;
        }
        // Encoded straight into the mapping: no allocation, no system call.
        let start = state.current_bytes;
        write_into(&state.current, start, RECORD_HEADER + payload_len, |slot| {
            let (header, payload) = slot.split_at_mut(RECORD_HEADER);
            audit_codec::encode(event, payload);
            header[..4].copy_from_slice(&length.to_le_bytes());
            header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        });
        state.current_bytes += RECORD_HEADER + payload_len;
        let segment = state.current_segment;
        *state.outstanding.entry(segment).or_insert(0) += 1;
        Ok(RecordSlot {
            segment,
            start,
            end: state.current_bytes,
        })
    }

    /// Copies the events of `slots`, as `append` reported them and not yet released, into
    /// `out`, in order: from the mappings, without a system call, or, for a segment that has
    /// been closed and unmapped since (only events queued across a rotation), from its file,
    /// in one read. Returns the slots it could not read (the file is gone or unreadable):
    /// those events stay in the spool, for the next start, if they are not released.
    pub fn copy_events(&self, slots: &[RecordSlot], out: &mut EncodedEvents) -> Vec<RecordSlot> {
        let mut sources: BTreeMap<Segment, Source> = {
            let state = self.state.lock();
            let mut sources = BTreeMap::new();
            for slot in slots {
                sources.entry(slot.segment).or_insert_with(|| {
                    if slot.segment == state.current_segment {
                        Source::Mapped(Arc::clone(&state.current))
                    } else if let Some(mapping) = state.retired.get(&slot.segment) {
                        Source::Mapped(Arc::clone(mapping))
                    } else {
                        Source::Unmapped
                    }
                });
            }
            sources
        };
        for (&segment, source) in sources.iter_mut() {
            if matches!(source, Source::Unmapped) {
                *source = self.read_span(segment, slots);
            }
        }
        let mut unread = Vec::new();
        for slot in slots {
            let mut payload = |record: &[u8]| out.push_encoded(&record[RECORD_HEADER..]);
            match sources.get(&slot.segment) {
                Some(Source::Mapped(mapping)) => {
                    read_from(mapping, slot.start, slot.end - slot.start, payload)
                }
                Some(Source::Read { start, bytes }) => {
                    match bytes.get(slot.start - start..slot.end - start) {
                        Some(record) => payload(record),
                        None => unread.push(*slot),
                    }
                }
                Some(Source::Unmapped) | None => unread.push(*slot),
            }
        }
        unread
    }

    /// The bytes of `segment`'s file that `slots` of that segment span, in one read.
    fn read_span(&self, segment: Segment, slots: &[RecordSlot]) -> Source {
        let in_segment = slots.iter().filter(|slot| slot.segment == segment);
        let start = in_segment.clone().map(|slot| slot.start).min().unwrap_or(0);
        let end = in_segment.map(|slot| slot.end).max().unwrap_or(0);
        match self.read_range(segment, start, end) {
            Ok(bytes) => Source::Read { start, bytes },
            Err(error) => {
                tracing::error!(%error, segment, "cannot read queued audit events back from the spool; they wait there for the next start");
                Source::Unmapped
            }
        }
    }

    /// Reads back the events of `segment`'s bytes `start..end`, whole records as `append`
    /// reported them: the events that left memory while ingestion was behind. They stay
    /// outstanding until released.
    pub fn read_records(
        &self,
        segment: Segment,
        start: usize,
        end: usize,
    ) -> io::Result<EncodedEvents> {
        let bytes = self.read_range(segment, start, end)?;
        Ok(parse_records(&bytes, &segment_path(&self.dir, segment)).events)
    }

    /// A leftover segment's events, read again from its open file.
    pub fn read_leftover(&self, leftover: &LeftoverSegment) -> io::Result<EncodedEvents> {
        self.read_records(leftover.segment, 0, leftover.bytes)
    }

    /// The bytes `start..end` of `segment`'s file, read from the open file: whether or not
    /// its name is still there.
    fn read_range(&self, segment: Segment, start: usize, end: usize) -> io::Result<Vec<u8>> {
        let kept = self.state.lock().files.get(&segment).cloned();
        let kept = kept.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no longer in the audit spool")
        })?;
        let mut bytes = vec![0; end.saturating_sub(start)];
        kept.file.read_exact_at(&mut bytes, start as u64)?;
        Ok(bytes)
    }

    /// `counts` events of each segment are in the job queue's hands for good. The next
    /// `maintain` deletes closed segments with nothing outstanding.
    pub fn release(&self, counts: &[(Segment, u64)]) {
        let mut state = self.state.lock();
        for &(segment, count) in counts {
            if let Some(left) = state.outstanding.get_mut(&segment) {
                *left = left.saturating_sub(count);
            }
        }
    }

    /// The file system work, kept off the request path (the batcher runs it on the blocking
    /// pool): creates the next segment ahead of need, unmaps closed ones, and deletes closed
    /// segments whose events are all released. The lock is held only to swap state.
    pub fn maintain(&self) {
        self.restore_deleted_names();
        let (retired, deletable, to_create, current, written) = {
            let mut state = self.state.lock();
            let current = state.current_segment;
            let deletable: Vec<Segment> = state
                .outstanding
                .iter()
                .filter(|&(&segment, &left)| left == 0 && segment != current)
                .map(|(&segment, _)| segment)
                .collect();
            for segment in &deletable {
                state.outstanding.remove(segment);
                state.files.remove(segment);
            }
            let retired = std::mem::take(&mut state.retired);
            let to_create = state.next.is_none().then(|| {
                state.last_segment += 1;
                state.last_segment
            });
            (
                retired,
                deletable,
                to_create,
                Arc::clone(&state.current),
                state.current_bytes,
            )
        };
        drop(retired);
        prefault(&current, written);
        for segment in deletable {
            self.delete(segment);
        }
        if let Some(segment) = to_create {
            match create_segment(&self.dir, segment, self.segment_bytes) {
                Ok((mapping, file)) => {
                    prefault(&mapping, 0);
                    let mut state = self.state.lock();
                    state.next = Some((segment, mapping));
                    state.files.insert(segment, file);
                    state.creation_failing = false;
                }
                Err(error) => {
                    self.state.lock().creation_failing = true;
                    if let Some(skipped) = self.creation_failures_log.admit(crate::clock::now_ms())
                    {
                        tracing::warn!(%error, segment, skipped, "could not create the next audit spool segment");
                    }
                }
            }
        }
    }

    /// Segments whose names were deleted while the server runs (by hand, a cleanup job, the
    /// whole directory) still work through their open files, but a crash would lose their
    /// events. So the directory is made again if it is gone; writing moves on from a
    /// current segment whose name is gone, to a new one; and every other such segment with
    /// events not yet released is copied back under its name from its open file. Only a
    /// crash before this runs (within 50 ms) loses them. File system work happens outside
    /// the lock, as in `maintain`; what keeps failing (a full disk) is logged once per
    /// interval, and each success once.
    fn restore_deleted_names(&self) {
        let failed = |error: io::Error, what: &str| {
            if let Some(skipped) = self.restore_failures_log.admit(crate::clock::now_ms()) {
                tracing::error!(%error, skipped, dir = %self.dir.display(), "{what}");
            }
        };
        if !self.dir.exists() {
            if let Err(error) = crate::private_dir::create(&self.dir) {
                return failed(
                    error,
                    "the audit spool's directory was deleted and cannot be made again",
                );
            }
            tracing::error!(dir = %self.dir.display(), "the audit spool's directory was deleted: made again");
        }
        let kept: Vec<(Segment, KeptFile)> = {
            let state = self.state.lock();
            state
                .files
                .iter()
                .map(|(&segment, kept)| (segment, kept.clone()))
                .collect()
        };
        let deleted: Vec<(Segment, KeptFile)> = kept
            .into_iter()
            .filter(|(segment, kept)| !kept.is_named(&segment_path(&self.dir, *segment)))
            .collect();
        if deleted.is_empty() {
            return;
        }
        self.move_writing_off(|segment| deleted.iter().any(|(lost, _)| *lost == segment));
        for (segment, kept) in deleted {
            let needed = {
                let state = self.state.lock();
                segment != state.current_segment
                    && state
                        .outstanding
                        .get(&segment)
                        .is_some_and(|&left| left > 0)
            };
            // A released one is deleted by `maintain` anyway; the current one once writing
            // has moved off it.
            if !needed {
                continue;
            }
            let path = segment_path(&self.dir, segment);
            match copy_back(&kept.file, &path) {
                Ok(copy) => {
                    let mut state = self.state.lock();
                    match state.files.get_mut(&segment) {
                        Some(file) => {
                            *file = copy;
                            drop(state);
                            tracing::error!(segment, dir = %self.dir.display(), "an audit spool segment was deleted under the running server: copied back from its open file");
                        }
                        // Released and deleted meanwhile.
                        None => {
                            drop(state);
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(error) => failed(
                    error,
                    "cannot copy a deleted audit spool segment back; tried again in 50 ms",
                ),
            }
        }
    }

    /// Moves writing off a current segment whose name was deleted, and lets go of a `next`
    /// one made ahead whose name was (it holds nothing). The new segment is created outside
    /// the lock when there is no `next` left to move to.
    fn move_writing_off(&self, was_deleted: impl Fn(Segment) -> bool) {
        let to_create = {
            let mut state = self.state.lock();
            if let Some(next) = state.next.as_ref().map(|(segment, _)| *segment) {
                if was_deleted(next) {
                    state.next = None;
                    state.files.remove(&next);
                }
            }
            if !was_deleted(state.current_segment) {
                return;
            }
            state.next.is_none().then(|| {
                state.last_segment += 1;
                state.last_segment
            })
        };
        if let Some(segment) = to_create {
            match create_segment(&self.dir, segment, self.segment_bytes) {
                Ok((mapping, file)) => {
                    let mut state = self.state.lock();
                    // Only `maintain` makes segments ahead, and it is running this.
                    debug_assert!(state.next.is_none());
                    state.next = Some((segment, mapping));
                    state.files.insert(segment, file);
                }
                Err(error) => {
                    if let Some(skipped) = self.restore_failures_log.admit(crate::clock::now_ms()) {
                        tracing::error!(%error, skipped, segment, "the current audit spool segment was deleted and no new one can be made; tried again in 50 ms");
                    }
                    return;
                }
            }
        }
        let mut state = self.state.lock();
        // A request may have filled the current segment meanwhile and moved on by itself.
        if was_deleted(state.current_segment) {
            let deleted = state.current_segment;
            // `next` is there: no file system work under the lock.
            match self.rotate(&mut state) {
                Ok(()) => {
                    let current = state.current_segment;
                    drop(state);
                    tracing::error!(deleted, current, "the current audit spool segment was deleted under the running server: writing moved to a new one");
                }
                Err(error) => {
                    drop(state);
                    tracing::error!(%error, "cannot start a new audit spool segment");
                }
            }
        }
    }

    /// At a clean stop, once everything is released: deletes the current segment too, so
    /// that the next start has nothing to replay. Appends after this go nowhere durable.
    pub fn close(&self) {
        self.maintain();
        let mut state = self.state.lock();
        if state.outstanding.values().all(|&left| left == 0) {
            let current = state.current_segment;
            state.files.remove(&current);
            self.delete(current);
        }
        if let Some((segment, _)) = state.next.take() {
            state.files.remove(&segment);
            self.delete(segment);
        }
    }

    /// Events written and not yet released (for tests and shutdown checks).
    pub fn outstanding(&self) -> u64 {
        self.state.lock().outstanding.values().sum()
    }

    /// Closes the current segment and opens the next: the one `maintain` prepared, or a new
    /// one if it has not yet (only when segments fill faster than the batcher ticks).
    fn rotate(&self, state: &mut SpoolState) -> io::Result<()> {
        let (segment, mapping) = match state.next.take() {
            Some(prepared) => prepared,
            None if state.creation_failing => {
                return Err(io::Error::other(
                    "no audit spool segment: creating one failed; maintain retries",
                ))
            }
            None => {
                state.last_segment += 1;
                let segment = state.last_segment;
                match create_segment(&self.dir, segment, self.segment_bytes) {
                    Ok((mapping, file)) => {
                        state.files.insert(segment, file);
                        (segment, mapping)
                    }
                    Err(error) => {
                        state.creation_failing = true;
                        return Err(error);
                    }
                }
            }
        };
        let closed = std::mem::replace(&mut state.current, mapping);
        state.retired.insert(state.current_segment, closed);
        state.current_segment = segment;
        state.current_bytes = 0;
        state.outstanding.insert(segment, 0);
        Ok(())
    }

    fn delete(&self, segment: Segment) {
        match std::fs::remove_file(segment_path(&self.dir, segment)) {
            // Its name was deleted under the server and, released, not copied back.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            // Harmless: its events are stored; a later start replays and ignores them.
            Err(error) => {
                tracing::warn!(%error, segment, "could not delete a released audit spool segment")
            }
            Ok(()) => {}
        }
    }
}

/// Where `copy_events` finds a segment's records.
enum Source {
    Mapped(Arc<MmapRaw>),
    /// Bytes `start..start + bytes.len()` of the segment's file.
    Read {
        start: usize,
        bytes: Vec<u8>,
    },
    /// Closed and unmapped, and not (or not yet) read.
    Unmapped,
}

fn segment_path(dir: &Path, segment: Segment) -> PathBuf {
    dir.join(format!("{segment:020}.{SUFFIX}"))
}

/// Creates a segment file of `bytes`, allocated on disk, and maps it, shared: what is
/// written to the mapping is the file's page cache. A full disk fails here, not in a
/// request's write into the mapping (`mapped_file`).
fn create_segment(
    dir: &Path,
    segment: Segment,
    bytes: u64,
) -> io::Result<(Arc<MmapRaw>, KeptFile)> {
    // Audit events name keys and clients: readable by the server's user only.
    let mut options = crate::private_dir::file_options();
    options.read(true).write(true).create_new(true);
    let path = segment_path(dir, segment);
    let (mapping, file) = crate::mapped_file::create(&options, &path, bytes)?;
    match KeptFile::new(file) {
        Ok(file) => Ok((Arc::new(mapping), file)),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Err(error)
        }
    }
}

/// Copies a segment's open file, whose name was deleted, to a new file under `path`: made
/// whole under another name first, so that no reader of the directory (a start after a
/// crash) sees half of it.
fn copy_back(file: &File, path: &Path) -> io::Result<KeptFile> {
    let copying = path.with_extension(format!("{SUFFIX}.{RESTORING_SUFFIX}"));
    let _ = std::fs::remove_file(&copying);
    let mut options = crate::private_dir::file_options();
    options.read(true).write(true).create_new(true);
    let copied = options.open(&copying).and_then(|copy| {
        let mut buffer = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let read = file.read_at(&mut buffer, at)?;
            if read == 0 {
                break;
            }
            // The unwritten rest of a segment is zeros: left as a hole, it takes no disk.
            if buffer[..read].iter().any(|&byte| byte != 0) {
                copy.write_all_at(&buffer[..read], at)?;
            }
            at += read as u64;
        }
        copy.set_len(at)?;
        std::fs::rename(&copying, path)?;
        KeptFile::new(copy)
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(&copying);
    }
    copied
}

/// Copies that a crash left unfinished (`copy_back`): their segments are whole elsewhere or
/// were lost with the crash.
fn remove_unfinished_copies(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(&format!(".{SUFFIX}.{RESTORING_SUFFIX}")))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Faults in, writable, the pages from `written` to `PREFAULT_AHEAD` past it (without
/// changing their content), so that the requests writing there take no page fault.
fn prefault(mapping: &MmapRaw, written: usize) {
    const PAGE: usize = 4096;
    let start = written / PAGE * PAGE;
    let end = (written + PREFAULT_AHEAD).min(mapping.len());
    if start < end {
        // Best effort: without it (an old kernel), requests take the faults themselves.
        let _ = mapping.advise_range(Advice::PopulateWrite, start, end - start);
    }
}

/// Lets `fill` write the bytes `start..start + len` of a segment mapping: one record.
#[allow(unsafe_code)]
fn write_into(mapping: &MmapRaw, start: usize, len: usize, fill: impl FnOnce(&mut [u8])) {
    assert!(
        start + len <= mapping.len(),
        "a record past its segment's end"
    );
    // SAFETY: the range is inside the mapping (checked above), which outlives this call.
    // Mappings are written only here, under the spool's lock, and each range once: `append`
    // moves the write position past it before releasing the lock, so no two slices overlap
    // and none outlives `fill`. Nothing else reads or writes the mapping through Rust
    // references (`prefault` asks the kernel to fault pages in; it does not touch their
    // bytes). The file is this process's own (`create_new`, mode 0600) and is never
    // truncated while mapped.
    let slot = unsafe { std::slice::from_raw_parts_mut(mapping.as_mut_ptr().add(start), len) };
    fill(slot);
}

/// Lets `read` see the bytes `start..start + len` of a segment mapping: one whole record.
#[allow(unsafe_code)]
fn read_from(mapping: &MmapRaw, start: usize, len: usize, read: impl FnOnce(&[u8])) {
    assert!(
        start + len <= mapping.len(),
        "a record past its segment's end"
    );
    // SAFETY: the range is inside the mapping (checked above), which outlives this call. It
    // is a record that `append` wrote in full, under the spool's lock, before it returned the
    // slot; the slot reached this thread through the batcher's queue, which orders that write
    // before this read. A range is written once and never again, and `write_into` hands out
    // only ranges past the write position, so no `&mut` slice overlaps this one.
    let record = unsafe { std::slice::from_raw_parts(mapping.as_ptr().add(start), len) };
    read(record);
}

/// Whether the spool in `dir` holds events a run left behind (a crash, or a stop while
/// storage was down), without opening it: a segment whose first record is written. A
/// missing directory holds none.
pub fn holds_events(dir: &Path) -> io::Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    for segment in segments_in(dir)? {
        let mut first_length = [0u8; 4];
        let read = std::fs::File::open(segment_path(dir, segment))
            .and_then(|mut file| io::Read::read_exact(&mut file, &mut first_length));
        if read.is_ok() && first_length != [0; 4] {
            return Ok(true);
        }
    }
    Ok(false)
}

fn segments_in(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name.strip_suffix(&format!(".{SUFFIX}")) {
            // Only names as `segment_path` writes them: `7.spool` is not segment 7's file.
            let segment = number
                .parse()
                .ok()
                .filter(|&segment| segment_path(dir, segment).ends_with(name));
            match segment {
                Some(segment) => segments.push(segment),
                None => tracing::warn!(
                    path = %dir.join(name).display(),
                    "ignoring a file in the audit spool that is not one of its segments"
                ),
            }
        }
    }
    Ok(segments)
}

/// A leftover segment's events, and its file, kept open.
fn read_segment(path: &Path) -> io::Result<(KeptFile, Parsed)> {
    let read = || {
        let mut file = File::open(path)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok((KeptFile::new(file)?, bytes))
    };
    let (file, bytes) = read().map_err(|error: io::Error| {
        io::Error::new(error.kind(), format!("{}: {error}", path.display()))
    })?;
    Ok((file, parse_records(&bytes, path)))
}

/// The events of a run of records, and how many bytes the records take.
struct Parsed {
    events: EncodedEvents,
    bytes: usize,
}

/// The events of consecutive records, up to the first zero length (the unwritten rest of a
/// segment) or torn record; `path` only names the file in warnings. A record whose checksum
/// fails but which is followed by an intact one was damaged in place (a bit flipped on
/// disk), not torn: it alone is skipped, and the records after it are read.
fn parse_records(bytes: &[u8], path: &Path) -> Parsed {
    let mut events = EncodedEvents::default();
    let mut at = 0;
    loop {
        let record = match record_at(bytes, at) {
            Framing::Record(record) => record,
            Framing::End => break,
            Framing::PastEnd => {
                // A torn header, or a length damaged in place: nothing after it can be
                // found.
                tracing::error!(
                    path = %path.display(), offset = at,
                    "audit spool record runs past the end: the spool's events from here on are lost"
                );
                break;
            }
        };
        let next = at + RECORD_HEADER + record.payload.len();
        if record.intact {
            match EventView::parse(record.payload) {
                Some(_) => events.push_encoded(record.payload),
                None => tracing::warn!(
                    path = %path.display(), offset = at,
                    "skipping an unreadable audit spool record"
                ),
            }
        } else if matches!(record_at(bytes, next), Framing::Record(after) if after.intact) {
            tracing::error!(
                path = %path.display(), offset = at,
                "skipping a damaged audit spool record: its event is lost; the next ones are read"
            );
        } else {
            // Records are written one after the other under a lock, so only the last one
            // can be torn (a crash in the middle of its copy): its request was never
            // answered.
            tracing::warn!(path = %path.display(), offset = at, "audit spool ends in a torn record");
            break;
        }
        at = next;
    }
    Parsed { events, bytes: at }
}

/// What the bytes at an offset are.
enum Framing<'a> {
    Record(Record<'a>),
    /// The zero-filled rest of a segment, or the end of the bytes.
    End,
    /// A header whose length runs past the end of the bytes.
    PastEnd,
}

/// A record as its header frames it.
struct Record<'a> {
    payload: &'a [u8],
    /// Its checksum holds.
    intact: bool,
}

fn record_at(bytes: &[u8], at: usize) -> Framing<'_> {
    let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
        return Framing::End;
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length == 0 {
        return Framing::End;
    }
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    match bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + length) {
        Some(payload) => Framing::Record(Record {
            payload,
            intact: crc32fast::hash(payload) == checksum,
        }),
        None => Framing::PastEnd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{AuditEvent, CredentialType};
    use std::sync::Arc;

    fn event(request: &str) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            workspace_id: Arc::from("ws_1"),
            credential_type: CredentialType::ApiKey,
            credential_id: Arc::from("key_1"),
            key_label: Some(Arc::from("deploy\nline two")),
            app_name: None,
            method: "GET".into(),
            path: "/v1/checks".into(),
            scope: Some("checks:read".into()),
            status: 200,
            error_code: None,
            request_id: request.to_owned(),
            client_addr: None,
        }
    }

    /// Every event of the leftover segments, read as the batcher reads them.
    fn leftover_events(spool: &AuditSpool, leftovers: &Leftovers) -> EncodedEvents {
        let mut events = EncodedEvents::default();
        for leftover in &leftovers.segments {
            events.extend(&spool.read_leftover(leftover).unwrap());
        }
        events
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("statuspulse-spool-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files(dir: &Path) -> usize {
        segments_in(dir).unwrap().len()
    }

    #[test]
    fn unreleased_events_come_back_after_a_crash_and_released_ones_do_not() {
        let dir = temp_dir();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert!(leftovers.is_empty());
        let kept = event("kept");
        let segment = spool.append(&event("released").view()).unwrap().segment;
        spool.append(&kept.view()).unwrap();
        spool.release(&[(segment, 1)]);
        spool.maintain();
        drop(spool); // a crash: nothing is flushed or cleaned up

        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        // The current segment of the crashed run holds both; only ids tell them apart, and
        // the audit log keeps one copy per id, so replaying both is correct.
        let events = leftover_events(&spool, &leftovers).decode();
        let requests: Vec<_> = events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(requests, ["released", "kept"]);
        assert_eq!(events[1], kept, "newlines inside fields survive");
        // The crashed run's current segment and the one its `maintain` made ahead (empty,
        // so deleted at this start), and the new current one.
        assert_eq!(files(&dir), 2);
        spool.release(&leftovers.counts());
        spool.maintain();
        // The leftover is deleted; the current one stays and the next is made ahead.
        assert_eq!(files(&dir), 2);
        assert_eq!(spool.outstanding(), 0);
    }

    #[test]
    fn a_torn_last_record_is_skipped() {
        let dir = temp_dir();
        let (spool, _) = AuditSpool::open(&dir).unwrap();
        spool.append(&event("whole").view()).unwrap();
        spool.append(&event("torn").view()).unwrap();
        drop(spool);
        // Cut the second record's payload short, as a crash in the middle of its copy would.
        let path = segment_path(&dir, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let first = RECORD_HEADER + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let second = RECORD_HEADER
            + u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
        for byte in &mut bytes[first + second / 2..first + second] {
            *byte = 0;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let events = leftover_events(&spool, &leftovers).decode();
        let requests: Vec<_> = events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(requests, ["whole"]);
    }

    #[test]
    fn files_not_named_as_segments_are_left_alone_and_an_unreadable_segment_is_named() {
        let dir = temp_dir();
        for name in ["7.spool", "+7.spool", "notes.txt"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert!(leftovers.is_empty());
        drop(spool);
        assert!(dir.join("7.spool").exists());
        let unreadable = segment_path(&dir, 99);
        std::fs::create_dir(&unreadable).unwrap();
        let error = AuditSpool::open(&dir).err().unwrap();
        assert!(
            error
                .to_string()
                .contains(&unreadable.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_spool_holds_events_until_a_clean_close() {
        let dir = temp_dir();
        assert!(!holds_events(&dir.join("missing")).unwrap());
        let (spool, _) = AuditSpool::open(&dir).unwrap();
        spool.maintain();
        assert!(!holds_events(&dir).unwrap(), "segments with no event");
        let slot = spool.append(&event("kept").view()).unwrap();
        assert!(holds_events(&dir).unwrap());
        spool.release(&[(slot.segment, 1)]);
        spool.close();
        assert!(!holds_events(&dir).unwrap());
    }

    #[test]
    fn a_damaged_record_is_skipped_and_the_ones_after_it_are_read() {
        let dir = temp_dir();
        let (spool, _) = AuditSpool::open(&dir).unwrap();
        let damaged = spool.append(&event("damaged").view()).unwrap();
        for request in ["after 1", "after 2"] {
            spool.append(&event(request).view()).unwrap();
        }
        drop(spool);
        // One bit of the first record's payload flipped, as a failing disk would.
        let path = segment_path(&dir, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[damaged.start + RECORD_HEADER + 3] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let events = leftover_events(&spool, &leftovers).decode();
        let requests: Vec<_> = events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(requests, ["after 1", "after 2"]);
    }

    #[test]
    fn a_deleted_directory_is_made_again_and_new_events_go_to_a_segment_there() {
        let dir = temp_dir();
        let (spool, _) = AuditSpool::open(&dir).unwrap();
        let before = spool.append(&event("before").view()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        spool.maintain();
        assert!(dir.is_dir());
        let after = spool.append(&event("after").view()).unwrap();
        assert_ne!(before.segment, after.segment, "writing moved on");
        assert!(segment_path(&dir, after.segment).exists());
        assert!(segment_path(&dir, before.segment).exists(), "copied back");
        drop(spool); // a crash
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let events = leftover_events(&spool, &leftovers).decode();
        let requests: Vec<_> = events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(
            requests,
            ["before", "after"],
            "what was written before and after the deletion survives"
        );
    }

    /// A spool in `dir` with room for two events a segment, and five events appended.
    fn five_events_over_three_segments(
        dir: &Path,
    ) -> (AuditSpool, Vec<AuditEvent>, Vec<RecordSlot>) {
        let one_event = (RECORD_HEADER + audit_codec::encoded_len(&event("a").view())) as u64;
        let (spool, _) = AuditSpool::open_with_segment_size(dir, one_event * 5 / 2).unwrap();
        let events: Vec<AuditEvent> = ["a", "b", "c", "d", "e"].map(event).into();
        let slots: Vec<RecordSlot> = events
            .iter()
            .map(|e| spool.append(&e.view()).unwrap())
            .collect();
        (spool, events, slots)
    }

    /// Events spilled out of memory while ingestion is behind are only in the spool's
    /// files: deleted, they are still read back from the open files, and copied back under
    /// their names, so that a crash after the deletion loses none of them either.
    #[test]
    fn events_in_deleted_segments_are_read_and_survive_a_crash() {
        let dir = temp_dir();
        let (spool, events, slots) = five_events_over_three_segments(&dir);
        spool.maintain(); // unmaps the closed segments: their events are read from files
        std::fs::remove_dir_all(&dir).unwrap();
        let mut read = EncodedEvents::default();
        assert!(spool.copy_events(&slots, &mut read).is_empty());
        assert_eq!(read.decode(), events, "read back from the open files");
        spool.maintain();
        let mut again = EncodedEvents::default();
        assert!(spool.copy_events(&slots, &mut again).is_empty());
        assert_eq!(again.decode(), events, "read back after the copy");
        spool.append(&event("f").view()).unwrap();
        // One segment deleted on its own, the current one, in a directory that is there.
        let current = spool.state.lock().current_segment;
        std::fs::remove_file(segment_path(&dir, current)).unwrap();
        spool.maintain();
        spool.append(&event("g").view()).unwrap();
        drop(spool); // a crash
        let (spool, leftovers) = AuditSpool::open(&dir).unwrap();
        let requests: Vec<_> = leftover_events(&spool, &leftovers)
            .decode()
            .into_iter()
            .map(|e| e.request_id)
            .collect();
        assert_eq!(requests, ["a", "b", "c", "d", "e", "f", "g"]);
    }

    /// A deleted segment whose events are all stored is not copied back: `maintain` would
    /// only delete it again, and on a full disk the copy takes room the others need.
    #[test]
    fn a_deleted_segment_with_every_event_released_is_not_copied_back() {
        let dir = temp_dir();
        let one_event = (RECORD_HEADER + audit_codec::encoded_len(&event("a").view())) as u64;
        let (spool, _) = AuditSpool::open_with_segment_size(&dir, one_event * 3 / 2).unwrap();
        let released = spool.append(&event("a").view()).unwrap();
        let kept = spool.append(&event("b").view()).unwrap();
        spool.release(&[(released.segment, 1)]);
        std::fs::remove_dir_all(&dir).unwrap();
        // The restoring step alone: the rest of `maintain` deletes released segments.
        spool.restore_deleted_names();
        assert!(!segment_path(&dir, released.segment).exists());
        assert!(segment_path(&dir, kept.segment).exists());
        assert_eq!(spool.outstanding(), 1);
    }

    #[test]
    fn an_unfinished_copy_is_removed_at_start() {
        let dir = temp_dir();
        let unfinished = dir.join(format!("00000000000000000007.{SUFFIX}.{RESTORING_SUFFIX}"));
        std::fs::write(&unfinished, b"half").unwrap();
        let (_spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert!(leftovers.is_empty());
        assert!(!unfinished.exists());
    }

    #[test]
    fn after_a_failed_creation_requests_do_not_try_again_until_maintenance_succeeds() {
        let dir = temp_dir();
        let one_event = (RECORD_HEADER + audit_codec::encoded_len(&event("a").view())) as u64;
        let (spool, _) = AuditSpool::open_with_segment_size(&dir, one_event * 3 / 2).unwrap();
        spool.append(&event("a").view()).unwrap();
        // Where segments go is gone: creating one fails, as on a full disk.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(spool.append(&event("b").view()).is_err());
        std::fs::create_dir_all(&dir).unwrap();
        let refused = spool.append(&event("c").view()).unwrap_err();
        assert!(
            refused.to_string().contains("maintain retries"),
            "{refused}"
        );
        spool.maintain();
        spool.append(&event("d").view()).unwrap();
    }

    #[test]
    fn closed_segments_are_deleted_once_every_event_is_released() {
        let dir = temp_dir();
        // Segments with room for one event, not two: every append after the first starts a
        // new one.
        let one_event = (RECORD_HEADER + audit_codec::encoded_len(&event("a").view())) as u64;
        let (spool, _) = AuditSpool::open_with_segment_size(&dir, one_event * 3 / 2).unwrap();
        let first = spool.append(&event("a").view()).unwrap().segment;
        let second = spool.append(&event("b").view()).unwrap().segment;
        let third = spool.append(&event("c").view()).unwrap().segment;
        assert_eq!((first + 1, second + 1), (second, third));
        assert_eq!(files(&dir), 3);
        spool.release(&[(second, 1)]);
        assert_eq!(files(&dir), 3, "deletion waits for maintenance");
        spool.maintain();
        // The second is gone; the first (not released), the current third and the fourth,
        // made ahead, remain.
        assert_eq!(files(&dir), 3);
        spool.release(&[(first, 1), (third, 1)]);
        spool.maintain();
        assert_eq!(files(&dir), 2, "the current segment stays, empty or not");
        assert_eq!(spool.outstanding(), 0);
        // The prepared segment is used by the next rotation.
        let fourth = spool.append(&event("d").view()).unwrap().segment;
        let fifth = spool.append(&event("e").view()).unwrap().segment;
        assert_eq!(
            (fourth, fifth),
            (third + 1, third + 2),
            "the prepared one, then one made at once"
        );
        // A clean stop leaves nothing to replay.
        spool.release(&[(fourth, 1), (fifth, 1)]);
        spool.close();
        drop(spool);
        let (_spool, leftovers) = AuditSpool::open(&dir).unwrap();
        assert!(leftovers.is_empty());
        assert_eq!(files(&dir), 1, "the new run's current segment");
    }

    #[test]
    fn records_are_read_back_by_their_slots() {
        let dir = temp_dir();
        let (spool, _) = AuditSpool::open(&dir).unwrap();
        let slots: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|request| spool.append(&event(request).view()).unwrap())
            .collect();
        assert_eq!(
            (slots[0].end, slots[1].end),
            (slots[1].start, slots[2].start)
        );
        let read = |start, end| {
            spool
                .read_records(slots[0].segment, start, end)
                .unwrap()
                .decode()
                .into_iter()
                .map(|e| e.request_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(read(slots[1].start, slots[2].end), ["b", "c"]);
        assert_eq!(read(slots[0].start, slots[0].end), ["a"]);
        assert_eq!(spool.outstanding(), 3, "reading releases nothing");
    }

    /// The batcher copies queued events out of the mappings, and out of the files of
    /// segments closed and unmapped since.
    #[test]
    fn queued_events_are_copied_from_open_and_closed_segments() {
        let dir = temp_dir();
        let (spool, events, slots) = five_events_over_three_segments(&dir);
        assert_ne!(
            slots[0].segment, slots[4].segment,
            "the events span segments"
        );
        let mut mapped = EncodedEvents::default();
        assert!(spool.copy_events(&slots, &mut mapped).is_empty());
        assert_eq!(mapped.decode(), events);
        spool.maintain(); // unmaps the closed segments
        let mut read = EncodedEvents::default();
        assert!(spool.copy_events(&slots[1..], &mut read).is_empty());
        assert_eq!(read.decode(), events[1..]);
        // A closed segment no longer in the spool (released and deleted): its events are
        // reported, the others copied.
        spool.state.lock().files.remove(&slots[0].segment);
        let mut rest = EncodedEvents::default();
        assert_eq!(spool.copy_events(&slots, &mut rest), slots[..2]);
        assert_eq!(rest.decode(), events[2..]);
    }
}
