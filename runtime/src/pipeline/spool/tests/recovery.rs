//! Recovery at open: torn tails, corruption, the cursor, format versions.

use std::path::Path;

use super::*;

/// Truncates the last record at every length (as a crash in the middle of its `append`
/// would leave it) and checks that everything before it survives and appends go on.
#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let first = batch(1, 30);
    let second = batch(2, 30);
    let third = batch(3, 40);
    let record = |b: &[u8]| (RECORD_HEADER_LEN + b.len()) as u64;
    for alone_in_its_segment in [false, true] {
        // Room for a header and the first two records only, or for everything.
        let segment_bytes = if alone_in_its_segment {
            SEGMENT_HEADER_LEN as u64 + record(&first) + record(&second)
        } else {
            DEFAULT_SEGMENT_BYTES
        };
        let opts = options(1 << 20, segment_bytes);
        let last_len = if alone_in_its_segment {
            SEGMENT_HEADER_LEN as u64 + record(&third)
        } else {
            SEGMENT_HEADER_LEN as u64 + record(&first) + record(&second) + record(&third)
        };
        let record_start = last_len - record(&third);
        // With its own segment, also tear that segment's header.
        let from = if alone_in_its_segment {
            0
        } else {
            record_start
        };
        for cut in from..last_len {
            let tmp = tempfile::tempdir().unwrap();
            {
                let (mut spool, _) = open(tmp.path(), opts);
                for b in [&first, &second, &third] {
                    spool.append(b).unwrap();
                }
            }
            let files = segment_files(tmp.path());
            assert_eq!(files.len(), if alone_in_its_segment { 2 } else { 1 });
            let last = files.last().unwrap();
            assert_eq!(fs::metadata(last).unwrap().len(), last_len);
            set_len(last, cut);

            let (mut spool, recovery) = open(tmp.path(), opts);
            let context = format!("alone={alone_in_its_segment} cut={cut}: {recovery:?}");
            assert_eq!(
                contents(&spool),
                vec![(1, first.clone()), (2, second.clone())],
                "{context}"
            );
            assert_eq!(recovery.lost_batches, 0, "{context}");
            if cut < record_start {
                assert_eq!(recovery.corrupt_segments, 1, "{context}");
                assert_eq!(recovery.truncated_bytes, 0, "{context}");
            } else {
                assert_eq!(recovery.corrupt_segments, 0, "{context}");
                assert_eq!(recovery.truncated_bytes, cut - record_start, "{context}");
            }
            assert_eq!(spool.append(b"{\"n\":4}").unwrap().get(), 3, "{context}");
            drop(spool);
            let (spool, recovery) = open(tmp.path(), opts);
            assert!(recovery.is_clean(), "{context}");
            assert_eq!(ids(&spool), vec![1, 2, 3], "{context}");
            assert_eq!(spool.pending().last().unwrap().unwrap().1, b"{\"n\":4}");
        }
    }
}

/// A segment holding a lost batch goes once the cursor passed everything in it.
#[test]
fn a_segment_with_a_lost_batch_is_deleted_once_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let middle = segment_files(tmp.path())[1].clone();
    // The payload of batch 5, the second record of the middle segment.
    flip_byte(&middle, record_offset(1, 30) + RECORD_HEADER_LEN + 5);

    let (mut spool, recovery) = open(tmp.path(), opts);
    assert_eq!(recovery.lost_batches, 1, "{recovery:?}");
    assert_eq!(ids(&spool), vec![1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(spool.append(b"{}").unwrap().get(), 10);
    for _ in 1..=5 {
        let (id, _) = spool.oldest().unwrap().unwrap();
        spool.ack(id).unwrap();
    }
    assert!(!middle.exists());
    assert_eq!(spool.stats().lost_batches, 1);
    drop(spool);
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(ids(&spool), vec![7, 8, 9, 10]);
    assert_eq!(spool.stats().lost_batches, 1);
}

#[test]
fn flipped_segment_header_sets_the_segment_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let middle = segment_files(tmp.path())[1].clone();
    flip_byte(&middle, 10);
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert_eq!(recovery.corrupt_segments, 1);
    assert_eq!(recovery.lost_batches, 3);
    assert_eq!(ids(&spool), vec![1, 2, 3, 7, 8, 9]);
    let mut aside = middle.into_os_string();
    aside.push(CORRUPT_SUFFIX);
    assert!(Path::new(&aside).exists());
    assert_eq!(drain(&mut spool).len(), 6);
    assert_eq!(spool.stats().lost_batches, 3);
    let reason = fs::read_to_string(
        tmp.path()
            .join(DEAD_LETTER_DIR)
            .join("00000000000000000004.reason.txt"),
    )
    .unwrap();
    assert!(reason.contains(".seg.corrupt"), "{reason}");
}

