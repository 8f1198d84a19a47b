//! The durable on-disk spool between metric collection and the HTTPS sender.
//!
//! A batch (an opaque JSON envelope) is accepted only once it is written and fsynced here, and
//! it leaves only when the backend answered 2xx ([`Spool::ack`]), when the backend rejected it
//! for good ([`Spool::dead_letter`]), when the spool is over `max_bytes` or the disk is full and
//! it is among the oldest ([`SpoolStats::dropped_batches`]), or when it can no longer be read
//! ([`SpoolStats::lost_batches`]). This module must never lose a batch silently, never panic on
//! what it reads from disk, and never let one bad batch block the ones behind it.
//!
//! # Delivery guarantee
//!
//! At least once, in append order. A batch is never lost once [`Spool::append`] returned `Ok`,
//! barring media corruption, which is detected by checksums, counted and logged (below). A
//! batch may be delivered twice: if the process dies after the backend answered 2xx but before
//! the ack reached the disk, the batch is still pending after the restart and is sent again.
//! The same holds for an `append` that returned an I/O error after the bytes reached the disk:
//! the caller may append the batch again, and both copies may be sent.
//!
//! # Corruption
//!
//! A record that fails its checksums never stops delivery. [`Spool::oldest`] sets it aside on
//! its own when it reaches the front: its raw bytes go to `dead-letter/<seq>.corrupt` with the
//! reason beside it, the cursor moves past it, [`SpoolStats::lost_batches`] counts it, and the
//! next batch is returned. Open does not cut a segment at a bad record: it resynchronises on the
//! next record whose magic, header checksum and seq (at or after the one expected) are valid,
//! and the seqs in between are exactly the batches lost ([`Recovery::lost_batches`]). Only a
//! torn tail is cut: an incomplete last record of the last segment (fewer bytes than a header,
//! an intact header whose payload runs past the end of the file, or zeros), which is what a
//! crash in the middle of an `append` that never returned leaves. Anything else unreadable at
//! the very end of the spool is a lost batch, counted as one: how many records it held cannot
//! be known there (anywhere else the next intact seq says exactly). The count errs on the side
//! of loss: after a power loss (not a process crash) the last record may have its length on
//! disk but not all its payload; its append never returned, yet it is counted as lost.
//!
//! # Disk full
//!
//! Removing a batch (ack, dead letter, drop) rewrites the cursor in place and needs no new disk
//! space (on file systems that overwrite in place, as ext4, xfs and tmpfs do; a copy-on-write
//! file system such as btrfs or ZFS needs a block even for that). An `append` that fails with
//! ENOSPC or EDQUOT drops the pending batches of the oldest segment (so that its file can be
//! deleted; counted in [`SpoolStats::dropped_for_disk_full`], logged with reason "disk full")
//! and tries again; only when nothing is left to drop does it fail with
//! [`SpoolError::DiskFull`]. A dead letter that does not fit removes the oldest dead letters
//! first. Open needs new space only to create a state file (a new spool, a format 1 cursor, a
//! lost one), and fails on a full disk then.
//!
//! # On-disk layout (format version 2)
//!
//! ```text
//! <dir>/lock                          held with an exclusive file lock while a `Spool` is open
//! <dir>/cursor                        how far the spool is consumed, and the counters (below)
//! <dir>/counters                      the same, written on every removal except plain acks: what
//!                                     survives the loss of `cursor`
//! <dir>/segments/<seq:020>.seg        segment files, named by the sequence number of their first record
//! <dir>/segments/<seq:020>.seg.corrupt  a segment whose header was unreadable, set aside for inspection
//! <dir>/dead-letter/<seq:020>.json    a batch the backend rejected, verbatim
//! <dir>/dead-letter/<seq:020>.corrupt the raw bytes where batches `seq`.. could no longer be read
//! <dir>/dead-letter/<seq:020>.reason.txt  why
//! ```
//!
//! All integers are little-endian.
//!
//! ```text
//! segment header (20 bytes)  magic "PGSS" u32 | format version u32 | first seq u64 | crc32 u32
//!                            (the crc covers the 16 bytes before it)
//! record (24 bytes + payload)  magic "PGSR" u32 | payload len u32 | seq u64
//!                            | payload crc32 u32 | header crc32 u32 (over the 20 bytes before it)
//!                            | payload
//! state file (1024 bytes)    two slots, at offsets 0 and 512, each:
//!                            magic u32 ("PGSC" cursor, "PGSN" counters) | format version u32
//!                            | generation u64 | acked_through u64 | dropped batches u64
//!                            | dropped bytes u64 | dropped for disk full u64
//!                            | dead-lettered batches u64 | lost batches u64
//!                            | dead letters removed u64 | cursor losses u64
//!                            | crc32 u32 (over the 80 bytes before it) | zeros to 512
//! ```
//!
//! The header checksum is what lets open tell a torn record (intact header, short payload)
//! from a damaged one, and resynchronise on a record whose payload is damaged while knowing its
//! seq. Each store writes the slot with the older generation, in place (`pwrite` + fdatasync),
//! so a torn write leaves the newer slot intact; open takes the newest valid slot.
//!
//! Format version 1 (the previous release) is still read: its segments have 20-byte record
//! headers (magic | len | seq | crc32 over seq and payload), and its cursor is one 44-byte record
//! (magic | version | acked_through | dropped batches | dropped bytes | dead-lettered | crc32),
//! replaced atomically on every change. A version 1 cursor is rewritten as a version 2 state
//! file at open; version 1 segments are read until acked and never appended to (the next
//! append starts a version 2 segment). A newer version than this build writes is refused with
//! an error, never misread.
//!
//! # Invariants
//!
//! - Sequence numbers start at 1 and are contiguous across the whole spool: the records of a
//!   segment are `first seq, first seq + 1, ...`, and the next segment starts right after the
//!   last record of the previous one. Contiguity is what lets open count exactly how many
//!   batches corruption cost, from the gaps.
//! - A batch is pending iff its record is on disk, intact, and its seq is greater than the
//!   cursor's `acked_through`. Acks, dead letters, drops and lost batches only ever advance
//!   `acked_through` (always past the oldest pending batch), so removal is one in-place store
//!   of the cursor and never rewrites a segment.
//! - Appends go only to the last segment, each record written with one `write` and then
//!   fsynced. A crash can therefore tear only the last record of the last segment, and that
//!   record's `append` never returned.
//! - Segment files appear atomically (header written to a temp file, fsynced, renamed) and
//!   are deleted once every record in them is acked, except the segment being appended to.
//! - The pending payload bytes never exceed `max_bytes`: an append that would pass it first
//!   drops the oldest pending batches, counts them and logs a warning. On disk the spool also
//!   holds 24 bytes of framing per record, segment headers, and the acked part of at most the
//!   oldest and the active segment (bounded by the segment size).
//! - The counters only grow, and live in both state files: open takes the larger of each. A
//!   corrupt or missing cursor is replaced by the counters file's copy, whose `acked_through`
//!   is the last drop or dead letter (or by 0): the batches acked since are sent again
//!   (duplicates, not loss), the loss is logged, counted in [`Recovery::cursor_missing`] or
//!   [`Recovery::cursor_reset`] and in [`SpoolStats::cursor_losses`]. Seqs are never reused:
//!   the next one is above every seq on disk, the cursor's and the dead letters'.
//! - The dead-letter directory is bounded by [`SpoolOptions::dead_letter_max_bytes`] (default
//!   64 MiB) and [`SpoolOptions::dead_letter_max_age`] (default 30 days): at open, after each
//!   new dead letter and when the oldest batch is read, entries past the age and then the
//!   oldest ones over the size are removed (the newest always stays), counted in
//!   [`SpoolStats::dead_letters_removed`] and logged.
//!
//! The spool is a plain blocking, single-owner structure: `append` waits for an fsync (a few
//! milliseconds on a disk), so async callers should use it from a blocking thread. The lock
//! file keeps a second process (a second agent on the same directory) out.

