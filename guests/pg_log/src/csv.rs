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
    Entry, NO_ERROR_SQLSTATE, Sink, TextField, UNKNOWN_LEVEL, capped, floor_char_boundary, known,
    push_capped, remote_host_without_port,
};
use crate::timestamp::Clock;
use std::borrow::Cow;

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
///
/// A record's fields are decoded (quotes undone) into one buffer reused for every record, so a
/// record costs no allocation; its entry borrows from that buffer while it is written out.
#[derive(Debug)]
pub struct CsvParser {
    clock: Clock,
    state: State,
    in_record: bool,
    /// False until a line that starts a record is seen: at the start of the data, and after a
    /// record that did not parse (the quoting may be off by one from there).
    synced: bool,
    record_offset: u64,
    /// The decoded fields of the current record, back to back (whole `str` slices of the data
    /// and `"`, so that reading them back needs no UTF-8 check).
    fields: String,
    /// Where each kept field ends in `fields`.
    ends: Vec<usize>,
    /// Fields seen, kept or not.
    columns: usize,
    cut: bool,
    /// The raw text of the current record from earlier data (capped), for the entry of a
    /// record that does not parse.
    raw: String,
    /// Lines outside any record, collected into one entry.
    orphan: Option<Entry<'static>>,
    /// Whether plainly quoted records are parsed in place ([`record_in_place`]); the tests
    /// turn it off to check that the state machine gives the same.
    in_place: bool,
}

impl CsvParser {
    pub fn new(clock: Clock) -> Self {
        CsvParser {
            clock,
            state: State::FieldStart,
            in_record: false,
            synced: false,
            record_offset: 0,
            fields: String::new(),
            ends: Vec::new(),
            columns: 0,
            cut: false,
            raw: String::new(),
            orphan: None,
            in_place: true,
        }
    }

