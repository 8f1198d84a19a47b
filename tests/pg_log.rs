//! End-to-end tests of the `log-tail` capability and the `pg_log` collector on logs a real
//! PostgreSQL server writes, in every format, across cycles and log rotations.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pganalytics::config;
use pganalytics::pipeline;
use pganalytics::plugin::PluginHost;
use pganalytics_e2e::*;
use serde_json::Value;
use throwaway_pg::TestCluster;

const FORMATS: [(&str, &str, &str); 3] = [
    ("stderr", "stderr", "postgresql.log"),
    ("csv", "csvlog", "postgresql.csv"),
    ("json", "jsonlog", "postgresql.json"),
];

/// Waits until the logging collector has written `needle` to `file`.
fn wait_for(file: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_to_string(file).is_ok_and(|text| text.contains(needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never contained {needle:?}", file.display());
}

fn markers(cluster: &TestCluster, range: std::ops::RangeInclusive<u32>) {
    cluster.psql(
        "app",
        &format!(
            "DO $$ BEGIN FOR i IN {}..{} LOOP RAISE LOG 'marker-%', i; END LOOP; END $$",
            range.start(),
            range.end()
        ),
    );
    for (_, _, file) in FORMATS {
        wait_for(
            &cluster.log_dir().join(file),
            &format!("marker-{}", range.end()),
        );
    }
}

/// Entries of every accepted pg_log item, per plugin, after running each plugin once.
async fn collect(config: &config::Config, host: &PluginHost) -> BTreeMap<String, Vec<Value>> {
    let mut entries = BTreeMap::new();
    for name in config.plugins.keys() {
        let collection = pipeline::collect_once(config, host, std::slice::from_ref(name)).await;
        let failed: Vec<_> = collection.failures().collect();
        assert!(failed.is_empty(), "{failed:?}");
        let mut mine = Vec::new();
        for item in collection.envelope.items() {
            assert_eq!(item["type"], "pg_log");
            for entry in item["entries"].as_array().unwrap() {
                assert_eq!(
                    entry["database"].as_str().unwrap_or(""),
                    item["database"].as_str().unwrap()
                );
                mine.push(entry.clone());
            }
        }
        entries.insert(name.clone(), mine);
    }
    entries
}

fn plugins_config(cluster: &TestCluster, dir: &Path) -> config::Config {
    let mut body = String::new();
    for (name, format, file) in FORMATS {
        body.push_str(&plugin(name, "pg_log", "pg_log", ""));
        body.push_str(&format!(
            "[plugins.{name}.grants.log-tail]\npaths = [\"{}/{file}*\"]\n[plugins.{name}.settings]\nformat = \"{format}\"\n",
            cluster.log_dir().display()
        ));
    }
    config::load(&write_config(dir, &body)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_parses_real_logs_exactly_once_across_cycles_and_rotations() {
    let cluster = TestCluster::start(&[
        "logging_collector=on",
        "log_destination='stderr,csvlog,jsonlog'",
        "log_filename=postgresql.log",
        "log_rotation_age=0",
        "log_rotation_size=0",
        "log_line_prefix='%m [%p] %q%u@%d '",
        "log_timezone=UTC",
    ]);
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql("app", "CREATE TABLE accounts (id int PRIMARY KEY, name text); INSERT INTO accounts VALUES (1, 'a')");
    let dir = tempfile::tempdir().unwrap();
    let config = plugins_config(&cluster, dir.path());
    let host = PluginHost::new(&config.host_setup()).unwrap();

    // First sight: existing lines are skipped (start_at = "end").
    let first = collect(&config, &host).await;
    assert!(first.values().all(|entries| {
        entries
            .iter()
            .all(|e| !e["message"].as_str().unwrap().starts_with("marker-"))
    }));

    let _ = cluster.try_psql("app", "INSERT INTO accounts VALUES (1, 'b')");
    let _ = cluster.try_psql(
        "app",
        "DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING DETAIL = 'the detail', HINT = 'the hint'; END $$",
    );
    let _ = cluster.try_psql("app", "SELECT 'it''s \"quoted\"' AS text,\n  1/0 AS boom");
    markers(&cluster, 1..=50);
    let mut seen: BTreeMap<String, Vec<Value>> = collect(&config, &host).await;

    for (name, _, _) in FORMATS {
        let entries = &seen[name];
        let find = |needle: &str| {
            entries
                .iter()
                .find(|e| e["message"].as_str().unwrap().contains(needle))
                .unwrap_or_else(|| {
                    let file = cluster
                        .log_dir()
                        .join(FORMATS.iter().find(|f| f.0 == name).unwrap().2);
                    panic!(
                        "{name}: no entry with {needle:?} in {entries:#?}\n{}:\n{}",
                        file.display(),
                        std::fs::read_to_string(&file).unwrap_or_default()
                    )
                })
        };
        let unique = find("duplicate key value violates unique constraint");
        assert_eq!(unique["level"], "ERROR", "{name}");
        assert_eq!(unique["detail"], "Key (id)=(1) already exists.", "{name}");
        assert_eq!(
            unique["statement"], "INSERT INTO accounts VALUES (1, 'b')",
            "{name}"
        );
        assert_eq!(unique["user"], "postgres", "{name}");
        assert_eq!(unique["database"], "app", "{name}");
        assert!(unique["pid"].as_i64().unwrap() > 0, "{name}");
        let ts =
            chrono::DateTime::parse_from_rfc3339(unique["timestamp"].as_str().unwrap()).unwrap();
        assert!(
            (chrono::Utc::now() - ts.to_utc()).num_seconds().abs() < 600,
            "{name}: {ts}"
        );
        let custom = find("custom failure");
        assert_eq!(
            (custom["detail"].as_str(), custom["hint"].as_str()),
            (Some("the detail"), Some("the hint")),
            "{name}"
        );
        let boom = find("division by zero");
        assert_eq!(
            boom["statement"], "SELECT 'it''s \"quoted\"' AS text,\n  1/0 AS boom",
            "{name}: {boom}"
        );
    }

    // Rotation by rename: the server keeps writing to the renamed file until it rotates.
    markers(&cluster, 51..=100);
    for (_, _, file) in FORMATS {
        std::fs::rename(
            cluster.log_dir().join(file),
            cluster.log_dir().join(format!("{file}.1")),
        )
        .unwrap();
    }
    markers_in(&cluster, 101..=120, ".1");
    cluster.psql("postgres", "SELECT pg_rotate_logfile()");
    for (_, _, file) in FORMATS {
        let path = cluster.log_dir().join(file);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    markers(&cluster, 121..=150);
    extend(&mut seen, collect(&config, &host).await);

    // Rotation by copytruncate: the copy is recognised, the truncated file starts over.
    markers(&cluster, 151..=170);
    for (_, _, file) in FORMATS {
        let path = cluster.log_dir().join(file);
        let copy = cluster.log_dir().join(format!("{file}.2"));
        std::fs::copy(&path, &copy).unwrap();
        // As logrotate's copytruncate does: the copy keeps the log's owner (log-tail refuses
        // files of another owner than the log directory's).
        let owner = std::fs::metadata(&path).unwrap();
        std::os::unix::fs::chown(&copy, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
    }
    markers(&cluster, 171..=190);
    extend(&mut seen, collect(&config, &host).await);
    extend(&mut seen, collect(&config, &host).await);

    for (name, _, _) in FORMATS {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for entry in &seen[name] {
            if let Some(n) = entry["message"].as_str().unwrap().strip_prefix("marker-") {
                *counts.entry(n.parse().unwrap()).or_default() += 1;
            }
        }
        let wrong: Vec<_> = (1..=190)
            .filter(|n| counts.get(n) != Some(&1))
            .map(|n| (n, counts.get(&n).copied().unwrap_or(0)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{name}: markers not seen exactly once (marker, times): {wrong:?}"
        );
    }
}

fn markers_in(cluster: &TestCluster, range: std::ops::RangeInclusive<u32>, suffix: &str) {
    cluster.psql(
        "app",
        &format!(
            "DO $$ BEGIN FOR i IN {}..{} LOOP RAISE LOG 'marker-%', i; END LOOP; END $$",
            range.start(),
            range.end()
        ),
    );
    for (_, _, file) in FORMATS {
        wait_for(
            &cluster.log_dir().join(format!("{file}{suffix}")),
            &format!("marker-{}", range.end()),
        );
    }
}

fn extend(seen: &mut BTreeMap<String, Vec<Value>>, more: BTreeMap<String, Vec<Value>>) {
    for (name, entries) in more {
        seen.entry(name).or_default().extend(entries);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stderr_prefix_is_parsed_with_its_fields() {
    let prefix = "%t:%r:%u@%d:[%p]: ";
    let cluster = TestCluster::start(&[
        "logging_collector=on",
        "log_filename=postgresql.log",
        &format!("log_line_prefix='{prefix}'"),
        "log_timezone=UTC",
    ]);
    cluster.psql("postgres", "CREATE DATABASE app");
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}[plugins.pg_log.grants.log-tail]\npaths = [\"{}/postgresql.log\"]\nstart_at = \"beginning\"\n[plugins.pg_log.settings]\nlog_line_prefix = \"{prefix}\"\nmin_level = \"ERROR\"\n",
        plugin("pg_log", "pg_log", "pg_log", ""),
        cluster.log_dir().display()
    );
    let config = config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
    let host = PluginHost::new(&config.host_setup()).unwrap();
    let _ = cluster.try_psql("app", "SELECT *\nFROM missing_table\nWHERE note = 'x''y'");
    cluster.psql("app", "DO $$ BEGIN RAISE WARNING 'just a warning'; END $$");
    wait_for(&cluster.log_dir().join("postgresql.log"), "missing_table");
    let entries = collect(&config, &host).await.remove("pg_log").unwrap();
    let missing = entries
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("relation \"missing_table\" does not exist")
        })
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert_eq!(missing["level"], "ERROR");
    assert_eq!(missing["user"], "postgres");
    assert_eq!(missing["database"], "app");
    assert_eq!(
        missing["statement"],
        "SELECT *\nFROM missing_table\nWHERE note = 'x''y'"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(missing["timestamp"].as_str().unwrap()).is_ok());
    // LOG ranks above ERROR in log_min_messages order, WARNING below it.
    assert!(
        entries.iter().all(|e| e["level"] != "WARNING"),
        "min_level = ERROR drops warnings: {entries:#?}"
    );
}
