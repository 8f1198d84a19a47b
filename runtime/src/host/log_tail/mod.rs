//! `log-tail` capability: whole new lines from the log files the operator granted.
//!
//! Shape: [`LogTailGrantConfig`] → [`LogTailGrant`] → [`LogTailCtx`] (per run) → `log_tail::Host`,
//! registered as [`LogTail`], with the offsets of every plugin in one [`LogTailStore`].
//!
//! Only what the grant names is read, judged at open time (see `files`): each granted directory
//! is held as an fd opened without following any link; file names are matched by the grant's
//! glob (wildcards in the file name only, so the directories are fixed by the operator), and of
//! the matching regular files the [`MAX_FILES_PER_GRANT`] newest are kept (a warning counts the
//! rest). Each is opened relative to the directory fd with `O_NOFOLLOW | O_NONBLOCK` and refused,
//! audited, unless the open file is a regular file with one link owned by the directory's owner
//! (or `file_owner`): symlinks, hard links to files elsewhere, FIFOs and devices are never read.
//! Compressed or binary files (by magic number, or a NUL byte in the first block) are skipped
//! with one warning. All of it runs in the plugin's blocking lane, under its deadline.
//!
//! Files are identified by a fingerprint of their first line, not by name or inode (as Vector
//! and Fluent Bit do): a file renamed by rotation keeps its fingerprint and its offset, a copy
//! made by `copytruncate` is recognised as already read, and a truncated file that starts over
//! gets a new fingerprint and is read from the start. Offsets advance in the run and are
//! committed (see [`LogTailStore::commit`]) only after the run's output was accepted, so the
//! lines of a failed run are offered again and a line is never handed out twice by a successful
//! one. Only whole lines are returned; a single line longer than the per-call cap is skipped with
//! a warning that names the file and offset, since it could never be delivered whole.
//!
//! On disk (`STATE_DIR/log-tail/PLUGIN.json`), format version 1:
//! `{"version":1,"files":{"<fingerprint hex>":{"offset":N,"path":"/last/seen/path"}}}`, replaced
//! atomically (`crate::fsutil`).

mod files;
mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::audit::Audit;
use super::bindings::{Error, pganalytics::collector::log_tail};
use super::blocking::{BlockingLane, BlockingLanes};
use super::capability::{GrantProblem, HostCapability};
use super::run::RunInfo;
use files::{Lines, LogDir, Skip};
use store::FileOffset;
pub use store::{LogTailStore, Offsets};

/// Threat: a grant like `/var/log/*` on a busy host making every run open thousands of files.
/// Matching files beyond this many (per pattern) are left out, oldest first, with a warning.
pub const MAX_FILES_PER_GRANT: usize = 1000;

/// Threat: a directory full of binary files filling host memory with the identities already
/// warned about; past this many the set starts over (a file may then be warned about again).
const MAX_BINARY_WARNINGS_REMEMBERED: usize = 4096;

/// The `log-tail` interface.
pub struct LogTail;

impl HostCapability for LogTail {
    const NAME: &'static str = "log-tail";
    const SUMMARY: &'static str = "read new lines of log files";
    const GRANT_EXAMPLE: Option<&'static str> = Some("paths = [\"/var/log/postgresql/*.log\"]");

    type Setup = ();
    type GrantConfig = LogTailGrantConfig;
    type Grant = LogTailGrant;
    type GrantError = LogTailGrantError;
    type Shared = (LogTailStore, BlockingLanes);
    type Ctx = LogTailCtx;
    /// Offsets after the lines the run read.
    type Pending = Offsets;

    fn grant(config: &LogTailGrantConfig) -> Result<LogTailGrant, LogTailGrantError> {
        LogTailGrant::new(config)
    }

    fn shared(_: &(), state_dir: Option<&Path>) -> (LogTailStore, BlockingLanes) {
        (
            LogTailStore::new(state_dir.map(Path::to_path_buf)),
            BlockingLanes::default(),
        )
    }

    fn prepare(
        (store, _): &(LogTailStore, BlockingLanes),
        grant: Option<&LogTailGrant>,
        plugin: &str,
    ) {
        if grant.is_some() {
            store.load(plugin);
        }
    }

