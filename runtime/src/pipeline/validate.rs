//! Checks a plugin's output before anything of it is accepted: a JSON array of objects, each
//! with a string `type` the plugin may emit and an RFC 3339 `timestamp`, and for the types of
//! the backend contract, the required fields with the right JSON types.
//!
//! Extra fields are allowed (the contract says so for `pg_log`, and it keeps old runtimes
//! compatible with newer collectors); missing or mistyped required fields are not.
//!
//! Memory: the output is checked as it is parsed, without building a `serde_json::Value` tree
//! (which costs 5-35x the text). Each item is borrowed as a `&RawValue` slice of the output
//! and walked by visitors that look only at the required fields; the accepted output is kept
//! as one `Box<RawValue>` (the guest's own text, not copied again) and spliced verbatim into
//! the envelope, item by item as the array is walked. The host holds the output once, plus the
//! envelope (see the `validation_memory` test for the measured figures).
//!
//! Nothing of the output is quoted in an error without going through `host::guest_text`.
//!
//! Server stamp: with a server (the plugin has a postgres grant), an item that has a top-level
//! `server` field of its own is refused; the runtime writes that field (see `super::items`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::contract::{FieldsSeed, Path, schema};
pub use super::items::{Items, SERVER_FIELD, serialize_items_flat};
use super::scan;
use crate::host::guest_text;

/// Checks one plugin's output and keeps it; returns the items or the first problem, naming the
/// item index, its type and the field path. With `server`, every item is stamped with it (see
/// the module's doc) and an item that has a top-level `server` field of its own is refused.
pub fn validate_output(
    json: String,
    emits: &BTreeSet<String>,
    server: Option<&str>,
) -> Result<Items, String> {
    let len = check_output(&json, emits, server.is_some())?;
    // The text was just checked: it is kept as it is, not parsed again (no copy when the
    // string has no spare capacity, as a string lifted from the guest has not).
    Ok(Items::new(
        json.into_boxed_str(),
        len,
        server.map(Arc::from),
    ))
}

/// Checks `json` and returns how many items it holds; `stamped`: a top-level `server` field is
/// refused (the host sets it).
///
/// An output is first read once, checking every rule as the text goes by
/// ([`check_in_one_pass`]); only when that pass does not accept it is it checked again item by
/// item, which finds and names the problem. The item-by-item check is the reference: the one
/// pass accepts nothing it refuses (see the `one_pass_accepts_only_what_items_accept` test).
pub fn check_output(json: &str, emits: &BTreeSet<String>, stamped: bool) -> Result<usize, String> {
    match check_in_one_pass(json, emits, stamped) {
        Some(len) => Ok(len),
        None => check_item_by_item(json, emits, stamped),
    }
}

/// The whole output in one pass of the byte scanner (`super::scan`), or `None` at the first
/// thing it does not accept (without saying what: [`check_item_by_item`] does).
fn check_in_one_pass(json: &str, emits: &BTreeSet<String>, stamped: bool) -> Option<usize> {
    scan::check(json, emits, stamped).ok()
}

/// The reference check: each item sliced out of the array and checked on its own, naming the
/// first problem.
pub(super) fn check_item_by_item(
    json: &str,
    emits: &BTreeSet<String>,
    stamped: bool,
) -> Result<usize, String> {
    if !json.trim_start().starts_with('[') {
        // Not an array: say whether it is JSON at all before naming what it is.
        serde_json::from_str::<IgnoredAny>(json)
            .map_err(|e| guest_text::quote(&format!("not valid JSON: {e}")))?;
    }
    let problem = Problem::default();
    let mut de = serde_json::Deserializer::from_str(json);
    let checked = de
        .deserialize_any(OutputVisitor {
            emits,
            stamped,
            problem: &problem,
        })
        .and_then(|len| de.end().map(|()| len));
    checked.map_err(|e| {
        problem
            .into_inner()
            .unwrap_or_else(|| guest_text::quote(&format!("not valid JSON: {e}")))
    })
}

/// The first problem found, carried out of serde (whose own errors would add a position and
/// lose the item index).
pub(super) type Problem = RefCell<Option<String>>;

pub(super) fn fail<E: de::Error>(problem: &Problem, message: String) -> E {
    problem.borrow_mut().get_or_insert(message);
    E::custom("invalid output")
}

