//! Against a throwaway PostgreSQL cluster: one full cycle of the four bundled collectors, and
//! `pg_stats` on a database with many tables and indexes.

use std::path::Path;
use std::time::Duration;

use throwaway_pg::TestCluster;

use crate::measure::{Samples, human, postmaster_pid, server_cpu};
use crate::report::{Report, Verdict};
use crate::setup::{self, Loaded, Plugin};

const FOUR: [&str; 4] = ["sysstat", "disk", "pg_log", "pg_stats"];

pub fn start_cluster() -> TestCluster {
    let prefix = format!("log_line_prefix='{}'", crate::logs::PREFIX);
    let cluster = TestCluster::start(&[
        "logging_collector=on",
        "log_filename=postgresql.log",
        &prefix,
    ]);
    cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements");
    cluster
}

/// Runs all four collectors one after the other, `cycles` times, and reports the cycle's cost
/// without the time spent waiting for PostgreSQL.
pub async fn cycle(report: &mut Report, dir: &Path, cluster: &TestCluster, cycles: usize) {
    let log = cluster.log_dir().join("postgresql.log");
    let text = setup::collector_section(&dir.join("state-cycle"), "")
        + &cluster.postgres_section()
        + &Plugin::Sysstat.section("1s")
        + &Plugin::Disk.section("1s")
        + &Plugin::PgLog {
            log_file: &log,
            format: "stderr",
        }
        .section("1s")
        + &Plugin::PgStats { databases: "\"*\"" }.section("1s");
    let loaded = Loaded::new(setup::parse(&text, dir));
    let mut total = Samples::default();
    let mut without_server = Samples::default();
    let mut server = Samples::default();
    let mut per_plugin: Vec<Samples> = vec![Samples::default(); FOUR.len()];
    let mut items = 0;
    for i in 0..cycles + 3 {
        // Something new for pg_log in every cycle: an error with its statement (not timed).
        let _ = cluster.try_psql("postgres", &format!("SELECT 'cycle {i}' || 1/0"));
        let (mut cycle, mut postgres) = (Duration::ZERO, Duration::ZERO);
        items = 0;
        for (index, name) in FOUR.iter().enumerate() {
            let (accepted, wall) = loaded.collect(name).await;
            cycle += wall;
            postgres += accepted.timing.postgres;
            items += accepted.items.len();
            if i >= 3 {
                per_plugin[index].push(wall - accepted.timing.postgres);
            }
        }
        if i >= 3 {
            total.push(cycle);
            server.push(postgres);
            without_server.push(cycle - postgres);
        }
    }
    let met = without_server.median() <= Duration::from_millis(3);
    report.row(
        "one full cycle of all four collectors, excluding PostgreSQL's own query time",
        "≤ 3 ms",
        &format!(
            "{} ({} with PostgreSQL)",
            human(without_server.median()),
            human(total.median())
        ),
        if met { Verdict::Met } else { Verdict::Missed },
    );
    let mut details = format!(
        "The four run one after the other (the agent runs them concurrently, on their own \
         intervals), each along the agent's path: instantiate, `collect` with its host calls, \
         validate the output. {items} items per cycle.\n\n\
         - cycle: {}\n- of which inside `postgres` host calls (connection, round trips, row \
         decoding): {}\n- cycle without them: {}\n",
        total.describe(),
        server.describe(),
        without_server.describe()
    );
    for (name, samples) in FOUR.iter().zip(&per_plugin) {
        details += &format!(
            "- `{name}` without its postgres calls: {}\n",
            samples.describe()
        );
    }
    report.section("Full cycle", &details);
}

