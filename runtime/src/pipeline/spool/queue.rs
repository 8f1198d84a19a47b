//! The queue operations of an open spool: append, oldest, ack, dead letter, and the one place
//! where removals reach the disk (`commit`). Every removal is one in-place store of the cursor,
//! done before the memory state changes, so a failed store leaves the spool as it was. Nothing
//! here may block the batches behind an unreadable one. The bounds are in `bounds`, the
//! segment files in `segments`.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::dead_letter::{Content, JSON_SUFFIX, REASON_SUFFIX};
use super::files::open_nofollow;
use super::format::{Counters, Cursor, Parsed, parse_record, record_header_len};
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

    /// The oldest pending batch and the ones right behind it, for one push: at most `max_batches`
    /// of them and, past the first, at most `max_bytes` of payload in all. The first is what
    /// [`Spool::oldest`] returns (unreadable batches set aside on the way). The run stops before
    /// a batch that cannot be read or that follows a lost batch, so acking the whole run with
    /// [`Spool::ack_through`] never moves the cursor past a batch that was not in it.
    pub fn oldest_run(
        &mut self,
        max_batches: usize,
        max_bytes: usize,
    ) -> Result<Vec<(BatchId, Vec<u8>)>, SpoolError> {
        let Some(first) = self.oldest()? else {
            return Ok(Vec::new());
        };
        let mut bytes = first.1.len();
        let mut run = vec![first];
        for record in self.pending.iter().skip(1) {
            let lost_before = self
                .lost
                .front()
                .is_some_and(|lost| lost.first_seq < record.seq);
            if run.len() >= max_batches || bytes + record.len as usize > max_bytes || lost_before {
                break;
            }
            match self.read_record(record) {
                Ok(payload) => {
                    bytes += payload.len();
                    run.push((BatchId(record.seq), payload));
                }
                // Left for `oldest` to set aside once it is the oldest.
                Err(_) => break,
            }
        }
        Ok(run)
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

    /// Removes the pending batches from the oldest through `last` after the backend accepted
    /// them in one push (a run from [`Spool::oldest_run`]): one durable store of the cursor.
    /// `last` must be pending, and no lost batch may come before it (those are set aside
    /// one by one, never acked).
    pub fn ack_through(&mut self, last: BatchId) -> Result<(), SpoolError> {
        let Some(oldest) = self.pending.front().map(|record| BatchId(record.seq)) else {
            return Err(SpoolError::NothingPending { id: last });
        };
        self.set_aside_lost_before(oldest)?;
        let lost_in_run = self
            .lost
            .front()
            .is_some_and(|lost| lost.first_seq <= last.0);
        if lost_in_run || !self.pending.iter().any(|record| record.seq == last.0) {
            return Err(SpoolError::OutOfOrder { id: last, oldest });
        }
        self.commit(last.0, self.cursor.counters)
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
    pub(super) fn lost_is_next(&self) -> bool {
        self.lost.front().is_some_and(|lost| {
            self.pending
                .front()
                .is_none_or(|record| lost.first_seq < record.seq)
        })
    }

    /// Sets aside the lost batches at the front that come before `id` (never past a pending
    /// batch: the cursor only moves past the front).
    pub(super) fn set_aside_lost_before(&mut self, id: BatchId) -> Result<(), SpoolError> {
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

    /// Persists a new cursor (in place: no new disk space), then forgets what it moved past.
    /// The counters file is written too when the counters changed; its failure is only logged,
    /// as the cursor holds the counters as well.
    pub(super) fn commit(
        &mut self,
        acked_through: u64,
        counters: Counters,
    ) -> Result<(), SpoolError> {
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

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
