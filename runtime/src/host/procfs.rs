//! `procfs` capability: read-only access to files below /proc that the operator granted.
//!
//! Shape: [`ProcfsGrantConfig`] (TOML) → [`ProcfsGrant`] (validated patterns) → [`ProcfsCtx`]
//! (per run) → `procfs::Host`, registered as [`Procfs`]. This module must never open a file
//! outside the proc root nor follow a link to get there: a path is checked lexically (relative,
//! no `.` or `..`) and against the grant before anything is opened, then opened below a
//! directory fd of the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` (or `O_NOFOLLOW` on every component), so `self/root/...`,
//! `self/cwd/...`, `self/fd/N` and `self/map_files/...` are refused even under `self/**`. The
//! one link the host follows is `self`, by rewriting it to the agent's pid. Files in
//! [`EXACT_GRANT_ONLY`] (`environ`, `mem`, ...) are served only when a grant names them exactly.
//! Only regular files are read, opened `O_NONBLOCK`, in the plugin's blocking lane, under its
//! deadline, with one exception: the few system-wide counter files in [`NEVER_WAIT`] (`stat`,
//! `meminfo`, ...), which the kernel fills from in-memory counters without waiting on anything,
//! are read on the calling thread once the root is known to be a real procfs (a hop to the
//! blocking pool and back costs more than the read). Everything else, every file of a process
//! directory included, goes through the lane.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::audit::Audit;
use super::bindings::{Error, pganalytics::collector::procfs};
use super::blocking::{BlockingLane, BlockingLanes};
use super::capability::{GrantProblem, HostCapability};
use super::fsio;
use super::guest_text;
use super::run::RunInfo;

/// Where the kernel's process filesystem is mounted.
const PROC_ROOT: &str = "/proc";

/// The `procfs` interface.
pub struct Procfs;

impl HostCapability for Procfs {
    const NAME: &'static str = "procfs";
    const SUMMARY: &'static str = "read files below /proc";
    const GRANT_EXAMPLE: Option<&'static str> = Some("paths = [\"stat\", \"meminfo\"]");

    type Setup = ();
    type GrantConfig = ProcfsGrantConfig;
    type Grant = ProcfsGrant;
    type GrantError = ProcfsGrantError;
    type Shared = ProcfsShared;
    type Ctx = ProcfsCtx;
    type Pending = ();

    fn grant(config: &ProcfsGrantConfig) -> Result<ProcfsGrant, ProcfsGrantError> {
        ProcfsGrant::new(config)
    }

    fn shared(_: &(), _: Option<&Path>) -> ProcfsShared {
        ProcfsShared {
            root: Arc::new(ProcRoot::new(PathBuf::from(PROC_ROOT))),
            lanes: BlockingLanes::default(),
        }
    }

    fn context(grant: Option<Arc<ProcfsGrant>>, shared: &ProcfsShared, run: &RunInfo) -> ProcfsCtx {
        ProcfsCtx::new(
            grant,
            shared.root.clone(),
            run.max_host_call_bytes,
            run.audit.clone(),
            shared.lanes.lane(Self::NAME, &run.plugin, run.deadline),
        )
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut ProcfsCtx,
    ) -> wasmtime::Result<()> {
        procfs::add_to_linker::<T, HasSelf<ProcfsCtx>>(linker, get)
    }
}

/// What every run of every plugin shares: the proc root and the plugins' blocking lanes.
#[derive(Clone)]
pub struct ProcfsShared {
    root: Arc<ProcRoot>,
    lanes: BlockingLanes,
}

/// The proc root, opened once (in a blocking lane, on first use) and held as a directory fd
/// that every later open is made beneath. A failed open is not remembered: the next call tries
/// again and reports its own error.
#[derive(Debug)]
pub struct ProcRoot {
    path: PathBuf,
    opened: OnceLock<OpenedRoot>,
}