    fn context(
        grant: Option<Arc<LogTailGrant>>,
        (store, lanes): &(LogTailStore, BlockingLanes),
        run: &RunInfo,
    ) -> LogTailCtx {
        // Only a granted plugin has offsets; they are in memory since it was loaded.
        let committed = grant.as_ref().and_then(|_| store.load(&run.plugin));
        LogTailCtx::new(
            grant,
            committed,
            run.max_host_call_bytes,
            run.audit.clone(),
            lanes.lane(Self::NAME, &run.plugin, run.deadline),
        )
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut LogTailCtx,
    ) -> wasmtime::Result<()> {
        log_tail::add_to_linker::<T, HasSelf<LogTailCtx>>(linker, get)
    }

    fn take_pending(ctx: &mut LogTailCtx) -> Option<Offsets> {
        ctx.take_offsets()
    }

    fn commit(
        (store, _): &(LogTailStore, BlockingLanes),
        plugin: &str,
        offsets: Offsets,
    ) -> std::io::Result<()> {
        store.commit(plugin, offsets)
    }
}

/// `[plugins.NAME.grants.log-tail]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogTailGrantConfig {
    /// Absolute globs of log files, wildcards in the file name only
    /// (`/var/log/postgresql/postgresql-*.log`).
    pub paths: Vec<String>,
    /// Where to start in files that exist the first time the plugin runs: `end` (default, no
    /// backlog flood) or `beginning`. Files that appear later are always read from the start.
    pub start_at: Option<String>,
    /// The user the log files must belong to (a name or a numeric uid); default: the owner of
    /// the log directory. Debian's `/var/log/postgresql` is root's but its logs are `postgres`'s.
    pub file_owner: Option<String>,
}

#[derive(Debug)]
struct GrantPattern {
    /// The directory, held open between runs.
    dir: LogDir,
    /// Matches a file name in `dir`.
    name: GlobMatcher,
}

/// The validated grant: directories fixed by the operator and the file names matched in each.
#[derive(Debug)]
pub struct LogTailGrant {
    patterns: Vec<GrantPattern>,
    start_at_end: bool,
    file_owner: Option<String>,
    /// Binary files already warned about (device, inode): one warning per file.
    binary_warned: Mutex<HashSet<(u64, u64)>>,
}

/// Why a `[plugins.NAME.grants.log-tail]` table is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LogTailGrantError {
    #[error("list at least one log file pattern")]
    Empty,
    #[error("log path `{0}` must be absolute")]
    NotAbsolute(String),
    #[error("log path `{0}` must not contain `.` or `..`")]
    DotDot(String),
    #[error("log path `{0}` must name files in a directory")]
    NoFileName(String),
    #[error("log path `{0}`: wildcards are allowed in the file name only")]
    WildcardDirectory(String),
    #[error("log path `{pattern}`: {error}")]
    Pattern {
        pattern: String,
        error: globset::Error,
    },
    #[error("start_at `{0}` is not `end` or `beginning`")]
    StartAt(String),
    #[error("file_owner must be a user name or a numeric uid, not empty")]
    FileOwner,
}

impl GrantProblem for LogTailGrantError {
    fn key(&self) -> &'static str {
        match self {
            LogTailGrantError::StartAt(_) => "start_at",
            LogTailGrantError::FileOwner => "file_owner",
            _ => "paths",
        }
    }
}

