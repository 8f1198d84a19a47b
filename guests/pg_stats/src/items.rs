//! From query results to the fields of the `pg_stats`, `pg_query_stats` and `pg_server` items.
//!
//! The field names of `pg_stats` and `pg_query_stats` are the backend contract (DESIGN.md,
//! "Backend contract"): rename nothing here without the backend. Fields beyond the contract
//! (`tables_total`, `indexes_total`, `size_at`, `queries_total`, `text_truncated`) are allowed
//! extras.
//! Counters the server reports as NULL stay `null`: a missing number is not a zero. This module
//! must never call the host.

use crate::rows::{Row, Table};
use pganalytics_guest::Error;
use serde::Serialize;

/// Database-wide counters of one `pg_stats` item (pg_database_size and pg_stat_database).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseCounters {
    pub size_bytes: Option<i64>,
    /// When `size_bytes` was measured (RFC 3339): the run's timestamp, or an earlier run's when
    /// the size is reused (see [`crate::sizes`]); null when there is no size.
    pub size_at: Option<String>,
    pub transactions_committed: Option<i64>,
    pub transactions_rolledback: Option<i64>,
    pub tuples_returned: Option<i64>,
    pub tuples_fetched: Option<i64>,
    pub tuples_inserted: Option<i64>,
    pub tuples_updated: Option<i64>,
    pub tuples_deleted: Option<i64>,
}

/// The database counters, and the installed pg_stat_statements version (`None` when the
/// extension is not installed in this database), from [`crate::sql::DATABASE`].
pub fn database_counters(table: &Table) -> Result<(DatabaseCounters, Option<String>), Error> {
    let row = table.single()?;
    let counters = DatabaseCounters {
        size_bytes: row.int("size_bytes")?,
        size_at: None,
        transactions_committed: row.int("transactions_committed")?,
        transactions_rolledback: row.int("transactions_rolledback")?,
        tuples_returned: row.int("tuples_returned")?,
        tuples_fetched: row.int("tuples_fetched")?,
        tuples_inserted: row.int("tuples_inserted")?,
        tuples_updated: row.int("tuples_updated")?,
        tuples_deleted: row.int("tuples_deleted")?,
    };
    Ok((counters, row.text("pg_stat_statements_version")?))
}

/// One user table (pg_stat_user_tables).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStats {
    pub schema: Option<String>,
    pub name: Option<String>,
    pub live_tuples: Option<i64>,
    pub dead_tuples: Option<i64>,
    pub modified_since_analyze: Option<i64>,
    /// `pg_total_relation_size`: the table's heap plus all its indexes and its TOAST table
    /// (and the TOAST index), i.e. everything dropping the table would free.
    pub size_bytes: Option<i64>,
    /// RFC 3339 timestamps; null when it never happened (since the statistics were reset).
    pub last_vacuum: Option<String>,
    pub last_autovacuum: Option<String>,
    pub last_analyze: Option<String>,
    pub last_autoanalyze: Option<String>,
    pub vacuum_count: Option<i64>,
    pub autovacuum_count: Option<i64>,
}

/// The first `keep` tables of [`crate::sql::TABLES`], largest first as the server ordered
/// them, and the number of user tables (0 when the statement returned no row, which it does
/// only when there is none).
pub fn tables(table: &Table, keep: usize) -> Result<(Vec<TableStats>, i64), Error> {
    let total = total(table, "tables_total")?;
    let tables = table
        .rows()
        .take(keep)
        .map(|row| table_stats(&row))
        .collect::<Result<_, _>>()?;
    Ok((tables, total))
}

/// The count every row of a ranking statement carries in `column`.
fn total(table: &Table, column: &str) -> Result<i64, Error> {
    match table.rows().next() {
        Some(row) => Ok(row.int(column)?.unwrap_or(0)),
        None => Ok(0),
    }
}

