//! The compile cache: compiled components (`Component::serialize`) kept on disk so a restart,
//! reload or unchanged hot-swap check does not compile the same file again.
//!
//! Guards against the one danger of such a cache: `Component::deserialize` trusts its input
//! completely (it maps native code and runs it), so bytes that are corrupted, written by
//! someone else or made for another engine must never reach it. Therefore:
//!
//! - an entry is looked up only after the source file's digest pin and signature were checked,
//!   and it is keyed by that verified sha256, so a grant always applies to the verified binary;
//! - the key also holds the engine's `precompile_compatibility_hash` (wasmtime version, target,
//!   compile settings) and whether the engine is the metered (fuel) one;
//! - the directory must be owned by this process's user and is kept at mode 0700 (group/other
//!   bits are removed, with a warning; a directory owned by another user is refused), entries
//!   are regular files owned by this user, opened without following symlinks;
//! - each entry carries a header with the sha256 of its payload, checked before deserializing;
//!   an entry that fails any check is discarded and rebuilt from the verified source;
//! - entries are replaced atomically (`crate::fsutil`), so a crash leaves no half entry.
//!
//! Entries do not pile up: an entry's modification time is set to now whenever it is used, and
//! when the cache is opened (at start, and at each reload), entries unused for [`MAX_IDLE`] and
//! temp files a crash left are removed. Only files named as this module names them are touched.
//!
//! The checksum detects corruption and foreign files, not an attacker who can already write
//! files as this user in this 0700 directory (who could also replace the binary itself).
//!
//! Entry layout, version 1, integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       8     magic b"PGACWASM"
//! 8       4     format version (1)
//! 12      32    sha256 of the source component
//! 44      32    engine key: sha256 of the engine's precompile compatibility hash
//! 76      1     1 for the metered (fuel) engine, else 0
//! 77      8     payload length
//! 85      32    sha256 of the payload
//! 117     ...   payload: the output of `Component::serialize`
//! ```
//!
//! The file name is `SOURCE_SHA256-ENGINEKEY16-{plain,metered}.cwasm`.

use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::fsutil;

const MAGIC: &[u8; 8] = b"PGACWASM";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 32 + 32 + 1 + 8 + 32;

/// How an entry made for another engine configuration is described (callers match on it).
pub(super) const OTHER_ENGINE: &str = "it was made for another engine configuration";

/// Threat: a huge file in the cache directory read into memory. Compiled collectors are a few
/// MiB; a component file may be 64 MiB and its native code a few times that.
pub const MAX_ENTRY_BYTES: u64 = 512 << 20;

/// An entry not used for this long is removed when the cache is next opened: the entry of a
/// plugin version replaced or removed, or of an agent version since upgraded. A plugin still in
/// use is loaded (so its entry touched) at every start and reload; an agent running this long
/// without either compiles each plugin once more, at most a second or so.
pub const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("compile cache `{}`: {message}", dir.display())]
    Directory { dir: PathBuf, message: String },
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from a checked entry.
    Hit,
    /// Compiled; stored when a cache is configured.
    Compiled,
    /// An entry was there but failed its checks; it was discarded and the source compiled.
    Rebuilt,
    /// Deserialized from a checked artifact of the read-only precompiled directory (see
    /// `super::precompiled`).
    Precompiled,
}

impl CacheOutcome {
    /// How the component was obtained, for logs and `config check`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Hit => "compile cache",
            Self::Compiled => "compiled",
            Self::Rebuilt => "compiled, bad cache entry replaced",
            Self::Precompiled => "precompiled",
        }
    }
}

