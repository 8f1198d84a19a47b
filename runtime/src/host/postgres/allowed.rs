//! What a plugin's SQL may name: the one place that lists the built-in functions, operators and
//! types known to be read-only, the catalogs that hold secrets, and what needs `cluster = true`.
//!
//! The rule is an allow-list: a function that is not listed here (or in the plugin grant's
//! `functions`) is refused by the [`super::guard`], so a new server function that writes (like
//! `pg_logical_emit_message`, which writes WAL from a read-only transaction) is refused until
//! someone decides it is read-only. Every entry must be a function that neither changes anything
//! (data, WAL, files, other sessions, this session's settings or sequences) nor reads files, nor
//! runs SQL hidden in a string, nor waits (sleeps, locks).
//!
//! Names are compared as PostgreSQL folds them (lowercase unless quoted); an entry ending in `*`
//! is a prefix covering a family whose every member is a getter.

/// Whether a name is usable by every grant or only with `cluster = true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Answers about the connected database, this session, or the server as a whole without
    /// naming another database's objects, sessions or secrets.
    Database,
    /// Shows rows or values that belong to other databases or other sessions (query texts,
    /// locks, replication peers) or the server's connection settings: needs `cluster = true`.
    Cluster,
}

/// Functions that need `cluster = true`. Checked before [`FUNCTIONS`], so a prefix there cannot
/// let these through.
const CLUSTER_FUNCTIONS: &[&str] = &[
    // Per-backend state of every session of the server (query texts, users, client addresses):
    // what pg_stat_activity, pg_stat_ssl, pg_stat_gssapi and pg_stat_progress_* are made of.
    "pg_stat_get_activity",
    "pg_stat_get_backend_*",
    "pg_stat_get_progress_info",
    // Counters of any database, by oid.
    "pg_stat_get_db_*",
    // Replication peers, the WAL receiver's conninfo, subscriptions, slots.
    "pg_stat_get_wal_senders",
    "pg_stat_get_wal_receiver",
    "pg_stat_get_replication_slot",
    "pg_stat_get_subscription*",
    "pg_get_replication_slots",
    // Locks and prepared transactions of every database.
    "pg_lock_status",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_prepared_xact",
    // Other databases and tablespaces by name or oid.
    "pg_database_size",
    "pg_tablespace_size",
    "pg_tablespace_location",
    "shobj_description",
    // pg_stat_statements' set-returning functions: statements of every database.
    "pg_stat_statements",
    "pg_stat_statements_info",
];

