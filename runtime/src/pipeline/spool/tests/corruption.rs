//! Corrupt records: set aside with their bytes, counted exactly, never blocking the batches
//! behind them.

use super::*;

/// A part of a record to damage, by its offset in the record.
#[derive(Debug, Clone, Copy)]
enum Field {
    Magic,
    /// The low byte of the length: the record seems a little longer or shorter.
    LengthLow,
    /// The high byte of the length: the record seems to run far past the end of the file.
    LengthHigh,
    Seq,
    Checksum,
    Payload,
}

const FIELDS: [Field; 6] = [
    Field::Magic,
    Field::LengthLow,
    Field::LengthHigh,
    Field::Seq,
    Field::Checksum,
    Field::Payload,
];

impl Field {
    fn offset(self) -> usize {
        match self {
            Field::Magic => 1,
            Field::LengthLow => 4,
            Field::LengthHigh => 7,
            Field::Seq => 9,
            Field::Checksum => 17,
            Field::Payload => RECORD_HEADER_LEN + 5,
        }
    }
}

const PAYLOAD: usize = 30;

/// `count` batches of 30 bytes in one segment; returns that segment.
fn one_segment(dir: &Path, count: u64) -> PathBuf {
    let (mut spool, _) = open(dir, options(1 << 20, DEFAULT_SEGMENT_BYTES));
    for n in 1..=count {
        spool.append(&batch(n, PAYLOAD)).unwrap();
    }
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

fn expected(ids: impl IntoIterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    ids.into_iter().map(|n| (n, batch(n, PAYLOAD))).collect()
}

/// The dead letter of an unreadable batch holds exactly the bytes found on disk.
fn assert_set_aside(dir: &Path, seq: u64, raw: &[u8]) {
    let prefix = format!("{seq:020}.");
    let names: Vec<_> = dead_letter_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(
        names
            .iter()
            .any(|n| fs::read(dir.join(DEAD_LETTER_DIR).join(n)).unwrap() == raw),
        "no dead letter of batch {seq} holds its raw bytes: {names:?}"
    );
    let reason = names
        .iter()
        .find(|n| n.ends_with(".reason.txt"))
        .unwrap_or_else(|| panic!("no reason for batch {seq}: {names:?}"));
    let text = fs::read_to_string(dir.join(DEAD_LETTER_DIR).join(reason)).unwrap();
    assert!(text.contains("reason: "), "{text}");
}

/// The case: one damaged record in the segment being appended to used to stop delivery
/// and, at the next start, cut off every intact batch behind it.
#[test]
fn a_corrupt_record_in_the_middle_of_the_active_segment_is_set_aside_and_the_rest_delivered() {
    for field in FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let segment = one_segment(tmp.path(), 10);
        let at = record_offset(3, PAYLOAD);
        flip_byte(&segment, at + field.offset());
        let raw = fs::read(&segment).unwrap()[at..record_offset(4, PAYLOAD)].to_vec();

        let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        let context = format!("{field:?}: {recovery:?}");
        assert_eq!(recovery.lost_batches, 1, "{context}");
        assert_eq!(recovery.truncated_bytes, 0, "{context}");
        assert_eq!(
            drain(&mut spool),
            expected((1..=3).chain(5..=10)),
            "{context}"
        );
        assert_set_aside(tmp.path(), 4, &raw);
        assert_eq!(spool.stats().lost_batches, 1, "{context}");
        assert_eq!(spool.append(b"{}").unwrap().get(), 11, "{context}");
        drop(spool);
        let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        assert!(recovery.is_clean(), "{field:?}: {recovery:?}");
        assert_eq!(drain(&mut spool), vec![(11, b"{}".to_vec())], "{field:?}");
    }
}

/// The first record of a segment: 63 intact batches behind it.
#[test]
fn a_corrupt_first_record_loses_only_itself() {
    for field in FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let segment = one_segment(tmp.path(), 64);
        let at = record_offset(0, PAYLOAD);
        flip_byte(&segment, at + field.offset());
        let raw = fs::read(&segment).unwrap()[at..record_offset(1, PAYLOAD)].to_vec();

        let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        let context = format!("{field:?}: {recovery:?}");
        assert_eq!(recovery.lost_batches, 1, "{context}");
        assert_eq!(recovery.truncated_bytes, 0, "{context}");
        assert_eq!(recovery.pending_batches, 63, "{context}");
        assert_eq!(drain(&mut spool), expected(2..=64), "{context}");
        assert_set_aside(tmp.path(), 1, &raw);
        assert_eq!(spool.stats().lost_batches, 1, "{context}");
    }
}

