//! Opening granted files without being led elsewhere: the primitives `procfs` and `log-tail`
//! share. Every open here is relative to a directory fd the capability holds, never follows a
//! symbolic link (magic links of /proc included) and never blocks in `open` (FIFOs, devices):
//! `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`, and with `openat2` also `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`. Callers `fstat` what they opened and refuse
//! anything that is not a regular file.
//!
//! Every function here makes blocking syscalls: call them only from the blocking lane
//! (`host::blocking`), never on an async worker.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

/// `struct open_how` of openat2(2) (libc's is `non_exhaustive`, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Flags of every file open: read only, no symlink as the last component, no blocking open of a
/// FIFO or device, not inherited by children.
const FILE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
/// Flags of a directory walked through or held: `O_PATH`, so that, as in the kernel's own path
/// walk, only search (x) permission is needed on each directory, not read permission (Debian's
/// `/var/log/postgresql` may sit below a directory the agent can enter but not list). The fd is
/// a dirfd for `openat`/`openat2` and `fstat`; listing reopens `.` for reading.
const DIR_FLAGS: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Set once openat2 answered ENOSYS (kernels before 5.6, some seccomp filters): use the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

fn cstring(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(dir: libc::c_int, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstring(name)?;
    // SAFETY: `name` is NUL-terminated; the returned fd is owned by nobody else.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is valid.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` (one component) in the held directory `dir` with `flags`, as given.
pub fn open_in(dir: &OwnedFd, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    openat(dir.as_raw_fd(), name, flags)
}

/// Opens directory `name` in `at` without following a link; a link is ELOOP (the kernel says
/// ENOTDIR for `O_DIRECTORY | O_NOFOLLOW` on a symlink, which would read as "missing").
fn openat_dir(at: libc::c_int, name: &[u8]) -> io::Result<OwnedFd> {
    openat(at, name, DIR_FLAGS).map_err(|error| {
        if error.raw_os_error() != Some(libc::ENOTDIR) {
            return error;
        }
        let Ok(cname) = cstring(name) else {
            return error;
        };
        // SAFETY: an all-zero stat is a valid out-parameter.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `cname` is NUL-terminated and `stat` writable.
        let rc = unsafe { libc::fstatat(at, cname.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) };
        if rc == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFLNK {
            io::Error::from_raw_os_error(libc::ELOOP)
        } else {
            error
        }
    })
}

/// Opens an absolute directory path one component at a time from `/`, refusing every symbolic
/// link on the way (ELOOP names none; the caller names the path).
pub fn open_dir_no_follow(path: &Path) -> io::Result<OwnedFd> {
    let mut dir = openat(libc::AT_FDCWD, b"/", DIR_FLAGS)?;
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => dir = openat_dir(dir.as_raw_fd(), name.as_bytes())?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(dir)
}

/// Opens `relative` (components without `.` or `..`, already checked) below `dir`, refusing any
/// symbolic link or magic link on the way and as the file itself. A link shows as ELOOP (or
/// EXDEV/EACCES from openat2's resolve rules); a missing component as ENOENT.
pub fn open_beneath(dir: &OwnedFd, relative: &str) -> io::Result<File> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow {
            flags: FILE_FLAGS as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS
                | libc::RESOLVE_NO_XDEV,
        };
        let path = cstring(relative.as_bytes())?;
        // SAFETY: `path` is NUL-terminated, `how` a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the syscall returned a new, valid fd.
            return Ok(File::from(unsafe {
                OwnedFd::from_raw_fd(fd as libc::c_int)
            }));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOSYS) {
            return Err(error);
        }
        NO_OPENAT2.store(true, Ordering::Relaxed);
    }
    open_beneath_walk(dir, relative)
}

/// The fallback of [`open_beneath`]: `O_NOFOLLOW` on every component, so no link is followed.
fn open_beneath_walk(dir: &OwnedFd, relative: &str) -> io::Result<File> {
    let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, parents)) = components.split_last() else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        if *name == ".." || *name == "." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let at = current.as_ref().unwrap_or(dir).as_raw_fd();
        current = Some(openat_dir(at, name.as_bytes())?);
    }
    let at = current.as_ref().unwrap_or(dir).as_raw_fd();
    Ok(File::from(openat(at, last.as_bytes(), FILE_FLAGS)?))
}

/// Whether an open error means "a link was in the way" (to be refused, not reported as missing).
pub fn is_link_refusal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::EMLINK)
    )
}

/// Reads at most `cap + 1` bytes from a file opened with `O_NONBLOCK`; a read that would block
/// ends the text (a /proc file that waits for data, like `kmsg`, returns what it had).
///
/// The bytes go straight into the returned buffer, which starts small and grows only as the
/// file does (a /proc file reports size 0, so there is nothing to size it from): no scratch
/// buffer, no second copy.
pub fn read_up_to(file: &mut File, cap: usize) -> io::Result<Vec<u8>> {
    /// Enough for the usual /proc file (`stat` of a few CPUs, `meminfo`, `loadavg`) in one read.
    const FIRST_CAPACITY: usize = 8 << 10;
    let limit = cap.saturating_add(1);
    let mut bytes = Vec::with_capacity(limit.min(FIRST_CAPACITY));
    // `read_to_end` retries EINTR and keeps what it read before any other error.
    match file
        .by_ref()
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)
    {
        Ok(_) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(bytes),
        Err(e) => Err(e),
    }
}

/// Text from bytes a capability read: valid UTF-8 is taken as it is (no copy); anything else
/// shows invalid sequences as U+FFFD.
pub fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_refuses_links_like_openat2() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("d", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/flink")).unwrap();
        let root = open_dir_no_follow(dir.path()).unwrap();
        for open in [open_beneath, open_beneath_walk] {
            assert!(open(&root, "d/f").is_ok());
            for bad in ["link/f", "d/flink"] {
                let e = open(&root, bad).unwrap_err();
                assert!(is_link_refusal(&e), "{bad}: {e}");
            }
            assert_eq!(
                open(&root, "d/none").unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
        }
        let e = open_dir_no_follow(&dir.path().join("link")).unwrap_err();
        assert!(is_link_refusal(&e), "{e}");
    }
}
