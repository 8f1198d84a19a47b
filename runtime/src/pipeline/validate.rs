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

pub use super::items::{Items, SERVER_FIELD, serialize_items_flat};
use crate::host::guest_text;

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

/// Checks one plugin's output and keeps it; returns the items or the first problem, naming the
/// item index, its type and the field path. With `server`, every item is stamped with it (see
/// the module's doc) and an item that has a top-level `server` field of its own is refused.
pub fn validate_output(
    json: String,
    emits: &BTreeSet<String>,
    server: Option<&str>,
) -> Result<Items, String> {
    let len = check_output(&json, emits, server.is_some())?;
    // The text is known to be valid JSON; this only re-owns it (no copy when the string has
    // no spare capacity, as a string lifted from the guest has not).
    let array = RawValue::from_string(json).map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(Items::new(array, len, server.map(Arc::from)))
}

/// Checks `json` and returns how many items it holds; `stamped`: a top-level `server` field is
/// refused (the host sets it).
pub fn check_output(json: &str, emits: &BTreeSet<String>, stamped: bool) -> Result<usize, String> {
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
type Problem = RefCell<Option<String>>;

fn fail<E: de::Error>(problem: &Problem, message: String) -> E {
    problem.borrow_mut().get_or_insert(message);
    E::custom("invalid output")
}

/// What a JSON value is, for messages.
#[derive(Clone, Copy)]
enum Found {
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
trait Expect<'de>: Sized {
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
struct KeySeed<F>(F);

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

/// Where a value is, for error messages only: rendered when a check fails, so that a valid
/// item (a pg_log item has thousands of entries) costs no string formatting. Every segment is
/// a schema name or an index, never guest text.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// An object that must have `fields` with their kinds (other fields are skipped unread).
struct FieldsSeed<'p> {
    fields: &'static [(&'static str, Kind)],
    path: Path<'p>,
    problem: &'p Problem,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let fields = self.fields;
        let mut seen = 0u64;
        let position = |key: &str| fields.iter().position(|(name, _)| *name == key);
        while let Some(key) = map.next_key_seed(KeySeed(position))? {
            match key {
                Some(i) => {
                    let (name, kind) = self.fields[i];
                    map.next_value_seed(KindSeed {
                        kind,
                        path: Path::Field(&self.path, name),
                        problem: self.problem,
                    })?;
                    seen |= 1 << i;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some((name, _)) = self
            .fields
            .iter()
            .enumerate()
            .find(|(i, _)| seen & (1 << i) == 0)
            .map(|(_, field)| field)
        {
            return Err(fail(
                self.problem,
                format!("missing field `{}`", Path::Field(&self.path, name)),
            ));
        }
        Ok(())
    }
}

/// One required value of a given kind.
struct KindSeed<'p> {
    kind: Kind,
    path: Path<'p>,
    problem: &'p Problem,
}

impl KindSeed<'_> {
    fn mismatch<E: de::Error>(&self, found: Found) -> E {
        fail(
            self.problem,
            format!(
                "field `{}` must be {}, got {found}",
                self.path,
                kind_name(self.kind)
            ),
        )
    }

    fn number<E: de::Error>(&self, value: f64, is_i64: bool) -> Result<(), E> {
        match self.kind {
            Number => Ok(()),
            Int if is_i64 => Ok(()),
            Percent if (0.0..=100.0).contains(&value) => Ok(()),
            Percent => Err(fail(
                self.problem,
                format!("field `{}` is {value}, outside 0..100", self.path),
            )),
            _ => Err(self.mismatch(Found::Number)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KindSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(kind_name(self.kind))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.mismatch(Found::Bool))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64, true)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64, i64::try_from(v).is_ok())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v, false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        match self.kind {
            Text | OptText => Ok(()),
            _ => Err(self.mismatch(Found::Text)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        match self.kind {
            OptText => Ok(()),
            _ => Err(self.mismatch(Found::Null)),
        }
    }
    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<(), M::Error> {
        match self.kind {
            Object(fields) => FieldsSeed {
                fields,
                path: self.path,
                problem: self.problem,
            }
            .visit_map(map),
            _ => Err(self.mismatch(Found::Object)),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Kind::ArrayOf(fields) = self.kind else {
            return Err(self.mismatch(Found::Array));
        };
        let mut i = 0;
        loop {
            let path = Path::Index(&self.path, i);
            let element = ElementSeed(FieldsSeed {
                fields,
                path,
                problem: self.problem,
            });
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// An element of an `ArrayOf`: must be an object with the fields.
struct ElementSeed<'p>(FieldsSeed<'p>);

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Expect<'de> for ElementSeed<'_> {
    type Value = ();
    fn expecting(&self) -> &'static str {
        "an object"
    }
    fn unexpected<E: de::Error>(self, _: Found) -> Result<(), E> {
        Err(fail(
            self.0.problem,
            format!("field `{}` must be an object", self.0.path),
        ))
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Expect::expecting(self))
    }
    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<(), M::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.unexpected(Found::Array)
    }
    unexpected_others!(@scalars);
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