    /// Parses the whole lines of `data`, which start at byte `offset` of `file`, passing every
    /// record that is complete to `sink`.
    pub fn feed<'d>(
        &mut self,
        file: &'d str,
        offset: u64,
        data: &'d str,
        max_bytes: usize,
        sink: &mut impl Sink,
    ) {
        let bytes = data.as_bytes();
        let mut orphan: Option<Entry<'d>> = self.orphan.take();
        // Where the current record's text starts in `data`.
        let mut record_start = 0;
        let mut i = 0;
        // The columns of a record parsed in place.
        let mut columns = [""; MAX_COLUMNS];
        while i < bytes.len() {
            if !self.in_record {
                if !self.synced && !starts_a_record(&data[i..]) {
                    let line_end =
                        memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n + 1);
                    let line = &data[i..line_end];
                    let text = line.strip_suffix('\n').unwrap_or(line);
                    let text = text.strip_suffix('\r').unwrap_or(text);
                    match &mut orphan {
                        Some(orphan) => orphan.append_line(TextField::Message, text, max_bytes),
                        None => {
                            let mut entry = Entry::at(file, offset + i as u64);
                            entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
                            entry.orphan = true;
                            entry.set_text(TextField::Message, text, max_bytes);
                            orphan = Some(entry);
                        }
                    }
                    i = line_end;
                    continue;
                }
                if let Some(orphan) = orphan.take() {
                    sink.entry(&orphan);
                }
                self.synced = true;
                self.record_offset = offset + i as u64;
                if let Some(parsed) = self
                    .in_place
                    .then(|| record_in_place(data, i, max_bytes, &mut columns))
                    .flatten()
                {
                    let mut entry = Entry::at(file, self.record_offset);
                    entry.truncated = parsed.cut;
                    let get = |column: usize| columns[..parsed.columns].get(column).copied();
                    fill(&mut entry, |c| get(c).unwrap_or(""), &mut self.clock);
                    sink.entry(&entry);
                    i = parsed.end;
                    continue;
                }
                self.in_record = true;
                record_start = i;
            }
            match self.state {
                State::Quoted => match memchr::memchr(b'"', &bytes[i..]) {
                    Some(n) => {
                        self.push(&data[i..i + n], max_bytes);
                        self.state = State::QuoteInQuoted;
                        i += n + 1;
                    }
                    None => {
                        self.push(&data[i..], max_bytes);
                        i = bytes.len();
                    }
                },
                State::QuoteInQuoted => {
                    match bytes[i] {
                        b'"' => {
                            self.push("\"", max_bytes);
                            self.state = State::Quoted;
                        }
                        b',' => self.end_field(),
                        b'\n' => {
                            self.end_field();
                            self.end_record(file, &data[record_start..=i], max_bytes, sink);
                        }
                        // PostgreSQL writes `\n` alone; a `\r` outside quotes is line-ending noise.
                        b'\r' => {}
                        // Text after a closing quote is not RFC 4180; keep it rather than fail.
                        _ => {
                            self.state = State::Unquoted;
                            continue;
                        }
                    }
                    i += 1;
                }
                State::FieldStart if bytes[i] == b'"' => {
                    self.state = State::Quoted;
                    i += 1;
                }
                State::FieldStart | State::Unquoted => match field_end(&bytes[i..]) {
                    Some(n) => {
                        let end = i + n;
                        let run = &data[i..end];
                        if bytes[end] == b',' {
                            self.push(run, max_bytes);
                            self.end_field();
                        } else {
                            self.push(run.strip_suffix('\r').unwrap_or(run), max_bytes);
                            self.end_field();
                            self.end_record(file, &data[record_start..=end], max_bytes, sink);
                        }
                        i = end + 1;
                    }
                    None => {
                        self.push(&data[i..], max_bytes);
                        self.state = State::Unquoted;
                        i = bytes.len();
                    }
                },
            }
        }
        if self.in_record {
            if !data.ends_with('\n') && self.state != State::Quoted {
                // A last line without its newline (the host promises whole lines, but be
                // lenient).
                self.end_field();
                self.end_record(file, &data[record_start..], max_bytes, sink);
            } else if push_capped(&mut self.raw, &data[record_start..], max_bytes) {
                self.cut = true;
            }
        }
        self.orphan = orphan.map(Entry::into_owned);
    }

    /// Passes on what is left: collected orphan lines and an open record (as unparsed). The
    /// data ends here (end of the run, or the file was rotated); what follows starts afresh.
    pub fn finish(&mut self, file: &str, sink: &mut impl Sink) {
        if let Some(orphan) = self.orphan.take() {
            sink.entry(&orphan);
        }
        if self.in_record {
            let mut entry = Entry::at(file, self.record_offset);
            entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
            entry.message = Cow::Borrowed(&self.raw);
            entry.truncated = self.cut;
            entry.parse_error = Some(Cow::Borrowed(
                "csvlog record incomplete at the end of the data read (its rest was not \
                 written yet)",
            ));
            sink.entry(&entry);
        }
        *self = CsvParser::new(std::mem::take(&mut self.clock));
    }

    /// Appends `text` to the current field, within `max_bytes`.
    fn push(&mut self, text: &str, max_bytes: usize) {
        let start = self.ends.last().copied().unwrap_or(0);
        let room = max_bytes.saturating_sub(self.fields.len() - start);
        let (text, cut) = capped(text, room);
        self.fields.push_str(text);
        self.cut |= cut;
    }

    fn end_field(&mut self) {
        if self.ends.len() < MAX_COLUMNS {
            self.ends.push(self.fields.len());
        } else {
            let start = self.ends.last().copied().unwrap_or(0);
            self.fields.truncate(start);
        }
        self.columns += 1;
        self.state = State::FieldStart;
    }

    /// Passes on the record just ended; `raw` is its text within the current data.
    fn end_record(&mut self, file: &str, raw: &str, max_bytes: usize, sink: &mut impl Sink) {
        let mut entry = Entry::at(file, self.record_offset);
        entry.truncated = self.cut;
        if self.columns < MIN_COLUMNS {
            push_capped(&mut self.raw, raw, max_bytes);
            let raw = self.raw.strip_suffix('\n').unwrap_or(&self.raw);
            entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
            entry.message = Cow::Borrowed(&raw[..floor_char_boundary(raw, max_bytes)]);
            entry.parse_error = Some(Cow::Owned(format!(
                "csvlog record has {} columns, expected {MIN_COLUMNS} to 26",
                self.columns
            )));
            self.synced = false;
            sink.entry(&entry);
        } else {
            let text = self.fields.as_str();
            let ends = &self.ends;
            let field = |i: usize| -> &str {
                let start = if i == 0 {
                    0
                } else {
                    ends.get(i - 1).copied().unwrap_or(0)
                };
                ends.get(i)
                    .and_then(|&end| text.get(start..end))
                    .unwrap_or("")
            };
            fill(&mut entry, field, &mut self.clock);
            sink.entry(&entry);
        }
        self.fields.clear();
        self.ends.clear();
        self.columns = 0;
        self.raw.clear();
        self.cut = false;
        self.in_record = false;
        self.state = State::FieldStart;
    }
}

