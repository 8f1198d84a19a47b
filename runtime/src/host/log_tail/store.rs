//! The committed offsets of every plugin's log files, on disk when the runtime has a state
//! directory (format described in the parent module's doc).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::host::kept::PerPlugin;

/// Committed offsets of one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Offsets {
    version: u32,
    pub(super) files: BTreeMap<String, FileOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct FileOffset {
    pub(super) offset: u64,
    pub(super) path: PathBuf,
}

/// Offsets of every plugin, on disk when the runtime has a state directory.
///
/// A plugin's file is read at most once per process, when the plugin is loaded (see
/// `HostCapability::prepare`); what it held, or that there was none, is remembered, and every
/// commit replaces it. This process is the only writer of its state directory.
#[derive(Clone, Default)]
pub struct LogTailStore {
    dir: Option<PathBuf>,
    memory: PerPlugin<Offsets>,
}

impl LogTailStore {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir: dir.map(|d| d.join("log-tail")),
            memory: PerPlugin::default(),
        }
    }

    /// The committed offsets of `plugin`, or `None` the first time it runs. Read from its file
    /// the first time (that read blocks: it is made when the plugin is loaded, off the async
    /// workers).
    pub fn load(&self, plugin: &str) -> Option<Offsets> {
        self.memory.get_or_read(plugin, || self.read(plugin))
    }

    fn read(&self, plugin: &str) -> Option<Offsets> {
        let path = self.dir.as_ref()?.join(format!("{plugin}.json"));
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str::<Offsets>(&text) {
            Ok(offsets) if offsets.version == 1 => Some(offsets),
            Ok(offsets) => {
                tracing::warn!(plugin, file = %path.display(), "unknown log-tail offsets version {}; starting over", offsets.version);
                None
            }
            Err(e) => {
                tracing::warn!(plugin, file = %path.display(), "unreadable log-tail offsets ({e}); starting over");
                None
            }
        }
    }

    /// Makes a run's offsets the committed ones. Call only once its lines are safely kept.
    pub fn commit(&self, plugin: &str, mut offsets: Offsets) -> std::io::Result<()> {
        offsets.version = 1;
        if let Some(dir) = &self.dir {
            let json = serde_json::to_vec(&offsets).map_err(std::io::Error::other)?;
            std::fs::create_dir_all(dir)?;
            fsutil::write_atomically(&dir.join(format!("{plugin}.json")), &json, fsutil::SHARED)?;
        }
        self.memory.set(plugin, offsets);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(offset: u64) -> Offsets {
        let mut offsets = Offsets::default();
        offsets.files.insert(
            "/var/log/postgresql/a.log".into(),
            FileOffset {
                offset,
                path: "/var/log/postgresql/a.log".into(),
            },
        );
        offsets
    }

    #[test]
    fn a_file_is_read_once_and_absence_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogTailStore::new(Some(dir.path().to_path_buf()));
        assert_eq!(store.load("p"), None);
        // Written behind the store's back: it already knows `p` has no offsets, and does not
        // look at the disk again (a run's start never waits on it).
        LogTailStore::new(Some(dir.path().to_path_buf()))
            .commit("p", offsets(10))
            .unwrap();
        assert_eq!(store.load("p"), None);
        assert_eq!(
            LogTailStore::new(Some(dir.path().to_path_buf()))
                .load("p")
                .map(|o| o.files["/var/log/postgresql/a.log"].offset),
            Some(10)
        );
        store.commit("p", offsets(20)).unwrap();
        assert_eq!(
            store
                .load("p")
                .map(|o| o.files["/var/log/postgresql/a.log"].offset),
            Some(20)
        );
    }
}