/// A batch the backend rejects after its record went bad on disk is still set aside, with
/// its bytes as found and a note; `pending` names the damage.
#[test]
fn a_rejected_batch_whose_record_went_bad_is_dead_lettered_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let a = spool.append(&batch(1, 30)).unwrap();
    let b = spool.append(&batch(2, 30)).unwrap();
    assert_eq!(spool.oldest().unwrap().unwrap().0, a);
    flip_byte(
        &segment_files(tmp.path())[0],
        record_offset(0, 30) + RECORD_HEADER_LEN + 3,
    );

    let err = spool.pending().next().unwrap().unwrap_err();
    assert!(matches!(err, SpoolError::CorruptRecord { id, .. } if id == a));
    let message = err.to_string();
    assert!(
        message.starts_with("spool segment `") && message.contains("00000000000000000001.seg`"),
        "{message}"
    );
    spool.dead_letter(a, "HTTP 400").unwrap();
    let reason = fs::read_to_string(
        tmp.path()
            .join("dead-letter/00000000000000000001.reason.txt"),
    )
    .unwrap();
    assert!(
        reason.contains("reason: HTTP 400") && reason.contains("corrupt"),
        "{reason}"
    );
    assert_eq!(spool.oldest().unwrap(), Some((b, batch(2, 30))));
    assert_eq!(spool.stats().dead_lettered_batches, 1);
    assert_eq!(spool.stats().lost_batches, 0);
}

#[test]
fn leftover_temp_files_are_removed_and_foreign_files_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let segments = tmp.path().join(SEGMENTS_DIR);
    // Named as `fsutil::replace_with` names its temp files: `.TARGET.tmp-PID-RANDOM`.
    let leftover =
        |dir: &Path, target: &str| dir.join(format!(".{target}.tmp-4242-00000000000000ab"));
    let segment_tmp = leftover(&segments, "00000000000000000010.seg");
    fs::write(&segment_tmp, b"half").unwrap();
    fs::write(segments.join("notes.txt"), b"hello").unwrap();
    let foreign_segment_tmp = leftover(&segments, "notes");
    fs::write(&foreign_segment_tmp, b"hello").unwrap();
    fs::write(segments.join("notes.tmp"), b"hello").unwrap();
    let cursor_tmp = leftover(tmp.path(), "cursor");
    let counters_tmp = leftover(tmp.path(), "counters");
    fs::write(&cursor_tmp, b"half").unwrap();
    fs::write(&counters_tmp, b"half").unwrap();
    let dead_tmp = leftover(&tmp.path().join("dead-letter"), "00000000000000000001.json");
    fs::write(&dead_tmp, b"half").unwrap();
    let foreign_tmp = leftover(&tmp.path().join("dead-letter"), "draft");
    fs::write(&foreign_tmp, b"mine").unwrap();
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
    assert!(!segment_tmp.exists());
    assert!(!cursor_tmp.exists());
    assert!(!counters_tmp.exists());
    assert!(!dead_tmp.exists());
    assert!(segments.join("notes.txt").exists());
    assert!(foreign_segment_tmp.exists());
    assert!(segments.join("notes.tmp").exists());
    assert!(foreign_tmp.exists());
}

#[test]
fn garbage_segments_never_panic() {
    // Random bytes after a valid header, and files of every small length.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..200usize {
        let tmp = tempfile::tempdir().unwrap();
        let segments = tmp.path().join(SEGMENTS_DIR);
        fs::create_dir_all(&segments).unwrap();
        let mut bytes = encode_segment_header(1).to_vec();
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        if len % 2 == 0 {
            bytes.truncate(len);
        }
        fs::write(segments.join("00000000000000000001.seg"), &bytes).unwrap();
        let (mut spool, _) = open(tmp.path(), options(1 << 20, 1 << 20));
        assert!(spool.is_empty());
        spool.append(b"{}").unwrap();
    }
}