#[derive(Debug)]
pub(crate) struct OpenedRoot {
    fd: OwnedFd,
    /// Whether the directory is a procfs mount: only there are [`NEVER_WAIT`] files the
    /// kernel's counters (a test's directory, or anything mounted over /proc, is not).
    procfs: bool,
}

impl ProcRoot {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            opened: OnceLock::new(),
        }
    }

    /// The root's fd, opening it without following any link if this is the first use. Makes
    /// blocking syscalls the first time: call it in the lane.
    pub(crate) fn open(&self) -> std::io::Result<&OpenedRoot> {
        if let Some(opened) = self.opened.get() {
            return Ok(opened);
        }
        let fd = fsio::open_dir_no_follow(&self.path)?;
        let procfs = is_procfs(&fd);
        // Two first calls may race here; either fd is as good, the other is closed.
        Ok(self.opened.get_or_init(|| OpenedRoot { fd, procfs }))
    }

    /// The root's fd when it is already open and a real procfs.
    pub(crate) fn opened_procfs(&self) -> Option<&OwnedFd> {
        self.opened
            .get()
            .filter(|opened| opened.procfs)
            .map(|opened| &opened.fd)
    }
}

fn is_procfs(fd: &OwnedFd) -> bool {
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid open fd and `stat` writable.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut stat) };
    rc == 0 && stat.f_type == libc::PROC_SUPER_MAGIC
}

/// Files directly below the proc root that are read on the calling thread rather than in the
/// blocking lane. Each is generated from system-wide counters kept in memory: producing it takes
/// no lock that is held across I/O and never waits for an event, another process or a device,
/// so it costs microseconds of CPU like any other work of the call. Process directories
/// (`self`, `PID/...`: their `maps`, `cmdline` and others wait on that process's locks),
/// `cpuinfo` (asks every CPU for its frequency), `swaps` (waits for a running swapon) and
/// everything not listed stay in the lane. Grants are checked exactly as for any other file.
const NEVER_WAIT: &[&str] = &[
    "stat",
    "meminfo",
    "loadavg",
    "diskstats",
    "uptime",
    "vmstat",
    "version",
];

/// Threat: one `read-many` call making the host open thousands of files before the plugin's
/// code runs again (the [`NEVER_WAIT`] ones on an async worker). Four files make a sysstat run.
pub const MAX_PATHS_PER_CALL: usize = 16;

/// `[plugins.NAME.grants.procfs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcfsGrantConfig {
    /// Files the plugin may read, relative to /proc: exact names (`stat`) or globs where `*`
    /// stays within one path component (`net/*`, `sys/kernel/*`).
    pub paths: Vec<String>,
}

/// The validated grant: compiled patterns, shared by every run of the plugin.
#[derive(Debug, Clone)]
pub struct ProcfsGrant {
    set: GlobSet,
    /// Patterns without a wildcard: the only way to be granted an [`EXACT_GRANT_ONLY`] file.
    exact: HashSet<String>,
}

/// Why a `[plugins.NAME.grants.procfs]` table is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsGrantError {
    #[error("procfs path `{path}` {why}")]
    Path { path: String, why: &'static str },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{0}")]
    Set(globset::Error),
}

impl GrantProblem for ProcfsGrantError {
    fn key(&self) -> &'static str {
        "paths"
    }
}

impl ProcfsGrant {
    pub fn new(config: &ProcfsGrantConfig) -> Result<Self, ProcfsGrantError> {
        let mut builder = GlobSetBuilder::new();
        let mut exact = HashSet::new();
        for pattern in &config.paths {
            if !pattern.contains(['*', '?', '[', ']', '{', '}', '\\']) {
                exact.insert(pattern.clone());
            }
            check_relative(pattern).map_err(|why| ProcfsGrantError::Path {
                path: pattern.clone(),
                why,
            })?;
            builder.add(component_glob(pattern)?);
        }
        let set = builder.build().map_err(ProcfsGrantError::Set)?;
        Ok(Self { set, exact })
    }

