//! How push bodies are encoded (`backend.compression`), and what the sender learnt about the
//! backend's gzip support.
//!
//! `auto` sends gzip until the backend answers 400 or 415 to a gzip body; the sender then resends
//! that same batch uncompressed and, when the plain body is accepted, remembers that this backend
//! does not decode gzip. The memory lives in `STATE_DIR/backend/encoding.json` so a restart does
//! not re-probe (and fail) again:
//!
//! ```text
//! {"format": 1, "url": "https://backend.example", "plain_since": 1765000000}
//! ```
//!
//! It applies only to the URL it names (a config that points elsewhere probes again) and only
//! for [`REPROBE_AFTER`]; after that gzip is tried once more. An unreadable or foreign file is
//! ignored (the cost is one more probe, never a lost batch). This module must never make `gzip`
//! or `none` fall back: those are the operator's explicit choice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::fsutil;

/// How long a remembered "this backend does not decode gzip" holds before gzip is tried again
/// (a backend upgrade should be noticed within a day, without a probe per batch).
pub const REPROBE_AFTER: Duration = Duration::from_secs(24 * 3600);

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    format: u32,
    url: String,
    /// Unix seconds of the fallback.
    plain_since: u64,
}

/// The body encoding the sender uses now.
#[derive(Debug)]
pub struct BodyEncoding {
    mode: Compression,
    url: String,
    /// `STATE_DIR/backend/encoding.json`; `None` without a state directory (memory only).
    file: Option<PathBuf>,
    /// Since when plain bodies are used in `auto` mode.
    plain_since: Option<SystemTime>,
    /// Whether `file` may exist (so a gzip success has something to remove).
    on_disk: bool,
}

impl BodyEncoding {
    /// Reads what an earlier run remembered about `url` (in `auto` mode only).
    pub fn new(mode: Compression, url: &str, state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|dir| dir.join("backend").join("encoding.json"));
        let plain_since = match (mode, &file) {
            (Compression::Auto, Some(file)) => remembered(file, url),
            _ => None,
        };
        if let Some(since) = plain_since {
            tracing::info!(
                url,
                since_secs_ago = since.elapsed().map_or(0, |d| d.as_secs()),
                "`backend.compression = \"auto\"`: this backend refused gzip before; sending plain JSON"
            );
        }
        let on_disk = mode == Compression::Auto && file.as_deref().is_some_and(Path::exists);
        Self {
            mode,
            url: url.to_owned(),
            file,
            plain_since,
            on_disk,
        }
    }

    pub fn mode(&self) -> Compression {
        self.mode
    }

    /// Whether the next body is gzip. In `auto` mode a remembered fallback older than
    /// [`REPROBE_AFTER`] is forgotten here, so gzip is probed again.
    pub fn use_gzip(&mut self) -> bool {
        match self.mode {
            Compression::Gzip => true,
            Compression::None => false,
            Compression::Auto => match self.plain_since {
                None => true,
                Some(since) if since.elapsed().unwrap_or_default() >= REPROBE_AFTER => {
                    tracing::info!(
                        url = %self.url,
                        "`backend.compression = \"auto\"`: trying gzip again ({} h after the backend refused it)",
                        REPROBE_AFTER.as_secs() / 3600
                    );
                    self.plain_since = None;
                    true
                }
                Some(_) => false,
            },
        }
    }

    /// Whether a 400/415 to a gzip body may be retried as plain JSON.
    pub fn may_fall_back(&self) -> bool {
        self.mode == Compression::Auto
    }

    /// The backend accepted a plain body after refusing the gzip one: use plain bodies from now
    /// on and remember it. `said` is the backend's answer to the gzip body, for the log.
    pub async fn remember_plain(&mut self, said: &str) {
        let now = SystemTime::now();
        self.plain_since = Some(now);
        let Some(file) = self.file.clone() else {
            tracing::warn!(
                url = %self.url,
                "the backend refused a gzip body ({said}) and accepted it uncompressed: sending plain JSON from now on"
            );
            return;
        };
        let record = Remembered {
            format: FORMAT,
            url: self.url.clone(),
            plain_since: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        let saved = tokio::task::spawn_blocking({
            let file = file.clone();
            move || save(&file, &record)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        self.on_disk = true;
        match saved {
            Ok(()) => tracing::warn!(
                url = %self.url,
                file = %file.display(),
                "the backend refused a gzip body ({said}) and accepted it uncompressed: sending plain JSON \
                 from now on (remembered; gzip is tried again after {} h or when `backend.url` changes)",
                REPROBE_AFTER.as_secs() / 3600
            ),
            Err(e) => tracing::warn!(
                url = %self.url,
                file = %file.display(),
                "the backend refused a gzip body ({said}) and accepted it uncompressed: sending plain JSON \
                 from now on (cannot remember it across restarts: {e})"
            ),
        }
    }

    /// A gzip body was accepted: forget any earlier fallback on disk.
    pub async fn gzip_accepted(&mut self) {
        if !self.on_disk {
            return;
        }
        self.on_disk = false;
        if let Some(file) = self.file.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                if std::fs::remove_file(&file).is_ok() {
                    tracing::info!(file = %file.display(), "the backend accepts gzip: forgot the fallback");
                }
            })
            .await;
        }
    }
}

