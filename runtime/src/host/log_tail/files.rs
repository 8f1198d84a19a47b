//! The log files of a grant, found and opened so that only what the grant names is read: the
//! directory is held as an fd opened without following any link (re-opened only when it was
//! deleted), entries are matched by name first and bounded afterwards (newest first), and each
//! file is opened relative to that fd with `O_NOFOLLOW | O_NONBLOCK` and checked on the open fd:
//! a regular file, one link, owned by the expected user, and text.
//!
//! Every function here makes blocking syscalls: call them only from the blocking lane.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use globset::GlobMatcher;

use crate::host::fsio;

/// Bytes of the first line used as a file's fingerprint.
const FINGERPRINT_BYTES: usize = 1024;

/// Bytes at the start of a file looked at to tell text from binary.
const SNIFF_BYTES: usize = 4096;

/// A granted directory, held open between runs.
#[derive(Debug)]
pub(super) struct LogDir {
    /// As written in the grant.
    pub(super) path: PathBuf,
    fd: Mutex<Option<Arc<OwnedFd>>>,
}

impl LogDir {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            fd: Mutex::new(None),
        }
    }

    /// The held directory fd: opened component by component without following a link the first
    /// time, and again only once the held directory was deleted (a directory swapped for a
    /// symlink later is never followed; one renamed away stays the one read).
    pub(super) fn handle(&self) -> io::Result<Arc<OwnedFd>> {
        let mut held = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = held.as_ref() {
            let deleted = fstat(fd.as_raw_fd()).map(|s| s.st_nlink == 0)?;
            if !deleted {
                return Ok(fd.clone());
            }
        }
        let fd = Arc::new(fsio::open_dir_no_follow(&self.path)?);
        *held = Some(fd.clone());
        Ok(fd)
    }
}

fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid out-parameter.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is writable; a bad fd is reported as an error.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// The owner of a directory fd.
pub(super) fn owner_of(dir: &OwnedFd) -> io::Result<u32> {
    fstat(dir.as_raw_fd()).map(|s| s.st_uid)
}

/// What a scan of one directory found for one pattern.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Names of the regular files kept (at most `keep`, the newest by mtime), by name.
    pub(super) kept: Vec<OsString>,
    /// Regular files that matched but were left out by the bound.
    pub(super) left_out: usize,
    /// Matching entries that are not regular files (symlinks, FIFOs, sockets, devices, ...).
    pub(super) not_regular: Vec<(OsString, &'static str)>,
}

/// Reads the whole directory, matching names first, and keeps the `keep` newest regular files.
/// Memory stays bounded by `keep` whatever the directory holds.
pub(super) fn scan(dir: &OwnedFd, pattern: &GlobMatcher, keep: usize) -> io::Result<Scan> {
    // A new open file description, so this readdir has its own position.
    let own = fsio::open_in(
        dir,
        b".",
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    let raw = own.into_raw_fd();
    // SAFETY: `raw` is an open directory fd whose ownership passes to the DIR stream.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let error = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(error);
    }
    let mut scan = Scan::default();
    let mut newest: BinaryHeap<Reverse<((i64, i64), OsString)>> = BinaryHeap::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir reports errors only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid DIR stream until closedir below.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let error = io::Error::last_os_error();
            break if error.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(error)
            };
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." || !pattern.is_match(Path::new(OsStr::from_bytes(bytes)))
        {
            continue;
        }
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated and `stat` writable.
        let rc = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            continue; // gone since readdir
        }
        let name = OsStr::from_bytes(bytes).to_owned();
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            kind => {
                scan.not_regular.push((name, kind_name(kind)));
                continue;
            }
        }
        newest.push(Reverse(((stat.st_mtime, stat.st_mtime_nsec), name)));
        if newest.len() > keep {
            newest.pop();
            scan.left_out += 1;
        }
    };
    // SAFETY: closes the stream and the fd it owns, once.
    unsafe { libc::closedir(stream) };
    result?;
    scan.kept = newest.into_iter().map(|Reverse((_, name))| name).collect();
    scan.kept.sort();
    Ok(scan)
}

fn kind_name(kind: libc::mode_t) -> &'static str {
    match kind {
        libc::S_IFLNK => "it is a symbolic link, which is never followed",
        libc::S_IFIFO => "it is a FIFO, not a regular file",
        libc::S_IFSOCK => "it is a socket, not a regular file",
        libc::S_IFCHR | libc::S_IFBLK => "it is a device, not a regular file",
        libc::S_IFDIR => "it is a directory",
        _ => "it is not a regular file",
    }
}

