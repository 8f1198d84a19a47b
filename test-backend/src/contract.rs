//! The push endpoint as the real pgAnalytics backend decodes it, reproduced so that a batch this
//! fake accepts is one the real backend accepts, and an item the real backend drops is dropped
//! here too (and recorded, so a test can say so).
//!
//! The reference is the public backend, torresglauco/pganalytics-v3: `handleMetricsPush` in
//! `backend/internal/api/handlers.go` (gin 1.10, Go's `encoding/json`) and the structs
//! `MetricsPushRequest`, `QueryStatsRequest`, `QueryStatsDB` and `QueryInfo` of
//! `backend/pkg/models/models.go`. What it does with a push, in order:
//!
//! 1. **Authentication** (`CollectorAuthMiddleware`, before the body is read): the header must
//!    be exactly `Bearer <token>`, an HS256 token with `type: "access"` that has not expired;
//!    otherwise 401.
//! 2. **The envelope** is decoded with gin's `ShouldBindJSON`: `encoding/json` reads the first
//!    JSON value of the body as it arrived. `Content-Type` is not looked at and
//!    **`Content-Encoding` is not honoured**: a gzip body is bytes that are not JSON, so every
//!    gzip push answers 400. Anything after the first JSON value is ignored; an empty body is
//!    400 (`EOF`). The fields, with their Go types:
//!
//!    | field | Go type | rule |
//!    | --- | --- | --- |
//!    | `collector_id` | `string` | required (non-empty) |
//!    | `hostname` | `string` | required (non-empty) |
//!    | `timestamp` | `time.Time` | required: an RFC 3339 string, not Go's zero time |
//!    | `version` | `string` | optional |
//!    | `metrics_count` | `int` | optional; an integer literal (`3.0` fails); never compared with the array |
//!    | `metrics` | `[]interface{}` | optional; any JSON values |
//!
//!    A JSON value of another type (a string where Go wants `int`, a number where it wants
//!    `string`, an object where it wants a slice) fails the whole request with 400, as does a
//!    missing required field. `null` leaves a field at its zero value. Unknown fields are
//!    ignored, and field names match case-insensitively (`Collector_ID` is `collector_id`).
//!    Error bodies are `{"code": 400, "message": "Invalid metrics data", "details": "<Go's
//!    error>"}`.
//! 3. **`collector_id`** must equal the token's claim, else **401** `Collector ID mismatch`.
//! 4. **Items**, one by one. Numbers inside `metrics` were decoded as `float64` (no
//!    `UseNumber`), and an item is re-encoded with `json.Marshal` and decoded again into its
//!    struct, so every integer in an item goes through a `float64`: integers beyond 2^53 come
//!    out rounded (a queryid is stored rounded to 16–17 significant digits), `1.0` is accepted
//!    where Go wants `int64`, and an integer that rounds past the `int64` range (|x| ≥ 2^63 −
//!    512) fails. For each item:
//!    - not an object: skipped; no `type` key: skipped; a `type` that is not a string (`null`
//!      included): the unchecked type assertion panics and gin's recovery answers **500**
//!      (rows of earlier items stay stored);
//!    - `pg_query_stats` with a `database` key: decoded as `QueryStatsDB` (`database` string,
//!      `queries` a list of `QueryInfo`); with a `databases` key instead: as
//!      `QueryStatsRequest` (`timestamp` `time.Time`, `databases` a list of `QueryStatsDB`);
//!      with neither, or when decoding fails (e.g. `hash` as a string), **the item is dropped,
//!      logged on the server, and the push still answers 200**;
//!    - every other type (`sysstat`, `disk_usage`, `pg_stats`, `pg_server`, `pg_log`, ...):
//!      accepted and not stored.
//!
//!    `QueryInfo`: `hash`, `calls`, `rows`, `shared_blks_{hit,read,dirtied,written}`,
//!    `local_blks_{hit,read,dirtied,written}`, `temp_blks_{read,written}` are `int64`; `text`
//!    is `string`; `total_time`, `mean_time`, `min_time`, `max_time`, `stddev_time`,
//!    `blk_read_time`, `blk_write_time` are `float64`; `wal_records`, `wal_fpi`, `wal_bytes`
//!    (`*int64`) and `query_plan_time`, `query_exec_time` (`*float64`) are optional. One row is
//!    stored per query, stamped with the item's `timestamp` when it parses as RFC 3339 and with
//!    Go's zero time (0001-01-01T00:00:00Z) otherwise.
//! 5. **200** `{"status": "success", "collector_id", "metrics_inserted": <rows stored>,
//!    "bytes_received", "processing_time_ms", "next_config_version": 1,
//!    "next_check_in_seconds": 300}`.
//!
//! Known differences from Go, none reachable by a well-formed envelope: when one field is given
//! under several spellings, Go keeps the last in document order and this keeps the exact
//! spelling; of several type errors the one reported may differ; invalid UTF-8 is an error here
//! and replaced by U+FFFD in Go; RFC 3339 parsing is the `time` crate's.
//!
//! This module only decodes: it never answers requests and never panics on any input.

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