fn table_stats(row: &Row) -> Result<TableStats, Error> {
    Ok(TableStats {
        schema: row.text("schema")?,
        name: row.text("name")?,
        live_tuples: row.int("live_tuples")?,
        dead_tuples: row.int("dead_tuples")?,
        modified_since_analyze: row.int("modified_since_analyze")?,
        size_bytes: row.int("size_bytes")?,
        last_vacuum: row.text("last_vacuum")?,
        last_autovacuum: row.text("last_autovacuum")?,
        last_analyze: row.text("last_analyze")?,
        last_autoanalyze: row.text("last_autoanalyze")?,
        vacuum_count: row.int("vacuum_count")?,
        autovacuum_count: row.int("autovacuum_count")?,
    })
}

/// One user index (pg_stat_user_indexes joined with pg_index).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStats {
    pub schema: Option<String>,
    pub name: Option<String>,
    pub table: Option<String>,
    /// `idx_scan`: index scans started on this index.
    pub scans: Option<i64>,
    /// `idx_tup_read`: index entries returned by scans of this index.
    pub tuples_read: Option<i64>,
    /// `idx_tup_fetch`: live table rows fetched by simple index scans of this index.
    pub tuples_returned: Option<i64>,
    /// `pg_relation_size` of the index alone.
    pub size_bytes: Option<i64>,
    pub status: IndexStatus,
}

/// What an index is worth keeping, as the backend shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexStatus {
    /// `indisvalid` is false: a failed `CREATE INDEX CONCURRENTLY` (or one in progress); the
    /// planner ignores it but every write still maintains it.
    Invalid,
    /// Never scanned since the statistics were reset, and not enforcing uniqueness, so
    /// dropping it loses nothing but write cost.
    Unused,
    Active,
}

/// The status of an index. A unique or primary key index with no scans still does its job
/// (enforcing the constraint), so it is never `unused`; an unknown scan count is not zero.
pub fn index_status(valid: bool, unique: bool, primary: bool, scans: Option<i64>) -> IndexStatus {
    if !valid {
        IndexStatus::Invalid
    } else if scans == Some(0) && !unique && !primary {
        IndexStatus::Unused
    } else {
        IndexStatus::Active
    }
}

/// The first `keep` indexes of [`crate::sql::INDEXES`], largest first as the server ordered
/// them, and the number of user indexes.
pub fn indexes(table: &Table, keep: usize) -> Result<(Vec<IndexStats>, i64), Error> {
    let total = total(table, "indexes_total")?;
    let indexes = table
        .rows()
        .take(keep)
        .map(|row| index_stats(&row))
        .collect::<Result<_, _>>()?;
    Ok((indexes, total))
}

fn index_stats(row: &Row) -> Result<IndexStats, Error> {
    let scans = row.int("scans")?;
    // pg_index flags are NOT NULL in the catalog; reading a NULL as "valid, not unique" would
    // only ever make an index look more droppable than it is, so a NULL keeps it `active`.
    let valid = row.boolean("is_valid")?.unwrap_or(true);
    let unique = row.boolean("is_unique")?.unwrap_or(true);
    let primary = row.boolean("is_primary")?.unwrap_or(false);
    Ok(IndexStats {
        schema: row.text("schema")?,
        name: row.text("name")?,
        table: row.text("table")?,
        scans,
        tuples_read: row.int("tuples_read")?,
        tuples_returned: row.int("tuples_returned")?,
        size_bytes: row.int("size_bytes")?,
        status: index_status(valid, unique, primary, scans),
    })
}

/// The fields of one `pg_stats` item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseStats {
    pub database: String,
    #[serde(flatten)]
    pub counters: DatabaseCounters,
    /// All user tables of the database; `tables` holds only the largest `top_tables`.
    pub tables_total: i64,
    /// All user indexes of the database; `indexes` holds only the largest `top_indexes`.
    pub indexes_total: i64,
    pub tables: Vec<TableStats>,
    pub indexes: Vec<IndexStats>,
}