/// What a JSON value is, for messages.
#[derive(Clone, Copy)]
pub(super) enum Found {
    Null,
    Bool,
    Number,
    Text,
    Array,
    Object,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Null => "null",
            Found::Bool => "a boolean",
            Found::Number => "a number",
            Found::Text => "a string",
            Found::Array => "an array",
            Found::Object => "an object",
        })
    }
}

/// A visitor that only needs to name what it found when it is not what it wanted.
pub(super) trait Expect<'de>: Sized {
    type Value;
    fn expecting(&self) -> &'static str;
    fn unexpected<E: de::Error>(self, found: Found) -> Result<Self::Value, E>;
}

/// Implements the `visit_*` methods a visitor does not want by naming what was found.
macro_rules! unexpected_others {
    () => {
        unexpected_others!(@scalars);
        fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<Self::Value, M::Error> {
            self.unexpected(Found::Object)
        }
    };
    (@scalars) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            self.unexpected(Found::Bool)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            self.unexpected(Found::Number)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            self.unexpected(Found::Number)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            self.unexpected(Found::Number)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            self.unexpected(Found::Text)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.unexpected(Found::Null)
        }
    };
}
pub(super) use unexpected_others;

/// The top level: an array of items, each checked as it is reached.
struct OutputVisitor<'a> {
    emits: &'a BTreeSet<String>,
    stamped: bool,
    problem: &'a Problem,
}

impl<'de> Expect<'de> for OutputVisitor<'_> {
    type Value = usize;
    fn expecting(&self) -> &'static str {
        "a JSON array of metric items"
    }
    fn unexpected<E: de::Error>(self, found: Found) -> Result<usize, E> {
        Err(fail(
            self.problem,
            format!("expected a JSON array of metric items, got {found}"),
        ))
    }
}

impl<'de> Visitor<'de> for OutputVisitor<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Expect::expecting(self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut index = 0;
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            check_item(index, item.get(), self.emits, self.stamped)
                .map_err(|message| fail::<A::Error>(self.problem, message))?;
            index += 1;
        }
        Ok(index)
    }
    unexpected_others!();
}

/// What the first pass over an item learns: its `type` and whether its `timestamp` is good.
#[derive(Default)]
struct Header<'de> {
    item_type: Option<Result<std::borrow::Cow<'de, str>, Found>>,
    timestamp: Option<Result<(), String>>,
    /// It has a top-level `server` field.
    server: bool,
}

/// Checks one item (the raw JSON text of one element of the output array); `stamped`: the
/// host stamps `server`, so the item may not have it.
fn check_item(
    index: usize,
    item: &str,
    emits: &BTreeSet<String>,
    stamped: bool,
) -> Result<(), String> {
    let problem = Problem::default();
    let mut de = serde_json::Deserializer::from_str(item);
    let header = de
        .deserialize_any(HeaderVisitor {
            index,
            problem: &problem,
        })
        .map_err(|_| {
            problem
                .take()
                .unwrap_or_else(|| format!("item {index}: not valid JSON"))
        })?;
    let item_type = match header.item_type {
        Some(Ok(t)) => t,
        Some(Err(found)) => {
            return Err(format!(
                "item {index}: `type` must be a string, got {found}"
            ));
        }
        None => return Err(format!("item {index}: missing `type`")),
    };
    if !emits.contains(item_type.as_ref()) {
        let allowed: Vec<&str> = emits.iter().map(String::as_str).collect();
        return Err(format!(
            "item {index}: type `{}` is not one this plugin may emit (allowed: {})",
            guest_text::quote(&item_type),
            allowed.join(", ")
        ));
    }
    // From here the type is one the operator listed: safe to quote as it is.
    match header.timestamp {
        Some(Ok(())) => {}
        Some(Err(got)) => {
            return Err(format!(
                "item {index} (`{item_type}`): `timestamp` must be RFC 3339 text, got {got}"
            ));
        }
        None => return Err(format!("item {index} (`{item_type}`): missing `timestamp`")),
    }
    if stamped && header.server {
        return Err(format!(
            "item {index} (`{item_type}`): field `{SERVER_FIELD}` is set by the runtime for a \
             plugin with a postgres grant (the grant's server); the plugin may not set it"
        ));
    }
    if let Some(required) = schema(&item_type) {
        let mut de = serde_json::Deserializer::from_str(item);
        FieldsSeed {
            fields: required,
            path: Path::Root,
            problem: &problem,
        }
        .deserialize(&mut de)
        .map_err(|_| {
            let why = problem
                .take()
                .unwrap_or_else(|| "not valid JSON".to_owned());
            format!("item {index} (`{item_type}`): {why}")
        })?;
    }
    Ok(())
}

