//! The `csvlog` format: RFC 4180 records of 22 to 26 columns (PostgreSQL 15 writes 26; 9.0-12
//! fewer trailing ones), one per entry, with newlines inside quoted fields.
//!
//! A record may span lines, and so the end of one `read-new` answer; the parser keeps the
//! half-read record and completes it with the next data of the same file. Memory stays bounded
//! however long a field is: each field is cut at `max_bytes` while it is read, and the entry is
//! flagged `truncated`. A record that is still open when the data ends (end of the run, or a
//! rotation), or that has too few columns, becomes an `UNKNOWN` entry with its raw text and a
//! `parse_error`; lines read before the first line that starts a record (the run began inside a
//! record) become an `orphan` entry. None of these are ever dropped.

use crate::entry::{
    Entry, NO_ERROR_SQLSTATE, TextField, UNKNOWN_LEVEL, floor_char_boundary, known, push_capped,
    remote_host_without_port,
};
use crate::timestamp;

/// The fewest columns of a csvlog record (PostgreSQL 9.0, up to `location`).
const MIN_COLUMNS: usize = 22;

/// Columns kept of a record. Later versions may add columns after PostgreSQL 15's 26; a broken
/// file must not make one record grow without bound.
const MAX_COLUMNS: usize = 40;

/// PostgreSQL 15's csvlog columns, by position.
mod column {
    pub const LOG_TIME: usize = 0;
    pub const USER_NAME: usize = 1;
    pub const DATABASE_NAME: usize = 2;
    pub const PROCESS_ID: usize = 3;
    pub const CONNECTION_FROM: usize = 4;
    pub const SESSION_ID: usize = 5;
    pub const ERROR_SEVERITY: usize = 11;
    pub const SQL_STATE_CODE: usize = 12;
    pub const MESSAGE: usize = 13;
    pub const DETAIL: usize = 14;
    pub const HINT: usize = 15;
    pub const INTERNAL_QUERY: usize = 16;
    pub const INTERNAL_QUERY_POS: usize = 17;
    pub const CONTEXT: usize = 18;
    pub const QUERY: usize = 19;
    pub const QUERY_POS: usize = 20;
    pub const LOCATION: usize = 21;
    pub const APPLICATION_NAME: usize = 22;
    pub const BACKEND_TYPE: usize = 23;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field (also of a record).
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: the end of the field, or the first half of `""`.
    QuoteInQuoted,
}

/// Parses one file in the csvlog format.
#[derive(Debug)]
pub struct CsvParser {
    state: State,
    in_record: bool,
    /// False until a line that starts a record is seen: at the start of the data, and after a
    /// record that did not parse (the quoting may be off by one from there).
    synced: bool,
    record_offset: u64,
    fields: Vec<String>,
    columns: usize,
    field: Vec<u8>,
    cut: bool,
    /// The record as read, kept (capped) for the entry of a record that does not parse.
    raw: String,
    /// Lines outside any record, collected into one entry.
    orphan: Option<Entry>,
}

impl Default for CsvParser {
    fn default() -> Self {
        CsvParser {
            state: State::FieldStart,
            in_record: false,
            synced: false,
            record_offset: 0,
            fields: Vec::new(),
            columns: 0,
            field: Vec::new(),
            cut: false,
            raw: String::new(),
            orphan: None,
        }
    }
}

impl CsvParser {
    /// Parses the whole lines of `data`, which start at byte `offset` of `file`, pushing every
    /// record that is complete to `out`.
    pub fn feed(
        &mut self,
        file: &str,
        offset: u64,
        data: &str,
        max_bytes: usize,
        out: &mut Vec<Entry>,
    ) {
        let mut line_offset = offset;
        for line in data.split_inclusive('\n') {
            self.line(file, line_offset, line, max_bytes, out);
            line_offset += line.len() as u64;
        }
    }

    /// Pushes what is left: an open record (as unparsed) and collected orphan lines. The data
    /// ends here (end of the run, or the file was rotated); what follows starts afresh.
    pub fn finish(&mut self, file: &str, out: &mut Vec<Entry>) {
        if let Some(orphan) = self.orphan.take() {
            out.push(orphan);
        }
        if self.in_record {
            let mut entry = Entry::at(file, self.record_offset);
            entry.level = UNKNOWN_LEVEL.to_owned();
            entry.message = std::mem::take(&mut self.raw);
            entry.truncated = self.cut;
            entry.parse_error = Some(
                "csvlog record incomplete at the end of the data read (its rest was not \
                 written yet)"
                    .into(),
            );
            out.push(entry);
        }
        *self = CsvParser::default();
    }

