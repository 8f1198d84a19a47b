//! `log-tail` capability: whole new lines from the log files the operator granted.
//!
//! Shape: [`LogTailGrantConfig`] → [`LogTailGrant`] → [`LogTailCtx`] (per run) → `log_tail::Host`,
//! registered as [`LogTail`], with the offsets of every plugin in one [`LogTailStore`].
//!
//! Files are found by the grant's globs (wildcards in the file name only, so the set of
//! directories is fixed by the operator). A file is read only if its canonical path — after every
//! symlink is resolved — is itself inside a granted directory and matches a granted pattern, so a
//! symlink planted in the log directory cannot point the agent at `/etc/shadow`.
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

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};

use super::audit::Audit;
use super::bindings::{Error, pganalytics::collector::log_tail};
use super::capability::{GrantProblem, HostCapability};
use super::run::RunInfo;
use crate::fsutil;

/// Threat: a grant like `/var/log/*` on a busy host making every run open thousands of files.
const MAX_FILES_PER_GRANT: usize = 1000;

/// Bytes of the first line used as a file's fingerprint.
const FINGERPRINT_BYTES: usize = 1024;

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
    type Shared = LogTailStore;
    type Ctx = LogTailCtx;
    /// Offsets after the lines the run read.
    type Pending = Offsets;

    fn grant(config: &LogTailGrantConfig) -> Result<LogTailGrant, LogTailGrantError> {
        LogTailGrant::new(config)
    }

    fn shared(_: &(), state_dir: Option<&Path>) -> LogTailStore {
        LogTailStore::new(state_dir.map(Path::to_path_buf))
    }

    fn context(
        grant: Option<Arc<LogTailGrant>>,
        store: &LogTailStore,
        run: &RunInfo,
    ) -> LogTailCtx {
        // Only a granted plugin has offsets worth reading from disk.
        let committed = grant.as_ref().and_then(|_| store.load(&run.plugin));
        LogTailCtx::new(grant, committed, run.max_host_call_bytes, run.audit.clone())
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

    fn commit(store: &LogTailStore, plugin: &str, offsets: Offsets) -> std::io::Result<()> {
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
}

#[derive(Debug)]
struct GrantPattern {
    /// The directory as written in the grant.
    dir: PathBuf,
    /// Matches a file name in `dir`.
    name: GlobMatcher,
}

/// The validated grant: directories fixed by the operator and the file names matched in each.
#[derive(Debug)]
pub struct LogTailGrant {
    patterns: Vec<GrantPattern>,
    start_at_end: bool,
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
}

impl GrantProblem for LogTailGrantError {
    fn key(&self) -> &'static str {
        match self {
            LogTailGrantError::StartAt(_) => "start_at",
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
                dir: dir.to_path_buf(),
                name: glob.compile_matcher(),
            });
        }
        let start_at_end = match config.start_at.as_deref() {
            None | Some("end") => true,
            Some("beginning") => false,
            Some(other) => return Err(LogTailGrantError::StartAt(other.to_owned())),
        };
        Ok(Self {
            patterns,
            start_at_end,
        })
    }

    /// The files the grant covers now: canonical path → the path as found. Symlinks whose
    /// target is not itself granted are reported through `refuse`.
    fn resolve(&self, mut refuse: impl FnMut(&Path, String)) -> Vec<(PathBuf, PathBuf)> {
        let mut found = BTreeMap::new();
        for pattern in &self.patterns {
            let Ok(entries) = std::fs::read_dir(&pattern.dir) else {
                continue;
            };
            for entry in entries.flatten().take(MAX_FILES_PER_GRANT) {
                let name = entry.file_name();
                if !pattern.name.is_match(Path::new(&name)) {
                    continue;
                }
                let path = entry.path();
                let Ok(canonical) = path.canonicalize() else {
                    continue;
                };
                if !self.covers_canonical(&canonical) {
                    refuse(
                        &path,
                        format!(
                            "it resolves to `{}`, outside the granted files",
                            canonical.display()
                        ),
                    );
                    continue;
                }
                if canonical.is_file() {
                    found.entry(canonical).or_insert(path);
                }
            }
        }
        found.into_iter().collect()
    }

    /// Whether a fully resolved path is a granted file: its directory, resolved too, is a
    /// granted directory and its name matches that directory's pattern.
    fn covers_canonical(&self, canonical: &Path) -> bool {
        let (Some(dir), Some(name)) = (canonical.parent(), canonical.file_name()) else {
            return false;
        };
        self.patterns.iter().any(|p| {
            p.dir.canonicalize().is_ok_and(|granted| granted == dir)
                && p.name.is_match(Path::new(name))
        })
    }
}

