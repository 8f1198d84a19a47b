//! The cursor and the counters: loss of the cursor, and spools written by format version 1.

use super::*;

/// Losing the cursor used to reset the counters to zero and send everything on disk again
/// without a word. The counters live in a second file too, which also says how far the spool
/// had been consumed at its last drop or dead letter.
#[test]
fn a_missing_cursor_is_detected_and_the_counters_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let (mut spool, _) = open(tmp.path(), opts);
    spool.ack(BatchId(1)).unwrap();
    spool.dead_letter(BatchId(2), "HTTP 400").unwrap();
    spool.ack(BatchId(3)).unwrap();
    drop(spool);
    // Batches 4 and 5 dropped by a lower limit: 4 × 30 bytes pending after it.
    let (mut spool, recovery) = open(tmp.path(), options(120, opts.segment_bytes));
    assert_eq!(recovery.dropped_batches, 2);
    spool.ack(BatchId(6)).unwrap();
    spool.ack(BatchId(7)).unwrap();
    let stats = spool.stats();
    drop(spool);

    fs::remove_file(tmp.path().join(CURSOR_FILE)).unwrap();
    let (mut spool, _recovery) = open(tmp.path(), opts);
    assert_eq!(spool.stats().dropped_batches, stats.dropped_batches);
    assert_eq!(spool.stats().dropped_bytes, stats.dropped_bytes);
    assert_eq!(
        spool.stats().dead_lettered_batches,
        stats.dead_lettered_batches
    );
    // Batch 7 was acked after the last drop: it is sent again (a duplicate, not a loss). Batch 6
    // was in a segment deleted since, and nothing older comes back.
    assert_eq!(ids(&spool), vec![7, 8, 9]);
    assert_eq!(drain(&mut spool).len(), 3);
}

/// A spool written by the release before format version 2 (bytes of its own encoder, kept in
/// `testdata/v1-spool`) opens with its pending batches and counters, and goes on.
#[test]
fn a_spool_written_by_format_version_1_keeps_its_pending_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline/spool/testdata/v1-spool");
    for sub in ["", "segments", "dead-letter"] {
        fs::create_dir_all(tmp.path().join(sub)).unwrap();
        for entry in fs::read_dir(fixture.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), tmp.path().join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    let opts = options(
        1 << 20,
        (SEGMENT_HEADER_LEN + 3 * (RECORD_HEADER_LEN + 30)) as u64,
    );
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(
        contents(&spool),
        (5..=10).map(|n| (n, batch(n, 30))).collect::<Vec<_>>()
    );
    let stats = spool.stats();
    assert_eq!(
        (
            stats.dropped_batches,
            stats.dropped_bytes,
            stats.dead_lettered_batches
        ),
        (2, 60, 1)
    );
    spool.ack(BatchId(5)).unwrap();
    assert_eq!(spool.append(b"{}").unwrap().get(), 11);
    drop(spool);

    let (mut spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    let delivered = drain(&mut spool);
    assert_eq!(
        delivered.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10, 11]
    );
    assert_eq!(delivered[0].1, batch(6, 30));
    assert_eq!(delivered[5].1, b"{}");
    assert_eq!(spool.stats().dead_lettered_batches, 1);
}
