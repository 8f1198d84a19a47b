//! The SQL guard: decides, before the server sees a statement, whether a plugin may run it.
//!
//! It parses with PostgreSQL's own parser (libpg_query via the `pg_query` crate), so quoting,
//! comments and nesting cannot hide a statement from it. Allowed: exactly one plain `SELECT`
//! (including `VALUES`, set operations and read-only CTEs). Refused: anything else, a
//! data-modifying CTE anywhere in the tree, `SELECT INTO` and row locks. Then every node of the
//! parse tree is checked against [`super::allowed`]: each function called must be on the
//! read-only allow-list or in the grant's `functions`; each operator must be a built-in symbol
//! (and `OPERATOR(schema.op)` only in `pg_catalog`); each type named in a cast must be built in;
//! each relation must not be a secret catalog; cluster-wide relations and functions and
//! `current_setting` of a setting that may hold a secret need the grant's `cluster = true`.
//! The read-only transaction the query runs in is the second line of defence; this one exists
//! so those statements never reach the server at all. It must never allow by default: a node it
//! does not know is checked by its fields, and a name it does not know is refused.

use std::collections::BTreeSet;

use pg_query::NodeRef;
use serde_json::Value as Json;

use super::allowed::{self, Scope};

/// What one plugin's grant adds to the fixed rules.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// `cluster = true`: cluster-wide relations and functions and sensitive settings.
    pub cluster: bool,
    /// `functions = [...]`: more functions, as the query names them (`schema.fn` or `fn`).
    pub functions: &'a BTreeSet<String>,
}

/// Why a statement is refused; the message names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Checks one plugin statement. `Ok` means it may be sent to the server.
pub fn check(sql: &str, policy: Policy<'_>) -> Result<(), Refusal> {
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
    // Walk the whole parse tree as data rather than through a typed walker, so no node kind
    // (a cast, a TABLESAMPLE method, an operator inside ANY) can hide a name from the checks.
    let tree = serde_json::to_value(&parsed.protobuf)
        .map_err(|e| Refusal(format!("cannot inspect the statement: {e}")))?;
    walk(&tree, policy)?;
    Ok(())
}