/// One normalised statement of pg_stat_statements, merged over users (see
/// [`crate::sql::statements`]). Times are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryStat {
    /// The queryid, a signed 64-bit hash, written as a JSON integer: exact on the wire (never
    /// through a float), and the `int64` the backend decodes `hash` into (a string there makes
    /// it drop the whole item).
    pub hash: i64,
    pub text: String,
    /// Present (and true) only when `text` was cut to `max_query_text` bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
    pub calls: Option<i64>,
    pub total_time: Option<f64>,
    pub mean_time: Option<f64>,
    pub min_time: Option<f64>,
    pub max_time: Option<f64>,
    pub stddev_time: Option<f64>,
    pub rows: Option<i64>,
    pub shared_blks_hit: Option<i64>,
    pub shared_blks_read: Option<i64>,
    pub shared_blks_dirtied: Option<i64>,
    pub shared_blks_written: Option<i64>,
    pub local_blks_hit: Option<i64>,
    pub local_blks_read: Option<i64>,
    pub local_blks_dirtied: Option<i64>,
    pub local_blks_written: Option<i64>,
    pub temp_blks_read: Option<i64>,
    pub temp_blks_written: Option<i64>,
    /// Time reading shared blocks (`shared_blk_read_time` from PostgreSQL 17); non-zero only
    /// with `track_io_timing` on.
    pub blk_read_time: Option<f64>,
    pub blk_write_time: Option<f64>,
}

/// The fields of one `pg_query_stats` item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryStats {
    pub database: String,
    pub queries: Vec<QueryStat>,
    /// All queries of the database in pg_stat_statements; `queries` holds only the top
    /// `top_queries` by total time.
    pub queries_total: i64,
}

/// The `pg_query_stats` fields of `database` from [`crate::sql::statements`], with each text
/// cut to `max_text_bytes`.
pub fn query_stats(
    database: &str,
    table: &Table,
    max_text_bytes: usize,
) -> Result<QueryStats, Error> {
    let mut queries_total = 0;
    let mut queries = Vec::with_capacity(table.len());
    for row in table.rows() {
        queries_total = row.int("queries_total")?.unwrap_or(0);
        queries.push(query_stat(&row, max_text_bytes)?);
    }
    Ok(QueryStats {
        database: database.to_owned(),
        queries,
        queries_total,
    })
}

fn query_stat(row: &Row, max_text_bytes: usize) -> Result<QueryStat, Error> {
    let hash = row
        .int("hash")?
        .ok_or_else(|| Error::Invalid("pg_stat_statements: a row has no queryid".into()))?;
    let text = row.text("text")?.unwrap_or_default();
    let (text, text_truncated) = cut_text(text, row.int("text_bytes")?, max_text_bytes);
    Ok(QueryStat {
        hash,
        text,
        text_truncated,
        calls: row.int("calls")?,
        total_time: row.millis("total_time")?,
        mean_time: row.millis("mean_time")?,
        min_time: row.millis("min_time")?,
        max_time: row.millis("max_time")?,
        stddev_time: row.millis("stddev_time")?,
        rows: row.int("rows")?,
        shared_blks_hit: row.int("shared_blks_hit")?,
        shared_blks_read: row.int("shared_blks_read")?,
        shared_blks_dirtied: row.int("shared_blks_dirtied")?,
        shared_blks_written: row.int("shared_blks_written")?,
        local_blks_hit: row.int("local_blks_hit")?,
        local_blks_read: row.int("local_blks_read")?,
        local_blks_dirtied: row.int("local_blks_dirtied")?,
        local_blks_written: row.int("local_blks_written")?,
        temp_blks_read: row.int("temp_blks_read")?,
        temp_blks_written: row.int("temp_blks_written")?,
        blk_read_time: row.millis("blk_read_time")?,
        blk_write_time: row.millis("blk_write_time")?,
    })
}

/// Cuts `text` to at most `max_bytes` bytes at a char boundary, and says whether the
/// statement's text was cut at all.
///
/// The server already shortened it to `max_bytes` characters (which may still be up to four
/// times as many bytes), so `full_bytes`, the length of the whole text on the server, is what
/// tells that a cut happened even when the received part fits.
pub fn cut_text(mut text: String, full_bytes: Option<i64>, max_bytes: usize) -> (String, bool) {
    let was_cut_on_server =
        full_bytes.is_some_and(|full| usize::try_from(full).map_or(true, |full| full > max_bytes));
    let cut_here = text.len() > max_bytes;
    if cut_here {
        let end = text.floor_char_boundary(max_bytes);
        text.truncate(end);
    }
    (text, was_cut_on_server || cut_here)
}

