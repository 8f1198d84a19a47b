//! Opening a spool: reading the state files and the segments, counting exactly what was lost,
//! and repairing what a crash left behind. It must never cut anything but a torn tail (an
//! incomplete last record, whose append never returned), never panic on what it reads, and
//! never treat a seq it cannot read as pending or forget to count it.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::dead_letter::DeadLetters;
use super::files::{
    create_dirs, is_leftover_of, lock_dir, open_nofollow, read_nofollow, truncate_durably,
};
use super::format::{
    COUNTERS_MAGIC, CURSOR_MAGIC, Cursor, Decode, LEGACY_VERSION, Parsed, RECORD_MAGIC,
    SEGMENT_HEADER_LEN, decode_segment_header, le_u32, parse_record, record_header_len,
};
use super::segments::remove_segment_file;
use super::state::{self, Loaded, StateFile};
use super::*;

impl Spool {
    /// Opens (or creates) the spool in `dir` with the default segment size and dead-letter
    /// bounds.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovery), SpoolError> {
        Self::open_with(dir, SpoolOptions::new(max_bytes))
    }

    /// Opens (or creates) the spool in `dir`, repairing what a crash left behind: a torn last
    /// record is cut, unreadable records are queued to be set aside (and counted), and fully
    /// acked segments are deleted. What was found is returned and logged.
    pub fn open_with(dir: &Path, options: SpoolOptions) -> Result<(Spool, Recovery), SpoolError> {
        let segments_dir = dir.join(SEGMENTS_DIR);
        let dead_dir = dir.join(DEAD_LETTER_DIR);
        create_dirs(dir, &[&segments_dir, &dead_dir])?;
        let lock = lock_dir(dir)?;
        let dead_letters = DeadLetters::open(
            &dead_dir,
            options.dead_letter_max_bytes,
            options.dead_letter_max_age,
        )?;

        let mut recovery = Recovery::default();
        let listed = list_segments(&segments_dir)?;
        // Format 1 wrote its cursor only at the first removal: a spool of format 1 segments
        // alone and no state file at all is one that never removed anything, not a lost cursor.
        let new_or_legacy = listed.iter().all(|&seq| {
            read_segment_header(&segment_path(&segments_dir, seq))
                .is_ok_and(|header| header.is_ok_and(|(version, _)| version == LEGACY_VERSION))
        });
        let (cursor, cursor_loaded, counters_loaded) =
            load_state(dir, new_or_legacy, &mut recovery)?;
        let scanned = scan_segments(&segments_dir, &listed, cursor.acked_through, &mut recovery)?;
        // Seqs are never reused: a dead letter's seq counts even when the cursor was lost.
        let next_seq = scanned
            .next_seq
            .max(cursor.acked_through.saturating_add(1))
            .max(
                dead_letters
                    .highest_seq()
                    .map_or(0, |seq| seq.saturating_add(1)),
            );
        let cursor_file = StateFile::open(
            &dir.join(CURSOR_FILE),
            CURSOR_MAGIC,
            &cursor_loaded,
            &cursor,
        )?;
        let counters_file = StateFile::open(
            &dir.join(COUNTERS_FILE),
            COUNTERS_MAGIC,
            &counters_loaded,
            &cursor,
        )?;

        let mut spool = Spool {
            dir: dir.to_owned(),
            segments_dir,
            options,
            cursor,
            counters_stored: cursor.counters,
            cursor_file,
            counters_file,
            segments: scanned.segments,
            active: None,
            pending: scanned.pending,
            lost: scanned.lost,
            pending_bytes: 0,
            next_seq,
            dead_letters,
            read_failures: 0,
            _lock: lock,
        };
        spool.pending_bytes = spool.pending.iter().map(|r| u64::from(r.len)).sum();
        spool.resume_last_segment(scanned.last_appendable)?;
        // Both files get the merged state (counters from either, a cursor loss counted).
        spool.store_state(cursor)?;

        // `max_bytes` may have been lowered since the last run.
        let (dropped, bytes) = spool.make_room(0)?;
        recovery.dropped_batches = dropped;
        recovery.dropped_bytes = bytes;
        spool.prune_dead_letters()?;
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

    /// After open: keep appending to the last segment when it ends with its last record, is of
    /// the current format and the next seq continues it; else leave it sealed (and drop it if
    /// it holds nothing).
    fn resume_last_segment(&mut self, appendable: bool) -> Result<(), SpoolError> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        let continues = appendable
            && last.version == FORMAT_VERSION
            && last
                .last_seq
                .unwrap_or(last.first_seq.saturating_sub(1))
                .saturating_add(1)
                == self.next_seq;
        let path = segment_path(&self.segments_dir, last.first_seq);
        if continues {
            let file = OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
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

/// Reads both state files. The cursor wins where it is readable; the counters file stands in
/// for a missing or corrupt one, and the larger of each counter is kept.
fn load_state(
    dir: &Path,
    new_or_legacy: bool,
    recovery: &mut Recovery,
) -> Result<(Cursor, Loaded, Loaded), SpoolError> {
    // A temp file left by a crash was never renamed into place: the old file stands.
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_str().is_some_and(|name| {
            is_leftover_of(name, |target| {
                [CURSOR_FILE, COUNTERS_FILE].contains(&target)
            })
        }) {
            let _ = fs::remove_file(entry.path());
        }
    }
    let cursor_path = dir.join(CURSOR_FILE);
    let cursor_loaded = state::load(&cursor_path, CURSOR_MAGIC)?;
    let counters_loaded = state::load(&dir.join(COUNTERS_FILE), COUNTERS_MAGIC)?;
    let backup = counters_loaded.cursor();
    let lost_reason = match (&cursor_loaded, backup) {
        (Loaded::Found(found), backup) => {
            let backup = backup.unwrap_or_default();
            let cursor = Cursor {
                acked_through: found.cursor.acked_through.max(backup.acked_through),
                counters: found.cursor.counters.max(backup.counters),
            };
            return Ok((cursor, cursor_loaded, counters_loaded));
        }
        // A new spool, or a format 1 spool that never removed a batch.
        (Loaded::Missing, None) if new_or_legacy => {
            return Ok((Cursor::default(), cursor_loaded, counters_loaded));
        }
        (Loaded::Missing, _) => {
            recovery.cursor_missing = true;
            "missing"
        }
        (Loaded::Corrupt(why), _) => {
            recovery.cursor_reset = true;
            why
        }
    };
    let mut cursor = backup.unwrap_or_default();
    cursor.counters.cursor_losses += 1;
    tracing::warn!(
        file = %cursor_path.display(),
        reason = lost_reason,
        acked_through = cursor.acked_through,
        from_counters_file = backup.is_some(),
        "spool: the cursor is lost; going on from the counters file's copy (the last drop or \
         dead letter), so batches acked since then are sent again"
    );
    Ok((cursor, cursor_loaded, counters_loaded))
}

/// What one segment holds, as far as it can be read.
#[derive(Debug, Default)]
pub(super) struct SegmentScan {
    /// (seq, offset, payload len) of each intact record, in order.
    pub(super) records: Vec<(u64, u64, u32)>,
    /// Unreadable stretches followed by a readable record.
    pub(super) damaged: Vec<Damage>,
    /// The seq after the last record read (intact or damaged).
    pub(super) next_seq: u64,
    /// Where reading stopped short of the end of the file, with no intact record behind: a
    /// torn tail or damage, for the caller to judge.
    pub(super) tail: Option<usize>,
}

/// Bytes that could not be read, between two records.
#[derive(Debug)]
pub(super) struct Damage {
    /// The seqs they held: `first_seq..end_seq` (empty when they held none).
    pub(super) first_seq: u64,
    pub(super) end_seq: u64,
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) reason: &'static str,
}

