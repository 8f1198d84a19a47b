//! The `stderr` log format: `log_line_prefix`, then `SEVERITY:  message`, then the lines of the
//! same entry (`DETAIL:  `, `HINT:  `, `QUERY:  `, `CONTEXT:  `, `LOCATION:  `, `STATEMENT:  `,
//! `BACKTRACE:  `) behind the same prefix.
//!
//! PostgreSQL 15 writes every newline inside a message, detail or statement as a newline
//! followed by a TAB (`append_with_tabs` in `elog.c`), so a line starting with a TAB continues
//! the field before it. A line that is neither prefixed nor TAB-indented (output of something
//! other than `elog.c` in the same file, such as a memory context dump) is kept as a further
//! line of that field too. Lines that do not match the prefix but carry a severity label after
//! other text are counted ([`PrefixFit`]): when they outnumber the lines that match, the
//! configured `log_line_prefix` is not the server's, and the run fails rather than send them. Lines that continue an entry whose first line was read before this
//! run become an `orphan` entry of level `UNKNOWN`: nothing is dropped. A prefixed line whose
//! label is some other word in capitals (a severity translated by `lc_messages`) starts an entry
//! of that level, so that a non-English log is not glued into one entry.
//!
//! One parser follows one file; it keeps the entry being assembled between calls, so an entry
//! split across two `read-new` answers is still joined. It must never reorder entries.

use crate::entry::{
    Entry, NO_ERROR_SQLSTATE, Sink, TextField, UNKNOWN_LEVEL, known, remote_host_without_port,
};
use crate::prefix::{Escape, LinePrefix, PrefixFields};
use crate::timestamp::{self, Clock};
use std::borrow::Cow;

/// How far into a line that does not match the prefix a severity label is looked for (telling a
/// log line under another prefix from other text): a megabyte-long unprefixed line must cost no
/// more than a short one.
const MAX_FOREIGN_PREFIX_BYTES: usize = 256;

/// Bytes of a line quoted in the error about a prefix that does not match: a giant line must
/// not become a giant error message in the host log.
const SAMPLE_LINE_BYTES: usize = 200;

/// The entry being assembled and the field that continuation lines extend.
#[derive(Debug)]
struct Pending<'a> {
    entry: Entry<'a>,
    field: TextField,
}

/// How the lines of one file fitted the configured `log_line_prefix` so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrefixFit {
    /// Lines that matched the prefix and a label after it.
    pub matched: u64,
    /// Lines that did not match, yet carry a severity label after some other text: what a
    /// server writing another `log_line_prefix` produces. TAB continuation lines and other
    /// text (a memory context dump, a crash report) are neither.
    pub foreign: u64,
    /// The first foreign line, cut at `SAMPLE_LINE_BYTES`.
    pub sample: Option<String>,
}

impl PrefixFit {
    /// Whether the configured prefix is not the server's: more lines look like log lines under
    /// another prefix than match this one. A genuine log has next to no foreign lines (its
    /// continuation lines start with a TAB), so one run with more of them than of its own is
    /// evidence enough; a run it fails is read again, so a stray line can only delay, never
    /// drop, what follows it.
    pub fn mismatched(&self) -> bool {
        self.foreign > self.matched
    }
}

/// Parses one file in the stderr format.
#[derive(Debug)]
pub struct StderrParser<'p> {
    prefix: &'p LinePrefix,
    clock: Clock,
    pending: Option<Pending<'static>>,
    fit: PrefixFit,
}

impl<'p> StderrParser<'p> {
    pub fn new(prefix: &'p LinePrefix, clock: Clock) -> Self {
        StderrParser {
            prefix,
            clock,
            pending: None,
            fit: PrefixFit::default(),
        }
    }

    /// How the lines parsed so far fitted the prefix.
    pub fn fit(&self) -> &PrefixFit {
        &self.fit
    }

