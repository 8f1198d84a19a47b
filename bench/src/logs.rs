//! pg_log parsing throughput: a generated server log (stderr with Debian's prefix, and csvlog)
//! read from its beginning by the `pg_log` component through `log-tail`, run after run with the
//! offsets committed as the agent does, against the same parser compiled natively and fed the
//! same file in the same chunks, and against pgbadger (Debian's package, when installed) over
//! the same file.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use pg_log::run::Chunk;
use pg_log::settings::Settings;

use crate::measure::{human, mib};
use crate::report::{Report, Verdict};
use crate::setup::{self, Loaded, Plugin};

/// Debian's `log_line_prefix`, which the generated stderr log and the plugin settings use.
pub const PREFIX: &str = "%m [%p] %q%u@%d ";

const GOAL_MB_PER_S: f64 = 100.0;

/// The sandboxed throughput as a share of the native parser's, on the same file.
const GOAL_FACTOR: f64 = 0.6;

/// The parser alone, natively: what the sandbox can at best approach.
const GOAL_NATIVE_MB_PER_S: f64 = 250.0;

pub async fn run(report: &mut Report, dir: &Path, size: u64, repetitions: usize) {
    let mut details = String::new();
    for format in ["stderr", "csvlog"] {
        let log = dir.join(if format == "stderr" {
            "postgresql.log"
        } else {
            "postgresql.csv"
        });
        let lines = write_log(&log, format, size);
        let bytes = std::fs::metadata(&log).expect("log written").len();
        let mut sandboxed = Vec::new();
        let mut native = Vec::new();
        let (mut sandboxed_entries, mut native_entries, mut runs) = (0, 0, 0);
        let mut splits = Vec::new();
        for repetition in 0..repetitions {
            let state = dir.join(format!("state-{format}-{repetition}"));
            let text = setup::collector_section(&state, "")
                + &Plugin::PgLog {
                    log_file: &log,
                    format,
                }
                .section("1s");
            let loaded = Loaded::new(setup::parse(&text, dir));
            let (time, entries, count, split) = through_sandbox(&loaded).await;
            splits.push((time, split));
            sandboxed.push(time);
            (sandboxed_entries, runs) = (entries, count);
            let (time, entries) = natively(&log, format);
            native.push(time);
            native_entries = entries;
        }
        let sandboxed = median(&mut sandboxed);
        // The split of the median repetition.
        let split = splits
            .iter()
            .find(|(time, _)| *time == sandboxed)
            .map_or(Split::default(), |(_, split)| *split);
        let native = median(&mut native);
        let mb_per_s = |time: Duration| bytes as f64 / 1e6 / time.as_secs_f64();
        let factor = mb_per_s(sandboxed) / mb_per_s(native);
        let met = mb_per_s(sandboxed) >= GOAL_MB_PER_S && factor >= GOAL_FACTOR;
        report.row(
            &format!("pg_log parser natively, {format}"),
            "≥ 250 MB/s",
            &format!("{:.0} MB/s", mb_per_s(native)),
            if mb_per_s(native) >= GOAL_NATIVE_MB_PER_S {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        );
        report.row(
            &format!("pg_log parsing through the sandbox, {format}"),
            "≥ 100 MB/s and ≥ 0.6× native",
            &format!(
                "{:.0} MB/s, {:.0} lines/s; native {:.0} MB/s: **{factor:.2}×**",
                mb_per_s(sandboxed),
                lines as f64 / sandboxed.as_secs_f64(),
                mb_per_s(native),
            ),
            if met { Verdict::Met } else { Verdict::Missed },
        );
        details += &format!(
            "- {format}: {} ({lines} lines) in {runs} runs of the plugin (its default budgets: 16 MiB read, \
             3 MiB output per run); median of {repetitions}: sandboxed {} (run, validation, offsets \
             committed), native {}. Of the sandboxed time: {} in the plugin runs (host reads, \
             guest parsing and serialising), {} validating their output, {} committing offsets. \
             Entries: {sandboxed_entries} sandboxed, {native_entries} native.\n",
            mib(bytes),
            human(sandboxed),
            human(native),
            human(split.run),
            human(split.validate),
            human(split.commit),
        );
        // pgbadger on the same file: the tool operators would otherwise run over these logs.
        match pgbadger(&log, format, dir, repetitions) {
            Some(theirs) => {
                report.row(
                    &format!("pg_log through the sandbox vs pgbadger, {format}"),
                    "measured (same file)",
                    &format!(
                        "{:.0} MB/s vs {:.1} MB/s for pgbadger: **{:.1}×**",
                        mb_per_s(sandboxed),
                        mb_per_s(theirs),
                        mb_per_s(sandboxed) / mb_per_s(theirs)
                    ),
                    Verdict::Measured,
                );
                details += &format!(
                    "- {format}, pgbadger ({PGBADGER} -j 1, a text report) on the same file: \
                     median of {}: {}\n",
                    repetitions.min(PGBADGER_REPETITIONS),
                    human(theirs)
                );
            }
            None => report.row(
                &format!("pg_log through the sandbox vs pgbadger, {format}"),
                "measured (same file)",
                "skipped: Debian's pgbadger is not installed (or PGANALYTICS_BENCH_SKIP_PGBADGER is set)",
                Verdict::Measured,
            ),
        }
    }
    report.section("pg_log throughput", &details);
}

const PGBADGER: &str = "/usr/bin/pgbadger";

/// pgbadger takes about 25 s per 32 MiB here: three runs are enough for a median.
const PGBADGER_REPETITIONS: usize = 3;

/// Set (to anything) to leave pgbadger out while iterating on the pg_log figures: it takes
/// minutes per run of this part.
const SKIP_PGBADGER_VAR: &str = "PGANALYTICS_BENCH_SKIP_PGBADGER";

/// pgbadger's median time over `log` (one process, a text report), or `None` when it is not
/// installed or [`SKIP_PGBADGER_VAR`] is set. A failed run is a bug of the suite.
fn pgbadger(log: &Path, format: &str, dir: &Path, repetitions: usize) -> Option<Duration> {
    if !Path::new(PGBADGER).exists() || std::env::var_os(SKIP_PGBADGER_VAR).is_some() {
        return None;
    }
    let mut times = Vec::new();
    for _ in 0..repetitions.clamp(1, PGBADGER_REPETITIONS) {
        let started = Instant::now();
        let output = std::process::Command::new(PGBADGER)
            .args(["--quiet", "-j", "1", "-x", "text", "--format"])
            .arg(if format == "stderr" { "stderr" } else { "csv" })
            .args(["--prefix", PREFIX, "-o"])
            .arg(dir.join(format!("pgbadger-{format}.txt")))
            .arg(log)
            .output()
            .expect("running pgbadger");
        times.push(started.elapsed());
        assert!(
            output.status.success(),
            "pgbadger failed on {}: {}",
            log.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Some(median(&mut times))
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Where the sandboxed time went: in the plugin run (host reads, guest parsing and JSON),
/// validating its output, and committing the offsets (fsynced) after each run.
#[derive(Default, Clone, Copy)]
struct Split {
    run: Duration,
    validate: Duration,
    commit: Duration,
}

/// Runs the plugin until it has read the whole file; returns the time, entries, runs and split.
async fn through_sandbox(loaded: &Loaded) -> (Duration, usize, usize, Split) {
    let started = Instant::now();
    let (mut entries, mut runs) = (0, 0);
    let (mut in_run, mut in_collect) = (Duration::ZERO, Duration::ZERO);
    // The bench's own counting of entries (it parses every item): not the agent's work.
    let mut counting = Duration::ZERO;
    loop {
        let (accepted, wall) = loaded.collect("pg_log").await;
        in_run += accepted.timing.elapsed;
        in_collect += wall;
        runs += 1;
        if accepted.items.is_empty() {
            break;
        }
        let counted = Instant::now();
        entries += accepted
            .items
            .iter()
            .map(|item| {
                serde_json::from_str::<serde_json::Value>(item.get())
                    .ok()
                    .and_then(|item| item["entries"].as_array().map(Vec::len))
                    .unwrap_or(0)
            })
            .sum::<usize>();
        // Dropping the output is the agent's (it drops it once spooled); the count is not.
        counting += counted.elapsed();
    }
    let total = started.elapsed() - counting;
    let split = Split {
        run: in_run,
        validate: in_collect - in_run,
        commit: total - in_collect,
    };
    (total, entries, runs, split)
}

/// The same parser natively over the same file: reads of whole lines as `log-tail` answers
/// them, run after run until the file is consumed. Returns the time and the entries.
fn natively(log: &Path, format: &str) -> (Duration, usize) {
    let settings = Settings::from_json(
        &serde_json::json!({ "format": format, "log_line_prefix": PREFIX }).to_string(),
    )
    .expect("settings");
    let path = log.display().to_string();
    let started = Instant::now();
    let mut file = std::fs::File::open(log).expect("log");
    let mut offset = 0u64;
    let mut entries = 0;
    loop {
        let output =
            pg_log::run::collect(&settings, pganalytics_guest::now_rfc3339(), |max_bytes| {
                let mut data = Vec::with_capacity(max_bytes as usize);
                file.seek(SeekFrom::Start(offset)).expect("seek");
                (&mut file)
                    .take(max_bytes)
                    .read_to_end(&mut data)
                    .expect("read");
                // Whole lines only, like the host.
                let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                data.truncate(end);
                let chunk = Chunk {
                    path: path.clone(),
                    offset,
                    data: String::from_utf8(data).expect("the generated log is UTF-8"),
                };
                offset += end as u64;
                Ok(vec![chunk])
            })
            .expect("parsing");
        if output.read_bytes == 0 {
            break;
        }
        entries += output.entries;
    }
    (started.elapsed(), entries)
}

/// Writes about `size` bytes of a busy server's log in `format`; returns the lines written.
/// The mix: statement durations (some multi-line), errors with DETAIL and STATEMENT, connection
/// lines, checkpoints (no user or database), an autovacuum report.
pub fn write_log(path: &Path, format: &str, size: u64) -> u64 {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(size as usize + 4096);
    let mut lines = 0u64;
    let mut n = 0u64;
    while (out.len() as u64) < size {
        n += 1;
        let millis = n * 7;
        let ts = format!(
            "2026-11-27 {:02}:{:02}:{:02}.{:03} UTC",
            (millis / 3_600_000) % 24,
            (millis / 60_000) % 60,
            (millis / 1000) % 60,
            millis % 1000
        );
        let pid = 20_000 + n % 97;
        let id = n * 31 % 100_000;
        let entries: Vec<(&str, &str, &str, String, Option<String>)> = match n % 10 {
            0 => vec![
                ("app", "shop", "ERROR", "duplicate key value violates unique constraint \"orders_pkey\"".into(), Some("23505".into())),
                ("app", "shop", "DETAIL", format!("Key (id)=({id}) already exists."), None),
                ("app", "shop", "STATEMENT", format!("INSERT INTO orders (id, customer_id, total) VALUES ({id}, 17, 99.50)"), None),
            ],
            1 => vec![(
                "report", "analytics", "LOG",
                format!("duration: {}.{:03} ms  statement: SELECT c.name, sum(o.total) AS revenue\n\tFROM customers c\n\tJOIN orders o ON o.customer_id = c.id\n\tWHERE o.created_at > now() - interval '{} days'\n\tGROUP BY c.name ORDER BY revenue DESC LIMIT 50", 1000 + id % 900, id % 1000, id % 30),
                None,
            )],
            2 => vec![
                ("[unknown]", "[unknown]", "LOG", format!("connection received: host=10.0.{}.{} port={}", id % 256, n % 256, 40_000 + id % 20_000), None),
            ],
            3 => vec![("app", "shop", "LOG", "connection authorized: user=app database=shop application_name=orders-api".into(), None)],
            4 if n % 1000 == 4 => vec![("", "", "LOG", "checkpoint complete: wrote 1532 buffers (9.4%); 0 WAL file(s) added, 0 removed, 1 recycled; write=26.912 s, sync=0.004 s, total=26.950 s; sync files=42, longest=0.002 s, average=0.001 s; distance=20480 kB, estimate=21033 kB".into(), None)],
            5 if n % 500 == 5 => vec![("", "", "LOG", format!("automatic vacuum of table \"shop.public.orders\": index scans: 1\n\tpages: 0 removed, {id} remain, 120 scanned (1.2% of total)\n\ttuples: 311 removed, 982113 remain, 0 are dead but not yet removable"), None)],
            _ => vec![(
                "app", "shop", "LOG",
                format!("duration: 0.{:03} ms  statement: SELECT o.id, o.total, o.status FROM orders o WHERE o.customer_id = {id} ORDER BY o.created_at DESC LIMIT 20", id % 1000),
                None,
            )],
        };
        for (user, database, level, message, sqlstate) in entries {
            match format {
                "stderr" => {
                    let who = if user.is_empty() {
                        String::new()
                    } else {
                        format!("{user}@{database} ")
                    };
                    let _ = writeln!(out, "{ts} [{pid}] {who}{level}:  {message}");
                    lines += 1 + message.matches('\n').count() as u64;
                }
                _ => {
                    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
                    let (user, database) = if user.is_empty() {
                        (String::new(), String::new())
                    } else {
                        (quote(user), quote(database))
                    };
                    let (level, message, detail, query) = match level {
                        // csvlog puts DETAIL and STATEMENT in columns of the entry itself.
                        "DETAIL" | "STATEMENT" => continue,
                        "ERROR" => (
                            "ERROR",
                            message,
                            quote(&format!("Key (id)=({id}) already exists.")),
                            quote(&format!(
                                "INSERT INTO orders (id, customer_id, total) VALUES ({id}, 17, 99.50)"
                            )),
                        ),
                        level => (level, message, String::new(), String::new()),
                    };
                    let _ = writeln!(
                        out,
                        "{ts},{user},{database},{pid},\"10.0.0.5:51234\",6566a1b2.{pid:x},{n},\"SELECT\",2026-11-27 00:00:00 UTC,3/{n},0,{level},{},{},{detail},,,,,{query},,,\"orders-api\",\"client backend\",,0",
                        sqlstate.unwrap_or_else(|| "00000".into()),
                        quote(&message),
                    );
                    lines += 1 + message.matches('\n').count() as u64;
                }
            }
        }
    }
    std::fs::write(path, out).expect("writing the generated log");
    lines
}