/// Client backends by state (pg_stat_activity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub active: i64,
    pub idle: i64,
    pub idle_in_transaction: i64,
    pub idle_in_transaction_aborted: i64,
    pub fastpath_function_call: i64,
    pub disabled: i64,
    /// Sessions whose state the monitoring role may not see (no `pg_read_all_stats`).
    pub unknown: i64,
    pub total: i64,
}

/// pg_stat_bgwriter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bgwriter {
    pub buffers_clean: Option<i64>,
    pub maxwritten_clean: Option<i64>,
    pub buffers_alloc: Option<i64>,
    /// Null from PostgreSQL 17, which moved backends' writes to pg_stat_io.
    pub buffers_backend: Option<i64>,
}

/// pg_stat_bgwriter before PostgreSQL 17, pg_stat_checkpointer from 17 (`num_timed`,
/// `num_requested`, `write_time`, `sync_time`, `buffers_written` under their old names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpointer {
    pub checkpoints_timed: Option<i64>,
    pub checkpoints_req: Option<i64>,
    /// Milliseconds.
    pub checkpoint_write_time: Option<f64>,
    /// Milliseconds.
    pub checkpoint_sync_time: Option<f64>,
    pub buffers_checkpoint: Option<i64>,
}

/// One standby streaming from this server (pg_stat_replication).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    pub application_name: Option<String>,
    /// The standby's IP address; null over a Unix socket.
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    /// Null when the standby has been idle (PostgreSQL clears the lags once it caught up).
    pub write_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
    pub replay_lag_seconds: Option<f64>,
    /// WAL bytes between this server's current position and the standby's replay position;
    /// null on a standby (cascading replication), where there is no current WAL position.
    pub replay_lag_bytes: Option<i64>,
}

/// The fields of the `pg_server` item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerStats {
    pub server_version: Option<String>,
    pub server_version_num: i64,
    pub in_recovery: bool,
    pub uptime_seconds: Option<f64>,
    pub max_connections: Option<i64>,
    pub connections: Connections,
    pub bgwriter: Bgwriter,
    pub checkpointer: Checkpointer,
    pub replication: Vec<Replica>,
    /// Seconds since the last replayed transaction committed on the primary; null on a
    /// primary and on a standby that replayed nothing yet. It grows while the primary is idle.
    pub replica_lag_seconds: Option<f64>,
}

/// The first half of [`ServerStats`], from [`crate::sql::SERVER`]: what the other server
/// statements depend on (the version, whether in recovery).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub server_version: Option<String>,
    pub server_version_num: i64,
    pub in_recovery: bool,
    pub uptime_seconds: Option<f64>,
    pub max_connections: Option<i64>,
    pub replica_lag_seconds: Option<f64>,
    pub connections: Connections,
}

pub fn server_info(table: &Table) -> Result<ServerInfo, Error> {
    let row = table.single()?;
    let required = |column: &str, value: Option<i64>| {
        value.ok_or_else(|| Error::Invalid(format!("server: `{column}` is null")))
    };
    let count = |column: &str| -> Result<i64, Error> { required(column, row.int(column)?) };
    Ok(ServerInfo {
        server_version: row.text("server_version")?,
        server_version_num: count("server_version_num")?,
        in_recovery: row
            .boolean("in_recovery")?
            .ok_or_else(|| Error::Invalid("server: `in_recovery` is null".into()))?,
        uptime_seconds: row.float("uptime_seconds")?,
        max_connections: row.int("max_connections")?,
        replica_lag_seconds: row.float("replica_lag_seconds")?,
        connections: Connections {
            active: count("active")?,
            idle: count("idle")?,
            idle_in_transaction: count("idle_in_transaction")?,
            idle_in_transaction_aborted: count("idle_in_transaction_aborted")?,
            fastpath_function_call: count("fastpath_function_call")?,
            disabled: count("disabled")?,
            unknown: count("unknown")?,
            total: count("total")?,
        },
    })
}