/// Reads the records of a segment (whose header was checked), resynchronising after damage on
/// the next record with a valid magic, checksum and a seq in `expected..seq_limit`.
pub(super) fn scan_segment(
    bytes: &[u8],
    version: u32,
    first_seq: u64,
    seq_limit: u64,
) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut expected = first_seq;
    let header_len = record_header_len(version);
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        let reason = match parse_record(version, rest) {
            Parsed::Record { seq, payload } if seq == expected && seq < seq_limit => {
                scan.records.push((seq, pos as u64, payload.len() as u32));
                pos += header_len + payload.len();
                expected += 1;
                continue;
            }
            Parsed::Damaged { seq, record_len } if seq == expected && seq < seq_limit => {
                scan.damaged.push(Damage {
                    first_seq: seq,
                    end_seq: seq + 1,
                    offset: pos,
                    len: record_len,
                    reason: "payload checksum mismatch",
                });
                pos += record_len;
                expected += 1;
                continue;
            }
            // An intact header whose payload runs past the end of the file.
            Parsed::Incomplete { seq: Some(seq) } if seq == expected => break,
            Parsed::Invalid(reason) => reason,
            Parsed::Incomplete { .. } => "record runs past the end of the file",
            Parsed::Record { .. } | Parsed::Damaged { .. } => "record out of sequence",
        };
        let Some((at, seq)) = find_next_record(bytes, pos, version, expected, seq_limit) else {
            break;
        };
        scan.damaged.push(Damage {
            first_seq: expected,
            end_seq: seq,
            offset: pos,
            len: at - pos,
            reason,
        });
        pos = at;
        expected = seq;
    }
    scan.next_seq = expected;
    scan.tail = (pos < bytes.len()).then_some(pos);
    scan
}

