//! The SQL guard: decides, before the server sees a statement, whether a plugin may run it.
//!
//! It parses with PostgreSQL's own parser (libpg_query via the `pg_query` crate), so quoting,
//! comments and nesting cannot hide a statement from it. Allowed: exactly one plain `SELECT`
//! (including `VALUES`, set operations and read-only CTEs). Refused: anything else, a
//! data-modifying CTE anywhere in the tree, `SELECT INTO`, row locks, and calls to functions that
//! act on other sessions, the server or the filesystem even inside a read-only transaction, or
//! that run SQL hidden in a string. The read-only transaction the query runs in is the second
//! line of defence; this one exists so those statements never reach the server at all.

use pg_query::NodeRef;

/// Functions refused by exact name (compared without schema, case-insensitively).
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    // Other sessions and the server.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_log_backend_memory_contexts",
    "pg_notify",
    "set_config",
    "nextval",
    "setval",
    "txid_current",
    "pg_current_xact_id",
    // Files on the server.
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    // SQL hidden in a string, which this guard cannot see.
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
];

/// Function name prefixes refused: whole families of the above.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "pg_sleep", // pg_sleep, pg_sleep_for, pg_sleep_until: hold a connection past any deadline
    "pg_ls_",   // pg_ls_dir, pg_ls_logdir, pg_ls_waldir, ...: directory listings
    "lo_",      // large objects: lo_import/lo_export read and write server files
    "dblink",   // dblink*: another connection, outside this read-only transaction
    "pg_advisory", // advisory locks outlive the statement
    "pg_try_advisory",
    "pg_create_", // replication slots
    "pg_drop_replication",
    "pg_replication_origin",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
];

/// Why a statement is refused; the message names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Checks one plugin statement. `Ok` means it may be sent to the server.
pub fn check(sql: &str) -> Result<(), Refusal> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
        .map_err(|e| Refusal(format!("cannot parse the statement: {e}")))?;
    let statements = &parsed.protobuf.stmts;
    match statements.len() {
        0 => return Err(Refusal("the query is empty".into())),
        1 => {}
        n => {
            return Err(Refusal(format!(
                "only one statement per query is allowed, found {n}"
            )));
        }
    }
    let kind = parsed
        .statement_types()
        .first()
        .copied()
        .unwrap_or("unknown statement");
    if kind != "SelectStmt" {
        let name = kind.strip_suffix("Stmt").unwrap_or(kind).to_uppercase();
        return Err(Refusal(format!("only SELECT is allowed, found {name}")));
    }
    for (node, _depth, _context, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::InsertStmt(_) => {
                return Err(Refusal("data-modifying INSERT inside the query".into()));
            }
            NodeRef::UpdateStmt(_) => {
                return Err(Refusal("data-modifying UPDATE inside the query".into()));
            }
            NodeRef::DeleteStmt(_) => {
                return Err(Refusal("data-modifying DELETE inside the query".into()));
            }
            NodeRef::MergeStmt(_) => {
                return Err(Refusal("data-modifying MERGE inside the query".into()));
            }
            NodeRef::SelectStmt(select) => {
                if select.into_clause.is_some() {
                    return Err(Refusal("SELECT INTO creates a table".into()));
                }
                if !select.locking_clause.is_empty() {
                    return Err(Refusal(
                        "row locks (FOR UPDATE/SHARE) are not allowed".into(),
                    ));
                }
            }
            _ => {}
        }
    }
    for (function, _) in &parsed.functions {
        let name = function
            .rsplit('.')
            .next()
            .unwrap_or(function)
            .to_ascii_lowercase();
        if FORBIDDEN_FUNCTIONS.contains(&name.as_str())
            || FORBIDDEN_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return Err(Refusal(format!("function `{function}` is not allowed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match check(sql) {
            Err(Refusal(why)) => why,
            Ok(()) => panic!("`{sql}` was allowed"),
        }
    }

    #[test]
    fn plain_reads_are_allowed() {
        for sql in [
            "SELECT 1",
            "select datname, numbackends from pg_stat_database where datname = $1",
            "WITH t AS (SELECT relname FROM pg_class) SELECT count(*) FROM t",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
            "SELECT pg_database_size(current_database()), now(), current_setting('server_version_num')",
            "SELECT 'pg_sleep(10); DELETE FROM x' AS harmless_text",
            "/* DELETE FROM t */ SELECT 1 -- ; DROP TABLE t",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn writes_and_ddl_are_refused_by_statement_kind() {
        assert_eq!(
            refused("INSERT INTO t VALUES (1)"),
            "only SELECT is allowed, found INSERT"
        );
        assert!(refused("UPDATE t SET a = 1").contains("UPDATE"));
        assert!(refused("DELETE FROM t").contains("DELETE"));
        assert!(refused("CREATE TABLE t (a int)").contains("found CREATE"));
        assert!(refused("DROP TABLE t").contains("found DROP"));
        assert!(refused("TRUNCATE t").contains("TRUNCATE"));
        assert!(refused("COPY t TO '/tmp/x'").contains("COPY"));
        assert!(refused("COPY (SELECT 1) TO PROGRAM 'id'").contains("COPY"));
        assert!(refused("SET statement_timeout = 0").contains("found VARIABLESET"));
        assert!(refused("EXPLAIN ANALYZE DELETE FROM t").contains("EXPLAIN"));
        assert!(refused("DO $$ BEGIN PERFORM 1; END $$").contains("DO"));
    }

    #[test]
    fn hidden_writes_are_refused() {
        assert_eq!(
            refused("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"),
            "data-modifying DELETE inside the query"
        );
        assert!(
            refused("WITH x AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT 1").contains("INSERT")
        );
        assert!(refused("SELECT * INTO newtable FROM t").contains("SELECT INTO"));
        assert!(refused("SELECT * FROM t FOR UPDATE").contains("row locks"));
    }

    #[test]
    fn several_statements_are_refused() {
        assert_eq!(
            refused("SELECT 1; SELECT 2"),
            "only one statement per query is allowed, found 2"
        );
        assert!(refused("SELECT 1; DELETE FROM t").contains("found 2"));
        assert!(refused("").contains("empty"));
        assert!(refused("SELEC 1").contains("cannot parse"));
    }

    #[test]
    fn every_forbidden_function_is_refused_wherever_it_hides() {
        for call in [
            "pg_terminate_backend(1)",
            "pg_cancel_backend(1)",
            "pg_reload_conf()",
            "set_config('a.b', 'c', false)",
            "pg_read_file('/etc/passwd')",
            "pg_read_binary_file('/etc/passwd')",
            "pg_ls_dir('.')",
            "lo_import('/etc/passwd')",
            "lo_export(1, '/tmp/x')",
            "dblink('host=x', 'DELETE FROM t')",
            "dblink_exec('DELETE FROM t')",
            "pg_sleep(60)",
            "pg_sleep_for('1 minute')",
            "pg_advisory_lock(1)",
            "query_to_xml('select pg_terminate_backend(1)', true, true, '')",
        ] {
            for sql in [
                format!("SELECT {call}"),
                format!("SELECT * FROM pg_class WHERE relname = (SELECT {call}::text)"),
                format!("SELECT PG_CATALOG.{}", call.to_uppercase()),
                format!("WITH x AS (SELECT {call}) SELECT * FROM x"),
            ] {
                let why = refused(&sql);
                assert!(why.starts_with("function `"), "{sql}: {why}");
            }
        }
    }
}