    /// Parses the whole lines of `data`, which start at byte `offset` of `file`, passing every
    /// entry that is complete to `sink`. The last entry stays pending: its continuation lines
    /// may come with the next data (it is copied out of `data` then).
    pub fn feed<'d>(
        &mut self,
        file: &'d str,
        offset: u64,
        data: &'d str,
        max_bytes: usize,
        sink: &mut impl Sink,
    ) {
        let mut pending: Option<Pending<'d>> = self.pending.take();
        for (line_offset, line) in crate::split_lines(data, offset) {
            self.line(&mut pending, file, line_offset, line, max_bytes, sink);
        }
        self.pending = pending.map(|p| Pending {
            entry: p.entry.into_owned(),
            field: p.field,
        });
    }

    /// Passes on the pending entry: the data ends here (end of the run, or the file was
    /// rotated).
    pub fn finish(&mut self, sink: &mut impl Sink) {
        if let Some(mut pending) = self.pending.take() {
            emit(&mut pending.entry, sink);
        }
    }

    fn line<'d>(
        &mut self,
        pending: &mut Option<Pending<'d>>,
        file: &'d str,
        offset: u64,
        line: &'d str,
        max_bytes: usize,
        sink: &mut impl Sink,
    ) {
        if let Some(text) = line.strip_prefix('\t')
            && !self.prefix.starts_with_tab()
        {
            return continuation(pending, file, offset, text, max_bytes);
        }
        // The label the prefix matcher accepted last is the one after the prefix it matched
        // (it stops at the first acceptance), so the label is not split a second time.
        // Kept as where the text starts in what followed the prefix, and the field.
        let accepted = std::cell::Cell::new(None);
        let mut fields = PrefixFields::default();
        let matched = self.prefix.match_line_into(
            line,
            &|rest| {
                let label = split_label(rest);
                if let Some((label, text)) = label {
                    let field = match label {
                        Label::Field(field) => Some(field),
                        Label::Entry(_) => None,
                    };
                    accepted.set(Some((rest.len() - text.len(), field)));
                }
                label.is_some()
            },
            &mut fields,
        );
        let Some((label, text)) = matched.and_then(|rest| {
            let (text_start, field) = accepted.get()?;
            let text = rest.get(text_start..)?;
            let label = match field {
                Some(field) => Label::Field(field),
                // The word before `":  "`.
                None => Label::Entry(rest.get(..text_start.checked_sub(3)?)?),
            };
            Some((label, text))
        }) else {
            self.unmatched(line);
            return continuation(pending, file, offset, line, max_bytes);
        };
        self.fit.matched += 1;
        let level = match label {
            Label::Entry(level) => level,
            Label::Field(field) => {
                let pid = fields.get(Escape::Pid).and_then(|p| p.parse().ok());
                if let Some(pending) = pending
                    && same_process(pending.entry.pid, pid)
                {
                    pending.entry.add_text(field, text, max_bytes);
                    pending.field = field;
                    return;
                }
                // The entry this line belongs to started before this run (or in another
                // process). The one pending is passed on in place; the assignment below
                // replaces it.
                if let Some(done) = pending {
                    emit(&mut done.entry, sink);
                }
                let mut entry = entry_from_prefix(&mut self.clock, file, offset, &fields);
                entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
                entry.orphan = true;
                entry.set_text(field, text, max_bytes);
                *pending = Some(Pending { entry, field });
                return;
            }
        };
        if let Some(done) = pending {
            emit(&mut done.entry, sink);
        }
        let mut entry = entry_from_prefix(&mut self.clock, file, offset, &fields);
        entry.level = Cow::Borrowed(level);
        let message = take_verbose_sqlstate(&mut entry, text);
        entry.set_text(TextField::Message, message, max_bytes);
        *pending = Some(Pending {
            entry,
            field: TextField::Message,
        });
    }

    /// Counts a line that did not match the prefix, if it looks like a log line written under
    /// another one: some text, a space, then a label and `":  "`.
    fn unmatched(&mut self, line: &str) {
        let searched = &line.as_bytes()[..line.len().min(MAX_FOREIGN_PREFIX_BYTES)];
        let foreign = crate::prefix::separator_finder()
            .find_iter(searched)
            .any(|colon| {
                let word_start = line[..colon]
                    .rfind([' ', '\t'])
                    .map_or(0, |space| space + 1);
                split_label(&line[word_start..]).is_some()
            });
        if foreign {
            self.fit.foreign += 1;
            if self.fit.sample.is_none() {
                let (sample, _) = crate::entry::capped(line, SAMPLE_LINE_BYTES);
                self.fit.sample = Some(sample.to_owned());
            }
        }
    }
}