/// The last record of the last segment was fsynced and its append returned: damage there is
/// a lost batch, not a torn tail, and the bytes are kept rather than cut.
#[test]
fn a_corrupt_last_record_is_a_lost_batch_not_a_torn_tail() {
    for field in FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let segment = one_segment(tmp.path(), 10);
        let at = record_offset(9, PAYLOAD);
        flip_byte(&segment, at + field.offset());
        let raw = fs::read(&segment).unwrap()[at..].to_vec();

        let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        let context = format!("{field:?}: {recovery:?}");
        assert_eq!(recovery.lost_batches, 1, "{context}");
        assert_eq!(recovery.truncated_bytes, 0, "{context}");
        assert_eq!(drain(&mut spool), expected(1..=9), "{context}");
        assert_set_aside(tmp.path(), 10, &raw);
        assert_eq!(spool.stats().lost_batches, 1, "{context}");
        assert_eq!(spool.append(b"{}").unwrap().get(), 11, "{context}");
        drop(spool);
        let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        assert!(recovery.is_clean(), "{field:?}: {recovery:?}");
        assert_eq!(drain(&mut spool), vec![(11, b"{}".to_vec())], "{field:?}");
    }
}

#[test]
fn a_corrupt_record_in_an_older_segment_loses_only_itself() {
    for field in FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let middle = segment_files(tmp.path())[1].clone();
        let at = record_offset(1, PAYLOAD);
        flip_byte(&middle, at + field.offset());

        let (mut spool, recovery) = open(tmp.path(), opts);
        let context = format!("{field:?}: {recovery:?}");
        assert_eq!(recovery.lost_batches, 1, "{context}");
        assert_eq!(recovery.truncated_bytes, 0, "{context}");
        assert_eq!(
            drain(&mut spool),
            expected((1..=4).chain(6..=9)),
            "{context}"
        );
        assert_eq!(spool.stats().lost_batches, 1, "{context}");
    }
}

/// Damage spanning several records (here from inside batch 3 to inside batch 5) counts each.
#[test]
fn damage_across_records_counts_every_batch_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let segment = one_segment(tmp.path(), 10);
    let mut bytes = fs::read(&segment).unwrap();
    let (from, to) = (
        record_offset(2, PAYLOAD) + 10,
        record_offset(4, PAYLOAD) + 30,
    );
    bytes[from..to].fill(0);
    fs::write(&segment, &bytes).unwrap();

    let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
    assert_eq!(recovery.lost_batches, 3, "{recovery:?}");
    assert_eq!(
        drain(&mut spool),
        expected((1..=2).chain(6..=10)),
        "{recovery:?}"
    );
    assert_eq!(spool.stats().lost_batches, 3);
    // One dead letter, named by the first batch, holding the whole damaged stretch.
    let raw = &fs::read(&segment).unwrap()[record_offset(2, PAYLOAD)..record_offset(5, PAYLOAD)];
    assert_set_aside(tmp.path(), 3, raw);
}

/// A segment that lost its end (here inside batch 5) while a later segment exists: the batches
/// it held are counted from the next segment's first seq.
#[test]
fn a_truncated_older_segment_counts_what_it_lost() {
    for (cut_in_record, lost) in [(Some(10), 2), (None, 3)] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = three_per_segment(tmp.path());
        let middle = segment_files(tmp.path())[1].clone();
        let len = cut_in_record.map_or(SEGMENT_HEADER_LEN, |at| record_offset(1, PAYLOAD) + at);
        set_len(&middle, len as u64);

        let (mut spool, recovery) = open(tmp.path(), opts);
        assert_eq!(recovery.lost_batches, lost, "{recovery:?}");
        assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
        let survivors: Vec<u64> = (1..=9).filter(|&n| n < 7 - lost || n >= 7).collect();
        assert_eq!(drain(&mut spool), expected(survivors), "{recovery:?}");
        assert_eq!(spool.stats().lost_batches, lost, "{recovery:?}");
    }
}

