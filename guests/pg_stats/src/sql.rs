//! The SQL text of every statement the collector runs, and the choice between server versions.
//!
//! Each statement is one plain `SELECT` (the host refuses anything else) and casts every column
//! explicitly (`::bigint`, `::float8`, `::text`, `::bool`, `::timestamptz`), because the host
//! maps only those types to WIT values and fails a query with any other column type. Integer
//! parameters are always declared `$n::bigint`, so the host binds every `int` as `int8`.
//!
//! Only catalogs, catalog views and read-only functions appear here (`current_setting`,
//! `pg_database_size`, `pg_total_relation_size`, `pg_relation_size`, the `pg_stat_get_*`
//! counters the statistics views are made of, `pg_is_in_recovery`,
//! `pg_postmaster_start_time`, `pg_last_xact_replay_timestamp`, `pg_current_wal_lsn`,
//! `pg_wal_lsn_diff`, `host`); this module must never name a function that acts on the server
//! or on other sessions. The statements need PostgreSQL 10 or later (`backend_type`, the `wal`
//! function names).

/// PostgreSQL 13: pg_stat_statements 1.8 splits planning from execution and renames
/// `total_time` and friends to `total_exec_time` and friends.
const PG13: i64 = 130_000;

/// PostgreSQL 17: checkpoint counters move from pg_stat_bgwriter to pg_stat_checkpointer, and
/// pg_stat_statements 1.11 renames `blk_read_time`/`blk_write_time` to `shared_blk_*_time`.
const PG17: i64 = 170_000;

/// Server-wide facts and client connections by state, one row; run on one database per run.
///
/// `replica_lag_seconds` is null on a primary, and on a standby that has replayed nothing yet.
/// `unknown` counts client backends whose state the monitoring role may not see (without
/// `pg_read_all_stats`, PostgreSQL shows other roles' sessions with a null state).
pub const SERVER: &str = "\
SELECT current_setting('server_version')::text AS server_version, \
current_setting('server_version_num')::bigint AS server_version_num, \
pg_is_in_recovery()::bool AS in_recovery, \
EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8 AS uptime_seconds, \
current_setting('max_connections')::bigint AS max_connections, \
CASE WHEN pg_is_in_recovery() \
THEN EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 \
END AS replica_lag_seconds, \
c.active, c.idle, c.idle_in_transaction, c.idle_in_transaction_aborted, \
c.fastpath_function_call, c.disabled, c.unknown, c.total \
FROM (SELECT \
count(*) FILTER (WHERE state = 'active')::bigint AS active, \
count(*) FILTER (WHERE state = 'idle')::bigint AS idle, \
count(*) FILTER (WHERE state = 'idle in transaction')::bigint AS idle_in_transaction, \
count(*) FILTER (WHERE state = 'idle in transaction (aborted)')::bigint \
AS idle_in_transaction_aborted, \
count(*) FILTER (WHERE state = 'fastpath function call')::bigint AS fastpath_function_call, \
count(*) FILTER (WHERE state = 'disabled')::bigint AS disabled, \
count(*) FILTER (WHERE state IS NULL)::bigint AS unknown, \
count(*)::bigint AS total \
FROM pg_stat_activity WHERE backend_type = 'client backend') c";

/// Background writer and checkpointer counters, one row, under the column names of
/// pg_stat_bgwriter before PostgreSQL 17 whatever the server calls them.
pub fn checkpoints(server_version_num: i64) -> &'static str {
    if server_version_num >= PG17 {
        // `buffers_backend` is gone in 17 (backends' writes are in pg_stat_io).
        "SELECT b.buffers_clean::bigint AS buffers_clean, \
b.maxwritten_clean::bigint AS maxwritten_clean, \
b.buffers_alloc::bigint AS buffers_alloc, \
NULL::bigint AS buffers_backend, \
c.num_timed::bigint AS checkpoints_timed, \
c.num_requested::bigint AS checkpoints_req, \
c.write_time::float8 AS checkpoint_write_time, \
c.sync_time::float8 AS checkpoint_sync_time, \
c.buffers_written::bigint AS buffers_checkpoint \
FROM pg_stat_bgwriter b CROSS JOIN pg_stat_checkpointer c"
    } else {
        "SELECT buffers_clean::bigint AS buffers_clean, \
maxwritten_clean::bigint AS maxwritten_clean, \
buffers_alloc::bigint AS buffers_alloc, \
buffers_backend::bigint AS buffers_backend, \
checkpoints_timed::bigint AS checkpoints_timed, \
checkpoints_req::bigint AS checkpoints_req, \
checkpoint_write_time::float8 AS checkpoint_write_time, \
checkpoint_sync_time::float8 AS checkpoint_sync_time, \
buffers_checkpoint::bigint AS buffers_checkpoint \
FROM pg_stat_bgwriter"
    }
}

