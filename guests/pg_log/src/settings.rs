//! The collector's settings (`[plugins.pg_log.settings]`): read from the host's JSON object,
//! checked, and turned into typed values with their defaults.
//!
//! Every problem is an `Error::Invalid` naming the setting (`pg_log setting `format`: ...`),
//! including keys this collector does not know, so that a typo in the operator's TOML is
//! reported instead of silently ignored. This module must never fall back to a default for a
//! value that is present but wrong.

use crate::entry::Level;
use crate::prefix::LinePrefix;
use jiff::tz::TimeZone;
use pganalytics_guest::{Error, Value};
use serde_json::Map;

/// Bytes asked of one `read-new` call: what the host allows per call by default, so a busy log
/// takes few calls.
pub const DEFAULT_READ_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes of log read per run. Bounds the run's memory and time; what is left is read next run.
pub const DEFAULT_MAX_BYTES_PER_RUN: u64 = 16 * 1024 * 1024;

/// Output JSON a run aims to stay under. The host refuses a run whose output is over its cap
/// (4 MiB by default) and then offers the same lines again, so a run whose lines make more output
/// than the cap would fail every time from then on: the read loop stops asking for lines well
/// before this is reached (see `Run::next_read_bytes`). Raise it together with the host's cap.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 3 * 1024 * 1024;

/// Longest text field of an entry. One giant statement (a multi-megabyte `INSERT`) must not
/// fill the run's memory and output; a cut field is flagged `truncated`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 65_536;

/// Entries per item; more are split into further items of the same database, never dropped.
pub const DEFAULT_MAX_ENTRIES_PER_ITEM: u64 = 10_000;

/// Debian's packaging default (`postgresql-common`); PostgreSQL's own is `'%m [%p] '`.
pub const DEFAULT_LOG_LINE_PREFIX: &str = "%m [%p] %q%u@%d ";

/// Longest `log_timezone` accepted: IANA names are far shorter (the longest is 32 bytes), and
/// the name is echoed in error messages.
const MAX_TIMEZONE_NAME_BYTES: usize = 64;

/// Which log format the files are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Stderr,
    Csvlog,
    Jsonlog,
    /// By file name: `.csv` is csvlog, `.json` jsonlog, anything else stderr.
    Auto,
}

impl Format {
    /// The format of the file at `path`: the configured one, or for `auto` the one its
    /// extension says (PostgreSQL names csvlog and jsonlog files `.csv` and `.json`).
    pub fn for_path(self, path: &str) -> Format {
        match self {
            Format::Auto if path.ends_with(".csv") => Format::Csvlog,
            Format::Auto if path.ends_with(".json") => Format::Jsonlog,
            Format::Auto => Format::Stderr,
            format => format,
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    pub log_line_prefix: LinePrefix,
    /// The server's `log_timezone` (an IANA zone from the zone table carried in this plugin),
    /// which resolves zone abbreviations such as `CET`; `None` leaves them unresolved.
    pub log_timezone: Option<TimeZone>,
    pub read_bytes: u64,
    pub max_bytes_per_run: u64,
    pub max_output_bytes: u64,
    /// Entries below this severity are left out; `None` keeps all.
    pub min_level: Option<Level>,
    pub max_message_bytes: usize,
    pub max_entries_per_item: usize,
}

/// The settings this collector knows, for the message about an unknown one.
const KNOWN: [&str; 9] = [
    "format",
    "log_line_prefix",
    "log_timezone",
    "read_bytes",
    "max_bytes_per_run",
    "max_output_bytes",
    "min_level",
    "max_message_bytes",
    "max_entries_per_item",
];

impl Settings {
    /// Settings from the host's JSON object of them (`settings.all()`).
    pub fn from_json(text: &str) -> Result<Settings, Error> {
        let map: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("pg_log settings: not a JSON object: {e}")))?;
        if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(invalid(
                unknown,
                format!("unknown setting (known: {})", KNOWN.join(", ")),
            ));
        }
        let format = match string(&map, "format")?.as_deref() {
            None | Some("stderr") => Format::Stderr,
            Some("csvlog") => Format::Csvlog,
            Some("jsonlog") => Format::Jsonlog,
            Some("auto") => Format::Auto,
            Some(other) => {
                return Err(invalid(
                    "format",
                    format!("unknown format `{other}` (expected stderr, csvlog, jsonlog or auto)"),
                ));
            }
        };
        let prefix = string(&map, "log_line_prefix")?;
        let log_line_prefix =
            LinePrefix::compile(prefix.as_deref().unwrap_or(DEFAULT_LOG_LINE_PREFIX))
                .map_err(|e| invalid("log_line_prefix", e.to_string()))?;
        let log_timezone = match string(&map, "log_timezone")? {
            None => None,
            Some(name) => Some(time_zone(&name)?),
        };
        let min_level = match string(&map, "min_level")? {
            None => None,
            Some(value) => Some(Level::from_setting(&value).ok_or_else(|| {
                invalid(
                    "min_level",
                    format!(
                        "unknown level `{value}` (expected debug5..debug1, info, notice, \
                         warning, error, log, fatal or panic)"
                    ),
                )
            })?),
        };
        Ok(Settings {
            format,
            log_line_prefix,
            log_timezone,
            read_bytes: positive(&map, "read_bytes", DEFAULT_READ_BYTES)?,
            max_bytes_per_run: positive(&map, "max_bytes_per_run", DEFAULT_MAX_BYTES_PER_RUN)?,
            max_output_bytes: positive(&map, "max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)?,
            min_level,
            max_message_bytes: size(&map, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)?,
            max_entries_per_item: size(&map, "max_entries_per_item", DEFAULT_MAX_ENTRIES_PER_ITEM)?,
        })
    }