    fn line(
        &mut self,
        file: &str,
        offset: u64,
        line: &str,
        max_bytes: usize,
        out: &mut Vec<Entry>,
    ) {
        if !self.in_record {
            if !self.synced && !starts_a_record(line) {
                let text = line.strip_suffix('\n').unwrap_or(line);
                let text = text.strip_suffix('\r').unwrap_or(text);
                match &mut self.orphan {
                    Some(orphan) => orphan.append_line(TextField::Message, text, max_bytes),
                    None => {
                        let mut entry = Entry::at(file, offset);
                        entry.level = UNKNOWN_LEVEL.to_owned();
                        entry.orphan = true;
                        entry.set_text(TextField::Message, text, max_bytes);
                        self.orphan = Some(entry);
                    }
                }
                return;
            }
            if let Some(orphan) = self.orphan.take() {
                out.push(orphan);
            }
            self.synced = true;
            self.in_record = true;
            self.record_offset = offset;
        }
        if push_capped(&mut self.raw, line, max_bytes) {
            self.cut = true;
        }
        for &byte in line.as_bytes() {
            match (self.state, byte) {
                (State::FieldStart, b'"') => self.state = State::Quoted,
                (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
                (State::QuoteInQuoted, b'"') => {
                    self.push(b'"', max_bytes);
                    self.state = State::Quoted;
                }
                (State::Quoted, _) => self.push(byte, max_bytes),
                (_, b',') => {
                    self.end_field();
                    self.state = State::FieldStart;
                }
                (_, b'\n') => {
                    self.end_field();
                    self.end_record(file, max_bytes, out);
                }
                // PostgreSQL writes `\n` alone; a `\r` outside quotes is line-ending noise.
                (_, b'\r') => {}
                // Text after a closing quote is not RFC 4180; keep it rather than fail.
                (_, _) => {
                    self.push(byte, max_bytes);
                    self.state = State::Unquoted;
                }
            }
        }
        // A last line without its newline (the host promises whole lines, but be lenient).
        if !line.ends_with('\n') && self.in_record && self.state != State::Quoted {
            self.end_field();
            self.end_record(file, max_bytes, out);
        }
    }

    fn push(&mut self, byte: u8, max_bytes: usize) {
        if self.field.len() < max_bytes {
            self.field.push(byte);
        } else {
            self.cut = true;
        }
    }

    fn end_field(&mut self) {
        let bytes = std::mem::take(&mut self.field);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            // Cut inside a character at `max_bytes`: drop the partial character.
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
        };
        if self.fields.len() < MAX_COLUMNS {
            self.fields.push(text);
        }
        self.columns += 1;
    }

    fn end_record(&mut self, file: &str, max_bytes: usize, out: &mut Vec<Entry>) {
        let mut entry = Entry::at(file, self.record_offset);
        entry.truncated = self.cut;
        if self.columns < MIN_COLUMNS {
            entry.level = UNKNOWN_LEVEL.to_owned();
            let raw = self.raw.strip_suffix('\n').unwrap_or(&self.raw);
            entry.message = raw[..floor_char_boundary(raw, max_bytes)].to_owned();
            entry.parse_error = Some(format!(
                "csvlog record has {} columns, expected {MIN_COLUMNS} to 26",
                self.columns
            ));
            self.synced = false;
        } else {
            fill(&mut entry, &self.fields);
        }
        out.push(entry);
        self.fields.clear();
        self.columns = 0;
        self.raw.clear();
        self.cut = false;
        self.in_record = false;
        self.state = State::FieldStart;
    }
}

/// Whether `line` starts like a csvlog record: `log_time` unquoted, `YYYY-MM-DD HH:MM:SS`.
fn starts_a_record(line: &str) -> bool {
    let shape = b"dddd-dd-dd dd:dd:dd";
    line.len() >= shape.len()
        && line.bytes().zip(shape).all(|(b, &s)| match s {
            b'd' => b.is_ascii_digit(),
            s => b == s,
        })
}