mod bounds;
mod dead_letter;
mod files;
mod format;
mod queue;
mod recovery;
mod segments;
mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dead_letter::DeadLetters;
use format::Cursor;
use state::StateFile;

/// The on-disk format version written in every segment header and state file.
pub const FORMAT_VERSION: u32 = 2;

/// Size past which a new segment is started. Larger segments mean fewer files and fsyncs of the
/// directory; smaller ones free disk sooner after acks (a segment is deleted whole).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Default bound of the dead-letter directory's total size: rejected batches must not fill the
/// disk the spool needs.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default age past which a dead letter is removed: long enough for an operator to look.
pub const DEFAULT_DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How many times in a row reading the oldest batch may fail with an I/O error (not a checksum:
/// that is set aside at once) before it is set aside as lost: a bad sector must not stop
/// delivery forever, and a passing error (EINTR, EMFILE) must not cost a batch.
const MAX_READ_ATTEMPTS: u32 = 3;

const SEGMENTS_DIR: &str = "segments";
const DEAD_LETTER_DIR: &str = "dead-letter";
const CURSOR_FILE: &str = "cursor";
const COUNTERS_FILE: &str = "counters";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";
const CORRUPT_SUFFIX: &str = ".corrupt";

/// Identifies one batch: its sequence number, unique and increasing within a spool directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(u64);

impl BatchId {
    /// The sequence number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BatchId {
    /// Zero-padded to 20 digits, as in file names, so that names sort in batch order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}", self.0)
    }
}

