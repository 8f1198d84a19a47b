//! One run of the collector: settings, then the `pg_server` item from the first database, then
//! a `pg_stats` (and, with pg_stat_statements, a `pg_query_stats`) item per database.
//!
//! The host is reached only through [`Host`], so the whole run, failure handling included,
//! is tested natively against canned results. A failing database costs only its own items
//! (with a warning naming it); the run fails only when every database failed. This module must
//! never query anything but the statements of [`crate::sql`].

use crate::items::{self, DatabaseStats};
use crate::rows::Table;
use crate::sizes::{Measured, Sizes};
use crate::sql;
use pganalytics_guest::postgres::{Rows, Value as SqlValue};
use pganalytics_guest::{Error, ErrorExt, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a run needs from the host: the `postgres` grant, the plugin settings and the log.
pub trait Host {
    /// The granted databases that exist, in the host's order.
    fn databases(&self) -> Result<Vec<String>, Error>;
    /// Runs one read-only statement in `database`.
    fn query(&self, database: &str, sql: &str, params: &[SqlValue]) -> Result<Rows, Error>;
    /// The setting `key` decoded from JSON; a value of the wrong shape is `Error::Invalid`
    /// naming the key.
    fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error>;
    fn warn(&self, message: &str);
}

/// `[plugins.pg_stats.settings]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The largest tables per database to report (`top_tables`, default 100).
    pub top_tables: u32,
    /// The largest indexes per database to report (`top_indexes`, default 100).
    pub top_indexes: u32,
    /// The statements with the most total execution time per database (`top_queries`,
    /// default 100, at least 1).
    pub top_queries: u32,
    /// Bytes of each statement's text to keep (`max_query_text`, default 4096).
    pub max_query_text: u32,
    /// Whether to read pg_stat_statements at all (`query_stats`, default true).
    pub query_stats: bool,
    /// Seconds a database's measured size is reused before it is measured again
    /// (`database_size_interval`, default 300; 0 measures on every run).
    pub database_size_interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            top_tables: 100,
            top_indexes: 100,
            top_queries: 100,
            max_query_text: 4096,
            query_stats: true,
            database_size_interval: 300,
        }
    }
}

impl Settings {
    /// Reads the settings, each defaulting when unset.
    pub fn load(host: &impl Host) -> Result<Settings, Error> {
        let defaults = Settings::default();
        let settings = Settings {
            top_tables: host.setting("top_tables")?.unwrap_or(defaults.top_tables),
            top_indexes: host.setting("top_indexes")?.unwrap_or(defaults.top_indexes),
            top_queries: host.setting("top_queries")?.unwrap_or(defaults.top_queries),
            max_query_text: host
                .setting("max_query_text")?
                .unwrap_or(defaults.max_query_text),
            query_stats: host.setting("query_stats")?.unwrap_or(defaults.query_stats),
            database_size_interval: host
                .setting("database_size_interval")?
                .unwrap_or(defaults.database_size_interval),
        };
        // `top_tables = 0` still reports the database counters and totals; zero queries would
        // only be an empty item, so it is taken for a mistake.
        if settings.top_queries == 0 {
            return Err(Error::Invalid(
                "setting `top_queries`: must be at least 1 (set `query_stats = false` to skip \
                 pg_stat_statements)"
                    .into(),
            ));
        }
        Ok(settings)
    }
}

/// The time of one run: the timestamp of its items, and the same instant in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Now<'a> {
    pub timestamp: &'a str,
    pub unix_secs: u64,
}