/// Damage that appears while the spool is open (bit rot, a bad sector) is found when the batch
/// is read: `oldest` sets it aside and returns the next batch, so delivery never stops.
#[test]
fn corruption_found_while_running_does_not_stop_delivery() {
    for field in FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
        for n in 1..=5 {
            spool.append(&batch(n, PAYLOAD)).unwrap();
        }
        let segment = segment_files(tmp.path())[0].clone();
        let at = record_offset(1, PAYLOAD);
        flip_byte(&segment, at + field.offset());
        let raw = fs::read(&segment).unwrap()[at..record_offset(2, PAYLOAD)].to_vec();

        assert_eq!(drain(&mut spool), expected([1, 3, 4, 5]), "{field:?}");
        assert_set_aside(tmp.path(), 2, &raw);
        assert_eq!(spool.stats().lost_batches, 1, "{field:?}");
    }
}

/// Pushes of several batches: a run stops before a batch found unreadable (at open or while
/// running), which is then set aside on its own, so acking a whole run never moves the cursor
/// past a batch that was not sent.
#[test]
fn runs_of_batches_stop_before_an_unreadable_one() {
    for field in FIELDS {
        for found_at_open in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let segment = one_segment(tmp.path(), 10);
            let (mut spool, _) = if found_at_open {
                flip_byte(&segment, record_offset(3, PAYLOAD) + field.offset());
                open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES))
            } else {
                let opened = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
                flip_byte(&segment, record_offset(3, PAYLOAD) + field.offset());
                opened
            };
            let context = format!("{field:?}, found at open: {found_at_open}");
            let pushes = drain_in_runs(&mut spool, 8);
            let ids: Vec<Vec<u64>> = pushes
                .iter()
                .map(|push| push.iter().map(|(id, _)| *id).collect())
                .collect();
            assert_eq!(
                ids,
                vec![vec![1, 2, 3], vec![5, 6, 7, 8, 9, 10]],
                "{context}"
            );
            assert_eq!(
                pushes.concat(),
                expected((1..=3).chain(5..=10)),
                "{context}"
            );
            assert_eq!(spool.stats().lost_batches, 1, "{context}");
            assert!(
                dead_letter_names(tmp.path())
                    .iter()
                    .any(|name| name.starts_with(&format!("{:020}.", 4))),
                "{context}"
            );
        }
    }
}

/// An I/O error reading the oldest batch is returned (the caller retries later), but only a few
/// times in a row: then the batch is set aside as lost, so a bad sector cannot stop delivery
/// for good. Here the segment file was replaced by a directory (reads fail with EISDIR).
#[test]
fn a_batch_that_keeps_failing_to_read_is_set_aside_after_a_few_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    // One batch per segment.
    let (mut spool, _) = open(tmp.path(), options(1 << 20, 1));
    for n in 1..=2 {
        spool.append(&batch(n, PAYLOAD)).unwrap();
    }
    let first = segment_files(tmp.path())[0].clone();
    fs::remove_file(&first).unwrap();
    fs::create_dir(&first).unwrap();
    for attempt in 1..MAX_READ_ATTEMPTS {
        let err = spool.oldest().unwrap_err();
        assert!(
            matches!(
                &err,
                SpoolError::Segment {
                    op: "reading a record",
                    ..
                }
            ),
            "attempt {attempt}: {err}"
        );
        assert_eq!(spool.stats().lost_batches, 0);
    }
    assert_eq!(
        spool.oldest().unwrap(),
        Some((BatchId(2), batch(2, PAYLOAD)))
    );
    assert_eq!(spool.stats().lost_batches, 1);
    let reason = fs::read_to_string(
        tmp.path()
            .join(DEAD_LETTER_DIR)
            .join("00000000000000000001.reason.txt"),
    )
    .unwrap();
    assert!(reason.contains("failed 3 times"), "{reason}");
}

/// Found by the model: an ack or dead letter naming a later batch (a caller's mistake) must
/// not set aside the lost batches behind the oldest one, which would move the cursor past it.
#[test]
fn a_wrong_ack_never_moves_past_the_oldest_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let segment = one_segment(tmp.path(), 3);
    flip_byte(&segment, record_offset(1, PAYLOAD) + RECORD_HEADER_LEN + 1);
    let (mut spool, recovery) = open(tmp.path(), options(1 << 20, DEFAULT_SEGMENT_BYTES));
    assert_eq!(recovery.lost_batches, 1);
    assert!(matches!(
        spool.ack(BatchId(3)),
        Err(SpoolError::OutOfOrder { .. })
    ));
    assert!(spool.dead_letter(BatchId(3), "x").is_err());
    assert_eq!(spool.stats().lost_batches, 0);
    assert_eq!(drain(&mut spool), expected([1, 3]));
    assert_eq!(spool.stats().lost_batches, 1);
}
