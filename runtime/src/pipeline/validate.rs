//! Checks a plugin's output before anything of it is accepted: a JSON array of objects, each
//! with a string `type` the plugin may emit and an RFC 3339 `timestamp`, and for the types of
//! the backend contract, the required fields with the right JSON types.
//!
//! Extra fields are allowed (the contract says so for `pg_log`, and it keeps old runtimes
//! compatible with newer collectors); missing or mistyped required fields are not.

use std::collections::BTreeSet;

use serde_json::Value;

/// The JSON type a required field must have.
#[derive(Clone, Copy)]
enum Kind {
    Number,
    /// A JSON integer within the signed 64-bit range (the backend decodes it into an `int64`).
    Int,
    /// A number within 0..=100.
    Percent,
    Text,
    /// A string or null (e.g. `last_vacuum` of a never-vacuumed table).
    OptText,
    Object(&'static [(&'static str, Kind)]),
    /// An array whose elements are objects with these fields.
    ArrayOf(&'static [(&'static str, Kind)]),
}

use Kind::*;

const SYSSTAT: &[(&str, Kind)] = &[
    (
        "cpu",
        Object(&[
            ("user", Percent),
            ("system", Percent),
            ("idle", Percent),
            ("iowait", Percent),
            ("load_1m", Number),
            ("load_5m", Number),
            ("load_15m", Number),
        ]),
    ),
    (
        "memory",
        Object(&[
            ("total_mb", Number),
            ("free_mb", Number),
            ("cached_mb", Number),
            ("used_mb", Number),
        ]),
    ),
    (
        "disk_io",
        ArrayOf(&[
            ("device", Text),
            ("read_ops", Number),
            ("write_ops", Number),
            ("read_sectors", Number),
            ("write_sectors", Number),
        ]),
    ),
];

const DISK_USAGE: &[(&str, Kind)] = &[(
    "filesystems",
    ArrayOf(&[
        ("device", Text),
        ("mount", Text),
        ("total_gb", Number),
        ("used_gb", Number),
        ("free_gb", Number),
        ("percent_used", Percent),
    ]),
)];

const PG_LOG: &[(&str, Kind)] = &[
    ("database", Text),
    (
        "entries",
        ArrayOf(&[("timestamp", Text), ("level", Text), ("message", Text)]),
    ),
];

const PG_STATS: &[(&str, Kind)] = &[
    ("database", Text),
    ("size_bytes", Number),
    ("transactions_committed", Number),
    ("transactions_rolledback", Number),
    ("tuples_returned", Number),
    ("tuples_fetched", Number),
    ("tuples_inserted", Number),
    ("tuples_updated", Number),
    ("tuples_deleted", Number),
    (
        "tables",
        ArrayOf(&[
            ("schema", Text),
            ("name", Text),
            ("live_tuples", Number),
            ("dead_tuples", Number),
            ("modified_since_analyze", Number),
            ("size_bytes", Number),
            ("last_vacuum", OptText),
            ("last_autovacuum", OptText),
            ("last_analyze", OptText),
            ("last_autoanalyze", OptText),
            ("vacuum_count", Number),
            ("autovacuum_count", Number),
        ]),
    ),
    (
        "indexes",
        ArrayOf(&[
            ("schema", Text),
            ("name", Text),
            ("table", Text),
            ("scans", Number),
            ("tuples_read", Number),
            ("tuples_returned", Number),
            ("size_bytes", Number),
            ("status", Text),
        ]),
    ),
];

const PG_QUERY_STATS: &[(&str, Kind)] = &[
    ("database", Text),
    (
        "queries",
        ArrayOf(&[
            ("hash", Int),
            ("text", Text),
            // The backend decodes these into int64 and drops the item on a fraction.
            ("calls", Int),
            ("total_time", Number),
            ("mean_time", Number),
            ("rows", Int),
        ]),
    ),
];

/// Server-wide statistics of the `pg_stats` collector (not in the original contract; required
/// fields are those every PostgreSQL version provides).
const PG_SERVER: &[(&str, Kind)] = &[
    ("server_version", Text),
    ("server_version_num", Number),
    ("max_connections", Number),
    ("connections", Object(&[("total", Number)])),
];

/// Required fields of the item types in the backend contract.
fn schema(item_type: &str) -> Option<&'static [(&'static str, Kind)]> {
    match item_type {
        "sysstat" => Some(SYSSTAT),
        "disk_usage" => Some(DISK_USAGE),
        "pg_log" => Some(PG_LOG),
        "pg_stats" => Some(PG_STATS),
        "pg_query_stats" => Some(PG_QUERY_STATS),
        "pg_server" => Some(PG_SERVER),
        _ => None,
    }
}

/// Parses and checks one plugin's output; returns the items or the first problem, naming the
/// item index, its type and the field path.
pub fn validate_output(json: &str, emits: &BTreeSet<String>) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(format!(
            "expected a JSON array of metric items, got {}",
            json_type(&value)
        ));
    };
    for (index, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(format!(
                "item {index}: expected an object, got {}",
                json_type(item)
            ));
        };
        let item_type = match fields.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(format!(
                    "item {index}: `type` must be a string, got {}",
                    json_type(other)
                ));
            }
            None => return Err(format!("item {index}: missing `type`")),
        };
        if !emits.contains(item_type) {
            let allowed: Vec<&str> = emits.iter().map(String::as_str).collect();
            return Err(format!(
                "item {index}: type `{item_type}` is not one this plugin may emit (allowed: {})",
                allowed.join(", ")
            ));
        }
        match fields.get("timestamp") {
            Some(Value::String(ts)) if chrono::DateTime::parse_from_rfc3339(ts).is_ok() => {}
            Some(other) => {
                return Err(format!(
                    "item {index} (`{item_type}`): `timestamp` must be RFC 3339 text, got {other}"
                ));
            }
            None => return Err(format!("item {index} (`{item_type}`): missing `timestamp`")),
        }
        if let Some(required) = schema(item_type) {
            check_fields(item, required, &String::new)
                .map_err(|why| format!("item {index} (`{item_type}`): {why}"))?;
        }
    }
    Ok(items)
}