/// How a spool is bounded and split into files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The most payload bytes kept pending; the oldest batches are dropped beyond it.
    pub max_bytes: u64,
    /// A new segment is started when the active one would grow past this.
    pub segment_bytes: u64,
    /// The most bytes kept in `dead-letter/`; the oldest entries are removed beyond it.
    pub dead_letter_max_bytes: u64,
    /// Dead letters older than this are removed.
    pub dead_letter_max_age: Duration,
}

impl SpoolOptions {
    /// `max_bytes` with the default segment size and dead-letter bounds.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES,
            dead_letter_max_age: DEFAULT_DEAD_LETTER_MAX_AGE,
        }
    }
}

/// Counters for monitoring; all but `pending_*` survive restarts and the loss of the cursor
/// (they live in both state files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub pending_batches: u64,
    /// Payload bytes of the pending batches (framing excluded).
    pub pending_bytes: u64,
    /// Batches dropped, oldest first, because the spool was over `max_bytes` or the disk full.
    pub dropped_batches: u64,
    pub dropped_bytes: u64,
    /// Of `dropped_batches`, those dropped because the file system was full.
    pub dropped_for_disk_full: u64,
    /// Batches moved to `dead-letter/` after the backend rejected them.
    pub dead_lettered_batches: u64,
    /// Batches accepted once that could no longer be read, set aside as lost.
    pub lost_batches: u64,
    /// Dead letters removed because of the dead-letter bounds or a full disk.
    pub dead_letters_removed: u64,
    /// Times the cursor was found missing or unreadable at open.
    pub cursor_losses: u64,
}

/// What [`Spool::open`] found and repaired. Everything non-zero here was also logged as a
/// warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files in use after open.
    pub segments: usize,
    /// Batches pending after open.
    pub pending_batches: u64,
    /// Bytes cut off the end of the last segment: a record torn by a crash in the middle of an
    /// `append` that never returned.
    pub truncated_bytes: u64,
    /// Pending batches that were accepted once but are unreadable now (media corruption), to
    /// be set aside when they reach the front: exact, except at the very end of the spool,
    /// where the records still recognisable in the unreadable bytes are counted (at least one).
    /// Zero after a plain crash.
    pub lost_batches: u64,
    /// Segments set aside as `*.seg.corrupt` because their header was unreadable.
    pub corrupt_segments: u64,
    /// The cursor was unreadable and was replaced by the counters file's copy (or reset).
    pub cursor_reset: bool,
    /// The cursor file was missing while the spool held segments or counters: replaced by the
    /// counters file's copy (or reset). Batches acked since then are sent again.
    pub cursor_missing: bool,
    /// Batches dropped at open because they exceeded a (lowered) `max_bytes`.
    pub dropped_batches: u64,
    pub dropped_bytes: u64,
}