/// `pg_stats` on a database with `tables` tables of two indexes each.
pub async fn scale(
    report: &mut Report,
    dir: &Path,
    cluster: &TestCluster,
    tables: usize,
    runs: usize,
) {
    cluster.psql("postgres", "CREATE DATABASE scale");
    let started = std::time::Instant::now();
    const BATCH: usize = 500;
    for first in (0..tables).step_by(BATCH) {
        let last = (first + BATCH).min(tables);
        cluster.psql(
            "scale",
            &format!(
                "DO $$ BEGIN FOR i IN {first}..{} LOOP \
                 EXECUTE format('CREATE TABLE t_%s (id int PRIMARY KEY, v int, note text)', i); \
                 EXECUTE format('CREATE INDEX ON t_%s (v)', i); \
                 END LOOP; END $$",
                last - 1
            ),
        );
    }
    // Some tables with rows and scans, so sizes and counters differ.
    cluster.psql(
        "scale",
        "DO $$ BEGIN FOR i IN 0..99 LOOP \
         EXECUTE format('INSERT INTO t_%s SELECT g, g %% 10, repeat(''x'', 50) FROM generate_series(1, %s) g', i, 100 * (i + 1)); \
         EXECUTE format('SELECT count(*) FROM t_%s WHERE v = 3', i); \
         EXECUTE format('ANALYZE t_%s', i); \
         END LOOP; END $$",
    );
    let created = started.elapsed();
    let indexes = cluster.psql(
        "scale",
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'",
    );
    let text = setup::collector_section(&dir.join("state-scale"), "")
        + &cluster.postgres_section()
        + &Plugin::PgStats {
            databases: "\"scale\"",
        }
        .section("1s");
    let loaded = Loaded::new(setup::parse(&text, dir));
    let postmaster = postmaster_pid(&cluster.data());
    // One run to warm the connection and the server's catalog caches, as every later cycle of
    // a running agent finds them.
    loaded.collect("pg_stats").await;
    let mut wall = Samples::default();
    let mut server = Samples::default();
    let mut server_cpu_total = Duration::ZERO;
    let mut payload = 0;
    for _ in 0..runs {
        let before = server_cpu(postmaster);
        let (accepted, time) = loaded.collect("pg_stats").await;
        server_cpu_total += server_cpu(postmaster).saturating_sub(before);
        wall.push(time);
        server.push(accepted.timing.postgres);
        payload = serde_json::to_string(&accepted.items)
            .expect("items serialise")
            .len();
    }
    let server_cpu_per_run = server_cpu_total / runs.max(1) as u32;
    // The runs above reuse the database size measured in the warm-up (pg_stats sizes a database
    // once per `database_size_interval`, 5 minutes by default): the runs that do size it are
    // measured apart, with the interval at 0.
    let sizing_text = setup::collector_section(&dir.join("state-scale-sizing"), "")
        + &cluster.postgres_section()
        + &Plugin::PgStats {
            databases: "\"scale\"",
        }
        .section("1s")
        + "[plugins.pg_stats.settings]\ndatabase_size_interval = 0\n";
    let sizing = Loaded::new(setup::parse(&sizing_text, dir));
    sizing.collect("pg_stats").await;
    let mut sizing_wall = Samples::default();
    let mut sizing_cpu = Duration::ZERO;
    for _ in 0..runs {
        let before = server_cpu(postmaster);
        let (_, time) = sizing.collect("pg_stats").await;
        sizing_cpu += server_cpu(postmaster).saturating_sub(before);
        sizing_wall.push(time);
    }
    let sizing_cpu_per_run = sizing_cpu / runs.max(1) as u32;
    let met = wall.median() <= Duration::from_millis(150);
    report.row(
        &format!(
            "pg_stats on a database with {tables} tables and {} indexes",
            indexes.trim()
        ),
        "≤ 150 ms wall; server CPU per cycle measured (≤ postgres_exporter's: see the comparison)",
        &format!(
            "{}, PostgreSQL's CPU {} per cycle, {} KiB payload",
            human(wall.median()),
            human(server_cpu_per_run),
            payload / 1024
        ),
        if met { Verdict::Met } else { Verdict::Missed },
    );
    report.section(
        "pg_stats at scale",
        &format!(
            "Database `scale`: {tables} tables with a primary key and one more index each, 100 of \
             them with rows and analyzed (created in {}). The plugin's defaults: top 100 tables, \
             indexes and statements.\n\n- run (along the agent's path): {}\n- of which inside \
             `postgres` host calls: {}\n- PostgreSQL's CPU per run (all server processes, \
             {runs} runs after one warm-up, 10 ms ticks): {}\n- payload: {payload} bytes \
             (bounded by the top-N settings, not by the number of tables)\n- those runs reuse \
             the database size measured in the warm-up (`database_size_interval`, default 5 \
             minutes); a run that sizes the database (`database_size_interval = 0`): {}, \
             PostgreSQL's CPU {} per run\n",
            human(created),
            wall.describe(),
            server.describe(),
            human(server_cpu_per_run),
            sizing_wall.describe(),
            human(sizing_cpu_per_run)
        ),
    );
}