fn remembered(file: &Path, url: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(file).ok()?;
    let record: Remembered = match serde_json::from_str(&text) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(file = %file.display(), "ignoring an unreadable encoding memory (gzip is probed again): {e}");
            return None;
        }
    };
    if record.format != FORMAT || record.url != url {
        return None;
    }
    let since = UNIX_EPOCH + Duration::from_secs(record.plain_since);
    // A clock set back makes `elapsed` fail: treat that as fresh rather than probing forever.
    match since.elapsed() {
        Ok(age) if age >= REPROBE_AFTER => None,
        _ => Some(since),
    }
}

fn save(file: &Path, record: &Remembered) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    fsutil::write_atomically(file, &json, fsutil::PRIVATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn auto_remembers_a_fallback_per_url_and_forgets_it_after_reprobe_after() {
        let dir = tempfile::tempdir().unwrap();
        let url = "https://b.example";
        let mut encoding = BodyEncoding::new(Compression::Auto, url, Some(dir.path()));
        assert!(encoding.use_gzip() && encoding.may_fall_back());
        encoding.remember_plain("400").await;
        assert!(!encoding.use_gzip());

        // A restart keeps it, for the same URL only.
        let mut again = BodyEncoding::new(Compression::Auto, url, Some(dir.path()));
        assert!(!again.use_gzip());
        let mut other = BodyEncoding::new(Compression::Auto, "https://c.example", Some(dir.path()));
        assert!(other.use_gzip());

        // An old memory is not used.
        let file = dir.path().join("backend/encoding.json");
        let old = Remembered {
            format: FORMAT,
            url: url.into(),
            plain_since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - REPROBE_AFTER.as_secs()
                - 1,
        };
        save(&file, &old).unwrap();
        assert!(BodyEncoding::new(Compression::Auto, url, Some(dir.path())).use_gzip());

        // Garbage is ignored, and a gzip success removes the file.
        std::fs::write(&file, "{not json").unwrap();
        let mut fresh = BodyEncoding::new(Compression::Auto, url, Some(dir.path()));
        assert!(fresh.use_gzip());
        fresh.gzip_accepted().await;
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn gzip_and_none_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut gzip = BodyEncoding::new(Compression::Gzip, "https://b", Some(dir.path()));
        assert!(gzip.use_gzip() && !gzip.may_fall_back());
        let mut none = BodyEncoding::new(Compression::None, "https://b", Some(dir.path()));
        assert!(!none.use_gzip() && !none.may_fall_back());
        // A memory written in auto mode does not affect explicit modes.
        let mut auto = BodyEncoding::new(Compression::Auto, "https://b", Some(dir.path()));
        auto.remember_plain("400").await;
        assert!(BodyEncoding::new(Compression::Gzip, "https://b", Some(dir.path())).use_gzip());
    }
}