struct HeaderVisitor<'a> {
    index: usize,
    problem: &'a Problem,
}

impl<'de> Expect<'de> for HeaderVisitor<'_> {
    type Value = Header<'de>;
    fn expecting(&self) -> &'static str {
        "an object"
    }
    fn unexpected<E: de::Error>(self, found: Found) -> Result<Header<'de>, E> {
        Err(fail(
            self.problem,
            format!("item {}: expected an object, got {found}", self.index),
        ))
    }
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = Header<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Expect::expecting(self))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Header<'de>, M::Error> {
        let mut header = Header::default();
        while let Some(key) = map.next_key_seed(KeySeed(|key: &str| match key {
            "type" => Some(0),
            "timestamp" => Some(1),
            SERVER_FIELD => Some(2),
            _ => None,
        }))? {
            match key {
                Some(0) => header.item_type = Some(map.next_value_seed(TextSeed)?),
                Some(1) => {
                    header.timestamp = Some(match map.next_value_seed(TextSeed)? {
                        Ok(ts) if chrono::DateTime::parse_from_rfc3339(&ts).is_ok() => Ok(()),
                        Ok(ts) => Err(format!("\"{}\"", guest_text::cut(&ts, 64))),
                        Err(found) => Err(found.to_string()),
                    })
                }
                Some(2) => {
                    header.server = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(header)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Header<'de>, A::Error> {
        self.unexpected(Found::Array)
    }
    unexpected_others!(@scalars);
}

/// A map key: the index of the field it names (`self.0` tells), if any. Allocates nothing.
pub(super) struct KeySeed<F>(pub(super) F);

impl<'de, F: Fn(&str) -> Option<usize>> DeserializeSeed<'de> for KeySeed<F> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<usize>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de, F: Fn(&str) -> Option<usize>> Visitor<'de> for KeySeed<F> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok((self.0)(key))
    }
}

