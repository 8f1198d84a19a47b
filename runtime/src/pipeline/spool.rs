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

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The on-disk format version written in every segment header and in the cursor.
pub const FORMAT_VERSION: u32 = 1;

/// Size past which a new segment is started. Larger segments mean fewer files and fsyncs of the
/// directory; smaller ones free disk sooner after acks (a segment is deleted whole).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"PGSS");
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PGSR");
const CURSOR_MAGIC: u32 = u32::from_le_bytes(*b"PGSC");
const SEGMENT_HEADER_LEN: usize = 20;
const RECORD_HEADER_LEN: usize = 20;
const CURSOR_LEN: usize = 44;

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

/// The durable state besides the segments: how far the spool has been consumed, and the
/// counters that must survive a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// Every batch with a seq at or below this is gone (acked, dead-lettered or dropped).
    acked_through: u64,
    dropped_batches: u64,
    dropped_bytes: u64,
    dead_lettered_batches: u64,
}

impl Cursor {
    fn encode(&self) -> [u8; CURSOR_LEN] {
        let mut out = [0u8; CURSOR_LEN];
        out[0..4].copy_from_slice(&CURSOR_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.acked_through.to_le_bytes());
        out[16..24].copy_from_slice(&self.dropped_batches.to_le_bytes());
        out[24..32].copy_from_slice(&self.dropped_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.dead_lettered_batches.to_le_bytes());
        let crc = crc32fast::hash(&out[..CURSOR_LEN - 4]);
        out[CURSOR_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Cursor, Decode> {
        if le_u32(bytes, 0) != Some(CURSOR_MAGIC) {
            return Err(Decode::Corrupt("bad magic"));
        }
        match le_u32(bytes, 4) {
            Some(FORMAT_VERSION) => {}
            // Checked before the length and checksum: a newer layout may differ in both, and
            // it must be refused rather than reset.
            Some(found) if found > FORMAT_VERSION => return Err(Decode::Version(found)),
            _ => return Err(Decode::Corrupt("bad format version")),
        }
        if bytes.len() != CURSOR_LEN {
            return Err(Decode::Corrupt("wrong length"));
        }
        let body = &bytes[..CURSOR_LEN - 4];
        if le_u32(bytes, CURSOR_LEN - 4) != Some(crc32fast::hash(body)) {
            return Err(Decode::Corrupt("checksum mismatch"));
        }
        let field = |at| le_u64(bytes, at).ok_or(Decode::Corrupt("wrong length"));
        Ok(Cursor {
            acked_through: field(8)?,
            dropped_batches: field(16)?,
            dropped_bytes: field(24)?,
            dead_lettered_batches: field(32)?,
        })
    }
}

/// Why a header or cursor could not be used.
enum Decode {
    Corrupt(&'static str),
    Version(u32),
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

impl Spool {
    /// Opens (or creates) the spool in `dir` with the default segment size.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovery), SpoolError> {
        Self::open_with(dir, SpoolOptions::new(max_bytes))
    }

    /// Opens (or creates) the spool in `dir`, repairing what a crash left behind: a torn last
    /// record is truncated, a corrupt older segment is read up to the corruption, and fully
    /// acked segments are deleted. What was repaired is returned and logged.
    pub fn open_with(dir: &Path, options: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        let segments_dir = dir.join(SEGMENTS_DIR);
        create_dirs(dir, &[&segments_dir, &dir.join(DEAD_LETTER_DIR)])?;
        let lock = lock_dir(dir)?;
        remove_temp_files(&dir.join(DEAD_LETTER_DIR))?;

        let mut recovery = Recovery::default();
        let cursor = load_cursor(&dir.join(CURSOR_FILE), &mut recovery)?;
        let listed = list_segments(&segments_dir)?;
        let scanned = scan_segments(&segments_dir, &listed, cursor.acked_through, &mut recovery)?;

        let mut spool = Spool {
            dir: dir.to_owned(),
            segments_dir,
            options,
            cursor,
            segments: scanned.segments,
            active: None,
            pending: scanned.pending,
            pending_bytes: 0,
            next_seq: scanned.highest_seq.max(cursor.acked_through) + 1,
            _lock: lock,
        };
        spool.pending_bytes = spool.pending.iter().map(|r| u64::from(r.len)).sum();
        spool.resume_last_segment()?;

        // `max_bytes` may have been lowered since the last run.
        let (dropped, bytes) = spool.make_room(0)?;
        recovery.dropped_batches = dropped;
        recovery.dropped_bytes = bytes;
        spool.remove_acked_segments();

        recovery.segments = spool.segments.len();
        recovery.pending_batches = spool.pending.len() as u64;
        tracing::debug!(
            dir = %dir.display(),
            pending = recovery.pending_batches,
            segments = recovery.segments,
            "spool opened"
        );
        Ok((spool, recovery))
    }

    /// Durably appends one batch and returns its id. When this returns `Ok`, the batch is on
    /// disk (fsynced) and survives a crash. To stay within `max_bytes`, the oldest pending
    /// batches are dropped first (counted and logged); a batch larger than `max_bytes` is
    /// refused with [`SpoolError::BatchTooLarge`].
    pub fn append(&mut self, batch: &[u8]) -> Result<BatchId, SpoolError> {
        let size = batch.len() as u64;
        // The record stores the length in a u32.
        let max = self.options.max_bytes.min(u64::from(u32::MAX));
        if size > max {
            return Err(SpoolError::BatchTooLarge { size, max });
        }
        self.make_room(size)?;
        self.repair_failed_append()?;

        let seq = self.next_seq;
        let record = encode_record(seq, batch);
        let record_len = record.len() as u64;
        let needs_new_segment = match (&self.active, self.segments.back()) {
            // A record larger than a segment still gets one, alone.
            (Some(_), Some(last)) => {
                last.last_seq.is_some() && last.len + record_len > self.options.segment_bytes
            }
            _ => true,
        };
        if needs_new_segment {
            self.start_segment(seq)?;
        }
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            // `start_segment` sets both or fails; an error is still better than a panic here.
            return Err(SpoolError::Dir {
                path: self.segments_dir.clone(),
                op: "appending",
                source: io::Error::other("no active segment"),
            });
        };
        let path = segment_path(&self.segments_dir, segment.first_seq);
        let io_error = |op, source| SpoolError::Segment {
            path: path.clone(),
            op,
            source,
        };
        // One write, so that a crash tears at most this record; fdatasync also persists the
        // new file length, which is all the metadata a reader needs.
        if let Err(e) = active
            .file
            .write_all(&record)
            .and_then(|()| active.file.sync_data())
        {
            active.dirty = true;
            if truncate_durably(&active.file, segment.len).is_ok() {
                active.dirty = false;
            }
            return Err(io_error("appending a record", e));
        }

        self.pending.push_back(PendingRecord {
            seq,
            segment: segment.first_seq,
            offset: segment.len,
            len: batch.len() as u32,
        });
        segment.len += record_len;
        segment.last_seq = Some(seq);
        self.pending_bytes += size;
        self.next_seq += 1;
        Ok(BatchId(seq))
    }

    /// The oldest pending batch, which is the only one the sender may send next. A record that
    /// fails its checksum now yields [`SpoolError::CorruptRecord`] with its id: dead-letter it.
    pub fn oldest(&self) -> Result<Option<(BatchId, Vec<u8>)>, SpoolError> {
        self.pending
            .front()
            .map(|record| self.read_checked(record).map(|b| (BatchId(record.seq), b)))
            .transpose()
    }

    /// Every pending batch, oldest first, read from disk one at a time.
    pub fn pending(&self) -> impl Iterator<Item = Result<(BatchId, Vec<u8>), SpoolError>> + '_ {
        self.pending
            .iter()
            .map(|record| self.read_checked(record).map(|b| (BatchId(record.seq), b)))
    }

    /// Removes the oldest pending batch after the backend accepted it. Durable when this
    /// returns. Acks must come in order: acking anything but the oldest batch is an error.
    pub fn ack(&mut self, id: BatchId) -> Result<(), SpoolError> {
        self.check_oldest(id)?;
        let cursor = Cursor {
            acked_through: id.0,
            ..self.cursor
        };
        self.commit_removal(cursor, 1)
    }

    /// Sets the oldest pending batch aside after the backend rejected it as invalid, so that it
    /// no longer blocks the batches behind it: writes it verbatim to `dead-letter/<id>.json`
    /// and the reason to `dead-letter/<id>.reason.txt` (both fsynced), then acks it. Returns
    /// the path of the `.json` file. A batch that can no longer be read (corrupt, or its file
    /// gone) is still removed, with the read error added to the reason.
    pub fn dead_letter(&mut self, id: BatchId, reason: &str) -> Result<PathBuf, SpoolError> {
        let record = self.check_oldest(id)?;
        let dead_dir = self.dir.join(DEAD_LETTER_DIR);
        let json_path = dead_dir.join(format!("{id}.json"));
        let reason_path = dead_dir.join(format!("{id}.reason.txt"));
        let seg_path = segment_path(&self.segments_dir, record.segment);

        let (payload, read_problem) = match read_record(&seg_path, &record) {
            Ok((payload, None)) => (Some(payload), None),
            Ok((payload, Some(problem))) => (
                Some(payload),
                Some(format!(
                    "the spooled record is corrupt ({problem}); its bytes are kept as found"
                )),
            ),
            Err(e) => (
                None,
                Some(format!("the spooled record could not be read: {e}")),
            ),
        };
        let unix_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut text = format!(
            "batch: {id}\ndead-lettered at (unix seconds): {unix_seconds}\nreason: {reason}\n"
        );
        if let Some(problem) = &read_problem {
            text.push_str("note: ");
            text.push_str(problem);
            text.push('\n');
        }

        let dead_error = |path: &Path| {
            let path = path.to_owned();
            move |(op, source)| SpoolError::DeadLetter { path, op, source }
        };
        if let Some(payload) = &payload {
            write_replacing(&json_path, payload).map_err(dead_error(&json_path))?;
        }
        write_replacing(&reason_path, text.as_bytes()).map_err(dead_error(&reason_path))?;
        sync_dir(&dead_dir).map_err(|source| SpoolError::Dir {
            path: dead_dir.clone(),
            op: "fsync",
            source,
        })?;
        tracing::warn!(
            batch = %id,
            file = %json_path.display(),
            reason,
            "spool: batch moved to the dead-letter directory"
        );

        let cursor = Cursor {
            acked_through: id.0,
            dead_lettered_batches: self.cursor.dead_lettered_batches + 1,
            ..self.cursor
        };
        self.commit_removal(cursor, 1)?;
        Ok(json_path)
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending_batches: self.pending.len() as u64,
            pending_bytes: self.pending_bytes,
            dropped_batches: self.cursor.dropped_batches,
            dropped_bytes: self.cursor.dropped_bytes,
            dead_lettered_batches: self.cursor.dead_lettered_batches,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_oldest(&self, id: BatchId) -> Result<PendingRecord, SpoolError> {
        match self.pending.front() {
            None => Err(SpoolError::NothingPending { id }),
            Some(oldest) if oldest.seq != id.0 => Err(SpoolError::OutOfOrder {
                id,
                oldest: BatchId(oldest.seq),
            }),
            Some(oldest) => Ok(*oldest),
        }
    }

    /// Persists `cursor`, which moved past the `count` oldest pending batches, then forgets
    /// them. The memory state changes only after the disk did, so a failed write leaves the
    /// spool as it was.
    fn commit_removal(&mut self, cursor: Cursor, count: usize) -> Result<(), SpoolError> {
        store_cursor(&self.dir, &cursor)?;
        self.cursor = cursor;
        for record in self.pending.drain(..count.min(self.pending.len())) {
            self.pending_bytes -= u64::from(record.len);
        }
        self.remove_acked_segments();
        Ok(())
    }

    /// Drops the oldest pending batches until `incoming` more bytes fit within `max_bytes`.
    /// Returns how many batches and bytes were dropped.
    fn make_room(&mut self, incoming: u64) -> Result<(u64, u64), SpoolError> {
        let mut excess = (self.pending_bytes + incoming).saturating_sub(self.options.max_bytes);
        let (mut count, mut bytes, mut through) = (0u64, 0u64, self.cursor.acked_through);
        for record in &self.pending {
            if excess == 0 {
                break;
            }
            count += 1;
            bytes += u64::from(record.len);
            through = record.seq;
            excess = excess.saturating_sub(u64::from(record.len));
        }
        if count == 0 {
            return Ok((0, 0));
        }
        let cursor = Cursor {
            acked_through: through,
            dropped_batches: self.cursor.dropped_batches + count,
            dropped_bytes: self.cursor.dropped_bytes + bytes,
            ..self.cursor
        };
        self.commit_removal(cursor, count as usize)?;
        tracing::warn!(
            dropped_batches = count,
            dropped_bytes = bytes,
            max_bytes = self.options.max_bytes,
            "spool full: dropped the oldest batches"
        );
        Ok((count, bytes))
    }

    /// Creates the segment whose first record will be `first_seq` and makes it the active one.
    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.segments_dir, first_seq);
        let header = encode_segment_header(first_seq);
        write_replacing(&path, &header).map_err(|(op, source)| SpoolError::Segment {
            path: path.clone(),
            op,
            source,
        })?;
        sync_dir(&self.segments_dir).map_err(|source| SpoolError::Dir {
            path: self.segments_dir.clone(),
            op: "fsync",
            source,
        })?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError::Segment {
                path,
                op: "opening for append",
                source,
            })?;
        self.segments.push_back(SpoolSegment {
            first_seq,
            last_seq: None,
            len: SEGMENT_HEADER_LEN as u64,
        });
        self.active = Some(ActiveSegment { file, dirty: false });
        // The previous active segment may be fully acked already.
        self.remove_acked_segments();
        Ok(())
    }

    /// Cuts off what a failed append may have left at the end of the active segment, before
    /// anything else is written there or the segment is sealed by a rollover (a sealed segment
    /// with garbage at its end would read as corrupt at the next open).
    fn repair_failed_append(&mut self) -> Result<(), SpoolError> {
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back()) else {
            return Ok(());
        };
        if active.dirty {
            truncate_durably(&active.file, segment.len).map_err(|source| SpoolError::Segment {
                path: segment_path(&self.segments_dir, segment.first_seq),
                op: "truncating a failed append",
                source,
            })?;
            active.dirty = false;
        }
        Ok(())
    }

    /// After open: keep appending to the last segment when the next seq continues it; else
    /// leave it sealed (and drop it if it holds nothing).
    fn resume_last_segment(&mut self) -> Result<(), SpoolError> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        let continues =
            last.last_seq.unwrap_or(last.first_seq.saturating_sub(1)) + 1 == self.next_seq;
        let path = segment_path(&self.segments_dir, last.first_seq);
        if continues {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|source| SpoolError::Segment {
                    path,
                    op: "opening for append",
                    source,
                })?;
            self.active = Some(ActiveSegment { file, dirty: false });
        } else if last.last_seq.is_none() {
            remove_segment_file(&path);
            self.segments.pop_back();
        }
        Ok(())
    }

    /// Deletes sealed segments whose records are all acked. A failure is only logged: the file
    /// is retried later and ignored by open meanwhile (its records are at or below the cursor).
    fn remove_acked_segments(&mut self) {
        while let Some(first) = self.segments.front() {
            let is_active = self.segments.len() == 1 && self.active.is_some();
            let fully_acked = first
                .last_seq
                .is_none_or(|last| last <= self.cursor.acked_through);
            if is_active || !fully_acked {
                break;
            }
            if !remove_segment_file(&segment_path(&self.segments_dir, first.first_seq)) {
                break;
            }
            self.segments.pop_front();
        }
    }

    fn read_checked(&self, record: &PendingRecord) -> Result<Vec<u8>, SpoolError> {
        let path = segment_path(&self.segments_dir, record.segment);
        match read_record(&path, record) {
            Ok((payload, None)) => Ok(payload),
            Ok((_, Some(reason))) => Err(SpoolError::CorruptRecord {
                path,
                id: BatchId(record.seq),
                offset: record.offset,
                reason,
            }),
            Err(source) => Err(SpoolError::Segment {
                path,
                op: "reading a record",
                source,
            }),
        }
    }
}

