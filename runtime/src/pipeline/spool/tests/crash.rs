//! A child process appending, killed with SIGKILL at random moments.

use super::*;

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
