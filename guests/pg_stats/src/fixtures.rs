//! Canned query results shaped like PostgreSQL 15's answers to the statements of
//! [`crate::sql`], and a fake [`Host`] that serves them, for the native tests.

use crate::run::Host;
use crate::sql;
use pganalytics_guest::Error;
use pganalytics_guest::postgres::{Rows, Value};
use pganalytics_guest::serde_json;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::HashMap;

pub fn rows(columns: &[&str], rows: Vec<Vec<Value>>) -> Rows {
    for row in &rows {
        assert_eq!(row.len(), columns.len(), "fixture row width");
    }
    Rows {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
    }
}

pub fn int(v: i64) -> Value {
    Value::Int(v)
}

pub fn float(v: f64) -> Value {
    Value::Float(v)
}

pub fn text(v: &str) -> Value {
    Value::Text(v.to_owned())
}

pub fn boolean(v: bool) -> Value {
    Value::Boolean(v)
}

pub fn null() -> Value {
    Value::Null
}

pub fn server(in_recovery: bool) -> Rows {
    rows(
        &[
            "server_version",
            "server_version_num",
            "in_recovery",
            "uptime_seconds",
            "max_connections",
            "replica_lag_seconds",
            "active",
            "idle",
            "idle_in_transaction",
            "idle_in_transaction_aborted",
            "fastpath_function_call",
            "disabled",
            "unknown",
            "total",
        ],
        vec![vec![
            text("15.18 (Debian 15.18-0+deb12u1)"),
            int(150_018),
            boolean(in_recovery),
            float(120.578263),
            int(100),
            if in_recovery { float(2.5) } else { null() },
            int(1),
            int(3),
            int(1),
            int(0),
            int(0),
            int(0),
            int(0),
            int(5),
        ]],
    )
}

pub fn checkpoints() -> Rows {
    rows(
        &[
            "buffers_clean",
            "maxwritten_clean",
            "buffers_alloc",
            "buffers_backend",
            "checkpoints_timed",
            "checkpoints_req",
            "checkpoint_write_time",
            "checkpoint_sync_time",
            "buffers_checkpoint",
        ],
        vec![vec![
            int(0),
            int(0),
            int(3014),
            int(12),
            int(7),
            int(1),
            float(1503.0),
            float(4.25),
            int(420),
        ]],
    )
}

pub fn replication() -> Rows {
    rows(
        &[
            "application_name",
            "client_addr",
            "state",
            "sync_state",
            "write_lag_seconds",
            "flush_lag_seconds",
            "replay_lag_seconds",
            "replay_lag_bytes",
        ],
        vec![vec![
            text("walreceiver"),
            text("10.0.0.7"),
            text("streaming"),
            text("async"),
            float(0.0012),
            float(0.0025),
            null(),
            int(8192),
        ]],
    )
}

pub fn database(statements_version: Option<&str>) -> Rows {
    rows(
        &[
            "size_bytes",
            "transactions_committed",
            "transactions_rolledback",
            "tuples_returned",
            "tuples_fetched",
            "tuples_inserted",
            "tuples_updated",
            "tuples_deleted",
            "pg_stat_statements_version",
        ],
        vec![vec![
            int(9_362_791),
            int(27),
            int(0),
            int(24_697),
            int(3646),
            int(10_289),
            int(25),
            int(142),
            statements_version.map_or(null(), text),
        ]],
    )
}

pub fn tables() -> Rows {
    rows(
        &[
            "schema",
            "name",
            "live_tuples",
            "dead_tuples",
            "modified_since_analyze",
            "size_bytes",
            "last_vacuum",
            "last_autovacuum",
            "last_analyze",
            "last_autoanalyze",
            "vacuum_count",
            "autovacuum_count",
            "tables_total",
        ],
        vec![
            vec![
                text("public"),
                text("t1"),
                int(10_000),
                int(0),
                int(0),
                int(1_671_168),
                null(),
                text("2026-11-27T00:28:46.604254Z"),
                text("2026-11-27T00:27:29.677646Z"),
                text("2026-11-27T00:28:46.61872Z"),
                int(0),
                int(1),
                int(2),
            ],
            vec![
                text("public"),
                text("t2"),
                int(1),
                int(1),
                int(3),
                int(8192),
                null(),
                null(),
                null(),
                null(),
                int(0),
                int(0),
                int(2),
            ],
        ],
    )
}