/// The standbys streaming from this server, one row each.
///
/// `replay_lag_bytes` needs `pg_current_wal_lsn()`, which fails during recovery, so a standby
/// (which may still have cascading standbys of its own) reports it as null.
pub fn replication(in_recovery: bool) -> &'static str {
    if in_recovery {
        "SELECT application_name::text AS application_name, \
host(client_addr)::text AS client_addr, state::text AS state, sync_state::text AS sync_state, \
EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag_seconds, \
EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag_seconds, \
EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag_seconds, \
NULL::bigint AS replay_lag_bytes \
FROM pg_stat_replication ORDER BY application_name, pid"
    } else {
        "SELECT application_name::text AS application_name, \
host(client_addr)::text AS client_addr, state::text AS state, sync_state::text AS sync_state, \
EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag_seconds, \
EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag_seconds, \
EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag_seconds, \
pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes \
FROM pg_stat_replication ORDER BY application_name, pid"
    }
}

/// Database-wide counters of the connected database, one row, and the installed
/// pg_stat_statements version (null when the extension is not installed here).
///
/// `$1::bool` says whether to size the database: `pg_database_size` stats every file of every
/// relation, which on a database with 10 000 tables is most of the server's CPU for the whole
/// run, so the run asks for it only when its last size is older than `database_size_interval`
/// (see [`crate::run`]); otherwise `size_bytes` is null here and the earlier size is reported.
pub const DATABASE: &str = "\
SELECT CASE WHEN $1::bool THEN pg_database_size(d.oid) END::bigint AS size_bytes, \
s.xact_commit::bigint AS transactions_committed, \
s.xact_rollback::bigint AS transactions_rolledback, \
s.tup_returned::bigint AS tuples_returned, \
s.tup_fetched::bigint AS tuples_fetched, \
s.tup_inserted::bigint AS tuples_inserted, \
s.tup_updated::bigint AS tuples_updated, \
s.tup_deleted::bigint AS tuples_deleted, \
(SELECT e.extversion FROM pg_extension e WHERE e.extname = 'pg_stat_statements')::text \
AS pg_stat_statements_version \
FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid \
WHERE d.datname = current_database()";

/// The schemas whose relations pg_stat_user_tables and pg_stat_user_indexes leave out
/// (`pg_catalog`, `information_schema`, `pg_toast` and the `pg_toast_temp_N` of each session),
/// as an array computed once per statement, so each pg_class row costs one comparison with a
/// handful of oids.
macro_rules! system_schemas {
    () => {
        "ARRAY(SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema') \
OR nspname ~ '^pg_toast')"
    };
}