/// Reads one record's payload as it is on disk, with what is wrong with it if anything.
fn read_record(path: &Path, record: &PendingRecord) -> io::Result<(Vec<u8>, Option<&'static str>)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(record.offset))?;
    let mut bytes = vec![0u8; RECORD_HEADER_LEN + record.len as usize];
    file.read_exact(&mut bytes)?;
    let problem = match parse_record(&bytes) {
        Parsed::Record { seq, payload }
            if seq == record.seq && payload.len() == bytes.len() - RECORD_HEADER_LEN =>
        {
            None
        }
        Parsed::Record { .. } => Some("unexpected seq or length"),
        Parsed::Torn => Some("unexpected length"),
        Parsed::Corrupt(reason) => Some(reason),
    };
    bytes.drain(..RECORD_HEADER_LEN);
    Ok((bytes, problem))
}

fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// One record read from the front of a byte slice.
enum Parsed<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
    },
    /// The slice ends before the record does.
    Torn,
    Corrupt(&'static str),
}

fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let (Some(magic), Some(len), Some(seq), Some(crc)) = (
        le_u32(bytes, 0),
        le_u32(bytes, 4),
        le_u64(bytes, 8),
        le_u32(bytes, 16),
    ) else {
        return Parsed::Torn;
    };
    if magic != RECORD_MAGIC {
        return Parsed::Corrupt("bad record magic");
    }
    let Some(payload) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len as usize) else {
        return Parsed::Torn;
    };
    if record_crc(seq, payload) != crc {
        return Parsed::Corrupt("checksum mismatch");
    }
    Parsed::Record { seq, payload }
}

fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header and returns the first seq it names.
fn decode_segment_header(bytes: &[u8]) -> Result<u64, Decode> {
    if le_u32(bytes, 0) != Some(SEGMENT_MAGIC) {
        return Err(Decode::Corrupt("bad segment magic"));
    }
    match le_u32(bytes, 4) {
        Some(FORMAT_VERSION) => {}
        Some(found) if found > FORMAT_VERSION => return Err(Decode::Version(found)),
        _ => return Err(Decode::Corrupt("bad format version")),
    }
    let (Some(first_seq), Some(crc), Some(body)) =
        (le_u64(bytes, 8), le_u32(bytes, 16), bytes.get(..16))
    else {
        return Err(Decode::Corrupt("short header"));
    };
    if crc32fast::hash(body) != crc {
        return Err(Decode::Corrupt("header checksum mismatch"));
    }
    Ok(first_seq)
}

/// What one segment holds, as far as it could be read.
#[derive(Debug, Default)]
struct SegmentScan {
    /// (seq, offset, payload len) of each intact record, in order.
    records: Vec<(u64, u64, u32)>,
    /// The file length up to the end of the last intact record.
    valid_len: u64,
    /// Why reading stopped before the end of the file.
    stop: Option<&'static str>,
    /// Seqs of checksum-valid records found after the point where reading stopped: batches the
    /// corruption cut off.
    stranded: Vec<u64>,
}

/// Reads the records of a segment (whose header was checked) until the end or the first record
/// that is torn, corrupt or out of sequence.
fn scan_segment(bytes: &[u8], first_seq: u64) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut expected = first_seq;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        match parse_record(rest) {
            Parsed::Record { seq, payload } if seq == expected => {
                scan.records.push((seq, pos as u64, payload.len() as u32));
                pos += RECORD_HEADER_LEN + payload.len();
                expected += 1;
            }
            Parsed::Record { .. } => {
                scan.stop = Some("record out of sequence");
                break;
            }
            Parsed::Torn => {
                scan.stop = Some("torn record");
                break;
            }
            Parsed::Corrupt(reason) => {
                scan.stop = Some(reason);
                break;
            }
        }
    }
    scan.valid_len = pos as u64;
    if scan.stop.is_some() {
        // Look for intact records behind the damage, only to count them: a record boundary
        // cannot be trusted past a corrupt length, so they are not kept.
        let mut at = pos + 1;
        let mut after = expected;
        while at + RECORD_HEADER_LEN <= bytes.len() {
            if le_u32(bytes, at) == Some(RECORD_MAGIC)
                && let Parsed::Record { seq, payload } =
                    parse_record(bytes.get(at..).unwrap_or_default())
                && seq >= after
            {
                scan.stranded.push(seq);
                after = seq + 1;
                at += RECORD_HEADER_LEN + payload.len();
                continue;
            }
            at += 1;
        }
    }
    scan
}

/// The segments that survived open and the batches pending in them.
struct Scanned {
    segments: VecDeque<SpoolSegment>,
    pending: VecDeque<PendingRecord>,
    highest_seq: u64,
}