impl Recovery {
    /// True when open found nothing to repair and nothing was lost.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0
            && self.lost_batches == 0
            && self.corrupt_segments == 0
            && !self.cursor_reset
            && !self.cursor_missing
            && self.dropped_batches == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory `{}`: {op}: {source}", path.display())]
    Dir {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("spool segment `{}`: {op}: {source}", path.display())]
    Segment {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("spool state file `{}`: {op}: {source}", path.display())]
    State {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("spool dead letter `{}`: {op}: {source}", path.display())]
    DeadLetter {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("spool `{}` is in use by another process (its lock file is held)", path.display())]
    Locked { path: PathBuf },
    #[error(
        "spool file `{}` has format version {found}, but this agent reads only versions up to {supported}",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("batch of {size} bytes is larger than the spool's limit of {max} bytes")]
    BatchTooLarge { size: u64, max: u64 },
    #[error(
        "spool `{}`: the disk is full: a batch of {size} bytes does not fit with nothing left to drop ({source})",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        size: u64,
        source: io::Error,
    },
    #[error(
        "spool segment `{}`: batch {id} at offset {offset} is corrupt ({reason})",
        path.display()
    )]
    CorruptRecord {
        path: PathBuf,
        id: BatchId,
        offset: u64,
        reason: &'static str,
    },
    #[error("ack of batch {id} is out of order: the oldest pending batch is {oldest}")]
    OutOfOrder { id: BatchId, oldest: BatchId },
    #[error("ack of batch {id}: no batch is pending")]
    NothingPending { id: BatchId },
}

impl SpoolError {
    /// The I/O error was ENOSPC or EDQUOT.
    fn is_disk_full(&self) -> bool {
        match self {
            SpoolError::Dir { source, .. }
            | SpoolError::Segment { source, .. }
            | SpoolError::State { source, .. }
            | SpoolError::DeadLetter { source, .. } => files::is_disk_full(source),
            SpoolError::DiskFull { .. } => true,
            _ => false,
        }
    }
}

/// One segment file, as far as the spool needs to know it in memory.
#[derive(Debug)]
struct SpoolSegment {
    first_seq: u64,
    /// The highest seq it accounts for (intact or lost); `None` while it holds none.
    last_seq: Option<u64>,
    /// The file length up to the end of its last record.
    len: u64,
    /// Its format version; only segments of the current one are appended to.
    version: u32,
}

/// Where a pending batch lives. 32 bytes of memory per pending batch.
#[derive(Debug, Clone, Copy)]
struct PendingRecord {
    seq: u64,
    /// `first_seq` of its segment, which names the file.
    segment: u64,
    /// Offset of the record header in the segment file.
    offset: u64,
    len: u32,
    /// The record format (its segment's version).
    version: u8,
}

/// Accepted batches that can no longer be read, waiting (in seq order with the pending batches)
/// to be set aside when they reach the front.
#[derive(Debug, Clone)]
struct LostBatches {
    first_seq: u64,
    /// Inclusive.
    last_seq: u64,
    /// Where their bytes are: `(segment first_seq, offset, len)`; `None` when the file itself is
    /// gone or was set aside whole.
    raw: Option<(u64, u64, u64)>,
    reason: String,
}

impl LostBatches {
    fn count(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// The segment that appends go to.
#[derive(Debug)]
struct ActiveSegment {
    file: File,
    /// Set when a failed append may have left a partial record behind: the next append first
    /// truncates the file back to the segment's known-good length.
    dirty: bool,
}

/// A durable, bounded FIFO of batches. See the module documentation for the format and its
/// guarantees.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments_dir: PathBuf,
    options: SpoolOptions,
    /// What the state files hold.
    cursor: Cursor,
    /// The counters as the counters file holds them.
    counters_stored: format::Counters,
    cursor_file: StateFile,
    counters_file: StateFile,
    /// Segment files on disk, oldest first; appends go to the last one when `active` is set.
    segments: VecDeque<SpoolSegment>,
    active: Option<ActiveSegment>,
    pending: VecDeque<PendingRecord>,
    /// Disjoint from `pending`, in seq order.
    lost: VecDeque<LostBatches>,
    pending_bytes: u64,
    next_seq: u64,
    dead_letters: DeadLetters,
    /// Failed reads of the oldest batch in a row (I/O errors, not checksums).
    read_failures: u32,
    /// Held (with its exclusive lock) for as long as the spool is open.
    _lock: File,
}

fn segment_path(segments_dir: &Path, first_seq: u64) -> PathBuf {
    segments_dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}
