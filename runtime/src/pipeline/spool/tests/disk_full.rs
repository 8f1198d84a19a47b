//! A full disk, on a real small filesystem: a tmpfs mounted for each test (so these tests need
//! root, as CI has; without it they fail rather than pass without running).

use super::*;

/// A tmpfs of `size` mounted on a temp directory, unmounted when dropped (also when the test
/// panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the disk-full tests mount a tmpfs and must run as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {}: {status}",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses more; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = File::create(&path).unwrap();
        let chunk = [0xa5u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Whatever partial page is left.
        while let Ok(n) = file.write(&chunk[..1]) {
            if n == 0 {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a file held open by a failing test): detach it lazily.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

const BATCH: usize = 10 * 1024;

fn small_segments() -> SpoolOptions {
    options(1 << 30, 64 * 1024)
}

/// Appends beyond the space of the filesystem drop the oldest batches, counted; every batch
/// accepted is either still there or counted as dropped.
#[test]
fn appends_on_a_full_filesystem_drop_the_oldest_and_count_them() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.path().join("spool");
    let (mut spool, _) = open(&dir, small_segments());
    let accepted = 300u64;
    for n in 1..=accepted {
        let id = spool
            .append(&batch(n, BATCH))
            .unwrap_or_else(|e| panic!("append {n}: {e}"));
        assert_eq!(id.get(), n);
    }
    let stats = spool.stats();
    assert!(stats.dropped_batches > 0, "{stats:?}");
    assert_eq!(
        stats.dropped_for_disk_full, stats.dropped_batches,
        "{stats:?}"
    );
    assert_eq!(
        stats.pending_batches + stats.dropped_batches,
        accepted,
        "{stats:?}"
    );
    let delivered = drain(&mut spool);
    let first = accepted - delivered.len() as u64 + 1;
    assert_eq!(
        first,
        stats.dropped_batches + 1,
        "only the oldest are dropped"
    );
    assert_eq!(
        delivered,
        (first..=accepted)
            .map(|n| (n, batch(n, BATCH)))
            .collect::<Vec<_>>()
    );
    drop(spool);
}

/// With the filesystem full, acks still work (they need no new space) and a batch once acked
/// is never handed out again, also after a restart.
#[test]
fn acks_keep_working_when_the_filesystem_is_full() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.path().join("spool");
    let (mut spool, _) = open(&dir, small_segments());
    for n in 1..=20 {
        spool.append(&batch(n, BATCH)).unwrap();
    }
    fs.fill();
    for n in 1..=10 {
        let (id, b) = spool.oldest().unwrap().unwrap();
        assert_eq!((id.get(), b), (n, batch(n, BATCH)));
        spool
            .ack(id)
            .unwrap_or_else(|e| panic!("ack of {n} on a full filesystem: {e}"));
    }
    drop(spool);
    let (mut spool, _) = open(&dir, small_segments());
    assert_eq!(
        drain(&mut spool),
        (11..=20).map(|n| (n, batch(n, BATCH))).collect::<Vec<_>>()
    );
    drop(spool);
}

/// On a disk filled by something else, the pending batch is dropped to make room for the new
/// one. Only when there is nothing left to drop does an append fail, saying the disk is full;
/// it works again once there is room.
#[test]
fn append_fails_with_disk_full_only_when_nothing_is_left_to_drop() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.path().join("spool");
    let (mut spool, _) = open(&dir, small_segments());
    spool.append(&batch(1, BATCH)).unwrap();
    let filler = fs.fill();
    // Batch 1 goes, so that batch 2 fits.
    assert_eq!(spool.append(&batch(2, BATCH)).unwrap().get(), 2);
    let stats = spool.stats();
    assert_eq!((stats.dropped_batches, stats.dropped_for_disk_full), (1, 1));
    // Larger than all the spool could free.
    let err = spool.append(&batch(3, 4 * BATCH)).unwrap_err();
    assert!(matches!(err, SpoolError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("the disk is full"), "{err}");
    let stats = spool.stats();
    assert_eq!((stats.dropped_batches, stats.pending_batches), (2, 0));
    fs::remove_file(filler).unwrap();
    let id = spool.append(&batch(4, BATCH)).unwrap();
    assert_eq!(drain(&mut spool), vec![(id.get(), batch(4, BATCH))]);
    drop(spool);
}

/// A rejected batch on a full disk: the oldest dead letters make room for it, counted.
#[test]
fn a_dead_letter_on_a_full_disk_removes_the_oldest_dead_letters() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.path().join("spool");
    let (mut spool, _) = open(&dir, small_segments());
    for n in 1..=3 {
        spool.append(&batch(n, BATCH)).unwrap();
    }
    spool.dead_letter(BatchId(1), "HTTP 400").unwrap();
    spool.dead_letter(BatchId(2), "HTTP 400").unwrap();
    fs.fill();
    let path = spool.dead_letter(BatchId(3), "HTTP 422").unwrap();
    assert_eq!(fs::read(path).unwrap(), batch(3, BATCH));
    let stats = spool.stats();
    assert!(stats.dead_letters_removed >= 1, "{stats:?}");
    assert_eq!(stats.dead_lettered_batches, 3);
    assert!(!dead_letter_names(&dir).contains(&"00000000000000000001.json".to_owned()));
    drop(spool);
}

/// A record that went bad, found on a full disk: its bytes cannot be kept, but it is still
/// set aside, counted, and the batches behind it are delivered.
#[test]
fn a_corrupt_record_on_a_full_disk_still_does_not_block_delivery() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.path().join("spool");
    let (mut spool, _) = open(&dir, small_segments());
    for n in 1..=3 {
        spool.append(&batch(n, BATCH)).unwrap();
    }
    let segment = segment_files(&dir)[0].clone();
    flip_byte(&segment, record_offset(1, BATCH) + RECORD_HEADER_LEN + 9);
    fs.fill();
    assert_eq!(
        drain(&mut spool),
        vec![(1, batch(1, BATCH)), (3, batch(3, BATCH))]
    );
    assert_eq!(spool.stats().lost_batches, 1);
    drop(spool);
}