/// A line that extends the field before it, or starts an orphan when there is none.
fn continuation<'d>(
    pending: &mut Option<Pending<'d>>,
    file: &'d str,
    offset: u64,
    text: &'d str,
    max_bytes: usize,
) {
    if let Some(pending) = pending {
        pending.entry.append_line(pending.field, text, max_bytes);
        return;
    }
    let mut entry = Entry::at(file, offset);
    entry.level = Cow::Borrowed(UNKNOWN_LEVEL);
    entry.orphan = true;
    entry.set_text(TextField::Message, text, max_bytes);
    *pending = Some(Pending {
        entry,
        field: TextField::Message,
    });
}

/// Passes a finished entry on, with stderr's "at character N" moved out of the message into
/// the field csvlog and jsonlog give it: `position` (the cursor position in the statement), or
/// `query_position` when the entry has an internal query. PostgreSQL writes the cursor
/// position when there is one and the internal one otherwise; an error with both (rare) is
/// taken as having the internal one.
fn emit(entry: &mut Entry<'_>, sink: &mut impl Sink) {
    if let Some((kept, position)) = split_cursor_position(&entry.message) {
        match &mut entry.message {
            Cow::Borrowed(message) => *message = &message[..kept],
            Cow::Owned(message) => message.truncate(kept),
        }
        if entry.query.is_some() {
            entry.query_position = Some(position);
        } else {
            entry.position = Some(position);
        }
    }
    sink.entry(entry);
}

/// The length of `message` without a final `" at character N"`, and N.
fn split_cursor_position(message: &str) -> Option<(usize, u64)> {
    let digits = message.len() - message.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let head = message[..message.len() - digits].strip_suffix(" at character ")?;
    let position = message[head.len() + 14..].parse().ok()?;
    Some((head.len(), position))
}

/// Lines of two processes never belong to one entry; without `%p` in the prefix there is no
/// telling, and the line is taken as the entry's.
fn same_process(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The label of a stderr line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label<'a> {
    /// A severity, or a word in capitals that is no label of English PostgreSQL: most likely a
    /// severity translated by `lc_messages` (`FEHLER`, `ERREUR`). Either starts an entry, so
    /// that a log in another language still comes as one entry per message rather than one
    /// huge entry; its level is the word as written.
    Entry(&'a str),
    /// `DETAIL`, `HINT`, ...: a further field of the entry before.
    Field(TextField),
}

/// The longest label searched for: translated severities run to about 30 bytes of UTF-8
/// (`ПРЕДУПРЕЖДЕНИЕ`); looking further only costs time on lines that are not prefixed.
const MAX_LABEL_BYTES: usize = 48;

/// The label at the start of `rest` (a word in capitals followed by `":  "`) and the text
/// after it.
fn split_label(rest: &str) -> Option<(Label<'_>, &str)> {
    let colon = rest.bytes().take(MAX_LABEL_BYTES).position(|b| b == b':')?;
    let word = &rest[..colon];
    let text = rest[colon..].strip_prefix(":  ")?;
    if let Some(field) = TextField::from_stderr_label(word) {
        return Some((Label::Field(field), text));
    }
    // Every English severity (`LOG`, `DEBUG1`, ...) is such a word too.
    let capitals = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        || !word.is_empty()
            && !word.is_ascii()
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_alphabetic() && !c.is_lowercase());
    capitals.then_some((Label::Entry(word), text))
}