/// The cache directory of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Opens (creating it with mode 0700 when missing) the cache directory, fixing group/other
    /// permission bits with a warning. A directory owned by another user is refused.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let fail = |message: String| CacheError::Directory {
            dir: dir.to_path_buf(),
            message,
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create it: {e}")))?;
        }
        let cache = Self {
            dir: dir.to_path_buf(),
        };
        cache.check_directory(true).map_err(fail)?;
        cache.prune(std::time::SystemTime::now());
        Ok(cache)
    }

    /// Removes the entries unused for [`MAX_IDLE`] before `now`, and leftover temp files of
    /// entries. Anything else in the directory is left alone; failures are logged, never fatal.
    fn prune(&self, now: std::time::SystemTime) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut removed = 0usize;
        for entry in listing.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = if fsutil::temp_target(name).is_some_and(is_entry_name) {
                true
            } else if is_entry_name(name) {
                // The entry itself, not a link's target (`DirEntry::metadata` does not follow).
                entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|used| now.duration_since(used).is_ok_and(|idle| idle > MAX_IDLE))
            } else {
                false
            };
            if !stale {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(entry = %entry.path().display(), "cannot remove an unused compile cache entry: {e}")
                }
            }
        }
        if removed > 0 {
            tracing::info!(dir = %self.dir.display(), removed, "removed compile cache entries unused for {} days", MAX_IDLE.as_secs() / 86_400);
        }
    }

    /// Checks owner and mode; with `fix`, removes group/other bits (with a warning).
    fn check_directory(&self, fix: bool) -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(&self.dir).map_err(|e| format!("cannot stat it: {e}"))?;
        if !meta.is_dir() {
            return Err("it is not a directory (symlinks are not followed)".into());
        }
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(format!(
                "it is owned by uid {}, not by this process's uid {uid}; refusing to load compiled code from it",
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            if !fix {
                return Err(format!("its mode became {mode:o}; expected 700"));
            }
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("its mode is {mode:o} and cannot be set to 700: {e}"))?;
            tracing::warn!(
                dir = %self.dir.display(),
                "the compile cache directory had mode {mode:o}; set it to 700 (only this user may write compiled code the agent loads)"
            );
        }
        Ok(())
    }

    /// The component for verified source `bytes` with sha256 `source`: from a checked entry, or
    /// compiled with `compile` and stored. The caller must have verified `source` already.
    pub fn get_or_compile<E>(
        &self,
        engine: &Engine,
        metered: bool,
        source: &[u8; 32],
        compile: impl FnOnce() -> Result<Component, E>,
    ) -> Result<(Component, CacheOutcome), E> {
        // Checked again on every lookup: the mode may have been changed since it was opened.
        if let Err(why) = self.check_directory(false) {
            tracing::warn!(dir = %self.dir.display(), "not using the compile cache: {why}");
            return compile().map(|component| (component, CacheOutcome::Compiled));
        }
        let key = EntryKey::new(engine, metered, *source);
        let path = self.dir.join(key.file_name());
        let mut outcome = CacheOutcome::Compiled;
        match self.read_entry(&path, &key) {
            Ok(None) => {}
            Ok(Some(payload)) => {
                // SAFETY: `payload` is what `Component::serialize` wrote for this engine
                // configuration and this verified source: its sha256 matched the one in the
                // header of a regular file owned by this uid, in a directory owned by this uid
                // with mode 0700 (see the module doc for what that does and does not exclude).
                match unsafe { Component::deserialize(engine, &payload) } {
                    Ok(component) => {
                        mark_used(&path);
                        return Ok((component, CacheOutcome::Hit));
                    }
                    Err(e) => {
                        tracing::warn!(entry = %path.display(), "discarding a compile cache entry wasmtime refused: {e:#}");
                        outcome = CacheOutcome::Rebuilt;
                    }
                }
            }
            Err(why) => {
                tracing::warn!(entry = %path.display(), "discarding a compile cache entry: {why}; rebuilding it from the verified source");
                outcome = CacheOutcome::Rebuilt;
            }
        }
        if outcome == CacheOutcome::Rebuilt {
            let _ = std::fs::remove_file(&path);
        }
        let component = compile()?;
        if let Err(why) = self.write_entry(&path, &key, &component) {
            tracing::warn!(entry = %path.display(), "cannot store the compiled component: {why}");
        }
        Ok((component, outcome))
    }

    /// The payload of a valid entry, `None` when there is none, an error when it is bad.
    fn read_entry(&self, path: &Path, key: &EntryKey) -> Result<Option<Vec<u8>>, String> {
        let read = read_compiled(path, |meta| {
            if meta.uid() != current_uid() {
                return Err(format!("it is owned by uid {}", meta.uid()));
            }
            Ok(())
        })?;
        match read {
            Some(bytes) => key.check(&bytes).map(|payload| Some(payload.to_vec())),
            None => Ok(None),
        }
    }

    fn write_entry(
        &self,
        path: &Path,
        key: &EntryKey,
        component: &Component,
    ) -> Result<(), String> {
        let payload = component
            .serialize()
            .map_err(|e| format!("cannot serialize: {e:#}"))?;
        let mut entry = key.header(&payload);
        entry.extend_from_slice(&payload);
        fsutil::write_atomically(path, &entry, fsutil::PRIVATE).map_err(|e| e.to_string())
    }
}