/// A granted log file, open.
pub(super) struct OpenLog {
    pub(super) file: File,
    pub(super) size: u64,
    /// Device and inode: the same file matched by two patterns is read once.
    pub(super) id: (u64, u64),
}

/// Why a matching entry is not read.
pub(super) enum Skip {
    /// Gone between readdir and open, or another transient error: not worth a word.
    Gone,
    /// Refused for safety; audited.
    Refused(String),
}

/// Opens `name` in `dir` without following a link or blocking, and checks the open file: a
/// regular file with exactly one link (a hard link could be any file of the same filesystem),
/// owned by `owner`.
pub(super) fn open_log(dir: &OwnedFd, name: &OsStr, owner: u32) -> Result<OpenLog, Skip> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let fd = match fsio::open_in(dir, name.as_bytes(), flags) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Skip::Refused(kind_name(libc::S_IFLNK).to_owned()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Skip::Gone),
        Err(e) => return Err(Skip::Refused(format!("it cannot be opened: {e}"))),
    };
    let file = File::from(fd);
    let metadata = file.metadata().map_err(|_| Skip::Gone)?;
    let kind = metadata.mode() & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Err(Skip::Refused(kind_name(kind).to_owned()));
    }
    if metadata.nlink() > 1 {
        return Err(Skip::Refused(format!(
            "it has {} hard links; a log file has one (a hard link can be any file of the filesystem)",
            metadata.nlink()
        )));
    }
    if metadata.uid() != owner {
        return Err(Skip::Refused(format!(
            "it is owned by uid {}, not by uid {owner} (the log directory's owner or `file_owner`)",
            metadata.uid()
        )));
    }
    Ok(OpenLog {
        size: metadata.len(),
        id: (metadata.dev(), metadata.ino()),
        file,
    })
}

/// Resolves a user name to its uid with the system's user database.
pub(super) fn uid_of(user: &str) -> Option<u32> {
    let name = CString::new(user).ok()?;
    // SAFETY: zeroed passwd is a valid out-parameter; the buffer outlives the call.
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 << 10];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, the buffer length is its real length.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut passwd,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(passwd.pw_uid)
}

/// Why a file is not text: compressed by its magic number, or a NUL byte in its first block.
pub(super) fn binary_kind(file: &File, size: u64) -> io::Result<Option<&'static str>> {
    let mut head = vec![0u8; SNIFF_BYTES.min(size as usize)];
    let n = read_full_at(file, &mut head, 0)?;
    let head = &head[..n];
    const MAGIC: [(&[u8], &str); 6] = [
        (b"\x1f\x8b", "gzip"),
        (b"BZh", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"PK\x03\x04", "zip"),
    ];
    for (magic, name) in MAGIC {
        if head.starts_with(magic) {
            return Ok(Some(name));
        }
    }
    Ok(head.contains(&0).then_some("binary (NUL bytes)"))
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The fingerprint (hash of the first line, hex) of a file, or `None` while it has no complete
/// first line yet.
pub(super) fn fingerprint(file: &File, size: u64) -> Option<String> {
    let mut head = vec![0u8; FINGERPRINT_BYTES.min(size as usize)];
    let n = read_full_at(file, &mut head, 0).ok()?;
    let head = &head[..n];
    let first_line = match head.iter().position(|&b| b == b'\n') {
        Some(newline) => &head[..=newline],
        None if head.len() == FINGERPRINT_BYTES => head,
        None => return None,
    };
    use sha2::Digest;
    Some(hex::encode(&sha2::Sha256::digest(first_line)[..16]))
}

pub(super) fn first_line(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        data.truncate(newline + 1);
    }
    data
}

pub(super) enum Lines {
    /// One or more whole lines.
    Data(Vec<u8>),
    /// Only the start of a line that is still being written.
    Incomplete,
    /// A line longer than the budget: skip this many bytes (up to and including its newline).
    TooLong(usize),
}

/// Whole lines from `offset`, at most `budget` bytes of a file of `size` bytes.
pub(super) fn read_whole_lines(
    file: &File,
    offset: u64,
    size: u64,
    budget: usize,
) -> io::Result<Lines> {
    let available = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
    let mut data = vec![0u8; budget.min(available)];
    let n = read_full_at(file, &mut data, offset)?;
    data.truncate(n);
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
        let n = file.read_at(&mut buffer, offset + skipped as u64)?;
        if n == 0 {
            return Ok(Lines::Incomplete);
        }
        if let Some(i) = buffer[..n].iter().position(|&b| b == b'\n') {
            return Ok(Lines::TooLong(skipped + i + 1));
        }
        skipped += n;
    }
}
