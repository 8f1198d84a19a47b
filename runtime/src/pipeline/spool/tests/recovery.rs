//! Recovery at open: torn tails, corruption, the cursor, format versions.

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

#[test]
fn flipped_byte_in_an_older_segment_loses_only_the_rest_of_that_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let middle = segment_files(tmp.path())[1].clone();
    // The payload of batch 5, the second record of the middle segment.
    flip_byte(&middle, SEGMENT_HEADER_LEN + 50 + RECORD_HEADER_LEN + 5);

    let (mut spool, recovery) = open(tmp.path(), opts);
    assert_eq!(recovery.lost_batches, 2, "{recovery:?}");
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(ids(&spool), vec![1, 2, 3, 4, 7, 8, 9]);
    assert_eq!(spool.append(b"{}").unwrap().get(), 10);
    for id in [1, 2, 3, 4] {
        spool.ack(BatchId(id)).unwrap();
    }
    // The middle segment is fully acked as far as it can be read, so it goes.
    assert!(!middle.exists());
    spool.ack(BatchId(7)).unwrap();
    drop(spool);
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(ids(&spool), vec![8, 9, 10]);
}

#[test]
fn flipped_byte_in_the_last_segment_truncates_behind_it() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, DEFAULT_SEGMENT_BYTES);
    {
        let (mut spool, _) = open(tmp.path(), opts);
        for n in 1..=5 {
            spool.append(&batch(n, 30)).unwrap();
        }
    }
    let segment = &segment_files(tmp.path())[0];
    // The seq field of batch 3.
    flip_byte(segment, SEGMENT_HEADER_LEN + 2 * 50 + 9);
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert_eq!(ids(&spool), vec![1, 2]);
    assert_eq!(recovery.truncated_bytes, 150);
    assert_eq!(
        recovery.lost_batches, 2,
        "batches 4 and 5 were intact: {recovery:?}"
    );
    assert_eq!(spool.append(b"{}").unwrap().get(), 3);
}

#[test]
fn flipped_segment_header_sets_the_segment_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let middle = segment_files(tmp.path())[1].clone();
    flip_byte(&middle, 10);
    let (spool, recovery) = open(tmp.path(), opts);
    assert_eq!(recovery.corrupt_segments, 1);
    assert_eq!(recovery.lost_batches, 3);
    assert_eq!(ids(&spool), vec![1, 2, 3, 7, 8, 9]);
    let mut aside = middle.into_os_string();
    aside.push(CORRUPT_SUFFIX);
    assert!(Path::new(&aside).exists());
}

#[test]
fn corrupt_record_found_when_reading_can_be_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let a = spool.append(&batch(1, 30)).unwrap();
    let b = spool.append(&batch(2, 30)).unwrap();
    flip_byte(&segment_files(tmp.path())[0], SEGMENT_HEADER_LEN + 25);

    let err = spool.oldest().unwrap_err();
    assert!(matches!(err, SpoolError::CorruptRecord { id, .. } if id == a));
    let message = err.to_string();
    assert!(
        message.starts_with("spool segment `") && message.contains("00000000000000000001.seg`"),
        "{message}"
    );
    spool.dead_letter(a, "unreadable").unwrap();
    let reason = fs::read_to_string(
        tmp.path()
            .join("dead-letter/00000000000000000001.reason.txt"),
    )
    .unwrap();
    assert!(
        reason.contains("reason: unreadable") && reason.contains("corrupt"),
        "{reason}"
    );
    assert_eq!(spool.oldest().unwrap(), Some((b, batch(2, 30))));
}

#[test]
fn corrupt_cursor_is_reset_and_batches_are_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let (mut spool, _) = open(tmp.path(), opts);
    spool.ack(BatchId(1)).unwrap();
    drop(spool);
    flip_byte(&tmp.path().join(CURSOR_FILE), 9);
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.cursor_reset);
    assert_eq!(recovery.lost_batches, 0);
    assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
}

#[test]
fn newer_format_versions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let segment = segment_files(tmp.path())[0].clone();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&segment, &bytes).unwrap();
    let err = Spool::open_with(tmp.path(), opts).unwrap_err();
    assert!(
        matches!(err, SpoolError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("00000000000000000001.seg"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut cursor = Cursor::default().encode();
    cursor[4..8].copy_from_slice(&7u32.to_le_bytes());
    fs::write(tmp.path().join(CURSOR_FILE), cursor).unwrap();
    let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
    assert!(
        matches!(err, SpoolError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );
}

#[test]
fn leftover_temp_files_are_removed_and_foreign_files_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let segments = tmp.path().join(SEGMENTS_DIR);
    fs::write(segments.join("00000000000000000010.seg.tmp"), b"half").unwrap();
    fs::write(segments.join("notes.txt"), b"hello").unwrap();
    fs::write(tmp.path().join("cursor.tmp"), b"half").unwrap();
    let dead_tmp = tmp.path().join("dead-letter/00000000000000000001.json.tmp");
    fs::write(&dead_tmp, b"half").unwrap();
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(ids(&spool), (1..=9).collect::<Vec<_>>());
    assert!(!segments.join("00000000000000000010.seg.tmp").exists());
    assert!(!tmp.path().join("cursor.tmp").exists());
    assert!(!dead_tmp.exists());
    assert!(segments.join("notes.txt").exists());
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