/// Why the real backend refuses a push body (400) or drops an item (200, not stored). The
/// messages say what Go's `encoding/json` or gin's validator would report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body holds no JSON value at all.
    #[error("empty body (EOF)")]
    Empty,
    /// The body does not start with a JSON value (a gzip body lands here).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// A JSON value of the wrong type for a struct field.
    #[error("json: cannot unmarshal {value} into Go struct field `{field}` of type `{go_type}`")]
    FieldType {
        /// `string`, `bool`, `array`, `object`, or `number <literal>` (the literal is shown
        /// where a number's value is the problem).
        value: String,
        /// `Struct.json.path`, e.g. `QueryInfo.queries.hash`.
        field: String,
        go_type: &'static str,
    },
    /// A JSON value of the wrong type for the whole target (e.g. an array for the envelope).
    #[error("json: cannot unmarshal {value} into Go value of type `{go_type}`")]
    ValueType {
        value: String,
        go_type: &'static str,
    },
    /// A `time.Time` field holding a string that is not RFC 3339.
    #[error("struct field `{field}`: {input:?} is not an RFC 3339 time")]
    Time { field: String, input: String },
    /// A `time.Time` field holding something other than a string.
    #[error("struct field `{field}` of type `time.Time` needs a JSON string, got {value}")]
    TimeNotString { field: String, value: String },
    /// gin's validator: a field tagged `binding:"required"` holds its zero value.
    #[error(
        "field `{field}` is required (validation for `MetricsPushRequest.{go_field}` failed on the `required` tag)"
    )]
    Required {
        field: &'static str,
        go_field: &'static str,
    },
}

/// The envelope as `MetricsPushRequest`, with the parsed JSON it came from.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The first JSON value of the body (what the fake records and test predicates see).
    pub envelope: Value,
    pub collector_id: String,
    pub hostname: String,
    pub timestamp: OffsetDateTime,
    pub version: String,
    pub metrics_count: i64,
    /// The key `metrics` was read from (field names match case-insensitively); `None` when
    /// absent or `null`.
    metrics_key: Option<String>,
}

impl PushRequest {
    /// `metrics`: empty when absent or `null`.
    pub fn metrics(&self) -> &[Value] {
        self.metrics_key
            .as_ref()
            .and_then(|key| self.envelope.get(key))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// One row the real backend would insert into its query statistics table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredQueryStat {
    /// The envelope's `collector_id` (the backend maps it to a UUID before storing).
    pub collector_id: String,
    pub database: String,
    /// The item's `timestamp`, or Go's zero time when it is missing or not RFC 3339.
    pub time: OffsetDateTime,
    /// The queryid as stored: after the trip through `float64` (see [`go_int64_after_float`]).
    pub hash: i64,
    pub text: String,
    pub calls: i64,
    pub total_time: f64,
    pub mean_time: f64,
    pub min_time: f64,
    pub max_time: f64,
    pub stddev_time: f64,
    pub rows: i64,
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    pub shared_blks_dirtied: i64,
    pub shared_blks_written: i64,
    pub local_blks_hit: i64,
    pub local_blks_read: i64,
    pub local_blks_dirtied: i64,
    pub local_blks_written: i64,
    pub temp_blks_read: i64,
    pub temp_blks_written: i64,
    pub blk_read_time: f64,
    pub blk_write_time: f64,
    pub wal_records: Option<i64>,
    pub wal_fpi: Option<i64>,
    pub wal_bytes: Option<i64>,
    pub query_plan_time: Option<f64>,
    pub query_exec_time: Option<f64>,
}

/// Why the real backend dropped one `pg_query_stats` item (it still answers 200).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("{0}")]
    Decode(DecodeError),
    #[error("invalid pg_query_stats metric: missing both `database` and `databases` fields")]
    NoDatabase,
}

/// A `pg_query_stats` item the real backend would have dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedItem {
    /// Position in the envelope's `metrics`.
    pub index: usize,
    pub reason: DropReason,
}

/// What the item loop of the handler makes of a decoded envelope.
#[derive(Debug, Clone, Default)]
pub struct ItemOutcome {
    pub stored: Vec<StoredQueryStat>,
    pub dropped: Vec<DroppedItem>,
    /// `Some(index)` when the item at `index` has a non-string `type`: the handler panics
    /// there (500), after storing the rows of the items before it.
    pub panicked_at: Option<usize>,
}

