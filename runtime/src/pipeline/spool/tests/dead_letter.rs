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
}
