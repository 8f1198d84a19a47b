//! The SDK for pganalytics collector plugins: the only crate that generates bindings for the
//! `pganalytics:collector@0.1.0` WIT world, plus the small helpers that keep a collector a few
//! dozen lines.
//!
//! A collector implements [`Collector`] and exports it with [`export_collector!`]:
//!
//! ```no_run
//! use pganalytics_guest::{Collector, Error, Value, json, procfs};
//!
//! struct Uptime;
//!
//! impl Collector for Uptime {
//!     fn collect() -> Result<Vec<Value>, Error> {
//!         let text = procfs::read("uptime")?;
//!         let seconds: f64 = text
//!             .split_whitespace()
//!             .next()
//!             .and_then(|s| s.parse().ok())
//!             .ok_or_else(|| Error::Invalid("procfs `uptime`: no seconds".into()))?;
//!         Ok(vec![pganalytics_guest::item("uptime", json!({ "seconds": seconds }))?])
//!     }
//! }
//!
//! pganalytics_guest::export_collector!(Uptime);
//! # fn main() {}
//! ```
//!
//! Permissions follow from use: a component imports only the interfaces whose functions it
//! actually calls (the linker drops the others), and the host refuses a plugin that imports an
//! interface the operator did not grant. Calling a helper of this crate therefore never adds an
//! import beyond the interface it is documented to use, and this crate must never call a granted
//! interface (`procfs`, `fs-stats`, `log-tail`, `postgres`) behind a collector's back.
//!
//! Natively (for unit tests of a collector's pure code) this crate compiles too, but every host
//! call panics there: the generated import shims are `unreachable!()` off wasm.

mod time;

pub use time::{civil_from_days, format_rfc3339_millis, now_rfc3339};

/// The generated bindings. Collectors use the re-exports below; this module is public only
/// because [`export_collector!`] expands to paths inside it.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "collector",
        // Relative to this crate's Cargo.toml: the contract lives at the repository root, shared
        // with the host runtime.
        path: "../../wit",
        // `export_collector!` (below) wraps the generated macro so that collectors return typed
        // JSON values instead of a string; the generated one stays hidden behind a `__` name.
        export_macro_name: "__export_collector_world",
        pub_export_macro: true,
        default_bindings_module: "pganalytics_guest::bindings",
    });
}

use bindings::pganalytics::collector as wit;

/// Why a host call (or a collector) failed. A denial is a value to handle, never a trap.
pub use wit::types::Error;

/// Read-only files below /proc (needs a `procfs` grant listing the paths).
pub use wit::procfs;

/// Filesystem capacity of the granted mount points (needs an `fs-stats` grant).
pub use wit::fs_stats;

/// New whole lines from granted log files (needs a `log-tail` grant).
pub use wit::log_tail;

/// Read-only SQL on host-owned connections (needs a `postgres` grant).
pub use wit::postgres;

/// The raw `settings` interface; see [`setting`] for typed access. Needs no grant.
pub use wit::settings;

/// Re-exported so collectors build items without naming `serde_json` themselves.
pub use serde_json::{self, Value, json};

/// A collector plugin: one call produces the metric items of one run.
pub trait Collector {
    /// Collects once. Each item must be a JSON object with a string `type` and an RFC 3339
    /// `timestamp` (see [`item`]); the host checks them against the schema of that type.
    fn collect() -> Result<Vec<Value>, Error>;
}

/// A collector that writes the JSON array text itself, for outputs too large to hold twice (as
/// a `Value` tree and as text). The host still parses and checks every byte of it.
pub trait RawCollector {
    /// Collects once and returns the JSON array of metric items as text.
    fn collect_json() -> Result<String, Error>;
}

/// Exports a collector as the component's `collect` function.
///
/// `export_collector!(MyCollector)` takes a [`Collector`] and serialises its items into the JSON
/// array the WIT contract asks for; `export_collector!(raw MyCollector)` takes a
/// [`RawCollector`] and passes its text through. Either expands to wit-bindgen's `collect`
/// export (and its post-return cleanup). Use it once per crate.
#[macro_export]
macro_rules! export_collector {
    // First, so that `raw` is matched as a keyword before `$collector:ty` would try (and fail)
    // to parse `raw MyCollector` as a type.
    (raw $collector:ty) => {
        $crate::export_collector!(@glue <$collector as $crate::RawCollector>::collect_json());
    };
    (@glue $body:expr) => {
        const _: () = {
            struct __PganalyticsExport;

            impl $crate::bindings::Guest for __PganalyticsExport {
                fn collect() -> ::core::result::Result<::std::string::String, $crate::Error> {
                    $body
                }
            }

            $crate::bindings::__export_collector_world!(
                __PganalyticsExport with_types_in $crate::bindings
            );
        };
    };
    ($collector:ty) => {
        $crate::export_collector!(@glue $crate::collect_json::<$collector>());
    };
}

/// Runs `C::collect` and serialises its items; the body of the `collect` export.
#[doc(hidden)]
pub fn collect_json<C: Collector>() -> Result<String, Error> {
    let items = C::collect()?;
    serde_json::to_string(&items)
        .map_err(|e| Error::Invalid(format!("serialising the collected items: {e}")))
}

