//! The queue operations of an open spool: append, oldest, ack, dead letter, and the bounds
//! (`max_bytes`, a full disk, the dead-letter directory). Every removal is one in-place store
//! of the cursor, done before the memory state changes, so a failed store leaves the spool as
//! it was. Nothing here may block the batches behind an unreadable one.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::dead_letter::{Content, JSON_SUFFIX, RAW_SUFFIX, REASON_SUFFIX};
use super::files::{open_nofollow, sync_dir, truncate_durably, write_replacing};
use super::format::{
    Counters, Cursor, Parsed, SEGMENT_HEADER_LEN, encode_record, encode_segment_header,
    parse_record, record_header_len,
};
use super::*;

impl Spool {
    /// Durably appends one batch and returns its id. When this returns `Ok`, the batch is on
    /// disk (fsynced) and survives a crash. To stay within `max_bytes`, the oldest pending
    /// batches are dropped first (counted and logged); a batch larger than `max_bytes` is
    /// refused with [`SpoolError::BatchTooLarge`]. On a full disk the pending batches of the
    /// oldest segment are dropped (counted, logged with reason "disk full") until the batch
    /// fits, and [`SpoolError::DiskFull`] is returned only when nothing is left to drop.
    pub fn append(&mut self, batch: &[u8]) -> Result<BatchId, SpoolError> {
        let size = batch.len() as u64;
        // The record stores the length in a u32.
        let max = self.options.max_bytes.min(u64::from(u32::MAX));
        if size > max {
            return Err(SpoolError::BatchTooLarge { size, max });
        }
        self.make_room(size)?;
        loop {
            match self.try_append(batch) {
                Ok(id) => return Ok(id),
                Err(e) if e.is_disk_full() => {
                    if !self.free_space_for_append()? {
                        return Err(SpoolError::DiskFull {
                            path: self.dir.clone(),
                            size,
                            source: io::Error::new(io::ErrorKind::StorageFull, e.to_string()),
                        });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The oldest pending batch, which is the only one the sender may send next. Batches that
    /// can no longer be read are set aside on the way (their bytes to `dead-letter/`, counted
    /// in [`SpoolStats::lost_batches`]) and the next one is returned, so an unreadable batch
    /// never blocks delivery. An error is an I/O failure to retry later; after
    /// `MAX_READ_ATTEMPTS` of them in a row the batch is set aside too.
    pub fn oldest(&mut self) -> Result<Option<(BatchId, Vec<u8>)>, SpoolError> {
        self.prune_dead_letters()?;
        loop {
            if self.lost_is_next() {
                self.set_aside_lost(true)?;
                continue;
            }
            let Some(record) = self.pending.front().copied() else {
                return Ok(None);
            };
            match self.read_record(&record) {
                Ok(payload) => {
                    self.read_failures = 0;
                    return Ok(Some((BatchId(record.seq), payload)));
                }
                Err(ReadError::Unreadable(reason)) => {
                    self.lose_oldest(record, reason.to_owned())?
                }
                Err(ReadError::Io(source)) => {
                    self.read_failures += 1;
                    if self.read_failures < MAX_READ_ATTEMPTS {
                        return Err(SpoolError::Segment {
                            path: segment_path(&self.segments_dir, record.segment),
                            op: "reading a record",
                            source,
                        });
                    }
                    let reason = format!("reading it failed {MAX_READ_ATTEMPTS} times: {source}");
                    self.lose_oldest(record, reason)?;
                }
            }
        }
    }

    /// Every pending batch that can be read, oldest first, read from disk one at a time (lost
    /// batches waiting to be set aside are not listed).
    pub fn pending(&self) -> impl Iterator<Item = Result<(BatchId, Vec<u8>), SpoolError>> + '_ {
        self.pending.iter().map(|record| {
            let path = segment_path(&self.segments_dir, record.segment);
            match self.read_record(record) {
                Ok(payload) => Ok((BatchId(record.seq), payload)),
                Err(ReadError::Unreadable(reason)) => Err(SpoolError::CorruptRecord {
                    path,
                    id: BatchId(record.seq),
                    offset: record.offset,
                    reason,
                }),
                Err(ReadError::Io(source)) => Err(SpoolError::Segment {
                    path,
                    op: "reading a record",
                    source,
                }),
            }
        })
    }

    /// Removes the oldest pending batch after the backend accepted it. Durable when this
    /// returns, and needs no new disk space. Acks must come in order: acking anything but the
    /// oldest batch is an error.
    pub fn ack(&mut self, id: BatchId) -> Result<(), SpoolError> {
        self.set_aside_lost_before(id)?;
        self.check_oldest(id)?;
        self.commit(id.0, self.cursor.counters)
    }

    /// Sets the oldest pending batch aside after the backend rejected it as invalid, so that it
    /// no longer blocks the batches behind it: writes it verbatim to `dead-letter/<id>.json`
    /// and the reason to `dead-letter/<id>.reason.txt` (both fsynced; on a full disk the
    /// oldest dead letters make room), then removes it. Returns the path of the `.json` file.
    /// A batch that can no longer be read is still removed, with the read error added to the
    /// reason.
    pub fn dead_letter(&mut self, id: BatchId, reason: &str) -> Result<PathBuf, SpoolError> {
        self.set_aside_lost_before(id)?;
        let record = self.check_oldest(id)?;
        let (payload, read_problem) = match self.read_raw(&record) {
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
        let mut text = format!(
            "batch: {id}\ndead-lettered at (unix seconds): {}\nreason: {reason}\n",
            unix_now()
        );
        if let Some(problem) = &read_problem {
            text.push_str(&format!("note: {problem}\n"));
        }
        let mut files = Vec::with_capacity(2);
        if let Some(payload) = &payload {
            files.push((JSON_SUFFIX, Content::Bytes(payload)));
        }
        files.push((REASON_SUFFIX, Content::Bytes(text.as_bytes())));
        self.write_dead_letter(id.0, &files)?;
        let json_path = self.dead_letters.path(id.0, JSON_SUFFIX);
        tracing::warn!(
            batch = %id,
            file = %json_path.display(),
            reason,
            "spool: batch moved to the dead-letter directory"
        );
        let counters = Counters {
            dead_lettered_batches: self.cursor.counters.dead_lettered_batches + 1,
            ..self.cursor.counters
        };
        self.commit(id.0, counters)?;
        self.prune_dead_letters()?;
        Ok(json_path)
    }

    pub fn stats(&self) -> SpoolStats {
        let c = &self.cursor.counters;
        SpoolStats {
            pending_batches: self.pending.len() as u64,
            pending_bytes: self.pending_bytes,
            dropped_batches: c.dropped_batches,
            dropped_bytes: c.dropped_bytes,
            dropped_for_disk_full: c.dropped_for_disk_full,
            dead_lettered_batches: c.dead_lettered_batches,
            lost_batches: c.lost_batches,
            dead_letters_removed: c.dead_letters_removed,
            cursor_losses: c.cursor_losses,
        }
    }

    /// Pending batches that can be sent (lost ones waiting to be set aside excluded).
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

    /// Whether the next entry of the queue is a run of lost batches.
    fn lost_is_next(&self) -> bool {
        self.lost.front().is_some_and(|lost| {
            self.pending
                .front()
                .is_none_or(|record| lost.first_seq < record.seq)
        })
    }

    /// Sets aside the lost batches at the front that come before `id` (never past a pending
    /// batch: the cursor only moves past the front).
    fn set_aside_lost_before(&mut self, id: BatchId) -> Result<(), SpoolError> {
        while self.lost_is_next() && self.lost.front().is_some_and(|lost| lost.first_seq < id.0) {
            self.set_aside_lost(true)?;
        }
        Ok(())
    }

    /// Turns the oldest pending batch, found unreadable, into a lost one and sets it aside.
    fn lose_oldest(&mut self, record: PendingRecord, reason: String) -> Result<(), SpoolError> {
        let len = record_header_len(u32::from(record.version)) as u64 + u64::from(record.len);
        self.lost.push_front(LostBatches {
            first_seq: record.seq,
            last_seq: record.seq,
            raw: Some((record.segment, record.offset, len)),
            reason: format!(
                "{reason} in `{}` at offset {}",
                segment_path(&self.segments_dir, record.segment).display(),
                record.offset
            ),
        });
        self.read_failures = 0;
        self.set_aside_lost(true)
    }

    /// Removes the run of lost batches at the front of the queue: their raw bytes and the
    /// reason go to `dead-letter/<first seq>.corrupt` and `.reason.txt` when `keep_bytes` (a
    /// copy that cannot be written is logged, never a reason to stop), then the cursor moves
    /// past them and they are counted.
    fn set_aside_lost(&mut self, keep_bytes: bool) -> Result<(), SpoolError> {
        let Some(lost) = self.lost.front().cloned() else {
            return Ok(());
        };
        let kept = if keep_bytes {
            self.keep_lost(&lost)
        } else {
            None
        };
        let counters = Counters {
            lost_batches: self.cursor.counters.lost_batches + lost.count(),
            ..self.cursor.counters
        };
        self.commit(lost.last_seq, counters)?;
        tracing::warn!(
            first = lost.first_seq,
            last = lost.last_seq,
            lost_batches = lost.count(),
            kept = %kept.as_deref().map_or("nothing (see above)".into(), |p| p.display().to_string()),
            reason = %lost.reason,
            "spool: unreadable batches set aside as lost; delivery goes on"
        );
        self.prune_dead_letters()
    }

    /// Writes the dead letter of a run of lost batches: their raw bytes (when there are any)
    /// and the reason; when the bytes cannot be copied, the reason alone with why. Returns the
    /// reason file's path, or `None` (logged) when nothing could be written.
    fn keep_lost(&mut self, lost: &LostBatches) -> Option<PathBuf> {
        let text = format!(
            "batches: {first:020} to {last:020} ({count})\nset aside at (unix seconds): {}\n\
             reason: unreadable: {}\n",
            unix_now(),
            lost.reason,
            first = lost.first_seq,
            last = lost.last_seq,
            count = lost.count(),
        );
        let reason = (REASON_SUFFIX, Content::Bytes(text.as_bytes()));
        let written = match lost.raw {
            Some((segment, offset, len)) => {
                let from = segment_path(&self.segments_dir, segment);
                let raw = (
                    RAW_SUFFIX,
                    Content::Copy {
                        from: &from,
                        offset,
                        len,
                    },
                );
                self.write_dead_letter(lost.first_seq, &[raw, reason])
                    .or_else(|e| {
                        let text = format!("{text}note: its bytes could not be kept: {e}\n");
                        let reason = (REASON_SUFFIX, Content::Bytes(text.as_bytes()));
                        self.write_dead_letter(lost.first_seq, &[reason])
                    })
            }
            None => self.write_dead_letter(lost.first_seq, &[reason]),
        };
        match written {
            Ok(()) => Some(self.dead_letters.path(lost.first_seq, REASON_SUFFIX)),
            Err(e) => {
                tracing::error!(
                    "spool: cannot write the dead letter of unreadable batches {} to {}: {e}",
                    lost.first_seq,
                    lost.last_seq
                );
                None
            }
        }
    }

    /// Writes a dead letter; on a full disk the oldest dead letters are removed (counted, and
    /// persisted by the commit that follows) until it fits or none is left.
    fn write_dead_letter(
        &mut self,
        seq: u64,
        files: &[(&'static str, Content<'_>)],
    ) -> Result<(), SpoolError> {
        loop {
            match self.dead_letters.write(seq, files) {
                Err(e) if e.is_disk_full() && self.dead_letters.remove_oldest_for_room() => {
                    self.cursor.counters.dead_letters_removed += 1;
                }
                result => return result,
            }
        }
    }

    /// Applies the dead-letter bounds (age, size) and persists the count of what went.
    pub(super) fn prune_dead_letters(&mut self) -> Result<(), SpoolError> {
        let removed = self.dead_letters.prune();
        if removed > 0 {
            let counters = Counters {
                dead_letters_removed: self.cursor.counters.dead_letters_removed + removed,
                ..self.cursor.counters
            };
            self.commit(self.cursor.acked_through, counters)?;
        }
        Ok(())
    }

    /// Persists a new cursor (in place: no new disk space), then forgets what it moved past.
    /// The counters file is written too when the counters changed; its failure is only logged,
    /// as the cursor holds the counters as well.
    fn commit(&mut self, acked_through: u64, counters: Counters) -> Result<(), SpoolError> {
        let cursor = Cursor {
            acked_through,
            counters,
        };
        self.cursor_file.store(&cursor)?;
        if counters != self.counters_stored {
            match self.counters_file.store(&cursor) {
                Ok(()) => self.counters_stored = counters,
                Err(e) => tracing::warn!("spool: {e} (the cursor holds the counters too)"),
            }
        }
        self.cursor = cursor;
        while let Some(record) = self.pending.front()
            && record.seq <= acked_through
        {
            self.pending_bytes -= u64::from(record.len);
            self.pending.pop_front();
        }
        while let Some(lost) = self.lost.front_mut()
            && lost.first_seq <= acked_through
        {
            if lost.last_seq <= acked_through {
                self.lost.pop_front();
            } else {
                lost.first_seq = acked_through + 1;
            }
        }
        self.remove_acked_segments();
        Ok(())
    }

    /// Stores `cursor` in both state files (at open).
    pub(super) fn store_state(&mut self, cursor: Cursor) -> Result<(), SpoolError> {
        self.cursor_file.store(&cursor)?;
        self.counters_file.store(&cursor)?;
        self.cursor = cursor;
        self.counters_stored = cursor.counters;
        Ok(())
    }

    /// Drops the oldest pending batches until `incoming` more bytes fit within `max_bytes`.
    /// Returns how many batches and bytes were dropped.
    pub(super) fn make_room(&mut self, incoming: u64) -> Result<(u64, u64), SpoolError> {
        let mut excess = (self.pending_bytes + incoming).saturating_sub(self.options.max_bytes);
        let mut through = None;
        for record in &self.pending {
            if excess == 0 {
                break;
            }
            through = Some(record.seq);
            excess = excess.saturating_sub(u64::from(record.len));
        }
        let Some(through) = through else {
            return Ok((0, 0));
        };
        let (count, bytes) = self.drop_through(through, false)?;
        tracing::warn!(
            dropped_batches = count,
            dropped_bytes = bytes,
            max_bytes = self.options.max_bytes,
            reason = "spool full",
            "spool: dropped the oldest batches"
        );
        Ok((count, bytes))
    }

    /// Drops every pending batch up to seq `through`, oldest first, counting them; lost
    /// batches among them are set aside (their bytes kept unless the disk is full). Returns how
    /// many batches and bytes were dropped.
    fn drop_through(&mut self, through: u64, disk_full: bool) -> Result<(u64, u64), SpoolError> {
        let (mut total, mut total_bytes) = (0u64, 0u64);
        loop {
            while self.lost_is_next() && self.lost.front().is_some_and(|l| l.first_seq <= through) {
                self.set_aside_lost(!disk_full)?;
            }
            let stop = self
                .lost
                .front()
                .map_or(through, |l| through.min(l.first_seq));
            let (mut count, mut bytes, mut last) = (0u64, 0u64, None);
            for record in self.pending.iter().take_while(|r| r.seq <= stop) {
                count += 1;
                bytes += u64::from(record.len);
                last = Some(record.seq);
            }
            let Some(last) = last else {
                return Ok((total, total_bytes));
            };
            let c = self.cursor.counters;
            let counters = Counters {
                dropped_batches: c.dropped_batches + count,
                dropped_bytes: c.dropped_bytes + bytes,
                dropped_for_disk_full: c.dropped_for_disk_full + if disk_full { count } else { 0 },
                ..c
            };
            self.commit(last, counters)?;
            total += count;
            total_bytes += bytes;
        }
    }

    /// After an append failed for lack of disk space: frees a segment file, dropping the
    /// pending batches of the oldest segment if need be. Returns false when nothing is left to
    /// free.
    fn free_space_for_append(&mut self) -> Result<bool, SpoolError> {
        let before = self.segments.len();
        // A fully acked segment whose deletion failed earlier.
        self.remove_acked_segments();
        if self.segments.len() < before {
            return Ok(true);
        }
        let acked = self.cursor.acked_through;
        let oldest_pending = self.segments.iter().find_map(|s| {
            s.last_seq
                .filter(|&last| last > acked)
                .map(|last| (s.first_seq, last))
        });
        if let Some((first_seq, last)) = oldest_pending {
            let (count, bytes) = self.drop_through(last, true)?;
            tracing::warn!(
                dropped_batches = count,
                dropped_bytes = bytes,
                segment = %segment_path(&self.segments_dir, first_seq).display(),
                reason = "disk full",
                "spool: dropped the oldest batches to make room on a full disk"
            );
            // The cursor moved: progress. A sealed segment went with the commit (or its
            // deletion is retried next time); the active one is deleted below.
            let is_active = self.active.is_some()
                && self
                    .segments
                    .back()
                    .is_some_and(|s| s.first_seq == first_seq);
            if !is_active {
                return Ok(true);
            }
        }
        if self.active.is_some()
            && let [only] = self.segments.make_contiguous()
            && only
                .last_seq
                .is_some_and(|last| last <= self.cursor.acked_through)
        {
            // It holds records, all gone: delete it; the next append starts a new one. (One
            // holding none frees nothing that a new one would not take again.)
            let path = segment_path(&self.segments_dir, only.first_seq);
            self.active = None;
            self.segments.clear();
            return Ok(remove_segment_file(&path));
        }
        Ok(false)
    }

    /// One attempt at writing a record to the active segment (started first when needed).
    fn try_append(&mut self, batch: &[u8]) -> Result<BatchId, SpoolError> {
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
        // One write, so that a crash tears at most this record; fdatasync also persists the
        // new file length, which is all the metadata a reader needs.
        if let Err(source) = active
            .file
            .write_all(&record)
            .and_then(|()| active.file.sync_data())
        {
            active.dirty = true;
            if truncate_durably(&active.file, segment.len).is_ok() {
                active.dirty = false;
            }
            return Err(SpoolError::Segment {
                path: segment_path(&self.segments_dir, segment.first_seq),
                op: "appending a record",
                source,
            });
        }
        self.pending.push_back(PendingRecord {
            seq,
            segment: segment.first_seq,
            offset: segment.len,
            len: batch.len() as u32,
            version: FORMAT_VERSION as u8,
        });
        segment.len += record_len;
        segment.last_seq = Some(seq);
        self.pending_bytes += batch.len() as u64;
        self.next_seq += 1;
        Ok(BatchId(seq))
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
            .custom_flags(libc::O_NOFOLLOW)
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
            version: FORMAT_VERSION,
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

    /// Deletes sealed segments whose records are all gone. A failure is only logged: the file
    /// is retried later and ignored by open meanwhile (its records are at or below the cursor).
    pub(super) fn remove_acked_segments(&mut self) {
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

    /// Reads one pending batch's payload, checked.
    fn read_record(&self, record: &PendingRecord) -> Result<Vec<u8>, ReadError> {
        match self.read_raw(record)? {
            (payload, None) => Ok(payload),
            (_, Some(reason)) => Err(ReadError::Unreadable(reason)),
        }
    }

    /// Reads one record's payload as it is on disk, with what is wrong with it if anything.
    fn read_raw(
        &self,
        record: &PendingRecord,
    ) -> Result<(Vec<u8>, Option<&'static str>), ReadError> {
        let path = segment_path(&self.segments_dir, record.segment);
        let version = u32::from(record.version);
        let header_len = record_header_len(version);
        let mut bytes = vec![0u8; header_len + record.len as usize];
        open_nofollow(&path, false)
            .and_then(|mut file| {
                file.seek(SeekFrom::Start(record.offset))?;
                file.read_exact(&mut bytes)
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ReadError::Unreadable("its segment file is gone"),
                io::ErrorKind::UnexpectedEof => {
                    ReadError::Unreadable("its segment file was cut short")
                }
                _ => ReadError::Io(e),
            })?;
        let problem = match parse_record(version, &bytes) {
            Parsed::Record { seq, payload }
                if seq == record.seq && payload.len() == record.len as usize =>
            {
                None
            }
            Parsed::Record { .. } => Some("unexpected seq or length"),
            Parsed::Damaged { .. } => Some("payload checksum mismatch"),
            Parsed::Incomplete { .. } => Some("unexpected length"),
            Parsed::Invalid(reason) => Some(reason),
        };
        bytes.drain(..header_len);
        Ok((bytes, problem))
    }
}

/// Why a pending batch could not be read.
enum ReadError {
    /// For good: its bytes are damaged or gone.
    Unreadable(&'static str),
    /// An I/O error that may pass.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Unreadable(reason) => f.write_str(reason),
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deletes a segment file; returns false (after logging) when it could not be.
pub(super) fn remove_segment_file(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), "spool: cannot delete an acked segment: {e}");
            false
        }
    }
}