/// Go's zero `time.Time`, 0001-01-01T00:00:00Z.
pub fn go_zero_time() -> OffsetDateTime {
    // Year 1 is within the `time` crate's range, so this cannot fail; the epoch is a
    // harmless fallback for the impossible case.
    Date::from_calendar_date(1, Month::January, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Decodes a push body as `ShouldBindJSON` into `MetricsPushRequest` does (step 2 of the
/// module docs).
pub fn decode_push(body: &[u8]) -> Result<PushRequest, DecodeError> {
    // Go's Decoder reads one value and ignores whatever follows it.
    let envelope = match serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
    {
        None => return Err(DecodeError::Empty),
        Some(Ok(value)) => value,
        Some(Err(e)) => return Err(syntax_error(body, &e)),
    };
    let empty = Map::new();
    let fields = match &envelope {
        Value::Object(fields) => fields,
        // `null` decodes into nothing; the validator then finds every required field empty.
        Value::Null => &empty,
        other => {
            return Err(DecodeError::ValueType {
                value: json_kind(other).to_owned(),
                go_type: "models.MetricsPushRequest",
            });
        }
    };
    let go = GoStruct::new("MetricsPushRequest", "", fields, Numbers::AsWritten);
    let collector_id = go.string("collector_id")?;
    let hostname = go.string("hostname")?;
    let timestamp = go.time("timestamp")?;
    let version = go.string("version")?;
    let metrics_count = go.int("metrics_count", "int")?;
    // Type-checked only: the items stay in `envelope` rather than being copied.
    go.list("metrics", "[]interface {}", |_, _| Ok(()))?;
    let metrics_key = go.key_of("metrics");
    for (value, field, go_field) in [
        (collector_id.is_empty(), "collector_id", "CollectorID"),
        (hostname.is_empty(), "hostname", "Hostname"),
        (
            timestamp.is_none_or(|t| t == go_zero_time()),
            "timestamp",
            "Timestamp",
        ),
    ] {
        if value {
            return Err(DecodeError::Required { field, go_field });
        }
    }
    Ok(PushRequest {
        collector_id,
        hostname,
        timestamp: timestamp.unwrap_or_else(go_zero_time),
        version,
        metrics_count: metrics_count.unwrap_or(0),
        metrics_key,
        envelope,
    })
}

/// Runs the handler's loop over the items (step 4 of the module docs).
pub fn process_items(request: &PushRequest) -> ItemOutcome {
    let mut outcome = ItemOutcome::default();
    for (index, item) in request.metrics().iter().enumerate() {
        let Value::Object(fields) = item else {
            continue;
        };
        // A plain map lookup in Go: exact key, no case folding.
        match fields.get("type") {
            None => continue,
            Some(Value::String(kind)) if kind == "pg_query_stats" => {}
            Some(Value::String(_)) => continue,
            Some(_) => {
                outcome.panicked_at = Some(index);
                return outcome;
            }
        }
        match query_stats_item(&request.collector_id, fields) {
            Ok(rows) => outcome.stored.extend(rows),
            Err(reason) => outcome.dropped.push(DroppedItem { index, reason }),
        }
    }
    outcome
}

/// The integer Go stores for `value` in an item's `int64` field: `value` as a `float64`,
/// written back as Go writes floats and parsed as an `int64`; `None` when that overflows.
pub fn go_int64_after_float(value: i64) -> Option<i64> {
    go_float_text(value as f64).parse().ok()
}

fn query_stats_item(
    collector_id: &str,
    fields: &Map<String, Value>,
) -> Result<Vec<StoredQueryStat>, DropReason> {
    let databases: Vec<(String, Vec<QueryInfo>)>;
    let time;
    if fields.contains_key("database") {
        let item = GoStruct::new("QueryStatsDB", "", fields, Numbers::ThroughFloat);
        databases = vec![query_stats_db(&item).map_err(DropReason::Decode)?];
        // `time.Parse(time.RFC3339, ...)` of a string `timestamp`; zero time otherwise.
        time = match fields.get("timestamp") {
            Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339).ok(),
            _ => None,
        };
    } else if fields.contains_key("databases") {
        let item = GoStruct::new("QueryStatsRequest", "", fields, Numbers::ThroughFloat);
        let decoded = (|| {
            item.string("type")?;
            let time = item.time("timestamp")?;
            let databases = item.list("databases", "[]models.QueryStatsDB", |at, v| {
                item.nested("QueryStatsDB", at, v, query_stats_db)
            })?;
            Ok((time, databases.unwrap_or_default()))
        })();
        let (decoded_time, decoded_databases) = decoded.map_err(DropReason::Decode)?;
        time = decoded_time;
        databases = decoded_databases;
    } else {
        return Err(DropReason::NoDatabase);
    }
    let time = time.unwrap_or_else(go_zero_time);
    Ok(databases
        .into_iter()
        .flat_map(|(database, queries)| {
            queries
                .into_iter()
                .map(move |q| q.stored(collector_id, &database, time))
        })
        .collect())
}

fn query_stats_db(item: &GoStruct<'_>) -> Result<(String, Vec<QueryInfo>), DecodeError> {
    let database = item.string("database")?;
    let queries = item.list("queries", "[]models.QueryInfo", |at, v| {
        item.nested("QueryInfo", at, v, QueryInfo::decode)
    })?;
    Ok((database, queries.unwrap_or_default()))
}

/// `models.QueryInfo`, as decoded.
#[derive(Default)]
struct QueryInfo {
    hash: i64,
    text: String,
    calls: i64,
    total_time: f64,
    mean_time: f64,
    min_time: f64,
    max_time: f64,
    stddev_time: f64,
    rows: i64,
    shared_blks: [i64; 4],
    local_blks: [i64; 4],
    temp_blks: [i64; 2],
    blk_read_time: f64,
    blk_write_time: f64,
    wal: [Option<i64>; 3],
    query_plan_time: Option<f64>,
    query_exec_time: Option<f64>,
}

impl QueryInfo {
    fn decode(go: &GoStruct<'_>) -> Result<QueryInfo, DecodeError> {
        let int = |name| go.int(name, "int64").map(Option::unwrap_or_default);
        let float = |name| go.float(name).map(Option::unwrap_or_default);
        Ok(QueryInfo {
            hash: int("hash")?,
            text: go.string("text")?,
            calls: int("calls")?,
            total_time: float("total_time")?,
            mean_time: float("mean_time")?,
            min_time: float("min_time")?,
            max_time: float("max_time")?,
            stddev_time: float("stddev_time")?,
            rows: int("rows")?,
            shared_blks: [
                int("shared_blks_hit")?,
                int("shared_blks_read")?,
                int("shared_blks_dirtied")?,
                int("shared_blks_written")?,
            ],
            local_blks: [
                int("local_blks_hit")?,
                int("local_blks_read")?,
                int("local_blks_dirtied")?,
                int("local_blks_written")?,
            ],
            temp_blks: [int("temp_blks_read")?, int("temp_blks_written")?],
            blk_read_time: float("blk_read_time")?,
            blk_write_time: float("blk_write_time")?,
            wal: [
                go.int("wal_records", "*int64")?,
                go.int("wal_fpi", "*int64")?,
                go.int("wal_bytes", "*int64")?,
            ],
            query_plan_time: go.float("query_plan_time")?,
            query_exec_time: go.float("query_exec_time")?,
        })
    }

    fn stored(self, collector_id: &str, database: &str, time: OffsetDateTime) -> StoredQueryStat {
        let [shared_hit, shared_read, shared_dirtied, shared_written] = self.shared_blks;
        let [local_hit, local_read, local_dirtied, local_written] = self.local_blks;
        let [temp_read, temp_written] = self.temp_blks;
        let [wal_records, wal_fpi, wal_bytes] = self.wal;
        StoredQueryStat {
            collector_id: collector_id.to_owned(),
            database: database.to_owned(),
            time,
            hash: self.hash,
            text: self.text,
            calls: self.calls,
            total_time: self.total_time,
            mean_time: self.mean_time,
            min_time: self.min_time,
            max_time: self.max_time,
            stddev_time: self.stddev_time,
            rows: self.rows,
            shared_blks_hit: shared_hit,
            shared_blks_read: shared_read,
            shared_blks_dirtied: shared_dirtied,
            shared_blks_written: shared_written,
            local_blks_hit: local_hit,
            local_blks_read: local_read,
            local_blks_dirtied: local_dirtied,
            local_blks_written: local_written,
            temp_blks_read: temp_read,
            temp_blks_written: temp_written,
            blk_read_time: self.blk_read_time,
            blk_write_time: self.blk_write_time,
            wal_records,
            wal_fpi,
            wal_bytes,
            query_plan_time: self.query_plan_time,
            query_exec_time: self.query_exec_time,
        }
    }
}

/// How the numbers being decoded were produced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// Straight from the request body: an integer field needs an integer literal.
    AsWritten,
    /// From an item, which went through `interface{}` (`float64`) and `json.Marshal` first.
    ThroughFloat,
}

/// One JSON object being decoded into a Go struct, with what error messages need to name it.
struct GoStruct<'a> {
    /// The Go struct's name, e.g. `QueryInfo`.
    name: &'static str,
    /// JSON field path from the value the decoding started at, e.g. `queries` (empty at the
    /// top).
    path: String,
    fields: &'a Map<String, Value>,
    numbers: Numbers,
}