/// An entry with what the prefix told about it.
fn entry_from_prefix<'d>(
    clock: &mut Clock,
    file: &'d str,
    offset: u64,
    fields: &PrefixFields<'d>,
) -> Entry<'d> {
    let mut entry = Entry::at(file, offset);
    let converted = fields
        .get(Escape::TimeMillis)
        .or_else(|| fields.get(Escape::Time))
        .and_then(|text| clock.convert(text));
    if let Some(converted) = converted {
        entry.set_time(converted);
    } else {
        entry.time = fields
            .get(Escape::EpochMillis)
            .and_then(timestamp::convert_epoch);
    }
    entry.pid = fields.get(Escape::Pid).and_then(|p| p.parse().ok());
    let text = |escape| fields.get(escape).and_then(known);
    entry.user = text(Escape::User);
    entry.database = text(Escape::Database);
    entry.application = text(Escape::Application);
    entry.remote_host = text(Escape::RemoteHost).or_else(|| {
        fields
            .get(Escape::RemoteHostPort)
            .and_then(remote_host_without_port)
    });
    entry.session_id = text(Escape::SessionId);
    entry.backend_type = text(Escape::BackendType);
    entry.sqlstate = text(Escape::SqlState).filter(|code| *code != NO_ERROR_SQLSTATE);
    entry
}

/// With `log_error_verbosity = verbose` PostgreSQL writes the SQLSTATE before the message
/// (`ERROR:  22012: division by zero`). Moves it to `sqlstate` when it is one (a known SQLSTATE
/// class, so that a message like `HELLO: world` stays whole), and returns the message.
fn take_verbose_sqlstate<'t>(entry: &mut Entry<'t>, text: &'t str) -> &'t str {
    let Some(code) = text.get(..5) else {
        return text;
    };
    let Some(message) = text[5..].strip_prefix(": ") else {
        return text;
    };
    let shaped = code
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if !shaped || !is_sqlstate_class(&code[..2]) {
        return text;
    }
    match &entry.sqlstate {
        Some(known) if known.as_ref() != code => text,
        _ if code == NO_ERROR_SQLSTATE => message,
        _ => {
            entry.sqlstate = Some(Cow::Borrowed(code));
            message
        }
    }
}

