//! The queue: append, oldest, ack, dead letter, the size bound and segment files.

use super::*;

#[test]
fn roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, recovery) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(spool.oldest().unwrap(), None);

    let a = spool.append(br#"{"a":1}"#).unwrap();
    let b = spool.append(b"").unwrap();
    let c = spool.append(&[0xff; 1000]).unwrap();
    assert!(a < b && b < c);
    assert_eq!(spool.oldest().unwrap(), Some((a, br#"{"a":1}"#.to_vec())));
    assert_eq!(
        contents(&spool),
        vec![
            (a.get(), br#"{"a":1}"#.to_vec()),
            (b.get(), vec![]),
            (c.get(), vec![0xff; 1000]),
        ]
    );
    assert_eq!(
        spool.stats(),
        SpoolStats {
            pending_batches: 3,
            pending_bytes: 1007,
            ..SpoolStats::default()
        }
    );
    assert_eq!(a.to_string(), "00000000000000000001");
}

#[test]
fn reopen_keeps_pending_batches_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(1 << 20, 1000);
    let mut expected = Vec::new();
    {
        let (mut spool, _) = open(tmp.path(), opts);
        for n in 0..40 {
            let b = batch(n, 20 + (n as usize * 37) % 300);
            expected.push((spool.append(&b).unwrap().get(), b));
        }
    }
    assert!(segment_files(tmp.path()).len() > 3);
    let (mut spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(recovery.pending_batches, 40);
    assert_eq!(contents(&spool), expected);

    let next = spool.append(b"{}").unwrap();
    assert_eq!(next.get(), 41);
    expected.push((41, b"{}".to_vec()));
    drop(spool);
    let (spool, _) = open(tmp.path(), opts);
    assert_eq!(contents(&spool), expected);
}

#[test]
fn ack_removes_durably_and_only_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert!(matches!(
        spool.ack(BatchId(1)),
        Err(SpoolError::NothingPending { .. })
    ));
    let a = spool.append(b"a").unwrap();
    let b = spool.append(b"bb").unwrap();
    let c = spool.append(b"ccc").unwrap();

    let err = spool.ack(b).unwrap_err();
    assert!(matches!(err, SpoolError::OutOfOrder { id, oldest } if id == b && oldest == a));
    assert_eq!(
        err.to_string(),
        "ack of batch 00000000000000000002 is out of order: the oldest pending batch is 00000000000000000001"
    );
    spool.ack(a).unwrap();
    assert!(spool.ack(a).is_err(), "a second ack of the same batch");
    assert_eq!(spool.oldest().unwrap(), Some((b, b"bb".to_vec())));
    assert_eq!(spool.stats().pending_bytes, 5);
    drop(spool);

    let (mut spool, recovery) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(ids(&spool), vec![b.get(), c.get()]);
    spool.ack(b).unwrap();
    spool.ack(c).unwrap();
    assert!(spool.is_empty());
    drop(spool);

    // Fully acked: the next batch still gets a fresh id.
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert!(spool.is_empty());
    assert_eq!(spool.append(b"d").unwrap().get(), 4);
}

#[test]
fn dead_letter_keeps_the_batch_and_its_reason_and_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let bad = spool.append(br#"{"bad":true}"#).unwrap();
    let good = spool.append(br#"{"good":true}"#).unwrap();
    assert!(matches!(
        spool.dead_letter(good, "x"),
        Err(SpoolError::OutOfOrder { .. })
    ));

    let path = spool
        .dead_letter(bad, "HTTP 400: missing field `type`")
        .unwrap();
    assert_eq!(
        path,
        tmp.path().join("dead-letter/00000000000000000001.json")
    );
    assert_eq!(fs::read(&path).unwrap(), br#"{"bad":true}"#);
    let reason = fs::read_to_string(
        tmp.path()
            .join("dead-letter/00000000000000000001.reason.txt"),
    )
    .unwrap();
    assert!(
        reason.contains("reason: HTTP 400: missing field `type`\n"),
        "{reason}"
    );
    assert_eq!(spool.oldest().unwrap().unwrap().0, good);
    assert_eq!(spool.stats().dead_lettered_batches, 1);
    drop(spool);

    let (spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(ids(&spool), vec![good.get()]);
    assert_eq!(spool.stats().dead_lettered_batches, 1);
}

#[test]
fn full_spool_drops_the_oldest_and_counts_them_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(100, 120);
    let (mut spool, _) = open(tmp.path(), opts);
    for n in 1..=3 {
        spool.append(&batch(n, 40)).unwrap();
    }
    assert_eq!(ids(&spool), vec![2, 3]);
    // Refused whole, without dropping anything for it.
    let err = spool.append(&[b'x'; 101]).unwrap_err();
    assert!(matches!(
        err,
        SpoolError::BatchTooLarge {
            size: 101,
            max: 100
        }
    ));
    assert_eq!(
        err.to_string(),
        "batch of 101 bytes is larger than the spool's limit of 100 bytes"
    );
    spool.append(&batch(4, 100)).unwrap();
    assert_eq!(ids(&spool), vec![4]);
    let stats = spool.stats();
    assert_eq!(
        stats,
        SpoolStats {
            pending_batches: 1,
            pending_bytes: 100,
            dropped_batches: 3,
            dropped_bytes: 120,
            ..SpoolStats::default()
        }
    );
    drop(spool);

    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean());
    assert_eq!(spool.stats(), stats);
    assert_eq!(
        segment_files(tmp.path()).len(),
        1,
        "dropped segments are deleted"
    );
    drop(spool);

    // A lowered limit takes effect at open.
    let (spool, recovery) = open(tmp.path(), options(50, 120));
    assert_eq!((recovery.dropped_batches, recovery.dropped_bytes), (1, 100));
    assert_eq!(spool.stats().dropped_batches, 4);
    assert!(spool.is_empty());
}

#[test]
fn segments_roll_over_and_acked_ones_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let (mut spool, _) = open(tmp.path(), opts);
    let names = |dir: &Path| -> Vec<String> {
        segment_files(dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(tmp.path()),
        [
            "00000000000000000001.seg",
            "00000000000000000004.seg",
            "00000000000000000007.seg"
        ]
    );
    for id in 1..=2 {
        spool.ack(BatchId(id)).unwrap();
    }
    assert_eq!(names(tmp.path()).len(), 3);
    spool.ack(BatchId(3)).unwrap();
    assert_eq!(names(tmp.path())[0], "00000000000000000004.seg");
    for id in 4..=9 {
        spool.ack(BatchId(id)).unwrap();
    }
    // The active segment stays, to be appended to.
    assert_eq!(names(tmp.path()), ["00000000000000000007.seg"]);
    spool.append(&batch(10, 30)).unwrap();
    assert_eq!(names(tmp.path()), ["00000000000000000010.seg"]);
    drop(spool);
    let (spool, _) = open(tmp.path(), opts);
    assert_eq!(ids(&spool), vec![10]);
}

#[test]
fn a_segment_left_behind_after_its_acks_is_deleted_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = three_per_segment(tmp.path());
    let (mut spool, _) = open(tmp.path(), opts);
    for id in 1..=3 {
        spool.ack(BatchId(id)).unwrap();
    }
    drop(spool);
    // As if the process died between the cursor write and the deletion.
    let first = tmp.path().join("segments/00000000000000000001.seg");
    fs::write(&first, encode_segment_header(1)).unwrap();
    let (spool, recovery) = open(tmp.path(), opts);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert!(!first.exists());
    assert_eq!(ids(&spool), (4..=9).collect::<Vec<_>>());
}

#[test]
fn a_second_open_is_refused_while_the_spool_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
}

/// An append whose write or fsync failed may leave part of a record behind; the next append
/// cuts it off first, even when it starts a new segment.
#[test]
fn a_failed_append_is_cut_off_before_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 60] {
        let opts = options(1 << 20, segment_bytes);
        let (mut spool, _) = open(tmp.path(), opts);
        let first = spool.append(&batch(1, 30)).unwrap();
        let last = segment_files(tmp.path()).pop().unwrap();
        // What a write that failed half-way leaves.
        let mut file = OpenOptions::new().append(true).open(&last).unwrap();
        file.write_all(&encode_record(first.get() + 1, &batch(2, 30))[..25])
            .unwrap();
        spool.active.as_mut().unwrap().dirty = true;
        let second = spool.append(&batch(3, 30)).unwrap();
        assert_eq!(second.get(), first.get() + 1);
        drop(spool);
        let (mut spool, recovery) = open(tmp.path(), opts);
        assert!(recovery.is_clean(), "{segment_bytes}: {recovery:?}");
        assert_eq!(
            contents(&spool),
            vec![(first.get(), batch(1, 30)), (second.get(), batch(3, 30))]
        );
        spool.ack(first).unwrap();
        spool.ack(second).unwrap();
    }
}