/// The background writer and checkpointer counters of [`crate::sql::checkpoints`].
pub fn checkpoints(table: &Table) -> Result<(Bgwriter, Checkpointer), Error> {
    let row = table.single()?;
    Ok((
        Bgwriter {
            buffers_clean: row.int("buffers_clean")?,
            maxwritten_clean: row.int("maxwritten_clean")?,
            buffers_alloc: row.int("buffers_alloc")?,
            buffers_backend: row.int("buffers_backend")?,
        },
        Checkpointer {
            checkpoints_timed: row.int("checkpoints_timed")?,
            checkpoints_req: row.int("checkpoints_req")?,
            checkpoint_write_time: row.millis("checkpoint_write_time")?,
            checkpoint_sync_time: row.millis("checkpoint_sync_time")?,
            buffers_checkpoint: row.int("buffers_checkpoint")?,
        },
    ))
}

/// The standbys of [`crate::sql::replication`].
pub fn replication(table: &Table) -> Result<Vec<Replica>, Error> {
    table
        .rows()
        .map(|row| {
            Ok(Replica {
                application_name: row.text("application_name")?,
                client_addr: row.text("client_addr")?,
                state: row.text("state")?,
                sync_state: row.text("sync_state")?,
                write_lag_seconds: row.float("write_lag_seconds")?,
                flush_lag_seconds: row.float("flush_lag_seconds")?,
                replay_lag_seconds: row.float("replay_lag_seconds")?,
                replay_lag_bytes: row.int("replay_lag_bytes")?,
            })
        })
        .collect()
}