/// Collects every item of one run, all stamped with `now`; database sizes measured in earlier
/// runs are taken from and recorded into `sizes`.
pub fn collect(
    host: &impl Host,
    settings: &Settings,
    now: Now<'_>,
    sizes: &mut Sizes,
) -> Result<Vec<Value>, Error> {
    let timestamp = now.timestamp;
    let databases = host.databases()?;
    sizes.keep_only(&databases);
    let Some(first) = databases.first() else {
        host.warn("no granted database exists: nothing to collect");
        return Ok(Vec::new());
    };
    let mut items = Vec::new();

    let server = match server_stats(host, first) {
        Ok(server) => {
            items.push(stamped("pg_server", timestamp, &server)?);
            Some(server)
        }
        Err(e) => {
            host.warn(&format!(
                "pg_server skipped this run (queried on database `{first}`): {}: {}",
                e.kind(),
                e.message()
            ));
            None
        }
    };
    let server_version_num = server.map(|s| s.server_version_num);

    let mut first_error = None;
    let mut succeeded = 0_usize;
    for database in &databases {
        match database_items(host, settings, server_version_num, database, now, sizes) {
            Ok(database_items) => {
                succeeded += 1;
                items.extend(database_items);
            }
            Err(e) => {
                host.warn(&format!(
                    "database `{database}` skipped this run: {}: {}",
                    e.kind(),
                    e.message()
                ));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if succeeded == 0 => Err(e),
        _ => Ok(items),
    }
}

fn server_stats(host: &impl Host, database: &str) -> Result<items::ServerStats, Error> {
    let info = host.query(database, sql::SERVER, &[])?;
    let info = items::server_info(&Table::new("server", &info))?;
    let checkpoints = host.query(database, sql::checkpoints(info.server_version_num), &[])?;
    let checkpoints = items::checkpoints(&Table::new("checkpoints", &checkpoints))?;
    let replication = host.query(database, sql::replication(info.in_recovery), &[])?;
    let replication = items::replication(&Table::new("replication", &replication))?;
    Ok(items::server_stats(info, checkpoints, replication))
}

/// The `pg_stats` item of `database` and, when pg_stat_statements answers there, its
/// `pg_query_stats` item. Only a `pg_stats` failure is an error: query statistics are optional.
fn database_items(
    host: &impl Host,
    settings: &Settings,
    server_version_num: Option<i64>,
    database: &str,
    now: Now<'_>,
    sizes: &mut Sizes,
) -> Result<Vec<Value>, Error> {
    let timestamp = now.timestamp;
    let what = |part: &str| format!("{part} of database `{database}`");

    let earlier = sizes
        .fresh(database, now.unix_secs, settings.database_size_interval)
        .cloned();
    let counters = host.query(
        database,
        sql::DATABASE,
        &[SqlValue::Boolean(earlier.is_none())],
    )?;
    let (mut counters, statements_version) =
        items::database_counters(&Table::new(&what("counters"), &counters))?;
    match (earlier, counters.size_bytes) {
        (Some(earlier), _) => {
            counters.size_bytes = Some(earlier.bytes);
            counters.size_at = Some(earlier.at);
        }
        (None, Some(bytes)) => {
            counters.size_at = Some(timestamp.to_owned());
            sizes.record(
                database,
                Measured {
                    bytes,
                    at: timestamp.to_owned(),
                    at_secs: now.unix_secs,
                },
            );
        }
        (None, None) => {}
    }
    let limit = |n: u32| [SqlValue::Int(i64::from(n))];
    let tables = host.query(database, sql::TABLES, &limit(settings.top_tables))?;
    let (tables, tables_total) = items::tables(
        &Table::new(&what("tables"), &tables),
        settings.top_tables as usize,
    )?;
    let indexes = host.query(database, sql::INDEXES, &limit(settings.top_indexes))?;
    let (indexes, indexes_total) = items::indexes(
        &Table::new(&what("indexes"), &indexes),
        settings.top_indexes as usize,
    )?;
    let stats = DatabaseStats {
        database: database.to_owned(),
        counters,
        tables_total,
        indexes_total,
        tables,
        indexes,
    };
    let mut out = vec![stamped("pg_stats", timestamp, &stats)?];

    // `None`: pg_stat_statements is not installed in this database, which is no error.
    if let (true, Some(version)) = (settings.query_stats, statements_version) {
        match query_stats(host, settings, server_version_num, database, &version) {
            Ok(stats) => out.push(stamped("pg_query_stats", timestamp, &stats)?),
            // Installed but unusable, typically "pg_stat_statements must be loaded via
            // shared_preload_libraries": the operator should know, the run goes on.
            Err(e) => host.warn(&format!(
                "pg_query_stats of database `{database}` skipped this run: {}: {}",
                e.kind(),
                e.message()
            )),
        }
    }
    Ok(out)
}

fn query_stats(
    host: &impl Host,
    settings: &Settings,
    server_version_num: Option<i64>,
    database: &str,
    extversion: &str,
) -> Result<items::QueryStats, Error> {
    let columns =
        sql::statement_columns(Some(extversion), server_version_num).ok_or_else(|| {
            Error::Invalid(format!(
                "pg_stat_statements version `{extversion}` does not parse and the server version \
             is unknown, so its column names are too"
            ))
        })?;
    let params = [
        SqlValue::Int(i64::from(settings.top_queries)),
        SqlValue::Int(i64::from(settings.max_query_text)),
    ];
    let rows = host.query(database, &sql::statements(&columns), &params)?;
    let what = format!("pg_stat_statements of database `{database}`");
    items::query_stats(
        database,
        &Table::new(&what, &rows),
        settings.max_query_text as usize,
    )
}

/// An item of type `kind` with the run's timestamp, so that the items of one run line up.
fn stamped(kind: &str, timestamp: &str, fields: &impl Serialize) -> Result<Value, Error> {
    #[derive(Serialize)]
    struct Stamped<'a, T> {
        timestamp: &'a str,
        #[serde(flatten)]
        fields: &'a T,
    }
    pganalytics_guest::item(kind, Stamped { timestamp, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, FakeHost, healthy};

    const TIMESTAMP: &str = "2026-11-27T10:00:00.000Z";

    fn run(host: &FakeHost) -> Result<Vec<Value>, Error> {
        let settings = Settings::load(host)?;
        let now = Now {
            timestamp: TIMESTAMP,
            unix_secs: 1_000_000,
        };
        collect(host, &settings, now, &mut Sizes::from_saved(None))
    }

    fn kinds(items: &[Value]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|item| {
                let database = item["database"].as_str().unwrap_or("-");
                (
                    item["type"].as_str().expect("type").to_owned(),
                    database.to_owned(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn params_of(host: &FakeHost, needle: &str) -> Vec<Vec<SqlValue>> {
        host.queries
            .borrow()
            .iter()
            .filter(|(_, sql, _)| sql.contains(needle))
            .map(|(_, _, params)| params.clone())
            .collect()
    }

    fn ints(params: &[SqlValue]) -> Vec<i64> {
        params
            .iter()
            .map(|p| match p {
                SqlValue::Int(v) => *v,
                _ => panic!("a non-int parameter"),
            })
            .collect()
    }

    #[test]
    fn a_healthy_run() {
        let host = FakeHost::new(&["postgres", "app"]);
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[
                ("pg_server", "-"),
                ("pg_stats", "postgres"),
                ("pg_query_stats", "postgres"),
                ("pg_stats", "app"),
                ("pg_query_stats", "app"),
            ])
        );
        assert!(items.iter().all(|item| item["timestamp"] == TIMESTAMP));
        assert!(host.warnings().is_empty(), "{:?}", host.warnings());
        // The server item is read from the first database only.
        let server_queries: Vec<_> = host
            .queries
            .borrow()
            .iter()
            .filter(|(_, sql, _)| sql == sql::SERVER)
            .map(|(db, _, _)| db.clone())
            .collect();
        assert_eq!(server_queries, ["postgres"]);
        // Defaults go to the server as the LIMITs and the text cap.
        assert_eq!(
            params_of(&host, sql::TABLES)
                .iter()
                .map(|p| ints(p))
                .collect::<Vec<_>>(),
            [[100], [100]]
        );
        let statements = params_of(&host, "FROM pg_stat_statements");
        assert_eq!(ints(&statements[0]), [100, 4096]);
        // PostgreSQL 15 with pg_stat_statements 1.10: execution-time columns, old block names.
        let sql = host
            .queries
            .borrow()
            .iter()
            .find(|(_, sql, _)| sql.contains("FROM pg_stat_statements"))
            .map(|(_, sql, _)| sql.clone())
            .expect("statements queried");
        assert!(sql.contains("sum(total_exec_time)"), "{sql}");
        assert!(sql.contains("sum(blk_read_time)"), "{sql}");
        assert_eq!(
            items[2]["queries"][0]["hash"],
            3_756_413_316_754_916_125_i64
        );
        assert_eq!(items[1]["tables_total"], 2);
        assert_eq!(items[1]["indexes_total"], 5);
        assert_eq!(items[1]["indexes"][1]["status"], "unused");
    }

    #[test]
    fn settings_reach_the_statements() {
        let host = FakeHost::new(&["app"])
            .with_setting("top_tables", "5")
            .with_setting("top_indexes", "7")
            .with_setting("top_queries", "3")
            .with_setting("max_query_text", "64");
        run(&host).expect("collects");
        assert_eq!(ints(&params_of(&host, sql::TABLES)[0]), [5]);
        assert_eq!(ints(&params_of(&host, sql::INDEXES)[0]), [7]);
        assert_eq!(
            ints(&params_of(&host, "FROM pg_stat_statements")[0]),
            [3, 64]
        );
    }

    #[test]
    fn settings_default_and_refuse_wrong_types() {
        assert_eq!(
            Settings::load(&FakeHost::new(&[])).expect("defaults"),
            Settings::default()
        );
        for (key, json) in [
            ("top_tables", "\"100\""),
            ("top_indexes", "-1"),
            ("max_query_text", "4.5"),
            ("query_stats", "\"yes\""),
            ("database_size_interval", "\"5m\""),
            ("database_size_interval", "-1"),
        ] {
            let host = FakeHost::new(&["app"]).with_setting(key, json);
            let err = Settings::load(&host).expect_err("wrong type");
            assert_eq!(err.kind(), "invalid");
            assert!(
                err.message().contains(&format!("`{key}`")),
                "{key}: {}",
                err.message()
            );
        }
        let host = FakeHost::new(&["app"]).with_setting("top_queries", "0");
        let err = run(&host).expect_err("zero queries");
        assert!(err.message().contains("`top_queries`"), "{}", err.message());
        assert!(host.queries.borrow().is_empty(), "nothing queried");
    }

    #[test]
    fn database_sizes_are_measured_once_per_interval_and_say_when() {
        /// Whether each DATABASE statement so far asked the server for the size.
        fn sized(host: &FakeHost) -> Vec<bool> {
            params_of(host, sql::DATABASE)
                .iter()
                .map(|p| match p.as_slice() {
                    [SqlValue::Boolean(b)] => *b,
                    _ => panic!("DATABASE takes one bool"),
                })
                .collect()
        }
        let host = FakeHost::new(&["app"]);
        let settings = Settings::load(&host).expect("defaults");
        assert_eq!(settings.database_size_interval, 300);
        let at = |timestamp: &'static str, unix_secs: u64, sizes: &mut Sizes| {
            let items = collect(
                &host,
                &settings,
                Now {
                    timestamp,
                    unix_secs,
                },
                sizes,
            )
            .expect("collects");
            let stats = items.iter().find(|i| i["type"] == "pg_stats").unwrap();
            (stats["size_bytes"].clone(), stats["size_at"].clone())
        };
        let mut sizes = Sizes::from_saved(None);
        assert_eq!(at("t1", 1000, &mut sizes), (9_362_791.into(), "t1".into()));
        assert!(sizes.changed(), "a new size is saved");
        let mut sizes = Sizes::from_saved(Some(sizes));
        assert_eq!(at("t2", 1299, &mut sizes), (9_362_791.into(), "t1".into()));
        assert!(!sizes.changed(), "nothing new to save");
        assert_eq!(at("t3", 1300, &mut sizes), (9_362_791.into(), "t3".into()));
        // A clock that went back measures again.
        assert_eq!(at("t0", 10, &mut sizes), (9_362_791.into(), "t0".into()));
        assert_eq!(sized(&host), [true, false, true, true]);

        // 0: every run.
        let host = FakeHost::new(&["app"]).with_setting("database_size_interval", "0");
        let settings = Settings::load(&host).expect("zero");
        let mut sizes = Sizes::from_saved(None);
        for unix_secs in [1000, 1001] {
            let now = Now {
                timestamp: "t",
                unix_secs,
            };
            collect(&host, &settings, now, &mut sizes).expect("collects");
        }
        assert_eq!(sized(&host), [true, true]);

        // A database the server could not size (null) has no `size_at` and is asked again.
        let host = FakeHost::new(&["app"]).answering(|db, sql, params| {
            let mut rows = healthy(db, sql, params)?;
            if sql == sql::DATABASE {
                rows.rows[0][0] = SqlValue::Null;
            }
            Ok(rows)
        });
        let mut sizes = Sizes::from_saved(None);
        let now = Now {
            timestamp: "t",
            unix_secs: 5,
        };
        let items = collect(&host, &settings, now, &mut sizes).expect("collects");
        assert!(items[1]["size_bytes"].is_null() && items[1]["size_at"].is_null());
        assert!(!sizes.changed());
    }

    #[test]
    fn query_stats_can_be_turned_off() {
        let host = FakeHost::new(&["app"]).with_setting("query_stats", "false");
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[("pg_server", "-"), ("pg_stats", "app")])
        );
        assert!(params_of(&host, "FROM pg_stat_statements").is_empty());
    }

    #[test]
    fn no_extension_no_query_stats_and_no_warning() {
        let host = FakeHost::new(&["postgres", "app"]).answering(|db, sql, params| {
            if sql == sql::DATABASE && db == "postgres" {
                Ok(fixtures::database(None))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[
                ("pg_server", "-"),
                ("pg_stats", "postgres"),
                ("pg_stats", "app"),
                ("pg_query_stats", "app"),
            ])
        );
        assert!(host.warnings().is_empty(), "{:?}", host.warnings());
        let statement_dbs: Vec<_> = host
            .queries
            .borrow()
            .iter()
            .filter(|(_, sql, _)| sql.contains("FROM pg_stat_statements"))
            .map(|(db, _, _)| db.clone())
            .collect();
        assert_eq!(statement_dbs, ["app"]);
    }

    #[test]
    fn an_unloaded_extension_is_a_warning() {
        let host = FakeHost::new(&["app"]).answering(|db, sql, params| {
            if sql.contains("FROM pg_stat_statements") {
                Err(Error::Io(
                    "database `app`: pg_stat_statements must be loaded via \
                     shared_preload_libraries"
                        .into(),
                ))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[("pg_server", "-"), ("pg_stats", "app")])
        );
        let warnings = host.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("pg_query_stats of database `app`"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("shared_preload_libraries"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_failing_database_costs_only_its_items() {
        let host = FakeHost::new(&["postgres", "app", "reporting"]).answering(|db, sql, params| {
            if db == "app" && sql == sql::INDEXES {
                Err(Error::Timeout("database `app`: statement timeout".into()))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[
                ("pg_server", "-"),
                ("pg_stats", "postgres"),
                ("pg_query_stats", "postgres"),
                ("pg_stats", "reporting"),
                ("pg_query_stats", "reporting"),
            ])
        );
        assert_eq!(
            host.warnings(),
            ["database `app` skipped this run: timeout: database `app`: statement timeout"]
        );
    }

    #[test]
    fn every_database_failing_fails_the_run_with_the_first_error() {
        let host = FakeHost::new(&["postgres", "app"]).answering(|db, _, _| {
            Err(Error::Unavailable(format!(
                "database `{db}`: connection refused"
            )))
        });
        let err = run(&host).expect_err("nothing answered");
        assert_eq!(err.kind(), "unavailable");
        assert_eq!(err.message(), "database `postgres`: connection refused");
        assert_eq!(host.warnings().len(), 3, "server + two databases");
    }

    #[test]
    fn a_failing_server_item_keeps_the_databases() {
        let host = FakeHost::new(&["postgres", "app"]).answering(|db, sql, params| {
            if sql.contains("pg_stat_replication") {
                Err(Error::Denied(
                    "function `pg_current_wal_lsn` is refused".into(),
                ))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(items.len(), 4);
        assert!(items.iter().all(|item| item["type"] != "pg_server"));
        let warnings = host.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("pg_server skipped this run (queried on database `postgres`)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn without_the_server_version_the_extension_version_decides() {
        let host = FakeHost::new(&["app"]).answering(|db, sql, params| {
            if sql == sql::SERVER {
                Err(Error::Timeout("database `app`: statement timeout".into()))
            } else if sql == sql::DATABASE {
                Ok(fixtures::database(Some("1.7")))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(
            kinds(&items),
            pairs(&[("pg_stats", "app"), ("pg_query_stats", "app")])
        );
        let queries = host.queries.borrow();
        let (_, sql, _) = queries
            .iter()
            .find(|(_, sql, _)| sql.contains("FROM pg_stat_statements"))
            .expect("statements queried");
        assert!(sql.contains("sum(total_time)"), "{sql}");
    }

    #[test]
    fn postgres_17_names() {
        let host = FakeHost::new(&["app"]).answering(|db, sql, params| {
            if sql == sql::SERVER {
                let mut rows = fixtures::server(false);
                rows.rows[0][1] = SqlValue::Int(170_002);
                Ok(rows)
            } else if sql == sql::checkpoints(170_002) {
                let mut rows = fixtures::checkpoints();
                rows.rows[0][3] = SqlValue::Null;
                Ok(rows)
            } else if sql == sql::DATABASE {
                Ok(fixtures::database(Some("1.11")))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert!(items[0]["bgwriter"]["buffers_backend"].is_null());
        let queries = host.queries.borrow();
        assert!(
            queries
                .iter()
                .any(|(_, sql, _)| sql.contains("pg_stat_checkpointer"))
        );
        let (_, sql, _) = queries
            .iter()
            .find(|(_, sql, _)| sql.contains("FROM pg_stat_statements"))
            .expect("statements queried");
        assert!(sql.contains("sum(shared_blk_read_time)"), "{sql}");
    }

    #[test]
    fn a_standby_skips_the_wal_position() {
        let host = FakeHost::new(&["app"]).answering(|db, sql, params| {
            if sql == sql::SERVER {
                Ok(fixtures::server(true))
            } else if sql == sql::replication(true) {
                Ok(fixtures::rows(&[], vec![]))
            } else {
                healthy(db, sql, params)
            }
        });
        let items = run(&host).expect("collects");
        assert_eq!(items[0]["type"], "pg_server");
        assert_eq!(items[0]["in_recovery"], true);
        assert_eq!(items[0]["replica_lag_seconds"], 2.5);
        assert_eq!(items[0]["replication"], Value::Array(Vec::new()));
    }

    #[test]
    fn no_database_is_an_empty_run() {
        let host = FakeHost::new(&[]);
        assert!(run(&host).expect("collects").is_empty());
        assert_eq!(
            host.warnings(),
            ["no granted database exists: nothing to collect"]
        );
    }

    #[test]
    fn a_denied_grant_fails_the_run() {
        let mut host = FakeHost::new(&[]);
        host.databases = Err(Error::Denied(
            "postgres is not granted to `pg_stats`".into(),
        ));
        let err = run(&host).expect_err("denied");
        assert_eq!(err.kind(), "denied");
    }
}
