//! The cursor and counters files: two checksummed slots each, rewritten in place, so that
//! removing a batch needs no new disk space (a full disk must not stop acks). A store writes
//! one slot, the older one, and never the slot holding the last good state: a write torn by a
//! crash leaves the other slot valid, and open takes the newest valid slot. A file is only ever
//! created whole (temp file, rename), so its blocks exist before the first in-place write.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::files::{open_nofollow, sync_dir, write_replacing};
use super::format::{Cursor, Decode, DecodedState, SLOT_STRIDE, decode_state, encode_slot};
use super::{FORMAT_VERSION, SpoolError};

/// What a state file held at open.
#[derive(Debug)]
pub(super) enum Loaded {
    Missing,
    /// Both slots (or the version 1 file) unreadable.
    Corrupt(&'static str),
    Found(DecodedState),
}

impl Loaded {
    pub(super) fn cursor(&self) -> Option<Cursor> {
        match self {
            Loaded::Found(state) => Some(state.cursor),
            _ => None,
        }
    }
}

/// Reads a state file; a newer format version is refused.
pub(super) fn load(path: &Path, magic: u32) -> Result<Loaded, SpoolError> {
    let bytes = match super::files::read_nofollow(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(SpoolError::State {
                path: path.to_owned(),
                op: "reading",
                source,
            });
        }
    };
    match decode_state(magic, &bytes) {
        Ok(state) => {
            if let Some(why) = state.damaged_slot {
                // The other slot is the state before the last store, or the same state: at
                // worst the last removal is undone, and its batch is sent again.
                tracing::warn!(
                    file = %path.display(),
                    reason = why,
                    "spool: one slot of a state file is unreadable (a torn write); using the other"
                );
            }
            Ok(Loaded::Found(state))
        }
        Err(Decode::Version(found)) => Err(SpoolError::UnsupportedVersion {
            path: path.to_owned(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(Decode::Corrupt(why)) => Ok(Loaded::Corrupt(why)),
    }
}

/// An open state file, written in place.
#[derive(Debug)]
pub(super) struct StateFile {
    path: PathBuf,
    file: File,
    magic: u32,
    /// Generation of the newest slot on disk; the next store writes the other slot.
    generation: u64,
}

impl StateFile {
    /// Opens the file for in-place stores when it is in the current format; otherwise (missing,
    /// unreadable, version 1) writes a new one holding `cursor` in both slots. That is the only
    /// time a state file needs disk space.
    pub(super) fn open(
        path: &Path,
        magic: u32,
        loaded: &Loaded,
        cursor: &Cursor,
    ) -> Result<StateFile, SpoolError> {
        let error = |op| {
            let path = path.to_owned();
            move |source| SpoolError::State { path, op, source }
        };
        if let Loaded::Found(state) = loaded
            && !state.legacy
        {
            let file = open_nofollow(path, true).map_err(error("opening"))?;
            return Ok(StateFile {
                path: path.to_owned(),
                file,
                magic,
                generation: state.generation,
            });
        }
        let mut bytes = Vec::with_capacity(2 * SLOT_STRIDE);
        bytes.extend_from_slice(&encode_slot(magic, 0, cursor));
        bytes.extend_from_slice(&encode_slot(magic, 1, cursor));
        write_replacing(path, &bytes).map_err(|(op, source)| SpoolError::State {
            path: path.to_owned(),
            op,
            source,
        })?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(error("fsync of its directory"))?;
        }
        let file = open_nofollow(path, true).map_err(error("opening"))?;
        Ok(StateFile {
            path: path.to_owned(),
            file,
            magic,
            generation: 1,
        })
    }

    /// Durably stores `cursor` in the older slot, in place: no new disk space is needed.
    pub(super) fn store(&mut self, cursor: &Cursor) -> Result<(), SpoolError> {
        let generation = self.generation + 1;
        let slot = encode_slot(self.magic, generation, cursor);
        let offset = (generation % 2) * SLOT_STRIDE as u64;
        self.file
            .write_all_at(&slot, offset)
            .map_err(|source| SpoolError::State {
                path: self.path.clone(),
                op: "writing a slot in place",
                source,
            })?;
        self.file.sync_data().map_err(|source| SpoolError::State {
            path: self.path.clone(),
            op: "fsync",
            source,
        })?;
        self.generation = generation;
        Ok(())
    }
}