/// The largest user tables, at most `greatest($1, 1)` rows (one at least, for the total), with
/// `tables_total`, the number of user tables, on each row.
///
/// Sizing a table stats every file of its heap, TOAST table and indexes, so on a database
/// with 10 000 tables `pg_total_relation_size` of them all costs the server about a second.
/// The tables are therefore ranked by the size PostgreSQL recorded for their heap
/// (`pg_class.relpages`, set by VACUUM, ANALYZE and CREATE INDEX and kept current by
/// autovacuum), and only the top `$1` are sized, exactly; those are returned largest first by
/// that exact total size. The cost: a table whose heap grew since it was last vacuumed or
/// analyzed ranks by its old size, and one whose heap is small beside its TOAST data or indexes
/// can rank below tables smaller in total.
///
/// The rows are pg_stat_user_tables' (user tables, materialized views, partitioned tables and
/// TOAST tables outside the system schemas), and each counter is the statistics function that
/// view is defined with, called for the ranked tables only.
pub const TABLES: &str = concat!(
    "SELECT n.nspname::text AS schema, c.relname::text AS name, \
pg_stat_get_live_tuples(c.oid)::bigint AS live_tuples, \
pg_stat_get_dead_tuples(c.oid)::bigint AS dead_tuples, \
pg_stat_get_mod_since_analyze(c.oid)::bigint AS modified_since_analyze, \
pg_total_relation_size(c.oid)::bigint AS size_bytes, \
pg_stat_get_last_vacuum_time(c.oid)::timestamptz AS last_vacuum, \
pg_stat_get_last_autovacuum_time(c.oid)::timestamptz AS last_autovacuum, \
pg_stat_get_last_analyze_time(c.oid)::timestamptz AS last_analyze, \
pg_stat_get_last_autoanalyze_time(c.oid)::timestamptz AS last_autoanalyze, \
pg_stat_get_vacuum_count(c.oid)::bigint AS vacuum_count, \
pg_stat_get_autovacuum_count(c.oid)::bigint AS autovacuum_count, \
c.tables_total::bigint AS tables_total \
FROM (SELECT c.oid, c.relname, c.relnamespace, count(*) OVER () AS tables_total \
FROM pg_class c WHERE c.relkind IN ('r', 't', 'm', 'p') AND c.relnamespace <> ALL (",
    system_schemas!(),
    ") ORDER BY c.relpages DESC, c.oid LIMIT greatest($1::bigint, 1)) c \
JOIN pg_namespace n ON n.oid = c.relnamespace \
ORDER BY size_bytes DESC NULLS LAST, schema, name"
);

/// The largest user indexes, at most `greatest($1, 1)` rows, with `indexes_total`, the number
/// of user indexes, on each row, and the pg_index flags the status is computed from.
///
/// Ranked like [`TABLES`]: by the index's recorded `pg_class.relpages`, and only the top `$1`
/// are sized (`pg_relation_size`, exact) and returned, largest first by that size. The rows are
/// pg_stat_user_indexes' (indexes of tables, materialized views and TOAST tables outside the
/// system schemas, `relkind = 'i'`; an index lives in its table's schema), with that view's
/// statistics functions.
pub const INDEXES: &str = concat!(
    "SELECT n.nspname::text AS schema, c.relname::text AS name, t.relname::text AS \"table\", \
pg_stat_get_numscans(c.oid)::bigint AS scans, \
pg_stat_get_tuples_returned(c.oid)::bigint AS tuples_read, \
pg_stat_get_tuples_fetched(c.oid)::bigint AS tuples_returned, \
pg_relation_size(c.oid)::bigint AS size_bytes, \
i.indisvalid::bool AS is_valid, i.indisunique::bool AS is_unique, \
i.indisprimary::bool AS is_primary, \
c.indexes_total::bigint AS indexes_total \
FROM (SELECT c.oid, c.relname, c.relnamespace, count(*) OVER () AS indexes_total \
FROM pg_class c WHERE c.relkind = 'i' AND c.relnamespace <> ALL (",
    system_schemas!(),
    ") ORDER BY c.relpages DESC, c.oid LIMIT greatest($1::bigint, 1)) c \
JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
ORDER BY size_bytes DESC NULLS LAST, schema, name"
);

/// The column names of one pg_stat_statements view layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementColumns {
    pub total: &'static str,
    pub mean: &'static str,
    pub min: &'static str,
    pub max: &'static str,
    pub stddev: &'static str,
    pub blk_read_time: &'static str,
    pub blk_write_time: &'static str,
}

/// Up to pg_stat_statements 1.7 (PostgreSQL 12 and before).
const BEFORE_1_8: StatementColumns = StatementColumns {
    total: "total_time",
    mean: "mean_time",
    min: "min_time",
    max: "max_time",
    stddev: "stddev_time",
    blk_read_time: "blk_read_time",
    blk_write_time: "blk_write_time",
};

/// pg_stat_statements 1.8 to 1.10 (PostgreSQL 13 to 16).
const FROM_1_8: StatementColumns = StatementColumns {
    total: "total_exec_time",
    mean: "mean_exec_time",
    min: "min_exec_time",
    max: "max_exec_time",
    stddev: "stddev_exec_time",
    ..BEFORE_1_8
};

