//! Precompiled components shipped read-only beside the agent (the Debian package installs them
//! in `/usr/lib/pganalytics/precompiled`), so that a first start loads the collectors instead of
//! compiling them with Cranelift (about a second of CPU for the four bundled ones).
//!
//! This is a trust decision: `Component::deserialize` maps the artifact's native code and runs
//! it, with no check of its own beyond the engine version and settings. So an artifact is used
//! only when all of these hold, and is otherwise ignored with a warning (the plugin is then
//! compiled from its verified source, through the compile cache when there is one):
//!
//! - it is looked up *after* the plugin's digest pin and signature were checked, by the sha256
//!   of those verified bytes, and its header must name that same sha256: an artifact is bound
//!   to the exact verified `.wasm`, never to a path or a plugin name;
//! - its header names the engine it was made for (the sha256 of wasmtime's precompile
//!   compatibility hash: version, target, compile settings) and the metered flag; an artifact of
//!   another engine is refused before wasmtime sees it, and wasmtime refuses it again itself;
//! - the header holds the sha256 of the payload, checked before deserializing (corruption);
//! - the directory and every directory above it are owned by root or by this process's user and
//!   are not writable by group or others (a world-writable ancestor is accepted only with the
//!   sticky bit, as `/tmp`, where nobody else can rename what root or this user own there);
//!   the artifact is a regular file, opened without following a symlink, owned by root or by
//!   this user, not writable by group or others. Unlike the compile cache, nothing here is ever
//!   created, fixed or written by the agent: the directory belongs to whoever installed it.
//!
//! What remains trusted: whoever can write as root or as the agent's user in that directory
//! chain, who could equally replace the agent's binary or its cache.
//!
//! The artifact layout is the compile cache's entry format (`super::cache`); the file name is
//! `SOURCE_SHA256-{plain,metered}.cwasm` (no engine part, so that an artifact left by another
//! version of the agent is found and reported rather than silently skipped).
//! `pganalytics plugin precompile` writes them with the agent's own engine configuration.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::cache::{EntryKey, OTHER_ENGINE, current_uid, read_compiled};

/// Why the precompiled directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrecompiledError {
    #[error("precompiled components `{}`: {message}", dir.display())]
    Directory { dir: PathBuf, message: String },
}

/// A trusted directory of precompiled components. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrecompiledDir {
    /// As configured, for messages.
    dir: PathBuf,
    /// The same directory with every symlink resolved: the path whose chain was checked.
    resolved: PathBuf,
}

impl PrecompiledDir {
    /// Checks the directory and every directory above it (see the module doc).
    pub fn open(dir: &Path) -> Result<Self, PrecompiledError> {
        let fail = |message: String| PrecompiledError::Directory {
            dir: dir.to_path_buf(),
            message,
        };
        let resolved =
            std::fs::canonicalize(dir).map_err(|e| fail(format!("cannot resolve it: {e}")))?;
        check_directory_chain(&resolved).map_err(fail)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            resolved,
        })
    }

    /// The file name of the artifact for verified source `source`.
    pub fn file_name(source: &[u8; 32], metered: bool) -> String {
        format!(
            "{}-{}.cwasm",
            hex::encode(source),
            if metered { "metered" } else { "plain" }
        )
    }

    /// The component of verified source `source` from its artifact, or `None` when there is
    /// none or it fails a check (logged with the reason, naming `plugin`). The caller must have
    /// verified `source` (digest pin, signature) already.
    pub fn load(
        &self,
        engine: &Engine,
        metered: bool,
        source: &[u8; 32],
        plugin: &str,
    ) -> Option<Component> {
        let path = self.resolved.join(Self::file_name(source, metered));
        let refuse = |why: &str| {
            tracing::warn!(
                plugin,
                artifact = %path.display(),
                "not using the precompiled component: {why}; compiling the verified source instead"
            );
            None
        };
        // Checked again on every lookup: a directory may have been loosened since start.
        if let Err(why) = check_directory_chain(&self.resolved) {
            return refuse(&format!("its directory `{}`: {why}", self.dir.display()));
        }
        let key = EntryKey::new(engine, metered, *source);
        let artifact = match read_artifact(&path) {
            Ok(Some(artifact)) => artifact,
            Ok(None) => {
                tracing::debug!(plugin, artifact = %path.display(), "no precompiled component");
                return None;
            }
            Err(why) => return refuse(&why),
        };
        let payload = match key.check(&artifact) {
            Ok(payload) => payload,
            Err(why) if why.starts_with(OTHER_ENGINE) => {
                return refuse(&format!(
                    "{why}: reinstall the package that shipped it, or remove it"
                ));
            }
            Err(why) => return refuse(&why),
        };
        // SAFETY: `payload` is an artifact whose header binds it to this verified source and
        // to this engine configuration, whose checksum matched, read from a regular file owned
        // by root or this uid and writable by nobody else, in a directory chain that nobody
        // else can write (see the module doc for what this does and does not exclude).
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(component) => Some(component),
            Err(e) => refuse(&format!("wasmtime refused it: {e:#}")),
        }
    }
}