/// A string value, borrowed when it has no escapes; anything else is named.
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Result<std::borrow::Cow<'de, str>, Found>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Result<std::borrow::Cow<'de, str>, Found>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Ok(v.to_owned().into()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(Found::Bool))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(Found::Number))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(Found::Number))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(Found::Number))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(Found::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(Found::Array))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(Found::Object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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
    fn one_pass_accepts_only_what_items_accept() {
        let all = emits(&["sysstat", "pg_log", "custom"]);
        let ts = "2026-11-26T10:00:00.000Z";
        let entry = json!({"timestamp": ts, "level": "LOG", "message": "m"});
        // Accepted by both, in one pass: fields in any order (a `Value` sorts them, so `type`
        // comes after the required fields), types without a schema, extra fields.
        let valid = [
            json!([sysstat()]).to_string(),
            json!([{"type": "pg_log", "timestamp": ts, "database": "d", "entries": [entry]}])
                .to_string(),
            format!(
                r#"[{{"type":"pg_log","timestamp":"{ts}","database":"d","entries":[{entry}],"x":[1]}}]"#
            ),
            format!(
                r#"[{{"entries":[{entry}],"database":"d","timestamp":"{ts}","type":"pg_log"}}]"#
            ),
            format!(
                r#"[{{"type":"custom","timestamp":"{ts}","anything":{{"a":[1,"b"]}}}},{}]"#,
                sysstat()
            ),
            "[]".to_owned(),
        ];
        for json in &valid {
            let len = check_item_by_item(json, &all, false).expect(json);
            assert_eq!(check_in_one_pass(json, &all, false), Some(len), "{json}");
        }
        // Refused by the reference check: the one pass must not accept any of them.
        let invalid = [
            "{}".to_owned(),
            "[1]".to_owned(),
            "[[]]".to_owned(),
            "[{}]".to_owned(),
            "[] x".to_owned(),
            format!(r#"[{{"type":"nope","timestamp":"{ts}"}}]"#),
            format!(r#"[{{"type":1,"timestamp":"{ts}"}}]"#),
            r#"[{"type":"custom"}]"#.to_owned(),
            r#"[{"type":"custom","timestamp":"yesterday"}]"#.to_owned(),
            r#"[{"type":"custom","timestamp":null}]"#.to_owned(),
            format!(r#"[{{"type":"custom","timestamp":"{ts}","timestamp":"no"}}]"#),
            format!(r#"[{{"type":"custom","type":"nope","timestamp":"{ts}"}}]"#),
            format!(r#"[{{"type":"pg_log","timestamp":"{ts}","database":"d"}}]"#),
            format!(r#"[{{"type":"pg_log","timestamp":"{ts}","database":1,"entries":[]}}]"#),
            format!(r#"[{{"database":1,"type":"pg_log","timestamp":"{ts}","entries":[]}}]"#),
            format!(
                r#"[{{"entries":[{{"level":"LOG"}}],"database":"d","type":"pg_log","timestamp":"{ts}"}}]"#
            ),
            format!(
                r#"[{{"type":"pg_log","timestamp":"{ts}","database":"d","entries":[{{"timestamp":"t","level":"L","message":2}}]}}]"#
            ),
            format!(r#"[{{"type":"pg_log","timestamp":"{ts}","database":"d","entries":[1]}}]"#),
            format!(r#"[{{"type":"pg_log","timestamp":"{ts}","database":"d","entries":{{}}}}]"#),
            format!(r#"[{{"type":"custom","timestamp":"{ts}"}},{{"type":"custom"}}]"#),
            format!(r#"[{{"type":"custom","timestamp":"{ts}","x":"unterminated}}]"#),
        ];
        for json in &invalid {
            assert!(check_item_by_item(json, &all, false).is_err(), "{json}");
            assert_eq!(check_in_one_pass(json, &all, false), None, "{json}");
            assert_eq!(
                check_output(json, &all, false),
                check_item_by_item(json, &all, false),
                "the message is the reference check's"
            );
        }
        // What the one pass leaves to the reference check is still judged by it (here a
        // repeated `type`, whose last value counts).
        let repeated = format!(r#"[{{"type":"nope","type":"custom","timestamp":"{ts}"}}]"#);
        assert_eq!(check_in_one_pass(&repeated, &all, false), None);
        assert_eq!(check_output(&repeated, &all, false), Ok(1));
        // The server stamp: refused in one pass only when the host stamps.
        let with_server = format!(r#"[{{"type":"custom","timestamp":"{ts}","server":"x"}}]"#);
        assert_eq!(check_in_one_pass(&with_server, &all, false), Some(1));
        assert_eq!(check_in_one_pass(&with_server, &all, true), None);
        assert!(check_item_by_item(&with_server, &all, true).is_err());
    }

    #[test]
    fn a_complete_sysstat_item_passes() {
        let items =
            validate_output(json!([sysstat()]).to_string(), &emits(&["sysstat"]), None).unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn unknown_types_need_only_type_and_timestamp() {
        let out = json!([{"type": "custom", "timestamp": "2026-11-26T10:00:00Z", "anything": [1]}]);
        assert!(validate_output(out.to_string(), &emits(&["custom"]), None).is_ok());
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
            let err = validate_output(output.clone(), &only, None).unwrap_err();
            assert!(err.contains(expected), "{output}: {err}");
        }
        let mut missing = sysstat();
        missing["cpu"].as_object_mut().unwrap().remove("iowait");
        let err = validate_output(json!([missing]).to_string(), &only, None).unwrap_err();
        assert_eq!(err, "item 0 (`sysstat`): missing field `cpu.iowait`");
        let mut wrong = sysstat();
        wrong["disk_io"][0]["device"] = json!(7);
        let err = validate_output(json!([wrong]).to_string(), &only, None).unwrap_err();
        assert!(
            err.contains("field `disk_io[0].device` must be a string"),
            "{err}"
        );
        let mut over = sysstat();
        over["cpu"]["idle"] = json!(140.0);
        assert!(
            validate_output(json!([over]).to_string(), &only, None)
                .unwrap_err()
                .contains("outside 0..100")
        );
    }

    #[test]
    fn integers_of_the_contract_are_json_integers_in_the_i64_range() {
        let item = |hash: &str| {
            format!(
                r#"[{{"type":"pg_query_stats","timestamp":"2026-11-26T10:00:00Z","database":"d",
                "queries":[{{"hash":{hash},"text":"q","calls":1,"total_time":1.5,"mean_time":1.5,"rows":0}}]}}]"#
            )
        };
        let only = emits(&["pg_query_stats"]);
        assert!(validate_output(item("-9223372036854775808"), &only, None).is_ok());
        assert!(validate_output(item("9223372036854775807"), &only, None).is_ok());
        for bad in ["9223372036854775808", "1.5", "1e3", "\"1\""] {
            let err = validate_output(item(bad), &only, None).unwrap_err();
            assert!(
                err.contains(
                    "field `queries[0].hash` must be an integer within the signed 64-bit range"
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn guest_text_in_errors_is_cut_and_escaped() {
        let only = emits(&["sysstat"]);
        let long_type = format!("x\\n{}", "y".repeat(1 << 20));
        let err =
            validate_output(format!(r#"[{{"type":"{long_type}"}}]"#), &only, None).unwrap_err();
        assert!(err.len() < 1024 && !err.contains('\n'), "{err}");
        let long_ts = "z".repeat(1 << 20);
        let out = format!(r#"[{{"type":"sysstat","timestamp":"{long_ts}"}}]"#);
        let err = validate_output(out, &only, None).unwrap_err();
        assert!(err.len() < 1024 && err.contains("RFC 3339"), "{err}");
        let err = validate_output("[tru".into(), &only, None).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn accepted_items_are_spliced_verbatim() {
        let text = r#"[ {"type":"custom","timestamp":"2026-11-26T10:00:00Z","n":1.50,"s":"\u00e9"} ,
            {"type":"custom","timestamp":"2026-11-26T10:00:01Z"}]"#;
        let items = validate_output(text.to_owned(), &emits(&["custom"]), None).unwrap();
        assert_eq!(items.len(), 2);
        let flat = serde_json::to_string(&items).unwrap();
        assert_eq!(
            flat,
            r#"[{"type":"custom","timestamp":"2026-11-26T10:00:00Z","n":1.50,"s":"\u00e9"},{"type":"custom","timestamp":"2026-11-26T10:00:01Z"}]"#
        );
        let value: Value = serde_json::from_str(&flat).unwrap();
        assert_eq!(value[0]["s"], "é");
    }

    #[test]
    fn items_of_a_postgres_plugin_are_stamped_with_its_server() {
        let only = emits(&["custom", "pg_server"]);
        let text = r#"[{"type":"custom","timestamp":"2026-11-26T10:00:00Z","n":1.50,"s":"\u00e9","o":{"server":"inner"}},
            {"type":"custom","timestamp":"2026-11-26T10:00:01Z"}]"#;
        let items = validate_output(text.to_owned(), &only, Some("replica")).unwrap();
        assert_eq!(items.server(), Some("replica"));
        let flat = serde_json::to_string(&items).unwrap();
        // The stamp first, then the guest's own fields and raw values as written.
        assert_eq!(
            flat,
            r#"[{"server":"replica","type":"custom","timestamp":"2026-11-26T10:00:00Z","n":1.50,"s":"\u00e9","o":{"server":"inner"}},{"server":"replica","type":"custom","timestamp":"2026-11-26T10:00:01Z"}]"#
        );
        // Several runs, stamped or not, in one envelope array.
        let plain = validate_output(
            r#"[{"type":"custom","timestamp":"2026-11-26T10:00:02Z","server":"own"}]"#.to_owned(),
            &only,
            None,
        )
        .unwrap();
        let mut out = serde_json::Serializer::new(Vec::new());
        serialize_items_flat(&[items, plain], &mut out).unwrap();
        let all: Value = serde_json::from_slice(&out.into_inner()).unwrap();
        let servers: Vec<&str> = (0..3).map(|i| all[i]["server"].as_str().unwrap()).collect();
        assert_eq!(servers, ["replica", "replica", "own"]);
        assert_eq!(all.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_postgres_plugin_may_not_set_server_itself() {
        let only = emits(&["custom"]);
        let cases = [
            r#"[{"type":"custom","timestamp":"2026-11-26T10:00:00Z"},{"type":"custom","timestamp":"2026-11-26T10:00:00Z","server":"primary"}]"#,
            // Any JSON value, and a name spelt with an escape, is the same field.
            r#"[{"type":"custom","timestamp":"2026-11-26T10:00:00Z"},{"type":"custom","server":null,"timestamp":"2026-11-26T10:00:00Z"}]"#,
            r#"[{"type":"custom","timestamp":"2026-11-26T10:00:00Z"},{"\u0073erver":{"a":1},"type":"custom","timestamp":"2026-11-26T10:00:00Z"}]"#,
        ];
        for text in cases {
            let err = validate_output(text.to_owned(), &only, Some("replica")).unwrap_err();
            assert!(
                err.starts_with("item 1 (`custom`): field `server` is set by the runtime"),
                "{text}: {err}"
            );
            // Without a postgres grant the field is the plugin's own.
            assert!(validate_output(text.to_owned(), &only, None).is_ok());
        }
    }

    /// Counts the heap bytes live on the current thread while a measurement is on, and their
    /// peak. Per thread, so other tests running at the same time do not disturb it.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            static ON: Cell<bool> = const { Cell::new(false) };
            static LIVE: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        fn add(delta: isize) {
            if ON.with(Cell::get) {
                let live = LIVE.with(|l| {
                    l.set(l.get() + delta);
                    l.get()
                });
                PEAK.with(|p| p.set(p.get().max(live)));
            }
        }

        // SAFETY: delegates to the system allocator; the bookkeeping allocates nothing.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        /// Runs `f` and returns its result and the peak of heap bytes it had live at once
        /// (what it received counts from the start: pass it in, built before).
        pub fn peak<T>(input_bytes: usize, f: impl FnOnce() -> T) -> (T, usize) {
            LIVE.with(|l| l.set(input_bytes as isize));
            PEAK.with(|p| p.set(input_bytes as isize));
            ON.with(|on| on.set(true));
            let out = f();
            ON.with(|on| on.set(false));
            (out, PEAK.with(Cell::get).max(0) as usize)
        }
    }

    #[global_allocator]
    static ALLOCATOR: counting::Counting = counting::Counting;

    /// Output of `max_output` bytes, validated and serialized into an envelope: the host's
    /// heap peak stays under 3x the output (issue 13), also with every item stamped with a
    /// server name of the longest length. Measured (4 MiB): 2.00x for pg_log-like output (the
    /// output itself, plus the envelope it is written into) and for 71 000 small items unstamped;
    /// 2.81x for those items each stamped with a 32-byte name (the envelope grows by 44 bytes an
    /// item: 1.75x the output, plus the output itself).
    #[test]
    fn validation_memory() {
        const MAX_OUTPUT: usize = 4 << 20;
        let entry = r#"{"timestamp":"2026-11-26 10:00:00.123 UTC","level":"LOG","message":"duration: 0.123 ms  statement: SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"}"#;
        let small = r#"{"type":"custom","timestamp":"2026-11-26T10:00:00Z","v":1}"#;
        let mut pg_log = String::from(
            r#"[{"type":"pg_log","timestamp":"2026-11-26T10:00:00Z","database":"app","entries":["#,
        );
        while pg_log.len() + entry.len() + 4 < MAX_OUTPUT {
            pg_log.push_str(entry);
            pg_log.push(',');
        }
        pg_log.pop();
        pg_log.push_str("]}]");
        let mut many = String::from("[");
        while many.len() + small.len() + 2 < MAX_OUTPUT {
            many.push_str(small);
            many.push(',');
        }
        many.pop();
        many.push(']');
        let only = emits(&["pg_log", "custom"]);
        for ((name, output), server) in [("pg_log", pg_log), ("many small items", many)]
            .into_iter()
            // The longest server name there can be.
            .flat_map(|run| {
                [
                    (run.clone(), None),
                    (run, Some("abcdefghijklmnopqrstuvwxyz-01234")),
                ]
            })
        {
            let size = output.len();
            // As lifted from the guest: no spare capacity.
            let mut output = std::hint::black_box(output);
            output.shrink_to_fit();
            let collector = crate::config::CollectorConfig {
                id: "c".into(),
                hostname: "h".into(),
                state_dir: None,
                log_format: crate::config::LogFormat::Text,
                log_level: "info".into(),
                listen: None,
                listen_public: false,
                unhealthy_after_push_intervals:
                    crate::config::DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS,
                cache_dir: None,
                precompiled_dir: None,
            };
            let (batch, peak) = counting::peak(size, || {
                let items = validate_output(output, &only, server).unwrap();
                let envelope = super::super::Envelope::new(&collector, vec![items]);
                let batch = envelope.encode().unwrap();
                (batch.len(), envelope.metrics_count)
            });
            let ratio = peak as f64 / size as f64;
            eprintln!(
                "{name} (server {server:?}): {size} bytes of output, heap peak {peak} bytes \
                 ({ratio:.2}x), {batch:?}"
            );
            assert!(
                peak < 3 * size,
                "{name} ({server:?}): peak {peak} for {size} bytes ({ratio:.2}x)"
            );
        }
    }
}