/// Builds a metric item of type `kind` from `fields` (anything that serialises to a JSON object),
/// adding `type` and, unless `fields` already has one, a `timestamp` of now.
pub fn item(kind: &str, fields: impl serde::Serialize) -> Result<Value, Error> {
    let value = serde_json::to_value(fields)
        .map_err(|e| Error::Invalid(format!("metric item `{kind}`: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(Error::Invalid(format!(
            "metric item `{kind}`: fields must serialise to a JSON object"
        )));
    };
    map.insert("type".to_owned(), Value::String(kind.to_owned()));
    if !map.contains_key("timestamp") {
        map.insert("timestamp".to_owned(), Value::String(now_rfc3339()));
    }
    Ok(Value::Object(map))
}

/// The JSON array text of one metric item of type `kind`, for a [`RawCollector`] that returns a
/// single item: `[{"type": kind, "timestamp": now, ...fields}]`, serialised straight from
/// `fields` without building a [`Value`] tree first (what [`item`] and [`Collector`] do).
/// `fields` must serialise to a JSON object without a `type` or `timestamp` key.
pub fn single_item_json(kind: &str, fields: impl serde::Serialize) -> Result<String, Error> {
    #[derive(serde::Serialize)]
    struct Item<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: String,
        #[serde(flatten)]
        fields: T,
    }
    let item = Item {
        kind,
        timestamp: now_rfc3339(),
        fields,
    };
    serde_json::to_string(&[item]).map_err(|e| Error::Invalid(format!("metric item `{kind}`: {e}")))
}

/// The value of the plugin setting `key` (from `[plugins.NAME.settings]`), decoded from JSON.
///
/// `Ok(None)` when the key is not set. A value of the wrong shape is an error rather than
/// `None`, so that a typo in the operator's TOML is reported instead of silently ignored.
pub fn setting<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    let Some(json) = settings::get(key) else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| Error::Invalid(format!("setting `{key}`: {e}")))
}

/// The state saved by the previous successful run, if any, decoded from JSON.
///
/// State is only a cache between runs (previous counters and the like), so a blob that no
/// longer decodes, e.g. written by an older version of the plugin, is logged and treated as
/// absent rather than failing every future run.
pub fn load_state<T: serde::de::DeserializeOwned>() -> Option<T> {
    let bytes = wit::state::get()?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            log::warn(&format!("ignoring saved state that does not decode: {e}"));
            None
        }
    }
}

/// Saves `value` as JSON for the next run; the host keeps it only if this run's output is
/// accepted, and refuses blobs over its size cap with `Error::TooLarge`.
pub fn save_state<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Invalid(format!("serialising plugin state: {e}")))?;
    wit::state::set(&bytes)
}

/// The raw `state` interface (a byte blob per plugin) next to the JSON helpers
/// [`load_state`] and [`save_state`]. Needs no grant.
pub mod state {
    pub use super::wit::state::{get, set};
}

/// Leveled messages into the host log. Needs no grant; the host caps the volume per run.
pub mod log {
    pub use super::wit::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// What every [`Error`] variant carries, without matching on all seven.
pub trait ErrorExt {
    /// The WIT case name: `denied`, `not-found`, `invalid`, `timeout`, `too-large`,
    /// `unavailable` or `io`.
    fn kind(&self) -> &'static str;
    /// The host's message, which names the resource involved.
    fn message(&self) -> &str;
}

impl ErrorExt for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::NotFound(_) => "not-found",
            Error::Invalid(_) => "invalid",
            Error::Timeout(_) => "timeout",
            Error::TooLarge(_) => "too-large",
            Error::Unavailable(_) => "unavailable",
            Error::Io(_) => "io",
        }
    }

    fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Invalid(m)
            | Error::Timeout(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Io(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_adds_type_and_timestamp() {
        let value = item("probe", json!({ "n": 1 })).expect("an object is a valid item");
        assert_eq!(value["type"], "probe");
        assert_eq!(value["n"], 1);
        let timestamp = value["timestamp"].as_str().expect("timestamp is a string");
        assert!(timestamp.ends_with('Z'), "{timestamp}");
    }

    #[test]
    fn item_keeps_an_explicit_timestamp() {
        let value = item("probe", json!({ "timestamp": "2024-01-01T00:00:00.000Z" }))
            .expect("an object is a valid item");
        assert_eq!(value["timestamp"], "2024-01-01T00:00:00.000Z");
    }

    #[test]
    fn single_item_json_is_what_item_builds() {
        #[derive(serde::Serialize)]
        struct Fields {
            n: u32,
            list: Vec<&'static str>,
        }
        let fields = || Fields {
            n: 1,
            list: vec!["a"],
        };
        let text = single_item_json("probe", fields()).expect("an object is a valid item");
        let mut direct: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
        let mut built = vec![item("probe", fields()).expect("an object is a valid item")];
        for value in direct.iter_mut().chain(built.iter_mut()) {
            let timestamp = value["timestamp"].take();
            assert!(
                timestamp.as_str().is_some_and(|t| t.ends_with('Z')),
                "{timestamp}"
            );
        }
        assert_eq!(direct, built);
        let err = single_item_json("probe", [1, 2]).expect_err("an array is not an item");
        assert_eq!(err.kind(), "invalid");
    }

    #[test]
    fn item_refuses_non_objects() {
        let err = item("probe", json!([1, 2])).expect_err("an array is not an item");
        assert_eq!(err.kind(), "invalid");
        assert!(err.message().contains("`probe`"), "{}", err.message());
    }

    #[test]
    fn error_kind_and_message() {
        let err = Error::TooLarge("state: 1048576 bytes".into());
        assert_eq!(err.kind(), "too-large");
        assert_eq!(err.message(), "state: 1048576 bytes");
    }
}
