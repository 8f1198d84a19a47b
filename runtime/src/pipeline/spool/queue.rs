//! The queue operations of an open spool: append, oldest, ack, dead letter and the bounds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::files::{sync_dir, truncate_durably, write_replacing};
use super::format::{
    Cursor, Parsed, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_record, encode_segment_header,
    parse_record,
};
use super::*;

impl Spool {
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
    pub(super) fn make_room(&mut self, incoming: u64) -> Result<(u64, u64), SpoolError> {
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
    /// Deletes sealed segments whose records are all acked. A failure is only logged: the file
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
pub(super) fn read_record(
    path: &Path,
    record: &PendingRecord,
) -> io::Result<(Vec<u8>, Option<&'static str>)> {
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

pub(super) fn store_cursor(dir: &Path, cursor: &Cursor) -> Result<(), SpoolError> {
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