/// The first position at or after `from` where a record of seq `expected..limit` starts (its
/// header at least intact).
fn find_next_record(
    bytes: &[u8],
    from: usize,
    version: u32,
    expected: u64,
    limit: u64,
) -> Option<(usize, u64)> {
    (from..bytes.len()).find_map(|at| {
        if le_u32(bytes, at) != Some(RECORD_MAGIC) {
            return None;
        }
        match parse_record(version, bytes.get(at..)?) {
            Parsed::Record { seq, .. }
            | Parsed::Damaged { seq, .. }
            | Parsed::Incomplete { seq: Some(seq) }
                if (expected..limit).contains(&seq) =>
            {
                Some((at, seq))
            }
            _ => None,
        }
    })
}

/// What a crash in the middle of an append leaves at the end of the last segment: fewer bytes
/// than a header, an intact header with a short payload, or zeros (a file length extended before
/// its data reached the disk).
fn tail_is_torn(version: u32, tail: &[u8]) -> bool {
    tail.iter().all(|&b| b == 0)
        || tail.len() < record_header_len(version)
        || matches!(parse_record(version, tail), Parsed::Incomplete { .. })
}

/// The highest seq of a record still recognisable in the bytes of a set-aside segment (either
/// format), at least `from`.
fn highest_record_seq(bytes: &[u8], from: u64) -> Option<u64> {
    // Seqs past what the file could hold are noise that happens to look like a header.
    let plausible = from..from.saturating_add(bytes.len() as u64 / 20 + 1);
    (0..bytes.len())
        .filter(|&at| le_u32(bytes, at) == Some(RECORD_MAGIC))
        .filter_map(|at| {
            let rest = bytes.get(at..)?;
            [FORMAT_VERSION, LEGACY_VERSION]
                .into_iter()
                .find_map(|version| match parse_record(version, rest) {
                    Parsed::Record { seq, .. }
                    | Parsed::Damaged { seq, .. }
                    | Parsed::Incomplete { seq: Some(seq) } => Some(seq),
                    _ => None,
                })
        })
        .filter(|seq| plausible.contains(seq))
        .max()
}

/// The segments that survived open and what they hold.
pub(super) struct Scanned {
    pub(super) segments: VecDeque<SpoolSegment>,
    pub(super) pending: VecDeque<PendingRecord>,
    pub(super) lost: VecDeque<LostBatches>,
    /// The seq after everything found on disk.
    pub(super) next_seq: u64,
    /// The last segment ends with its last record (after cutting a torn tail).
    pub(super) last_appendable: bool,
}

/// Collects what is above the cursor, in seq order.
struct Found<'a> {
    acked_through: u64,
    pending: VecDeque<PendingRecord>,
    lost: VecDeque<LostBatches>,
    recovery: &'a mut Recovery,
}

