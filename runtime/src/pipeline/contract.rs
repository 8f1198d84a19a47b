//! The backend contract's required fields, per item type, and the checks that walk an item
//! against them: each required field present with the right JSON type, at any depth, other
//! fields skipped unread. Used by `validate` (which checks the envelope-level rules: an array
//! of objects, `type`, `timestamp`, the server stamp) for the item types it knows.
//!
//! Messages name the field path from the schema (never guest text) and are built only when a
//! check fails, so a valid item costs no formatting.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::{Expect, Found, KeySeed, Problem, fail, unexpected_others};

/// The JSON type a required field must have.
#[derive(Clone, Copy)]
pub(super) enum Kind {
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
pub(super) fn schema(item_type: &str) -> Option<&'static [(&'static str, Kind)]> {
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

/// Where a value is, for error messages only: rendered when a check fails, so that a valid
/// item (a pg_log item has thousands of entries) costs no string formatting. Every segment is
/// a schema name or an index, never guest text.
#[derive(Clone, Copy)]
pub(super) enum Path<'p> {
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
pub(super) struct FieldsSeed<'p> {
    pub(super) fields: &'static [(&'static str, Kind)],
    pub(super) path: Path<'p>,
    pub(super) problem: &'p Problem,
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
pub(super) struct KindSeed<'p> {
    pub(super) kind: Kind,
    pub(super) path: Path<'p>,
    pub(super) problem: &'p Problem,
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
