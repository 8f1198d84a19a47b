//! The segment files: appending a record to the active segment, starting a new one, cutting
//! off what a failed append left, and deleting segments once everything in them is gone. A
//! record is written with one `write` and fsynced before it counts, and a segment is never
//! deleted while it holds a pending or unsettled batch.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::files::{sync_dir, truncate_durably, write_replacing};
use super::format::{SEGMENT_HEADER_LEN, encode_record, encode_segment_header};
use super::*;

impl Spool {
    /// One attempt at writing a record to the active segment (started first when needed).
    pub(super) fn try_append(&mut self, batch: &[u8]) -> Result<BatchId, SpoolError> {
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
