//! The spool against a model: a queue.

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
                    let scan =
                        scan_segment(&bytes, FORMAT_VERSION, name.parse().unwrap(), u64::MAX);
                    assert!(scan.tail.is_none() && scan.damaged.is_empty());
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
        let s = spool.as_mut().unwrap();
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
