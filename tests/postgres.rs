//! End-to-end tests of the `postgres` capability and the `pg_stats` collector against a
//! throwaway PostgreSQL cluster started by the test.

use std::collections::BTreeMap;

use pganalytics::config;
use pganalytics::pipeline::{self, Collection};
use pganalytics::plugin::PluginHost;
use pganalytics_e2e::*;
use serde_json::Value;
use throwaway_pg::TestCluster;

fn pg_stats_config(
    cluster: &TestCluster,
    dir: &std::path::Path,
    databases: &str,
) -> config::Config {
    let body = format!(
        "{}\n{}",
        cluster.postgres_section(),
        pg_stats_plugin(databases, "[plugins.pg_stats.settings]\ntop_tables = 50\n")
    );
    config::load(&write_config(dir, &body)).unwrap_or_else(|e| panic!("{e}"))
}

fn host(config: &config::Config) -> PluginHost {
    PluginHost::new(&config.host_setup()).unwrap()
}

fn accepted(collection: &Collection) -> Vec<Value> {
    let failed: Vec<_> = collection.failures().collect();
    assert!(failed.is_empty(), "{failed:?}");
    collection.envelope.items()
}

fn by_database<'a>(items: &'a [Value], kind: &str) -> BTreeMap<String, &'a Value> {
    items
        .iter()
        .filter(|i| i["type"] == kind)
        .map(|i| (i["database"].as_str().unwrap().to_owned(), i))
        .collect()
}