/// What an entry must match besides its own checksum. Precompiled artifacts use the same
/// layout (`super::precompiled`).
pub(super) struct EntryKey {
    source: [u8; 32],
    engine: [u8; 32],
    metered: bool,
}

impl EntryKey {
    pub(super) fn new(engine: &Engine, metered: bool, source: [u8; 32]) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            source,
            engine: hasher.0.finalize().into(),
            metered,
        }
    }

    fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.cwasm",
            hex::encode(self.source),
            hex::encode(&self.engine[..8]),
            if self.metered { "metered" } else { "plain" }
        )
    }

    pub(super) fn header(&self, payload: &[u8]) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&self.source);
        header.extend_from_slice(&self.engine);
        header.push(u8::from(self.metered));
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(payload));
        header
    }

    /// The payload of `entry` when its header matches this key and its checksum matches.
    pub(super) fn check<'a>(&self, entry: &'a [u8]) -> Result<&'a [u8], String> {
        if entry.len() < HEADER_BYTES {
            return Err(format!(
                "it is {} bytes, shorter than its header",
                entry.len()
            ));
        }
        let (header, payload) = entry.split_at(HEADER_BYTES);
        if &header[..8] != MAGIC {
            return Err("it is not a pganalytics compile cache entry".into());
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(format!("format version {version}, expected {VERSION}"));
        }
        if header[12..44] != self.source || header[76] != u8::from(self.metered) {
            return Err("it was made for another source file or engine".into());
        }
        if header[44..76] != self.engine {
            return Err(format!(
                "{OTHER_ENGINE} (another version or build of the agent)"
            ));
        }
        let length = u64::from_le_bytes(header[77..85].try_into().unwrap_or_default());
        if length != payload.len() as u64 {
            return Err(format!(
                "its header says {length} payload bytes, it holds {}",
                payload.len()
            ));
        }
        if header[85..117] != Sha256::digest(payload)[..] {
            return Err("its checksum does not match (corrupted)".into());
        }
        Ok(payload)
    }
}

