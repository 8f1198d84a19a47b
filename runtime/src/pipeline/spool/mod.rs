//! The durable on-disk spool between metric collection and the HTTPS sender.
//!
//! A batch (an opaque JSON envelope) is accepted only once it is written and fsynced here, and
//! it leaves only when the backend answered 2xx ([`Spool::ack`]), when the backend rejected it
//! for good ([`Spool::dead_letter`]), or when the spool is full and it is the oldest batch
//! ([`SpoolStats::dropped_batches`]). This module must never lose a batch silently, never panic
//! on what it reads from disk, and never let one bad batch block the ones behind it.
//!
//! # Delivery guarantee
//!
//! At least once, in append order. A batch is never lost once [`Spool::append`] returned `Ok`
//! (barring media corruption, which is detected by checksums and reported in [`Recovery`]).
//! A batch may be delivered twice: if the process dies after the backend answered 2xx but before
//! the ack reached the disk, the batch is still pending after the restart and is sent again. The
//! same holds for an `append` that returned an I/O error after the bytes reached the disk: the
//! caller may append the batch again, and both copies may be sent.
//!
//! # On-disk layout (format version 1)
//!
//! ```text
//! <dir>/lock                          held with an exclusive file lock while a `Spool` is open
//! <dir>/cursor                        the cursor (below), replaced atomically
//! <dir>/segments/<seq:020>.seg        segment files, named by the sequence number of their first record
//! <dir>/segments/<seq:020>.seg.corrupt  a segment whose header was unreadable, set aside for inspection
//! <dir>/dead-letter/<seq:020>.json    a batch the backend rejected, verbatim
//! <dir>/dead-letter/<seq:020>.reason.txt  why it was rejected
//! ```
//!
//! All integers are little-endian.
//!
//! ```text
//! segment header (20 bytes)  magic "PGSS" u32 | format version u32 | first seq u64 | crc32 u32
//!                            (the crc covers the 16 bytes before it)
//! record (20 bytes + payload)  magic "PGSR" u32 | payload len u32 | seq u64 | crc32 u32 | payload
//!                            (the crc covers seq then payload)
//! cursor (44 bytes)          magic "PGSC" u32 | format version u32 | acked_through u64
//!                            | dropped batches u64 | dropped bytes u64 | dead-lettered batches u64
//!                            | crc32 u32 (over the 40 bytes before it)
//! ```
//!
//! # Invariants
//!
//! - Sequence numbers start at 1 and are contiguous across the whole spool: the records of a
//!   segment are `first seq, first seq + 1, ...`, and the next segment starts right after the
//!   last record of the previous one. Contiguity is what lets [`Spool::open`] count exactly how
//!   many batches corruption cost, from the gaps.
//! - A batch is pending iff its record is on disk, intact, and its seq is greater than the
//!   cursor's `acked_through`. Acks, dead letters and drops only ever advance `acked_through`
//!   (always past the oldest pending batch), so removal is one atomic cursor replacement
//!   (temp file, fsync, rename, fsync of the directory) and never rewrites a segment.
//! - Appends go only to the last segment, each record written with one `write` and then
//!   fsynced. A crash can therefore tear only the last record of the last segment, and that
//!   record's `append` never returned. On open, a torn or corrupt tail of the last segment is
//!   truncated away; corruption inside an older segment loses the rest of that segment only.
//! - Segment files appear atomically (header written to a temp file, fsynced, renamed) and
//!   are deleted once every record in them is acked, except the segment being appended to.
//! - The pending payload bytes never exceed `max_bytes`: an append that would pass it first
//!   drops the oldest pending batches, counts them in the cursor and logs a warning. On disk
//!   the spool also holds 20 bytes of framing per record, segment headers, and the acked part
//!   of at most the oldest and the active segment (bounded by the segment size).
//! - Every persisted file carries a format version. A newer version is refused with an error,
//!   never misread. A corrupt cursor is reset (everything on disk is sent again: duplicates,
//!   not loss).
//!
//! The spool is a plain blocking, single-owner structure: `append` waits for an fsync (a few
//! milliseconds on a disk), so async callers should use it from a blocking thread. The lock
//! file keeps a second process (a second agent on the same directory) out.

mod files;
mod format;
mod queue;
mod recovery;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use format::Cursor;

/// The on-disk format version written in every segment header and in the cursor.
pub const FORMAT_VERSION: u32 = 1;

/// Size past which a new segment is started. Larger segments mean fewer files and fsyncs of the
/// directory; smaller ones free disk sooner after acks (a segment is deleted whole).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

const SEGMENTS_DIR: &str = "segments";
const DEAD_LETTER_DIR: &str = "dead-letter";
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";
const CORRUPT_SUFFIX: &str = ".corrupt";
const TMP_SUFFIX: &str = ".tmp";

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
}

impl SpoolOptions {
    /// `max_bytes` with the default segment size.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Counters for monitoring; all but `pending_*` survive restarts (they live in the cursor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub pending_batches: u64,
    /// Payload bytes of the pending batches (framing excluded).
    pub pending_bytes: u64,
    /// Batches dropped, oldest first, because the spool was full.
    pub dropped_batches: u64,
    pub dropped_bytes: u64,
    /// Batches moved to `dead-letter/` after the backend rejected them.
    pub dead_lettered_batches: u64,
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
    /// `append` that never returned, or a corrupt record there.
    pub truncated_bytes: u64,
    /// Pending batches that were accepted once but are unreadable now (media corruption): the
    /// rest of an older segment after a corrupt record, valid records cut off behind a corrupt
    /// one in the last segment, and segments whose header was unreadable (except at the very
    /// end of the spool, where their content cannot be counted). Zero after a plain crash.
    pub lost_batches: u64,
    /// Segments set aside as `*.seg.corrupt` because their header was unreadable.
    pub corrupt_segments: u64,
    /// The cursor was unreadable and was reset: every batch still on disk is pending again
    /// (sent twice rather than lost), and the drop counters restart from zero.
    pub cursor_reset: bool,
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
    #[error("spool cursor `{}`: {op}: {source}", path.display())]
    Cursor {
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
        "spool file `{}` has format version {found}, but this agent reads only version {supported}",
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
        "spool segment `{}`: batch {id} at offset {offset} is corrupt ({reason}); dead-letter it to move on",
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

/// One segment file, as far as the spool needs to know it in memory.
#[derive(Debug)]
struct SpoolSegment {
    first_seq: u64,
    /// The seq of its last intact record; `None` while it holds none.
    last_seq: Option<u64>,
    /// The file length up to the end of its last intact record.
    len: u64,
}

/// Where a pending batch lives. About 24 bytes of memory per pending batch.
#[derive(Debug, Clone, Copy)]
struct PendingRecord {
    seq: u64,
    /// `first_seq` of its segment, which names the file.
    segment: u64,
    /// Offset of the record header in the segment file.
    offset: u64,
    len: u32,
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
    cursor: Cursor,
    /// Segment files on disk, oldest first; appends go to the last one when `active` is set.
    segments: VecDeque<SpoolSegment>,
    active: Option<ActiveSegment>,
    pending: VecDeque<PendingRecord>,
    pending_bytes: u64,
    next_seq: u64,
    /// Held (with its exclusive lock) for as long as the spool is open.
    _lock: File,
}

fn segment_path(segments_dir: &Path, first_seq: u64) -> PathBuf {
    segments_dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}