#[test]
#[ignore = "measures fsync throughput: cargo test --release -- --ignored --nocapture"]
fn append_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), 1 << 30).unwrap();
    let batch = vec![b'x'; 20 * 1024];
    let began = Instant::now();
    let mut count = 0u64;
    while began.elapsed() < Duration::from_secs(5) {
        spool.append(&batch).unwrap();
        count += 1;
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "append: {count} batches of 20 KiB in {secs:.2} s: {:.0} batches/s, {:.1} MiB/s",
        count as f64 / secs,
        count as f64 * 20.0 / 1024.0 / secs
    );
    let began = Instant::now();
    let mut acked = 0u64;
    while let Some((id, _)) = spool.oldest().unwrap() {
        spool.ack(id).unwrap();
        acked += 1;
        if began.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "oldest + ack: {acked} in {secs:.2} s: {:.0}/s",
        acked as f64 / secs
    );
    drop(spool);
    let began = Instant::now();
    let (spool, _) = Spool::open(tmp.path(), 1 << 30).unwrap();
    println!(
        "reopen with {} pending batches: {:.1} ms",
        spool.len(),
        began.elapsed().as_secs_f64() * 1000.0
    );
}

/// A run for one push holds at most `max_batches`, and past the first at most `max_bytes`; a
/// first batch larger than `max_bytes` still goes alone. `ack_through` removes the whole run
/// durably, and refuses a batch that is not pending.
#[test]
fn runs_are_bounded_and_acked_through_their_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(tmp.path(), options(1 << 20, 1000));
    for n in 1..=10 {
        spool.append(&batch(n, 30)).unwrap();
    }
    spool.append(&batch(11, 500)).unwrap();
    spool.append(&batch(12, 30)).unwrap();
    let ids = |run: &[(BatchId, Vec<u8>)]| run.iter().map(|(id, _)| id.get()).collect::<Vec<_>>();

    let run = spool.oldest_run(4, usize::MAX).unwrap();
    assert_eq!(ids(&run), [1, 2, 3, 4]);
    assert!(matches!(
        spool.ack_through(BatchId(99)),
        Err(SpoolError::OutOfOrder { .. })
    ));
    spool.ack_through(BatchId(4)).unwrap();
    assert_eq!(ids(&spool.oldest_run(100, 95).unwrap()), [5, 6, 7]);
    spool.ack_through(BatchId(7)).unwrap();
    assert_eq!(ids(&spool.oldest_run(100, 200).unwrap()), [8, 9, 10]);
    spool.ack_through(BatchId(10)).unwrap();
    assert_eq!(ids(&spool.oldest_run(100, 100).unwrap()), [11]);
    drop(spool);

    let (mut spool, recovery) = open(tmp.path(), options(1 << 20, 1000));
    assert_eq!(recovery.pending_batches, 2);
    assert_eq!(ids(&spool.oldest_run(100, usize::MAX).unwrap()), [11, 12]);
    spool.ack_through(BatchId(12)).unwrap();
    assert!(spool.oldest_run(100, usize::MAX).unwrap().is_empty());
    assert!(matches!(
        spool.ack_through(BatchId(12)),
        Err(SpoolError::NothingPending { .. })
    ));
}