    pub fn allows(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// Whether a pattern without wildcards is exactly `path`.
    pub fn names_exactly(&self, path: &str) -> bool {
        self.exact.contains(path)
    }
}

/// A grant pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern `{pattern}`: {error}")]
pub struct PatternError {
    pub pattern: String,
    pub error: globset::Error,
}

/// Compiles a grant pattern so that `*` and `?` never cross a `/`.
pub(crate) fn component_glob(pattern: &str) -> Result<Glob, PatternError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|error| PatternError {
            pattern: pattern.to_owned(),
            error,
        })
}

/// Lexical checks on a path that must stay below its root.
fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path.starts_with('/') {
        return Err("must be relative to /proc, not absolute");
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => {}
            Component::CurDir | Component::ParentDir => return Err("must not contain `.` or `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("must be relative"),
        }
    }
    Ok(())
}

/// Files never served through a wildcard, only when a grant names them exactly: process
/// memory and environments (secrets), kernel memory, and files that block or leak addresses.
/// Threat: `self/**` or `*/*` handing out `environ` (passwords in variables) or `mem`.
const EXACT_GRANT_ONLY: &[&str] = &[
    "environ",
    "mem",
    "pagemap",
    "kcore",
    "kmsg",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "auxv",
    "stack",
    "syscall",
    "timers",
    "sched_debug",
];

/// Per-run state of the `procfs` capability.
pub struct ProcfsCtx {
    grant: Option<Arc<ProcfsGrant>>,
    root: Arc<ProcRoot>,
    max_bytes: usize,
    audit: Audit,
    lane: BlockingLane,
}

impl ProcfsCtx {
    /// `root` is `/proc` in production; tests point it at a directory they built. Reads run in
    /// `lane` and end at its deadline (except [`NEVER_WAIT`] files of a real procfs).
    pub fn new(
        grant: Option<Arc<ProcfsGrant>>,
        root: Arc<ProcRoot>,
        max_bytes: usize,
        audit: Audit,
        lane: BlockingLane,
    ) -> Self {
        Self {
            grant,
            root,
            max_bytes,
            audit,
            lane,
        }
    }

    /// The grant checks, before anything touches the filesystem: a path refused here and a path
    /// that does not exist look the same to the guest. Returns the path below the root to open.
    fn check(&self, path: &str) -> Result<String, Error> {
        const CAPABILITY: &str = "procfs path";
        if let Err(why) = check_relative(path) {
            return Err(self.audit.deny(CAPABILITY, path, why));
        }
        let Some(grant) = self.grant.as_deref().filter(|grant| grant.allows(path)) else {
            return Err(self
                .audit
                .deny(CAPABILITY, path, "no granted pattern matches it"));
        };
        let last = path.split('/').rfind(|c| !c.is_empty()).unwrap_or(path);
        if EXACT_GRANT_ONLY.contains(&last) && !grant.names_exactly(path) {
            return Err(self.audit.deny(
                CAPABILITY,
                path,
                "this file is served only when a grant names it exactly, never from a pattern",
            ));
        }
        // `/proc/self` is a symlink, the one link the host follows itself: to its own pid.
        let mut components = path.splitn(2, '/');
        let first = components.next().unwrap_or_default();
        let rest = components.next();
        match first {
            "self" => Ok(match rest {
                Some(rest) => format!("{}/{rest}", std::process::id()),
                None => std::process::id().to_string(),
            }),
            "thread-self" => Err(self.audit.deny(
                CAPABILITY,
                path,
                "`thread-self` names a host thread, not the plugin; it is never served",
            )),
            _ => Ok(path.to_owned()),
        }
    }

    /// The whole checked read, on the calling thread (tests; the host call runs it in the lane).
    pub fn read_checked(&self, path: &str) -> Result<String, Error> {
        let relative = self.check(path)?;
        let root = open_root(&self.root, path)?;
        read_beneath(root, &relative, self.max_bytes, path, &self.audit)
    }

