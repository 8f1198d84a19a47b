//! `state` capability: a small byte blob per plugin kept by the host between runs, so a
//! collector can compute deltas (CPU percentages over the interval) without keeping anything.
//!
//! Needs no grant: a plugin only ever sees its own blob. A `set` takes effect only when the run's
//! output is accepted, so a failed run cannot corrupt the counters of the next one.
//!
//! On disk (`STATE_DIR/plugins/NAME.state`), format version 1:
//!
//! ```text
//! magic "PGASTATE" (8 bytes) | version u32 LE = 1 | length u32 LE | crc32 of data u32 LE | data
//! ```
//!
//! Files are replaced atomically (`crate::fsutil`), so a crash leaves either the old or the new
//! blob. A file that fails its checks is ignored with a warning (the plugin starts fresh).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::{Error, pganalytics::collector::state};
use super::capability::{HostCapability, NoGrant};
use super::fsio;
use super::kept::PerPlugin;
use super::run::RunInfo;
use crate::fsutil;

const MAGIC: &[u8; 8] = b"PGASTATE";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 4;

/// Threat: a plugin storing megabytes per run would grow host memory and disk writes; counters
/// for deltas need a few KiB. Overridable per plugin with `max_state_bytes`.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 64 << 10;

/// The largest `max_state_bytes` a plugin may be given (config check), and so the largest blob
/// a state file can hold: a file is read whole into memory, and never more than this is read.
pub const MAX_STATE_BYTES_CEILING: u64 = 16 << 20;

/// The `state` interface.
pub struct State;

impl HostCapability for State {
    const NAME: &'static str = "state";
    const SUMMARY: &'static str = "keep a small blob between runs (capped)";
    const GRANT_EXAMPLE: Option<&'static str> = None;

    type Setup = ();
    type GrantConfig = NoGrant;
    type Grant = NoGrant;
    type GrantError = NoGrant;
    type Shared = StateStore;
    type Ctx = StateCtx;
    /// The blob the plugin set in the run.
    type Pending = Vec<u8>;

    fn grant(config: &NoGrant) -> Result<NoGrant, NoGrant> {
        match *config {}
    }

    fn shared(_: &(), state_dir: Option<&Path>) -> StateStore {
        StateStore::new(state_dir.map(Path::to_path_buf))
    }

    fn prepare(store: &StateStore, _: Option<&NoGrant>, plugin: &str) {
        store.load(plugin);
    }

    fn context(_: Option<Arc<NoGrant>>, store: &StateStore, run: &RunInfo) -> StateCtx {
        // Nothing is looked up here: a plugin that never calls `state.get` (disk, pg_stats)
        // costs nothing, and one that does finds its blob in memory (read when it was loaded).
        StateCtx::lazy(run.plugin.clone(), store.clone(), run.max_state_bytes)
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut StateCtx,
    ) -> wasmtime::Result<()> {
        state::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)
    }

    fn take_pending(ctx: &mut StateCtx) -> Option<Vec<u8>> {
        ctx.take_pending()
    }

    fn commit(store: &StateStore, plugin: &str, blob: Vec<u8>) -> std::io::Result<()> {
        store.save(plugin, blob)
    }
}

/// Blobs of every plugin: in memory for this process, on disk when a state directory is set.
///
/// The file of a plugin is read at most once per process, when the plugin is loaded (see
/// `HostCapability::prepare`): what it held (or that there was none, or none that could be
/// used) is remembered, and every save replaces the remembered blob. This process is the only
/// writer of its state directory, so the memory never disagrees with the file it would read.
#[derive(Clone, Default)]
pub struct StateStore {
    dir: Option<Arc<Path>>,
    blobs: PerPlugin<Vec<u8>>,
}

impl StateStore {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir: dir.map(Arc::from),
            blobs: PerPlugin::default(),
        }
    }

    fn path(&self, plugin: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join("plugins").join(format!("{plugin}.state")))
    }

    /// The blob `plugin` kept, read from its file the first time (that read blocks: it is
    /// made when the plugin is loaded, off the async workers).
    pub fn load(&self, plugin: &str) -> Option<Vec<u8>> {
        self.blobs.get_or_read(plugin, || self.read(plugin))
    }

    /// The blob in `plugin`'s file, if there is a usable one. Reads at most the largest file
    /// a plugin can have saved.
    fn read(&self, plugin: &str) -> Option<Vec<u8>> {
        let path = self.path(plugin)?;
        let limit = HEADER_LEN + MAX_STATE_BYTES_CEILING as usize;
        let bytes =
            match std::fs::File::open(&path).and_then(|mut f| fsio::read_up_to(&mut f, limit)) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    tracing::warn!(plugin, file = %path.display(), "cannot read plugin state: {e}");
                    return None;
                }
            };
        let decoded = if bytes.len() > limit {
            Err(format!(
                "the file is larger than any state a plugin can save ({limit} bytes)"
            ))
        } else {
            decode(&bytes)
        };
        decoded
            .inspect_err(|why| {
                tracing::warn!(plugin, file = %path.display(), "ignoring plugin state: {why}")
            })
            .ok()
    }

    pub fn save(&self, plugin: &str, data: Vec<u8>) -> std::io::Result<()> {
        if let Some(path) = self.path(plugin) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            fsutil::write_atomically(&path, &encode(&data), fsutil::SHARED)?;
        }
        self.blobs.set(plugin, data);
        Ok(())
    }
}

fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err("not a pganalytics state file".into());
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if word(8) != FORMAT_VERSION {
        return Err(format!("unknown format version {}", word(8)));
    }
    let data = &bytes[HEADER_LEN..];
    if data.len() != word(12) as usize || crc32fast::hash(data) != word(16) {
        return Err("length or checksum mismatch".into());
    }
    Ok(data.to_vec())
}

/// Per-run state of the `state` capability.
pub struct StateCtx {
    plugin: Arc<str>,
    current: Current,
    pending: Option<Vec<u8>>,
    max_bytes: usize,
}

/// The blob the previous accepted run left, looked up on the first `get` of the run.
enum Current {
    Known(Option<Vec<u8>>),
    InStore(StateStore),
}

impl StateCtx {
    /// A context whose previous blob is `current`.
    pub fn new(plugin: Arc<str>, current: Option<Vec<u8>>, max_bytes: usize) -> Self {
        Self {
            plugin,
            current: Current::Known(current),
            pending: None,
            max_bytes,
        }
    }

    /// A context that looks the previous blob up in `store` when the plugin first asks for it.
    pub fn lazy(plugin: Arc<str>, store: StateStore, max_bytes: usize) -> Self {
        Self {
            plugin,
            current: Current::InStore(store),
            pending: None,
            max_bytes,
        }
    }

    fn current(&mut self) -> Option<Vec<u8>> {
        if let Current::InStore(store) = &self.current {
            self.current = Current::Known(store.load(&self.plugin));
        }
        match &self.current {
            Current::Known(blob) => blob.clone(),
            Current::InStore(_) => None,
        }
    }

    /// The blob the plugin set in this run, to be saved once its output is accepted.
    pub fn take_pending(&mut self) -> Option<Vec<u8>> {
        self.pending.take()
    }
}

impl state::Host for StateCtx {
    async fn get(&mut self) -> Option<Vec<u8>> {
        match &self.pending {
            Some(pending) => Some(pending.clone()),
            None => self.current(),
        }
    }

    async fn set(&mut self, data: Vec<u8>) -> Result<(), Error> {
        if data.len() > self.max_bytes {
            return Err(Error::TooLarge(format!(
                "state of plugin `{}`: {} bytes is over the {}-byte limit",
                self.plugin,
                data.len(),
                self.max_bytes
            )));
        }
        self.pending = Some(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::Host;

    #[test]
    fn blobs_survive_a_new_store_on_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        store.save("sysstat", b"counters".to_vec()).unwrap();
        let reopened = StateStore::new(Some(dir.path().to_path_buf()));
        assert_eq!(reopened.load("sysstat").as_deref(), Some(&b"counters"[..]));
        assert_eq!(reopened.load("other"), None);
    }

    #[test]
    fn a_file_is_read_once_and_absence_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        assert_eq!(store.load("p"), None);
        // Written behind the store's back: the store already knows `p` has no state.
        StateStore::new(Some(dir.path().to_path_buf()))
            .save("p", b"other".to_vec())
            .unwrap();
        assert_eq!(store.load("p"), None);
        store.save("p", b"mine".to_vec()).unwrap();
        assert_eq!(store.load("p").as_deref(), Some(&b"mine"[..]));
    }

    #[tokio::test]
    async fn a_lazy_context_reads_the_store_only_when_asked() {
        let store = StateStore::new(None);
        let mut ctx = StateCtx::lazy("p".into(), store.clone(), 16);
        store.save("p", b"saved".to_vec()).unwrap();
        assert_eq!(ctx.get().await.as_deref(), Some(&b"saved"[..]));
        ctx.set(b"new".to_vec()).await.unwrap();
        assert_eq!(ctx.get().await.as_deref(), Some(&b"new"[..]));
        let mut fresh = StateCtx::lazy("q".into(), store, 16);
        assert_eq!(fresh.get().await, None);
    }

    #[test]
    fn a_file_larger_than_any_state_is_ignored_and_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        store.save("p", b"counters".to_vec()).unwrap();
        let path = dir.path().join("plugins/p.state");
        // A valid header claiming a blob one byte over the ceiling, then that many bytes.
        let data = vec![7u8; MAX_STATE_BYTES_CEILING as usize + 1];
        std::fs::write(&path, encode(&data)).unwrap();
        assert_eq!(
            StateStore::new(Some(dir.path().to_path_buf())).load("p"),
            None
        );
        // At the ceiling it is still read.
        std::fs::write(&path, encode(&data[1..])).unwrap();
        assert_eq!(
            StateStore::new(Some(dir.path().to_path_buf()))
                .load("p")
                .map(|blob| blob.len()),
            Some(MAX_STATE_BYTES_CEILING as usize)
        );
    }

    #[test]
    fn corrupted_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Some(dir.path().to_path_buf()));
        store.save("p", b"counters".to_vec()).unwrap();
        let path = dir.path().join("plugins/p.state");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(
            StateStore::new(Some(dir.path().to_path_buf())).load("p"),
            None
        );
    }

    #[tokio::test]
    async fn set_is_capped_and_pending_until_taken() {
        let mut ctx = StateCtx::new("p".into(), Some(b"old".to_vec()), 4);
        assert_eq!(ctx.get().await.as_deref(), Some(&b"old"[..]));
        assert!(
            matches!(ctx.set(b"too long".to_vec()).await, Err(Error::TooLarge(m)) if m.contains("`p`"))
        );
        ctx.set(b"new".to_vec()).await.unwrap();
        assert_eq!(ctx.get().await.as_deref(), Some(&b"new"[..]));
        assert_eq!(ctx.take_pending().as_deref(), Some(&b"new"[..]));
    }
}
