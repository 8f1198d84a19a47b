//! File-system helpers of the spool: atomic replacement, durable truncation, the directory
//! lock, and telling a full disk from other I/O errors. Files are opened without following
//! symlinks, so a link planted in the spool directory is never read or written through.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{LOCK_FILE, SpoolError};
use crate::fsutil;

pub(super) fn truncate_durably(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` atomically (the crate's one way: `fsutil`); the error says
/// which step failed.
pub(super) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, io::Error)> {
    write_replacing_with(path, |file| file.write_all(bytes))
}

/// [`write_replacing`] with the content written by `write` (e.g. streamed from another file).
pub(super) fn write_replacing_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), (&'static str, io::Error)> {
    fsutil::replace_with(path, fsutil::SHARED, write).map_err(|e| (e.step, e.source))
}

/// Whether `name` is a temp file that a crash left while replacing `target` (see
/// [`write_replacing`]); the spool owns its directory, so such files can go.
pub(super) fn is_leftover_of(name: &str, target: impl FnOnce(&str) -> bool) -> bool {
    fsutil::temp_target(name).is_some_and(target)
}

/// Opens an existing file without following a symlink in its last component.
pub(super) fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Reads a whole file without following a symlink in its last component.
pub(super) fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_nofollow(path, false)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// ENOSPC or EDQUOT: the file system (or the user's quota) has no room for what was written.
pub(super) fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the spool directory and its subdirectories, durably.
pub(super) fn create_dirs(dir: &Path, subdirs: &[&Path]) -> Result<(), SpoolError> {
    let dir_error = |path: &Path, op| {
        let path = path.to_owned();
        move |source| SpoolError::Dir { path, op, source }
    };
    fs::create_dir_all(dir).map_err(dir_error(dir, "creating"))?;
    for sub in subdirs {
        fs::create_dir_all(sub).map_err(dir_error(sub, "creating"))?;
    }
    sync_dir(dir).map_err(dir_error(dir, "fsync"))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Only matters the first time, when `dir` itself was just created.
        sync_dir(parent).map_err(dir_error(parent, "fsync"))?;
    }
    Ok(())
}

/// How long [`lock_dir`] waits for a held lock. A lock is held a moment longer than its owner
/// needs it when a process forks a child just then (between fork and exec the child shares the
/// open file description that holds the lock), or while a previous agent is exiting; a second
/// agent on the same directory holds it for good and is refused after this wait.
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the directory's exclusive lock, released when the returned file is closed (also when
/// the process is killed).
pub(super) fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SpoolError::Dir {
            path: path.clone(),
            op: "opening the lock file",
            source,
        })?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked { path }),
            Err(TryLockError::Error(source)) => {
                return Err(SpoolError::Dir {
                    path,
                    op: "locking",
                    source,
                });
            }
        }
    }
}
