//! The spool against a model: a queue, with torn tails, corrupt records and lost cursors, and
//! the exact accounting of every batch that leaves it.

use super::*;

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
    /// Flip byte `byte % its length` of pending batch `which % pending` on disk and reopen.
    Corrupt {
        which: u16,
        byte: u16,
    },
    /// Delete the cursor file (or damage both its slots) and reopen.
    LoseCursor {
        delete: bool,
    },
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
        2 => (any::<u16>(), any::<u16>()).prop_map(|(which, byte)| Op::Corrupt { which, byte }),
        1 => any::<bool>().prop_map(|delete| Op::LoseCursor { delete }),
    ]
}

/// A batch in the model: its bytes, or `None` once corrupted on disk (to be counted lost).
type Entry = (u64, Option<Vec<u8>>);

#[derive(Debug, Default)]
struct Model {
    pending: VecDeque<Entry>,
    stats: SpoolStats,
    /// The highest id acked, dead-lettered, dropped or set aside.
    removed_through: u64,
    /// What the counters file says was removed: it is written by every removal but a plain
    /// ack, and at open.
    backup_through: u64,
    /// Batches removed by a plain ack since `backup_through`, oldest first.
    acked_since_backup: Vec<(u64, Vec<u8>)>,
}

impl Model {
    fn intact_bytes(&self) -> u64 {
        self.pending
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .map(|b| b.len() as u64)
            .sum()
    }

    /// A removal that writes the counters file too.
    fn remove_front(&mut self) -> Entry {
        let entry = self.pending.pop_front().unwrap();
        self.removed_through = entry.0;
        self.backup_through = entry.0;
        self.acked_since_backup.clear();
        entry
    }

    fn ack_front(&mut self) {
        let (id, batch) = self.pending.pop_front().unwrap();
        self.removed_through = id;
        self.acked_since_backup.push((id, batch.unwrap()));
    }

    /// What `oldest` does first: set aside the corrupted batches at the front.
    fn settle_front(&mut self) {
        while self.pending.front().is_some_and(|(_, b)| b.is_none()) {
            self.remove_front();
            self.stats.lost_batches += 1;
        }
    }

    fn lost_pending(&self) -> u64 {
        self.pending.iter().filter(|(_, b)| b.is_none()).count() as u64
    }

    /// Checks what open counted as lost: exact, except for damage that runs to the very end of
    /// the spool, where only the records still recognisable in the damaged bytes can be counted,
    /// at least one (README): a run of corrupted batches at the end may count fewer, never more,
    /// and never none. The model then keeps as many as the spool found (the others' seqs are
    /// unknown to it and are handed out again).
    fn check_lost(&mut self, recovery: &Recovery) {
        let expected = self.lost_pending();
        let trailing = self
            .pending
            .iter()
            .rev()
            .take_while(|(_, b)| b.is_none())
            .count() as u64;
        let floor = expected - trailing.saturating_sub(1);
        // A damaged record set aside earlier may still sit at the end of the last segment: the
        // unreadable bytes from it on count one batch above the cursor even when none is there.
        let ceiling = expected + u64::from(self.stats.lost_batches > 0);
        assert!(
            (floor..=ceiling).contains(&recovery.lost_batches),
            "{recovery:?}: expected {floor}..={ceiling} lost"
        );
        for _ in recovery.lost_batches..expected {
            self.pending.pop_back();
        }
        if recovery.lost_batches > expected {
            // The over-count: a batch the spool will set aside that the model never had.
            self.pending.push_back((0, None));
        }
    }

    /// Open writes both state files.
    fn opened(&mut self) {
        self.backup_through = self.removed_through;
        self.acked_since_backup.clear();
    }
}

