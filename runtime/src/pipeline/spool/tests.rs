//! Tests of the spool: format, recovery, the queue against a model, and crashes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::format::*;
use super::recovery::scan_segment;
use super::*;

fn options(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes,
    }
}

fn open(dir: &Path, options: SpoolOptions) -> (Spool, Recovery) {
    Spool::open_with(dir, options).unwrap()
}

/// A JSON-ish batch whose content says which one it is.
fn batch(n: u64, len: usize) -> Vec<u8> {
    let mut out = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    while out.len() + 2 < len {
        out.push(b'a' + (n % 26) as u8);
    }
    out.extend_from_slice(b"\"}");
    out
}

fn contents(spool: &Spool) -> Vec<(u64, Vec<u8>)> {
    spool
        .pending()
        .map(|r| r.map(|(id, b)| (id.get(), b)).unwrap())
        .collect()
}

fn ids(spool: &Spool) -> Vec<u64> {
    contents(spool).into_iter().map(|(id, _)| id).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(SEGMENTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(SEGMENT_SUFFIX))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

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

/// Three records of 50 bytes per segment: batches 1-3, 4-6, 7-9.
fn three_per_segment(dir: &Path) -> SpoolOptions {
    let opts = options(1 << 20, SEGMENT_HEADER_LEN as u64 + 150);
    let (mut spool, _) = open(dir, opts);
    for n in 1..=9 {
        spool.append(&batch(n, 30)).unwrap();
    }
    assert_eq!(segment_files(dir).len(), 3);
    opts
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
            dead_lettered_batches: 0,
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
fn a_second_open_is_refused_while_the_spool_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let err = Spool::open(tmp.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
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

// ---- the spool against a model: a queue ----

const MODEL_MAX_BYTES: u64 = 1000;
const MODEL_SEGMENT_BYTES: u64 = 400;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Ack,
    AckWrongId(u64),
    DeadLetter,
    Reopen,
    /// Cut the last record of the last segment to `n % its length` bytes and reopen.
    TearTail(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
        1 => proptest::collection::vec(any::<u8>(), 990..1010).prop_map(Op::Append),
        5 => Just(Op::Ack),
        1 => (0u64..40).prop_map(Op::AckWrongId),
        2 => Just(Op::DeadLetter),
        2 => Just(Op::Reopen),
        2 => any::<u16>().prop_map(Op::TearTail),
    ]
}

#[derive(Debug, Default)]
struct Model {
    pending: VecDeque<(u64, Vec<u8>)>,
    stats: SpoolStats,
    /// The highest id acked, dead-lettered or dropped.
    removed_through: u64,
}

impl Model {
    fn pop_front(&mut self) -> (u64, Vec<u8>) {
        let (id, batch) = self.pending.pop_front().unwrap();
        self.removed_through = id;
        (id, batch)
    }
}

fn run_against_model(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = options(MODEL_MAX_BYTES, MODEL_SEGMENT_BYTES);
    let mut spool = Some(open(dir, opts).0);
    let mut model = Model::default();
    for op in ops {
        let s = spool.as_mut().unwrap();
        match op {
            Op::Append(batch) => {
                let result = s.append(&batch);
                if batch.len() as u64 > MODEL_MAX_BYTES {
                    assert!(matches!(result, Err(SpoolError::BatchTooLarge { .. })));
                    continue;
                }
                let id = result.unwrap().get();
                let mut bytes: u64 = model.pending.iter().map(|(_, b)| b.len() as u64).sum();
                while bytes + batch.len() as u64 > MODEL_MAX_BYTES {
                    let (_, dropped) = model.pop_front();
                    bytes -= dropped.len() as u64;
                    model.stats.dropped_batches += 1;
                    model.stats.dropped_bytes += dropped.len() as u64;
                }
                assert!(id > model.removed_through);
                assert!(model.pending.back().is_none_or(|&(last, _)| id > last));
                model.pending.push_back((id, batch));
            }
            Op::Ack => match model.pending.front() {
                None => assert!(s.ack(BatchId(model.removed_through + 1)).is_err()),
                Some(&(id, _)) => {
                    s.ack(BatchId(id)).unwrap();
                    model.pop_front();
                }
            },
            Op::AckWrongId(id) => {
                if model
                    .pending
                    .front()
                    .is_none_or(|&(oldest, _)| oldest != id)
                {
                    assert!(s.ack(BatchId(id)).is_err());
                }
            }
            Op::DeadLetter => match model.pending.front() {
                None => assert!(s.dead_letter(BatchId(1), "x").is_err()),
                Some(&(id, _)) => {
                    let path = s.dead_letter(BatchId(id), "rejected").unwrap();
                    let (_, batch) = model.pop_front();
                    assert_eq!(fs::read(path).unwrap(), batch);
                    model.stats.dead_lettered_batches += 1;
                }
            },
            Op::Reopen => {
                drop(spool.take());
                let (reopened, recovery) = open(dir, opts);
                assert!(recovery.is_clean(), "{recovery:?}");
                spool = Some(reopened);
            }
            Op::TearTail(n) => {
                drop(spool.take());
                let mut torn = 0;
                if let Some(last) = segment_files(dir).last() {
                    let bytes = fs::read(last).unwrap();
                    let name = last.file_stem().unwrap().to_str().unwrap();
                    let scan = scan_segment(&bytes, name.parse().unwrap());
                    assert!(scan.stop.is_none());
                    if let Some(&(seq, offset, len)) = scan.records.last() {
                        torn = u64::from(n) % (RECORD_HEADER_LEN as u64 + u64::from(len));
                        set_len(last, offset + torn);
                        // The newest record on disk: pending only if it is the model's newest.
                        if model.pending.back().is_some_and(|&(id, _)| id == seq) {
                            model.pending.pop_back();
                        } else {
                            assert!(seq <= model.removed_through);
                        }
                    }
                }
                let (reopened, recovery) = open(dir, opts);
                assert_eq!(recovery.truncated_bytes, torn);
                assert_eq!(recovery.lost_batches, 0);
                assert_eq!(recovery.corrupt_segments, 0);
                spool = Some(reopened);
            }
        }
        let s = spool.as_ref().unwrap();
        assert_eq!(contents(s), Vec::from(model.pending.clone()));
        assert_eq!(
            s.oldest().unwrap().map(|(id, b)| (id.get(), b)),
            model.pending.front().cloned()
        );
        model.stats.pending_batches = model.pending.len() as u64;
        model.stats.pending_bytes = model.pending.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(s.stats(), model.stats);
        // Segments the cursor passed are gone, except the one being appended to.
        assert!(segment_files(dir).len() as u64 <= 2 + MODEL_MAX_BYTES / 100);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn spool_agrees_with_a_queue_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_against_model(ops);
    }
}

// ---- crash test: a child process appending, killed with SIGKILL ----

const CRASH_DIR_ENV: &str = "SPOOL_CRASH_TEST_DIR";
const CRASH_START_ENV: &str = "SPOOL_CRASH_TEST_START";

fn crash_options() -> SpoolOptions {
    options(1 << 30, 64 * 1024)
}

fn crash_batch(n: u64) -> Vec<u8> {
    batch(n, 64 + (n * 7919 % 4000) as usize)
}

fn crash_batch_number(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.strip_prefix("{\"n\":")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// Does nothing in a normal run. As the child of `survives_sigkill_at_random_times`, it
/// appends (and now and then acks) until it is killed, reporting on stdout each append and
/// ack after it returned.
#[test]
fn crash_child_append_loop() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(CRASH_START_ENV).unwrap().parse().unwrap();
    let (mut spool, _) = open(Path::new(&dir), crash_options());
    let mut out = io::stdout().lock();
    let began = Instant::now();
    // Bounded, in case the parent dies before killing it.
    for n in start.. {
        if began.elapsed() > Duration::from_secs(20) {
            break;
        }
        let id = spool.append(&crash_batch(n)).unwrap();
        writeln!(out, "SPOOL-CRASH appended {} {n}", id.get()).unwrap();
        out.flush().unwrap();
        if n % 3 == 0
            && let Some((id, _)) = spool.oldest().unwrap()
        {
            spool.ack(id).unwrap();
            writeln!(out, "SPOOL-CRASH acked {}", id.get()).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn survives_sigkill_at_random_times() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Test names are module paths without the crate name.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let child_test = format!("{module}::crash_child_append_loop");
    let mut rng = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {rng}");

    let mut appended = BTreeMap::new(); // id -> batch number
    let mut acked = BTreeSet::new();
    let mut torn_tails = 0;
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([&child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR_ENV, tmp.path())
            .env(CRASH_START_ENV, (round * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // libtest prints `test <name> ... ` without a newline before the test runs.
            let Some(at) = line.find("SPOOL-CRASH ") else {
                continue;
            };
            let words: Vec<_> = line[at..].split_whitespace().collect();
            match words[..] {
                ["SPOOL-CRASH", "appended", id, n] => {
                    let id: u64 = id.parse().unwrap();
                    let n: u64 = n.parse().unwrap();
                    assert_eq!(appended.insert(id, n), None, "id {id} handed out twice");
                }
                ["SPOOL-CRASH", "acked", id] => {
                    acked.insert(id.parse::<u64>().unwrap());
                }
                _ => {}
            }
        }

        let (spool, recovery) = open(tmp.path(), crash_options());
        assert_eq!(recovery.lost_batches, 0, "{recovery:?}");
        assert_eq!(recovery.corrupt_segments, 0, "{recovery:?}");
        torn_tails += u64::from(recovery.truncated_bytes > 0);
        let pending = contents(&spool);
        let max_reported = appended.keys().next_back().copied().unwrap_or(0);
        for (id, batch) in &pending {
            let n = crash_batch_number(batch).unwrap();
            assert_eq!(batch, &crash_batch(n), "batch {id} is intact");
            assert!(!acked.contains(id), "batch {id} came back after its ack");
            match appended.get(id) {
                Some(&reported) => assert_eq!(reported, n),
                None => {
                    // An append that completed but was not reported before the kill.
                    assert!(*id > max_reported, "unknown batch {id}");
                    appended.insert(*id, n);
                }
            }
        }
        let pending_ids: BTreeSet<u64> = pending.iter().map(|(id, _)| *id).collect();
        let missing: Vec<u64> = appended
            .keys()
            .filter(|id| !acked.contains(id) && !pending_ids.contains(id))
            .copied()
            .collect();
        // Only an ack in flight may have taken the oldest batch without reporting it.
        assert!(missing.len() <= 1, "accepted batches lost: {missing:?}");
        if let Some(&id) = missing.first() {
            assert!(pending_ids.first().is_none_or(|&oldest| id < oldest));
            acked.insert(id);
        }
    }
    println!(
        "crash test: {} batches appended, {} acked, {torn_tails} torn tails repaired",
        appended.len(),
        acked.len()
    );
    assert!(
        appended.len() > 30,
        "the child appended too little to mean anything"
    );
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