/// Built-in functions every postgres grant may call.
const FUNCTIONS: &[&str] = &[
    // Aggregates and window functions.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_*",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // Conditionals spelled as functions.
    "greatest",
    "least",
    "nullif",
    "coalesce",
    "num_nulls",
    "num_nonnulls",
    // Math. (`random` reads this session's seed; `setseed`, which changes it, is not here.)
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "mod",
    "sign",
    "div",
    "pi",
    "degrees",
    "radians",
    "width_bucket",
    "scale",
    "gcd",
    "lcm",
    "random",
    // Strings and bytes.
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "left",
    "right",
    "substr",
    "substring",
    "position",
    "strpos",
    "replace",
    "translate",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "lpad",
    "rpad",
    "concat",
    "concat_ws",
    "format",
    "md5",
    "split_part",
    "starts_with",
    "string_to_array",
    "array_to_string",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "regexp_substr",
    "repeat",
    "reverse",
    "to_hex",
    "encode",
    "decode",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "chr",
    "ascii",
    "overlay",
    "similar_to_escape",
    "normalize",
    "is_normalized",
    "pg_collation_for",
    // Dates and times (EXTRACT and AT TIME ZONE parse to `extract` and `timezone`).
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "date_part",
    "date_trunc",
    "date_bin",
    "extract",
    "age",
    "make_interval",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "to_timestamp",
    "to_char",
    "to_date",
    "to_number",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    "overlaps",
    // JSON.
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_typeof",
    "jsonb_typeof",
    "json_array_length",
    "jsonb_array_length",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_strip_nulls",
    "jsonb_strip_nulls",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_path_exists",
    "jsonb_path_match",
    // Arrays and series.
    "array_length",
    "cardinality",
    "unnest",
    "array_position",
    "array_positions",
    "array_remove",
    "array_replace",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_dims",
    "generate_series",
    "generate_subscripts",
    // Network addresses.
    "host",
    "hostmask",
    "masklen",
    "netmask",
    "network",
    "family",
    "abbrev",
    "broadcast",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    // Type-named conversions written as calls (`int8(x)`, `text(x)`).
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "name",
    "oid",
    "date",
    "interval",
    "timestamp",
    "timestamptz",
    "inet",
    // This session, this database, the server.
    "current_database",
    "current_schema",
    "current_schemas",
    "current_user",
    "session_user",
    "system_user",
    "current_setting",
    "version",
    "pg_backend_pid",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_jit_available",
    "pg_trigger_depth",
    "pg_encoding_to_char",
    "pg_typeof",
    "pg_size_pretty",
    "pg_size_bytes",
    // WAL positions (reading them writes nothing).
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_wal_lsn_diff",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    // Sizes of this database's relations.
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_column_size",
    "pg_relation_filenode",
    // Statistics counters of this database's relations and functions, and the server-wide
    // background writer, checkpointer, archiver, WAL, I/O and SLRU counters (the cluster-wide
    // per-session and per-database getters are in CLUSTER_FUNCTIONS, checked first).
    "pg_stat_get_*",
    // Privileges and visibility.
    "has_*_privilege",
    "pg_has_role",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    "pg_index_column_has_property",
    "pg_index_has_property",
    "pg_indexam_has_property",
    // Definitions and descriptions of this database's objects.
    "format_type",
    "pg_get_viewdef",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_functiondef",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_triggerdef",
    "pg_get_ruledef",
    "pg_get_expr",
    "pg_get_statisticsobjdef",
    "pg_get_partkeydef",
    "pg_get_partition_constraintdef",
    "pg_get_serial_sequence",
    "pg_get_userbyid",
    "pg_get_keywords",
    "obj_description",
    "col_description",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regprocedure",
    "to_regnamespace",
    "to_regrole",
    "to_regoper",
    "to_regoperator",
];

/// Settings readable only with `cluster = true` (through `current_setting`): names holding any
/// of these hold connection strings, passwords, key files or commands that may embed secrets.
const SENSITIVE_SETTING_PARTS: &[&str] = &[
    "conninfo",
    "password",
    "passphrase",
    "key",
    "secret",
    "_command",
];

/// Operator symbols of built-in operators on built-in types. An operator spelled with any other
/// symbol can only be user-defined, and `OPERATOR(schema.op)` outside `pg_catalog` is refused,
/// so an operator never reaches a function by itself.
const OPERATORS: &[&str] = &[
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "|/",
    "||/",
    "@",
    "&",
    "|",
    "#",
    "~",
    "<<",
    ">>",
    "=",
    "<>",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "||",
    "~~",
    "!~~",
    "~~*",
    "!~~*",
    "!~",
    "~*",
    "!~*",
    "@>",
    "<@",
    "&&",
    "->",
    "->>",
    "#>",
    "#>>",
    "?",
    "?|",
    "?&",
    "@?",
    "@@",
    "#-",
    "<<=",
    ">>=",
    // The names the parser gives to BETWEEN forms.
    "between",
    "not between",
    "between symmetric",
    "not between symmetric",
];

/// Built-in type names a cast or a typed literal may name unqualified (the parser already
/// qualifies SQL-standard names such as `integer` with `pg_catalog`). A cast to another type may
/// run a user-defined input function or domain check, so it is refused.
const TYPES: &[&str] = &[
    "bool",
    "boolean",
    "int2",
    "int4",
    "int8",
    "smallint",
    "integer",
    "int",
    "bigint",
    "float4",
    "float8",
    "real",
    "numeric",
    "decimal",
    "text",
    "varchar",
    "char",
    "bpchar",
    "name",
    "oid",
    "regclass",
    "regtype",
    "regproc",
    "regprocedure",
    "regnamespace",
    "regrole",
    "regoper",
    "regoperator",
    "regconfig",
    "xid",
    "xid8",
    "cid",
    "tid",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "jsonpath",
    "bytea",
    "inet",
    "cidr",
    "macaddr",
    "uuid",
    "pg_lsn",
    "record",
    "bit",
    "varbit",
    "money",
];