impl<'a> GoStruct<'a> {
    fn new(
        name: &'static str,
        path: &str,
        fields: &'a Map<String, Value>,
        numbers: Numbers,
    ) -> GoStruct<'a> {
        GoStruct {
            name,
            path: path.to_owned(),
            fields,
            numbers,
        }
    }

    /// `Struct.path.field`, as Go names a field in its errors.
    fn at(&self, field: &str) -> String {
        if self.path.is_empty() {
            format!("{}.{field}", self.name)
        } else {
            format!("{}.{}.{field}", self.name, self.path)
        }
    }

    /// The JSON value for the Go field tagged `json:"<field>"`: Go matches keys
    /// case-insensitively and decodes every matching key (so each must have the right type);
    /// the exact spelling wins here.
    fn values(&self, field: &str) -> Vec<&'a Value> {
        let wanted = go_fold(field);
        let mut matching: Vec<(&String, &Value)> = self
            .fields
            .iter()
            .filter(|(key, _)| go_fold(key) == wanted)
            .collect();
        matching.sort_by_key(|(key, _)| key.as_str() == field);
        matching.into_iter().map(|(_, v)| v).collect()
    }

    /// The key [`GoStruct::values`] takes the value of `field` from, if the value is an array.
    fn key_of(&self, field: &str) -> Option<String> {
        let wanted = go_fold(field);
        let mut matching: Vec<&String> = self
            .fields
            .iter()
            .filter(|(key, value)| go_fold(key) == wanted && value.is_array())
            .map(|(key, _)| key)
            .collect();
        matching.sort_by_key(|key| key.as_str() == field);
        matching.pop().cloned()
    }

    fn decode<T>(
        &self,
        field: &str,
        one: impl Fn(&Value) -> Result<Option<T>, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        let mut last = None;
        for value in self.values(field) {
            if let Some(decoded) = one(value)? {
                last = Some(decoded);
            }
        }
        Ok(last)
    }

    fn type_error(&self, field: &str, value: String, go_type: &'static str) -> DecodeError {
        DecodeError::FieldType {
            value,
            field: self.at(field),
            go_type,
        }
    }

    /// A `string` field; `""` when absent or null.
    fn string(&self, field: &str) -> Result<String, DecodeError> {
        self.decode(field, |v| match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(self.type_error(field, json_kind(other).to_owned(), "string")),
        })
        .map(Option::unwrap_or_default)
    }

    /// An integer field (`int`, `int64` or `*int64`); `None` when absent or null.
    fn int(&self, field: &str, go_type: &'static str) -> Result<Option<i64>, DecodeError> {
        self.decode(field, |v| match v {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let literal = match self.numbers {
                    Numbers::AsWritten => n.to_string(),
                    Numbers::ThroughFloat => go_float_text(as_f64(n)),
                };
                match literal.parse::<i64>() {
                    Ok(i) => Ok(Some(i)),
                    Err(_) => Err(self.type_error(field, format!("number {literal}"), go_type)),
                }
            }
            other => Err(self.type_error(field, json_kind(other).to_owned(), go_type)),
        })
    }

    /// A `float64` or `*float64` field; `None` when absent or null.
    fn float(&self, field: &str) -> Result<Option<f64>, DecodeError> {
        self.decode(field, |v| match v {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(Some(as_f64(n))),
            other => Err(self.type_error(field, json_kind(other).to_owned(), "float64")),
        })
    }

    /// A `time.Time` field; `None` (Go's zero time) when absent or null.
    fn time(&self, field: &str) -> Result<Option<OffsetDateTime>, DecodeError> {
        self.decode(field, |v| match v {
            Value::Null => Ok(None),
            Value::String(s) => {
                OffsetDateTime::parse(s, &Rfc3339)
                    .map(Some)
                    .map_err(|_| DecodeError::Time {
                        field: self.at(field),
                        input: s.clone(),
                    })
            }
            other => Err(DecodeError::TimeNotString {
                field: self.at(field),
                value: json_kind(other).to_owned(),
            }),
        })
    }

    /// A slice field; `None` when absent or null. `element` gets the field's path and each
    /// element.
    fn list<T>(
        &self,
        field: &str,
        go_type: &'static str,
        element: impl Fn(&str, &Value) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let path = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        };
        self.decode(field, |v| match v {
            Value::Null => Ok(None),
            Value::Array(elements) => elements
                .iter()
                .map(|e| element(&path, e))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(self.type_error(field, json_kind(other).to_owned(), go_type)),
        })
    }

    /// One element of a slice of structs: an object, or `null` (a zero struct).
    fn nested<T>(
        &self,
        name: &'static str,
        path: &str,
        value: &Value,
        decode: impl Fn(&GoStruct<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let empty = Map::new();
        let fields = match value {
            Value::Object(fields) => fields,
            Value::Null => &empty,
            other => {
                return Err(DecodeError::FieldType {
                    value: json_kind(other).to_owned(),
                    field: format!("{}.{path}", self.name),
                    go_type: if name == "QueryInfo" {
                        "models.QueryInfo"
                    } else {
                        "models.QueryStatsDB"
                    },
                });
            }
        };
        decode(&GoStruct::new(name, path, fields, self.numbers))
    }
}

