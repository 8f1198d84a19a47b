//! The dead-letter directory: batches the backend rejected (`<seq>.json`), the raw bytes of
//! batches that could no longer be read (`<seq>.corrupt`), each with `<seq>.reason.txt`. It is
//! bounded by total size and by age; the oldest entries are removed first, counted and logged.
//!
//! It must never remove anything it did not write: only regular files named
//! `<20 digits><known suffix>` are indexed (foreign files and symlinks are left alone, and a
//! symlink is never written through), and never let a full directory block delivery.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::SpoolError;
use super::files::{is_leftover_of, open_nofollow, sync_dir, write_replacing_with};

/// A batch the backend rejected, verbatim.
pub(super) const JSON_SUFFIX: &str = ".json";
/// The bytes found on disk where batches could no longer be read.
pub(super) const RAW_SUFFIX: &str = ".corrupt";
/// Why the entry was written.
pub(super) const REASON_SUFFIX: &str = ".reason.txt";
const SUFFIXES: [&str; 3] = [JSON_SUFFIX, RAW_SUFFIX, REASON_SUFFIX];

/// One dead letter: the files that share its seq.
#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    /// Modification time of its newest file.
    written: SystemTime,
    /// Which of [`SUFFIXES`] exist, as bits.
    files: u8,
}

/// What one file of a dead letter holds.
pub(super) enum Content<'a> {
    Bytes(&'a [u8]),
    /// `len` bytes of another file from `offset`, streamed (they may be as large as a segment).
    Copy {
        from: &'a Path,
        offset: u64,
        len: u64,
    },
}

#[derive(Debug)]
pub(super) struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    entries: BTreeMap<u64, Entry>,
    total_bytes: u64,
}