/// TABLESAMPLE methods that are built in.
pub const TABLESAMPLE_METHODS: &[&str] = &["system", "bernoulli"];

/// Relations no plugin may read, whatever its grant or the role: password hashes
/// (`pg_authid`, `pg_shadow`), foreign-server passwords (`pg_user_mapping(s)`), the server's
/// configuration and access files (`pg_file_settings`, `pg_hba_file_rules`,
/// `pg_ident_file_mappings`), large object contents, the sampled values of every column of
/// every table (`pg_statistic`, `pg_statistic_ext_data`, below any table privilege) and
/// subscription connection strings (`pg_subscription`); `information_schema`'s user mapping
/// views show option values, passwords included.
const SECRET_RELATIONS: &[&str] = &[
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_largeobject",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_subscription",
    "user_mappings",
    "user_mapping_options",
];

/// Relations that need `cluster = true`: their rows belong to other databases or sessions, or
/// they list roles, settings and replication peers of the whole server.
const CLUSTER_RELATIONS: &[&str] = &[
    "pg_stat_activity",
    "pg_stat_ssl",
    "pg_stat_gssapi",
    "pg_stat_progress_*",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_database",
    "pg_stat_database",
    "pg_stat_database_conflicts",
    "pg_db_role_setting",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_stat_subscription",
    "pg_stat_subscription_stats",
    "pg_replication_slots",
    "pg_stat_replication_slots",
    "pg_replication_origin",
    "pg_replication_origin_status",
    "pg_settings",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_roles",
    "pg_user",
    "pg_auth_members",
    "pg_tablespace",
    "pg_shdepend",
    "pg_shdescription",
    "pg_shseclabel",
    "pg_seclabels",
];

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

fn listed(list: &[&str], name: &str) -> bool {
    list.iter().any(|pattern| matches(pattern, name))
}

/// The scope a built-in function needs, or `None` when it is not on the allow-list.
pub fn function(name: &str) -> Option<Scope> {
    if listed(CLUSTER_FUNCTIONS, name) {
        Some(Scope::Cluster)
    } else if listed(FUNCTIONS, name) {
        Some(Scope::Database)
    } else {
        None
    }
}

/// Whether `current_setting(name)` needs `cluster = true`.
pub fn setting_is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_SETTING_PARTS
        .iter()
        .any(|part| name.contains(part))
}

pub fn operator(symbol: &str) -> bool {
    OPERATORS.contains(&symbol)
}

pub fn type_name(name: &str) -> bool {
    TYPES.contains(&name)
}

/// What reading relation `name` needs: `None` when it is a secret catalog (never), else the scope.
pub fn relation(name: &str) -> Option<Scope> {
    let name = name.to_ascii_lowercase();
    if SECRET_RELATIONS.contains(&name.as_str()) {
        None
    } else if listed(CLUSTER_RELATIONS, &name) {
        Some(Scope::Cluster)
    } else {
        Some(Scope::Database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_families_and_cluster_entries_win() {
        assert_eq!(function("pg_stat_get_live_tuples"), Some(Scope::Database));
        assert_eq!(function("pg_stat_get_activity"), Some(Scope::Cluster));
        assert_eq!(function("pg_stat_get_db_xact_commit"), Some(Scope::Cluster));
        assert_eq!(
            function("pg_stat_get_backend_activity"),
            Some(Scope::Cluster)
        );
        assert_eq!(function("has_table_privilege"), Some(Scope::Database));
        assert_eq!(function("regr_slope"), Some(Scope::Database));
        assert_eq!(function("pg_stat_reset"), None);
        assert_eq!(function("has_"), None);
        assert_eq!(relation("PG_AUTHID"), None);
        assert_eq!(relation("pg_stat_progress_vacuum"), Some(Scope::Cluster));
        assert_eq!(relation("pg_class"), Some(Scope::Database));
        assert!(setting_is_sensitive("primary_conninfo"));
        assert!(setting_is_sensitive("ssl_passphrase_command"));
        assert!(setting_is_sensitive("ssl_key_file"));
        assert!(setting_is_sensitive("krb_server_keyfile"));
        assert!(!setting_is_sensitive("server_version_num"));
        assert!(!setting_is_sensitive("max_connections"));
    }
}