impl LogTailGrant {
    pub fn new(config: &LogTailGrantConfig) -> Result<Self, LogTailGrantError> {
        if config.paths.is_empty() {
            return Err(LogTailGrantError::Empty);
        }
        let mut patterns = Vec::new();
        for pattern in &config.paths {
            let path = Path::new(pattern);
            if !path.is_absolute() {
                return Err(LogTailGrantError::NotAbsolute(pattern.clone()));
            }
            if path.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            }) {
                return Err(LogTailGrantError::DotDot(pattern.clone()));
            }
            let (Some(dir), Some(name)) =
                (path.parent(), path.file_name().and_then(|n| n.to_str()))
            else {
                return Err(LogTailGrantError::NoFileName(pattern.clone()));
            };
            if dir.to_string_lossy().contains(['*', '?', '[', '{']) {
                return Err(LogTailGrantError::WildcardDirectory(pattern.clone()));
            }
            let glob = GlobBuilder::new(name)
                .literal_separator(true)
                .build()
                .map_err(|error| LogTailGrantError::Pattern {
                    pattern: pattern.clone(),
                    error,
                })?;
            patterns.push(GrantPattern {
                dir: LogDir::new(dir.to_path_buf()),
                name: glob.compile_matcher(),
            });
        }
        let start_at_end = match config.start_at.as_deref() {
            None | Some("end") => true,
            Some("beginning") => false,
            Some(other) => return Err(LogTailGrantError::StartAt(other.to_owned())),
        };
        if config
            .file_owner
            .as_deref()
            .is_some_and(|o| o.trim().is_empty())
        {
            return Err(LogTailGrantError::FileOwner);
        }
        Ok(Self {
            patterns,
            start_at_end,
            file_owner: config.file_owner.clone(),
            binary_warned: Mutex::default(),
        })
    }

    /// The uid log files must have in a directory owned by `dir_owner`, or why none can be.
    fn expected_owner(&self, dir_owner: u32) -> Result<u32, String> {
        match self.file_owner.as_deref() {
            None => Ok(dir_owner),
            Some(owner) => owner
                .parse::<u32>()
                .ok()
                .or_else(|| files::uid_of(owner))
                .ok_or_else(|| format!("file_owner `{owner}` is not a known user")),
        }
    }

    /// Whether this is the first time `id` is found binary (worth a warning).
    fn first_binary_sighting(&self, id: (u64, u64)) -> bool {
        let mut warned = self.binary_warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() >= MAX_BINARY_WARNINGS_REMEMBERED {
            warned.clear();
        }
        warned.insert(id)
    }
}

/// A granted file found in this call, opened only when its turn comes (so a call holds one file
/// descriptor at a time, not one per tracked file).
struct Found {
    /// The path as the grant names it (directory as written + name), shown to the guest.
    path: PathBuf,
    dir: Arc<std::os::fd::OwnedFd>,
    name: std::ffi::OsString,
    /// The uid the file must belong to.
    owner: u32,
}

/// Per-run state of the `log-tail` capability.
pub struct LogTailCtx {
    grant: Option<Arc<LogTailGrant>>,
    /// `None` once a call was abandoned at the deadline (its state went with it).
    tail: Option<Tail>,
    audit: Audit,
    lane: BlockingLane,
}

/// What a run has read so far; moved into the blocking lane for each call.
struct Tail {
    /// Offsets as they stand in this run (committed ones plus what this run read).
    offsets: Offsets,
    first_run: bool,
    changed: bool,
    /// Fingerprints of the granted files seen in this run, and whether one call saw them all.
    seen: HashSet<String>,
    scanned_all: bool,
    /// Whether this run already warned that files were left out by the bound.
    warned_left_out: bool,
    max_bytes: usize,
    audit: Audit,
}

impl LogTailCtx {
    pub fn new(
        grant: Option<Arc<LogTailGrant>>,
        committed: Option<Offsets>,
        max_bytes: usize,
        audit: Audit,
        lane: BlockingLane,
    ) -> Self {
        Self {
            grant,
            tail: Some(Tail {
                first_run: committed.is_none(),
                offsets: committed.unwrap_or_default(),
                changed: false,
                seen: HashSet::new(),
                scanned_all: false,
                warned_left_out: false,
                max_bytes,
                audit: audit.clone(),
            }),
            audit,
            lane,
        }
    }

    /// The offsets to commit if this run's output is accepted (`None` when nothing moved).
    pub fn take_offsets(&mut self) -> Option<Offsets> {
        let granted = self.grant.is_some();
        let tail = self.tail.as_mut()?;
        if !(tail.changed || (tail.first_run && granted)) {
            return None;
        }
        // Forget files that are gone, so rotated-away files do not pile up in the state.
        if tail.scanned_all {
            let seen = &tail.seen;
            tail.offsets
                .files
                .retain(|fingerprint, _| seen.contains(fingerprint));
        }
        Some(std::mem::take(&mut tail.offsets))
    }

