//! The `jsonlog` format (PostgreSQL 15+): one JSON object per line, newlines inside values
//! escaped, so every line is one entry and nothing carries over between lines or calls.
//!
//! Keys are read leniently (a number may arrive as a string, unknown keys are ignored, because
//! later versions add keys); a line that is not a JSON object still becomes an entry, of level
//! `UNKNOWN` with the raw line as its message and a `parse_error`, so that it is never dropped.

use crate::entry::{Entry, NO_ERROR_SQLSTATE, Sink, TextField, UNKNOWN_LEVEL, known};
use crate::timestamp::Clock;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Parses the whole lines of `data`, which start at byte `offset` of `file`.
pub fn parse(
    file: &str,
    offset: u64,
    data: &str,
    max_bytes: usize,
    clock: &mut Clock,
    sink: &mut impl Sink,
) {
    for (line_offset, line) in crate::split_lines(data, offset) {
        // Blank lines carry nothing; PostgreSQL does not write them.
        if !line.trim().is_empty() {
            parse_line(file, line_offset, line, max_bytes, clock, sink);
        }
    }
}

/// One jsonlog line as an entry, passed to `sink`.
pub fn parse_line(
    file: &str,
    offset: u64,
    line: &str,
    max_bytes: usize,
    clock: &mut Clock,
    sink: &mut impl Sink,
) {
    let mut entry = Entry::at(file, offset);
    let object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return sink.entry(&malformed(
                entry,
                line,
                "not a JSON object".into(),
                max_bytes,
            ));
        }
        Err(e) => return sink.entry(&malformed(entry, line, e.to_string(), max_bytes)),
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let number = |key: &str| number(&object, key);

    match text("timestamp").map(|t| (t, clock.convert(t))) {
        Some((_, Some(converted))) => entry.set_time(converted),
        Some((raw, None)) => {
            entry.parse_error = Some(Cow::Owned(format!("`timestamp` `{raw}` is not a time")))
        }
        None => {}
    }
    entry.level = Cow::Borrowed(text("error_severity").unwrap_or(UNKNOWN_LEVEL));
    entry.pid = number("pid");
    entry.user = text("user").and_then(known);
    entry.database = text("dbname").and_then(known);
    entry.application = text("application_name").and_then(known);
    entry.remote_host = text("remote_host").and_then(known);
    entry.session_id = text("session_id").and_then(known);
    entry.backend_type = text("backend_type").and_then(known);
    entry.sqlstate = text("state_code")
        .and_then(known)
        .filter(|code| *code != NO_ERROR_SQLSTATE);
    entry.query_position = number("internal_position");
    entry.position = number("cursor_position");
    for (key, field) in [
        ("message", TextField::Message),
        ("detail", TextField::Detail),
        ("hint", TextField::Hint),
        ("internal_query", TextField::Query),
        ("context", TextField::Context),
        ("statement", TextField::Statement),
        ("backtrace", TextField::Backtrace),
    ] {
        if let Some(value) = text(key) {
            entry.set_text_if_present(field, value, max_bytes);
        }
    }
    let location = location(
        text("func_name"),
        text("file_name"),
        number("file_line_num"),
    );
    if let Some(location) = &location {
        entry.set_text(TextField::Location, location, max_bytes);
    }
    sink.entry(&entry);
}