/// pg_stat_statements 1.11 and later (PostgreSQL 17 and later).
const FROM_1_11: StatementColumns = StatementColumns {
    blk_read_time: "shared_blk_read_time",
    blk_write_time: "shared_blk_write_time",
    ..FROM_1_8
};

/// The pg_stat_statements columns to read.
///
/// The view's layout follows the extension version installed in the database
/// (`pg_extension.extversion`), not the server's: after pg_upgrade the old version stays until
/// someone runs `ALTER EXTENSION pg_stat_statements UPDATE`, and its view still has the old
/// column names. The server version is the fallback when `extversion` does not parse; `None`
/// when neither is known.
pub fn statement_columns(
    extversion: Option<&str>,
    server_version_num: Option<i64>,
) -> Option<StatementColumns> {
    if let Some((major, minor)) = extversion.and_then(parse_extversion) {
        return Some(match (major, minor) {
            (0, _) | (1, 0..=7) => BEFORE_1_8,
            (1, 8..=10) => FROM_1_8,
            _ => FROM_1_11,
        });
    }
    server_version_num.map(|num| match num {
        ..PG13 => BEFORE_1_8,
        PG13..PG17 => FROM_1_8,
        _ => FROM_1_11,
    })
}

/// `"1.10"` → `(1, 10)`.
fn parse_extversion(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The top `$1` statements of the connected database by total execution time, with the text
/// cut to `$2` characters on the server (the whole text's byte length comes along, so the
/// collector knows when it was cut even if no cut shows in the bytes it receives).
///
/// pg_stat_statements keeps one row per (user, database, queryid, top level); the backend keys
/// queries by queryid alone, so the rows of one queryid are merged: counters and times are
/// summed, `mean_time` is total over calls, `min`/`max` are the extremes and `stddev_time` is
/// the population standard deviation over all calls of the merged rows (the one stored per row
/// when there is only one). Rows without a queryid (hidden from roles lacking
/// `pg_read_all_stats`) are left out. `queries_total` counts the merged queries before the
/// limit.
pub fn statements(columns: &StatementColumns) -> String {
    let StatementColumns {
        total,
        mean,
        min,
        max,
        stddev,
        blk_read_time,
        blk_write_time,
    } = columns;
    format!(
        "SELECT queryid::bigint AS hash, \
left(min(query), $2::bigint::int)::text AS text, \
octet_length(min(query))::bigint AS text_bytes, \
sum(calls)::bigint AS calls, \
sum({total})::float8 AS total_time, \
coalesce(sum({total}) / nullif(sum(calls), 0), 0)::float8 AS mean_time, \
min({min})::float8 AS min_time, \
max({max})::float8 AS max_time, \
CASE WHEN count(*) = 1 THEN max({stddev}) \
ELSE sqrt(greatest(coalesce(sum(calls * ({stddev} ^ 2 + {mean} ^ 2)) / nullif(sum(calls), 0) \
- (sum({total}) / nullif(sum(calls), 0)) ^ 2, 0), 0)) END::float8 AS stddev_time, \
sum(rows)::bigint AS rows, \
sum(shared_blks_hit)::bigint AS shared_blks_hit, \
sum(shared_blks_read)::bigint AS shared_blks_read, \
sum(shared_blks_dirtied)::bigint AS shared_blks_dirtied, \
sum(shared_blks_written)::bigint AS shared_blks_written, \
sum(local_blks_hit)::bigint AS local_blks_hit, \
sum(local_blks_read)::bigint AS local_blks_read, \
sum(local_blks_dirtied)::bigint AS local_blks_dirtied, \
sum(local_blks_written)::bigint AS local_blks_written, \
sum(temp_blks_read)::bigint AS temp_blks_read, \
sum(temp_blks_written)::bigint AS temp_blks_written, \
sum({blk_read_time})::float8 AS blk_read_time, \
sum({blk_write_time})::float8 AS blk_write_time, \
(count(*) OVER ())::bigint AS queries_total \
FROM pg_stat_statements \
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
AND queryid IS NOT NULL \
GROUP BY queryid \
ORDER BY total_time DESC, hash LIMIT $1::bigint"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_columns_follow_the_extension_version() {
        // A PostgreSQL 15 server still running the 1.7 view after pg_upgrade.
        let old = statement_columns(Some("1.7"), Some(150_004)).expect("known");
        assert_eq!(old.total, "total_time");
        assert_eq!(old.blk_read_time, "blk_read_time");

        let pg15 = statement_columns(Some("1.10"), Some(150_004)).expect("known");
        assert_eq!(pg15.total, "total_exec_time");
        assert_eq!(pg15.stddev, "stddev_exec_time");
        assert_eq!(pg15.blk_read_time, "blk_read_time");

        let pg17 = statement_columns(Some("1.11"), Some(170_002)).expect("known");
        assert_eq!(pg17.mean, "mean_exec_time");
        assert_eq!(pg17.blk_read_time, "shared_blk_read_time");
        assert_eq!(pg17.blk_write_time, "shared_blk_write_time");

        assert_eq!(statement_columns(Some("2.0"), None), Some(FROM_1_11));
    }

    #[test]
    fn statement_columns_fall_back_to_the_server_version() {
        assert_eq!(statement_columns(None, Some(120_015)), Some(BEFORE_1_8));
        assert_eq!(
            statement_columns(Some("dev"), Some(130_000)),
            Some(FROM_1_8)
        );
        assert_eq!(statement_columns(None, Some(169_999)), Some(FROM_1_8));
        assert_eq!(statement_columns(None, Some(170_000)), Some(FROM_1_11));
        assert_eq!(statement_columns(None, Some(180_001)), Some(FROM_1_11));
        assert_eq!(statement_columns(Some("x.y"), None), None);
    }

    #[test]
    fn statements_always_return_the_contract_names() {
        for columns in [BEFORE_1_8, FROM_1_8, FROM_1_11] {
            let sql = statements(&columns);
            for name in [
                "AS total_time",
                "AS mean_time",
                "AS min_time",
                "AS max_time",
                "AS stddev_time",
                "AS blk_read_time",
                "AS blk_write_time",
            ] {
                assert!(sql.contains(name), "{name} missing from {sql}");
            }
            assert!(sql.contains(&format!("sum({})", columns.total)), "{sql}");
            assert!(
                sql.contains(&format!("sum({})", columns.blk_read_time)),
                "{sql}"
            );
        }
        assert!(!statements(&FROM_1_8).contains("sum(total_time)"));
        assert!(!statements(&BEFORE_1_8).contains("exec_time"));
    }

    #[test]
    fn checkpoint_counters_move_in_17() {
        assert!(checkpoints(160_004).contains("FROM pg_stat_bgwriter"));
        assert!(!checkpoints(160_004).contains("pg_stat_checkpointer"));
        let pg17 = checkpoints(170_000);
        assert!(pg17.contains("pg_stat_checkpointer"), "{pg17}");
        assert!(pg17.contains("NULL::bigint AS buffers_backend"), "{pg17}");
        assert!(
            pg17.contains("c.num_timed::bigint AS checkpoints_timed"),
            "{pg17}"
        );
    }

    #[test]
    fn replay_lag_bytes_only_on_a_primary() {
        assert!(replication(false).contains("pg_current_wal_lsn()"));
        assert!(!replication(true).contains("pg_current_wal_lsn()"));
        assert!(replication(true).contains("NULL::bigint AS replay_lag_bytes"));
    }

    /// Every statement is a single SELECT with no statement separator, so the host's
    /// one-statement rule never refuses it.
    #[test]
    fn every_statement_is_one_select() {
        let all = [
            SERVER.to_owned(),
            checkpoints(150_000).to_owned(),
            checkpoints(170_000).to_owned(),
            replication(false).to_owned(),
            replication(true).to_owned(),
            DATABASE.to_owned(),
            TABLES.to_owned(),
            INDEXES.to_owned(),
            statements(&BEFORE_1_8),
            statements(&FROM_1_8),
            statements(&FROM_1_11),
        ];
        for sql in all {
            assert!(sql.starts_with("SELECT "), "{sql}");
            assert!(!sql.contains(';'), "{sql}");
            assert!(
                !sql.contains("  "),
                "a line continuation lost a space: {sql}"
            );
        }
    }
}