fn setup_databases(cluster: &TestCluster) {
    for db in ["app1", "app2"] {
        cluster.psql("postgres", &format!("CREATE DATABASE {db}"));
        cluster.psql(
            db,
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer int, note text);
             CREATE INDEX orders_customer ON orders (customer);
             CREATE TABLE customers (id int PRIMARY KEY, name text);
             INSERT INTO orders (customer, note) SELECT g % 100, repeat('x', 50) FROM generate_series(1, 5000) g;
             INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
             DELETE FROM orders WHERE id % 10 = 0;
             ANALYZE;",
        );
    }
    cluster.psql("app1", "CREATE EXTENSION pg_stat_statements");
    for _ in 0..5 {
        cluster.psql("app1", "SELECT count(*) FROM orders WHERE customer = 7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stats_matches_sql_across_databases_grants_and_a_restart() {
    let cluster = TestCluster::start(&[]);
    setup_databases(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let config = pg_stats_config(&cluster, dir.path(), "[\"app1\", \"app2\"]");
    let host = host(&config);

    let committed_before: i64 = cluster
        .psql(
            "postgres",
            "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app1'",
        )
        .parse()
        .unwrap();
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let items = accepted(&collection);
    let stats = by_database(&items, "pg_stats");
    assert_eq!(stats.keys().collect::<Vec<_>>(), ["app1", "app2"]);

    for (db, item) in &stats {
        let size: i64 = cluster
            .psql(db, "SELECT pg_database_size(current_database())")
            .parse()
            .unwrap();
        assert_eq!(item["size_bytes"].as_i64().unwrap(), size, "{db} size");
        assert_eq!(
            item["size_at"], item["timestamp"],
            "{db}: sized in this run"
        );
        let inserted: i64 = cluster
            .psql(
                "postgres",
                &format!("SELECT tup_inserted FROM pg_stat_database WHERE datname = '{db}'"),
            )
            .parse()
            .unwrap();
        assert_eq!(
            item["tuples_inserted"].as_i64().unwrap(),
            inserted,
            "{db} tuples_inserted"
        );
        let tables = item["tables"].as_array().unwrap();
        let expected = cluster.psql(
            db,
            "SELECT schemaname || '.' || relname || ':' || n_live_tup || ':' || n_dead_tup || ':' || pg_total_relation_size(relid)
             FROM pg_stat_user_tables ORDER BY 1",
        );
        let mut got: Vec<String> = tables
            .iter()
            .map(|t| {
                format!(
                    "{}.{}:{}:{}:{}",
                    t["schema"].as_str().unwrap(),
                    t["name"].as_str().unwrap(),
                    t["live_tuples"],
                    t["dead_tuples"],
                    t["size_bytes"]
                )
            })
            .collect();
        got.sort();
        assert_eq!(got.join("\n"), expected, "{db} tables");
        let orders = tables.iter().find(|t| t["name"] == "orders").unwrap();
        assert!(
            orders["last_analyze"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "{orders}"
        );
        assert_eq!(orders["last_vacuum"], Value::Null);
        let indexes = item["indexes"].as_array().unwrap();
        let expected = cluster.psql(db, "SELECT indexrelname || ':' || relname || ':' || idx_scan || ':' || pg_relation_size(indexrelid) FROM pg_stat_user_indexes ORDER BY 1");
        let mut got: Vec<String> = indexes
            .iter()
            .map(|i| {
                format!(
                    "{}:{}:{}:{}",
                    i["name"].as_str().unwrap(),
                    i["table"].as_str().unwrap(),
                    i["scans"],
                    i["size_bytes"]
                )
            })
            .collect();
        got.sort();
        assert_eq!(got.join("\n"), expected, "{db} indexes");
        let customer_index = indexes
            .iter()
            .find(|i| i["name"] == "orders_customer")
            .unwrap();
        let scans = customer_index["scans"].as_i64().unwrap();
        assert_eq!(
            customer_index["status"],
            if scans == 0 { "unused" } else { "active" }
        );
    }
    let committed = stats["app1"]["transactions_committed"].as_i64().unwrap();
    assert!(
        committed >= committed_before,
        "{committed} < {committed_before}"
    );

    // pg_query_stats only where the extension exists, with the server's own numbers.
    let query_stats = by_database(&items, "pg_query_stats");
    assert_eq!(query_stats.keys().collect::<Vec<_>>(), ["app1"]);
    let queries = query_stats["app1"]["queries"].as_array().unwrap();
    let counted = queries
        .iter()
        .find(|q| {
            q["text"]
                .as_str()
                .unwrap()
                .contains("FROM orders WHERE customer =")
        })
        .expect("the repeated count(*) query");
    let expected_calls: i64 = cluster
        .psql("app1", "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE 'SELECT count(*) FROM orders WHERE customer =%'")
        .parse()
        .unwrap();
    assert_eq!(counted["calls"].as_i64().unwrap(), expected_calls);
    let queryid = cluster.psql("app1", "SELECT queryid FROM pg_stat_statements WHERE query LIKE 'SELECT count(*) FROM orders WHERE customer =%' LIMIT 1");
    assert_eq!(
        counted["hash"].as_i64(),
        Some(queryid.parse::<i64>().unwrap())
    );
    let server = items
        .iter()
        .find(|i| i["type"] == "pg_server")
        .expect("a pg_server item");
    assert_eq!(
        server["server_version_num"].as_i64().unwrap(),
        cluster
            .psql("postgres", "SHOW server_version_num")
            .parse::<i64>()
            .unwrap()
    );
    assert!(server["connections"]["total"].as_i64().unwrap() >= 1);

    // The server restarts: stale pooled connections are replaced and the next cycle succeeds.
    cluster.restart();
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let items_again = accepted(&collection);
    let again = by_database(&items_again, "pg_stats");
    assert_eq!(again.len(), 2);
    // Within `database_size_interval` (default 5 minutes) the size measured in the first run
    // is reported again, and says when it was measured.
    for (db, item) in &again {
        assert_eq!(item["size_bytes"], stats[db]["size_bytes"], "{db}");
        assert_eq!(item["size_at"], stats[db]["timestamp"], "{db}");
        assert_ne!(item["timestamp"], stats[db]["timestamp"], "{db}");
    }

    // A database added to the grant appears, one removed disappears; "*" is every database.
    let only_app2 = pg_stats_config(&cluster, dir.path(), "[\"app2\", \"postgres\"]");
    let collection = pipeline::collect_once(&only_app2, &host, &[]).await;
    assert_eq!(
        by_database(&accepted(&collection), "pg_stats")
            .keys()
            .collect::<Vec<_>>(),
        ["app2", "postgres"]
    );
    let all = pg_stats_config(&cluster, dir.path(), "[\"*\"]");
    let collection = pipeline::collect_once(&all, &host, &[]).await;
    assert_eq!(
        by_database(&accepted(&collection), "pg_stats")
            .keys()
            .collect::<Vec<_>>(),
        ["app1", "app2", "postgres"]
    );
}

/// What pg_stats sends is what the real backend stores: pushed as it is to a stand-in that
/// decodes like the backend's Go handler, no pg_query_stats item is dropped and each query is a
/// row whose hash is the queryid as Go keeps it (through a float64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_query_stats_are_stored_by_a_backend_that_decodes_like_the_real_one() {
    let cluster = TestCluster::start(&[]);
    setup_databases(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let config = pg_stats_config(&cluster, dir.path(), "[\"app1\", \"app2\"]");
    let host = host(&config);
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let items = accepted(&collection);
    let sent: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "pg_query_stats")
        .flat_map(|i| i["queries"].as_array().unwrap())
        .collect();
    assert!(!sent.is_empty());

    let backend = test_backend::TestBackend::start(test_backend::BackendConfig::default()).await;
    let ca = reqwest::Certificate::from_pem(backend.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let token = backend.issue_token(
        &collection.envelope.collector_id,
        std::time::Duration::from_secs(60),
    );
    let response = client
        .post(format!("{}/api/v1/metrics/push", backend.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&collection.envelope).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(backend.dropped_items(), []);
    assert_eq!(answer["metrics_inserted"], sent.len());

    let stored = backend.query_stats();
    assert_eq!(stored.len(), sent.len());
    for (row, query) in stored.iter().zip(&sent) {
        let hash = query["hash"].as_i64().unwrap();
        assert_eq!(
            Some(row.hash),
            test_backend::contract::go_int64_after_float(hash)
        );
        assert_eq!(row.calls, query["calls"].as_i64().unwrap());
        assert_eq!(row.text, query["text"].as_str().unwrap());
        assert_eq!(row.database, "app1");
    }
    let queryid: i64 = cluster
        .psql("app1", "SELECT queryid FROM pg_stat_statements WHERE query LIKE 'SELECT count(*) FROM orders WHERE customer =%' LIMIT 1")
        .parse()
        .unwrap();
    assert!(
        stored
            .iter()
            .any(|r| Some(r.hash) == test_backend::contract::go_int64_after_float(queryid)),
        "the repeated count(*) query is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_is_refused_by_name_and_the_database_is_unchanged() {
    let cluster = TestCluster::start(&[]);
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql("postgres", "CREATE DATABASE secret");
    cluster.psql("app", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10); GRANT SELECT ON t TO pganalytics");
    let before = cluster.psql("app", "SELECT count(*) || ':' || sum(id) FROM t");
    let statements: Vec<(&str, &str)> = vec![
        (
            "INSERT INTO t VALUES (99)",
            "invalid: query refused: only SELECT is allowed, found INSERT",
        ),
        (
            "UPDATE t SET id = 0",
            "invalid: query refused: only SELECT is allowed, found UPDATE",
        ),
        (
            "DELETE FROM t",
            "invalid: query refused: only SELECT is allowed, found DELETE",
        ),
        (
            "DROP TABLE t",
            "invalid: query refused: only SELECT is allowed, found DROP",
        ),
        (
            "CREATE TABLE u (a int)",
            "invalid: query refused: only SELECT is allowed, found CREATE",
        ),
        (
            "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x",
            "invalid: query refused: data-modifying DELETE inside the query",
        ),
        (
            "SELECT 1; DELETE FROM t",
            "invalid: query refused: only one statement per query is allowed, found 2",
        ),
        (
            "COPY t TO STDOUT",
            "invalid: query refused: only SELECT is allowed, found COPY",
        ),
        (
            "SELECT pg_terminate_backend(pg_backend_pid())",
            "invalid: query refused: function `pg_terminate_backend` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_cancel_backend(1)",
            "invalid: query refused: function `pg_cancel_backend` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_reload_conf()",
            "invalid: query refused: function `pg_reload_conf` is not on the read-only allow-list",
        ),
        (
            "SELECT set_config('work_mem', '1GB', false)",
            "invalid: query refused: function `set_config` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "invalid: query refused: function `pg_read_file` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_read_binary_file('/etc/passwd')",
            "invalid: query refused: function `pg_read_binary_file` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_ls_dir('.')",
            "invalid: query refused: function `pg_ls_dir` is not on the read-only allow-list",
        ),
        (
            "SELECT lo_import('/etc/passwd')",
            "invalid: query refused: function `lo_import` is not on the read-only allow-list",
        ),
        (
            "SELECT dblink_exec('dbname=app', 'DELETE FROM t')",
            "invalid: query refused: function `dblink_exec` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_sleep(60)",
            "invalid: query refused: function `pg_sleep` is not on the read-only allow-list",
        ),
        // Not a forbidden function, just slow: the statement timeout (capped by the deadline) stops it.
        (
            "SELECT count(*) FROM generate_series(1, 10000000000)",
            "timeout: the statement was cancelled",
        ),
        // The server is the second line of defence for what the guard allows.
        (
            "SELECT nextval('x')",
            "invalid: query refused: function `nextval` is not on the read-only allow-list",
        ),
        ("SELECT count(*) FROM t", "ok:1"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let list = statements
        .iter()
        .map(|(s, _)| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        "{}\n{}[plugins.hostile_sql.grants.postgres]\ndatabases = [\"app\"]\nstatement_timeout = \"1s\"\n[plugins.hostile_sql.settings]\ndatabase = \"app\"\nstatements = [{list}]\n{}[plugins.ungranted_db.grants.postgres]\ndatabases = [\"app\"]\n[plugins.ungranted_db.settings]\ndatabase = \"secret\"\nstatements = [\"SELECT 1\"]\n",
        cluster.postgres_section(),
        plugin("hostile_sql", "hostile_sql", "probe", "timeout = \"20s\""),
        plugin("ungranted_db", "hostile_sql", "probe", ""),
    );
    let config = config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
    let collection = pipeline::collect_once(&config, &host(&config), &[]).await;
    let items = accepted(&collection);
    let probe = |database: &str| {
        items
            .iter()
            .find(|i| {
                i["databases"].as_array().is_some()
                    && i["results"].as_object().unwrap().len()
                        == if database == "app" {
                            statements.len()
                        } else {
                            1
                        }
            })
            .unwrap_or_else(|| panic!("no probe for {database}"))
    };
    let results = &probe("app")["results"];
    for (sql, expected) in &statements {
        let got = results[*sql].as_str().unwrap();
        assert!(
            got.starts_with(expected),
            "{sql}\n  got:      {got}\n  expected: {expected}"
        );
    }
    assert_eq!(
        probe("app")["databases"],
        serde_json::json!(["app"]),
        "databases() lists only the grant"
    );
    let denied = probe("secret")["results"]["SELECT 1"].as_str().unwrap();
    assert!(
        denied.starts_with("denied: postgres database `secret` is not granted"),
        "{denied}"
    );
    assert_eq!(
        cluster.psql("app", "SELECT count(*) || ':' || sum(id) FROM t"),
        before,
        "the table is unchanged"
    );
    assert_eq!(
        cluster.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'u'"
        ),
        "0"
    );
}

/// Runs plugin `name` of `config` alone and returns its probe's `results`.
async fn probe_of(config: &config::Config, host: &PluginHost, name: &str) -> Value {
    let collection = pipeline::collect_once(config, host, &[name.to_owned()]).await;
    let items = accepted(&collection);
    assert_eq!(items.len(), 1, "{name}: {items:?}");
    items[0]["results"].clone()
}

fn expect(results: &Value, cases: &[(&str, &str)], who: &str) {
    for (sql, expected) in cases {
        let got = results[*sql]
            .as_str()
            .unwrap_or_else(|| panic!("{who}: no result for {sql}"));
        assert!(
            got.starts_with(expected),
            "{who}: {sql}\n  got:      {got}\n  expected: {expected}"
        );
    }
}

fn hostile_plugin(name: &str, grant: &str, statements: &[&str]) -> String {
    sql_probe_plugin(name, "app", grant, "timeout = \"20s\"", statements)
}

fn wal_lsn(cluster: &TestCluster) -> i64 {
    cluster
        .psql(
            "postgres",
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_bound_what_a_plugin_learns_and_no_session_state_crosses_plugins() {
    let cluster = TestCluster::start(&[]);
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql("postgres", "CREATE DATABASE other");
    let emit = "SELECT pg_logical_emit_message(false, 'x', repeat('x', 1000000))";
    let narrow_cases: Vec<(&str, &str)> = vec![
        (
            emit,
            "invalid: query refused: function `pg_logical_emit_message` is not on the read-only allow-list",
        ),
        (
            "SELECT pg_replication_slot_advance('s', '0/1')",
            "invalid: query refused: function `pg_replication_slot_advance` is not on",
        ),
        (
            "SELECT pg_stat_reset()",
            "invalid: query refused: function `pg_stat_reset` is not on",
        ),
        (
            "SELECT pg_stat_statements_reset()",
            "invalid: query refused: function `pg_stat_statements_reset` is not on",
        ),
        (
            "SELECT setseed(0.5)",
            "invalid: query refused: function `setseed` is not on",
        ),
        (
            "SELECT query FROM pg_stat_activity WHERE datname = 'other'",
            "invalid: query refused: relation `pg_stat_activity` shows other databases",
        ),
        (
            "SELECT * FROM pg_stat_get_activity(NULL)",
            "invalid: query refused: function `pg_stat_get_activity` shows other databases",
        ),
        (
            "SELECT query FROM pg_stat_statements",
            "invalid: query refused: relation `pg_stat_statements`",
        ),
        (
            "SELECT current_setting('primary_conninfo')",
            "invalid: query refused: setting `primary_conninfo` may hold a secret",
        ),
        (
            "SELECT * FROM pg_catalog.\"pg_authid\"",
            "invalid: query refused: relation `pg_authid` holds secrets",
        ),
        ("SELECT current_setting('server_version_num')", "ok:1:"),
        ("SELECT count(*) FROM pg_class", "ok:1:"),
    ];
    let wide_cases: Vec<(&str, &str)> = vec![
        (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'other'",
            "ok:1:",
        ),
        ("SELECT current_setting('primary_conninfo')", "ok:1"),
        (
            "TABLE pg_authid",
            "invalid: query refused: relation `pg_authid` holds secrets",
        ),
        (
            "SELECT rolpassword FROM pg_shadow",
            "invalid: query refused: relation `pg_shadow` holds secrets",
        ),
        ("SELECT setseed(0.5)::text", "ok:1"),
    ];
    let narrow: Vec<&str> = narrow_cases.iter().map(|(s, _)| *s).collect();
    // The operator grants `setseed` to `wide`: it seeds its session and draws, then seeds it again,
    // so a connection handed to another plugin would draw the same number next.
    let mut wide: Vec<&str> = wide_cases.iter().map(|(s, _)| *s).collect();
    wide.extend(["SELECT random()", "SELECT setseed(0.50)::text"]);
    let body = format!(
        "{}\n{}{}{}",
        cluster.postgres_section(),
        hostile_plugin("narrow", "", &narrow),
        hostile_plugin("wide", "cluster = true\nfunctions = [\"setseed\"]", &wide),
        hostile_plugin("next", "", &["SELECT random()"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
    let host = host(&config);

    let wal_before = wal_lsn(&cluster);
    expect(
        &probe_of(&config, &host, "narrow").await,
        &narrow_cases,
        "narrow",
    );
    assert!(
        wal_lsn(&cluster) - wal_before < 500_000,
        "the refused 1 MB WAL message was never written"
    );
    let wide_results = probe_of(&config, &host, "wide").await;
    expect(&wide_results, &wide_cases, "wide");
    let seeded = wide_results["SELECT random()"].as_str().unwrap().to_owned();
    assert!(seeded.starts_with("ok:1:"), "{seeded}");
    let next = probe_of(&config, &host, "next").await;
    let drawn = next["SELECT random()"].as_str().unwrap();
    assert!(drawn.starts_with("ok:1:"), "{drawn}");
    assert_ne!(
        drawn, seeded,
        "plugin `next` drew from the seed plugin `wide` set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_role_is_refused_unless_allowed_and_secrets_stay_refused_when_it_is() {
    let cluster = TestCluster::start(&[]);
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql("postgres", "CREATE ROLE su LOGIN SUPERUSER");
    let cases: Vec<(&str, &str)> = vec![
        (
            "SELECT rolpassword FROM pg_authid",
            "invalid: query refused: relation `pg_authid` holds secrets",
        ),
        (
            "SELECT * FROM pg_hba_file_rules",
            "invalid: query refused: relation `pg_hba_file_rules` holds secrets",
        ),
        (
            "SELECT * FROM pg_file_settings",
            "invalid: query refused: relation `pg_file_settings` holds secrets",
        ),
        (
            "SELECT pg_logical_emit_message(false, 'x', 'y')",
            "invalid: query refused: function `pg_logical_emit_message` is not on",
        ),
        (
            "SELECT pg_stat_reset()",
            "invalid: query refused: function `pg_stat_reset` is not on",
        ),
        ("SELECT 1", "ok:1:1"),
    ];
    let statements: Vec<&str> = cases.iter().map(|(s, _)| *s).collect();
    let section = cluster
        .postgres_section()
        .replace("user = \"pganalytics\"", "user = \"su\"");
    let plugin_toml = hostile_plugin("su_probe", "cluster = true", &statements);

    let dir = tempfile::tempdir().unwrap();
    let refused = config::load(&write_config(
        dir.path(),
        &format!("{section}\n{plugin_toml}"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let results = probe_of(&refused, &host(&refused), "su_probe").await;
    for (sql, _) in &cases {
        let got = results[*sql].as_str().unwrap();
        let expected = if sql.contains("SELECT 1") {
            "unavailable: the PostgreSQL role `su` is a superuser"
        } else {
            "invalid: query refused"
        };
        assert!(got.starts_with(expected), "{sql}: {got}");
    }

    let allowed = config::load(&write_config(
        dir.path(),
        &format!("{section}allow_superuser = true\n\n{plugin_toml}"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    expect(
        &probe_of(&allowed, &host(&allowed), "su_probe").await,
        &cases,
        "superuser allowed",
    );

    let named = write_config(
        dir.path(),
        &format!(
            "{}\n{plugin_toml}",
            cluster
                .postgres_section()
                .replace("user = \"pganalytics\"", "user = \"postgres\"")
        ),
    );
    let error = config::load(&named)
        .expect_err("user = \"postgres\" is refused")
        .to_string();
    assert!(error.contains("allow_superuser = true"), "{error}");
}
