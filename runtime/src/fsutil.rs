//! Replacing a file atomically: the one way the runtime persists a small file (plugin state,
//! log-tail offsets, the saved identity, the pulled config, compile cache entries, signatures).
//!
//! A reader or a crash sees either the old file or the whole new one, never a prefix: the bytes
//! go to a new temp file beside the target, are fsynced, renamed over the target, and the
//! directory is fsynced so the rename itself survives power loss. This module must never follow
//! a symlink it did not create: the temp file is created exclusively (`O_EXCL | O_NOFOLLOW`), so a
//! symlink planted at its name is refused rather than written through, and `rename` replaces a
//! symlink at the target rather than the file it points to. A leaf module: it imports nothing of
//! the crate.
//!
//! A crash between creating the temp file and the rename leaves a `.NAME.tmp-PID-RANDOM` file
//! beside the target; it is never read back and may be removed at any time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Mode of files only the agent's user may read (secrets, compiled code).
pub const PRIVATE: u32 = 0o600;

/// Mode of other files, before the process umask applies (as `std::fs::write` creates them).
pub const SHARED: u32 = 0o666;

/// Why replacing a file failed, and at which step (creating, writing or syncing the temp file,
/// renaming it into place, syncing the directory).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ReplaceError {
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl From<ReplaceError> for io::Error {
    fn from(error: ReplaceError) -> Self {
        error.source
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory: write, fsync, rename,
/// fsync of the directory. The directory must exist. The new file gets `mode` (less the umask).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, mode, |file| file.write_all(bytes)).map_err(Into::into)
}

/// [`write_atomically`] with the content written by `write` (streamed from another file, say),
/// and the error naming the step that failed.
pub fn replace_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let fail = |step| move |source| ReplaceError { step, source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| ReplaceError {
        step: "naming the temp file",
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    // Unique, so that two writers of one target (two plugins compiling the same component)
    // never share a temp file; recognisable, so an owner can remove what a crash left.
    let tmp = dir.join(format!(
        ".{}{TEMP_MARK}{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(fail("creating a temp file"))?;
        write(&mut file).map_err(fail("writing a temp file"))?;
        file.sync_all().map_err(fail("fsync of a temp file"))?;
        std::fs::rename(&tmp, path).map_err(fail("renaming a temp file into place"))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(fail("fsync of the directory"))
}

/// What separates a target's name from the rest of its temp files' names.
const TEMP_MARK: &str = ".tmp-";

/// The name of the file a temp file of [`replace_with`] was meant to replace (`.NAME.tmp-…` →
/// `NAME`), so a directory's single owner can remove what a crash left behind.
pub fn temp_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let at = rest.rfind(TEMP_MARK)?;
    Some(&rest[..at]).filter(|target| !target.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_is_created_and_replaced_whole_with_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"first", SHARED).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second, longer", SHARED).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        write_atomically(&path, b"", SHARED).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn private_files_are_owner_only_whatever_the_old_file_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"secret", PRIVATE).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let path = dir.path().join("offsets.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomically(&path, b"new", SHARED).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the symlink itself was replaced"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the target's place: the rename fails after the temp was written.
        let path = dir.path().join("busy");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        assert!(write_atomically(&path, b"new", SHARED).is_err());
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
        assert_eq!(names(dir.path()), ["busy"]);
        // A missing directory is an error, not a file created somewhere else.
        let missing = dir.path().join("no/such/dir/file");
        assert_eq!(
            write_atomically(&missing, b"x", SHARED).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_crash_leftover_names_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        // Interrupt a write after the temp file exists: its name leads back to the target.
        let _ = replace_with(&path, SHARED, |_| Err(io::Error::other("crash")));
        assert_eq!(names(dir.path()), Vec::<String>::new());
        let leftover = format!(".cursor{TEMP_MARK}1-00000000000000ff");
        assert_eq!(temp_target(&leftover), Some("cursor"));
        assert_eq!(temp_target(".a.tmp-x.tmp-1-2"), Some("a.tmp-x"));
        for other in ["cursor", ".cursor", "cursor.tmp-1", ".tmp-1"] {
            assert_eq!(temp_target(other), None, "{other}");
        }
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert_eq!(
            write_atomically(Path::new("/"), b"x", SHARED)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
