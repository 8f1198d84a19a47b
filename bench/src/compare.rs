//! Against what an operator would otherwise run: Debian's prometheus-node-exporter (the same
//! /proc and filesystem data as `sysstat` + `disk`) and prometheus-postgres-exporter (server and
//! per-database statistics, like `pg_stats`), on this machine, in this run.
//!
//! Per collection: wall time (one HTTP scrape of the exporter against one sandboxed run of our
//! plugins, alternating) and CPU time (from /proc/PID/stat over all collections). The exporters'
//! figures include serving HTTP and formatting Prometheus text; ours include validating the
//! output but no transport. They do not collect exactly the same fields; the table says which.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use throwaway_pg::TestCluster;

use crate::measure::{Samples, cpu_time, human, mib, postmaster_pid, ratio, rss_bytes, server_cpu};
use crate::report::{Report, Verdict};
use crate::setup::{self, Loaded, Plugin};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const POSTGRES_EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

pub async fn run(
    report: &mut Report,
    dir: &Path,
    cluster: &TestCluster,
    database: &str,
    scrapes: usize,
) {
    if !Path::new(NODE_EXPORTER).exists() || !Path::new(POSTGRES_EXPORTER).exists() {
        report.row(
            "comparison with native exporters",
            "measured",
            "skipped: Debian's prometheus-node-exporter / prometheus-postgres-exporter are not installed",
            Verdict::Measured,
        );
        return;
    }
    let mut details = String::new();

    let port = test_backend::free_loopback_port();
    let node = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args([
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.diskstats",
            "--collector.loadavg",
            "--collector.filesystem",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting node exporter");
    let text = setup::collector_section(&dir.join("state-node"), "")
        + &Plugin::Sysstat.section("1s")
        + &Plugin::Disk.section("1s");
    let ours = Loaded::new(setup::parse(&text, dir));
    let (theirs, mine) = compare(&node, port, &ours, &["sysstat", "disk"], scrapes, None).await;
    details += &record(
        report,
        "vs prometheus-node-exporter 1.5 (same /proc and filesystem data), per collection",
        "node exporter (cpu, meminfo, diskstats, loadavg, filesystem collectors)",
        "`sysstat` + `disk`",
        (&theirs, &mine),
    );
    stop(node);

    let port = test_backend::free_loopback_port();
    let dsn = format!(
        "host={} port={} user=pganalytics dbname={database} sslmode=disable",
        cluster.socket_dir().display(),
        cluster.port
    );
    let exporter = Command::new(POSTGRES_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .env("DATA_SOURCE_NAME", dsn)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting postgres exporter");
    let text = setup::collector_section(&dir.join("state-pg"), "")
        + &cluster.postgres_section()
        + &Plugin::PgStats {
            databases: &format!("{database:?}"),
        }
        .section("1s");
    let ours = Loaded::new(setup::parse(&text, dir));
    let postmaster = postmaster_pid(&cluster.data());
    let (theirs, mine) = compare(
        &exporter,
        port,
        &ours,
        &["pg_stats"],
        scrapes,
        Some(postmaster),
    )
    .await;
    let (their_server, my_server) = (theirs.server_cpu, mine.server_cpu);
    report.row(
        &format!(
            "pg_stats: PostgreSQL's CPU per collection vs prometheus-postgres-exporter's, database `{database}`"
        ),
        "≤ postgres_exporter's",
        &format!(
            "{} vs {} for theirs ({:+.0} %)",
            human(my_server),
            human(their_server),
            (ratio(my_server, their_server) - 1.0) * 100.0
        ),
        if my_server <= their_server {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    );
    details += &record(
        report,
        &format!(
            "vs prometheus-postgres-exporter 0.11 (default collectors), database `{database}`, per collection"
        ),
        &format!("postgres exporter 0.11 (its default collectors) on database `{database}`"),
        "`pg_stats`",
        (&theirs, &mine),
    );
    stop(exporter);
    report.section(
        "Against native exporters",
        &format!(
            "Alternating one scrape of the exporter's /metrics with one sandboxed run of ours, \
             {scrapes} times each. CPU is per collection, from the process's utime + stime over \
             all of them (10 ms ticks); our process also runs the benchmark's own loop. \
             PostgreSQL's CPU is that of all the server's processes (backends, parallel workers, \
             exited children, background processes) over the same collections, so autovacuum \
             and the checkpointer land on either side by chance. The \
             exporters answer over HTTP with Prometheus text, we return validated JSON; the data \
             overlap but are not identical (postgres_exporter reports settings and per-database \
             counters, pg_stats also top tables, indexes and statements).\n\n{details}"
        ),
    );
}

struct Measured {
    wall: Samples,
    cpu: Duration,
    /// PostgreSQL's CPU per collection (zero when no server is involved).
    server_cpu: Duration,
    bytes: usize,
    /// The exporter's RSS after the scrapes (ours is in the steady-RSS section).
    rss: u64,
}

/// Adds the summary row `what` and returns the two detail lines of one comparison.
fn record(
    report: &mut Report,
    what: &str,
    theirs_name: &str,
    ours_name: &str,
    (theirs, mine): (&Measured, &Measured),
) -> String {
    report.row(
        what,
        "measured",
        &format!(
            "{} CPU, {} wall vs {} CPU, {} wall for theirs",
            human(mine.cpu),
            human(mine.wall.median()),
            human(theirs.cpu),
            human(theirs.wall.median())
        ),
        Verdict::Measured,
    );
    let server = |m: &Measured| {
        if m.server_cpu.is_zero() {
            String::new()
        } else {
            format!(", PostgreSQL's CPU {}", human(m.server_cpu))
        }
    };
    format!(
        "- {theirs_name}: wall {}, CPU {} per scrape{}, {} bytes of text, RSS {}\n\
         - ours, {ours_name}: wall {}, CPU {} per collection{}, {} bytes of JSON (the agent's \
         RSS: see Steady RSS)\n",
        theirs.wall.describe(),
        human(theirs.cpu),
        server(theirs),
        theirs.bytes,
        mib(theirs.rss),
        mine.wall.describe(),
        human(mine.cpu),
        server(mine),
        mine.bytes,
    )
}

async fn compare(
    exporter: &Child,
    port: u16,
    ours: &Loaded,
    plugins: &[&str],
    scrapes: usize,
    postmaster: Option<u32>,
) -> (Measured, Measured) {
    let server = || postmaster.map_or(Duration::ZERO, server_cpu);
    let started = Instant::now();
    while test_backend::agent_get(port, "/metrics").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the exporter did not answer on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm both up.
    let _ = test_backend::agent_get(port, "/metrics");
    for name in plugins {
        ours.collect(name).await;
    }
    let (mut theirs, mut mine) = (Samples::default(), Samples::default());
    let (mut their_cpu, mut my_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut their_server, mut my_server) = (Duration::ZERO, Duration::ZERO);
    let (mut their_bytes, mut my_bytes) = (0, 0);
    for _ in 0..scrapes {
        let (cpu, server_before) = (cpu_time(exporter.id()), server());
        let at = Instant::now();
        let body = test_backend::agent_get(port, "/metrics").expect("scrape");
        theirs.push(at.elapsed());
        their_cpu += cpu_time(exporter.id()) - cpu;
        their_server += server().saturating_sub(server_before);
        their_bytes = body.len();

        // Run and validation, as everywhere in this suite; saving the state afterwards is not
        // counted (CPU time includes it).
        let (cpu, server_before) = (cpu_time(std::process::id()), server());
        let mut wall = Duration::ZERO;
        my_bytes = 0;
        for name in plugins {
            let (accepted, time) = ours.collect(name).await;
            wall += time;
            my_bytes += serde_json::to_string(&accepted.items).map_or(0, |s| s.len());
        }
        mine.push(wall);
        my_cpu += cpu_time(std::process::id()) - cpu;
        my_server += server().saturating_sub(server_before);
    }
    let n = scrapes.max(1) as u32;
    (
        Measured {
            wall: theirs,
            cpu: their_cpu / n,
            server_cpu: their_server / n,
            bytes: their_bytes,
            rss: rss_bytes(exporter.id()),
        },
        Measured {
            wall: mine,
            cpu: my_cpu / n,
            server_cpu: my_server / n,
            bytes: my_bytes,
            rss: 0,
        },
    )
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