/// How many bytes the common short unquoted fields (numbers, ids, empty columns) are scanned
/// byte by byte before the vector search takes over: a search call costs more than that.
const SHORT_FIELD_BYTES: usize = 16;

/// The index of the first `,` or `\n` in `bytes`: the end of an unquoted field.
fn field_end(bytes: &[u8]) -> Option<usize> {
    let short = bytes.len().min(SHORT_FIELD_BYTES);
    if let Some(n) = bytes[..short].iter().position(|&b| b == b',' || b == b'\n') {
        return Some(n);
    }
    memchr::memchr2(b',', b'\n', &bytes[short..]).map(|n| short + n)
}

/// A record parsed where it lies in the data.
struct InPlace {
    /// Just after the record's `\n`.
    end: usize,
    columns: usize,
    /// Some field was cut at `max_bytes`.
    cut: bool,
}

/// The record starting at `start`, parsed without copying its fields into `columns` (each cut
/// at `max_bytes`), when it is whole in `data` and plainly quoted: no `""` in a quoted field,
/// nothing but `,` or `\n` after a closing quote, [`MIN_COLUMNS`] to [`MAX_COLUMNS`] columns.
/// `None` leaves the record to the state machine, which decodes every case; on what this
/// accepts the two agree.
fn record_in_place<'d>(
    data: &'d str,
    start: usize,
    max_bytes: usize,
    columns: &mut [&'d str; MAX_COLUMNS],
) -> Option<InPlace> {
    let bytes = data.as_bytes();
    let mut i = start;
    let mut count = 0;
    let mut cut = false;
    loop {
        let slot = columns.get_mut(count)?;
        let (value, after) = if bytes.get(i) == Some(&b'"') {
            let close = i + 1 + memchr::memchr(b'"', &bytes[i + 1..])?;
            match bytes.get(close + 1) {
                Some(b',' | b'\n') => (&data[i + 1..close], close + 1),
                _ => return None,
            }
        } else {
            let end = i + field_end(&bytes[i..])?;
            let value = &data[i..end];
            if bytes[end] == b'\n' {
                (value.strip_suffix('\r').unwrap_or(value), end)
            } else {
                (value, end)
            }
        };
        let (value, was_cut) = capped(value, max_bytes);
        cut |= was_cut;
        *slot = value;
        count += 1;
        if bytes[after] == b'\n' {
            return (count >= MIN_COLUMNS).then_some(InPlace {
                end: after + 1,
                columns: count,
                cut,
            });
        }
        i = after + 1;
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
/// `max_bytes` while read); `get(i)` is column `i`, `""` when absent.
fn fill<'b>(entry: &mut Entry<'b>, get: impl Fn(usize) -> &'b str, clock: &mut Clock) {
    let text = |i: usize| known(get(i));
    let number = |i: usize| get(i).parse::<u64>().ok();

    match clock.convert(get(column::LOG_TIME)) {
        Some(converted) => entry.set_time(converted),
        None => {
            entry.parse_error = Some(Cow::Owned(format!(
                "`log_time` `{}` is not a time",
                get(column::LOG_TIME)
            )))
        }
    }
    entry.level = text(column::ERROR_SEVERITY).unwrap_or(Cow::Borrowed(UNKNOWN_LEVEL));
    entry.message = Cow::Borrowed(get(column::MESSAGE));
    entry.pid = number(column::PROCESS_ID);
    entry.user = text(column::USER_NAME);
    entry.database = text(column::DATABASE_NAME);
    entry.remote_host = remote_host_without_port(get(column::CONNECTION_FROM));
    entry.session_id = text(column::SESSION_ID);
    entry.sqlstate = text(column::SQL_STATE_CODE).filter(|code| *code != NO_ERROR_SQLSTATE);
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

    fn parse_with(data: &str, max_bytes: usize) -> Vec<Entry<'static>> {
        let mut parser = CsvParser::new(Clock::default());
        let mut out = Vec::new();
        parser.feed("postgresql.csv", 0, data, max_bytes, &mut out);
        parser.finish("postgresql.csv", &mut out);
        out
    }

    fn parse(data: &str) -> Vec<Entry<'static>> {
        parse_with(data, MAX)
    }

    fn find<'e>(entries: &'e [Entry<'static>], message: &str) -> &'e Entry<'static> {
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
            crate::json::parse(
                "postgresql.csv",
                0,
                json,
                MAX,
                &mut Clock::default(),
                &mut from_json,
            );
            assert_eq!(from_csv.len(), from_json.len());
            for (c, j) in from_csv.iter().zip(&from_json) {
                let comparable = |e: &Entry<'static>| Entry {
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
            let mut parser = CsvParser::new(Clock::default());
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
    fn unquoted_fields_around_the_short_scan_length() {
        assert_eq!(field_end(b""), None);
        assert_eq!(field_end(b"abc"), None);
        for len in [0, 1, 15, 16, 17, 40] {
            let text = "7".repeat(len);
            for end in [",", "\n"] {
                let field = format!("{text}{end}x,y");
                assert_eq!(field_end(field.as_bytes()), Some(len), "{len} {end:?}");
            }
            assert_eq!(field_end(text.as_bytes()), None);
        }
        // An unquoted column of every length up to past the scan keeps its value whole.
        let record =
            "2026-11-27 00:25:25.356 UTC,\"u\",\"db\",{pid},,,,,,,,LOG,00000,\"m\",,,,,,,,,,,,0\n";
        for len in 1..=40 {
            let pid = "9".repeat(len);
            let entries = parse(&record.replace("{pid}", &pid));
            assert_eq!(entries.len(), 1);
            let expected = pid.parse::<u64>().ok();
            assert_eq!(entries[0].pid, expected, "{len}");
            assert_eq!(entries[0].message, "m");
        }
    }

    #[test]
    fn records_parsed_in_place_equal_the_state_machine() {
        let head = "2026-11-27 00:25:25.356 UTC,\"u\",\"db\",20044,\"[local]\",6566a1b2.4e4c,1,\"SELECT\",2026-11-27 00:00:00 UTC,3/1,0,ERROR,22012,";
        let tail = ",,,,,,,,,\"psql\",\"client backend\",,0";
        let long = "é\"".repeat(40);
        let records = [
            format!("{head}\"division by zero\",\"detail\"{tail}\n"),
            format!("{head}\"two\nlines, and a comma\",\"d\"{tail}\n"),
            format!("{head}\"said \"\"hi\"\"\",\"\"\"\"{tail}\n"),
            format!("{head}\"crlf\",\"d\"{tail}\r\n"),
            format!("{head}\"crlf\",\"d\",,,,,,,,,,,\"last quoted\"\r\n"),
            format!("{head}\"junk\"after,\"d\"{tail}\n"),
            format!("{head}\"\",\"\"{tail}\n"),
            format!("{head}unquoted message,d{tail}\n"),
            format!("{head}\"m\",\"d\"{tail}{}\n", ",x".repeat(20)),
            format!("{head}\"m\",\"d\"{tail}{}\n", ",x".repeat(13)),
            format!("{head}\"m\",\"d\"{tail}{}\n", ",x".repeat(14)),
            format!("{head}\"m\",\"d\",,,,\n"),
            format!("{head}\"m\",\"d\",,,,,,,,\n"),
            format!("{head}\"{long}{long}\",\"{}\"{tail}\n", "ü".repeat(70)),
            format!("{head}\"no newline at the end\",\"d\"{tail}"),
            format!("{head}\"open quote at the end{tail}\n"),
        ];
        // Both ways are taken: plain records in place, the others by the state machine.
        let in_place = |record: &str| record_in_place(record, 0, MAX, &mut [""; MAX_COLUMNS]);
        assert!(in_place(&records[0]).is_some_and(|r| r.end == records[0].len()));
        assert!(in_place(&records[1]).is_some());
        assert!(in_place(&records[3]).is_some());
        for tricky in [2, 4, 5, 8, 11, 14, 15] {
            assert!(in_place(&records[tricky]).is_none(), "{tricky}");
        }
        for record in &records {
            // Alone, after a plain record, and before one.
            let plain = &records[0];
            for data in [
                record.clone(),
                format!("{plain}{record}"),
                format!("{record}{plain}"),
            ] {
                for max_bytes in [MAX, 100, 7] {
                    let parse = |in_place: bool| {
                        let mut parser = CsvParser::new(Clock::default());
                        parser.in_place = in_place;
                        let mut out = Vec::new();
                        parser.feed("postgresql.csv", 10, &data, max_bytes, &mut out);
                        parser.finish("postgresql.csv", &mut out);
                        out
                    };
                    assert_eq!(parse(true), parse(false), "{data:?} at {max_bytes}");
                }
            }
        }
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