/// An entry from the columns of a record of at least [`MIN_COLUMNS`] (already cut to
/// `max_bytes` while read).
fn fill(entry: &mut Entry, fields: &[String]) {
    let get = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let text = |i: usize| known(get(i));
    let number = |i: usize| get(i).parse::<u64>().ok();

    match timestamp::convert(get(column::LOG_TIME)) {
        Some(converted) => {
            entry.timestamp = converted.rfc3339;
            entry.zone = converted.zone;
        }
        None => {
            entry.parse_error = Some(format!(
                "`log_time` `{}` is not a time",
                get(column::LOG_TIME)
            ))
        }
    }
    entry.level = text(column::ERROR_SEVERITY).unwrap_or_else(|| UNKNOWN_LEVEL.to_owned());
    entry.message = get(column::MESSAGE).to_owned();
    entry.pid = number(column::PROCESS_ID);
    entry.user = text(column::USER_NAME);
    entry.database = text(column::DATABASE_NAME);
    entry.remote_host = remote_host_without_port(get(column::CONNECTION_FROM));
    entry.session_id = text(column::SESSION_ID);
    entry.sqlstate = text(column::SQL_STATE_CODE).filter(|code| code != NO_ERROR_SQLSTATE);
    entry.detail = text(column::DETAIL);
    entry.hint = text(column::HINT);
    entry.query = text(column::INTERNAL_QUERY);
    entry.query_position = number(column::INTERNAL_QUERY_POS);
    entry.context = text(column::CONTEXT);
    entry.statement = text(column::QUERY);
    entry.position = number(column::QUERY_POS);
    entry.location = text(column::LOCATION);
    entry.application = text(column::APPLICATION_NAME);
    entry.backend_type = text(column::BACKEND_TYPE);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSVLOG: &str = include_str!("../tests/data/csvlog.csv");
    const VERBOSE: &str = include_str!("../tests/data/csvlog_verbose.csv");
    const JSONLOG: &str = include_str!("../tests/data/jsonlog.json");
    const JSONLOG_VERBOSE: &str = include_str!("../tests/data/jsonlog_verbose.json");
    const MAX: usize = 65_536;

    fn parse_with(data: &str, max_bytes: usize) -> Vec<Entry> {
        let mut parser = CsvParser::default();
        let mut out = Vec::new();
        parser.feed("postgresql.csv", 0, data, max_bytes, &mut out);
        parser.finish("postgresql.csv", &mut out);
        out
    }

    fn parse(data: &str) -> Vec<Entry> {
        parse_with(data, MAX)
    }

    fn find<'e>(entries: &'e [Entry], message: &str) -> &'e Entry {
        entries
            .iter()
            .find(|e| e.message.starts_with(message))
            .unwrap_or_else(|| panic!("no entry starting with `{message}`"))
    }

    /// csvlog and jsonlog of the same run carry the same entries, field for field.
    #[test]
    fn agrees_with_jsonlog_of_the_same_run() {
        for (csv, json) in [(CSVLOG, JSONLOG), (VERBOSE, JSONLOG_VERBOSE)] {
            let from_csv = parse(csv);
            let mut from_json = Vec::new();
            crate::json::parse("postgresql.csv", 0, json, MAX, &mut from_json);
            assert_eq!(from_csv.len(), from_json.len());
            for (c, j) in from_csv.iter().zip(&from_json) {
                let comparable = |e: &Entry| Entry {
                    line_offset: 0,
                    ..e.clone()
                };
                assert_eq!(comparable(c), comparable(j));
            }
        }
    }

    #[test]
    fn records_of_a_real_log() {
        let entries = parse(CSVLOG);
        let records = CSVLOG.lines().filter(|l| starts_a_record(l)).count();
        assert_eq!(entries.len(), records);
        assert!(entries.iter().all(|e| e.parse_error.is_none() && !e.orphan));
        let e = find(&entries, "duplicate key value violates unique constraint");
        assert_eq!(
            e.message,
            "duplicate key value violates unique constraint \"accounts_pkey\""
        );
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.sqlstate.as_deref(), Some("23505"));
        assert_eq!(e.pid, Some(20044));
        assert_eq!(e.backend_type.as_deref(), Some("client backend"));
        let at = usize::try_from(e.line_offset).expect("small");
        assert!(CSVLOG[at..].starts_with("2026-11-27 00:25:25.356 UTC,\"alice\",\"app\",20044"));
    }

    #[test]
    fn quoted_newlines_and_doubled_quotes() {
        let entries = parse(CSVLOG);
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
        let f = entries
            .iter()
            .find(|e| e.statement.as_deref() == Some("SELECT f();"))
            .expect("f()");
        assert_eq!(
            f.context.as_deref(),
            Some("SQL statement \"SELECT 1/0\"\nPL/pgSQL function f() line 1 at EXECUTE")
        );
    }

    #[test]
    fn a_record_split_across_feeds_is_completed() {
        // Split the real log at every byte that ends a line: records whose quoted newlines
        // fall at the split must come out the same as from one feed.
        let whole = parse(CSVLOG);
        for (split, _) in CSVLOG.match_indices('\n') {
            let (first, second) = CSVLOG.split_at(split + 1);
            let mut parser = CsvParser::default();
            let mut out = Vec::new();
            parser.feed("postgresql.csv", 0, first, MAX, &mut out);
            parser.feed("postgresql.csv", first.len() as u64, second, MAX, &mut out);
            parser.finish("postgresql.csv", &mut out);
            assert_eq!(out, whole, "split after byte {split}");
        }
    }

    #[test]
    fn an_open_record_at_the_end_is_kept_raw() {
        let data = "2026-11-27 00:25:25.356 UTC,\"alice\",\"app\",1,\"[local]\",x.1,1,\"idle\",,3/9,0,LOG,00000,\"statement: SELECT name,\n";
        let entries = parse(data);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.level, UNKNOWN_LEVEL);
        assert_eq!(e.message, data);
        assert!(
            e.parse_error
                .as_deref()
                .is_some_and(|p| p.contains("incomplete"))
        );
    }

    #[test]
    fn the_tail_of_a_record_from_before_is_one_orphan() {
        // What the next run reads after the open record above: its tail, then records.
        let tail = "FROM accounts\nWHERE id = 1/0;\",,,,,,,,,\"myapp\",\"client backend\",,0\n";
        let data = format!("{tail}{}", CSVLOG);
        let entries = parse(&data);
        assert!(entries[0].orphan);
        assert_eq!(entries[0].level, UNKNOWN_LEVEL);
        assert_eq!(
            entries[0].message,
            "FROM accounts\nWHERE id = 1/0;\",,,,,,,,,\"myapp\",\"client backend\",,0"
        );
        assert_eq!(
            &entries[1..],
            &parse(CSVLOG)
                .iter()
                .map(|e| Entry {
                    line_offset: e.line_offset + tail.len() as u64,
                    ..e.clone()
                })
                .collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn too_few_columns_is_a_parse_error_and_resyncs() {
        let data = format!("2026-11-27 00:25:25.356 UTC,a,b,\"open\nnext\"\n{CSVLOG}");
        let entries = parse(&data);
        assert_eq!(entries[0].level, UNKNOWN_LEVEL);
        assert_eq!(
            entries[0].parse_error.as_deref(),
            Some("csvlog record has 4 columns, expected 22 to 26")
        );
        assert_eq!(
            entries[0].message,
            "2026-11-27 00:25:25.356 UTC,a,b,\"open\nnext\""
        );
        assert_eq!(entries.len(), 1 + parse(CSVLOG).len());
    }

    #[test]
    fn older_versions_with_fewer_columns() {
        // PostgreSQL 12: 23 columns, up to application_name.
        let data = "2026-11-27 00:25:25.356 UTC,\"u\",\"d\",7,\"10.0.0.1:5000\",s.1,1,\"SELECT\",2026-11-27 00:25:25 UTC,3/9,0,ERROR,22012,\"division by zero\",,,,,,\"SELECT 1/0\",,,\"psql\"\n";
        let entries = parse(data);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.message, "division by zero");
        assert_eq!(e.application.as_deref(), Some("psql"));
        assert_eq!(e.backend_type, None);
        assert_eq!(e.remote_host.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.statement.as_deref(), Some("SELECT 1/0"));
        // 9.0: 22 columns.
        let data = "2026-11-27 00:25:25 UTC,,,7,,s.1,1,,,,0,LOG,00000,\"hello\",,,,,,,,\n";
        assert_eq!(parse(data)[0].message, "hello");
    }

    #[test]
    fn long_fields_are_cut_at_a_char_boundary_and_flagged() {
        let long = "é".repeat(100);
        let data = format!(
            "2026-11-27 00:25:25.356 UTC,,,1,,s.1,1,,,,0,LOG,00000,\"{long}\",,,,,,,,,\"\",\"postmaster\",,0\n"
        );
        let entries = parse_with(&data, 51);
        assert_eq!(entries[0].message.len(), 50);
        assert!(entries[0].truncated);
        assert_eq!(entries[0].backend_type.as_deref(), Some("postmaster"));
    }

    #[test]
    fn crlf_line_ends() {
        let data = CSVLOG.replace('\n', "\r\n");
        let entries = parse(&data);
        assert_eq!(entries.len(), parse(CSVLOG).len());
        // Quoted newlines keep their `\r`: that is what the file holds.
        assert!(entries.iter().all(|e| e.parse_error.is_none()));
        assert_eq!(entries[0].message, parse(CSVLOG)[0].message);
    }
}