/// The SQLSTATE classes of PostgreSQL 15 (Appendix A of its documentation).
fn is_sqlstate_class(class: &str) -> bool {
    const CLASSES: [&str; 43] = [
        "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22",
        "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F",
        "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
    ];
    CLASSES.contains(&class)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("../tests/data/stderr_debian_prefix.log");
    const TCP_VERBOSE: &str = include_str!("../tests/data/stderr_tcp_verbose.log");
    const PADDED: &str = include_str!("../tests/data/stderr_padded_prefix.log");
    const MAX: usize = 65_536;

    fn parse_with(prefix: &str, data: &str, max_bytes: usize) -> Vec<Entry<'static>> {
        let prefix = LinePrefix::compile(prefix).expect("the prefix compiles");
        let mut parser = StderrParser::new(&prefix, Clock::default());
        let mut out = Vec::new();
        parser.feed("postgresql.log", 0, data, max_bytes, &mut out);
        parser.finish(&mut out);
        out
    }

    fn parse(prefix: &str, data: &str) -> Vec<Entry<'static>> {
        parse_with(prefix, data, MAX)
    }

    fn find<'e>(entries: &'e [Entry<'static>], message: &str) -> &'e Entry<'static> {
        entries
            .iter()
            .find(|e| e.message.starts_with(message))
            .unwrap_or_else(|| panic!("no entry starting with `{message}`"))
    }

    #[test]
    fn debian_prefix_log_has_one_entry_per_severity_line() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let severity_lines = DEBIAN
            .lines()
            .filter(|l| {
                [" LOG:  ", " ERROR:  ", " WARNING:  ", " FATAL:  "]
                    .iter()
                    .any(|s| l.contains(s))
                    && !l.starts_with('\t')
            })
            .count();
        assert_eq!(entries.len(), severity_lines);
        assert!(
            entries
                .iter()
                .all(|e| !e.orphan && e.level != UNKNOWN_LEVEL)
        );
        let mut offsets: Vec<u64> = entries.iter().map(|e| e.line_offset).collect();
        offsets.dedup();
        assert_eq!(
            offsets.len(),
            entries.len(),
            "offsets are distinct and in order"
        );
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        for entry in &entries {
            let at = usize::try_from(entry.line_offset).expect("small file");
            assert!(
                DEBIAN[at..].starts_with("2026-11-27 "),
                "line_offset {at} is a line start"
            );
        }
    }

    #[test]
    fn background_process_line() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let first = &entries[0];
        assert_eq!(first.timestamp(), "2026-11-27T00:25:16.612Z");
        assert_eq!(first.level, "LOG");
        assert_eq!(first.pid, Some(19991));
        assert_eq!(first.user, None);
        assert_eq!(first.database, None);
        assert_eq!(first.line_offset, 0);
        assert!(first.message.starts_with("starting PostgreSQL 15.18"));
    }

    #[test]
    fn unique_violation_with_detail_and_statement() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let e = find(&entries, "duplicate key value");
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.database.as_deref(), Some("app"));
        assert_eq!(e.pid, Some(20044));
        assert_eq!(
            e.message,
            "duplicate key value violates unique constraint \"accounts_pkey\""
        );
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1) already exists."));
        assert_eq!(
            e.statement.as_deref(),
            Some("INSERT INTO accounts VALUES (1, 'b');")
        );
        assert_eq!(e.timestamp(), "2026-11-27T00:25:25.356Z");
    }

    #[test]
    fn multi_line_statement_keeps_its_quotes_and_inner_tabs() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let expected = "SELECT name,\n       'it''s \"quoted\"',\n\tid -- tab-indented line\n\
                        FROM accounts\nWHERE id = 1/0;";
        let logged = entries
            .iter()
            .find(|e| e.message.starts_with("statement: SELECT name,"))
            .expect("log_statement entry");
        assert_eq!(logged.message, format!("statement: {expected}"));
        let failed = entries
            .iter()
            .find(|e| e.statement.as_deref() == Some(expected))
            .expect("the error carries the same statement");
        assert_eq!(failed.message, "division by zero");
        assert_eq!(failed.level, "ERROR");
    }

    #[test]
    fn raise_with_detail_hint_and_context() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let e = find(&entries, "custom failure");
        assert_eq!(e.detail.as_deref(), Some("the detail, with \"quotes\""));
        assert_eq!(e.hint.as_deref(), Some("try again"));
        assert_eq!(
            e.context.as_deref(),
            Some("PL/pgSQL function inline_code_block line 3 at RAISE")
        );
        assert!(
            e.statement
                .as_deref()
                .is_some_and(|s| s.starts_with("DO $$\nBEGIN\n"))
        );
        let f = find(&entries, "careful");
        assert_eq!(f.level, "WARNING");
        assert_eq!(f.statement, None);
    }

    #[test]
    fn multi_line_context() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let e = entries
            .iter()
            .find(|e| e.statement.as_deref() == Some("SELECT f();"))
            .expect("the error of f()");
        assert_eq!(
            e.context.as_deref(),
            Some("SQL statement \"SELECT 1/0\"\nPL/pgSQL function f() line 1 at EXECUTE")
        );
    }

    #[test]
    fn fatal_for_a_missing_database() {
        let entries = parse("%m [%p] %q%u@%d ", DEBIAN);
        let e = find(&entries, "database \"nosuchdb\" does not exist");
        assert_eq!(e.level, "FATAL");
        assert_eq!(e.database.as_deref(), Some("nosuchdb"));
    }

    #[test]
    fn verbose_tcp_log_moves_sqlstate_and_location() {
        let entries = parse("%t:%r:%u@%d:[%p]: ", TCP_VERBOSE);
        assert!(entries.iter().all(|e| !e.orphan));
        let first = &entries[0];
        assert_eq!(
            first.timestamp(),
            "2026-11-27T00:28:29.000Z",
            "+0545 applied"
        );
        assert_eq!(first.zone, None);
        assert_eq!(first.sqlstate, None, "00000 is left out, as jsonlog does");
        assert!(first.message.starts_with("starting PostgreSQL"));
        assert_eq!(
            first.location.as_deref(),
            Some("PostmasterMain, postmaster.c:1203")
        );
        assert_eq!(first.remote_host, None);

        let received = find(&entries, "connection received: host=127.0.0.1 port=57532");
        assert_eq!(received.user, None, "[unknown] is absent");
        assert_eq!(received.database, None);
        assert_eq!(received.remote_host.as_deref(), Some("127.0.0.1"));

        let e = find(&entries, "column \"nosuchcol\" does not exist");
        assert_eq!(e.sqlstate.as_deref(), Some("42703"));
        assert_eq!(e.message, "column \"nosuchcol\" does not exist");
        assert_eq!(e.query_position, Some(8), "\"at character 8\" of the QUERY");
        assert_eq!(e.position, None);
        assert_eq!(e.query.as_deref(), Some("SELECT nosuchcol FROM accounts"));
        assert_eq!(
            e.location.as_deref(),
            Some("errorMissingColumn, parse_relation.c:3665")
        );
        assert_eq!(
            e.statement.as_deref(),
            Some("DO $$ BEGIN PERFORM nosuchcol FROM accounts; END $$;")
        );

        let w = find(&entries, "first line");
        assert_eq!(w.level, "WARNING");
        assert_eq!(w.sqlstate.as_deref(), Some("01000"));
        assert_eq!(w.message, "first line\nsecond line\twith tab");

        let bob = find(&entries, "role \"bob\" does not exist");
        assert_eq!(bob.level, "FATAL");
        assert_eq!(bob.sqlstate.as_deref(), Some("28000"));
        assert_eq!(bob.user.as_deref(), Some("bob"));
    }

    #[test]
    fn padded_prefix_log_with_named_zone_and_debug() {
        let prefix = "%m %q[%10p] %-8u %d %a|%h|%c|%l|%v|%x|%e|%i|%b|%Q|%s|%n %%%% ";
        let entries = parse(prefix, PADDED);
        assert!(entries.iter().all(|e| !e.orphan));
        let entry_lines = PADDED
            .lines()
            .filter(|l| !l.contains(" STATEMENT:  "))
            .count();
        assert_eq!(entries.len(), entry_lines);
        let first = &entries[0];
        assert_eq!(
            first.timestamp(),
            "2026-11-27T01:28:43.690",
            "CET without `log_timezone`: local time, never claimed as UTC"
        );
        assert_eq!(first.zone.as_deref(), Some("CET"));
        assert_eq!(first.pid, None, "%p comes after %q");

        let e = find(&entries, "division by zero");
        assert_eq!(e.pid, Some(21510));
        assert_eq!(e.user.as_deref(), Some("postgres"));
        assert_eq!(e.database.as_deref(), Some("app"));
        assert_eq!(e.application.as_deref(), Some("my app"));
        assert_eq!(e.remote_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.session_id.as_deref(), Some("6b08cebb.5406"));
        assert_eq!(e.backend_type.as_deref(), Some("client backend"));
        assert_eq!(e.sqlstate.as_deref(), Some("22012"));
        assert_eq!(e.statement.as_deref(), Some("SELECT 1/0;"));

        let debug: Vec<_> = entries.iter().filter(|e| e.level == "DEBUG").collect();
        let debug_lines = PADDED.lines().filter(|l| l.contains(" DEBUG:  ")).count();
        assert_eq!(debug.len(), debug_lines);
        assert_eq!(debug.len(), 10);
        assert!(debug.iter().all(|e| e.user.as_deref() == Some("alice")));
    }

    /// Every line of the padded log carries its time twice: `%m` in CET and `%n` as epoch
    /// seconds. Resolved through `log_timezone`, the two agree on every entry.
    #[test]
    fn log_timezone_resolves_cet_to_the_same_instant_as_epoch_seconds() {
        let prefix =
            LinePrefix::compile("%m %q[%10p] %-8u %d %a|%h|%c|%l|%v|%x|%e|%i|%b|%Q|%s|%n %%%% ")
                .expect("compiles");
        let berlin = jiff::tz::db().get("Europe/Berlin").expect("zone");
        let mut parser = StderrParser::new(&prefix, Clock::new(Some(berlin)));
        let mut entries = Vec::new();
        parser.feed("postgresql.log", 0, PADDED, MAX, &mut entries);
        parser.finish(&mut entries);
        let mut checked = 0;
        for (entry, line) in entries
            .iter()
            .zip(PADDED.lines().filter(|l| !l.contains(" STATEMENT:  ")))
        {
            assert_eq!(entry.zone, None, "{line}");
            // `%n` is the last field before `%%`.
            let Some(epoch) = line
                .split(" %% ")
                .next()
                .and_then(|head| head.rsplit('|').next())
            else {
                continue;
            };
            if let Some(time) = timestamp::convert_epoch(epoch) {
                assert_eq!(entry.time, Some(time), "{line}");
                checked += 1;
            }
        }
        assert!(checked > 10, "{checked} lines with `%n`");
    }

    #[test]
    fn continuation_lines_without_an_entry_become_one_orphan() {
        let data = "\tFROM accounts\n\
                    \tWHERE id = 1/0;\n\
                    2026-11-27 00:25:25.356 UTC [20044] alice@app ERROR:  division by zero\n";
        let entries = parse("%m [%p] %q%u@%d ", data);
        assert_eq!(entries.len(), 2);
        assert!(entries[0].orphan);
        assert_eq!(entries[0].level, UNKNOWN_LEVEL);
        assert_eq!(entries[0].message, "FROM accounts\nWHERE id = 1/0;");
        assert_eq!(
            entries[0].timestamp(),
            "",
            "the run fills in the collection time"
        );
        assert_eq!(entries[1].line_offset, data.find("2026").unwrap() as u64);
        assert!(!entries[1].orphan);
    }

    #[test]
    fn a_field_line_without_its_entry_is_an_orphan_with_the_prefix_fields() {
        let data = "2026-11-27 00:25:25.356 UTC [20044] alice@app DETAIL:  Key (id)=(1) already exists.\n\
                    2026-11-27 00:25:25.356 UTC [20044] alice@app STATEMENT:  INSERT INTO accounts VALUES (1, 'b');\n";
        let entries = parse("%m [%p] %q%u@%d ", data);
        assert_eq!(entries.len(), 1, "the STATEMENT line joins the orphan");
        let e = &entries[0];
        assert!(e.orphan);
        assert_eq!(e.level, UNKNOWN_LEVEL);
        assert_eq!(e.message, "");
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1) already exists."));
        assert_eq!(
            e.statement.as_deref(),
            Some("INSERT INTO accounts VALUES (1, 'b');")
        );
        assert_eq!(e.database.as_deref(), Some("app"));
        assert_eq!(e.timestamp(), "2026-11-27T00:25:25.356Z");
    }

    #[test]
    fn a_detail_line_of_another_process_is_not_attached() {
        let data = "2026-11-27 00:25:25.356 UTC [1] alice@app ERROR:  one\n\
                    2026-11-27 00:25:25.356 UTC [2] bob@app DETAIL:  of two\n";
        let entries = parse("%m [%p] %q%u@%d ", data);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].detail, None);
        assert!(entries[1].orphan);
        assert_eq!(entries[1].pid, Some(2));
    }

    #[test]
    fn unprefixed_lines_continue_the_current_field() {
        let data = "2026-11-27 00:25:25.356 UTC [1] alice@app LOG:  statement: SELECT 1\n\
                    TRAP: raw output of something else\n";
        let entries = parse("%m [%p] %q%u@%d ", data);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].message,
            "statement: SELECT 1\nTRAP: raw output of something else"
        );
    }

    #[test]
    fn an_entry_split_across_feeds_is_joined() {
        let prefix = LinePrefix::compile("%m [%p] %q%u@%d ").expect("compiles");
        let mut parser = StderrParser::new(&prefix, Clock::default());
        let mut out = Vec::new();
        let first = "2026-11-27 00:25:25.356 UTC [20044] alice@app ERROR:  division by zero\n\
                     2026-11-27 00:25:25.356 UTC [20044] alice@app STATEMENT:  SELECT name,\n";
        let second = "\tFROM accounts;\n";
        parser.feed("a.log", 100, first, MAX, &mut out);
        assert!(out.is_empty(), "the entry may still continue");
        parser.feed("a.log", 100 + first.len() as u64, second, MAX, &mut out);
        parser.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].statement.as_deref(),
            Some("SELECT name,\nFROM accounts;")
        );
        assert_eq!(out[0].line_offset, 100);
        assert_eq!(out[0].file, "a.log");
    }

    #[test]
    fn long_statements_are_cut_and_flagged() {
        let statement = "x".repeat(100);
        let data = format!(
            "2026-11-27 00:25:25.356 UTC [1] a@b ERROR:  boom\n\
             2026-11-27 00:25:25.356 UTC [1] a@b STATEMENT:  {statement}\n\t{statement}\n"
        );
        let entries = parse_with("%m [%p] %q%u@%d ", &data, 64);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].statement.as_deref().map(str::len), Some(64));
        assert!(entries[0].truncated);
        assert_eq!(entries[0].message, "boom");
    }

    #[test]
    fn translated_severities_still_split_entries() {
        // lc_messages = 'de_DE': severities and some labels are translated.
        let data = "2026-11-27 00:25:25.356 UTC [1] a@b FEHLER:  Division durch Null\n\
                    2026-11-27 00:25:25.356 UTC [1] a@b ANWEISUNG:  SELECT 1/0;\n\
                    2026-11-27 00:25:25.357 UTC [1] a@b LOG:  Anweisung: SELECT 1;\n\
                    2026-11-27 00:25:25.358 UTC [1] a@b ПРЕДУПРЕЖДЕНИЕ:  осторожно\n\
                    2026-11-27 00:25:25.359 UTC [1] a@b lower:  not a label\n";
        let entries = parse("%m [%p] %q%u@%d ", data);
        let levels: Vec<&str> = entries.iter().map(|e| e.level.as_ref()).collect();
        assert_eq!(levels, ["FEHLER", "ANWEISUNG", "LOG", "ПРЕДУПРЕЖДЕНИЕ"]);
        assert_eq!(entries[1].message, "SELECT 1/0;");
        assert_eq!(
            entries[3].message,
            "осторожно\n2026-11-27 00:25:25.359 UTC [1] a@b lower:  not a label"
        );
    }

    #[test]
    fn verbose_sqlstate_only_when_it_is_one() {
        let mut entry = Entry::default();
        assert_eq!(
            take_verbose_sqlstate(&mut entry, "HELLO: world"),
            "HELLO: world"
        );
        assert_eq!(take_verbose_sqlstate(&mut entry, "12345: x"), "12345: x");
        assert_eq!(take_verbose_sqlstate(&mut entry, "P0001: raised"), "raised");
        assert_eq!(entry.sqlstate.as_deref(), Some("P0001"));
        let mut entry = Entry {
            sqlstate: Some("22012".into()),
            ..Entry::default()
        };
        assert_eq!(
            take_verbose_sqlstate(&mut entry, "23505: text"),
            "23505: text",
            "disagrees with %e"
        );
        assert_eq!(take_verbose_sqlstate(&mut entry, "é"), "é");
    }

    #[test]
    fn epoch_prefix_gives_the_timestamp() {
        let entries = parse("%n [%p] ", "1795739323.792 [7] LOG:  hello\n");
        assert_eq!(entries[0].timestamp(), "2026-11-27T00:28:43.792Z");
        assert_eq!(entries[0].zone, None);
    }

    #[test]
    fn crlf_and_a_missing_final_newline_are_tolerated() {
        let entries = parse(
            "%m [%p] ",
            "2026-11-27 00:25:25.356 UTC [1] LOG:  one\r\n2026-11-27 00:25:25.357 UTC [1] LOG:  two",
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].message, "one");
        assert_eq!(entries[1].message, "two");
    }
}