/// Reads every segment, repairing the tail of the last one and setting aside those whose
/// header is unreadable, and indexes the records above `acked_through`.
fn scan_segments(
    segments_dir: &Path,
    listed: &[u64],
    acked_through: u64,
    recovery: &mut Recovery,
) -> Result<Scanned, SpoolError> {
    // Headers first, so that "the last segment" means the last one that can be appended to.
    let mut usable = Vec::with_capacity(listed.len());
    let mut highest_seq = 0u64;
    for &name in listed {
        let path = segment_path(segments_dir, name);
        match read_segment_header(&path)? {
            Ok(first_seq) if first_seq == name => usable.push(name),
            Ok(_) => quarantine_segment(&path, "header names another seq", recovery)?,
            Err(Decode::Corrupt(reason)) => quarantine_segment(&path, reason, recovery)?,
            Err(Decode::Version(found)) => {
                return Err(SpoolError::UnsupportedVersion {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
    }

    let mut segments = VecDeque::with_capacity(usable.len());
    let mut pending = VecDeque::new();
    for (index, &first_seq) in usable.iter().enumerate() {
        let path = segment_path(segments_dir, first_seq);
        let is_last = index + 1 == usable.len();
        if first_seq <= highest_seq {
            // Overlaps the segment before it: not something this module writes.
            quarantine_segment(&path, "overlaps the previous segment", recovery)?;
            continue;
        }
        let bytes = fs::read(&path).map_err(|source| SpoolError::Segment {
            path: path.clone(),
            op: "reading",
            source,
        })?;
        let scan = scan_segment(&bytes, first_seq);
        if let Some(reason) = scan.stop {
            if is_last {
                let cut = bytes.len() as u64 - scan.valid_len;
                let stranded = scan.stranded.iter().filter(|&&s| s > acked_through).count();
                tracing::warn!(
                    file = %path.display(),
                    offset = scan.valid_len,
                    bytes = cut,
                    lost_batches = stranded,
                    "spool: truncating the end of the last segment ({reason}); \
                     a torn record is one whose append never returned"
                );
                truncate_segment(&path, scan.valid_len)?;
                recovery.truncated_bytes += cut;
                recovery.lost_batches += stranded as u64;
            } else {
                // The records lost here are counted below from the gap in sequence numbers.
                tracing::warn!(
                    file = %path.display(),
                    offset = scan.valid_len,
                    "spool: corrupt record in an older segment ({reason}); \
                     skipping the rest of it"
                );
            }
        }
        for &(seq, offset, len) in &scan.records {
            if seq > acked_through {
                pending.push_back(PendingRecord {
                    seq,
                    segment: first_seq,
                    offset,
                    len,
                });
            }
        }
        let last_seq = scan.records.last().map(|&(seq, _, _)| seq);
        highest_seq = highest_seq.max(last_seq.unwrap_or(first_seq.saturating_sub(1)));
        segments.push_back(SpoolSegment {
            first_seq,
            last_seq,
            len: scan.valid_len,
        });
    }

    // Seqs are contiguous, so every seq between the cursor (or the first segment, if older ones
    // were deleted) and the highest record read should be pending; the missing ones were lost
    // inside an older or set-aside segment.
    let floor = acked_through.max(listed.first().map_or(0, |&first| first.saturating_sub(1)));
    let gap = highest_seq
        .saturating_sub(floor)
        .saturating_sub(pending.len() as u64);
    if gap > 0 {
        tracing::warn!(
            lost_batches = gap,
            "spool: batches lost to corrupt segments"
        );
        recovery.lost_batches += gap;
    }
    Ok(Scanned {
        segments,
        pending,
        highest_seq,
    })
}

/// Reads and checks a segment header. The outer error is I/O; a short file is corrupt.
fn read_segment_header(path: &Path) -> Result<Result<u64, Decode>, SpoolError> {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let mut file = File::open(path).map_err(|source| SpoolError::Segment {
        path: path.to_owned(),
        op: "opening",
        source,
    })?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(decode_segment_header(&header)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Ok(Err(Decode::Corrupt("short header")))
        }
        Err(source) => Err(SpoolError::Segment {
            path: path.to_owned(),
            op: "reading the header",
            source,
        }),
    }
}

/// Renames a segment whose header is unreadable to `*.seg.corrupt`: it is kept for an operator
/// to look at, and no longer read or counted.
fn quarantine_segment(
    path: &Path,
    reason: &str,
    recovery: &mut Recovery,
) -> Result<(), SpoolError> {
    let mut target = path.as_os_str().to_owned();
    target.push(CORRUPT_SUFFIX);
    tracing::warn!(
        file = %path.display(),
        reason,
        "spool: setting aside a segment with an unreadable header"
    );
    fs::rename(path, &target).map_err(|source| SpoolError::Segment {
        path: path.to_owned(),
        op: "renaming to `.corrupt`",
        source,
    })?;
    recovery.corrupt_segments += 1;
    Ok(())
}

fn truncate_segment(path: &Path, len: u64) -> Result<(), SpoolError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| truncate_durably(&file, len))
        .map_err(|source| SpoolError::Segment {
            path: path.to_owned(),
            op: "truncating",
            source,
        })
}

fn truncate_durably(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}

/// Lists `segments/`, returning the first seqs of the segment files in order, and removes the
/// temp files of segments whose creation a crash interrupted.
fn list_segments(segments_dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let dir_error = |op| {
        move |source| SpoolError::Dir {
            path: segments_dir.to_owned(),
            op,
            source,
        }
    };
    let mut seqs = Vec::new();
    for entry in fs::read_dir(segments_dir).map_err(dir_error("listing"))? {
        let entry = entry.map_err(dir_error("listing"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            // Never renamed into place, so never held an accepted batch.
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = stem.parse::<u64>()
            && seq > 0
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Removes the temp files of dead letters whose writing a crash interrupted (the batch was not
/// acked, so it is written again).
fn remove_temp_files(dir: &Path) -> Result<(), SpoolError> {
    let entries = fs::read_dir(dir).map_err(|source| SpoolError::Dir {
        path: dir.to_owned(),
        op: "listing",
        source,
    })?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TMP_SUFFIX))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn segment_path(segments_dir: &Path, first_seq: u64) -> PathBuf {
    segments_dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Deletes a segment file; returns false (after logging) when it could not be.
fn remove_segment_file(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), "spool: cannot delete an acked segment: {e}");
            false
        }
    }
}

/// Loads the cursor; a missing one is a new spool, a corrupt one is reset (with a warning),
/// a newer version is refused.
fn load_cursor(path: &Path, recovery: &mut Recovery) -> Result<Cursor, SpoolError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    // A temp file left by a crash was never renamed into place: the old cursor stands.
    let _ = fs::remove_file(&tmp);
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(source) => {
            return Err(SpoolError::Cursor {
                path: path.to_owned(),
                op: "reading",
                source,
            });
        }
    };
    match Cursor::decode(&bytes) {
        Ok(cursor) => Ok(cursor),
        Err(Decode::Version(found)) => Err(SpoolError::UnsupportedVersion {
            path: path.to_owned(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(Decode::Corrupt(reason)) => {
            tracing::warn!(
                file = %path.display(),
                reason,
                "spool: the cursor is corrupt; resetting it, so every batch on disk is sent again"
            );
            recovery.cursor_reset = true;
            Ok(Cursor::default())
        }
    }
}

fn store_cursor(dir: &Path, cursor: &Cursor) -> Result<(), SpoolError> {
    let path = dir.join(CURSOR_FILE);
    write_replacing(&path, &cursor.encode()).map_err(|(op, source)| SpoolError::Cursor {
        path: path.clone(),
        op,
        source,
    })?;
    sync_dir(dir).map_err(|source| SpoolError::Dir {
        path: dir.to_owned(),
        op: "fsync",
        source,
    })
}

/// Replaces `path` with `bytes` atomically: a reader (or a restart after a crash) sees either
/// the old file or the whole new one. The caller fsyncs the directory to make the rename
/// durable. The error says which step failed.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, io::Error)> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let result = File::create(&tmp)
        .map_err(|e| ("creating a temp file", e))
        .and_then(|mut file| {
            file.write_all(bytes)
                .map_err(|e| ("writing a temp file", e))?;
            file.sync_all().map_err(|e| ("fsync of a temp file", e))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| ("renaming a temp file into place", e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the spool directory and its subdirectories, durably.
fn create_dirs(dir: &Path, subdirs: &[&Path]) -> Result<(), SpoolError> {
    let dir_error = |path: &Path, op| {
        let path = path.to_owned();
        move |source| SpoolError::Dir { path, op, source }
    };
    fs::create_dir_all(dir).map_err(dir_error(dir, "creating"))?;
    for sub in subdirs {
        fs::create_dir_all(sub).map_err(dir_error(sub, "creating"))?;
    }
    sync_dir(dir).map_err(dir_error(dir, "fsync"))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Only matters the first time, when `dir` itself was just created.
        sync_dir(parent).map_err(dir_error(parent, "fsync"))?;
    }
    Ok(())
}

/// How long [`lock_dir`] waits for a held lock. A lock is held a moment longer than its owner
/// needs it when a process forks a child just then (between fork and exec the child shares the
/// open file description that holds the lock), or while a previous agent is exiting; a second
/// agent on the same directory holds it for good and is refused after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the directory's exclusive lock, released when the returned file is closed (also when
/// the process is killed).
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SpoolError::Dir {
            path: path.clone(),
            op: "opening the lock file",
            source,
        })?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked { path }),
            Err(TryLockError::Error(source)) => {
                return Err(SpoolError::Dir {
                    path,
                    op: "locking",
                    source,
                });
            }
        }
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    fn options(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            max_bytes,
            segment_bytes,
        }
    }

    fn open(dir: &Path, options: SpoolOptions) -> (Spool, Recovery) {
        Spool::open_with(dir, options).unwrap()
    }

    /// A JSON-ish batch whose content says which one it is.
    fn batch(n: u64, len: usize) -> Vec<u8> {
        let mut out = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
        while out.len() + 2 < len {
            out.push(b'a' + (n % 26) as u8);
        }
        out.extend_from_slice(b"\"}");
        out
    }

    fn contents(spool: &Spool) -> Vec<(u64, Vec<u8>)> {
        spool
            .pending()
            .map(|r| r.map(|(id, b)| (id.get(), b)).unwrap())
            .collect()
    }

    fn ids(spool: &Spool) -> Vec<u64> {
        contents(spool).into_iter().map(|(id, _)| id).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir.join(SEGMENTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(SEGMENT_SUFFIX))
            .collect();
        files.sort();
        files
    }

    fn flip_byte(path: &Path, offset: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    }

    fn set_len(path: &Path, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, recovery) = Spool::open(tmp.path(), 1 << 20).unwrap();
        assert!(recovery.is_clean());
        assert_eq!(spool.oldest().unwrap(), None);

        let a = spool.append(br#"{"a":1}"#).unwrap();
        let b = spool.append(b"").unwrap();
        let c = spool.append(&[0xff; 1000]).unwrap();
        assert!(a < b && b < c);
        assert_eq!(spool.oldest().unwrap(), Some((a, br#"{"a":1}"#.to_vec())));
        assert_eq!(
            contents(&spool),
            vec![
                (a.get(), br#"{"a":1}"#.to_vec()),
                (b.get(), vec![]),
                (c.get(), vec![0xff; 1000]),
            ]
        );
        assert_eq!(
            spool.stats(),
            SpoolStats {
                pending_batches: 3,
                pending_bytes: 1007,
                ..SpoolStats::default()
            }
        );
        assert_eq!(a.to_string(), "00000000000000000001");
    }

    #[test]
    fn reopen_keeps_pending_batches_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(1 << 20, 1000);
        let mut expected = Vec::new();
        {
            let (mut spool, _) = open(tmp.path(), opts);
            for n in 0..40 {
                let b = batch(n, 20 + (n as usize * 37) % 300);
                expected.push((spool.append(&b).unwrap().get(), b));
            }
        }
        assert!(segment_files(tmp.path()).len() > 3);
        let (mut spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean(), "{recovery:?}");
        assert_eq!(recovery.pending_batches, 40);
        assert_eq!(contents(&spool), expected);

        let next = spool.append(b"{}").unwrap();
        assert_eq!(next.get(), 41);
        expected.push((41, b"{}".to_vec()));
        drop(spool);
        let (spool, _) = open(tmp.path(), opts);
        assert_eq!(contents(&spool), expected);
    }

    #[test]
    fn ack_removes_durably_and_only_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        assert!(matches!(
            spool.ack(BatchId(1)),
            Err(SpoolError::NothingPending { .. })
        ));
        let a = spool.append(b"a").unwrap();
        let b = spool.append(b"bb").unwrap();
        let c = spool.append(b"ccc").unwrap();

        let err = spool.ack(b).unwrap_err();
        assert!(matches!(err, SpoolError::OutOfOrder { id, oldest } if id == b && oldest == a));
        assert_eq!(
            err.to_string(),
            "ack of batch 00000000000000000002 is out of order: the oldest pending batch is 00000000000000000001"
        );
        spool.ack(a).unwrap();
        assert!(spool.ack(a).is_err(), "a second ack of the same batch");
        assert_eq!(spool.oldest().unwrap(), Some((b, b"bb".to_vec())));
        assert_eq!(spool.stats().pending_bytes, 5);
        drop(spool);

        let (mut spool, recovery) = Spool::open(tmp.path(), 1 << 20).unwrap();
        assert!(recovery.is_clean());
        assert_eq!(ids(&spool), vec![b.get(), c.get()]);
        spool.ack(b).unwrap();
        spool.ack(c).unwrap();
        assert!(spool.is_empty());
        drop(spool);

        // Fully acked: the next batch still gets a fresh id.
        let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.append(b"d").unwrap().get(), 4);
    }

    /// Truncates the last record at every length (as a crash in the middle of its `append`
    /// would leave it) and checks that everything before it survives and appends go on.
    #[test]
    fn torn_tail_at_every_offset_of_the_last_record() {
        let first = batch(1, 30);
        let second = batch(2, 30);
        let third = batch(3, 40);
        let record = |b: &[u8]| (RECORD_HEADER_LEN + b.len()) as u64;
        for alone_in_its_segment in [false, true] {
            // Room for a header and the first two records only, or for everything.
            let segment_bytes = if alone_in_its_segment {
                SEGMENT_HEADER_LEN as u64 + record(&first) + record(&second)
            } else {
                DEFAULT_SEGMENT_BYTES
            };
            let opts = options(1 << 20, segment_bytes);
            let last_len = if alone_in_its_segment {
                SEGMENT_HEADER_LEN as u64 + record(&third)
            } else {
                SEGMENT_HEADER_LEN as u64 + record(&first) + record(&second) + record(&third)
            };
            let record_start = last_len - record(&third);
            // With its own segment, also tear that segment's header.
            let from = if alone_in_its_segment {
                0
            } else {
                record_start
            };
            for cut in from..last_len {
                let tmp = tempfile::tempdir().unwrap();
                {
                    let (mut spool, _) = open(tmp.path(), opts);
                    for b in [&first, &second, &third] {
                        spool.append(b).unwrap();
                    }
                }
                let files = segment_files(tmp.path());
                assert_eq!(files.len(), if alone_in_its_segment { 2 } else { 1 });
                let last = files.last().unwrap();
                assert_eq!(fs::metadata(last).unwrap().len(), last_len);
                set_len(last, cut);

                let (mut spool, recovery) = open(tmp.path(), opts);
                let context = format!("alone={alone_in_its_segment} cut={cut}: {recovery:?}");
                assert_eq!(
                    contents(&spool),
                    vec![(1, first.clone()), (2, second.clone())],
                    "{context}"
                );
                assert_eq!(recovery.lost_batches, 0, "{context}");
                if cut < record_start {
                    assert_eq!(recovery.corrupt_segments, 1, "{context}");
                    assert_eq!(recovery.truncated_bytes, 0, "{context}");
                } else {
                    assert_eq!(recovery.corrupt_segments, 0, "{context}");
                    assert_eq!(recovery.truncated_bytes, cut - record_start, "{context}");
                }
                assert_eq!(spool.append(b"{\"n\":4}").unwrap().get(), 3, "{context}");
                drop(spool);
                let (spool, recovery) = open(tmp.path(), opts);
                assert!(recovery.is_clean(), "{context}");
                assert_eq!(ids(&spool), vec![1, 2, 3], "{context}");
                assert_eq!(spool.pending().last().unwrap().unwrap().1, b"{\"n\":4}");
            }
        }
    }

    /// Three records of 50 bytes per segment: batches 1-3, 4-6, 7-9.
    fn three_per_segment(dir: &Path) -> SpoolOptions {
        let opts = options(1 << 20, SEGMENT_HEADER_LEN as u64 + 150);
        let (mut spool, _) = open(dir, opts);
        for n in 1..=9 {
            spool.append(&batch(n, 30)).unwrap();
        }
        assert_eq!(segment_files(dir).len(), 3);
        opts
    }

    #[test]
    fn flipped_byte_in_an_older_segment_loses_only_the_rest_of_that_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let middle = segment_files(tmp.path())[1].clone();
        // The payload of batch 5, the second record of the middle segment.
        flip_byte(&middle, SEGMENT_HEADER_LEN + 50 + RECORD_HEADER_LEN + 5);

        let (mut spool, recovery) = open(tmp.path(), opts);
        assert_eq!(recovery.lost_batches, 2, "{recovery:?}");
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(ids(&spool), vec![1, 2, 3, 4, 7, 8, 9]);
        assert_eq!(spool.append(b"{}").unwrap().get(), 10);
        for id in [1, 2, 3, 4] {
            spool.ack(BatchId(id)).unwrap();
        }
        // The middle segment is fully acked as far as it can be read, so it goes.
        assert!(!middle.exists());
        spool.ack(BatchId(7)).unwrap();
        drop(spool);
        let (spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean(), "{recovery:?}");
        assert_eq!(ids(&spool), vec![8, 9, 10]);
    }

    #[test]
    fn flipped_byte_in_the_last_segment_truncates_behind_it() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        {
            let (mut spool, _) = open(tmp.path(), opts);
            for n in 1..=5 {
                spool.append(&batch(n, 30)).unwrap();
            }
        }
        let segment = &segment_files(tmp.path())[0];
        // The seq field of batch 3.
        flip_byte(segment, SEGMENT_HEADER_LEN + 2 * 50 + 9);
        let (mut spool, recovery) = open(tmp.path(), opts);
        assert_eq!(ids(&spool), vec![1, 2]);
        assert_eq!(recovery.truncated_bytes, 150);
        assert_eq!(
            recovery.lost_batches, 2,
            "batches 4 and 5 were intact: {recovery:?}"
        );
        assert_eq!(spool.append(b"{}").unwrap().get(), 3);
    }

    #[test]
    fn flipped_segment_header_sets_the_segment_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let middle = segment_files(tmp.path())[1].clone();
        flip_byte(&middle, 10);
        let (spool, recovery) = open(tmp.path(), opts);
        assert_eq!(recovery.corrupt_segments, 1);
        assert_eq!(recovery.lost_batches, 3);
        assert_eq!(ids(&spool), vec![1, 2, 3, 7, 8, 9]);
        let mut aside = middle.into_os_string();
        aside.push(CORRUPT_SUFFIX);
        assert!(Path::new(&aside).exists());
    }

    #[test]
    fn corrupt_record_found_when_reading_can_be_dead_lettered() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        let a = spool.append(&batch(1, 30)).unwrap();
        let b = spool.append(&batch(2, 30)).unwrap();
        flip_byte(&segment_files(tmp.path())[0], SEGMENT_HEADER_LEN + 25);

        let err = spool.oldest().unwrap_err();
        assert!(matches!(err, SpoolError::CorruptRecord { id, .. } if id == a));
        let message = err.to_string();
        assert!(
            message.starts_with("spool segment `") && message.contains("00000000000000000001.seg`"),
            "{message}"
        );
        spool.dead_letter(a, "unreadable").unwrap();
        let reason = fs::read_to_string(
            tmp.path()
                .join("dead-letter/00000000000000000001.reason.txt"),
        )
        .unwrap();
        assert!(
            reason.contains("reason: unreadable") && reason.contains("corrupt"),
            "{reason}"
        );
        assert_eq!(spool.oldest().unwrap(), Some((b, batch(2, 30))));
    }

    #[test]
    fn dead_letter_keeps_the_batch_and_its_reason_and_moves_on() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        let bad = spool.append(br#"{"bad":true}"#).unwrap();
        let good = spool.append(br#"{"good":true}"#).unwrap();
        assert!(matches!(
            spool.dead_letter(good, "x"),
            Err(SpoolError::OutOfOrder { .. })
        ));

        let path = spool
            .dead_letter(bad, "HTTP 400: missing field `type`")
            .unwrap();
        assert_eq!(
            path,
            tmp.path().join("dead-letter/00000000000000000001.json")
        );
        assert_eq!(fs::read(&path).unwrap(), br#"{"bad":true}"#);
        let reason = fs::read_to_string(
            tmp.path()
                .join("dead-letter/00000000000000000001.reason.txt"),
        )
        .unwrap();
        assert!(
            reason.contains("reason: HTTP 400: missing field `type`\n"),
            "{reason}"
        );
        assert_eq!(spool.oldest().unwrap().unwrap().0, good);
        assert_eq!(spool.stats().dead_lettered_batches, 1);
        drop(spool);

        let (spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        assert_eq!(ids(&spool), vec![good.get()]);
        assert_eq!(spool.stats().dead_lettered_batches, 1);
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(100, 120);
        let (mut spool, _) = open(tmp.path(), opts);
        for n in 1..=3 {
            spool.append(&batch(n, 40)).unwrap();
        }
        assert_eq!(ids(&spool), vec![2, 3]);
        // Refused whole, without dropping anything for it.
        let err = spool.append(&[b'x'; 101]).unwrap_err();
        assert!(matches!(
            err,
            SpoolError::BatchTooLarge {
                size: 101,
                max: 100
            }
        ));
        assert_eq!(
            err.to_string(),
            "batch of 101 bytes is larger than the spool's limit of 100 bytes"
        );
        spool.append(&batch(4, 100)).unwrap();
        assert_eq!(ids(&spool), vec![4]);
        let stats = spool.stats();
        assert_eq!(
            stats,
            SpoolStats {
                pending_batches: 1,
                pending_bytes: 100,
                dropped_batches: 3,
                dropped_bytes: 120,
                dead_lettered_batches: 0,
            }
        );
        drop(spool);

        let (spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean());
        assert_eq!(spool.stats(), stats);
        assert_eq!(
            segment_files(tmp.path()).len(),
            1,
            "dropped segments are deleted"
        );
        drop(spool);

        // A lowered limit takes effect at open.
        let (spool, recovery) = open(tmp.path(), options(50, 120));
        assert_eq!((recovery.dropped_batches, recovery.dropped_bytes), (1, 100));
        assert_eq!(spool.stats().dropped_batches, 4);
        assert!(spool.is_empty());
    }

    #[test]
    fn segments_roll_over_and_acked_ones_are_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let (mut spool, _) = open(tmp.path(), opts);
        let names = |dir: &Path| -> Vec<String> {
            segment_files(dir)
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(tmp.path()),
            [
                "00000000000000000001.seg",
                "00000000000000000004.seg",
                "00000000000000000007.seg"
            ]
        );
        for id in 1..=2 {
            spool.ack(BatchId(id)).unwrap();
        }
        assert_eq!(names(tmp.path()).len(), 3);
        spool.ack(BatchId(3)).unwrap();
        assert_eq!(names(tmp.path())[0], "00000000000000000004.seg");
        for id in 4..=9 {
            spool.ack(BatchId(id)).unwrap();
        }
        // The active segment stays, to be appended to.
        assert_eq!(names(tmp.path()), ["00000000000000000007.seg"]);
        spool.append(&batch(10, 30)).unwrap();
        assert_eq!(names(tmp.path()), ["00000000000000000010.seg"]);
        drop(spool);
        let (spool, _) = open(tmp.path(), opts);
        assert_eq!(ids(&spool), vec![10]);
    }

    #[test]
    fn a_segment_left_behind_after_its_acks_is_deleted_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let (mut spool, _) = open(tmp.path(), opts);
        for id in 1..=3 {
            spool.ack(BatchId(id)).unwrap();
        }
        drop(spool);
        // As if the process died between the cursor write and the deletion.
        let first = tmp.path().join("segments/00000000000000000001.seg");
        fs::write(&first, encode_segment_header(1)).unwrap();
        let (spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean(), "{recovery:?}");
        assert!(!first.exists());
        assert_eq!(ids(&spool), (4..=9).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_cursor_is_reset_and_batches_are_sent_again() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let (mut spool, _) = open(tmp.path(), opts);
        spool.ack(BatchId(1)).unwrap();
        drop(spool);
        flip_byte(&tmp.path().join(CURSOR_FILE), 9);
        let (spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.cursor_reset);
        assert_eq!(recovery.lost_batches, 0);
        assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn newer_format_versions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let segment = segment_files(tmp.path())[0].clone();
        let mut bytes = fs::read(&segment).unwrap();
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&segment, &bytes).unwrap();
        let err = Spool::open_with(tmp.path(), opts).unwrap_err();
        assert!(
            matches!(err, SpoolError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("00000000000000000001.seg"),
            "{err}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let mut cursor = Cursor::default().encode();
        cursor[4..8].copy_from_slice(&7u32.to_le_bytes());
        fs::write(tmp.path().join(CURSOR_FILE), cursor).unwrap();
        let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(err, SpoolError::UnsupportedVersion { found: 7, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_second_open_is_refused_while_the_spool_is_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (_spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
        let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    }

    #[test]
    fn leftover_temp_files_are_removed_and_foreign_files_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let segments = tmp.path().join(SEGMENTS_DIR);
        fs::write(segments.join("00000000000000000010.seg.tmp"), b"half").unwrap();
        fs::write(segments.join("notes.txt"), b"hello").unwrap();
        fs::write(tmp.path().join("cursor.tmp"), b"half").unwrap();
        let dead_tmp = tmp.path().join("dead-letter/00000000000000000001.json.tmp");
        fs::write(&dead_tmp, b"half").unwrap();
        let (spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean(), "{recovery:?}");
        assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
        assert!(!segments.join("00000000000000000010.seg.tmp").exists());
        assert!(!tmp.path().join("cursor.tmp").exists());
        assert!(!dead_tmp.exists());
        assert!(segments.join("notes.txt").exists());
    }

    /// An append whose write or fsync failed may leave part of a record behind; the next append
    /// cuts it off first, even when it starts a new segment.
    #[test]
    fn a_failed_append_is_cut_off_before_the_next_one() {
        let tmp = tempfile::tempdir().unwrap();
        for segment_bytes in [DEFAULT_SEGMENT_BYTES, 60] {
            let opts = options(1 << 20, segment_bytes);
            let (mut spool, _) = open(tmp.path(), opts);
            let first = spool.append(&batch(1, 30)).unwrap();
            let last = segment_files(tmp.path()).pop().unwrap();
            // What a write that failed half-way leaves.
            let mut file = OpenOptions::new().append(true).open(&last).unwrap();
            file.write_all(&encode_record(first.get() + 1, &batch(2, 30))[..25])
                .unwrap();
            spool.active.as_mut().unwrap().dirty = true;
            let second = spool.append(&batch(3, 30)).unwrap();
            assert_eq!(second.get(), first.get() + 1);
            drop(spool);
            let (mut spool, recovery) = open(tmp.path(), opts);
            assert!(recovery.is_clean(), "{segment_bytes}: {recovery:?}");
            assert_eq!(
                contents(&spool),
                vec![(first.get(), batch(1, 30)), (second.get(), batch(3, 30))]
            );
            spool.ack(first).unwrap();
            spool.ack(second).unwrap();
        }
    }

    #[test]
    fn garbage_segments_never_panic() {
        // Random bytes after a valid header, and files of every small length.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200usize {
            let tmp = tempfile::tempdir().unwrap();
            let segments = tmp.path().join(SEGMENTS_DIR);
            fs::create_dir_all(&segments).unwrap();
            let mut bytes = encode_segment_header(1).to_vec();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            if len % 2 == 0 {
                bytes.truncate(len);
            }
            fs::write(segments.join("00000000000000000001.seg"), &bytes).unwrap();
            let (mut spool, _) = open(tmp.path(), options(1 << 20, 1 << 20));
            assert!(spool.is_empty());
            spool.append(b"{}").unwrap();
        }
    }

    // ---- the spool against a model: a queue ----

    const MODEL_MAX_BYTES: u64 = 1000;
    const MODEL_SEGMENT_BYTES: u64 = 400;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        Ack,
        AckWrongId(u64),
        DeadLetter,
        Reopen,
        /// Cut the last record of the last segment to `n % its length` bytes and reopen.
        TearTail(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
            1 => proptest::collection::vec(any::<u8>(), 990..1010).prop_map(Op::Append),
            5 => Just(Op::Ack),
            1 => (0u64..40).prop_map(Op::AckWrongId),
            2 => Just(Op::DeadLetter),
            2 => Just(Op::Reopen),
            2 => any::<u16>().prop_map(Op::TearTail),
        ]
    }

    #[derive(Debug, Default)]
    struct Model {
        pending: VecDeque<(u64, Vec<u8>)>,
        stats: SpoolStats,
        /// The highest id acked, dead-lettered or dropped.
        removed_through: u64,
    }

    impl Model {
        fn pop_front(&mut self) -> (u64, Vec<u8>) {
            let (id, batch) = self.pending.pop_front().unwrap();
            self.removed_through = id;
            (id, batch)
        }
    }

    fn run_against_model(ops: Vec<Op>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let opts = options(MODEL_MAX_BYTES, MODEL_SEGMENT_BYTES);
        let mut spool = Some(open(dir, opts).0);
        let mut model = Model::default();
        for op in ops {
            let s = spool.as_mut().unwrap();
            match op {
                Op::Append(batch) => {
                    let result = s.append(&batch);
                    if batch.len() as u64 > MODEL_MAX_BYTES {
                        assert!(matches!(result, Err(SpoolError::BatchTooLarge { .. })));
                        continue;
                    }
                    let id = result.unwrap().get();
                    let mut bytes: u64 = model.pending.iter().map(|(_, b)| b.len() as u64).sum();
                    while bytes + batch.len() as u64 > MODEL_MAX_BYTES {
                        let (_, dropped) = model.pop_front();
                        bytes -= dropped.len() as u64;
                        model.stats.dropped_batches += 1;
                        model.stats.dropped_bytes += dropped.len() as u64;
                    }
                    assert!(id > model.removed_through);
                    assert!(model.pending.back().is_none_or(|&(last, _)| id > last));
                    model.pending.push_back((id, batch));
                }
                Op::Ack => match model.pending.front() {
                    None => assert!(s.ack(BatchId(model.removed_through + 1)).is_err()),
                    Some(&(id, _)) => {
                        s.ack(BatchId(id)).unwrap();
                        model.pop_front();
                    }
                },
                Op::AckWrongId(id) => {
                    if model
                        .pending
                        .front()
                        .is_none_or(|&(oldest, _)| oldest != id)
                    {
                        assert!(s.ack(BatchId(id)).is_err());
                    }
                }
                Op::DeadLetter => match model.pending.front() {
                    None => assert!(s.dead_letter(BatchId(1), "x").is_err()),
                    Some(&(id, _)) => {
                        let path = s.dead_letter(BatchId(id), "rejected").unwrap();
                        let (_, batch) = model.pop_front();
                        assert_eq!(fs::read(path).unwrap(), batch);
                        model.stats.dead_lettered_batches += 1;
                    }
                },
                Op::Reopen => {
                    drop(spool.take());
                    let (reopened, recovery) = open(dir, opts);
                    assert!(recovery.is_clean(), "{recovery:?}");
                    spool = Some(reopened);
                }
                Op::TearTail(n) => {
                    drop(spool.take());
                    let mut torn = 0;
                    if let Some(last) = segment_files(dir).last() {
                        let bytes = fs::read(last).unwrap();
                        let name = last.file_stem().unwrap().to_str().unwrap();
                        let scan = scan_segment(&bytes, name.parse().unwrap());
                        assert!(scan.stop.is_none());
                        if let Some(&(seq, offset, len)) = scan.records.last() {
                            torn = u64::from(n) % (RECORD_HEADER_LEN as u64 + u64::from(len));
                            set_len(last, offset + torn);
                            // The newest record on disk: pending only if it is the model's newest.
                            if model.pending.back().is_some_and(|&(id, _)| id == seq) {
                                model.pending.pop_back();
                            } else {
                                assert!(seq <= model.removed_through);
                            }
                        }
                    }
                    let (reopened, recovery) = open(dir, opts);
                    assert_eq!(recovery.truncated_bytes, torn);
                    assert_eq!(recovery.lost_batches, 0);
                    assert_eq!(recovery.corrupt_segments, 0);
                    spool = Some(reopened);
                }
            }
            let s = spool.as_ref().unwrap();
            assert_eq!(contents(s), Vec::from(model.pending.clone()));
            assert_eq!(
                s.oldest().unwrap().map(|(id, b)| (id.get(), b)),
                model.pending.front().cloned()
            );
            model.stats.pending_batches = model.pending.len() as u64;
            model.stats.pending_bytes = model.pending.iter().map(|(_, b)| b.len() as u64).sum();
            assert_eq!(s.stats(), model.stats);
            // Segments the cursor passed are gone, except the one being appended to.
            assert!(segment_files(dir).len() as u64 <= 2 + MODEL_MAX_BYTES / 100);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn spool_agrees_with_a_queue_model(ops in proptest::collection::vec(op(), 1..60)) {
            run_against_model(ops);
        }
    }

    // ---- crash test: a child process appending, killed with SIGKILL ----

    const CRASH_DIR_ENV: &str = "SPOOL_CRASH_TEST_DIR";
    const CRASH_START_ENV: &str = "SPOOL_CRASH_TEST_START";

    fn crash_options() -> SpoolOptions {
        options(1 << 30, 64 * 1024)
    }

    fn crash_batch(n: u64) -> Vec<u8> {
        batch(n, 64 + (n * 7919 % 4000) as usize)
    }

    fn crash_batch_number(bytes: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(bytes).ok()?;
        text.strip_prefix("{\"n\":")?
            .split(',')
            .next()?
            .parse()
            .ok()
    }

    /// Does nothing in a normal run. As the child of `survives_sigkill_at_random_times`, it
    /// appends (and now and then acks) until it is killed, reporting on stdout each append and
    /// ack after it returned.
    #[test]
    fn crash_child_append_loop() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let start: u64 = std::env::var(CRASH_START_ENV).unwrap().parse().unwrap();
        let (mut spool, _) = open(Path::new(&dir), crash_options());
        let mut out = io::stdout().lock();
        let began = Instant::now();
        // Bounded, in case the parent dies before killing it.
        for n in start.. {
            if began.elapsed() > Duration::from_secs(20) {
                break;
            }
            let id = spool.append(&crash_batch(n)).unwrap();
            writeln!(out, "SPOOL-CRASH appended {} {n}", id.get()).unwrap();
            out.flush().unwrap();
            if n % 3 == 0
                && let Some((id, _)) = spool.oldest().unwrap()
            {
                spool.ack(id).unwrap();
                writeln!(out, "SPOOL-CRASH acked {}", id.get()).unwrap();
                out.flush().unwrap();
            }
        }
    }

    #[test]
    fn survives_sigkill_at_random_times() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        // Test names are module paths without the crate name.
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let child_test = format!("{module}::crash_child_append_loop");
        let mut rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("crash test seed {rng}");

        let mut appended = BTreeMap::new(); // id -> batch number
        let mut acked = BTreeSet::new();
        let mut torn_tails = 0;
        for round in 0..6u64 {
            let mut child = Command::new(&exe)
                .args([&child_test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CRASH_DIR_ENV, tmp.path())
                .env(CRASH_START_ENV, (round * 1_000_000).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
            });
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_millis(150 + rng % 400));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            for line in reader.join().unwrap() {
                // libtest prints `test <name> ... ` without a newline before the test runs.
                let Some(at) = line.find("SPOOL-CRASH ") else {
                    continue;
                };
                let words: Vec<_> = line[at..].split_whitespace().collect();
                match words[..] {
                    ["SPOOL-CRASH", "appended", id, n] => {
                        let id: u64 = id.parse().unwrap();
                        let n: u64 = n.parse().unwrap();
                        assert_eq!(appended.insert(id, n), None, "id {id} handed out twice");
                    }
                    ["SPOOL-CRASH", "acked", id] => {
                        acked.insert(id.parse::<u64>().unwrap());
                    }
                    _ => {}
                }
            }

            let (spool, recovery) = open(tmp.path(), crash_options());
            assert_eq!(recovery.lost_batches, 0, "{recovery:?}");
            assert_eq!(recovery.corrupt_segments, 0, "{recovery:?}");
            torn_tails += u64::from(recovery.truncated_bytes > 0);
            let pending = contents(&spool);
            let max_reported = appended.keys().next_back().copied().unwrap_or(0);
            for (id, batch) in &pending {
                let n = crash_batch_number(batch).unwrap();
                assert_eq!(batch, &crash_batch(n), "batch {id} is intact");
                assert!(!acked.contains(id), "batch {id} came back after its ack");
                match appended.get(id) {
                    Some(&reported) => assert_eq!(reported, n),
                    None => {
                        // An append that completed but was not reported before the kill.
                        assert!(*id > max_reported, "unknown batch {id}");
                        appended.insert(*id, n);
                    }
                }
            }
            let pending_ids: BTreeSet<u64> = pending.iter().map(|(id, _)| *id).collect();
            let missing: Vec<u64> = appended
                .keys()
                .filter(|id| !acked.contains(id) && !pending_ids.contains(id))
                .copied()
                .collect();
            // Only an ack in flight may have taken the oldest batch without reporting it.
            assert!(missing.len() <= 1, "accepted batches lost: {missing:?}");
            if let Some(&id) = missing.first() {
                assert!(pending_ids.first().is_none_or(|&oldest| id < oldest));
                acked.insert(id);
            }
        }
        println!(
            "crash test: {} batches appended, {} acked, {torn_tails} torn tails repaired",
            appended.len(),
            acked.len()
        );
        assert!(
            appended.len() > 30,
            "the child appended too little to mean anything"
        );
    }

    #[test]
    #[ignore = "measures fsync throughput: cargo test --release -- --ignored --nocapture"]
    fn append_throughput() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), 1 << 30).unwrap();
        let batch = vec![b'x'; 20 * 1024];
        let began = Instant::now();
        let mut count = 0u64;
        while began.elapsed() < Duration::from_secs(5) {
            spool.append(&batch).unwrap();
            count += 1;
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "append: {count} batches of 20 KiB in {secs:.2} s: {:.0} batches/s, {:.1} MiB/s",
            count as f64 / secs,
            count as f64 * 20.0 / 1024.0 / secs
        );
        let began = Instant::now();
        let mut acked = 0u64;
        while let Some((id, _)) = spool.oldest().unwrap() {
            spool.ack(id).unwrap();
            acked += 1;
            if began.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "oldest + ack: {acked} in {secs:.2} s: {:.0}/s",
            acked as f64 / secs
        );
        drop(spool);
        let began = Instant::now();
        let (spool, _) = Spool::open(tmp.path(), 1 << 30).unwrap();
        println!(
            "reopen with {} pending batches: {:.1} ms",
            spool.len(),
            began.elapsed().as_secs_f64() * 1000.0
        );
    }
}