    fn granted(&self) -> Result<Arc<LogTailGrant>, Error> {
        self.grant.clone().ok_or_else(|| {
            self.audit
                .deny("log-tail", "log files", "no log files are granted")
        })
    }

    /// One call on the calling thread (tests; the host call runs it in the lane).
    pub fn read_new_checked(&mut self, max_bytes: u64) -> Result<Vec<log_tail::Chunk>, Error> {
        let grant = self.granted()?;
        let tail = self.tail.as_mut().ok_or_else(abandoned)?;
        tail.read_new(&grant, max_bytes)
    }

    /// One call in the blocking lane, bounded by the run's deadline.
    pub async fn read_new_in_lane(
        &mut self,
        max_bytes: u64,
    ) -> Result<Vec<log_tail::Chunk>, Error> {
        let grant = self.granted()?;
        let mut tail = self.tail.take().ok_or_else(abandoned)?;
        let (tail, result) = self
            .lane
            .run("log-tail", move || {
                let result = tail.read_new(&grant, max_bytes);
                Ok((tail, result))
            })
            .await?;
        self.tail = Some(tail);
        result
    }
}

fn abandoned() -> Error {
    Error::Timeout("log-tail: an earlier call of this run was abandoned at the deadline".into())
}

impl Tail {
    /// The granted files as they are now; entries that are not regular files are audited, and
    /// files left out by the bound are warned about once per run.
    fn find_granted(&mut self, grant: &LogTailGrant) -> Vec<Found> {
        let mut found = Vec::new();
        for pattern in &grant.patterns {
            let dir_path = &pattern.dir.path;
            let dir = match pattern.dir.handle() {
                Ok(dir) => dir,
                Err(e) if crate::host::fsio::is_link_refusal(&e) => {
                    self.audit.deny(
                        "log-tail directory",
                        &dir_path.display().to_string(),
                        "a component of it is a symbolic link, which is never followed; grant the real path",
                    );
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // not there (yet)
                Err(e) => {
                    tracing::warn!(
                        plugin = self.audit.plugin(),
                        dir = %dir_path.display(),
                        "cannot open the log directory of a log-tail grant, so none of its files are read: {e} (the agent's user needs search permission on every directory above it)"
                    );
                    continue;
                }
            };
            let scan = match files::scan(&dir, &pattern.name, MAX_FILES_PER_GRANT) {
                Ok(scan) => scan,
                Err(e) => {
                    tracing::warn!(plugin = self.audit.plugin(), dir = %dir_path.display(), "cannot list the log directory: {e}");
                    continue;
                }
            };
            for (name, why) in &scan.not_regular {
                self.audit.deny(
                    "log-tail file",
                    &dir_path.join(name).display().to_string(),
                    why,
                );
            }
            if scan.left_out > 0 && !self.warned_left_out {
                self.warned_left_out = true;
                tracing::warn!(
                    plugin = self.audit.plugin(),
                    dir = %dir_path.display(),
                    left_out = scan.left_out,
                    "more than {MAX_FILES_PER_GRANT} files match the log-tail grant; the oldest were left out (grant a narrower pattern)"
                );
            }
            let owner = match files::owner_of(&dir)
                .map_err(|e| e.to_string())
                .and_then(|uid| grant.expected_owner(uid))
            {
                Ok(owner) => owner,
                Err(why) => {
                    self.audit
                        .deny("log-tail directory", &dir_path.display().to_string(), &why);
                    continue;
                }
            };
            for name in scan.kept {
                found.push(Found {
                    path: dir_path.join(&name),
                    dir: dir.clone(),
                    name,
                    owner,
                });
            }
        }
        found
    }

    fn read_new(
        &mut self,
        grant: &LogTailGrant,
        max_bytes: u64,
    ) -> Result<Vec<log_tail::Chunk>, Error> {
        let mut budget = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .min(self.max_bytes);
        let files = self.find_granted(grant);
        let mut chunks = Vec::new();
        let mut seen_fingerprints = HashSet::new();
        let mut ids = HashSet::new();
        let mut scanned_all = true;
        for found in files {
            if budget == 0 {
                scanned_all = false;
                break;
            }
            let found_as = found.path;
            let log = match files::open_log(&found.dir, &found.name, found.owner) {
                Ok(log) => log,
                Err(Skip::Gone) => continue,
                Err(Skip::Refused(why)) => {
                    self.audit
                        .deny("log-tail file", &found_as.display().to_string(), &why);
                    continue;
                }
            };
            // The same file matched by two patterns is read once.
            if !ids.insert(log.id) {
                continue;
            }
            let size = log.size;
            match files::binary_kind(&log.file, size) {
                Ok(None) => {}
                Ok(Some(kind)) => {
                    if grant.first_binary_sighting(log.id) {
                        tracing::warn!(
                            plugin = self.audit.plugin(),
                            file = %found_as.display(),
                            "skipping a {kind} file matched by the log-tail grant; only text logs are read"
                        );
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        plugin = self.audit.plugin(),
                        file = %found_as.display(),
                        "cannot read the start of a log file matched by the log-tail grant, skipped this run: {e}"
                    );
                    continue;
                }
            }
            let Some(fingerprint) = files::fingerprint(&log.file, size) else {
                continue;
            };
            self.seen.insert(fingerprint.clone());
            // A copytruncate copy has the same first line as the file it copies: one of them is enough.
            if !seen_fingerprints.insert(fingerprint.clone()) {
                continue;
            }
            let start_at_end = self.first_run && grant.start_at_end;
            let entry = self
                .offsets
                .files
                .entry(fingerprint)
                .or_insert_with(|| FileOffset {
                    offset: if start_at_end { size } else { 0 },
                    path: found_as.clone(),
                });
            if entry.path != found_as {
                entry.path = found_as.clone();
                self.changed = true;
            }
            if size < entry.offset {
                // Same first line but shorter: rewritten in place. Start over rather than skip.
                tracing::info!(file = %found_as.display(), "log file shrank; reading it from the start");
                entry.offset = 0;
                self.changed = true;
            }
            if size == entry.offset {
                continue;
            }
            let mut lines = files::read_whole_lines(&log.file, entry.offset, size, budget);
            // A line longer than what the guest asked for, but within the host's cap, is still
            // delivered whole (alone) rather than stalling the file forever.
            if matches!(lines, Ok(Lines::TooLong(_)))
                && budget < self.max_bytes
                && chunks.is_empty()
            {
                lines = files::read_whole_lines(&log.file, entry.offset, size, self.max_bytes).map(
                    |read| match read {
                        Lines::Data(data) => Lines::Data(files::first_line(data)),
                        other => other,
                    },
                );
            }
            match lines {
                Ok(Lines::Data(data)) => {
                    let len = data.len();
                    chunks.push(log_tail::Chunk {
                        path: found_as.display().to_string(),
                        offset: entry.offset,
                        data: lines_text(data),
                    });
                    entry.offset += len as u64;
                    budget = budget.saturating_sub(len);
                    self.changed = true;
                }
                Ok(Lines::Incomplete) => {}
                Ok(Lines::TooLong(skip)) => {
                    tracing::warn!(
                        plugin = self.audit.plugin(),
                        file = %found_as.display(),
                        offset = entry.offset,
                        "skipping a {skip}-byte log line longer than the per-call limit"
                    );
                    entry.offset += skip as u64;
                    self.changed = true;
                }
                Err(e) => {
                    return Err(Error::Io(format!("log file `{}`: {e}", found_as.display())));
                }
            }
        }
        self.scanned_all |= scanned_all;
        Ok(chunks)
    }
}

/// The lines as text for the guest: taken as they are when they are UTF-8 (no copy of a
/// multi-megabyte read), invalid sequences replaced by U+FFFD otherwise, as before.
fn lines_text(data: Vec<u8>) -> String {
    String::from_utf8(data)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

impl log_tail::Host for LogTailCtx {
    async fn read_new(&mut self, max_bytes: u64) -> Result<Vec<log_tail::Chunk>, Error> {
        self.read_new_in_lane(max_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn lane() -> BlockingLane {
        BlockingLane::standalone("log-tail", "p", Instant::now() + Duration::from_secs(30))
    }

    fn grant(patterns: &[String], start_at: &str) -> Arc<LogTailGrant> {
        Arc::new(
            LogTailGrant::new(&LogTailGrantConfig {
                paths: patterns.to_vec(),
                start_at: Some(start_at.into()),
                file_owner: None,
            })
            .unwrap(),
        )
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// One run: reads everything new and commits it, as an accepted run would.
    fn run(store: &LogTailStore, grant: &Arc<LogTailGrant>, cap: usize) -> String {
        let mut ctx = LogTailCtx::new(
            Some(grant.clone()),
            store.load("p"),
            cap,
            Audit::new("p".into(), "d".into()),
            lane(),
        );
        let mut text = String::new();
        loop {
            let chunks = ctx.read_new_checked(u64::MAX).unwrap();
            if chunks.is_empty() {
                break;
            }
            for chunk in chunks {
                text.push_str(&chunk.data);
            }
        }
        if let Some(offsets) = ctx.take_offsets() {
            store.commit("p", offsets).unwrap();
        }
        text
    }

    #[test]
    fn lines_that_are_not_utf8_arrive_with_replacement_characters() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("latin1.log");
        // Latin-1 `café`, a lone continuation byte, a truncated 3-byte sequence, then UTF-8.
        std::fs::write(&log, b"caf\xe9\n\x80 x\n\xe2\x82 y\nok \xe2\x82\xac\n").unwrap();
        let store = LogTailStore::new(None);
        let grant = grant(&[format!("{}/*.log", dir.path().display())], "beginning");
        assert_eq!(
            run(&store, &grant, 1 << 20),
            "caf\u{fffd}\n\u{fffd} x\n\u{fffd} y\nok \u{20ac}\n"
        );
        assert_eq!(lines_text(b"plain\n".to_vec()), "plain\n");
    }

    #[test]
    fn new_lines_arrive_once_and_half_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("postgresql.log");
        append(&log, "old line\n");
        let store = LogTailStore::new(Some(dir.path().join("state")));
        let grant = grant(&[format!("{}/*.log", dir.path().display())], "end");
        assert_eq!(
            run(&store, &grant, 1 << 20),
            "",
            "first sight starts at the end"
        );
        append(&log, "one\ntwo\nhal");
        assert_eq!(run(&store, &grant, 1 << 20), "one\ntwo\n");
        append(&log, "f\n");
        assert_eq!(run(&store, &grant, 1 << 20), "half\n");
        assert_eq!(run(&store, &grant, 1 << 20), "");
        // Offsets survive a new store on the same directory (a restart).
        append(&log, "three\n");
        let restarted = LogTailStore::new(Some(dir.path().join("state")));
        assert_eq!(run(&restarted, &grant, 1 << 20), "three\n");
    }

    #[test]
    fn uncommitted_runs_are_offered_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        append(&log, "first\n");
        let store = LogTailStore::new(None);
        let grant = grant(&[format!("{}/*.log", dir.path().display())], "beginning");
        let mut failed = LogTailCtx::new(
            Some(grant.clone()),
            store.load("p"),
            1 << 20,
            Audit::new("p".into(), "d".into()),
            lane(),
        );
        assert_eq!(failed.read_new_checked(1024).unwrap()[0].data, "first\n");
        drop(failed); // the run failed: nothing committed
        assert_eq!(run(&store, &grant, 1 << 20), "first\n");
    }

    #[test]
    fn rotation_by_rename_and_copytruncate_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pg.log");
        append(&log, "a1\n");
        let store = LogTailStore::new(None);
        let grant = grant(&[format!("{}/pg.log*", dir.path().display())], "beginning");
        assert_eq!(run(&store, &grant, 1 << 20), "a1\n");
        // Rename: lines written before the rename are read from the renamed file.
        append(&log, "a2\n");
        std::fs::rename(&log, dir.path().join("pg.log.1")).unwrap();
        append(&log, "b1\n");
        let text = run(&store, &grant, 1 << 20);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["a2", "b1"]);
        // Copytruncate: the copy is recognised by its first line, the truncated file starts over.
        append(&log, "b2\n");
        std::fs::copy(&log, dir.path().join("pg.log.2")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, "c1\n");
        let text = run(&store, &grant, 1 << 20);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["b2", "c1"]);
        assert_eq!(run(&store, &grant, 1 << 20), "");
    }

    #[test]
    fn the_cap_returns_whole_lines_and_skips_lines_that_can_never_fit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, &format!("short\n{}\nafter\n", "y".repeat(100)));
        let store = LogTailStore::new(None);
        let grant = grant(&[format!("{}/*.log", dir.path().display())], "beginning");
        let mut ctx = LogTailCtx::new(
            Some(grant.clone()),
            None,
            32,
            Audit::new("p".into(), "d".into()),
            lane(),
        );
        assert_eq!(ctx.read_new_checked(u64::MAX).unwrap()[0].data, "short\n");
        assert!(
            ctx.read_new_checked(u64::MAX).unwrap().is_empty(),
            "the long line is skipped"
        );
        assert_eq!(ctx.read_new_checked(u64::MAX).unwrap()[0].data, "after\n");
        // A guest asking for less than one line still gets the line when the host cap allows it.
        let mut small = LogTailCtx::new(
            Some(grant),
            None,
            1 << 20,
            Audit::new("p".into(), "d".into()),
            lane(),
        );
        assert_eq!(small.read_new_checked(8).unwrap()[0].data, "short\n");
        assert_eq!(small.read_new_checked(8).unwrap()[0].data.len(), 101);
        drop(store);
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Reads everything one fresh run sees, returning the text and the audit.
    fn read_all(grant: Arc<LogTailGrant>) -> (String, Audit) {
        let audit = Audit::new("p".into(), "d".into());
        let mut ctx = LogTailCtx::new(Some(grant), None, 1 << 20, audit.clone(), lane());
        let mut text = String::new();
        loop {
            let chunks = ctx.read_new_checked(u64::MAX).unwrap();
            if chunks.is_empty() {
                break;
            }
            text.extend(chunks.iter().map(|c| c.data.as_str()));
        }
        (text, audit)
    }

    #[test]
    fn symlinks_hard_links_fifos_and_other_owners_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(dir.path().join("secret"), "secret line\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), logs.join("evil.log")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", logs.join("passwd.log")).unwrap();
        std::fs::write(logs.join("other.txt"), "not granted\n").unwrap();
        append(&logs.join("good.log"), "good\n");
        // Even a symlink to another granted file is refused: links are never followed.
        std::os::unix::fs::symlink(logs.join("good.log"), logs.join("alias.log")).unwrap();
        // A hard link to a file outside the grant reads as a file of the directory.
        std::fs::write(dir.path().join("shadow"), "root:hash\n").unwrap();
        std::fs::hard_link(dir.path().join("shadow"), logs.join("shadow.log")).unwrap();
        // A FIFO would block a plain open forever.
        mkfifo(&logs.join("fifo.log"));
        // A file of another user than the directory's owner.
        append(&logs.join("nobody.log"), "planted\n");
        std::os::unix::fs::chown(logs.join("nobody.log"), Some(65534), None).unwrap();
        let grant = grant(&[format!("{}/*.log", logs.display())], "beginning");
        let audit = Audit::new("p".into(), "d".into());
        let mut ctx = LogTailCtx::new(Some(grant.clone()), None, 1 << 20, audit.clone(), lane());
        let chunks = ctx.read_new_checked(u64::MAX).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data, "good\n");
        assert_eq!(audit.denied_count(), 6, "every refusal is audited");
        assert_eq!(read_all(grant).0, "good\n");
        // The operator can name the user the logs belong to.
        let owned = Arc::new(
            LogTailGrant::new(&LogTailGrantConfig {
                paths: vec![format!("{}/nobody.log", logs.display())],
                start_at: Some("beginning".into()),
                file_owner: Some("65534".into()),
            })
            .unwrap(),
        );
        assert_eq!(read_all(owned).0, "planted\n");
    }

    #[test]
    fn a_log_swapped_for_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("postgresql.log");
        append(&log, "line\n");
        let grant = grant(
            &[format!("{}/postgresql.log", dir.path().display())],
            "beginning",
        );
        assert_eq!(read_all(grant.clone()).0, "line\n");
        std::fs::remove_file(&log).unwrap();
        mkfifo(&log);
        let (text, audit) = read_all(grant);
        assert_eq!(text, "");
        assert!(audit.denied_count() >= 1);
    }

    #[tokio::test]
    async fn the_host_call_runs_in_the_lane_and_survives_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join("a.log"));
        append(&dir.path().join("b.log"), "b\n");
        let grant = grant(&[format!("{}/*.log", dir.path().display())], "beginning");
        let mut ctx = LogTailCtx::new(
            Some(grant),
            None,
            1 << 20,
            Audit::new("p".into(), "d".into()),
            lane(),
        );
        let chunks = ctx.read_new_in_lane(u64::MAX).await.unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data, "b\n");
        assert!(ctx.take_offsets().is_some());
    }

    #[test]
    fn a_granted_directory_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&logs).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        append(&logs.join("pg.log"), "mine\n");
        append(&elsewhere.join("pg.log"), "secret\n");
        let grant = grant(&[format!("{}/*.log", logs.display())], "beginning");
        assert_eq!(read_all(grant.clone()).0, "mine\n");
        // Renamed away and replaced by a symlink: the held directory is still the one read.
        std::fs::rename(&logs, dir.path().join("old")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &logs).unwrap();
        assert_eq!(read_all(grant.clone()).0, "mine\n");
        // Deleted and replaced by a symlink: re-opening refuses the link.
        std::fs::remove_dir_all(dir.path().join("old")).unwrap();
        let (text, audit) = read_all(grant.clone());
        assert_eq!(text, "");
        assert!(audit.denied_count() >= 1);
        // A grant whose directory is a symlink from the start is refused too.
        let fresh = self::grant(&[format!("{}/*.log", logs.display())], "beginning");
        assert_eq!(read_all(fresh).0, "");
    }

    #[test]
    fn a_matching_file_late_in_a_3000_entry_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2999 {
            std::fs::write(dir.path().join(format!("other-{i:04}.txt")), "x\n").unwrap();
        }
        append(&dir.path().join("postgresql.log"), "found\n");
        let grant = grant(
            &[format!("{}/postgresql*.log", dir.path().display())],
            "beginning",
        );
        assert_eq!(read_all(grant).0, "found\n");
    }

    #[test]
    fn past_the_bound_the_newest_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for i in 0..MAX_FILES_PER_GRANT + 5 {
            let path = dir.path().join(format!("pg-{i:05}.log"));
            std::fs::write(&path, format!("old {i}\n")).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // Last in name order would be first to go in a name bound; it is the newest here.
        append(&dir.path().join("pg-00000-new.log"), "newest\n");
        let grant = grant(&[format!("{}/pg-*.log", dir.path().display())], "beginning");
        let (text, _) = read_all(grant);
        assert!(text.contains("newest\n"), "the newest file is read");
        assert_eq!(
            text.lines().count(),
            MAX_FILES_PER_GRANT,
            "the rest is left out"
        );
    }

    #[test]
    fn compressed_and_binary_neighbours_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("postgresql.log"), "text\n");
        for (name, bytes) in [
            (
                "postgresql.log.2.gz",
                &b"\x1f\x8b\x08\x00\x00\x00\x00\x00\n"[..],
            ),
            ("postgresql.log.3.bz2", b"BZh91AY&SY\n"),
            ("postgresql.log.4.xz", b"\xfd7zXZ\x00\x00\n"),
            ("postgresql.log.5.zst", b"\x28\xb5\x2f\xfd\x00\n"),
            ("postgresql.log.6", b"looks like text\0but is not\n"),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let grant = grant(
            &[format!("{}/postgresql.log*", dir.path().display())],
            "beginning",
        );
        assert_eq!(read_all(grant.clone()).0, "text\n");
        assert_eq!(
            grant.binary_warned.lock().unwrap().len(),
            5,
            "one warning each"
        );
        read_all(grant.clone());
        assert_eq!(grant.binary_warned.lock().unwrap().len(), 5);
    }

    #[test]
    fn grants_outside_absolute_file_globs_are_rejected() {
        for (bad, why) in [
            ("relative/*.log", "absolute"),
            ("/var/log/../etc/shadow", ".."),
            ("/var/*/postgresql.log", "file name only"),
        ] {
            let err = LogTailGrant::new(&LogTailGrantConfig {
                paths: vec![bad.into()],
                start_at: None,
                file_owner: None,
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