/// A number, or a string of digits (a value that lost its type in transit).
fn number(object: &Map<String, Value>, key: &str) -> Option<u64> {
    match object.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `function, file:line` as stderr's `LOCATION:` and csvlog's `location` write it.
fn location(function: Option<&str>, file: Option<&str>, line: Option<u64>) -> Option<String> {
    let place = match (file, line) {
        (Some(file), Some(line)) => Some(format!("{file}:{line}")),
        (Some(file), None) => Some(file.to_owned()),
        (None, _) => None,
    };
    match (function, place) {
        (Some(function), Some(place)) => Some(format!("{function}, {place}")),
        (Some(function), None) => Some(function.to_owned()),
        (None, place) => place,
    }
}

fn malformed<'a>(
    mut entry: Entry<'a>,
    line: &'a str,
    error: String,
    max_bytes: usize,
) -> Entry<'a> {
    entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
    entry.set_text(TextField::Message, line, max_bytes);
    entry.parse_error = Some(Cow::Owned(format!("jsonlog line: {error}")));
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSONLOG: &str = include_str!("../tests/data/jsonlog.json");
    const VERBOSE: &str = include_str!("../tests/data/jsonlog_verbose.json");
    const MAX: usize = 65_536;

    fn parse_all(data: &str) -> Vec<Entry<'static>> {
        let mut out = Vec::new();
        parse(
            "postgresql.json",
            0,
            data,
            MAX,
            &mut Clock::default(),
            &mut out,
        );
        out
    }

    fn one(line: &str, max_bytes: usize) -> Entry<'static> {
        let mut out = Vec::new();
        parse_line("f", 0, line, max_bytes, &mut Clock::default(), &mut out);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    fn find<'e>(entries: &'e [Entry<'static>], message: &str) -> &'e Entry<'static> {
        entries
            .iter()
            .find(|e| e.message.starts_with(message))
            .unwrap_or_else(|| panic!("no entry starting with `{message}`"))
    }

    #[test]
    fn every_line_of_a_real_log_is_one_entry() {
        let entries = parse_all(JSONLOG);
        assert_eq!(entries.len(), JSONLOG.lines().count());
        assert!(entries.iter().all(|e| e.parse_error.is_none()));
        let first = &entries[0];
        assert_eq!(first.timestamp(), "2026-11-27T00:25:16.612Z");
        assert_eq!(first.level, "LOG");
        assert_eq!(first.pid, Some(19991));
        assert_eq!(first.backend_type.as_deref(), Some("postmaster"));
        assert_eq!(first.user, None);
        assert_eq!(first.line_offset, 0);
        assert_eq!(
            entries[1].line_offset,
            JSONLOG.find('\n').map(|i| i as u64 + 1).unwrap()
        );
    }

    #[test]
    fn error_fields() {
        let entries = parse_all(JSONLOG);
        let e = find(&entries, "duplicate key value");
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.sqlstate.as_deref(), Some("23505"));
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1) already exists."));
        assert_eq!(
            e.statement.as_deref(),
            Some("INSERT INTO accounts VALUES (1, 'b');")
        );
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.database.as_deref(), Some("app"));
        assert_eq!(e.application.as_deref(), Some("myapp"));
        assert_eq!(e.remote_host.as_deref(), Some("[local]"));
        assert_eq!(e.session_id.as_deref(), Some("6b08cdf5.4e4c"));

        let raise = find(&entries, "custom failure");
        assert_eq!(raise.hint.as_deref(), Some("try again"));
        assert_eq!(raise.detail.as_deref(), Some("the detail, with \"quotes\""));

        let syntax = find(&entries, "syntax error at or near");
        assert_eq!(syntax.message, "syntax error at or near \"SELEC\"");
        assert_eq!(syntax.position, Some(1));
    }

    #[test]
    fn newlines_in_statements_arrive_unescaped() {
        let entries = parse_all(JSONLOG);
        let e = entries
            .iter()
            .find(|e| {
                e.level == "ERROR"
                    && e.statement
                        .as_deref()
                        .is_some_and(|s| s.starts_with("SELECT name,"))
            })
            .expect("the multi-line statement's error");
        assert_eq!(
            e.statement.as_deref(),
            Some(
                "SELECT name,\n       'it''s \"quoted\"',\n\tid -- tab-indented line\n\
                 FROM accounts\nWHERE id = 1/0;"
            )
        );
    }

    #[test]
    fn verbose_log_has_location_internal_query_and_numeric_zone() {
        let entries = parse_all(VERBOSE);
        assert!(entries.iter().all(|e| e.parse_error.is_none()));
        let first = &entries[0];
        assert_eq!(first.timestamp(), "2026-11-27T00:28:29.989Z");
        assert_eq!(
            first.location.as_deref(),
            Some("PostmasterMain, postmaster.c:1203")
        );
        let e = find(&entries, "column \"nosuchcol\" does not exist");
        assert_eq!(e.query.as_deref(), Some("SELECT nosuchcol FROM accounts"));
        assert_eq!(e.query_position, Some(8));
        assert_eq!(e.position, None);
        assert_eq!(e.remote_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.application.as_deref(), Some("my app"));
        let w = find(&entries, "first line");
        assert_eq!(w.message, "first line\nsecond line\twith tab");
    }

    #[test]
    fn malformed_lines_are_kept() {
        let entries = parse_all(
            "{\"timestamp\": \"2026-11-27 00:25:16.612 UTC\", \"mess\n[1,2]\n\n{\"message\":\"x\"}\n",
        );
        assert_eq!(entries.len(), 3, "the blank line is skipped");
        assert_eq!(entries[0].level, UNKNOWN_LEVEL);
        assert!(entries[0].message.starts_with("{\"timestamp\""));
        assert!(
            entries[0]
                .parse_error
                .as_deref()
                .is_some_and(|e| e.starts_with("jsonlog line: EOF while parsing")),
            "{:?}",
            entries[0].parse_error
        );
        assert_eq!(
            entries[1].parse_error.as_deref(),
            Some("jsonlog line: not a JSON object")
        );
        assert_eq!(entries[2].level, UNKNOWN_LEVEL, "no error_severity");
        assert_eq!(entries[2].message, "x");
        assert_eq!(
            entries[2].timestamp(),
            "",
            "the run fills in the collection time"
        );
    }

    #[test]
    fn lenient_types_and_bad_timestamps() {
        let e = one(
            r#"{"timestamp":"yesterday","pid":"42","error_severity":"LOG","message":"m","user":"","func_name":"f"}"#,
            MAX,
        );
        assert_eq!(e.pid, Some(42));
        assert_eq!(e.user, None);
        assert_eq!(e.location.as_deref(), Some("f"));
        assert_eq!(e.timestamp(), "");
        assert_eq!(
            e.parse_error.as_deref(),
            Some("`timestamp` `yesterday` is not a time")
        );
    }

    #[test]
    fn long_values_are_cut_and_flagged() {
        let line = format!(
            r#"{{"error_severity":"LOG","message":"{}","statement":"short"}}"#,
            "é".repeat(40)
        );
        let e = one(&line, 33);
        assert_eq!(e.message.len(), 32);
        assert!(e.truncated);
        assert_eq!(e.statement.as_deref(), Some("short"));
    }

    #[test]
    fn location_forms() {
        assert_eq!(
            location(Some("int4div"), Some("int.c"), Some(869)).as_deref(),
            Some("int4div, int.c:869")
        );
        assert_eq!(
            location(None, Some("int.c"), Some(869)).as_deref(),
            Some("int.c:869")
        );
        assert_eq!(location(None, None, Some(1)), None);
    }
}
