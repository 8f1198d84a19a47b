//! Opening a spool: reading what is on disk and repairing what a crash left behind.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::files::{create_dirs, lock_dir, truncate_durably};
use super::format::{
    Cursor, Decode, Parsed, RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN,
    decode_segment_header, le_u32, parse_record,
};
use super::queue::remove_segment_file;
use super::*;

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
}

/// What one segment holds, as far as it could be read.
#[derive(Debug, Default)]
pub(super) struct SegmentScan {
    /// (seq, offset, payload len) of each intact record, in order.
    pub(super) records: Vec<(u64, u64, u32)>,
    /// The file length up to the end of the last intact record.
    valid_len: u64,
    /// Why reading stopped before the end of the file.
    pub(super) stop: Option<&'static str>,
    /// Seqs of checksum-valid records found after the point where reading stopped: batches the
    /// corruption cut off.
    stranded: Vec<u64>,
}

/// Reads the records of a segment (whose header was checked) until the end or the first record
/// that is torn, corrupt or out of sequence.
pub(super) fn scan_segment(bytes: &[u8], first_seq: u64) -> SegmentScan {
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
