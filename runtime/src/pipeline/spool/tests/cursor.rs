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
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.cursor_missing, "{recovery:?}");
    assert!(!recovery.is_clean());
    assert_eq!(recovery.lost_batches, 0, "{recovery:?}");
    assert_eq!(spool.stats().cursor_losses, 1);
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
    // The cursor is now a version 2 state file; the old segments are gone with their batches.
    let cursor = fs::read(tmp.path().join(CURSOR_FILE)).unwrap();
    assert_eq!(cursor.len(), 1024);
    assert_eq!(cursor[4..8], FORMAT_VERSION.to_le_bytes());
    assert_eq!(segment_files(tmp.path()).len(), 1);
}

/// Version 1 segments built with the old encoder: damage in them is found and counted too,
/// and a torn tail of the last one is cut.
#[test]
fn version_1_segments_are_read_with_their_record_format() {
    let tmp = tempfile::tempdir().unwrap();
    let segments = tmp.path().join(SEGMENTS_DIR);
    fs::create_dir_all(&segments).unwrap();
    let mut first = legacy::encode_segment_header(1).to_vec();
    let mut last = legacy::encode_segment_header(4).to_vec();
    for n in 1..=3 {
        first.extend_from_slice(&legacy::encode_record(n, &batch(n, 30)));
    }
    for n in 4..=6 {
        last.extend_from_slice(&legacy::encode_record(n, &batch(n, 30)));
    }
    // Batch 2's payload damaged; batch 6 torn.
    first[SEGMENT_HEADER_LEN + 50 + 25] ^= 1;
    last.truncate(last.len() - 7);
    fs::write(segments.join("00000000000000000001.seg"), &first).unwrap();
    fs::write(segments.join("00000000000000000004.seg"), &last).unwrap();

    let (mut spool, recovery) = open(tmp.path(), options(1 << 20, 1 << 20));
    assert_eq!(recovery.lost_batches, 1, "{recovery:?}");
    assert_eq!(recovery.truncated_bytes, 43, "{recovery:?}");
    assert_eq!(spool.append(b"{}").unwrap().get(), 6);
    let delivered: Vec<u64> = drain(&mut spool).into_iter().map(|(id, _)| id).collect();
    assert_eq!(delivered, vec![1, 3, 4, 5, 6]);
    // Version 1 segments are never appended to: batch 6 went to a new version 2 segment.
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 1);
    assert_eq!(
        fs::read(&files[0]).unwrap()[4..8],
        FORMAT_VERSION.to_le_bytes()
    );
}

/// Both slots of the cursor unreadable: the counters file stands in, everything after its
/// copy is sent again, and the counters are kept.
#[test]
fn a_corrupt_cursor_is_replaced_by_the_counters_files_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    let (mut spool, _) = open(tmp.path(), opts);
    for n in 1..=9 {
        spool.append(&batch(n, 30)).unwrap();
    }
    spool.ack(BatchId(1)).unwrap();
    spool.dead_letter(BatchId(2), "HTTP 400").unwrap();
    spool.ack(BatchId(3)).unwrap();
    drop(spool);
    let cursor = tmp.path().join(CURSOR_FILE);
    flip_byte(&cursor, 17);
    flip_byte(&cursor, 512 + 17);
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.cursor_reset, "{recovery:?}");
    assert_eq!(recovery.lost_batches, 0);
    // The counters file was last written by the dead letter of batch 2: batch 3 comes again.
    assert_eq!(ids(&spool), (3..=9).collect::<Vec<_>>());
    assert_eq!(spool.stats().dead_lettered_batches, 1);
    assert_eq!(spool.stats().cursor_losses, 1);
    assert_eq!(drain(&mut spool).len(), 7);
    drop(spool);

    // Without either file, nothing is known: everything still on disk is sent again, and the
    // counters start over (this loss is the first they count).
    fs::remove_file(tmp.path().join(CURSOR_FILE)).unwrap();
    fs::remove_file(tmp.path().join(COUNTERS_FILE)).unwrap();
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.cursor_missing, "{recovery:?}");
    assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
    assert_eq!(spool.stats().dead_lettered_batches, 0);
    assert_eq!(spool.stats().cursor_losses, 1);
}

/// A store torn by a crash damages one slot only: the other one is used, so at most the last
/// removal is undone (its batch is sent again), and nothing is reset.
#[test]
fn a_torn_slot_falls_back_to_the_other_slot() {
    let mut outcomes = BTreeSet::new();
    for slot in [0, 1] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let (mut spool, _) = open(tmp.path(), opts);
        spool.ack(BatchId(1)).unwrap();
        spool.ack(BatchId(2)).unwrap();
        drop(spool);
        let cursor = tmp.path().join(CURSOR_FILE);
        // As a write torn half-way through the slot leaves it.
        let mut bytes = fs::read(&cursor).unwrap();
        bytes[slot * 512 + 40..slot * 512 + 512].fill(0);
        fs::write(&cursor, &bytes).unwrap();
        let (spool, recovery) = open(tmp.path(), opts);
        assert!(
            !recovery.cursor_reset && !recovery.cursor_missing,
            "{recovery:?}"
        );
        assert_eq!(spool.stats().cursor_losses, 0);
        outcomes.insert(ids(&spool));
    }
    assert_eq!(
        outcomes,
        BTreeSet::from([(2..=9).collect::<Vec<_>>(), (3..=9).collect()])
    );
}

#[test]
fn newer_format_versions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let segment = segment_files(tmp.path())[0].clone();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[4..8].copy_from_slice(&3u32.to_le_bytes());
    fs::write(&segment, &bytes).unwrap();
    let err = Spool::open_with(tmp.path(), opts).unwrap_err();
    assert!(
        matches!(err, SpoolError::UnsupportedVersion { found: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("00000000000000000001.seg"),
        "{err}"
    );

    for (file, magic) in [(CURSOR_FILE, CURSOR_MAGIC), (COUNTERS_FILE, COUNTERS_MAGIC)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut state = encode_slot(magic, 1, &Cursor::default()).to_vec();
        state.extend_from_slice(&encode_slot(magic, 2, &Cursor::default()));
        state[4..8].copy_from_slice(&7u32.to_le_bytes());
        fs::write(tmp.path().join(file), state).unwrap();
        let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(err, SpoolError::UnsupportedVersion { found: 7, .. }),
            "{file}: {err}"
        );
        assert!(err.to_string().contains(file), "{err}");
    }
}

/// Format 1 wrote its cursor at the first removal only: a spool of format 1 segments and no
/// state file is one that never removed a batch, not a lost cursor.
#[test]
fn a_version_1_spool_that_never_removed_a_batch_has_no_cursor_and_that_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let segments = tmp.path().join(SEGMENTS_DIR);
    fs::create_dir_all(&segments).unwrap();
    let mut bytes = legacy::encode_segment_header(1).to_vec();
    for n in 1..=3 {
        bytes.extend_from_slice(&legacy::encode_record(n, &batch(n, 30)));
    }
    fs::write(segments.join("00000000000000000001.seg"), &bytes).unwrap();
    let (mut spool, recovery) = open(tmp.path(), options(1 << 20, 1 << 20));
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(spool.stats().cursor_losses, 0);
    assert_eq!(drain(&mut spool).len(), 3);
    drop(spool);

    // The same spool in format 2 without its cursor is a loss.
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    fs::remove_file(tmp.path().join(CURSOR_FILE)).unwrap();
    fs::remove_file(tmp.path().join(COUNTERS_FILE)).unwrap();
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.cursor_missing, "{recovery:?}");
    assert_eq!(spool.stats().cursor_losses, 1);
}