/// Feeds `Hash` output into sha256, so the engine key is the same across processes and builds.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// Whether `name` is one of [`EntryKey::file_name`]'s: `SOURCE_SHA256-ENGINEKEY16-KIND.cwasm`.
fn is_entry_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".cwasm") else {
        return false;
    };
    let mut parts = stem.split('-');
    let hex_of = |part: Option<&str>, len: usize| {
        part.is_some_and(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    hex_of(parts.next(), 64)
        && hex_of(parts.next(), 16)
        && matches!(parts.next(), Some("plain" | "metered"))
        && parts.next().is_none()
}

/// Sets the entry's modification time to now (the link itself if it were one), so that
/// [`CompileCache::prune`] keeps what is in use. A failure only means an earlier recompile.
fn mark_used(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path_c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a NUL-terminated path; a null `times` means "now" for both times.
    let done = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path_c.as_ptr(),
            std::ptr::null(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        tracing::debug!(entry = %path.display(), "cannot mark a compile cache entry as used: {}", std::io::Error::last_os_error());
    }
}

pub(super) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The bytes of a file of compiled code (a cache entry or a precompiled artifact), `None` when
/// there is none. Refused unless it is a regular file (a symlink is not followed) that
/// `trusted` accepts, of at most [`MAX_ENTRY_BYTES`]: `Component::deserialize` trusts what it
/// is given, so these checks come before a byte of it is used.
pub(super) fn read_compiled(
    path: &Path,
    trusted: impl FnOnce(&std::fs::Metadata) -> Result<(), String>,
) -> Result<Option<Vec<u8>>, String> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it (symlinks are not followed): {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    trusted(&meta)?;
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "it is {} bytes, over {MAX_ENTRY_BYTES}",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ENTRY_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: preamble only.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    fn compile(engine: &Engine) -> Result<Component, wasmtime::Error> {
        Component::new(engine, EMPTY_COMPONENT)
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn a_stored_entry_is_a_hit_and_a_corrupted_one_is_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = CompileCache::open(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let engine = engine();
        let source = [3u8; 32];
        let (_, outcome) = cache
            .get_or_compile(&engine, false, &source, || compile(&engine))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
        let (_, outcome) = cache
            .get_or_compile(&engine, false, &source, || compile(&engine))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
        let [entry] = entries(&dir).try_into().unwrap();
        assert_eq!(
            std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // One flipped payload byte: detected by the checksum, never deserialized.
        let good = std::fs::read(&entry).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&entry, &bad).unwrap();
        let (_, outcome) = cache
            .get_or_compile(&engine, false, &source, || compile(&engine))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Rebuilt);
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "rebuilt and stored again"
        );

        // Truncated, foreign and another source's entries are all refused.
        let key = EntryKey::new(&engine, false, source);
        assert!(key.check(&good[..50]).is_err());
        assert!(key.check(b"ELF garbage").is_err());
        assert!(EntryKey::new(&engine, false, [4; 32]).check(&good).is_err());
        assert!(EntryKey::new(&engine, true, source).check(&good).is_err());
        assert!(key.check(&good).is_ok());
    }

    #[test]
    fn the_metered_flag_and_the_source_select_different_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(tmp.path()).unwrap();
        let engine = engine();
        for (metered, source) in [(false, [1; 32]), (true, [1; 32]), (false, [2; 32])] {
            let (_, outcome) = cache
                .get_or_compile(&engine, metered, &source, || compile(&engine))
                .unwrap();
            assert_eq!(outcome, CacheOutcome::Compiled);
        }
        assert_eq!(entries(tmp.path()).len(), 3);
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        if current_uid() != 0 {
            eprintln!("skipped: giving a directory away needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = CompileCache::open(&dir).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn a_directory_open_to_others_is_fixed_and_a_symlinked_entry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = CompileCache::open(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        // Loosened while running: lookups skip it (and compile) until it is opened again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let engine = engine();
        let (_, outcome) = cache
            .get_or_compile(&engine, false, &[5; 32], || compile(&engine))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
        assert!(
            entries(&dir).is_empty(),
            "nothing stored in a loosened directory"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = EntryKey::new(&engine, false, [5; 32]);

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, b"x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(key.file_name())).unwrap();
        let err = cache
            .read_entry(&dir.join(key.file_name()), &key)
            .unwrap_err();
        assert!(err.contains("cannot open"), "{err}");

        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(CompileCache::open(&file).is_err());
    }

    /// Sets `path`'s modification time (of a link itself) to `ago` before now.
    fn age(path: &Path, ago: std::time::Duration) {
        let when = std::time::SystemTime::now() - ago;
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(when).unwrap();
    }

    #[test]
    fn entries_unused_for_max_idle_and_leftover_temps_are_pruned_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = CompileCache::open(&dir).unwrap();
        let engine = engine();
        let day = std::time::Duration::from_secs(86_400);
        for source in [[1u8; 32], [2; 32], [3; 32]] {
            cache
                .get_or_compile(&engine, false, &source, || compile(&engine))
                .unwrap();
        }
        let path = |source: [u8; 32]| dir.join(EntryKey::new(&engine, false, source).file_name());
        // [1]: idle past the limit. [2]: idle past it too, then used, which renews it.
        // [3]: idle, but within the limit.
        age(&path([1; 32]), MAX_IDLE + day);
        age(&path([2; 32]), MAX_IDLE + day);
        age(&path([3; 32]), MAX_IDLE - day);
        let (_, outcome) = cache
            .get_or_compile(&engine, false, &[2; 32], || compile(&engine))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);

        // What a crash mid-write leaves, named as `fsutil::replace_with` names its temp files.
        let entry_name = path([4; 32])
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let leftover = dir.join(format!(".{entry_name}.tmp-123-00000000deadbeef"));
        std::fs::write(&leftover, b"half").unwrap();
        // Not ours: kept whatever their age, as is the file a link named like an entry points to.
        let foreign = dir.join("notes.txt");
        let foreign_temp = dir.join(".notes.txt.tmp-1-0000000000000001");
        let too_short = dir.join(format!(
            "{}-{}-plain.cwasm",
            "ab".repeat(31),
            "cd".repeat(8)
        ));
        for file in [&foreign, &foreign_temp, &too_short] {
            std::fs::write(file, b"x").unwrap();
            age(file, MAX_IDLE + day);
        }
        let target = tmp.path().join("target");
        std::fs::write(&target, b"t").unwrap();
        let link = path([5; 32]);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let link_c = std::ffi::CString::new(link.as_os_str().as_encoded_bytes()).unwrap();
        let old = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a NUL-terminated path and two valid timespecs.
        let done = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                link_c.as_ptr(),
                [old, old].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(done, 0);

        CompileCache::open(&dir).unwrap();
        let mut left: Vec<PathBuf> = entries(&dir);
        left.sort();
        let mut expected = vec![
            path([2; 32]),
            path([3; 32]),
            foreign,
            foreign_temp,
            too_short,
        ];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"t",
            "a link's target is never touched"
        );
    }
}