/// An artifact for `engine`: the header binding it to `source` and the engine, then the output
/// of `Engine::precompile_component` for `bytes`. Used by `pganalytics plugin precompile`.
pub fn build_artifact(
    engine: &Engine,
    metered: bool,
    source: &[u8; 32],
    bytes: &[u8],
) -> wasmtime::Result<Vec<u8>> {
    debug_assert_eq!(<[u8; 32]>::from(Sha256::digest(bytes)), *source);
    let payload = engine.precompile_component(bytes)?;
    let mut artifact = EntryKey::new(engine, metered, *source).header(&payload);
    artifact.extend_from_slice(&payload);
    Ok(artifact)
}

/// Whether `uid` may own trusted code: root, or the user this process runs as.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == current_uid()
}

/// `dir` (already resolved) and each directory above it: a directory, owned by root or this
/// user, not writable by group or others (above `dir`, unless sticky).
fn check_directory_chain(dir: &Path) -> Result<(), String> {
    for (depth, path) in dir.ancestors().enumerate() {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot stat `{}`: {e}", path.display()))?;
        if !meta.is_dir() {
            return Err(format!("`{}` is not a directory", path.display()));
        }
        if !trusted_owner(meta.uid()) {
            return Err(format!(
                "`{}` is owned by uid {}, neither root nor this process's uid {}",
                path.display(),
                meta.uid(),
                current_uid()
            ));
        }
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && (depth == 0 || !sticky) {
            return Err(format!(
                "`{}` has mode {:o}: group or others may write it",
                path.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// The bytes of the artifact at `path`, `None` when there is none, an error when it may not
/// be trusted.
fn read_artifact(path: &Path) -> Result<Option<Vec<u8>>, String> {
    read_compiled(path, |meta| {
        if !trusted_owner(meta.uid()) {
            return Err(format!(
                "it is owned by uid {}, neither root nor this process's uid {}",
                meta.uid(),
                current_uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "it has mode {:o}: group or others may write it",
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The smallest valid component: preamble only.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine(fuel: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(fuel);
        Engine::new(&config).unwrap()
    }

    fn source() -> [u8; 32] {
        Sha256::digest(EMPTY_COMPONENT).into()
    }

    /// A trusted directory (0755 below /tmp, which is sticky) holding the plain artifact.
    fn shipped(engine: &Engine) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("precompiled");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join(PrecompiledDir::file_name(&source(), false));
        let artifact = build_artifact(engine, false, &source(), EMPTY_COMPONENT).unwrap();
        std::fs::write(&file, artifact).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        (tmp, dir, file)
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_artifact_bound_to_the_source_and_engine_is_used() {
        let engine = engine(false);
        let (_tmp, dir, _) = shipped(&engine);
        let precompiled = PrecompiledDir::open(&dir).unwrap();
        assert!(precompiled.load(&engine, false, &source(), "p").is_some());
        // Another source, or the metered engine's artifact: none there, nothing loaded.
        assert!(precompiled.load(&engine, false, &[7; 32], "p").is_none());
        assert!(precompiled.load(&engine, true, &source(), "p").is_none());
    }

    #[test]
    fn an_artifact_of_another_source_engine_or_corrupted_is_refused() {
        let engine = engine(false);
        let (_tmp, dir, file) = shipped(&engine);
        let precompiled = PrecompiledDir::open(&dir).unwrap();
        let good = std::fs::read(&file).unwrap();

        // Renamed to another source's name: its header still names the real source.
        let other = dir.join(PrecompiledDir::file_name(&[9; 32], false));
        std::fs::copy(&file, &other).unwrap();
        assert!(precompiled.load(&engine, false, &[9; 32], "p").is_none());
        let key = EntryKey::new(&engine, false, [9; 32]);
        assert!(key.check(&good).is_err());

        // Made by another engine configuration (fuel changes the compatibility hash).
        let fueled = self::engine(true);
        let err = EntryKey::new(&fueled, false, source())
            .check(&good)
            .unwrap_err();
        assert!(err.starts_with(OTHER_ENGINE), "{err}");
        assert!(precompiled.load(&fueled, false, &source(), "p").is_none());

        // A header forged to name this engine over another engine's code: wasmtime refuses.
        let foreign = fueled.precompile_component(EMPTY_COMPONENT).unwrap();
        let mut forged = EntryKey::new(&engine, false, source()).header(&foreign);
        forged.extend_from_slice(&foreign);
        std::fs::write(&file, &forged).unwrap();
        assert!(precompiled.load(&engine, false, &source(), "p").is_none());

        // One flipped payload byte: the checksum refuses it before wasmtime sees it.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&file, &bad).unwrap();
        assert!(
            EntryKey::new(&engine, false, source())
                .check(&bad)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(precompiled.load(&engine, false, &source(), "p").is_none());

        std::fs::write(&file, &good).unwrap();
        assert!(precompiled.load(&engine, false, &source(), "p").is_some());
    }

    #[test]
    fn writable_files_and_directories_and_symlinks_are_refused() {
        let engine = engine(false);
        let (tmp, dir, file) = shipped(&engine);
        let precompiled = PrecompiledDir::open(&dir).unwrap();

        for mode in [0o664, 0o646, 0o666] {
            chmod(&file, mode);
            assert!(
                read_artifact(&file).unwrap_err().contains("may write it"),
                "{mode:o}"
            );
            assert!(precompiled.load(&engine, false, &source(), "p").is_none());
        }
        chmod(&file, 0o444);
        assert!(precompiled.load(&engine, false, &source(), "p").is_some());

        // The directory, or a directory above it, loosened (also after it was opened).
        for (path, mode) in [
            (&dir, 0o775),
            (&dir, 0o1777),
            (&tmp.path().to_path_buf(), 0o757),
        ] {
            chmod(path, mode);
            let err = PrecompiledDir::open(&dir).unwrap_err().to_string();
            assert!(err.contains("may write it"), "{mode:o}: {err}");
            assert!(precompiled.load(&engine, false, &source(), "p").is_none());
            chmod(path, 0o755);
        }
        // Sticky and world-writable above it is fine (as /tmp is).
        chmod(tmp.path(), 0o1777);
        assert!(PrecompiledDir::open(&dir).is_ok());
        chmod(tmp.path(), 0o755);

        // A symlinked artifact is never followed; a symlinked directory is resolved first and
        // the real chain is checked.
        let elsewhere = tmp.path().join("elsewhere.cwasm");
        std::fs::rename(&file, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert!(read_artifact(&file).unwrap_err().contains("symlinks"));
        assert!(precompiled.load(&engine, false, &source(), "p").is_none());
        std::fs::remove_file(&file).unwrap();
        std::fs::rename(&elsewhere, &file).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let linked = PrecompiledDir::open(&link).unwrap();
        assert!(linked.load(&engine, false, &source(), "p").is_some());

        // Not a directory at all.
        assert!(PrecompiledDir::open(&file).is_err());
        assert!(PrecompiledDir::open(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn files_and_directories_of_another_user_are_refused() {
        if current_uid() != 0 {
            eprintln!("skipped: giving files away needs root");
            return;
        }
        let engine = engine(false);
        let (tmp, dir, file) = shipped(&engine);
        let precompiled = PrecompiledDir::open(&dir).unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        assert!(
            read_artifact(&file)
                .unwrap_err()
                .contains("owned by uid 65534")
        );
        assert!(precompiled.load(&engine, false, &source(), "p").is_none());
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        for path in [dir.as_path(), tmp.path()] {
            std::os::unix::fs::chown(path, Some(65534), None).unwrap();
            let err = PrecompiledDir::open(&dir).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
            assert!(precompiled.load(&engine, false, &source(), "p").is_none());
            std::os::unix::fs::chown(path, Some(0), None).unwrap();
        }
        assert!(precompiled.load(&engine, false, &source(), "p").is_some());
    }
}