    /// The checked read: in the blocking lane, bounded by the run's deadline, or on this thread
    /// for a [`NEVER_WAIT`] file of a real procfs whose root is already open.
    pub async fn read_in_lane(&self, path: &str) -> Result<String, Error> {
        self.read_up_to(path, self.max_bytes).await
    }

    /// `read-many`: each path read as [`ProcfsCtx::read_in_lane`] reads it, in order, all of
    /// them within one per-call byte limit.
    pub async fn read_many_in_lane(
        &self,
        paths: &[String],
    ) -> Result<Vec<Result<String, Error>>, Error> {
        if paths.len() > MAX_PATHS_PER_CALL {
            return Err(Error::Invalid(format!(
                "procfs read-many: {} paths in one call, at most {MAX_PATHS_PER_CALL}",
                paths.len()
            )));
        }
        let mut left = self.max_bytes;
        let mut results = Vec::with_capacity(paths.len());
        for path in paths {
            let result = match self.read_up_to(path, left).await {
                Ok(text) => {
                    left -= text.len();
                    Ok(text)
                }
                Err(Error::TooLarge(_)) if left < self.max_bytes => Err(Error::TooLarge(format!(
                    "procfs `{}` does not fit in the {left} bytes left of the {}-byte per-call \
                     limit after the files before it",
                    guest_text::quote(path),
                    self.max_bytes
                ))),
                Err(e) => Err(e),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// The checked read of at most `max_bytes` (see [`ProcfsCtx::read_in_lane`]).
    async fn read_up_to(&self, path: &str, max_bytes: usize) -> Result<String, Error> {
        let relative = self.check(path)?;
        if NEVER_WAIT.contains(&relative.as_str())
            && let Some(root) = self.root.opened_procfs()
        {
            return read_beneath(root, &relative, max_bytes, path, &self.audit);
        }
        let (root, audit) = (self.root.clone(), self.audit.clone());
        let guest_path = path.to_owned();
        self.lane
            .run(&format!("procfs `{path}`"), move || {
                let root = open_root(&root, &guest_path)?;
                read_beneath(root, &relative, max_bytes, &guest_path, &audit)
            })
            .await
    }
}

/// The root's fd (opened on first use), or `unavailable` naming the path the guest asked for.
fn open_root<'a>(root: &'a ProcRoot, path: &str) -> Result<&'a OwnedFd, Error> {
    root.open().map(|opened| &opened.fd).map_err(|e| {
        Error::Unavailable(format!(
            "procfs `{path}`: the proc root cannot be opened: {e}"
        ))
    })
}

/// Opens `relative` below `root` without following any link, refuses what is not a regular
/// file, and reads it without blocking. Messages name the path as the guest wrote it, never a
/// resolved host path.
fn read_beneath(
    root: &OwnedFd,
    relative: &str,
    max_bytes: usize,
    path: &str,
    audit: &Audit,
) -> Result<String, Error> {
    let resource = || format!("procfs `{path}`");
    let mut file = match fsio::open_beneath(root, relative) {
        Ok(file) => file,
        Err(e) if fsio::is_link_refusal(&e) => {
            return Err(audit.deny(
                "procfs path",
                path,
                "it passes through a symbolic link, which is never followed",
            ));
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Err(Error::NotFound(format!("{} does not exist", resource())));
        }
        Err(e) => return Err(Error::Io(format!("{}: {e}", resource()))),
    };
    let metadata = file
        .metadata()
        .map_err(|e| Error::Io(format!("{}: {e}", resource())))?;
    if !metadata.file_type().is_file() {
        return Err(audit.deny("procfs path", path, "it is not a regular file"));
    }
    let bytes = fsio::read_up_to(&mut file, max_bytes)
        .map_err(|e| Error::Io(format!("{}: {e}", resource())))?;
    if bytes.len() > max_bytes {
        return Err(ReadError::TooLarge(max_bytes).with_resource(&resource()));
    }
    Ok(fsio::into_text(bytes))
}

/// Why a capped read failed, before the resource name is attached.
pub(crate) enum ReadError {
    TooLarge(usize),
    NotFound,
    Io(std::io::Error),
}

impl ReadError {
    /// The error of opening the file.
    pub(crate) fn from_open(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Io(e),
        }
    }

