//! The benchmark suite behind `cargo xtask bench`: every goal of the benchmarks issue, measured
//! beside a baseline taken in the same run, written to BENCHMARKS.md (summary table, details,
//! then the hand-written analysis, which a rewrite keeps).
//!
//! `pganalytics-bench --agent PATH [--quick] [--out FILE]`: `--agent` is the release
//! `pganalytics` binary (the agent benchmarks run it as operators do); `--quick` shrinks every
//! size and count for a smoke run of the suite itself (its numbers are not the ones to quote);
//! `--only collect|logs|validate|cycle|scale|compare|cold|rss` (or several, comma-separated, e.g.
//! `scale,compare` to compare with postgres_exporter on the large database) runs those parts and
//! prints them; `--rss-cycles N` runs the RSS part for N cycles instead of the plan's.

mod agent;
mod compare;
mod logs;
mod measure;
mod memory;
mod postgres;
mod report;
mod sandbox;
mod setup;

use std::path::PathBuf;
use std::time::Instant;

/// Sizes and counts of one run.
struct Plan {
    collect_iterations: usize,
    log_bytes: u64,
    log_repetitions: usize,
    cycles: usize,
    scale_tables: usize,
    scale_runs: usize,
    cold_start_runs: usize,
    rss_cycles: u64,
    rss_interval: &'static str,
    sender_batches: usize,
    scrapes: usize,
}

const FULL: Plan = Plan {
    collect_iterations: 1000,
    log_bytes: 32 << 20,
    log_repetitions: 5,
    cycles: 50,
    scale_tables: 10_000,
    scale_runs: 7,
    cold_start_runs: 7,
    rss_cycles: 10_000,
    rss_interval: "50ms",
    sender_batches: 1000,
    scrapes: 30,
};

const QUICK: Plan = Plan {
    collect_iterations: 50,
    log_bytes: 2 << 20,
    log_repetitions: 1,
    cycles: 5,
    scale_tables: 200,
    scale_runs: 2,
    cold_start_runs: 1,
    rss_cycles: 100,
    rss_interval: "50ms",
    sender_batches: 50,
    scrapes: 5,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut agent, mut quick, mut out) = (None, false, setup::root().join("BENCHMARKS.md"));
    let mut only: Option<String> = None;
    let mut rss_cycles: Option<u64> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agent" => agent = args.next().map(PathBuf::from),
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--out" => out = args.next().map(PathBuf::from).expect("--out FILE"),
            // A shorter (or longer) RSS probe than the plan's, e.g. while attributing memory.
            "--rss-cycles" => {
                rss_cycles = args.next().and_then(|n| n.parse().ok());
                assert!(rss_cycles.is_some(), "--rss-cycles N");
            }
            other => {
                eprintln!(
                    "usage: pganalytics-bench --agent PATH [--quick] [--out FILE] [--only SECTION[,SECTION...]] (not {other:?})"
                );
                std::process::exit(2);
            }
        }
    }
    let Some(agent) = agent else {
        eprintln!("usage: pganalytics-bench --agent PATH [--quick] [--out FILE]");
        std::process::exit(2);
    };
    let mut plan = if quick { QUICK } else { FULL };
    if let Some(cycles) = rss_cycles {
        plan.rss_cycles = cycles;
    }
    let machine = report::Machine::start();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("pganalytics-bench-")
        .tempdir()
        .expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let mut report = report::Report::default();
    runtime.block_on(async {
        let part = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).expect("bench dir");
            path
        };
        let wants = |section: &str| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|part| part.trim() == section))
        };
        if wants("collect") {
            eprintln!("bench: per-plugin collect, sandboxed vs native");
            sandbox::run(&mut report, &part("collect"), plan.collect_iterations).await;
        }
        if wants("logs") {
            eprintln!("bench: pg_log throughput");
            logs::run(
                &mut report,
                &part("logs"),
                plan.log_bytes,
                plan.log_repetitions,
            )
            .await;
        }
        if wants("validate") {
            eprintln!("bench: host memory while validating a plugin's output");
            memory::run(&mut report, &part("validate"));
        }
        if !["cycle", "scale", "compare", "cold", "rss"]
            .into_iter()
            .any(wants)
        {
            return;
        }
        eprintln!("bench: starting a throwaway PostgreSQL cluster");
        let cluster = postgres::start_cluster();
        if wants("cycle") {
            eprintln!("bench: full cycle");
            postgres::cycle(&mut report, &part("cycle"), &cluster, plan.cycles).await;
        }
        if wants("scale") {
            eprintln!("bench: pg_stats at scale ({} tables)", plan.scale_tables);
            postgres::scale(
                &mut report,
                &part("scale"),
                &cluster,
                plan.scale_tables,
                plan.scale_runs,
            )
            .await;
        }
        if wants("compare") {
            eprintln!("bench: against native exporters");
            let database = if wants("scale") { "scale" } else { "postgres" };
            compare::run(
                &mut report,
                &part("compare"),
                &cluster,
                database,
                plan.scrapes,
            )
            .await;
        }
        if wants("cold") {
            eprintln!("bench: cold start");
            agent::cold_start(
                &mut report,
                &part("cold"),
                &agent,
                &cluster,
                plan.cold_start_runs,
            )
            .await;
        }
        if wants("rss") {
            eprintln!("bench: steady RSS over {} cycles", plan.rss_cycles);
            let batches = agent::steady_rss(
                &mut report,
                &part("rss"),
                &agent,
                &cluster,
                plan.rss_cycles,
                plan.rss_interval,
            )
            .await;
            agent::gzip_ratio(&mut report, &batches);
            agent::sender(&mut report, &part("sender"), &batches, plan.sender_batches).await;
        }
    });
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let preamble = format!(
        "Produced by `{command}` on {} in {} min. Medians throughout (p10/p90 and counts in the \
         details); every sandboxed figure has its native baseline from the same run.\n\n{}",
        pganalytics::pipeline::now_rfc3339(),
        started.elapsed().as_secs() / 60,
        machine.describe()
    );
    if only.is_some() {
        // Part of the suite: printed, and BENCHMARKS.md left as it is.
        print!("{}", report.render(&preamble, ""));
        return;
    }
    let analysis = report::kept_analysis(&std::fs::read_to_string(&out).unwrap_or_default());
    std::fs::write(&out, report.render(&preamble, &analysis)).expect("writing the report");
    eprintln!(
        "bench: wrote {} ({} goal(s) missed)",
        out.display(),
        report.missed()
    );
}