/// Where a value is, for error messages only: built when a check fails, so that a valid item
/// (a pg_log item has thousands of entries) costs no string formatting.
type At<'a> = &'a dyn Fn() -> String;

fn check_fields(object: &Value, required: &[(&str, Kind)], at: At<'_>) -> Result<(), String> {
    for (name, kind) in required {
        let path = || {
            let at = at();
            if at.is_empty() {
                (*name).to_owned()
            } else {
                format!("{at}.{name}")
            }
        };
        let Some(value) = object.get(name) else {
            return Err(format!("missing field `{}`", path()));
        };
        check_kind(value, *kind, &path)?;
    }
    Ok(())
}

fn check_kind(value: &Value, kind: Kind, path: At<'_>) -> Result<(), String> {
    let ok = match (kind, value) {
        (Number, Value::Number(_)) | (Text, Value::String(_)) => true,
        (Int, Value::Number(n)) => n.is_i64(),
        (OptText, Value::String(_) | Value::Null) => true,
        (Percent, Value::Number(n)) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if !(0.0..=100.0).contains(&n) {
                return Err(format!("field `{}` is {n}, outside 0..100", path()));
            }
            true
        }
        (Object(fields), Value::Object(_)) => return check_fields(value, fields, path),
        (ArrayOf(fields), Value::Array(elements)) => {
            for (i, element) in elements.iter().enumerate() {
                let at = || format!("{}[{i}]", path());
                if !element.is_object() {
                    return Err(format!("field `{}` must be an object", at()));
                }
                check_fields(element, fields, &at)?;
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field `{}` must be {}, got {}",
            path(),
            kind_name(kind),
            json_type(value)
        ))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Number => "a number",
        Int => "an integer within the signed 64-bit range",
        Percent => "a percentage",
        Text => "a string",
        OptText => "a string or null",
        Object(_) => "an object",
        ArrayOf(_) => "an array of objects",
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn emits(types: &[&str]) -> BTreeSet<std::string::String> {
        types.iter().map(|t| t.to_string()).collect()
    }

    fn sysstat() -> Value {
        json!({"type": "sysstat", "timestamp": "2026-11-26T10:00:00.000Z",
            "cpu": {"user": 1.5, "system": 2.0, "idle": 95.0, "iowait": 1.5, "load_1m": 0.1, "load_5m": 0.2, "load_15m": 0.3},
            "memory": {"total_mb": 100.0, "free_mb": 10.0, "cached_mb": 20.0, "used_mb": 70.0},
            "disk_io": [{"device": "vda", "read_ops": 1, "write_ops": 2, "read_sectors": 3, "write_sectors": 4}]})
    }

    #[test]
    fn a_complete_sysstat_item_passes() {
        let items = validate_output(&json!([sysstat()]).to_string(), &emits(&["sysstat"])).unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn unknown_types_need_only_type_and_timestamp() {
        let out = json!([{"type": "custom", "timestamp": "2026-11-26T10:00:00Z", "anything": [1]}]);
        assert!(validate_output(&out.to_string(), &emits(&["custom"])).is_ok());
    }

    #[test]
    fn every_kind_of_bad_output_is_named() {
        let only = emits(&["sysstat"]);
        let cases: Vec<(std::string::String, &str)> = vec![
            ("{not json".into(), "not valid JSON"),
            (
                json!({"type": "sysstat"}).to_string(),
                "expected a JSON array",
            ),
            (json!([1]).to_string(), "item 0: expected an object"),
            (
                json!([{"timestamp": "2026-11-26T10:00:00Z"}]).to_string(),
                "missing `type`",
            ),
            (json!([{"type": 3}]).to_string(), "`type` must be a string"),
            (
                json!([{"type": "pg_stats", "timestamp": "x"}]).to_string(),
                "type `pg_stats` is not one this plugin may emit",
            ),
            (
                json!([{"type": "sysstat", "timestamp": "yesterday"}]).to_string(),
                "RFC 3339",
            ),
        ];
        for (output, expected) in cases {
            let err = validate_output(&output, &only).unwrap_err();
            assert!(err.contains(expected), "{output}: {err}");
        }
        let mut missing = sysstat();
        missing["cpu"].as_object_mut().unwrap().remove("iowait");
        let err = validate_output(&json!([missing]).to_string(), &only).unwrap_err();
        assert_eq!(err, "item 0 (`sysstat`): missing field `cpu.iowait`");
        let mut wrong = sysstat();
        wrong["disk_io"][0]["device"] = json!(7);
        let err = validate_output(&json!([wrong]).to_string(), &only).unwrap_err();
        assert!(
            err.contains("field `disk_io[0].device` must be a string"),
            "{err}"
        );
        let mut over = sysstat();
        over["cpu"]["idle"] = json!(140.0);
        assert!(
            validate_output(&json!([over]).to_string(), &only)
                .unwrap_err()
                .contains("outside 0..100")
        );
    }
}
