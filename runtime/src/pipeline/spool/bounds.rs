//! What leaves the queue other than by an ack or a rejection: the oldest batches dropped
//! beyond `max_bytes` or on a full disk, unreadable batches set aside as lost, and dead letters
//! removed by the dead-letter bounds. Each is counted in the state files and logged with its
//! reason; none of them may stop delivery or need new disk space to move the cursor.

use std::path::PathBuf;

use super::dead_letter::{Content, RAW_SUFFIX, REASON_SUFFIX};
use super::format::Counters;
use super::queue::unix_now;
use super::segments::remove_segment_file;
use super::*;

impl Spool {
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
    pub(super) fn free_space_for_append(&mut self) -> Result<bool, SpoolError> {
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

    /// Removes the run of lost batches at the front of the queue: their raw bytes and the
    /// reason go to `dead-letter/<first seq>.corrupt` and `.reason.txt` when `keep_bytes` (a
    /// copy that cannot be written is logged, never a reason to stop), then the cursor moves
    /// past them and they are counted.
    pub(super) fn set_aside_lost(&mut self, keep_bytes: bool) -> Result<(), SpoolError> {
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
    pub(super) fn write_dead_letter(
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
}