/// What Go's `encoding/json` calls a JSON value in its type errors.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn as_f64(n: &Number) -> f64 {
    // Every JSON number serde_json accepted has an f64 value (huge integers round).
    n.as_f64().unwrap_or(f64::NAN)
}

/// The text Go's `json.Marshal` writes for a `float64`: the shortest digits that read back as
/// the same value, in plain notation from 1e-6 up to 1e21 and in exponent notation (`1e+21`,
/// `1.5e-7`) outside it. Rust's `Display` and `LowerExp` give the same digits.
fn go_float_text(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                format!("{mantissa}e+{exponent}")
            }
            _ => text,
        }
    } else {
        format!("{f}")
    }
}

/// Go's case folding of field names: ASCII letters, plus the two non-ASCII letters that fold
/// to ASCII ones (KELVIN SIGN to `k`, LATIN SMALL LETTER LONG S to `s`).
fn go_fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\u{212A}' => 'k',
            '\u{17F}' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn syntax_error(body: &[u8], error: &serde_json::Error) -> DecodeError {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if body.starts_with(&[0x1f, 0x8b]) {
        DecodeError::Syntax(
            "invalid character '\\x1f' looking for beginning of value (the body is gzip; \
             the real backend does not decode Content-Encoding)"
                .into(),
        )
    } else if let Some(byte) = first.filter(|b| !b"{[\"-0123456789tfn".contains(b)) {
        DecodeError::Syntax(format!(
            "invalid character {:?} looking for beginning of value",
            char::from(byte)
        ))
    } else {
        DecodeError::Syntax(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(metrics: Value) -> Value {
        let count = metrics.as_array().map_or(0, Vec::len);
        json!({
            "collector_id": "c1",
            "hostname": "h",
            "timestamp": "2026-11-02T10:00:00Z",
            "version": "0.1.0",
            "metrics_count": count,
            "metrics": metrics,
        })
    }

    fn decode(v: &Value) -> Result<PushRequest, DecodeError> {
        decode_push(v.to_string().as_bytes())
    }

    fn query(hash: Value) -> Value {
        json!({
            "hash": hash, "text": "select $1", "calls": 3, "total_time": 1.5,
            "mean_time": 0.5, "min_time": 0.25, "max_time": 1, "stddev_time": 0.1,
            "rows": 3, "shared_blks_hit": 7, "shared_blks_read": 0,
            "shared_blks_dirtied": 0, "shared_blks_written": 0, "local_blks_hit": 0,
            "local_blks_read": 0, "local_blks_dirtied": 0, "local_blks_written": 0,
            "temp_blks_read": 0, "temp_blks_written": 0, "blk_read_time": 0.0,
            "blk_write_time": 0.0
        })
    }

    fn query_item(queries: Value) -> Value {
        json!({
            "type": "pg_query_stats", "timestamp": "2026-11-02T10:00:01Z",
            "database": "app", "queries": queries, "queries_total": 12
        })
    }

    fn items(metrics: Value) -> ItemOutcome {
        process_items(&decode(&envelope(metrics)).expect("envelope decodes"))
    }

    #[test]
    fn a_well_formed_envelope_decodes_with_go_types() {
        let request = decode(&envelope(json!([{"type": "sysstat"}]))).expect("decodes");
        assert_eq!(request.collector_id, "c1");
        assert_eq!(request.metrics_count, 1);
        assert_eq!(request.metrics().len(), 1);
        assert_eq!(request.timestamp.unix_timestamp(), 1_793_613_600);
    }

    #[test]
    fn a_gzip_body_and_other_non_json_bodies_are_syntax_errors() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, envelope(json!([])).to_string().as_bytes())
            .expect("gzip");
        let gz = gz.finish().expect("gzip");
        let err = decode_push(&gz).expect_err("gzip is not JSON");
        assert!(err.to_string().contains("'\\x1f'"), "{err}");
        for body in [&b"{not json"[..], b"<html>", b"\xff\xfe"] {
            assert!(
                matches!(decode_push(body), Err(DecodeError::Syntax(_))),
                "{body:?}"
            );
        }
        assert_eq!(decode_push(b"").unwrap_err(), DecodeError::Empty);
        assert_eq!(decode_push(b" \n ").unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn trailing_data_after_the_envelope_is_ignored_as_go_does() {
        let body = format!("{} trailing garbage", envelope(json!([])));
        assert!(decode_push(body.as_bytes()).is_ok());
    }

    #[test]
    fn envelope_fields_of_the_wrong_go_type_fail() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "collector_id",
                json!(42),
                "`MetricsPushRequest.collector_id` of type `string`",
            ),
            ("hostname", json!(["h"]), "cannot unmarshal array"),
            ("version", json!(1.5), "of type `string`"),
            ("metrics_count", json!("3"), "cannot unmarshal string"),
            ("metrics_count", json!(3.5), "number 3.5"),
            ("metrics_count", json!(1.0), "number 1.0"),
            (
                "metrics_count",
                json!(u64::MAX),
                "number 18446744073709551615",
            ),
            ("metrics", json!({"a": 1}), "`[]interface {}`"),
            ("timestamp", json!(1_700_000_000), "needs a JSON string"),
            ("timestamp", json!("yesterday"), "not an RFC 3339 time"),
        ];
        for (field, value, expected) in cases {
            let mut env = envelope(json!([]));
            env[field] = value.clone();
            let err = decode(&env).expect_err(field).to_string();
            assert!(err.contains(expected), "{field} = {value}: {err}");
        }
    }

    #[test]
    fn required_fields_and_null() {
        for (field, empty) in [
            ("collector_id", json!("")),
            ("collector_id", Value::Null),
            ("hostname", json!("")),
            ("timestamp", Value::Null),
            ("timestamp", json!("0001-01-01T00:00:00Z")),
        ] {
            let mut env = envelope(json!([]));
            env[field] = empty.clone();
            match decode(&env) {
                Err(DecodeError::Required { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field} = {empty}: {other:?}"),
            }
            let mut env = envelope(json!([]));
            env.as_object_mut().map(|o| o.remove(field));
            assert!(decode(&env).is_err(), "{field} missing");
        }
        // Optional fields may be null or missing; the count is never compared.
        let mut env = envelope(json!([{"type": "x"}]));
        env["version"] = Value::Null;
        env["metrics_count"] = json!(99);
        env["metrics"] = json!([1, "two", null]);
        let request = decode(&env).expect("lenient where Go is");
        assert_eq!(request.metrics_count, 99);
        assert!(decode(&json!(null)).is_err());
        assert!(matches!(
            decode(&json!([1])),
            Err(DecodeError::ValueType { .. })
        ));
    }

    #[test]
    fn field_names_match_case_insensitively_and_unknown_fields_are_ignored() {
        let env = json!({
            "Collector_ID": "c1", "HOSTNAME": "h", "timestamp": "2026-11-02T10:00:00Z",
            "extra": {"anything": true}
        });
        let request = decode(&env).expect("Go folds case");
        assert_eq!(request.collector_id, "c1");
        assert_eq!(request.hostname, "h");
        let mut env = envelope(json!([]));
        env.as_object_mut().map(|o| o.remove("metrics"));
        env["METRICS"] = json!([query_item(json!([query(json!(5))]))]);
        let outcome = process_items(&decode(&env).expect("decodes"));
        assert_eq!(
            outcome.stored.len(),
            1,
            "items under `METRICS` are processed"
        );
        // Every spelling is decoded: a badly typed one fails even beside a good one.
        let mut env = envelope(json!([]));
        env["Hostname"] = json!(1);
        assert!(decode(&env).is_err());
    }

    #[test]
    fn pg_query_stats_rows_are_stored_with_go_types() {
        let outcome = items(json!([query_item(json!([query(json!(42))]))]));
        assert!(outcome.dropped.is_empty(), "{:?}", outcome.dropped);
        let row = &outcome.stored[0];
        assert_eq!(row.hash, 42);
        assert_eq!(row.database, "app");
        assert_eq!(row.collector_id, "c1");
        assert_eq!(row.calls, 3);
        assert_eq!(row.max_time, 1.0);
        assert_eq!(row.time.unix_timestamp(), 1_793_613_601);
        assert_eq!(row.wal_records, None);
    }

    /// The defect of issue 11: a queryid sent as a string loses the whole item, with a 200.
    #[test]
    fn a_hash_of_the_wrong_type_drops_the_item() {
        for bad in [
            json!("3756413316754916125"),
            json!(true),
            json!([1]),
            json!({}),
        ] {
            let outcome = items(json!([
                query_item(json!([query(json!(1)), query(bad.clone())])),
                {"type": "pg_stats", "timestamp": "2026-11-02T10:00:01Z"}
            ]));
            assert!(
                outcome.stored.is_empty(),
                "{bad}: nothing of the item is stored"
            );
            assert_eq!(outcome.dropped.len(), 1, "{bad}");
            assert_eq!(outcome.dropped[0].index, 0);
            let why = outcome.dropped[0].reason.to_string();
            assert!(
                why.contains("`QueryInfo.queries.hash` of type `int64`"),
                "{bad}: {why}"
            );
        }
    }

    #[test]
    fn every_int64_field_rejects_text_and_fractions_and_every_float_field_text() {
        let ints = [
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
            "wal_records",
            "wal_fpi",
            "wal_bytes",
        ];
        for field in ints {
            for bad in [json!("1"), json!(1.5)] {
                let mut q = query(json!(1));
                q[field] = bad.clone();
                let outcome = items(json!([query_item(json!([q]))]));
                assert_eq!(outcome.dropped.len(), 1, "{field} = {bad}");
            }
        }
        for field in [
            "total_time",
            "mean_time",
            "min_time",
            "max_time",
            "stddev_time",
            "blk_read_time",
            "blk_write_time",
            "query_plan_time",
            "query_exec_time",
        ] {
            let mut q = query(json!(1));
            q[field] = json!("1.5");
            assert_eq!(
                items(json!([query_item(json!([q]))])).dropped.len(),
                1,
                "{field}"
            );
        }
        let mut q = query(json!(1));
        q["text"] = json!(12);
        assert_eq!(items(json!([query_item(json!([q]))])).dropped.len(), 1);
    }

    /// Items go through `float64`: what survives and what changes.
    #[test]
    fn integers_in_items_go_through_float64() {
        let cases = [
            (
                json!(3_756_413_316_754_916_125_i64),
                Some(3_756_413_316_754_916_400_i64),
            ),
            (
                json!(-7_923_856_129_826_213_913_i64),
                Some(-7_923_856_129_826_214_000),
            ),
            (
                json!(9_007_199_254_740_993_i64),
                Some(9_007_199_254_740_992),
            ),
            (json!(1.0), Some(1)),
            (json!(1e3), Some(1000)),
            (json!(i64::MAX), None),
            (json!(i64::MIN), None),
            // Just below 2^63 − 512 a value rounds down and fits; from there on it rounds to
            // 2^63, which Go writes as 9223372036854776000: out of range, the item is dropped.
            (
                json!(9_223_372_036_854_775_295_i64),
                Some(9_223_372_036_854_775_000),
            ),
            (json!(9_223_372_036_854_775_296_i64), None),
            (json!(-9_223_372_036_854_775_296_i64), None),
        ];
        for (hash, stored) in cases {
            let outcome = items(json!([query_item(json!([query(hash.clone())]))]));
            assert_eq!(
                outcome.stored.first().map(|r| r.hash),
                stored,
                "{hash}: {:?}",
                outcome.dropped
            );
            if let Some(i) = hash.as_i64() {
                assert_eq!(go_int64_after_float(i), stored, "{hash}");
            }
        }
    }

    #[test]
    fn go_float_text_matches_go_marshal() {
        assert_eq!(go_float_text(1e21), "1e+21");
        assert_eq!(go_float_text(1.5e-7), "1.5e-7");
        assert_eq!(go_float_text(1e20), "100000000000000000000");
        assert_eq!(
            go_float_text(12_345_678_901_234_567_890_f64),
            "12345678901234567000"
        );
        assert_eq!(go_float_text(5.0), "5");
        assert_eq!(go_float_text(0.1), "0.1");
        assert_eq!(go_float_text(0.0), "0");
    }

    #[test]
    fn nulls_are_zero_values_and_a_null_query_is_a_zero_row() {
        let mut q = query(Value::Null);
        q["calls"] = Value::Null;
        let outcome = items(json!([query_item(json!([q, null]))]));
        assert!(outcome.dropped.is_empty());
        assert_eq!(outcome.stored.len(), 2);
        assert_eq!(outcome.stored[0].hash, 0);
        assert_eq!(outcome.stored[0].calls, 0);
        assert_eq!(outcome.stored[1].text, "");
    }

    #[test]
    fn item_shapes_the_handler_skips_drops_or_panics_on() {
        let outcome = items(json!([
            7,
            "text",
            {"no_type": true},
            {"type": "pg_query_stats", "timestamp": "2026-11-02T10:00:01Z"},
            {"type": "pg_query_stats", "database": "app", "queries": {"a": 1}},
            {"type": "pg_query_stats", "database": "app", "queries": [7]},
            {"type": "pg_stats", "database": 5},
        ]));
        assert!(outcome.stored.is_empty());
        let dropped: Vec<usize> = outcome.dropped.iter().map(|d| d.index).collect();
        assert_eq!(dropped, [3, 4, 5]);
        assert_eq!(outcome.dropped[0].reason, DropReason::NoDatabase);
        assert_eq!(outcome.panicked_at, None);

        for bad_type in [Value::Null, json!(1), json!(["pg_query_stats"])] {
            let outcome = items(json!([
                query_item(json!([query(json!(1))])),
                {"type": bad_type, "timestamp": "2026-11-02T10:00:01Z"},
                query_item(json!([query(json!(2))])),
            ]));
            assert_eq!(outcome.panicked_at, Some(1), "{bad_type}");
            assert_eq!(outcome.stored.len(), 1, "rows before the panic stay");
        }
    }

    #[test]
    fn the_wrapped_databases_form_and_item_timestamps() {
        let outcome = items(json!([{
            "type": "pg_query_stats",
            "timestamp": "2026-11-02T12:00:00+02:00",
            "databases": [
                {"database": "a", "queries": [query(json!(1))]},
                {"database": "b", "queries": [query(json!(2)), query(json!(3))]}
            ]
        }]));
        let rows: Vec<(&str, i64)> = outcome
            .stored
            .iter()
            .map(|r| (r.database.as_str(), r.hash))
            .collect();
        assert_eq!(rows, [("a", 1), ("b", 2), ("b", 3)]);
        assert_eq!(outcome.stored[0].time.unix_timestamp(), 1_793_613_600);

        let outcome = items(json!([{
            "type": "pg_query_stats", "timestamp": "noon", "databases": []
        }]));
        assert_eq!(
            outcome.dropped.len(),
            1,
            "a bad time.Time fails QueryStatsRequest"
        );

        // The single form parses its timestamp leniently: a bad one is Go's zero time.
        let mut item = query_item(json!([query(json!(1))]));
        item["timestamp"] = json!("noon");
        let outcome = items(json!([item]));
        assert_eq!(outcome.stored[0].time, go_zero_time());
    }
}
