//! The agent as operators run it (`pganalytics run`, a separate process) against the local
//! HTTPS test backend: cold start to the first delivered batch, steady RSS over many cycles, the
//! gzip ratio of what it sent; and the sender with its spool, in process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pganalytics::pipeline::sender::{Delivery, MAX_BATCHES_PER_PUSH, MAX_PUSH_BYTES, Sender};
use pganalytics::pipeline::spool::Spool;
use pganalytics::telemetry::Metrics;
use test_backend::{BackendConfig, RecordedBatch, TestBackend};
use throwaway_pg::TestCluster;

use crate::measure::{Samples, human, mib, rss_bytes, status_bytes};
use crate::report::{Report, Verdict};
use crate::setup::{self, Plugin};

/// The test backend in its lenient mode: the agent compresses its pushes with gzip, which the
/// real backend (and the test backend by default) does not decode; these benchmarks measure
/// the agent and its gzip path, not that fallback.
fn gzip_backend() -> BackendConfig {
    BackendConfig {
        accept_gzip: true,
        ..BackendConfig::default()
    }
}

/// An agent config with all four bundled collectors on `interval`, written to `dir/NAME`.
#[allow(clippy::too_many_arguments)]
fn config(
    dir: &Path,
    name: &str,
    backend: &TestBackend,
    cluster: &TestCluster,
    interval: &str,
    push_interval: &str,
    listen: Option<u16>,
    precompiled: Option<&Path>,
) -> PathBuf {
    let log = cluster.log_dir().join("postgresql.log");
    let mut extra = listen.map_or(String::new(), |port| {
        format!("listen = \"127.0.0.1:{port}\"\n")
    });
    if let Some(precompiled) = precompiled {
        extra += &format!(
            "precompiled_dir = {:?}\n",
            precompiled.display().to_string()
        );
    }
    let text = setup::collector_section(&dir.join("state"), &extra)
        + &setup::backend_sections(backend, dir, push_interval)
        + &cluster.postgres_section()
        + &Plugin::Sysstat.section(interval)
        + &Plugin::Disk.section(interval)
        + &Plugin::PgLog {
            log_file: &log,
            format: "stderr",
        }
        .section(interval)
        + &Plugin::PgStats {
            databases: "\"postgres\"",
        }
        .section(interval);
    let path = dir.join(name);
    setup::parse(&text, dir);
    std::fs::write(&path, text).expect("writing the agent config");
    path
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> Child {
    Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("agent log"))
        .spawn()
        .expect("starting the agent")
}

/// SIGTERM, as an operator stops the agent, and wait for it.
fn stop(mut agent: Child) {
    // SAFETY: kill(2) of our own child, which has not been waited for yet.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
}