/// Where the intact record `seq` is: its segment file, offset and length on disk.
fn locate(dir: &Path, seq: u64) -> Option<(PathBuf, usize, usize)> {
    segment_files(dir).into_iter().find_map(|path| {
        let bytes = fs::read(&path).unwrap();
        let first: u64 = path.file_stem()?.to_str()?.parse().ok()?;
        let scan = scan_segment(&bytes, FORMAT_VERSION, first, u64::MAX);
        scan.records
            .iter()
            .find(|&&(s, _, _)| s == seq)
            .map(|&(_, offset, len)| {
                (
                    path.clone(),
                    offset as usize,
                    RECORD_HEADER_LEN + len as usize,
                )
            })
    })
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
                let mut bytes = model.intact_bytes();
                while bytes + batch.len() as u64 > MODEL_MAX_BYTES {
                    match model.remove_front() {
                        (_, None) => model.stats.lost_batches += 1,
                        (_, Some(dropped)) => {
                            bytes -= dropped.len() as u64;
                            model.stats.dropped_batches += 1;
                            model.stats.dropped_bytes += dropped.len() as u64;
                        }
                    }
                }
                assert!(id > model.removed_through);
                assert!(model.pending.back().is_none_or(|&(last, _)| id > last));
                model.pending.push_back((id, Some(batch)));
            }
            Op::Ack => match model.pending.front() {
                None => assert!(s.ack(BatchId(model.removed_through + 1)).is_err()),
                Some(&(id, _)) => {
                    s.ack(BatchId(id)).unwrap();
                    model.ack_front();
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
                    let (_, batch) = model.remove_front();
                    assert_eq!(Some(fs::read(path).unwrap()), batch);
                    model.stats.dead_lettered_batches += 1;
                }
            },
            Op::Reopen => {
                drop(spool.take());
                let (reopened, recovery) = open(dir, opts);
                // Corrupted batches still behind others are found again (not yet counted in
                // the stats: that happens when they are set aside).
                let clean = Recovery {
                    lost_batches: 0,
                    ..recovery
                };
                assert!(clean.is_clean(), "{recovery:?}");
                model.check_lost(&recovery);
                spool = Some(reopened);
                model.opened();
            }
            Op::TearTail(n) => {
                drop(spool.take());
                let mut torn = 0;
                if let Some(last) = segment_files(dir).last() {
                    let bytes = fs::read(last).unwrap();
                    let name = last.file_stem().unwrap().to_str().unwrap();
                    let scan =
                        scan_segment(&bytes, FORMAT_VERSION, name.parse().unwrap(), u64::MAX);
                    // A segment holding damage is not torn on top of it.
                    if let (None, true, Some(&(seq, offset, len))) =
                        (scan.tail, scan.damaged.is_empty(), scan.records.last())
                        && offset + RECORD_HEADER_LEN as u64 + u64::from(len) == bytes.len() as u64
                    {
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
                model.check_lost(&recovery);
                assert_eq!(recovery.corrupt_segments, 0);
                spool = Some(reopened);
                model.opened();
            }
            Op::Corrupt { which, byte } => {
                drop(spool.take());
                let intact: Vec<u64> = model
                    .pending
                    .iter()
                    .filter(|(_, b)| b.is_some())
                    .map(|&(id, _)| id)
                    .collect();
                if !intact.is_empty() {
                    let seq = intact[usize::from(which) % intact.len()];
                    let (path, offset, len) = locate(dir, seq).expect("a pending batch is on disk");
                    flip_byte(&path, offset + usize::from(byte) % len);
                    model
                        .pending
                        .iter_mut()
                        .find(|(id, _)| *id == seq)
                        .unwrap()
                        .1 = None;
                }
                let (reopened, recovery) = open(dir, opts);
                // Exact: every corrupted batch still pending, none more.
                model.check_lost(&recovery);
                assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
                spool = Some(reopened);
                model.opened();
            }
            Op::LoseCursor { delete } => {
                drop(spool.take());
                let cursor = dir.join(CURSOR_FILE);
                if delete {
                    fs::remove_file(&cursor).unwrap();
                } else {
                    flip_byte(&cursor, 20);
                    flip_byte(&cursor, 512 + 20);
                }
                let (reopened, recovery) = open(dir, opts);
                assert_eq!(
                    (recovery.cursor_missing, recovery.cursor_reset),
                    (delete, !delete)
                );
                model.check_lost(&recovery);
                model.stats.cursor_losses += 1;
                spool = Some(reopened);
                // Batches acked since the counters file was last written may come back (those
                // whose segment is still there, so a newest part of them), in order and intact;
                // nothing older does.
                let back: Vec<(u64, Vec<u8>)> = contents(spool.as_ref().unwrap())
                    .into_iter()
                    .take_while(|(id, _)| *id <= model.removed_through)
                    .collect();
                let acked = &model.acked_since_backup;
                assert_eq!(
                    back.as_slice(),
                    &acked[acked.len() - back.len()..],
                    "only batches acked since the counters file was written come back"
                );
                for (id, batch) in back.into_iter().rev() {
                    model.pending.push_front((id, Some(batch)));
                }
                // What came back may pass `max_bytes`: open drops the oldest of it (never a
                // batch that was pending, as those alone fit).
                model.stats.dropped_batches += recovery.dropped_batches;
                model.stats.dropped_bytes += recovery.dropped_bytes;
                assert!(model.intact_bytes() <= MODEL_MAX_BYTES);
                model.removed_through = model.backup_through;
                model.opened();
            }
        }
        let s = spool.as_mut().unwrap();
        let oldest = s.oldest().unwrap().map(|(id, b)| (id.get(), Some(b)));
        model.settle_front();
        assert_eq!(oldest, model.pending.front().cloned());
        let intact: Vec<(u64, Vec<u8>)> = model
            .pending
            .iter()
            .filter_map(|(id, b)| Some((*id, b.clone()?)))
            .collect();
        assert_eq!(contents(s), intact);
        model.stats.pending_batches = intact.len() as u64;
        model.stats.pending_bytes = model.intact_bytes();
        assert_eq!(s.stats(), model.stats);
        // Segments the cursor passed are gone, except the one being appended to.
        assert!(segment_files(dir).len() as u64 <= 2 + MODEL_MAX_BYTES / 100);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spool_agrees_with_a_queue_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_against_model(ops);
    }
}
