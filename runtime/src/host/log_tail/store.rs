//! The committed offsets of every plugin's log files, on disk when the runtime has a state
//! directory (format described in the parent module's doc).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fsutil;

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
#[derive(Clone, Default)]
pub struct LogTailStore {
    dir: Option<PathBuf>,
    memory: Arc<std::sync::Mutex<HashMap<String, Offsets>>>,
}

impl LogTailStore {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir: dir.map(|d| d.join("log-tail")),
            memory: Arc::default(),
        }
    }

    /// The committed offsets of `plugin`, or `None` the first time it runs.
    pub fn load(&self, plugin: &str) -> Option<Offsets> {
        if let Some(offsets) = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
        {
            return Some(offsets.clone());
        }
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
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plugin.to_owned(), offsets);
        Ok(())
    }
}