    /// Whether an entry of severity `level` (as written in the log) is kept. Severities this
    /// collector cannot rank (`UNKNOWN`, translated ones) are always kept.
    pub fn keeps(&self, level: &str) -> bool {
        let Some(min) = self.min_level else {
            return true;
        };
        Level::from_log_word(level).is_none_or(|level| level >= min)
    }
}

fn invalid(key: &str, message: String) -> Error {
    Error::Invalid(format!("pg_log setting `{key}`: {message}"))
}

/// The IANA zone `name` from the bundled zone table.
fn time_zone(name: &str) -> Result<TimeZone, Error> {
    let shown: String = name.chars().take(MAX_TIMEZONE_NAME_BYTES).collect();
    if name.len() > MAX_TIMEZONE_NAME_BYTES {
        return Err(invalid(
            "log_timezone",
            format!("`{shown}...` is not a time zone name (too long)"),
        ));
    }
    jiff::tz::db().get(name).map_err(|_| {
        invalid(
            "log_timezone",
            format!(
                "unknown time zone `{shown}` (expected an IANA name as in postgresql.conf, e.g. \
                 `Europe/Berlin` or `UTC`; `SHOW log_timezone;` in psql prints the server's)"
            ),
        )
    })
}

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(key, format!("expected a string, got `{other}`"))),
    }
}

fn positive(map: &Map<String, Value>, key: &str, default: u64) -> Result<u64, Error> {
    match map.get(key) {
        None => Ok(default),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(invalid(
                key,
                format!("expected a positive integer, got `{value}`"),
            )),
        },
    }
}

