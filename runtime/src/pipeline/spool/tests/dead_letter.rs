//! The dead-letter directory and its bounds.

use super::*;

/// Sets the modification time of every file of dead letter `seq` to `age` ago.
fn age_dead_letter(dir: &Path, seq: u64, age: Duration) {
    let prefix = format!("{seq:020}.");
    for name in dead_letter_names(dir) {
        if name.starts_with(&prefix) {
            let file = File::options()
                .write(true)
                .open(dir.join(DEAD_LETTER_DIR).join(name))
                .unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
        }
    }
}

#[test]
fn dead_letters_past_the_age_bound_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    for n in 1..=3 {
        spool.append(&batch(n, 30)).unwrap();
        spool.dead_letter(BatchId(n), "HTTP 400").unwrap();
    }
    drop(spool);
    age_dead_letter(tmp.path(), 1, Duration::from_secs(31 * 24 * 3600));
    age_dead_letter(tmp.path(), 2, Duration::from_secs(29 * 24 * 3600));
    let foreign = tmp.path().join(DEAD_LETTER_DIR).join("notes.txt");
    fs::write(&foreign, b"kept").unwrap();

    let (spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let names = dead_letter_names(tmp.path());
    assert!(
        !names.iter().any(|n| n.starts_with("00000000000000000001.")),
        "{names:?}"
    );
    for seq in [2, 3] {
        assert!(
            names.contains(&format!("{seq:020}.json"))
                && names.contains(&format!("{seq:020}.reason.txt")),
            "{names:?}"
        );
    }
    assert!(foreign.exists());
    assert_eq!(spool.stats().dead_lettered_batches, 3);
    assert_eq!(spool.stats().dead_letters_removed, 1);
    drop(spool);
    let (spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(spool.stats().dead_letters_removed, 1);
}

/// Oldest first, until the total fits; the newest stays even when it alone is over the bound.
#[test]
fn the_dead_letter_directory_is_bounded_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        dead_letter_max_bytes: 1000,
        ..SpoolOptions::new(1 << 20)
    };
    let (mut spool, _) = Spool::open_with(tmp.path(), opts).unwrap();
    let mut removed = 0;
    for n in 1..=10 {
        spool.append(&batch(n, 200)).unwrap();
        spool.dead_letter(BatchId(n), "HTTP 400").unwrap();
        let names = dead_letter_names(tmp.path());
        let total: u64 = names
            .iter()
            .map(|n| {
                fs::metadata(tmp.path().join(DEAD_LETTER_DIR).join(n))
                    .unwrap()
                    .len()
            })
            .sum();
        let seqs: BTreeSet<u64> = names.iter().map(|n| n[..20].parse().unwrap()).collect();
        assert!(total <= 1000, "{total} bytes: {names:?}");
        // The newest ones, whole (a .json and its reason).
        assert_eq!(seqs, (n + 1 - seqs.len() as u64..=n).collect(), "{names:?}");
        assert_eq!(names.len(), 2 * seqs.len(), "{names:?}");
        removed = n - seqs.len() as u64;
        assert_eq!(spool.stats().dead_letters_removed, removed);
    }
    assert!(removed >= 6, "{removed}");

    // A batch larger than the bound: its dead letter is kept alone.
    spool.append(&batch(11, 1500)).unwrap();
    spool.dead_letter(BatchId(11), "HTTP 413").unwrap();
    assert_eq!(
        dead_letter_names(tmp.path()),
        [
            "00000000000000000011.json",
            "00000000000000000011.reason.txt"
        ]
    );
    drop(spool);
    // The bound is applied at open too, here a lower one.
    let opts = SpoolOptions {
        dead_letter_max_bytes: 10,
        ..opts
    };
    let (spool, _) = Spool::open_with(tmp.path(), opts).unwrap();
    assert_eq!(
        dead_letter_names(tmp.path()).len(),
        2,
        "the newest always stays"
    );
    assert_eq!(spool.stats().dead_letters_removed, 10);
}

/// Only the spool's own files are indexed and removed; a symlink named like a dead letter is
/// neither followed when the dead letter is written nor removed by the bounds.
#[test]
fn foreign_files_and_symlinks_in_the_dead_letter_directory_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    fs::write(&target, b"not the spool's").unwrap();
    let opts = SpoolOptions {
        dead_letter_max_bytes: 1,
        ..SpoolOptions::new(1 << 20)
    };
    let dead = tmp.path().join(DEAD_LETTER_DIR);
    fs::create_dir_all(&dead).unwrap();
    std::os::unix::fs::symlink(&target, dead.join("00000000000000000001.json")).unwrap();
    std::os::unix::fs::symlink(&target, dead.join("00000000000000000099.reason.txt")).unwrap();
    fs::write(dead.join("README"), b"mine").unwrap();
    fs::write(dead.join("00000000000000000007.json.bak"), b"mine").unwrap();

    let (mut spool, _) = Spool::open_with(tmp.path(), opts).unwrap();
    for n in 1..=3 {
        spool.append(&batch(n, 50)).unwrap();
        spool.dead_letter(BatchId(n), "HTTP 400").unwrap();
    }
    assert_eq!(fs::read(&target).unwrap(), b"not the spool's");
    let names = dead_letter_names(tmp.path());
    assert_eq!(
        names,
        [
            "00000000000000000003.json",
            "00000000000000000003.reason.txt",
            "00000000000000000007.json.bak",
            "00000000000000000099.reason.txt",
            "README",
        ]
    );
    assert!(
        fs::symlink_metadata(dead.join("00000000000000000099.reason.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