    pub(crate) fn with_resource(self, resource: &str) -> Error {
        match self {
            ReadError::TooLarge(cap) => Error::TooLarge(format!(
                "{resource} is larger than the {cap}-byte per-call limit"
            )),
            ReadError::NotFound => Error::NotFound(format!("{resource} does not exist")),
            ReadError::Io(e) => Error::Io(format!("{resource}: {e}")),
        }
    }
}

/// Reads at most `cap` bytes of text from a path the host chose (not the guest), without
/// blocking on a FIFO; one byte more means the file is too large.
pub(crate) fn read_capped(path: &Path, cap: usize) -> Result<String, ReadError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(ReadError::from_open)?;
    read_open_capped(&mut file, cap)
}

/// Reads at most `cap` bytes of text from a file the host opened; one byte more means the file
/// is too large.
pub(crate) fn read_open_capped(file: &mut std::fs::File, cap: usize) -> Result<String, ReadError> {
    let bytes = fsio::read_up_to(file, cap).map_err(ReadError::Io)?;
    if bytes.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(fsio::into_text(bytes))
}

impl procfs::Host for ProcfsCtx {
    async fn read(&mut self, path: String) -> Result<String, Error> {
        self.read_in_lane(&path).await
    }

    async fn read_many(&mut self, paths: Vec<String>) -> Result<Vec<Result<String, Error>>, Error> {
        self.read_many_in_lane(&paths).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ctx(root: &Path, patterns: &[&str]) -> ProcfsCtx {
        let grant = ProcfsGrant::new(&ProcfsGrantConfig {
            paths: patterns.iter().map(|p| p.to_string()).collect(),
        })
        .unwrap();
        ProcfsCtx::new(
            Some(Arc::new(grant)),
            Arc::new(ProcRoot::new(root.to_path_buf())),
            1 << 20,
            Audit::new("t".into(), "d".into()),
            BlockingLane::standalone("procfs", "t", Instant::now() + Duration::from_secs(30)),
        )
    }

    fn denied(result: Result<String, Error>) -> String {
        match result {
            Err(Error::Denied(message)) => message,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn exact_name_is_allowed_and_its_neighbour_denied() {
        let proc = ctx(Path::new("/proc"), &["stat"]);
        assert!(proc.read_checked("stat").unwrap().starts_with("cpu "));
        let message = denied(proc.read_checked("meminfo"));
        assert!(
            message.contains("`meminfo`") && message.contains("plugin `t`"),
            "{message}"
        );
    }

    #[test]
    fn glob_stays_within_one_component() {
        let proc = ctx(Path::new("/proc"), &["sys/kernel/*"]);
        assert!(
            proc.read_checked("sys/kernel/ostype")
                .unwrap()
                .contains("Linux")
        );
        denied(proc.read_checked("sys/kernel/random/uuid"));
        denied(proc.read_checked("sys/vm/swappiness"));
    }

    #[test]
    fn absolute_and_dotdot_paths_are_denied_even_when_everything_is_granted() {
        let proc = ctx(Path::new("/proc"), &["**"]);
        denied(proc.read_checked("/etc/passwd"));
        denied(proc.read_checked("../etc/passwd"));
        denied(proc.read_checked("self/../../etc/passwd"));
        denied(proc.read_checked("./stat"));
        denied(proc.read_checked(""));
    }

    #[test]
    fn secret_files_are_served_only_when_named_exactly() {
        let tid = std::process::id();
        for patterns in [
            &["self/*"][..],
            &["self/**"],
            &["**"],
            &["*/*"],
            &["self/task/*/*"],
        ] {
            let proc = ctx(Path::new("/proc"), patterns);
            for path in [
                "self/environ".to_owned(),
                "self/mem".to_owned(),
                "self/pagemap".to_owned(),
                "self/auxv".to_owned(),
                format!("self/task/{tid}/environ"),
                "1/environ".to_owned(),
                "kcore".to_owned(),
            ] {
                if proc.grant.as_ref().unwrap().allows(&path) {
                    let message = denied(proc.read_checked(&path));
                    assert!(
                        message.contains("exactly"),
                        "{patterns:?} {path}: {message}"
                    );
                }
            }
        }
        let proc = ctx(Path::new("/proc"), &["self/*", "stat", "*/stat"]);
        denied(proc.read_checked("self/environ"));
        assert!(proc.read_checked("self/status").unwrap().contains("Pid:"));
        let granted = ctx(Path::new("/proc"), &["self/environ"]);
        assert!(granted.read_checked("self/environ").is_ok());
    }

    #[test]
    fn links_are_never_followed_even_under_a_recursive_grant() {
        let proc = ctx(Path::new("/proc"), &["**"]);
        let pid = std::process::id().to_string();
        let map_file = std::fs::read_dir("/proc/self/map_files")
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|entry| entry.ok())
            .map(|entry| format!("self/map_files/{}", entry.file_name().to_string_lossy()))
            .unwrap_or_else(|| "self/map_files/0-1".to_owned());
        for path in [
            "self/root/etc/passwd".to_owned(),
            "self/cwd/Cargo.toml".to_owned(),
            "self/cwd".to_owned(),
            "self/exe".to_owned(),
            "self/fd/0".to_owned(),
            "self/fd/1".to_owned(),
            map_file,
            format!("self/task/{pid}/root/etc/passwd"),
            format!("self/task/{pid}/cwd/Cargo.toml"),
            "1/root/etc/passwd".to_owned(),
            "1/cwd/etc/passwd".to_owned(),
            "thread-self/stat".to_owned(),
            "thread-self/environ".to_owned(),
        ] {
            let message = denied(proc.read_checked(&path));
            // The guest learns neither where a link points nor the agent's pid.
            assert!(!message.contains("resolves"), "{path}: {message}");
            if !path.contains(&pid) {
                assert!(!message.contains(&pid), "{path}: {message}");
            }
        }
        // What is not a link is still served under the same grant.
        assert!(proc.read_checked("self/stat").unwrap().starts_with(&pid));
        assert!(proc.read_checked(&format!("self/task/{pid}/stat")).is_ok());
    }

    #[test]
    fn a_fake_root_proves_self_is_rewritten_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proc");
        let pid = std::process::id().to_string();
        std::fs::create_dir_all(root.join(&pid)).unwrap();
        std::fs::write(root.join(&pid).join("stat"), "inside").unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        // A `self` link that points elsewhere is never used: the host resolves `self` itself.
        std::fs::create_dir_all(root.join("decoy")).unwrap();
        std::fs::write(root.join("decoy/stat"), "decoy").unwrap();
        std::os::unix::fs::symlink("decoy", root.join("self")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join(&pid).join("root")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("decoy/stat", root.join("inside_link")).unwrap();
        let proc = ctx(&root, &["**"]);
        assert_eq!(proc.read_checked("self/stat").unwrap(), "inside");
        denied(proc.read_checked("self/root/secret"));
        denied(proc.read_checked("escape"));
        denied(proc.read_checked("inside_link"));
    }

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let proc = ctx(dir.path(), &["*"]);
        // A blocking open of a FIFO with no writer would never return.
        let message = denied(proc.read_checked("fifo"));
        assert!(message.contains("not a regular file"), "{message}");
        denied(proc.read_checked("sub"));
    }

    #[tokio::test]
    async fn a_proc_file_that_waits_for_data_returns_within_the_call() {
        // /proc/kmsg blocks a plain read until the kernel logs something; opened O_NONBLOCK it
        // answers at once (or is refused for lack of CAP_SYSLOG). Either way the call returns.
        let proc = ctx(Path::new("/proc"), &["kmsg"]);
        let outcome = proc.read_in_lane("kmsg").await;
        assert!(!matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
        // From a pattern it is not even opened.
        let proc = ctx(Path::new("/proc"), &["*"]);
        denied(proc.read_in_lane("kmsg").await);
    }

    /// A lane whose one slot is held by a read stuck on a FIFO past its deadline: every call
    /// through it is refused as `unavailable` until the FIFO gets a writer. Returns the lane and
    /// the FIFO (write to it to release the slot).
    async fn stuck_lane(dir: &Path) -> (BlockingLane, PathBuf) {
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let lane =
            BlockingLane::standalone("procfs", "t", Instant::now() + Duration::from_millis(20));
        let reader = fifo.clone();
        let stuck = lane
            .run("stuck", move || {
                std::fs::read(&reader).map_err(|e| Error::Io(e.to_string()))
            })
            .await;
        assert!(matches!(stuck, Err(Error::Timeout(_))), "{stuck:?}");
        assert_eq!(lane.in_flight(), 1);
        (lane, fifo)
    }

    #[tokio::test]
    async fn only_never_wait_files_of_a_real_procfs_skip_the_lane_and_grants_still_apply() {
        let dir = tempfile::tempdir().unwrap();
        let (lane, fifo) = stuck_lane(dir.path()).await;
        let with_lane = |root: &Path, patterns: &[&str]| {
            let mut proc = ctx(root, patterns);
            proc.lane = lane.clone();
            proc
        };
        let proc = with_lane(
            Path::new("/proc"),
            &["stat", "meminfo", "self/status", "cpuinfo"],
        );
        // Before the root is open, even `stat` goes through the lane (opening it may block).
        assert!(matches!(
            proc.read_in_lane("stat").await,
            Err(Error::Unavailable(_))
        ));
        proc.read_checked("meminfo").unwrap();
        // Once it is open and known to be procfs, the never-wait files are read here...
        assert!(proc.read_in_lane("stat").await.unwrap().starts_with("cpu "));
        assert!(
            proc.read_in_lane("meminfo")
                .await
                .unwrap()
                .contains("MemTotal")
        );
        // ...and everything else still waits for the lane: process files, other files.
        for path in ["self/status", "cpuinfo"] {
            let outcome = proc.read_in_lane(path).await;
            assert!(
                matches!(outcome, Err(Error::Unavailable(_))),
                "{path}: {outcome:?}"
            );
        }
        // The grant is checked before either path: an ungranted never-wait file is denied.
        denied(proc.read_in_lane("loadavg").await);
        denied(proc.read_in_lane("self/../stat").await);
        // A root that is not procfs never skips the lane, whatever its files are called.
        let fake = tempfile::tempdir().unwrap();
        std::fs::write(fake.path().join("stat"), "cpu  1 2 3 4\n").unwrap();
        let proc = with_lane(fake.path(), &["stat"]);
        assert_eq!(proc.read_checked("stat").unwrap(), "cpu  1 2 3 4\n");
        assert!(matches!(
            proc.read_in_lane("stat").await,
            Err(Error::Unavailable(_))
        ));
        std::fs::write(&fifo, b"x").unwrap();
    }

    #[test]
    fn missing_files_are_not_found_and_large_files_too_large() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 2048]).unwrap();
        let mut proc = ctx(dir.path(), &["*"]);
        proc.max_bytes = 1024;
        assert!(matches!(
            proc.read_checked("nothing"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(proc.read_checked("big"), Err(Error::TooLarge(m)) if m.contains("1024")));
        // Ungranted: a denial whether it exists or not.
        let other = ctx(dir.path(), &["stat"]);
        let missing = denied(other.read_checked("nothing"));
        let present = denied(other.read_checked("big"));
        assert_eq!(missing.replace("nothing", "X"), present.replace("big", "X"));
    }

    #[tokio::test]
    async fn read_many_checks_each_path_as_read_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3 4\n").unwrap();
        std::fs::write(dir.path().join("environ"), "SECRET=1").unwrap();
        std::os::unix::fs::symlink("stat", dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/dev"), "eth0").unwrap();
        let proc = ctx(dir.path(), &["stat", "*", "net/*"]);
        let paths: Vec<String> = [
            "stat", "meminfo", "environ", "link", "../stat", "/stat", "net/dev", "net",
        ]
        .map(String::from)
        .to_vec();
        let results = proc.read_many_in_lane(&paths).await.unwrap();
        assert_eq!(results.len(), paths.len());
        // The same answer, path by path, as `read` gives.
        for (path, many) in paths.iter().zip(&results) {
            let one = proc.read_in_lane(path).await;
            assert_eq!(format!("{many:?}"), format!("{one:?}"), "{path}");
        }
        assert_eq!(results[0].as_deref().unwrap(), "cpu  1 2 3 4\n");
        assert!(matches!(results[1], Err(Error::NotFound(_))));
        for denial in [2, 3, 4, 5, 7] {
            assert!(
                matches!(results[denial], Err(Error::Denied(_))),
                "{denial}: {:?}",
                results[denial]
            );
        }
        assert_eq!(results[6].as_deref().unwrap(), "eth0");
        // Nothing granted: every path denied, none read.
        let none = ProcfsCtx::new(
            None,
            Arc::new(ProcRoot::new(dir.path().to_path_buf())),
            1024,
            Audit::new("t".into(), "d".into()),
            BlockingLane::standalone("procfs", "t", Instant::now() + Duration::from_secs(30)),
        );
        let results = none.read_many_in_lane(&paths[..2]).await.unwrap();
        assert!(results.iter().all(|r| matches!(r, Err(Error::Denied(_)))));
    }

    #[tokio::test]
    async fn read_many_is_bounded_in_paths_and_in_bytes_for_the_whole_call() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![b'a'; 600]).unwrap();
        std::fs::write(dir.path().join("b"), vec![b'b'; 600]).unwrap();
        std::fs::write(dir.path().join("c"), vec![b'c'; 300]).unwrap();
        let mut proc = ctx(dir.path(), &["*"]);
        proc.max_bytes = 1024;
        let paths = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let results = proc
            .read_many_in_lane(&paths(&["a", "b", "c"]))
            .await
            .unwrap();
        assert_eq!(results[0].as_ref().unwrap().len(), 600);
        assert!(
            matches!(&results[1], Err(Error::TooLarge(m)) if m.contains("424 bytes left") && m.contains("1024")),
            "{:?}",
            results[1]
        );
        // What a refused file did not take is still there for the next one.
        assert_eq!(results[2].as_ref().unwrap().len(), 300);
        // Each file alone fits, as with `read`.
        for name in ["a", "b"] {
            assert!(proc.read_in_lane(name).await.is_ok());
        }
        let too_many = paths(&["a"; MAX_PATHS_PER_CALL + 1]);
        assert!(matches!(
            proc.read_many_in_lane(&too_many).await,
            Err(Error::Invalid(m)) if m.contains(&format!("at most {MAX_PATHS_PER_CALL}"))
        ));
        let most = paths(&["c"; MAX_PATHS_PER_CALL]);
        let results = proc.read_many_in_lane(&most).await.unwrap();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert!(
            results[3..]
                .iter()
                .all(|r| matches!(r, Err(Error::TooLarge(_))))
        );
    }

    #[test]
    fn no_grant_denies_everything() {
        let proc = ProcfsCtx::new(
            None,
            Arc::new(ProcRoot::new("/proc".into())),
            1024,
            Audit::new("t".into(), "d".into()),
            BlockingLane::standalone("procfs", "t", Instant::now() + Duration::from_secs(30)),
        );
        denied(proc.read_checked("stat"));
    }

    #[test]
    fn grants_with_dotdot_or_absolute_paths_are_rejected_in_config() {
        for bad in ["/etc/passwd", "../x", "a/../b"] {
            let err = ProcfsGrant::new(&ProcfsGrantConfig {
                paths: vec![bad.into()],
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