fn size(map: &Map<String, Value>, key: &str, default: u64) -> Result<usize, Error> {
    let n = positive(map, key, default)?;
    usize::try_from(n).map_err(|_| invalid(key, format!("{n} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pganalytics_guest::ErrorExt;

    fn error(json: &str) -> String {
        let err = Settings::from_json(json).expect_err("invalid settings");
        assert_eq!(err.kind(), "invalid");
        err.message().to_owned()
    }

    #[test]
    fn defaults() {
        let s = Settings::from_json("{}").expect("empty settings are valid");
        assert_eq!(s.format, Format::Stderr);
        assert_eq!(
            s.log_line_prefix,
            LinePrefix::compile("%m [%p] %q%u@%d ").expect("compiles")
        );
        assert_eq!(s.read_bytes, 4_194_304);
        assert_eq!(s.max_bytes_per_run, 16_777_216);
        assert_eq!(s.max_output_bytes, 3_145_728);
        assert_eq!(s.min_level, None);
        assert!(s.log_timezone.is_none());
        assert_eq!(s.max_message_bytes, 65_536);
        assert_eq!(s.max_entries_per_item, 10_000);
        assert!(s.keeps("DEBUG") && s.keeps("UNKNOWN"));
    }

    #[test]
    fn every_setting() {
        let s = Settings::from_json(
            r#"{"format":"auto","log_line_prefix":"%t:%r:%u@%d:[%p]: ","read_bytes":1024,"log_timezone":"Europe/Berlin",
                "max_bytes_per_run":4096,"max_output_bytes":8192,"min_level":"WARNING","max_message_bytes":100,
                "max_entries_per_item":5}"#,
        )
        .expect("valid");
        assert_eq!(s.format, Format::Auto);
        assert_eq!(
            s.log_timezone.as_ref().and_then(|z| z.iana_name()),
            Some("Europe/Berlin")
        );
        assert_eq!(s.read_bytes, 1024);
        assert_eq!(s.max_bytes_per_run, 4096);
        assert_eq!(s.max_output_bytes, 8192);
        assert_eq!(s.min_level, Some(Level::Warning));
        assert_eq!(s.max_message_bytes, 100);
        assert_eq!(s.max_entries_per_item, 5);
        assert!(s.keeps("ERROR") && s.keeps("LOG") && s.keeps("WARNING"));
        assert!(!s.keeps("NOTICE") && !s.keeps("DEBUG"));
        assert!(s.keeps("UNKNOWN") && s.keeps("FEHLER"));
    }

    #[test]
    fn bad_settings_name_the_setting() {
        assert_eq!(
            error(r#"{"format":"xml"}"#),
            "pg_log setting `format`: unknown format `xml` (expected stderr, csvlog, jsonlog or auto)"
        );
        assert_eq!(
            error(r#"{"format":1}"#),
            "pg_log setting `format`: expected a string, got `1`"
        );
        assert!(
            error(r#"{"log_line_prefix":"%m %y "}"#)
                .starts_with("pg_log setting `log_line_prefix`: unknown escape `%y` at byte 3")
        );
        assert_eq!(
            error(r#"{"read_bytes":"4MiB"}"#),
            "pg_log setting `read_bytes`: expected a positive integer, got `\"4MiB\"`"
        );
        assert!(
            error(r#"{"max_bytes_per_run":0}"#).starts_with("pg_log setting `max_bytes_per_run`")
        );
        assert!(
            error(r#"{"max_message_bytes":-1}"#).starts_with("pg_log setting `max_message_bytes`")
        );
        assert!(
            error(r#"{"max_entries_per_item":1.5}"#)
                .starts_with("pg_log setting `max_entries_per_item`")
        );
        assert!(
            error(r#"{"min_level":"verbose"}"#)
                .starts_with("pg_log setting `min_level`: unknown level `verbose`")
        );
        assert!(
            error(r#"{"formt":"csvlog"}"#).starts_with("pg_log setting `formt`: unknown setting")
        );
        assert!(error("[]").starts_with("pg_log settings: not a JSON object"));
        for zone in [
            "Mars/Olympus_Mons",
            "Europe/Berlln",
            "../../etc/passwd",
            "/usr/share/zoneinfo/UTC",
            "",
        ] {
            let message = error(&serde_json::json!({ "log_timezone": zone }).to_string());
            assert!(
                message.starts_with(&format!(
                    "pg_log setting `log_timezone`: unknown time zone `{zone}`"
                )),
                "{message}"
            );
        }
        assert!(
            error(&serde_json::json!({ "log_timezone": "x".repeat(65) }).to_string())
                .contains("too long")
        );
        assert!(error(r#"{"log_timezone":3}"#).starts_with("pg_log setting `log_timezone`"));
    }

    #[test]
    fn auto_format_by_extension() {
        assert_eq!(
            Format::Auto.for_path("/var/log/postgresql/postgresql-15-main.log"),
            Format::Stderr
        );
        assert_eq!(
            Format::Auto.for_path("log/postgresql-2026-11-27.csv"),
            Format::Csvlog
        );
        assert_eq!(
            Format::Auto.for_path("log/postgresql-2026-11-27.json"),
            Format::Jsonlog
        );
        assert_eq!(Format::Csvlog.for_path("x.json"), Format::Csvlog);
    }
}