impl DeadLetters {
    /// Indexes the directory and removes the temp files of dead letters whose writing a crash
    /// interrupted (their batch was not removed, so it is written again).
    pub(super) fn open(
        dir: &Path,
        max_bytes: u64,
        max_age: Duration,
    ) -> Result<DeadLetters, SpoolError> {
        let mut letters = DeadLetters {
            dir: dir.to_owned(),
            max_bytes,
            max_age,
            entries: BTreeMap::new(),
            total_bytes: 0,
        };
        let list_error = |source| SpoolError::Dir {
            path: dir.to_owned(),
            op: "listing",
            source,
        };
        for entry in fs::read_dir(dir).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_leftover_of(name, |stem| parse_name(stem).is_some()) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, suffix)) = parse_name(name) else {
                continue;
            };
            // `DirEntry::metadata` does not follow symlinks.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                letters.add_file(seq, suffix, meta.len(), meta.modified().ok());
            }
        }
        Ok(letters)
    }

    pub(super) fn path(&self, seq: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{seq:020}{suffix}"))
    }

    /// The highest seq with a dead letter: seqs are never reused below it.
    pub(super) fn highest_seq(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }

    fn add_file(&mut self, seq: u64, suffix: usize, len: u64, modified: Option<SystemTime>) {
        let written = modified.unwrap_or_else(SystemTime::now);
        let entry = self.entries.entry(seq).or_insert(Entry {
            bytes: 0,
            written,
            files: 0,
        });
        entry.bytes += len;
        entry.written = entry.written.max(written);
        entry.files |= 1 << suffix;
        self.total_bytes += len;
    }

    /// Writes the files of the dead letter `seq` (each replaced atomically, so a crash leaves
    /// the old file or the new one), then fsyncs the directory.
    pub(super) fn write(
        &mut self,
        seq: u64,
        files: &[(&'static str, Content<'_>)],
    ) -> Result<(), SpoolError> {
        let result = self.write_files(seq, files);
        // Index what is on disk now, whether or not every file made it.
        self.forget(seq);
        for (index, suffix) in SUFFIXES.iter().enumerate() {
            if let Ok(meta) = fs::symlink_metadata(self.path(seq, suffix))
                && meta.is_file()
            {
                self.add_file(seq, index, meta.len(), meta.modified().ok());
            }
        }
        result
    }

    fn write_files(
        &self,
        seq: u64,
        files: &[(&'static str, Content<'_>)],
    ) -> Result<(), SpoolError> {
        for (suffix, content) in files {
            let path = self.path(seq, suffix);
            let written = write_replacing_with(&path, |file| match content {
                Content::Bytes(bytes) => io::Write::write_all(file, bytes),
                Content::Copy { from, offset, len } => {
                    let mut source = open_nofollow(from, false)?;
                    source.seek(SeekFrom::Start(*offset))?;
                    io::copy(&mut io::Read::take(source, *len), file).map(drop)
                }
            });
            written.map_err(|(op, source)| SpoolError::DeadLetter { path, op, source })?;
        }
        sync_dir(&self.dir).map_err(|source| SpoolError::Dir {
            path: self.dir.clone(),
            op: "fsync",
            source,
        })
    }

    /// Removes the entries older than the age bound, then the oldest ones while the total is
    /// over the size bound; the newest entry always stays, so the latest rejection can be read
    /// even when it alone is over the bound. Returns how many entries were removed.
    pub(super) fn prune(&mut self) -> u64 {
        let now = SystemTime::now();
        let (mut by_age, mut by_size, mut bytes) = (0u64, 0u64, 0u64);
        while let Some((&seq, entry)) = self.entries.first_key_value() {
            let expired = now
                .duration_since(entry.written)
                .is_ok_and(|age| age > self.max_age);
            let over = self.total_bytes > self.max_bytes && self.entries.len() > 1;
            if !expired && !over {
                break;
            }
            bytes += entry.bytes;
            if expired {
                by_age += 1;
            } else {
                by_size += 1;
            }
            self.remove(seq);
        }
        if by_age + by_size > 0 {
            tracing::warn!(
                removed = by_age + by_size,
                older_than_max_age = by_age,
                over_max_bytes = by_size,
                bytes,
                max_age_days = self.max_age.as_secs() / 86_400,
                max_bytes = self.max_bytes,
                dir = %self.dir.display(),
                "spool: removed the oldest dead letters (over the dead-letter bounds)"
            );
        }
        by_age + by_size
    }

    /// Removes the oldest entry to make room on a full disk; returns false when there is none.
    pub(super) fn remove_oldest_for_room(&mut self) -> bool {
        let Some((&seq, entry)) = self.entries.first_key_value() else {
            return false;
        };
        tracing::warn!(
            batch = %format!("{seq:020}"),
            bytes = entry.bytes,
            dir = %self.dir.display(),
            reason = "disk full",
            "spool: removed the oldest dead letter to make room for a new one"
        );
        self.remove(seq);
        true
    }

    /// Deletes the files of one entry. A file that cannot be deleted is logged and forgotten
    /// until the next open, rather than tried again on every call.
    fn remove(&mut self, seq: u64) {
        let Some(entry) = self.entries.get(&seq).copied() else {
            return;
        };
        for (index, suffix) in SUFFIXES.iter().enumerate() {
            if entry.files & (1 << index) == 0 {
                continue;
            }
            let path = self.path(seq, suffix);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), "spool: cannot remove a dead letter: {e}");
                }
            }
        }
        self.forget(seq);
    }

    fn forget(&mut self, seq: u64) {
        if let Some(entry) = self.entries.remove(&seq) {
            self.total_bytes -= entry.bytes;
        }
    }
}

/// `<20 digits><suffix>` → the seq and the index of the suffix in [`SUFFIXES`].
fn parse_name(name: &str) -> Option<(u64, usize)> {
    let digits = name.get(..20)?;
    let suffix = name.get(20..)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = SUFFIXES.iter().position(|s| *s == suffix)?;
    Some((digits.parse().ok()?, index))
}