pub fn indexes() -> Rows {
    let index = |name: &str, scans: i64, valid: bool, unique: bool, primary: bool| {
        vec![
            text("public"),
            text(name),
            text("t1"),
            int(scans),
            int(scans * 3),
            int(scans * 2),
            int(245_760),
            boolean(valid),
            boolean(unique),
            boolean(primary),
            int(5),
        ]
    };
    rows(
        &[
            "schema",
            "name",
            "table",
            "scans",
            "tuples_read",
            "tuples_returned",
            "size_bytes",
            "is_valid",
            "is_unique",
            "is_primary",
            "indexes_total",
        ],
        vec![
            index("t1_vu", 0, true, true, false),
            index("t1_v", 0, true, false, false),
            index("t1_pkey", 0, true, true, true),
            index("t1_v_idx", 4, true, false, false),
            index("t1_broken", 9, false, false, false),
        ],
    )
}

/// pg_stat_statements rows: `(queryid, text, whole text's bytes, total_time)`.
pub fn statements(queries: &[(i64, &str, i64, f64)]) -> Rows {
    let columns = [
        "hash",
        "text",
        "text_bytes",
        "calls",
        "total_time",
        "mean_time",
        "min_time",
        "max_time",
        "stddev_time",
        "rows",
        "shared_blks_hit",
        "shared_blks_read",
        "shared_blks_dirtied",
        "shared_blks_written",
        "local_blks_hit",
        "local_blks_read",
        "local_blks_dirtied",
        "local_blks_written",
        "temp_blks_read",
        "temp_blks_written",
        "blk_read_time",
        "blk_write_time",
        "queries_total",
    ];
    let total = queries.len() as i64 + 10;
    let rows_ = queries
        .iter()
        .map(|&(hash, query, bytes, total_time)| {
            let mut row = vec![
                int(hash),
                text(query),
                int(bytes),
                int(3),
                float(total_time),
                float(total_time / 3.0),
                float(10.12),
                float(50.15),
                float(16.34),
                int(3),
            ];
            row.extend((0..10).map(int));
            row.extend([float(0.5), float(0.25), int(total)]);
            row
        })
        .collect();
    rows(&columns, rows_)
}

/// Answers `(database, sql, params)`.
type Answer = Box<dyn Fn(&str, &str, &[Value]) -> Result<Rows, Error>>;

/// Answers every statement like a healthy PostgreSQL 15 primary with pg_stat_statements 1.10
/// installed in every database.
pub fn healthy(_database: &str, statement: &str, params: &[Value]) -> Result<Rows, Error> {
    if statement == sql::SERVER {
        Ok(server(false))
    } else if statement == sql::checkpoints(150_018) {
        Ok(checkpoints())
    } else if statement == sql::replication(false) {
        Ok(replication())
    } else if statement == sql::DATABASE {
        let mut rows = database(Some("1.10"));
        // `$1` false: the database is not sized, as the server answers.
        if matches!(params, [Value::Boolean(false)]) {
            rows.rows[0][0] = null();
        }
        Ok(rows)
    } else if statement == sql::TABLES {
        Ok(tables())
    } else if statement == sql::INDEXES {
        Ok(indexes())
    } else if statement.contains("FROM pg_stat_statements") {
        Ok(statements(&[
            (3_756_413_316_754_916_125, "select $1", 9, 57.1),
            (-1_739_183_385_080_879_393, "analyze t1", 10, 11.6),
        ]))
    } else {
        panic!("unexpected statement: {statement}")
    }
}

/// A [`Host`] serving canned answers and recording what the run did.
pub struct FakeHost {
    pub databases: Result<Vec<String>, Error>,
    pub answer: Answer,
    pub settings: HashMap<String, String>,
    pub warnings: RefCell<Vec<String>>,
    pub queries: RefCell<Vec<(String, String, Vec<Value>)>>,
}

impl FakeHost {
    pub fn new(databases: &[&str]) -> Self {
        FakeHost {
            databases: Ok(databases.iter().map(|d| (*d).to_owned()).collect()),
            answer: Box::new(healthy),
            settings: HashMap::new(),
            warnings: RefCell::new(Vec::new()),
            queries: RefCell::new(Vec::new()),
        }
    }

    pub fn answering(
        mut self,
        answer: impl Fn(&str, &str, &[Value]) -> Result<Rows, Error> + 'static,
    ) -> Self {
        self.answer = Box::new(answer);
        self
    }

    pub fn with_setting(mut self, key: &str, json: &str) -> Self {
        self.settings.insert(key.to_owned(), json.to_owned());
        self
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
}

impl Host for FakeHost {
    fn databases(&self) -> Result<Vec<String>, Error> {
        self.databases.clone()
    }

    fn query(&self, database: &str, statement: &str, params: &[Value]) -> Result<Rows, Error> {
        self.queries.borrow_mut().push((
            database.to_owned(),
            statement.to_owned(),
            params.to_vec(),
        ));
        (self.answer)(database, statement, params)
    }

    /// Decodes like the SDK's `setting`, with the same message shape.
    fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let Some(json) = self.settings.get(key) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("setting `{key}`: {e}")))
    }

    fn warn(&self, message: &str) {
        self.warnings.borrow_mut().push(message.to_owned());
    }
}