/// Committed offsets of one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Offsets {
    version: u32,
    files: BTreeMap<String, FileOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileOffset {
    offset: u64,
    path: PathBuf,
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

/// Per-run state of the `log-tail` capability.
pub struct LogTailCtx {
    grant: Option<Arc<LogTailGrant>>,
    /// Offsets as they stand in this run (committed ones plus what this run read).
    offsets: Offsets,
    first_run: bool,
    changed: bool,
    /// Fingerprints of the granted files seen in this run, and whether one call saw them all.
    seen: std::collections::HashSet<String>,
    scanned_all: bool,
    max_bytes: usize,
    audit: Audit,
}

impl LogTailCtx {
    pub fn new(
        grant: Option<Arc<LogTailGrant>>,
        committed: Option<Offsets>,
        max_bytes: usize,
        audit: Audit,
    ) -> Self {
        Self {
            grant,
            first_run: committed.is_none(),
            offsets: committed.unwrap_or_default(),
            changed: false,
            seen: Default::default(),
            scanned_all: false,
            max_bytes,
            audit,
        }
    }

    /// The offsets to commit if this run's output is accepted (`None` when nothing moved).
    pub fn take_offsets(&mut self) -> Option<Offsets> {
        if !(self.changed || (self.first_run && self.grant.is_some())) {
            return None;
        }
        // Forget files that are gone, so rotated-away files do not pile up in the state.
        if self.scanned_all {
            self.offsets
                .files
                .retain(|fingerprint, _| self.seen.contains(fingerprint));
        }
        Some(std::mem::take(&mut self.offsets))
    }

    pub fn read_new_checked(&mut self, max_bytes: u64) -> Result<Vec<log_tail::Chunk>, Error> {
        let Some(grant) = self.grant.clone() else {
            return Err(self
                .audit
                .deny("log-tail", "log files", "no log files are granted"));
        };
        let mut budget = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .min(self.max_bytes);
        let audit = self.audit.clone();
        let files = grant.resolve(|path, why| {
            audit.deny("log-tail file", &path.display().to_string(), &why);
        });
        let mut chunks = Vec::new();
        let mut seen_fingerprints = std::collections::HashSet::new();
        let mut scanned_all = true;
        for (canonical, found_as) in files {
            if budget == 0 {
                scanned_all = false;
                break;
            }
            let Some((fingerprint, size)) = fingerprint(&canonical) else {
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
            let mut lines = read_whole_lines(&canonical, entry.offset, budget);
            // A line longer than what the guest asked for, but within the host's cap, is still
            // delivered whole (alone) rather than stalling the file forever.
            if matches!(lines, Ok(Lines::TooLong(_)))
                && budget < self.max_bytes
                && chunks.is_empty()
            {
                lines =
                    read_whole_lines(&canonical, entry.offset, self.max_bytes).map(
                        |read| match read {
                            Lines::Data(data) => Lines::Data(first_line(data)),
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
                        data: String::from_utf8_lossy(&data).into_owned(),
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

/// The fingerprint (hash of the first line, hex) and size of a file, or `None` while it has no
/// complete first line yet.
fn fingerprint(path: &Path) -> Option<(String, u64)> {
    let mut file = open_no_follow(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut head = vec![0u8; FINGERPRINT_BYTES.min(size as usize)];
    file.read_exact(&mut head).ok()?;
    let first_line = match head.iter().position(|&b| b == b'\n') {
        Some(newline) => &head[..=newline],
        None if head.len() == FINGERPRINT_BYTES => &head[..],
        None => return None,
    };
    use sha2::Digest;
    Some((hex::encode(&sha2::Sha256::digest(first_line)[..16]), size))
}

/// Opens a resolved path without following a symlink swapped in since it was checked.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn first_line(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        data.truncate(newline + 1);
    }
    data
}

enum Lines {
    /// One or more whole lines.
    Data(Vec<u8>),
    /// Only the start of a line that is still being written.
    Incomplete,
    /// A line longer than the budget: skip this many bytes (up to and including its newline).
    TooLong(usize),
}

fn read_whole_lines(path: &Path, offset: u64, budget: usize) -> std::io::Result<Lines> {
    let mut file = open_no_follow(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    (&mut file).take(budget as u64).read_to_end(&mut data)?;
    if let Some(last_newline) = data.iter().rposition(|&b| b == b'\n') {
        data.truncate(last_newline + 1);
        return Ok(Lines::Data(data));
    }
    if data.len() < budget {
        return Ok(Lines::Incomplete);
    }
    // No newline within the budget: find where this giant line ends, if it has ended.
    let mut skipped = data.len();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(Lines::Incomplete);
        }
        if let Some(i) = buffer[..n].iter().position(|&b| b == b'\n') {
            return Ok(Lines::TooLong(skipped + i + 1));
        }
        skipped += n;
    }
}

impl log_tail::Host for LogTailCtx {
    async fn read_new(&mut self, max_bytes: u64) -> Result<Vec<log_tail::Chunk>, Error> {
        self.read_new_checked(max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn grant(patterns: &[String], start_at: &str) -> Arc<LogTailGrant> {
        Arc::new(
            LogTailGrant::new(&LogTailGrantConfig {
                paths: patterns.to_vec(),
                start_at: Some(start_at.into()),
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
        );
        assert_eq!(small.read_new_checked(8).unwrap()[0].data, "short\n");
        assert_eq!(small.read_new_checked(8).unwrap()[0].data.len(), 101);
        drop(store);
    }

    #[test]
    fn symlinks_out_of_the_grant_and_other_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(dir.path().join("secret"), "secret line\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), logs.join("evil.log")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", logs.join("passwd.log")).unwrap();
        std::fs::write(logs.join("other.txt"), "not granted\n").unwrap();
        append(&logs.join("good.log"), "good\n");
        // A symlink to another granted file is fine.
        std::os::unix::fs::symlink(logs.join("good.log"), logs.join("alias.log")).unwrap();
        let store = LogTailStore::new(None);
        let grant = grant(&[format!("{}/*.log", logs.display())], "beginning");
        let audit = Audit::new("p".into(), "d".into());
        let mut ctx = LogTailCtx::new(Some(grant), None, 1 << 20, audit.clone());
        let chunks = ctx.read_new_checked(u64::MAX).unwrap();
        let text: String = chunks.iter().map(|c| c.data.as_str()).collect();
        assert_eq!(text, "good\n");
        assert_eq!(
            audit.denied_count(),
            2,
            "both escaping symlinks are audited"
        );
        drop(store);
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
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