impl Found<'_> {
    fn lost(
        &mut self,
        first_seq: u64,
        last_seq: u64,
        raw: Option<(u64, u64, u64)>,
        reason: String,
    ) {
        let first_seq = first_seq.max(self.acked_through.saturating_add(1));
        if first_seq > last_seq {
            return;
        }
        let lost = LostBatches {
            first_seq,
            last_seq,
            raw,
            reason,
        };
        tracing::warn!(
            first = first_seq,
            last = last_seq,
            lost_batches = lost.count(),
            reason = %lost.reason,
            "spool: accepted batches are unreadable; they will be set aside as lost"
        );
        self.recovery.lost_batches += lost.count();
        self.lost.push_back(lost);
    }
}

/// Reads every segment, cutting a torn tail of the last one and setting aside those whose
/// header is unreadable, and indexes what is above `acked_through`.
fn scan_segments(
    segments_dir: &Path,
    listed: &[u64],
    acked_through: u64,
    recovery: &mut Recovery,
) -> Result<Scanned, SpoolError> {
    // Headers first, so that "the last segment" means the last one that can be read.
    let mut usable = Vec::with_capacity(listed.len());
    let mut set_aside: Vec<(u64, PathBuf)> = Vec::new();
    for &name in listed {
        let path = segment_path(segments_dir, name);
        let problem = match read_segment_header(&path)? {
            Ok((version, first_seq)) if first_seq == name => {
                usable.push((name, version));
                continue;
            }
            Ok(_) => "header names another seq",
            Err(Decode::Corrupt(reason)) => reason,
            Err(Decode::Version(found)) => {
                return Err(SpoolError::UnsupportedVersion {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        };
        set_aside.push((name, quarantine_segment(&path, problem, recovery)?));
    }

    let mut found = Found {
        acked_through,
        pending: VecDeque::new(),
        lost: VecDeque::new(),
        recovery,
    };
    // Seqs up to the cursor, or before the first segment (older ones were deleted once
    // acked), are legitimately gone; every seq after that is on disk or lost.
    let floor = acked_through.max(listed.first().map_or(0, |first| first - 1));
    let mut expected = floor.saturating_add(1);
    let mut segments: VecDeque<SpoolSegment> = VecDeque::with_capacity(usable.len());
    let mut last_appendable = false;
    for (index, &(first_seq, version)) in usable.iter().enumerate() {
        let path = segment_path(segments_dir, first_seq);
        if segments
            .back()
            .and_then(|prev| prev.last_seq)
            .is_some_and(|last| first_seq <= last)
        {
            // Not something this module writes.
            let aside = quarantine_segment(&path, "overlaps the previous segment", found.recovery)?;
            set_aside.push((first_seq, aside));
            continue;
        }
        if first_seq > expected {
            let reason = missing_reason(&set_aside, expected, first_seq);
            found.lost(expected, first_seq - 1, None, reason);
        }
        let is_last = index + 1 == usable.len();
        let limit = usable.get(index + 1).map_or(u64::MAX, |&(next, _)| next);
        let bytes = read_nofollow(&path).map_err(|source| SpoolError::Segment {
            path: path.clone(),
            op: "reading",
            source,
        })?;
        let scan = scan_segment(&bytes, version, first_seq, limit);
        let mut damaged = scan.damaged.iter().peekable();
        for &(seq, offset, len) in &scan.records {
            while let Some(damage) = damaged.next_if(|d| d.first_seq < seq) {
                record_damage(&mut found, &path, first_seq, damage);
            }
            if seq > acked_through {
                found.pending.push_back(PendingRecord {
                    seq,
                    segment: first_seq,
                    offset,
                    len,
                    version: version as u8,
                });
            }
        }
        for damage in damaged {
            record_damage(&mut found, &path, first_seq, damage);
        }

        let mut end_seq = scan.next_seq;
        let mut len = bytes.len() as u64;
        last_appendable = true;
        if let Some(at) = scan.tail {
            let tail = bytes.get(at..).unwrap_or_default();
            if is_last && tail_is_torn(version, tail) {
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    bytes = tail.len(),
                    "spool: cutting a torn record off the end of the last segment \
                     (an append that never returned)"
                );
                truncate_segment(&path, at as u64)?;
                found.recovery.truncated_bytes += tail.len() as u64;
                len = at as u64;
            } else {
                last_appendable = false;
                // Within the spool the next segment says exactly which seqs are missing; at
                // its very end, the highest seq of a record header still recognisable in the
                // unreadable bytes says how many there were (one when none is).
                // The tail may start at a damaged record already behind the cursor (a lost
                // batch set aside earlier): what follows it is then above the cursor, so count
                // at least one batch there. That over-counts by one when nothing follows, which
                // the spool prefers to an uncounted loss.
                let last = if is_last {
                    highest_record_seq(tail, end_seq)
                        .map_or(end_seq, |seq| seq.max(end_seq))
                        .max(found.acked_through.saturating_add(1))
                } else {
                    limit - 1
                };
                let reason = format!(
                    "unreadable bytes at the end of `{}` from offset {at}",
                    path.display()
                );
                if last >= end_seq {
                    let raw = Some((first_seq, at as u64, tail.len() as u64));
                    found.lost(end_seq, last, raw, reason);
                    end_seq = last.saturating_add(1);
                } else {
                    tracing::warn!("spool: {reason} hold no batch; ignored");
                }
            }
        }
        segments.push_back(SpoolSegment {
            first_seq,
            last_seq: (end_seq > first_seq).then(|| end_seq - 1),
            len,
            version,
        });
        expected = expected.max(end_seq);
    }

    // Segments set aside at the end of the spool: count what is still recognisable in them.
    set_aside.sort_unstable_by_key(|&(name, _)| name);
    for (name, aside) in &set_aside {
        if *name < expected {
            continue;
        }
        let bytes = read_nofollow(aside).unwrap_or_default();
        let end = highest_record_seq(&bytes, *name).map_or(*name, |seq| seq.saturating_add(1));
        if end > expected {
            let reason = format!(
                "in `{}`, set aside: its header is unreadable",
                aside.display()
            );
            found.lost(expected, end - 1, None, reason);
            expected = end;
            last_appendable = false;
        }
    }

    Ok(Scanned {
        segments,
        pending: found.pending,
        lost: found.lost,
        next_seq: expected,
        last_appendable,
    })
}

fn record_damage(found: &mut Found<'_>, path: &Path, segment: u64, damage: &Damage) {
    let reason = format!(
        "{} in `{}` at offset {}",
        damage.reason,
        path.display(),
        damage.offset
    );
    if damage.end_seq > damage.first_seq {
        let raw = Some((segment, damage.offset as u64, damage.len as u64));
        found.lost(damage.first_seq, damage.end_seq - 1, raw, reason);
    } else {
        tracing::warn!(
            bytes = damage.len,
            "spool: skipping unreadable bytes that hold no batch: {reason}"
        );
    }
}

/// Why seqs `from..to` are in no segment.
fn missing_reason(set_aside: &[(u64, PathBuf)], from: u64, to: u64) -> String {
    let aside: Vec<String> = set_aside
        .iter()
        .filter(|(name, _)| (from..to).contains(name))
        .map(|(_, path)| format!("`{}`", path.display()))
        .collect();
    if aside.is_empty() {
        "no segment file holds them (a segment was removed or cut short)".to_owned()
    } else {
        format!("in {}, set aside: header unreadable", aside.join(", "))
    }
}

/// Reads and checks a segment header. The outer error is I/O; a short file is corrupt.
fn read_segment_header(path: &Path) -> Result<Result<(u32, u64), Decode>, SpoolError> {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let mut file = open_nofollow(path, false).map_err(|source| SpoolError::Segment {
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
/// to look at, and no longer read. Returns the new path.
fn quarantine_segment(
    path: &Path,
    reason: &str,
    recovery: &mut Recovery,
) -> Result<PathBuf, SpoolError> {
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
    Ok(PathBuf::from(target))
}

fn truncate_segment(path: &Path, len: u64) -> Result<(), SpoolError> {
    open_nofollow(path, true)
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
        if is_leftover_of(name, |segment| segment_name(segment).is_some()) {
            // Never renamed into place, so never held an accepted batch.
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if let Some(seq) = segment_name(name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// `<20 digits>.seg` → the seq it names (never 0).
fn segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().filter(|&seq| seq > 0)
}