/// The four bundled collectors precompiled by `binary` (`plugin precompile`) into a read-only
/// `dir/precompiled`, as the package ships them.
fn precompile(binary: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join("precompiled");
    let _ = std::fs::remove_dir_all(&out);
    let mut command = Command::new(binary);
    command.args(["plugin", "precompile", "--out"]).arg(&out);
    for plugin in ["sysstat", "disk", "pg_log", "pg_stats"] {
        command.arg(setup::wasm(plugin));
    }
    let output = command.output().expect("running plugin precompile");
    assert!(
        output.status.success(),
        "plugin precompile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}

/// Compiled components the agent left in the cache of `state`.
fn cached_entries(state: &Path) -> usize {
    std::fs::read_dir(state.join("cache")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .count()
    })
}

/// Process start to the first batch the backend accepted: without the compile cache, with a
/// warm one, and as packaged (precompiled components shipped, no cache yet).
pub async fn cold_start(
    report: &mut Report,
    dir: &Path,
    binary: &Path,
    cluster: &TestCluster,
    runs: usize,
) {
    let backend = TestBackend::start(gzip_backend()).await;
    // 10 ms intervals: the first run of each plugin is jittered by at most its interval.
    let plain = config(
        dir,
        "agent.toml",
        &backend,
        cluster,
        "10ms",
        "10ms",
        None,
        None,
    );
    let precompiled = precompile(binary, dir);
    let packaged = config(
        dir,
        "agent-packaged.toml",
        &backend,
        cluster,
        "10ms",
        "10ms",
        None,
        Some(&precompiled),
    );
    let state = dir.join("state");
    let (mut cold, mut warm, mut shipped) =
        (Samples::default(), Samples::default(), Samples::default());
    for run in 0..runs * 3 {
        let with_cache = run % 3 == 1;
        let is_packaged = run % 3 == 2;
        // Cold and packaged: nothing on disk. Warm: only the compile cache left by the
        // previous (cold) run.
        if with_cache {
            for entry in std::fs::read_dir(&state).expect("state dir").flatten() {
                if entry.file_name() != "cache" {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&state);
        }
        let before = backend.batches().len();
        let started = Instant::now();
        let config = if is_packaged { &packaged } else { &plain };
        let agent = spawn(binary, config, &dir.join(format!("cold-start-{run}.log")));
        while backend.batches().len() == before {
            if started.elapsed() > Duration::from_secs(60) {
                panic!("no batch within 60 s; see {}", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        stop(agent);
        if is_packaged {
            // Proof that the row measures what it says: nothing was compiled.
            assert_eq!(
                cached_entries(&state),
                0,
                "the packaged run compiled instead of using {}; see {}",
                precompiled.display(),
                dir.display()
            );
            shipped.push(elapsed);
        } else if with_cache {
            warm.push(elapsed);
        } else {
            cold.push(elapsed);
        }
    }
    // The goal names its two routes: parallel compile, or precompiled components in the
    // package. The package takes the second, so that row carries the goal; compiling everything
    // (a plugin not shipped precompiled, or an install without the package) is measured beside it.
    report.row(
        "cold start to first batch without compile cache, as packaged (precompiled components shipped) / warm cache",
        "≤ 0.5 s without cache (parallel compile, or precompiled components shipped in the package)",
        &format!("{} / {}", human(shipped.median()), human(warm.median())),
        if shipped.median() <= Duration::from_millis(500) {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    );
    report.row(
        "cold start to first batch: nothing precompiled, no compile cache (every plugin compiled at start, in parallel)",
        "measured (what a plugin not shipped precompiled costs once; the compile cache keeps it)",
        &human(cold.median()),
        Verdict::Measured,
    );
    report.section(
        "Cold start",
        &format!(
            "`pganalytics run` with the four collectors on a 10 ms interval and a 10 ms push \
             interval (so at most 10 ms of start jitter and 10 ms of push wait are in each \
             figure), from spawning the process to the backend accepting its first batch over \
             TLS 1.3 with a locally signed token.\n\n- no compile cache, nothing precompiled (every \
             plugin compiled): {}\n- as packaged: the four collectors precompiled by the same \
             binary (`plugin precompile`) into a read-only `precompiled_dir`, no compile cache \
             (each run checked to have compiled nothing): {}\n- warm cache (the previous run's \
             cache directory, everything else removed): {}\n",
            cold.describe(),
            shipped.describe(),
            warm.describe()
        ),
    );
}

/// `pganalytics run` with the four collectors for `cycles` cycles: RSS over time, and the
/// gzip ratio of the batches it delivered. Returns the delivered batches.
pub async fn steady_rss(
    report: &mut Report,
    dir: &Path,
    binary: &Path,
    cluster: &TestCluster,
    cycles: u64,
    interval: &str,
) -> Vec<RecordedBatch> {
    // The gzip and sender rows need a sample of the pushes, not all of them: every push of a
    // 30 000-cycle run, kept as parsed JSON, outgrew this machine's 24 GiB. About 10 000
    // cycles' worth (at one push a second) is recorded; the rest are answered and counted.
    const PUSHES_RECORDED: usize = 1200;
    let backend = TestBackend::start(BackendConfig {
        record_pushes: Some(PUSHES_RECORDED),
        ..gzip_backend()
    })
    .await;
    let port = test_backend::free_loopback_port();
    let _ = std::fs::remove_dir_all(dir.join("state"));
    // As packaged: the collectors come precompiled, so Cranelift never runs (nor are its pages
    // of the binary touched).
    let precompiled = precompile(binary, dir);
    let config = config(
        dir,
        "agent.toml",
        &backend,
        cluster,
        interval,
        "1s",
        Some(port),
        Some(&precompiled),
    );
    let agent = spawn(binary, &config, &dir.join("rss.log"));
    let started = Instant::now();
    // One scrape per sample; a missing value (the agent not listening yet) reads as 0.
    let value = |metrics: &str, line_prefix: &str| {
        test_backend::metric_value(metrics, line_prefix).unwrap_or(0.0) as u64
    };
    let cycles_done = |metrics: &str| {
        ["sysstat", "disk", "pg_log", "pg_stats"]
            .iter()
            .map(|name| {
                value(
                    metrics,
                    &format!("pganalytics_collections_total{{plugin=\"{name}\"}}"),
                )
            })
            .min()
            .unwrap_or(0)
    };
    let warm_at = (cycles / 10).max(50);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    // The same samples split into anonymous memory (heap, stacks, guest memories) and pages
    // of mapped files (the binary's code and data, faulted in as code paths run).
    let mut anon: Vec<(u64, u64)> = Vec::new();
    let mut file: Vec<(u64, u64)> = Vec::new();
    // Anonymous memory split again, by the agent's own /metrics: the C heap in use, the C heap's
    // free bytes (the allocator's count; the agent hands their pages back every few seconds, so
    // they are not all resident), and anonymous memory beyond the heap in use (free heap pages
    // still resident, the wasm pool's memories and fiber stacks, thread stacks).
    let mut heap_in_use: Vec<(u64, u64)> = Vec::new();
    let mut heap_free: Vec<(u64, u64)> = Vec::new();
    let mut beyond_in_use: Vec<(u64, u64)> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = test_backend::agent_get(port, "/metrics").unwrap_or_default();
        let done = cycles_done(&metrics);
        samples.push((done, rss_bytes(agent.id())));
        let anonymous = status_bytes(agent.id(), "RssAnon");
        anon.push((done, anonymous));
        file.push((done, status_bytes(agent.id(), "RssFile")));
        let (in_use, free) = (
            value(&metrics, "pganalytics_heap_in_use_bytes"),
            value(&metrics, "pganalytics_heap_free_bytes"),
        );
        heap_in_use.push((done, in_use));
        heap_free.push((done, free));
        beyond_in_use.push((done, anonymous.saturating_sub(in_use)));
        if samples.len().is_multiple_of(30) {
            eprintln!(
                "bench: agent at {done}/{cycles} cycles, RSS {}",
                mib(samples.last().unwrap().1)
            );
        }
        if done >= cycles {
            break;
        }
        if started.elapsed() > Duration::from_secs(3 * 3600) {
            panic!(
                "the agent ran {done} cycles in 3 hours; see {}",
                dir.display()
            );
        }
    }
    let failures = test_backend::agent_get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("pganalytics_collection_failures_total"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    stop(agent);
    let elapsed = started.elapsed();
    // Samples `(cycle, bytes)` from cycle `warm_at` on, and the last one.
    let steady_of = |kind: &[(u64, u64)]| -> Vec<(u64, u64)> {
        kind.iter()
            .copied()
            .filter(|(done, _)| *done >= warm_at)
            .collect()
    };
    let last_of = |kind: &[(u64, u64)]| kind.last().map_or(0, |s| s.1);
    let steady = steady_of(&samples);
    let at_warm = steady.first().map_or(0, |s| s.1);
    let last = last_of(&samples);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let median = median_of(steady.iter().map(|s| s.1));
    let growth = Growth::of(&steady);
    let (anon_growth, file_growth) = (Growth::of(&steady_of(&anon)), Growth::of(&steady_of(&file)));
    let split = [
        ("C heap in use", &heap_in_use),
        ("C heap free (the allocator's count)", &heap_free),
        ("anonymous beyond the heap in use", &beyond_in_use),
    ]
    .map(|(what, kind)| {
        let steady = steady_of(kind);
        let growth = Growth::of(&steady);
        format!(
            "{what} {} (median), {:+.2} MiB (slope {:+.2})",
            mib(median_of(steady.iter().map(|s| s.1))),
            growth.quarters as f64 / 1048576.0,
            growth.slope_per_10k / 1048576.0
        )
    })
    .join("; ");
    let met = median <= 30 << 20 && growth.quarters < 1 << 20;
    report.row(
        &format!("steady RSS of `pganalytics run` with all four collectors, {cycles} cycles"),
        "≤ 30 MiB, growth < 1 MiB over 10 000 cycles",
        &format!(
            "{} median, growth {:+.2} MiB (median of the last quarter of the samples from cycle \
             {warm_at} on, against the first quarter's; fitted slope {:+.2} MiB per 10 000 cycles)",
            mib(median),
            growth.quarters as f64 / 1048576.0,
            growth.slope_per_10k / 1048576.0,
        ),
        if met { Verdict::Met } else { Verdict::Missed },
    );
    let batches = backend.batches();
    let not_recorded = backend.pushes_not_recorded();
    let delivered = if not_recorded == 0 {
        batches.len().to_string()
    } else {
        format!(
            "{} (the first {} recorded for the gzip and sender rows)",
            batches.len() + not_recorded,
            batches.len()
        )
    };
    report.section(
        "Steady RSS",
        &format!(
            "`pganalytics run` with sysstat, disk, pg_log and pg_stats each on a {interval} \
             interval, as packaged (the four precompiled by the same binary, in a read-only \
             `precompiled_dir`), pushing every second to the test backend, until every plugin ran \
             {cycles} times ({} s). RSS from /proc/PID/status every 2 s; \"steady\" is from cycle \
             {warm_at} on.\n\n- RSS at cycle {warm_at}: {}; median after: {median_mib}; peak: {}; \
             last: {} (last minus the sample at cycle {warm_at}: {:+.2} MiB; single samples of \
             a saw-tooth, so the growth in the summary compares the medians of the first and \
             last quarters, {} samples each, and fits a line through all {})\n- of the last sample, anonymous memory {} and pages of mapped files (the \
             binary's code and data) {}; growth of each, as in the summary: anonymous {:+.2} MiB \
             (slope {:+.2} MiB per 10 000 cycles), mapped files {:+.2} MiB (slope {:+.2})\n\
             - anonymous memory by the agent's heap gauges (glibc's `mallinfo2`, read from \
             /metrics with each sample): {split}\n\
             - batches delivered: {}\n- failures reported in /metrics: {}\n",
            elapsed.as_secs(),
            mib(at_warm),
            mib(peak),
            mib(last),
            (last as f64 - at_warm as f64) / 1048576.0,
            steady.len() / 4,
            steady.len(),
            mib(last_of(&anon)),
            mib(last_of(&file)),
            anon_growth.quarters as f64 / 1048576.0,
            anon_growth.slope_per_10k / 1048576.0,
            file_growth.quarters as f64 / 1048576.0,
            file_growth.slope_per_10k / 1048576.0,
            delivered,
            if failures.is_empty() {
                "none".into()
            } else {
                failures.join("; ")
            },
            median_mib = mib(median),
        ),
    );
    batches
}

/// The middle value (the upper one of an even count); 0 for none.
fn median_of(values: impl Iterator<Item = u64>) -> u64 {
    let mut sorted: Vec<u64> = values.collect();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// How RSS moved over the steady samples `(cycle, bytes)`. The agent's RSS is a saw-tooth
/// (allocator arenas and pool slots filling and being released) of a few MiB, so two single
/// samples can differ by more than the 1 MiB the goal resolves; medians of a quarter of the
/// samples and a least-squares line do not.
struct Growth {
    /// Median of the last quarter minus the median of the first quarter, in bytes.
    quarters: i64,
    /// The fitted line's rise over 10 000 cycles, in bytes.
    slope_per_10k: f64,
}

impl Growth {
    fn of(steady: &[(u64, u64)]) -> Self {
        let quarter = (steady.len() / 4).max(1).min(steady.len());
        let first = median_of(steady[..quarter].iter().map(|s| s.1));
        let last = median_of(steady[steady.len() - quarter..].iter().map(|s| s.1));
        let n = steady.len() as f64;
        let mean_x = steady.iter().map(|s| s.0 as f64).sum::<f64>() / n;
        let mean_y = steady.iter().map(|s| s.1 as f64).sum::<f64>() / n;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for &(x, y) in steady {
            covariance += (x as f64 - mean_x) * (y as f64 - mean_y);
            variance += (x as f64 - mean_x).powi(2);
        }
        let slope = if variance > 0.0 {
            covariance / variance
        } else {
            0.0
        };
        Self {
            quarters: last as i64 - first as i64,
            slope_per_10k: slope * 10_000.0,
        }
    }
}

/// The plugin runs inside what the agent pushed: its pushes merge the batches waiting (one per
/// plugin run), so the runs are recovered as the consecutive items that share a `timestamp`
/// (a run stamps its items with one time), each re-wrapped in the push's header.
pub fn runs_of(pushes: &[RecordedBatch]) -> Vec<serde_json::Value> {
    let mut runs = Vec::new();
    for push in pushes {
        let mut header = push.envelope.clone();
        let items = header["metrics"].take();
        let mut current: Vec<serde_json::Value> = Vec::new();
        let mut flush = |items: &mut Vec<serde_json::Value>| {
            if !items.is_empty() {
                let mut envelope = header.clone();
                envelope["metrics_count"] = items.len().into();
                envelope["metrics"] = std::mem::take(items).into();
                runs.push(envelope);
            }
        };
        for item in items.as_array().cloned().unwrap_or_default() {
            if current
                .last()
                .is_some_and(|last| last["timestamp"] != item["timestamp"])
            {
                flush(&mut current);
            }
            current.push(item);
        }
        flush(&mut current);
    }
    runs
}

/// The plugin whose run `run` is, from its first item's type.
fn plugin_of(run: &serde_json::Value) -> &'static str {
    match run["metrics"][0]["type"].as_str() {
        Some("sysstat") => "sysstat",
        Some("disk_usage") => "disk",
        Some("pg_log") => "pg_log",
        Some("pg_stats" | "pg_query_stats" | "pg_server") => "pg_stats",
        _ => "other",
    }
}

/// What one push carries with the sample config's intervals: in its 60 s push interval,
/// sysstat (30 s) and pg_log (30 s) run twice, pg_stats (60 s) once, and disk (5 min) in every
/// fifth push.
const SAMPLE_PUSH: [(&str, usize); 3] = [("sysstat", 2), ("pg_log", 2), ("pg_stats", 1)];
const DISK_EVERY_NTH_PUSH: usize = 5;

/// `runs` regrouped into the pushes the sample config would make: each push takes the next
/// runs of each plugin in [`SAMPLE_PUSH`] (in time order), until sysstat or pg_stats runs out.
/// Consecutive runs of the RSS run (every plugin at 50 ms) would instead put several pg_stats
/// runs in one push, whose repeated statement texts deflate would find: not what a push with
/// the sample's intervals holds.
fn sample_pushes(runs: &[serde_json::Value]) -> Vec<Vec<&serde_json::Value>> {
    let mut queues: std::collections::HashMap<
        &str,
        std::collections::VecDeque<&serde_json::Value>,
    > = std::collections::HashMap::new();
    for run in runs {
        queues.entry(plugin_of(run)).or_default().push_back(run);
    }
    let mut pushes = Vec::new();
    loop {
        let mut push = Vec::new();
        for (plugin, count) in SAMPLE_PUSH {
            let queue = queues.entry(plugin).or_default();
            if plugin != "pg_log" && queue.len() < count {
                return pushes;
            }
            push.extend((0..count).filter_map(|_| queue.pop_front()));
        }
        if pushes.len() % DISK_EVERY_NTH_PUSH == 0 {
            push.extend(queues.entry("disk").or_default().pop_front());
        }
        pushes.push(push);
    }
}

/// `runs` pushed `per_push` at a time, in the order they came.
fn consecutive(runs: &[serde_json::Value], per_push: usize) -> Vec<Vec<&serde_json::Value>> {
    runs.chunks(per_push)
        .map(|push| push.iter().collect())
        .collect()
}

/// gzip over `pushes` (each merged as the sender merges its batches) at `level`: (JSON bytes,
/// compressed bytes, time).
fn gzip_pushes(pushes: &[Vec<&serde_json::Value>], level: u32) -> (usize, usize, Duration) {
    use std::io::Write as _;
    let bodies: Vec<Vec<Vec<u8>>> = pushes
        .iter()
        .map(|push| {
            push.iter()
                .map(|run| serde_json::to_vec(run).expect("envelope"))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let (mut raw, mut compressed) = (0, 0);
    for push in &bodies {
        let push: Vec<&[u8]> = push.iter().map(Vec::as_slice).collect();
        let json = pganalytics::pipeline::sender::merge(&push, "bench").expect("merge");
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(&json).expect("gzip");
        raw += json.len();
        compressed += encoder.finish().expect("gzip").len();
    }
    (raw, compressed, started.elapsed())
}

/// Compressed size against JSON size: on the wire in the RSS run, and over that run's plugin
/// runs pushed as the sample config would push them.
pub fn gzip_ratio(report: &mut Report, pushes: &[RecordedBatch]) {
    let smaller =
        |raw: usize, compressed: usize| 100.0 * (1.0 - compressed as f64 / raw.max(1) as f64);
    let runs = runs_of(pushes);
    let sample = sample_pushes(&runs);
    let (raw, gz, time) = gzip_pushes(&sample, 6);
    let default = smaller(raw, gz);
    report.row(
        "gzip ratio on realistic batches",
        "≥ 85 % smaller",
        &format!(
            "{default:.1} % smaller (pushes holding what the sample config's intervals put in one: 2 sysstat, 2 pg_log, 1 pg_stats run, disk every 5th; level 6, as the sender does)"
        ),
        if default >= 85.0 {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    );
    let (one_raw, one_gz, one_time) = gzip_pushes(&consecutive(&runs, 1), 1);
    let (one6_raw, one6_gz, _) = gzip_pushes(&consecutive(&runs, 1), 6);
    let (five_raw, five_gz, _) = gzip_pushes(&consecutive(&runs, 5), 6);
    let (max_raw, max_gz, _) = gzip_pushes(&consecutive(&runs, 100), 6);
    let (nine_raw, nine_gz, nine_time) = gzip_pushes(&sample, 9);
    let json: usize = pushes
        .iter()
        .map(|b| serde_json::to_vec(&b.envelope).expect("envelope").len())
        .sum();
    let wire: usize = pushes.iter().map(|b| b.body_bytes).sum();
    let sampled: usize = sample.iter().map(Vec::len).sum();
    report.section(
        "gzip",
        &format!(
            "The RSS run's pushes: {} requests carrying {} plugin runs, {json} bytes of JSON, \
             {wire} bytes on the wire ({:.1} % smaller; its 50 ms intervals put up to \
             {} runs or {} of JSON in one push, several pg_stats runs among them). The same runs \
             regrouped as the sample config's intervals would push them ({} pushes of 2 sysstat, \
             2 pg_log and 1 pg_stats run, disk every 5th; {sampled} runs), at level 6 (what the \
             sender uses): {default:.1} % smaller ({raw} → {gz} bytes, {}); at level 9: {:.1} % \
             in {}. In the order they came, at level 6: each run alone {:.1} % (level 1, the \
             sender before merging: {:.1} % in {}), 5 runs per push {:.1} %, up to 100 runs per \
             push {:.1} %.\n",
            pushes.len(),
            runs.len(),
            smaller(json, wire),
            pganalytics::pipeline::sender::MAX_BATCHES_PER_PUSH,
            mib(pganalytics::pipeline::sender::MAX_PUSH_BYTES as u64),
            sample.len(),
            human(time),
            smaller(nine_raw, nine_gz),
            human(nine_time),
            smaller(one6_raw, one6_gz),
            smaller(one_raw, one_gz),
            human(one_time),
            smaller(five_raw, five_gz),
            smaller(max_raw, max_gz),
        ),
    );
}

/// Batches/s from the spool to the test backend: `count` realistic batches spooled, then
/// pushed oldest-first with an ack after each 2xx, as the agent's backend task does.
pub async fn sender(report: &mut Report, dir: &Path, pushes: &[RecordedBatch], count: usize) {
    let backend = TestBackend::start(gzip_backend()).await;
    let text = setup::collector_section(&dir.join("state-sender"), "")
        + &setup::backend_sections(&backend, dir, "1s");
    let config = setup::parse(&text, dir);
    let mut sender = Sender::new(&config, Arc::new(Metrics::default())).expect("sender");
    let (mut spool, _) = Spool::open(&dir.join("spool"), 1 << 30).expect("spool");
    let bodies: Vec<Vec<u8>> = runs_of(pushes)
        .iter()
        .map(|run| serde_json::to_vec(run).expect("envelope"))
        .collect();
    let bytes: usize = (0..count).map(|i| bodies[i % bodies.len()].len()).sum();
    let started = Instant::now();
    for i in 0..count {
        spool.append(&bodies[i % bodies.len()]).expect("append");
    }
    let appended = started.elapsed();
    let started = Instant::now();
    let mut pushes = 0;
    loop {
        let run = spool
            .oldest_run(MAX_BATCHES_PER_PUSH, MAX_PUSH_BYTES)
            .expect("spool");
        let Some(&(last, _)) = run.last() else {
            break;
        };
        let bodies: Vec<&[u8]> = run.iter().map(|(_, b)| b.as_slice()).collect();
        match sender.push(&bodies).await {
            Delivery::Delivered => spool.ack_through(last).expect("ack"),
            other => panic!("the test backend refused a push: {other:?}"),
        }
        pushes += 1;
    }
    let drained = started.elapsed();
    assert_eq!(backend.batches().len(), pushes);
    let per_second = count as f64 / drained.as_secs_f64();
    report.row(
        "sender: batches/s to the local test backend, spool on",
        "measured",
        &format!(
            "{per_second:.0} batches/s ({:.1} MB/s of JSON)",
            bytes as f64 / 1e6 / drained.as_secs_f64()
        ),
        Verdict::Measured,
    );
    report.section(
        "Sender",
        &format!(
            "{count} batches (the RSS run's plugin runs, {} on average) appended to a fresh spool \
             in {} ({:.0} appends/s, each written and fsynced before `append` returns), then read \
             oldest-first, merged into {pushes} pushes (up to {MAX_BATCHES_PER_PUSH} batches or \
             {} each), gzipped, POSTed over one TLS 1.3 connection and acked push by push in {}.\n",
            mib((bytes / count) as u64),
            human(appended),
            count as f64 / appended.as_secs_f64(),
            mib(MAX_PUSH_BYTES as u64),
            human(drained)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MIB_I: i64 = 1 << 20;

    #[test]
    fn a_saw_tooth_without_a_trend_has_no_growth() {
        // 25.5 to 27 MiB, period 7 samples, and a last sample 2 MiB above the first.
        let teeth = [0, 1, 2, 3, 2, 1, 3];
        let steady: Vec<(u64, u64)> = (0..98)
            .map(|i| {
                (
                    1_000 + i * 100,
                    26 * MIB - MIB / 2 + teeth[i as usize % 7] * MIB / 2,
                )
            })
            .chain([(10_800, 27 * MIB + MIB / 2)])
            .collect();
        let growth = Growth::of(&steady);
        assert!(
            growth.quarters.unsigned_abs() < MIB / 4,
            "{}",
            growth.quarters
        );
        assert!(
            growth.slope_per_10k.abs() < (MIB / 4) as f64,
            "{}",
            growth.slope_per_10k
        );
    }

    #[test]
    fn a_steady_leak_is_seen_by_both_measures() {
        // 2 MiB over 10 000 cycles, under the same saw-tooth.
        let steady: Vec<(u64, u64)> = (0..100u64)
            .map(|i| (i * 100, 26 * MIB + i * 2 * MIB / 100 + (i % 3) * MIB / 2))
            .collect();
        let growth = Growth::of(&steady);
        assert!(
            growth.quarters > MIB_I && growth.quarters < 2 * MIB_I,
            "{}",
            growth.quarters
        );
        let slope = growth.slope_per_10k / MIB as f64;
        assert!((slope - 2.0).abs() < 0.1, "{slope}");
    }
}