/// Puts the three server statements' results together.
pub fn server_stats(
    info: ServerInfo,
    (bgwriter, checkpointer): (Bgwriter, Checkpointer),
    replication: Vec<Replica>,
) -> ServerStats {
    ServerStats {
        server_version: info.server_version,
        server_version_num: info.server_version_num,
        in_recovery: info.in_recovery,
        uptime_seconds: info.uptime_seconds,
        max_connections: info.max_connections,
        connections: info.connections,
        bgwriter,
        checkpointer,
        replication,
        replica_lag_seconds: info.replica_lag_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, boolean, int, null, rows, text};
    use pganalytics_guest::{ErrorExt, Value, serde_json};
    use std::collections::BTreeSet;

    fn keys(value: &Value) -> BTreeSet<&str> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn database_counters_and_the_statements_version() {
        let rows = fixtures::database(Some("1.10"));
        let (counters, version) = database_counters(&Table::new("counters", &rows)).expect("maps");
        assert_eq!(version.as_deref(), Some("1.10"));
        assert_eq!(counters.size_bytes, Some(9_362_791));
        assert_eq!(counters.transactions_committed, Some(27));
        assert_eq!(counters.tuples_deleted, Some(142));

        let rows = fixtures::database(None);
        let (_, version) = database_counters(&Table::new("counters", &rows)).expect("maps");
        assert_eq!(version, None, "no extension, no version");
    }

    /// The `pg_stats` item carries exactly the contract's names plus the two totals.
    #[test]
    fn pg_stats_field_names_are_the_contract() {
        let (db, tbl, idx) = (
            fixtures::database(None),
            fixtures::tables(),
            fixtures::indexes(),
        );
        let (tables, tables_total) = tables(&Table::new("t", &tbl), 100).expect("maps");
        let (indexes, indexes_total) = indexes(&Table::new("i", &idx), 100).expect("maps");
        let stats = DatabaseStats {
            database: "app".into(),
            counters: database_counters(&Table::new("c", &db)).expect("maps").0,
            tables_total,
            indexes_total,
            tables,
            indexes,
        };
        let json = serde_json::to_value(&stats).expect("serialises");
        let expected: BTreeSet<&str> = [
            "database",
            "size_bytes",
            "transactions_committed",
            "transactions_rolledback",
            "tuples_returned",
            "tuples_fetched",
            "tuples_inserted",
            "tuples_updated",
            "tuples_deleted",
            "tables",
            "indexes",
            "tables_total",
            "indexes_total",
            // Extra: when `size_bytes` was measured.
            "size_at",
        ]
        .into();
        assert_eq!(keys(&json), expected);
        let table: BTreeSet<&str> = [
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
        ]
        .into();
        assert_eq!(keys(&json["tables"][0]), table);
        let index: BTreeSet<&str> = [
            "schema",
            "name",
            "table",
            "scans",
            "tuples_read",
            "tuples_returned",
            "size_bytes",
            "status",
        ]
        .into();
        assert_eq!(keys(&json["indexes"][0]), index);
    }

    #[test]
    fn tables_keep_server_order_and_nulls() {
        let rows = fixtures::tables();
        let (tables, total) = tables(&Table::new("tables", &rows), 100).expect("maps");
        assert_eq!(total, 2);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].name.as_deref(), Some("t1"));
        assert_eq!(tables[0].size_bytes, Some(1_671_168));
        assert_eq!(tables[0].last_vacuum, None);
        assert_eq!(
            tables[0].last_autovacuum.as_deref(),
            Some("2026-11-27T00:28:46.604254Z")
        );
        assert_eq!(tables[1].dead_tuples, Some(1));
        assert_eq!(tables[1].modified_since_analyze, Some(3));
        let json = serde_json::to_value(&tables[1]).expect("serialises");
        assert!(json["last_analyze"].is_null(), "{json}");
    }

    #[test]
    fn index_status_rules() {
        use IndexStatus::*;
        // (valid, unique, primary, scans) → status
        let cases = [
            ((false, false, false, Some(100)), Invalid),
            ((false, true, true, Some(0)), Invalid),
            ((true, false, false, Some(0)), Unused),
            ((true, true, false, Some(0)), Active),
            ((true, true, true, Some(0)), Active),
            ((true, false, true, Some(0)), Active),
            ((true, false, false, Some(1)), Active),
            ((true, false, false, None), Active),
        ];
        for ((valid, unique, primary, scans), expected) in cases {
            assert_eq!(
                index_status(valid, unique, primary, scans),
                expected,
                "valid={valid} unique={unique} primary={primary} scans={scans:?}"
            );
        }
        let json = serde_json::to_value(Unused).expect("serialises");
        assert_eq!(json, "unused");
    }

    #[test]
    fn indexes_map_idx_columns_and_status() {
        let rows = fixtures::indexes();
        let (indexes, total) = indexes(&Table::new("indexes", &rows), 100).expect("maps");
        assert_eq!(total, 5);
        let statuses: Vec<_> = indexes
            .iter()
            .map(|i| (i.name.as_deref().unwrap_or(""), i.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("t1_vu", IndexStatus::Active),
                ("t1_v", IndexStatus::Unused),
                ("t1_pkey", IndexStatus::Active),
                ("t1_v_idx", IndexStatus::Active),
                ("t1_broken", IndexStatus::Invalid),
            ]
        );
        assert_eq!(indexes[3].table.as_deref(), Some("t1"));
        assert_eq!(indexes[3].scans, Some(4));
        assert_eq!(indexes[3].tuples_read, Some(12), "idx_tup_read");
        assert_eq!(indexes[3].tuples_returned, Some(8), "idx_tup_fetch");
    }

    #[test]
    fn a_null_index_flag_never_makes_an_index_look_unused() {
        let rows = rows(
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
            vec![vec![
                text("s"),
                text("i"),
                text("t"),
                int(0),
                int(0),
                int(0),
                int(8192),
                null(),
                null(),
                boolean(false),
                int(1),
            ]],
        );
        let (indexes, _) = indexes(&Table::new("indexes", &rows), 100).expect("maps");
        assert_eq!(indexes[0].status, IndexStatus::Active);
    }

    #[test]
    fn cut_text_at_a_char_boundary() {
        // Fits: nothing happens.
        assert_eq!(
            cut_text("select 1".into(), Some(8), 8),
            ("select 1".into(), false)
        );
        assert_eq!(
            cut_text("select 1".into(), Some(8), 4096),
            ("select 1".into(), false)
        );
        // Cut in the collector.
        assert_eq!(
            cut_text("select 1".into(), Some(8), 6),
            ("select".into(), true)
        );
        // `é` is bytes 1..3: a cut at 2 must not split it.
        assert_eq!(cut_text("héllo".into(), Some(6), 2), ("h".into(), true));
        assert_eq!(cut_text("héllo".into(), Some(6), 3), ("hé".into(), true));
        // `€` is three bytes; the server sent 4 characters (12 bytes) for a cap of 4 bytes.
        assert_eq!(cut_text("€€€€".into(), Some(30), 4), ("€".into(), true));
        // The server already cut it to exactly the cap: only `full_bytes` tells.
        assert_eq!(cut_text("abcd".into(), Some(10), 4), ("abcd".into(), true));
        // Zero keeps nothing.
        assert_eq!(cut_text("abc".into(), Some(3), 0), (String::new(), true));
        // No length from the server: judge by what arrived.
        assert_eq!(cut_text("abc".into(), None, 3), ("abc".into(), false));
    }

    #[test]
    fn query_stats_flags_truncation_only_when_cut() {
        let rows = fixtures::statements(&[
            (3_756_413_316_754_916_125, "select $1", 9, 57.1),
            (
                -1_739_183_385_080_879_393,
                "select * from a_long_table_name",
                5000,
                11.6,
            ),
        ]);
        let stats = query_stats("app", &Table::new("pss", &rows), 20).expect("maps");
        assert_eq!(stats.database, "app");
        assert_eq!(stats.queries_total, 12);
        assert_eq!(stats.queries[0].hash, 3_756_413_316_754_916_125);
        assert!(!stats.queries[0].text_truncated);
        assert_eq!(stats.queries[1].text, "select * from a_long");
        assert!(stats.queries[1].text_truncated);

        let json = serde_json::to_value(&stats).expect("serialises");
        assert!(json["queries"][0].get("text_truncated").is_none(), "{json}");
        assert_eq!(json["queries"][1]["text_truncated"], true);
        assert_eq!(json["queries"][1]["hash"], -1_739_183_385_080_879_393_i64);
        let expected: BTreeSet<&str> = [
            "hash",
            "text",
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
        ]
        .into();
        assert_eq!(keys(&json["queries"][0]), expected);
        assert_eq!(json["queries"][0]["total_time"], 57.1);
        assert_eq!(json["queries"][0]["blk_read_time"], 0.5);
    }

    /// The backend decodes `hash` into an `int64`: it must be a JSON integer, written with all
    /// its digits (a float would round a 64-bit queryid; a string drops the whole item there).
    #[test]
    fn hash_is_an_exact_json_integer() {
        let ids = [
            i64::MIN,
            i64::MAX,
            -1,
            0,
            9_007_199_254_740_993, // 2^53 + 1: the first integer a float64 cannot hold
            3_756_413_316_754_916_125,
        ];
        let queries: Vec<_> = ids.iter().map(|&id| (id, "select 1", 8, 1.0)).collect();
        let rows = fixtures::statements(&queries);
        let stats = query_stats("app", &Table::new("pss", &rows), 4096).expect("maps");
        let text = serde_json::to_string(&stats).expect("serialises");
        for id in ids {
            assert!(text.contains(&format!("\"hash\":{id},")), "{id} in {text}");
        }
        let json: Value = serde_json::from_str(&text).expect("parses");
        for (query, id) in json["queries"].as_array().expect("queries").iter().zip(ids) {
            assert_eq!(query["hash"].as_i64(), Some(id));
        }
    }

    /// Every `int64` field of the backend's `QueryInfo` is a JSON integer or null, and every
    /// `float64` one a number or null: never a string.
    #[test]
    fn query_fields_have_the_backends_go_types() {
        let rows = fixtures::statements(&[(42, "select 1", 8, 1.0)]);
        let stats = query_stats("app", &Table::new("pss", &rows), 4096).expect("maps");
        let json = serde_json::to_value(&stats).expect("serialises");
        let query = &json["queries"][0];
        for field in [
            "hash",
            "calls",
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
        ] {
            assert!(query[field].is_i64(), "{field}: {}", query[field]);
        }
        for field in [
            "total_time",
            "mean_time",
            "min_time",
            "max_time",
            "stddev_time",
            "blk_read_time",
            "blk_write_time",
        ] {
            assert!(query[field].is_f64(), "{field}: {}", query[field]);
        }
        assert!(query["text"].is_string());
        assert!(json["database"].is_string());
    }

    #[test]
    fn ranked_lists_keep_the_top_n_and_the_total() {
        let rows = fixtures::tables();
        let (kept, total) = tables(&Table::new("tables", &rows), 1).expect("maps");
        assert_eq!(total, 2);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name.as_deref(), Some("t1"));
        // `top_tables = 0`: the statement still returns one row, for the total.
        let (kept, total) = tables(&Table::new("tables", &rows), 0).expect("maps");
        assert!(kept.is_empty());
        assert_eq!(total, 2);
        // No user table at all: no row.
        let mut none = fixtures::indexes();
        none.rows.clear();
        let (kept, total) = indexes(&Table::new("indexes", &none), 10).expect("maps");
        assert!(kept.is_empty());
        assert_eq!(total, 0);
    }

    #[test]
    fn query_stats_of_an_empty_view() {
        let rows = fixtures::statements(&[]);
        let stats = query_stats("app", &Table::new("pss", &rows), 4096).expect("maps");
        assert!(stats.queries.is_empty());
        assert_eq!(stats.queries_total, 0);
    }

    #[test]
    fn a_statement_without_queryid_is_refused() {
        let mut rows = fixtures::statements(&[(1, "select 1", 8, 1.0)]);
        rows.rows[0][0] = null();
        let err = query_stats("app", &Table::new("pss", &rows), 4096).expect_err("no hash");
        assert_eq!(err.kind(), "invalid");
    }

    #[test]
    fn server_stats_shape() {
        let (info, ck, repl) = (
            fixtures::server(false),
            fixtures::checkpoints(),
            fixtures::replication(),
        );
        let info = server_info(&Table::new("server", &info)).expect("maps");
        assert_eq!(info.server_version_num, 150_018);
        assert!(!info.in_recovery);
        let server = server_stats(
            info,
            checkpoints(&Table::new("checkpoints", &ck)).expect("maps"),
            replication(&Table::new("replication", &repl)).expect("maps"),
        );
        let json = serde_json::to_value(&server).expect("serialises");
        assert_eq!(json["server_version"], "15.18 (Debian 15.18-0+deb12u1)");
        assert_eq!(json["max_connections"], 100);
        assert!(json["replica_lag_seconds"].is_null());
        assert_eq!(
            json["connections"],
            serde_json::json!({
                "active": 1, "idle": 3, "idle_in_transaction": 1,
                "idle_in_transaction_aborted": 0, "fastpath_function_call": 0,
                "disabled": 0, "unknown": 0, "total": 5
            })
        );
        assert_eq!(
            json["bgwriter"],
            serde_json::json!({
                "buffers_clean": 0, "maxwritten_clean": 0, "buffers_alloc": 3014,
                "buffers_backend": 12
            })
        );
        assert_eq!(
            json["checkpointer"],
            serde_json::json!({
                "checkpoints_timed": 7, "checkpoints_req": 1, "checkpoint_write_time": 1503.0,
                "checkpoint_sync_time": 4.25, "buffers_checkpoint": 420
            })
        );
        assert_eq!(
            json["replication"],
            serde_json::json!([{
                "application_name": "walreceiver", "client_addr": "10.0.0.7",
                "state": "streaming", "sync_state": "async", "write_lag_seconds": 0.0012,
                "flush_lag_seconds": 0.0025, "replay_lag_seconds": null, "replay_lag_bytes": 8192
            }])
        );
    }

    #[test]
    fn a_standby_reports_its_replay_lag() {
        let rows = fixtures::server(true);
        let info = server_info(&Table::new("server", &rows)).expect("maps");
        assert!(info.in_recovery);
        assert_eq!(info.replica_lag_seconds, Some(2.5));
    }

    #[test]
    fn server_info_needs_the_version() {
        let mut rows = fixtures::server(false);
        rows.rows[0][1] = null();
        let err = server_info(&Table::new("server", &rows)).expect_err("no version");
        assert_eq!(err.message(), "server: `server_version_num` is null");
    }
}
