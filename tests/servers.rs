//! End-to-end test of several PostgreSQL servers in one agent: two throwaway clusters, each with
//! its own databases, `[postgres]` (the server `default`) on one and `[postgres.servers.b]` on
//! the other, and the shipped `pg_stats` configured twice, once per server. One collection must
//! bring each plugin's items from its own cluster only, each stamped with its server, in an
//! envelope the backend (as the test backend decodes it) accepts; `pganalytics check` must
//! check both servers.

use std::collections::{BTreeMap, BTreeSet};

use pganalytics::config;
use pganalytics::pipeline;
use pganalytics::plugin::PluginHost;
use pganalytics_e2e::*;
use serde_json::Value;
use throwaway_pg::TestCluster;

/// `[plugins.NAME]` running the shipped pg_stats on every database of `server` (`None`: the
/// grant names no server, so `default`).
fn pg_stats(name: &str, server: Option<&str>) -> String {
    let server = server.map_or(String::new(), |s| format!("server = \"{s}\"\n"));
    format!(
        "{}[plugins.{name}.grants.postgres]\ndatabases = [\"*\"]\ncluster = true\n{server}",
        plugin(
            name,
            "pg_stats",
            "pg_stats",
            "emits = [\"pg_stats\", \"pg_query_stats\", \"pg_server\"]\ntimeout = \"20s\""
        )
        .replace("emits = [\"pg_stats\"]\n", ""),
    )
}

/// The databases of `cluster` a plugin granted `*` is offered.
fn databases_of(cluster: &TestCluster) -> BTreeSet<String> {
    cluster
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate",
        )
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_in_one_agent() {
    let a = TestCluster::start(&[]);
    let b = TestCluster::start(&[]);
    assert_ne!(a.socket_dir(), b.socket_dir());
    a.psql("postgres", "CREATE DATABASE alpha_app");
    for db in ["beta_app", "beta_reports"] {
        b.psql("postgres", &format!("CREATE DATABASE {db}"));
    }
    b.psql("beta_app", "CREATE EXTENSION pg_stat_statements");
    b.psql(
        "beta_app",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)",
    );
    for _ in 0..3 {
        b.psql("beta_app", "SELECT count(*) FROM t WHERE id > 5");
    }
    let expected: BTreeMap<&str, BTreeSet<String>> =
        [("default", databases_of(&a)), ("b", databases_of(&b))].into();
    assert!(expected["default"].contains("alpha_app"), "{expected:?}");
    assert!(expected["b"].contains("beta_reports"), "{expected:?}");

    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n{}\n{}\n{}",
        a.postgres_section(),
        b.postgres_section()
            .replace("[postgres]", "[postgres.servers.b]"),
        pg_stats("pg_stats_a", None),
        pg_stats("pg_stats_b", Some("b")),
    );
    let path = write_config(dir.path(), &body);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.postgres.len(), 2);

    let host = PluginHost::new(&config.host_setup()).unwrap();
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let failed: Vec<_> = collection.failures().collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(collection.outcomes.len(), 2);

    // Every item carries a server, and each server's items name exactly its own databases.
    let items = collection.envelope.items();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut servers_items: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        let server = item["server"]
            .as_str()
            .unwrap_or_else(|| panic!("an item without `server`: {item}"))
            .to_owned();
        *servers_items.entry(server.clone()).or_default() += 1;
        if item["type"] == "pg_stats" {
            let database = item["database"].as_str().unwrap().to_owned();
            assert!(
                seen.entry(server.clone())
                    .or_default()
                    .insert(database.clone()),
                "{server}: {database} twice"
            );
        }
    }
    let expected_seen: BTreeMap<String, BTreeSet<String>> = expected
        .iter()
        .map(|(server, dbs)| (server.to_string(), dbs.clone()))
        .collect();
    assert_eq!(seen, expected_seen, "databases seen per server");
    // One pg_server item per server.
    for server in ["default", "b"] {
        let count = items
            .iter()
            .filter(|i| i["type"] == "pg_server" && i["server"] == server)
            .count();
        assert_eq!(count, 1, "pg_server items of {server}");
    }
    eprintln!("items per server: {servers_items:?}");

    // The envelope as pushed: decoded as the backend decodes it, nothing dropped.
    let body = collection.envelope.encode().unwrap();
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    test_backend::validate_envelope(&envelope).unwrap();
    let request = test_backend::contract::decode_push(&body).unwrap();
    let outcome = test_backend::contract::process_items(&request);
    assert!(outcome.dropped.is_empty(), "{:?}", outcome.dropped);
    assert_eq!(outcome.panicked_at, None);
    // The stamped pg_query_stats items of `b` are stored as the backend stores them.
    assert!(
        items
            .iter()
            .any(|i| i["type"] == "pg_query_stats" && i["server"] == "b"),
        "no pg_query_stats item of b"
    );
    assert!(!outcome.stored.is_empty(), "no query statistics stored");
    assert_eq!(
        envelope["metrics"].as_array().unwrap().len(),
        items.len(),
        "the pushed envelope holds the same items"
    );
    assert!(
        envelope["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["server"] == "default" || i["server"] == "b")
    );

    // `pganalytics check`: one line per server, both reached.
    let (code, stdout, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for (server, cluster) in [("default", &a), ("b", &b)] {
        let line = format!(
            "ok   postgres server `{server}` {}:{} ",
            cluster.socket_dir().display(),
            cluster.port
        );
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "no line starting {line:?} in:\n{stdout}"
        );
    }

    // A grant naming a server the config lacks is refused when the config is loaded.
    let bad = format!(
        "{}\n{}",
        a.postgres_section(),
        pg_stats("pg_stats_c", Some("c"))
    );
    let error = config::load(&write_config(dir.path(), &bad))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`plugins.pg_stats_c.grants.postgres.server`")
            && error.contains("no PostgreSQL server `c`"),
        "{error}"
    );
}