/// Checks every node of the tree, depth first.
fn walk(value: &Json, policy: Policy<'_>) -> Result<(), Refusal> {
    match value {
        Json::Object(fields) => {
            check_node(fields, policy)?;
            for inner in fields.values() {
                walk(inner, policy)?;
            }
        }
        Json::Array(items) => {
            for item in items {
                walk(item, policy)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks one node, recognized by its fields rather than by where it sits: a node embedded as a
/// plain field (a cast's type name, a sample's relation) is serialized without its kind, and
/// checking by shape cannot miss one. A field name shared with another kind only makes the
/// check stricter.
fn check_node(node: &serde_json::Map<String, Json>, policy: Policy<'_>) -> Result<(), Refusal> {
    let has = |key: &str| node.contains_key(key);
    if has("funcname") {
        check_function(node, policy)?;
    }
    if has("kind") && has("name") && has("lexpr") {
        check_operator(&names(node.get("name")))?;
    }
    if has("oper_name") {
        check_operator(&names(node.get("oper_name")))?;
    }
    if has("names") && has("typemod") {
        check_type(&names(node.get("names")))?;
    }
    if has("relname") {
        check_relation(node, policy)?;
    }
    if has("method") && has("repeatable") {
        let method = names(node.get("method"));
        let built_in = unqualified_or_catalog(&method)
            && method
                .last()
                .is_some_and(|m| allowed::TABLESAMPLE_METHODS.contains(&m.as_str()));
        if !built_in {
            return Err(Refusal(format!(
                "TABLESAMPLE method `{}` is not built in",
                method.join(".")
            )));
        }
    }
    Ok(())
}

/// The strings of a name list (`["pg_catalog", "now"]`).
fn names(list: Option<&Json>) -> Vec<String> {
    list.and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.pointer("/node/String/sval")?.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a name is bare or in `pg_catalog`.
fn unqualified_or_catalog(name: &[String]) -> bool {
    match name {
        [_] => true,
        [schema, _] => schema == "pg_catalog",
        _ => false,
    }
}

fn check_function(node: &serde_json::Map<String, Json>, policy: Policy<'_>) -> Result<(), Refusal> {
    let name = names(node.get("funcname"));
    let written = name.join(".");
    if policy.functions.contains(&written) {
        return Ok(());
    }
    let scope = match name.last() {
        Some(last) if unqualified_or_catalog(&name) => allowed::function(last),
        _ => None,
    };
    match scope {
        None => Err(Refusal(format!(
            "function `{written}` is not on the read-only allow-list; grant it with \
             functions = [\"{written}\"] if it is read-only"
        ))),
        Some(Scope::Cluster) if !policy.cluster => Err(Refusal(format!(
            "function `{written}` shows other databases or sessions; it needs cluster = true"
        ))),
        Some(_) if name.last().is_some_and(|n| n == "current_setting") && !policy.cluster => {
            check_setting_argument(node)
        }
        Some(_) => Ok(()),
    }
}

/// Without `cluster = true`, `current_setting` takes a literal naming a setting that holds no
/// connection string, password, key or command.
fn check_setting_argument(node: &serde_json::Map<String, Json>) -> Result<(), Refusal> {
    let literal = node
        .get("args")
        .and_then(|args| args.pointer("/0/node/AConst/val/Sval/sval"))
        .and_then(Json::as_str);
    match literal {
        Some(setting) if !allowed::setting_is_sensitive(setting) => Ok(()),
        Some(setting) => Err(Refusal(format!(
            "setting `{setting}` may hold a secret; reading it needs cluster = true"
        ))),
        None => Err(Refusal(
            "current_setting takes a literal setting name unless the grant has cluster = true"
                .into(),
        )),
    }
}

fn check_operator(name: &[String]) -> Result<(), Refusal> {
    let Some(symbol) = name.last() else {
        return Ok(());
    };
    if unqualified_or_catalog(name) && allowed::operator(&symbol.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(Refusal(format!(
            "operator `{}` is not a built-in operator",
            name.join(".")
        )))
    }
}

fn check_type(name: &[String]) -> Result<(), Refusal> {
    let allowed = match name {
        [_, last] if name[0] == "pg_catalog" => !last.is_empty(),
        [last] => allowed::type_name(last),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal(format!(
            "type `{}` is not a built-in type (a cast to it may run its own functions)",
            name.join(".")
        )))
    }
}

fn check_relation(node: &serde_json::Map<String, Json>, policy: Policy<'_>) -> Result<(), Refusal> {
    let relname = node.get("relname").and_then(Json::as_str).unwrap_or("");
    match allowed::relation(relname) {
        None => Err(Refusal(format!(
            "relation `{relname}` holds secrets and is never readable by plugins"
        ))),
        Some(Scope::Cluster) if !policy.cluster => Err(Refusal(format!(
            "relation `{relname}` shows other databases, sessions or server settings; it \
             needs cluster = true"
        ))),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &BTreeSet<String> = &BTreeSet::new();
    const DATABASE: Policy<'static> = Policy {
        cluster: false,
        functions: NONE,
    };
    const CLUSTER: Policy<'static> = Policy {
        cluster: true,
        functions: NONE,
    };

    fn refused_by(sql: &str, policy: Policy<'_>) -> String {
        match check(sql, policy) {
            Err(Refusal(why)) => why,
            Ok(()) => panic!("`{sql}` was allowed"),
        }
    }

    fn refused(sql: &str) -> String {
        refused_by(sql, CLUSTER)
    }

    #[test]
    fn plain_reads_are_allowed() {
        for sql in [
            "SELECT 1",
            "select relname, n_live_tup from pg_stat_user_tables where relname = $1",
            "WITH t AS (SELECT relname FROM pg_class) SELECT count(*) FROM t",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
            "SELECT pg_relation_size('t'::regclass), now(), current_setting('server_version_num')",
            "SELECT 'pg_sleep(10); DELETE FROM x' AS harmless_text",
            "/* DELETE FROM t */ SELECT 1 -- ; DROP TABLE t",
            "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8",
            "SELECT x::integer, y::timestamp with time zone, z::int8[] FROM t",
            "SELECT a FROM t WHERE a = ANY (SELECT 1) AND b IN (1, 2) AND c BETWEEN 1 AND 2",
            "SELECT * FROM t TABLESAMPLE bernoulli (10)",
            "SELECT n.nspname, has_table_privilege(c.oid, 'SELECT') FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN LATERAL \
             (SELECT pg_stat_get_live_tuples(c.oid)) s ON true",
            "SELECT coalesce(a, 0), greatest(a, b), nullif(a, 1), a IS DISTINCT FROM b FROM t",
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), pg_is_in_recovery(), version()",
        ] {
            assert_eq!(check(sql, DATABASE), Ok(()), "{sql}");
        }
    }

    #[test]
    fn the_shipped_pg_stats_statements_pass_with_cluster() {
        let sources = [include_str!("../../../../guests/pg_stats/src/sql.rs")];
        // Every statement of the guest, as it reaches the host (pg_stat_statements layout of
        // PostgreSQL 13 to 16; the others differ by column names only).
        let statements = [
            extract(sources[0], "pub const SERVER: &str = \"\\\n", "\";"),
            extract(sources[0], "pub const DATABASE: &str = \"\\\n", "\";"),
        ];
        for sql in statements {
            let sql = sql.replace("\\\n", "");
            assert_eq!(check(&sql, CLUSTER), Ok(()), "{sql}");
            assert!(check(&sql, DATABASE).is_err(), "{sql} needs cluster");
        }
    }

    fn extract<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text.find(start).unwrap() + start.len();
        let to = from + text[from..].find(end).unwrap();
        &text[from..to]
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
        assert!(refused("SHOW primary_conninfo").contains("found VARIABLESHOW"));
        assert!(refused("EXPLAIN ANALYZE DELETE FROM t").contains("EXPLAIN"));
        assert!(refused("DO $$ BEGIN PERFORM 1; END $$").contains("DO"));
        assert!(refused("DISCARD ALL").contains("DISCARD"));
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

    /// Functions that write, act on other sessions or the server, read files, run hidden SQL,
    /// wait, or change this session: none is on the allow-list, wherever the call hides.
    #[test]
    fn functions_off_the_allow_list_are_refused_wherever_they_hide() {
        for call in [
            "pg_logical_emit_message(false, 'x', repeat('x', 1000000))",
            "pg_replication_slot_advance('s', '0/1')",
            "pg_stat_reset()",
            "pg_stat_reset_shared('bgwriter')",
            "pg_stat_reset_single_table_counters(1)",
            "pg_stat_statements_reset()",
            "setseed(0.5)",
            "set_config('a.b', 'c', false)",
            "nextval('s')",
            "setval('s', 1)",
            "lo_import('/etc/passwd')",
            "lo_export(1, '/tmp/x')",
            "lo_from_bytea(0, 'x')",
            "txid_current()",
            "pg_current_xact_id()",
            "pg_notify('c', 'x')",
            "dblink('host=x', 'DELETE FROM t')",
            "dblink_exec('DELETE FROM t')",
            "pg_terminate_backend(1)",
            "pg_cancel_backend(1)",
            "pg_reload_conf()",
            "pg_read_file('/etc/passwd')",
            "pg_ls_dir('.')",
            "pg_sleep(60)",
            "pg_advisory_lock(1)",
            "query_to_xml('select 1', true, true, '')",
            "table_to_xml('pg_authid', true, true, '')",
            "pg_show_all_settings()",
            "pg_hba_file_rules()",
            "pg_switch_wal()",
            "pg_create_logical_replication_slot('s', 'test_decoding')",
            "public.now()",
            "myschema.count(*)",
        ] {
            for sql in [
                format!("SELECT {call}"),
                format!("SELECT * FROM pg_class WHERE relname = (SELECT {call}::text)"),
                format!("SELECT PG_CATALOG.{}", call.to_uppercase()),
                format!("WITH x AS (SELECT {call}) SELECT * FROM x"),
                format!("SELECT * FROM {call}"),
                format!("SELECT * FROM ROWS FROM ({call}) r"),
                format!("SELECT * FROM pg_class c, LATERAL (SELECT {call}) x"),
                format!("SELECT COALESCE(NULL, {call}::text)"),
                format!("SELECT ROW(1, {call})"),
                format!("SELECT CASE WHEN true THEN {call}::text END"),
                format!("SELECT 1 WHERE 1 = ANY (ARRAY[{call}::int])"),
                format!("SELECT count(*) FILTER (WHERE {call} IS NULL) FROM t"),
                format!("SELECT sum(1) OVER (ORDER BY {call}) FROM t"),
                format!("SELECT * FROM t TABLESAMPLE system ({call}::float8)"),
                format!("SELECT {call}::text::int8"),
            ] {
                let why = refused(&sql);
                assert!(why.starts_with("function `"), "{sql}: {why}");
            }
        }
        assert_eq!(
            refused("SELECT pg_logical_emit_message(false, 'x', 'y')"),
            "function `pg_logical_emit_message` is not on the read-only allow-list; grant it \
             with functions = [\"pg_logical_emit_message\"] if it is read-only"
        );
    }

    #[test]
    fn a_grant_adds_functions_as_the_query_names_them() {
        let granted: BTreeSet<String> = ["myschema.fn".to_owned(), "ext_fn".to_owned()].into();
        let policy = Policy {
            cluster: false,
            functions: &granted,
        };
        assert_eq!(check("SELECT myschema.fn(1), ext_fn()", policy), Ok(()));
        assert!(refused_by("SELECT fn(1)", policy).contains("`fn`"));
        assert!(refused_by("SELECT other.fn(1)", policy).contains("`other.fn`"));
        assert!(refused_by("SELECT myschema.ext_fn()", policy).contains("`myschema.ext_fn`"));
        assert!(refused_by("SELECT db.pg_catalog.now()", policy).contains("`db.pg_catalog.now`"));
    }

    #[test]
    fn operators_casts_and_samples_cannot_reach_other_functions() {
        for (sql, expected) in [
            ("SELECT 1 OPERATOR(public.+) 1", "operator `public.+`"),
            ("SELECT a === b FROM t", "operator `===`"),
            (
                "SELECT a FROM t WHERE a OPERATOR(myschema.=) ANY (SELECT 1)",
                "myschema.=",
            ),
            (
                "SELECT a FROM t WHERE a <=> ALL (SELECT 1)",
                "operator `<=>`",
            ),
            ("SELECT 'x'::myschema.mydomain", "type `myschema.mydomain`"),
            ("SELECT CAST(1 AS mydomain)", "type `mydomain`"),
            ("SELECT '(1)'::public.t", "type `public.t`"),
            (
                "SELECT * FROM t TABLESAMPLE system_rows (10)",
                "TABLESAMPLE method `system_rows`",
            ),
            (
                "SELECT * FROM t TABLESAMPLE public.system (10)",
                "`public.system`",
            ),
        ] {
            let why = refused(sql);
            assert!(why.contains(expected), "{sql}: {why}");
        }
        assert_eq!(check("SELECT 1 OPERATOR(pg_catalog.+) 1", DATABASE), Ok(()));
        assert_eq!(
            check("SELECT 'pg_class'::regclass::oid, 'now'::regproc", DATABASE),
            Ok(())
        );
    }

    #[test]
    fn secret_catalogs_are_refused_however_they_are_named() {
        for relation in [
            "pg_authid",
            "pg_shadow",
            "pg_user_mapping",
            "pg_user_mappings",
            "pg_file_settings",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_largeobject",
            "pg_statistic",
            "pg_subscription",
            "information_schema.user_mapping_options",
        ] {
            let quoted = format!("\"{relation}\"").replace('.', "\".\"");
            for sql in [
                format!("SELECT * FROM {relation}"),
                format!("SELECT * FROM pg_catalog.{relation}"),
                format!("SELECT * FROM {quoted}"),
                format!("SELECT * FROM {}", relation.to_uppercase()),
                format!("TABLE {relation}"),
                format!("WITH x AS (SELECT * FROM {relation}) SELECT * FROM x"),
                format!("SELECT (SELECT count(*) FROM {relation})"),
                format!("SELECT * FROM pg_class c, LATERAL (SELECT * FROM {relation}) a"),
                format!("SELECT * FROM pg_class WHERE EXISTS (SELECT 1 FROM {relation})"),
                format!("SELECT * FROM {relation} TABLESAMPLE system (50)"),
                format!("SELECT 1 UNION SELECT 1 FROM {relation}"),
            ] {
                for policy in [DATABASE, CLUSTER] {
                    let why = refused_by(&sql, policy);
                    assert!(why.contains("holds secrets"), "{sql}: {why}");
                }
            }
        }
    }

    #[test]
    fn cluster_wide_reads_need_cluster() {
        for sql in [
            "SELECT query FROM pg_stat_activity",
            "SELECT * FROM pg_catalog.pg_stat_activity WHERE datname <> current_database()",
            "SELECT * FROM pg_stat_database",
            "SELECT * FROM pg_stat_database_conflicts",
            "SELECT * FROM pg_locks",
            "SELECT * FROM pg_stat_statements",
            "SELECT * FROM public.pg_stat_statements",
            "SELECT * FROM pg_stat_statements(true)",
            "SELECT * FROM pg_stat_replication",
            "SELECT * FROM pg_replication_slots",
            "SELECT * FROM pg_database",
            "SELECT * FROM pg_settings",
            "SELECT * FROM pg_stat_progress_vacuum",
            "SELECT * FROM pg_stat_wal_receiver",
            "SELECT * FROM pg_stat_get_activity(NULL)",
            "SELECT pg_stat_get_backend_activity(1)",
            "SELECT pg_stat_get_db_xact_commit(1)",
            "SELECT pg_database_size('other')",
            "SELECT * FROM pg_lock_status()",
            "SELECT current_setting('primary_conninfo')",
            "SELECT current_setting('PRIMARY_CONNINFO', true)",
            "SELECT current_setting('ssl_passphrase_command')",
            "SELECT current_setting('ssl_key_file')",
            "SELECT current_setting('archive_command')",
            "SELECT current_setting(name) FROM (VALUES ('primary_conninfo')) v(name)",
            "SELECT current_setting($1)",
        ] {
            let why = refused_by(sql, DATABASE);
            assert!(why.contains("cluster = true"), "{sql}: {why}");
            assert_eq!(check(sql, CLUSTER), Ok(()), "{sql}");
        }
    }
}
