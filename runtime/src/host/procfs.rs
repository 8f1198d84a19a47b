//! `procfs` capability: read-only access to files below /proc that the operator granted.
//!
//! Shape: [`ProcfsGrantConfig`] (TOML) → [`ProcfsGrant`] (validated patterns) → [`ProcfsCtx`]
//! (per run) → `procfs::Host`, registered as [`Procfs`]. This module must never open a file outside the proc root: a path is
//! checked lexically (relative, no `..`), against the grant, and then once more after symlinks are
//! resolved (`self/root/etc/passwd` resolves outside /proc and is denied even when `self/**` is
//! granted).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::audit::Audit;
use super::bindings::{Error, pganalytics::collector::procfs};
use super::capability::{GrantProblem, HostCapability};
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
    /// The proc root.
    type Shared = PathBuf;
    type Ctx = ProcfsCtx;
    type Pending = ();

    fn grant(config: &ProcfsGrantConfig) -> Result<ProcfsGrant, ProcfsGrantError> {
        ProcfsGrant::new(config)
    }

    fn shared(_: &(), _: Option<&Path>) -> PathBuf {
        PathBuf::from(PROC_ROOT)
    }

    fn context(grant: Option<Arc<ProcfsGrant>>, root: &PathBuf, run: &RunInfo) -> ProcfsCtx {
        ProcfsCtx::new(
            grant,
            root.clone(),
            run.max_host_call_bytes,
            run.audit.clone(),
        )
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut ProcfsCtx,
    ) -> wasmtime::Result<()> {
        procfs::add_to_linker::<T, HasSelf<ProcfsCtx>>(linker, get)
    }
}

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
        for pattern in &config.paths {
            check_relative(pattern).map_err(|why| ProcfsGrantError::Path {
                path: pattern.clone(),
                why,
            })?;
            builder.add(component_glob(pattern)?);
        }
        let set = builder.build().map_err(ProcfsGrantError::Set)?;
        Ok(Self { set })
    }

    pub fn allows(&self, path: &str) -> bool {
        self.set.is_match(path)
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

/// Per-run state of the `procfs` capability.
pub struct ProcfsCtx {
    grant: Option<Arc<ProcfsGrant>>,
    root: PathBuf,
    max_bytes: usize,
    audit: Audit,
}

impl ProcfsCtx {
    /// `root` is `/proc` in production; tests point it at a directory they built.
    pub fn new(
        grant: Option<Arc<ProcfsGrant>>,
        root: PathBuf,
        max_bytes: usize,
        audit: Audit,
    ) -> Self {
        Self {
            grant,
            root,
            max_bytes,
            audit,
        }
    }

    /// The whole checked read, synchronous: files below /proc are generated in memory by the
    /// kernel and never block on storage.
    pub fn read_checked(&self, path: &str) -> Result<String, Error> {
        const CAPABILITY: &str = "procfs path";
        if let Err(why) = check_relative(path) {
            return Err(self.audit.deny(CAPABILITY, path, why));
        }
        if !self
            .grant
            .as_deref()
            .is_some_and(|grant| grant.allows(path))
        {
            return Err(self
                .audit
                .deny(CAPABILITY, path, "no granted pattern matches it"));
        }
        let full = self.root.join(path);
        let resolved = match full.canonicalize() {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("procfs `{path}` does not exist")));
            }
            Err(e) => return Err(Error::Io(format!("procfs `{path}`: {e}"))),
        };
        let root = self
            .root
            .canonicalize()
            .map_err(|e| Error::Io(format!("proc root: {e}")))?;
        if !resolved.starts_with(&root) || resolved == root {
            return Err(self.audit.deny(
                CAPABILITY,
                path,
                &format!(
                    "it resolves to `{}`, outside the proc root",
                    resolved.display()
                ),
            ));
        }
        read_capped(&resolved, self.max_bytes)
            .map_err(|e| e.with_resource(&format!("procfs `{path}`")))
    }
}

/// Why a capped read failed, before the resource name is attached.
pub(crate) enum ReadError {
    TooLarge(usize),
    NotFound,
    Io(std::io::Error),
}

impl ReadError {
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

/// Reads at most `cap` bytes of text; one byte more means the file is too large.
pub(crate) fn read_capped(path: &Path, cap: usize) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(e),
    })?;
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl procfs::Host for ProcfsCtx {
    async fn read(&mut self, path: String) -> Result<String, Error> {
        self.read_checked(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(root: &Path, patterns: &[&str]) -> ProcfsCtx {
        let grant = ProcfsGrant::new(&ProcfsGrantConfig {
            paths: patterns.iter().map(|p| p.to_string()).collect(),
        })
        .unwrap();
        ProcfsCtx::new(
            Some(Arc::new(grant)),
            root.to_path_buf(),
            1 << 20,
            Audit::new("t".into(), "d".into()),
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
    fn self_environ_is_denied_unless_granted_by_name() {
        let proc = ctx(Path::new("/proc"), &["stat", "*/stat"]);
        denied(proc.read_checked("self/environ"));
        let granted = ctx(Path::new("/proc"), &["self/environ"]);
        assert!(granted.read_checked("self/environ").is_ok());
    }

    #[test]
    fn symlinks_leaving_the_root_are_denied() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proc");
        std::fs::create_dir_all(root.join("1")).unwrap();
        std::fs::write(root.join("1/stat"), "inside").unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink("1", root.join("self")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("1/root")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        let proc = ctx(&root, &["**"]);
        // A symlink that stays inside the root is followed, like /proc/self.
        assert_eq!(proc.read_checked("self/stat").unwrap(), "inside");
        denied(proc.read_checked("self/root/secret"));
        denied(proc.read_checked("escape"));
        // The real /proc: self/root points at the host's filesystem root.
        let real = ctx(Path::new("/proc"), &["**"]);
        denied(real.read_checked("self/root/etc/passwd"));
        denied(real.read_checked("self/cwd"));
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
    }

    #[test]
    fn no_grant_denies_everything() {
        let proc = ProcfsCtx::new(
            None,
            "/proc".into(),
            1024,
            Audit::new("t".into(), "d".into()),
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
