//! One log entry as the backend receives it, the severity order used by `min_level`, and the
//! capped text fields that keep one huge statement from eating a run's memory and output.
//!
//! The three format parsers all build an [`Entry`]; this module must never know which format
//! an entry came from. A value that is cut is always flagged (`truncated`), never cut silently.

use crate::timestamp::{Converted, LogTime, write_rfc3339};
use std::borrow::Cow;

/// A PostgreSQL severity, ordered as `log_min_messages` orders them (`LOG` ranks above `ERROR`
/// there, because a LOG line is something the operator asked to see in the server log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug5,
    Debug4,
    Debug3,
    Debug2,
    Debug1,
    Info,
    Notice,
    Warning,
    Error,
    Log,
    Fatal,
    Panic,
}

impl Level {
    /// The severity of a word as PostgreSQL writes it in a log line (`LOG`, `ERROR`, ...).
    ///
    /// PostgreSQL writes every debug level as plain `DEBUG`; it ranks as `DEBUG1`, the highest
    /// debug level, so that a `min_level` of any debug level keeps it rather than dropping a
    /// line that may have been wanted. `None` for anything else, including translated
    /// severities (`lc_messages` other than English) and `UNKNOWN`.
    pub fn from_log_word(word: &str) -> Option<Level> {
        Some(match word {
            "DEBUG" | "DEBUG1" => Level::Debug1,
            "DEBUG2" => Level::Debug2,
            "DEBUG3" => Level::Debug3,
            "DEBUG4" => Level::Debug4,
            "DEBUG5" => Level::Debug5,
            "INFO" => Level::Info,
            "NOTICE" => Level::Notice,
            "WARNING" => Level::Warning,
            "ERROR" => Level::Error,
            "LOG" => Level::Log,
            "FATAL" => Level::Fatal,
            "PANIC" => Level::Panic,
            _ => return None,
        })
    }

    /// The severity of a `min_level` setting, case-insensitive; `debug` means `debug2` as in
    /// `log_min_messages`.
    pub fn from_setting(value: &str) -> Option<Level> {
        match value.to_ascii_uppercase().as_str() {
            "DEBUG" => Some(Level::Debug2),
            upper => Level::from_log_word(upper),
        }
    }
}

/// The level of an entry whose severity is not known: a line that continues an entry from
/// before this run, or a record that did not parse.
pub const UNKNOWN_LEVEL: &str = "UNKNOWN";

/// The SQLSTATE of a message that is not an error (`successful_completion`). csvlog and `%e`
/// write it for every LOG line, jsonlog leaves `state_code` out instead; it is left out here in
/// every format, so that one event gives one entry whatever the format.
pub const NO_ERROR_SQLSTATE: &str = "00000";

/// A free-text field of an entry that continuation lines may extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Message,
    Detail,
    Hint,
    /// The internal query (`QUERY:` in stderr, `internal_query` in csvlog and jsonlog).
    Query,
    Context,
    Location,
    /// The client's statement (`STATEMENT:` in stderr, `query` in csvlog, `statement` in
    /// jsonlog).
    Statement,
    Backtrace,
}

impl TextField {
    /// The field a stderr line label (`DETAIL`, `HINT`, ...) introduces.
    pub fn from_stderr_label(label: &str) -> Option<TextField> {
        Some(match label.as_bytes() {
            b"DETAIL" => TextField::Detail,
            b"HINT" => TextField::Hint,
            b"QUERY" => TextField::Query,
            b"CONTEXT" => TextField::Context,
            b"LOCATION" => TextField::Location,
            b"STATEMENT" => TextField::Statement,
            b"BACKTRACE" => TextField::Backtrace,
            _ => return None,
        })
    }
}

/// One entry of a `pg_log` item. Field names are the backend contract (`timestamp`, `level`,
/// `message` are required; the rest appear only when known).
///
/// Text borrows from the log data wherever it can (`'a` is the chunk being parsed): a field is
/// copied only when continuation lines are joined to it, or when the entry must outlive its
/// chunk (see [`Entry::into_owned`]). [`write_json`] writes it straight into the output buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry<'a> {
    /// `None` while parsing when the line carries no time; the run then writes the collection
    /// time and `timestamp_estimated`.
    pub time: Option<LogTime>,
    /// The zone text of a time that could not be resolved ([`LogTime::Local`]): the timestamp
    /// is then wall-clock time without an offset.
    pub zone: Option<Cow<'a, str>>,
    pub level: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub pid: Option<u64>,
    pub user: Option<Cow<'a, str>>,
    pub database: Option<Cow<'a, str>>,
    pub application: Option<Cow<'a, str>>,
    /// The client's address without its port (`[local]` for a Unix socket).
    pub remote_host: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub backend_type: Option<Cow<'a, str>>,
    /// Absent for `00000` (see [`NO_ERROR_SQLSTATE`]).
    pub sqlstate: Option<Cow<'a, str>>,
    pub detail: Option<Cow<'a, str>>,
    pub hint: Option<Cow<'a, str>>,
    pub context: Option<Cow<'a, str>>,
    pub query: Option<Cow<'a, str>>,
    /// 1-based character position of the error in `query` (the internal query).
    pub query_position: Option<u64>,
    pub statement: Option<Cow<'a, str>>,
    /// 1-based character position of the error in `statement` (the cursor position: csvlog's
    /// `query_pos`, jsonlog's `cursor_position`, stderr's "at character N").
    pub position: Option<u64>,
    pub location: Option<Cow<'a, str>>,
    pub backtrace: Option<Cow<'a, str>>,
    pub file: Cow<'a, str>,
    /// Byte offset of the entry's first line in `file`.
    pub line_offset: u64,
    /// Some text field was cut at `max_message_bytes`.
    pub truncated: bool,
    /// The entry continues one from before this run (or before a rotation), whose first line
    /// was read by an earlier run: its severity and message are unknown.
    pub orphan: bool,
    /// Why the record did not parse; `message` then holds the raw text.
    pub parse_error: Option<Cow<'a, str>>,
}

impl<'a> Entry<'a> {
    /// An entry of `file` starting at byte `line_offset`, with everything else unknown.
    pub fn at(file: &'a str, line_offset: u64) -> Entry<'a> {
        Entry {
            file: Cow::Borrowed(file),
            line_offset,
            ..Entry::default()
        }
    }

    /// The same entry owning all its text, to outlive the data it was parsed from.
    pub fn into_owned(self) -> Entry<'static> {
        fn own(text: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(text.into_owned())
        }
        let opt = |text: Option<Cow<'_, str>>| text.map(own);
        Entry {
            time: self.time,
            zone: opt(self.zone),
            level: own(self.level),
            message: own(self.message),
            pid: self.pid,
            user: opt(self.user),
            database: opt(self.database),
            application: opt(self.application),
            remote_host: opt(self.remote_host),
            session_id: opt(self.session_id),
            backend_type: opt(self.backend_type),
            sqlstate: opt(self.sqlstate),
            detail: opt(self.detail),
            hint: opt(self.hint),
            context: opt(self.context),
            query: opt(self.query),
            query_position: self.query_position,
            statement: opt(self.statement),
            position: self.position,
            location: opt(self.location),
            backtrace: opt(self.backtrace),
            file: own(self.file),
            line_offset: self.line_offset,
            truncated: self.truncated,
            orphan: self.orphan,
            parse_error: opt(self.parse_error),
        }
    }

    /// The timestamp as written to the output, `""` when the line had none.
    pub fn timestamp(&self) -> String {
        self.time.map(crate::timestamp::rfc3339).unwrap_or_default()
    }

    /// Sets the time and, when it stayed local, the zone text of a converted timestamp.
    pub fn set_time(&mut self, converted: Converted<'a>) {
        self.time = Some(converted.time);
        self.zone = converted.zone.map(Cow::Borrowed);
    }

    /// The text of `field`, `None` if absent.
    fn slot(&mut self, field: TextField) -> &mut Option<Cow<'a, str>> {
        match field {
            // `message` is required, so it has no absent state; callers go through `message`.
            TextField::Message => unreachable!("`message` has no slot"),
            TextField::Detail => &mut self.detail,
            TextField::Hint => &mut self.hint,
            TextField::Query => &mut self.query,
            TextField::Context => &mut self.context,
            TextField::Location => &mut self.location,
            TextField::Statement => &mut self.statement,
            TextField::Backtrace => &mut self.backtrace,
        }
    }

    /// Replaces `field` with `text`, cut at `max_bytes`; borrowed, not copied.
    pub fn set_text(&mut self, field: TextField, text: &'a str, max_bytes: usize) {
        let (text, cut) = capped(text, max_bytes);
        self.truncated |= cut;
        match field {
            TextField::Message => self.message = Cow::Borrowed(text),
            field => *self.slot(field) = Some(Cow::Borrowed(text)),
        }
    }

    /// Sets `field` to `text` (cut at `max_bytes`) unless `text` is empty, which PostgreSQL
    /// writes for "not set".
    pub fn set_text_if_present(&mut self, field: TextField, text: &'a str, max_bytes: usize) {
        if !text.is_empty() {
            self.set_text(field, text, max_bytes);
        }
    }

    /// Sets `field` to `text`, or appends `text` as a further line when the field already has
    /// some (so that a label repeated within one entry loses nothing).
    pub fn add_text(&mut self, field: TextField, text: &'a str, max_bytes: usize) {
        let has_text = match field {
            TextField::Message => !self.message.is_empty(),
            field => self.slot(field).is_some(),
        };
        if has_text {
            self.append_line(field, text, max_bytes);
        } else {
            self.set_text(field, text, max_bytes);
        }
    }

    /// Appends a continuation line to `field` as `"\n" + text`, keeping the field within
    /// `max_bytes`. The field becomes owned here: joined lines are not contiguous in the log.
    pub fn append_line(&mut self, field: TextField, text: &str, max_bytes: usize) {
        let slot = match field {
            TextField::Message => &mut self.message,
            field => self.slot(field).get_or_insert(Cow::Borrowed("")),
        };
        if slot.len() >= max_bytes {
            // Already full: nothing more fits, not even the newline.
            self.truncated = true;
            return;
        }
        let slot = slot.to_mut();
        // Short-circuits: when not even the newline fits, the text is left out too.
        if push_capped(slot, "\n", max_bytes) || push_capped(slot, text, max_bytes) {
            self.truncated = true;
        }
    }

    /// The milliseconds of a `duration: 12.345 ms` message (`log_duration`,
    /// `log_min_duration_statement`, auto_explain), as the JSON number text PostgreSQL wrote.
    pub fn duration_ms(&self) -> Option<&str> {
        let rest = self.message.strip_prefix("duration: ")?;
        // The number runs to the first byte that is neither a digit nor a dot, and `" ms"`
        // must follow it: the same as cutting at the first `" ms"`, without a substring search.
        let end = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        if !rest.as_bytes()[end..].starts_with(b" ms") {
            return None;
        }
        let number = &rest[..end];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        // A JSON number has no leading zeros; PostgreSQL writes none either.
        let json = digits(whole) && digits(fraction) && (whole == "0" || !whole.starts_with('0'));
        json.then_some(number)
    }
}

/// Where the parsers put each finished entry: the run writes it straight into its output; the
/// tests collect owned copies. The entry is lent, not given: an entry is a few hundred bytes,
/// and the parsers keep theirs in place rather than move it for every line.
pub trait Sink {
    fn entry(&mut self, entry: &Entry<'_>);
}

impl Sink for Vec<Entry<'static>> {
    fn entry(&mut self, entry: &Entry<'_>) {
        self.push(entry.clone().into_owned());
    }
}

/// `text` cut at `max_bytes` (at a char boundary), and whether anything was cut.
pub fn capped(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        (text, false)
    } else {
        (&text[..floor_char_boundary(text, max_bytes)], true)
    }
}

/// What JSON text is written into: a `String` (the run's output, which then needs no UTF-8
/// pass at the end) or bytes. Only whole `str` pieces and ASCII bytes are written, so a
/// `String` stays valid without a check.
pub trait JsonOut {
    /// Text already in JSON form (the collection time): `str` for a `String`, bytes for bytes.
    type Text: ?Sized;
    fn put_str(&mut self, text: &str);
    /// An ASCII byte (a digit, a quote, an escape).
    fn put_ascii(&mut self, byte: u8);
    fn put_text(&mut self, text: &Self::Text);
    fn reserve_bytes(&mut self, additional: usize);
}

impl JsonOut for Vec<u8> {
    type Text = [u8];
    fn put_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
    fn put_ascii(&mut self, byte: u8) {
        self.push(byte);
    }
    fn put_text(&mut self, text: &[u8]) {
        self.extend_from_slice(text);
    }
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl JsonOut for String {
    type Text = str;
    fn put_str(&mut self, text: &str) {
        self.push_str(text);
    }
    fn put_ascii(&mut self, byte: u8) {
        debug_assert!(byte.is_ascii());
        self.push(char::from(byte));
    }
    fn put_text(&mut self, text: &str) {
        self.push_str(text);
    }
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Writes `entry` as a JSON object into `out`, `now` (JSON string text, quoted) standing in for
/// a missing time. Only what JSON requires is escaped.
pub fn write_json<O: JsonOut + ?Sized>(out: &mut O, entry: &Entry<'_>, now: &O::Text) {
    out.put_str("{\"timestamp\":");
    match entry.time {
        Some(time) => {
            out.put_ascii(b'"');
            write_rfc3339(out, time);
            out.put_ascii(b'"');
        }
        None => out.put_text(now),
    }
    text(out, ",\"zone\":", entry.zone.as_deref());
    if entry.time.is_none() {
        out.put_str(",\"timestamp_estimated\":true");
    }
    text(out, ",\"level\":", Some(&entry.level));
    text(out, ",\"message\":", Some(&entry.message));
    if let Some(duration) = entry.duration_ms() {
        out.put_str(",\"duration_ms\":");
        out.put_str(duration);
    }
    number(out, ",\"pid\":", entry.pid);
    text(out, ",\"user\":", entry.user.as_deref());
    text(out, ",\"database\":", entry.database.as_deref());
    text(out, ",\"application\":", entry.application.as_deref());
    text(out, ",\"remote_host\":", entry.remote_host.as_deref());
    text(out, ",\"session_id\":", entry.session_id.as_deref());
    text(out, ",\"backend_type\":", entry.backend_type.as_deref());
    text(out, ",\"sqlstate\":", entry.sqlstate.as_deref());
    text(out, ",\"detail\":", entry.detail.as_deref());
    text(out, ",\"hint\":", entry.hint.as_deref());
    text(out, ",\"context\":", entry.context.as_deref());
    text(out, ",\"query\":", entry.query.as_deref());
    number(out, ",\"query_position\":", entry.query_position);
    text(out, ",\"statement\":", entry.statement.as_deref());
    number(out, ",\"position\":", entry.position);
    text(out, ",\"location\":", entry.location.as_deref());
    text(out, ",\"backtrace\":", entry.backtrace.as_deref());
    text(out, ",\"file\":", Some(&entry.file));
    number(out, ",\"line_offset\":", Some(entry.line_offset));
    if entry.truncated {
        out.put_str(",\"truncated\":true");
    }
    if entry.orphan {
        out.put_str(",\"orphan\":true");
    }
    text(out, ",\"parse_error\":", entry.parse_error.as_deref());
    out.put_ascii(b'}');
}

/// `key` (`,"name":`, written whole) and the value as a JSON string, when it is present.
fn text<O: JsonOut + ?Sized>(out: &mut O, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.put_str(key);
        write_json_string(out, value);
    }
}

fn number<O: JsonOut + ?Sized>(out: &mut O, key: &str, value: Option<u64>) {
    if let Some(mut n) = value {
        out.put_str(key);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // A few bytes: put one by one rather than through a copy call.
        out.reserve_bytes(digits.len() - at);
        for &digit in &digits[at..] {
            out.put_ascii(digit);
        }
    }
}

/// Bytes JSON requires escaped in a string: `"`, `\\` and the controls below 0x20.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Writes `text` as a JSON string: runs of plain bytes are copied whole.
pub fn write_json_string<O: JsonOut + ?Sized>(out: &mut O, text: &str) {
    let bytes = text.as_bytes();
    out.reserve_bytes(bytes.len() + 2);
    out.put_ascii(b'"');
    let mut start = 0;
    let mut i = next_escape(bytes, 0);
    while i < bytes.len() {
        let b = bytes[i];
        // `i` is an ASCII byte, so a char boundary: the run before it is whole characters.
        out.put_str(&text[start..i]);
        match b {
            b'"' => out.put_str("\\\""),
            b'\\' => out.put_str("\\\\"),
            b'\n' => out.put_str("\\n"),
            b'\t' => out.put_str("\\t"),
            b'\r' => out.put_str("\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.put_str("\\u00");
                out.put_ascii(HEX[(b >> 4) as usize]);
                out.put_ascii(HEX[(b & 15) as usize]);
            }
        }
        start = i + 1;
        i = next_escape(bytes, start);
    }
    out.put_str(&text[start..]);
    out.put_ascii(b'"');
}

/// The index of the first byte at or after `from` that JSON requires escaped, or the length.
/// Eight bytes at a time (no SIMD in the guest): a word with no control byte, quote or
/// backslash is skipped whole.
fn next_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        // High bit set in a byte lane where the byte is below 0x20, or equals `"` or `\\`
        // (exact for the lowest such lane, which is all that is used).
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let found = (below_space
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if found != 0 {
            let lane = i + (found.trailing_zeros() / 8) as usize;
            // The lowest lane flagged is exact; checked anyway, and the scan goes on from it.
            if NEEDS_ESCAPE[bytes[lane] as usize] {
                return lane;
            }
            i = lane + 1;
            continue;
        }
        i += 8;
    }
    while i < bytes.len() && !NEEDS_ESCAPE[bytes[i] as usize] {
        i += 1;
    }
    i
}

/// Appends as much of `text` to `dst` as fits in `max_bytes` in all, cut at a char boundary;
/// true if anything was left out.
pub fn push_capped(dst: &mut String, text: &str, max_bytes: usize) -> bool {
    let room = max_bytes.saturating_sub(dst.len());
    if text.len() <= room {
        dst.push_str(text);
        return false;
    }
    dst.push_str(&text[..floor_char_boundary(text, room)]);
    true
}

/// The largest char boundary of `text` at or below `index`.
pub fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    let mut i = index;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `Some(text)` unless PostgreSQL wrote it for "not known": empty, or `[unknown]` (user,
/// database and application of a session that has not authenticated yet).
pub fn known(text: &str) -> Option<Cow<'_, str>> {
    match text.as_bytes() {
        b"" | b"[unknown]" => None,
        _ => Some(Cow::Borrowed(text)),
    }
}

/// The host of a client address written as `host(port)` (`%r`) or `host:port` (csvlog's
/// `connection_from`, which always has a port for TCP), without the port; `[local]` and bare
/// host names unchanged.
pub fn remote_host_without_port(address: &str) -> Option<Cow<'_, str>> {
    let host = if let Some(open) = address.strip_suffix(')').and_then(|s| s.rfind('(')) {
        &address[..open]
    } else if let Some((host, port)) = address.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && !host.is_empty()
    {
        host
    } else {
        address
    };
    known(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_log_min_messages_order() {
        let order = [
            "DEBUG5", "DEBUG4", "DEBUG3", "DEBUG2", "DEBUG1", "INFO", "NOTICE", "WARNING", "ERROR",
            "LOG", "FATAL", "PANIC",
        ];
        for pair in order.windows(2) {
            let (low, high) = (Level::from_log_word(pair[0]), Level::from_log_word(pair[1]));
            assert!(low.is_some() && low < high, "{pair:?}");
        }
        assert_eq!(Level::from_log_word("DEBUG"), Some(Level::Debug1));
        assert_eq!(Level::from_log_word("FEHLER"), None);
        assert_eq!(
            Level::from_log_word("log"),
            None,
            "log lines are upper case"
        );
        assert_eq!(Level::from_setting("warning"), Some(Level::Warning));
        assert_eq!(Level::from_setting("Debug"), Some(Level::Debug2));
        assert_eq!(Level::from_setting("verbose"), None);
    }

    #[test]
    fn push_capped_cuts_at_a_char_boundary() {
        let mut s = String::from("ab");
        assert!(
            push_capped(&mut s, "cdé", 5),
            "é is two bytes and does not fit"
        );
        assert_eq!(s, "abcd");
        let mut s = String::new();
        assert!(!push_capped(&mut s, "héllo", 6));
        assert_eq!(s, "héllo");
        let mut s = String::from("full");
        assert!(push_capped(&mut s, "x", 4));
        assert!(
            !push_capped(&mut s, "", 4),
            "nothing left out of an empty text"
        );
    }

    #[test]
    fn append_line_flags_what_it_cuts() {
        let mut entry = Entry::default();
        entry.set_text(TextField::Statement, "SELECT 1,", 14);
        entry.append_line(TextField::Statement, "2", 14);
        assert_eq!(entry.statement.as_deref(), Some("SELECT 1,\n2"));
        assert!(!entry.truncated);
        entry.append_line(TextField::Statement, "345", 14);
        assert_eq!(entry.statement.as_deref(), Some("SELECT 1,\n2\n34"));
        assert!(entry.truncated);

        let mut entry = Entry::default();
        entry.set_text(TextField::Message, "abcd", 4);
        entry.append_line(TextField::Message, "", 4);
        assert!(entry.truncated, "even the newline did not fit");
        assert_eq!(entry.message, "abcd");
    }

    #[test]
    fn set_text_flags_a_cut_message() {
        let mut entry = Entry::default();
        entry.set_text(TextField::Message, "ééé", 5);
        assert_eq!(entry.message, "éé");
        assert!(entry.truncated);
    }

    #[test]
    fn unknown_values_are_absent() {
        assert_eq!(known("[unknown]"), None);
        assert_eq!(known(""), None);
        assert_eq!(known("alice").as_deref(), Some("alice"));
    }

    #[test]
    fn remote_hosts_lose_their_port() {
        let host = |s| remote_host_without_port(s);
        assert_eq!(host("127.0.0.1(57532)").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("127.0.0.1:57532").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("::1:57532").as_deref(), Some("::1"));
        assert_eq!(host("db.example.com").as_deref(), Some("db.example.com"));
        assert_eq!(host("[local]").as_deref(), Some("[local]"));
        assert_eq!(host(""), None);
    }

    #[test]
    fn json_strings_escape_exactly_what_json_requires() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        for text in [
            "",
            "plain",
            "quote \" backslash \\ newline \n tab \t cr \r",
            "é ü 😀 ПРЕДУПРЕЖДЕНИЕ",
            "\u{7f}\u{1}\u{1f}",
            every_ascii.as_str(),
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, text);
            let written = String::from_utf8(out).expect("UTF-8");
            let back: String = serde_json::from_str(&written).expect("valid JSON");
            assert_eq!(back, text);
            // Nothing beyond what JSON requires: non-ASCII and DEL pass through.
            assert!(!written.contains("\\u00e9") && !written.contains("\\u007f"));
        }
    }

    #[test]
    fn escapes_are_found_at_every_offset_of_a_word() {
        for special in ["\"", "\\", "\n", "\u{0}", "\u{1f}"] {
            for at in 0..24 {
                let text = format!("{}{special}{}", "a".repeat(at), "é".repeat(9));
                let mut out = Vec::new();
                write_json_string(&mut out, &text);
                let back: String = serde_json::from_slice(&out).expect("valid JSON");
                assert_eq!(back, text, "{special:?} at {at}");
            }
        }
        // Bytes just above the escaped ones, and non-ASCII, pass unescaped.
        let mut out = Vec::new();
        write_json_string(&mut out, " !#[]^~\u{7f}ÿ€");
        assert_eq!(out, "\" !#[]^~\u{7f}ÿ€\"".as_bytes());
    }

    #[test]
    fn entries_serialise_as_valid_json_with_numbers_and_flags() {
        let mut entry = Entry::at("pg.log", 42);
        entry.time = Some(LogTime::Utc(1_795_739_323_792));
        entry.level = "LOG".into();
        entry.message = "duration: 12.345 ms  statement: SELECT \"x\"".into();
        entry.pid = Some(0);
        entry.position = Some(u64::MAX);
        entry.truncated = true;
        let mut out = Vec::new();
        write_json(&mut out, &entry, b"\"now\"");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "timestamp": "2026-11-27T00:28:43.792Z",
                "level": "LOG",
                "message": "duration: 12.345 ms  statement: SELECT \"x\"",
                "duration_ms": 12.345,
                "pid": 0,
                "position": u64::MAX,
                "file": "pg.log",
                "line_offset": 42,
                "truncated": true,
            })
        );

        let orphan = Entry {
            orphan: true,
            time: Some(LogTime::Local(0)),
            zone: Some("CET".into()),
            ..Entry::at("pg.log", 0)
        };
        let mut out = Vec::new();
        write_json(&mut out, &orphan, b"\"now\"");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000");
        assert_eq!(value["zone"], "CET");
        assert_eq!(value["orphan"], true);

        let mut out = Vec::new();
        write_json(&mut out, &Entry::at("pg.log", 0), b"\"now\"");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["timestamp"], "now");
        assert_eq!(value["timestamp_estimated"], true);
    }

    #[test]
    fn a_string_and_bytes_receive_the_same_json() {
        let mut entry = Entry::at("/var/log/é\"x\".log", 7);
        entry.time = Some(LogTime::Local(1_795_739_323_792));
        entry.zone = Some("CET".into());
        entry.level = "ПРЕДУПРЕЖДЕНИЕ".into();
        entry.message = "tab\there \"q\" back\\slash \u{1}\u{1f} é€😀\r\nend".into();
        entry.pid = Some(u64::MAX);
        entry.statement = Some("SELECT 'ÿ'".into());
        entry.truncated = true;
        for time in [entry.time, None] {
            let entry = Entry {
                time,
                ..entry.clone()
            };
            let mut bytes = Vec::new();
            write_json(&mut bytes, &entry, b"\"now\"");
            let mut text = String::new();
            write_json(&mut text, &entry, "\"now\"");
            assert_eq!(text.as_bytes(), bytes);
            let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(value["message"], entry.message.as_ref());
            assert_eq!(value["file"], "/var/log/é\"x\".log");
        }
    }

    #[test]
    fn duration_ms_only_for_duration_messages() {
        let duration = |message: &str| {
            Entry {
                message: message.to_owned().into(),
                ..Entry::default()
            }
            .duration_ms()
            .map(str::to_owned)
        };
        // log_duration, log_min_duration_statement (simple and extended protocol), auto_explain.
        assert_eq!(duration("duration: 0.052 ms").as_deref(), Some("0.052"));
        assert_eq!(
            duration("duration: 1500.123 ms  statement: SELECT pg_sleep(1.5)").as_deref(),
            Some("1500.123")
        );
        assert_eq!(
            duration("duration: 3.1 ms  execute <unnamed>: SELECT 1").as_deref(),
            Some("3.1")
        );
        assert_eq!(
            duration("duration: 12 ms  plan:\nQuery Text: SELECT 1").as_deref(),
            Some("12")
        );
        for message in [
            "statement: SELECT 'duration: 1.0 ms'",
            "duration: abc ms",
            "duration: 1. ms",
            "duration: .5 ms",
            "duration: 01.5 ms",
            "duration: -1.5 ms",
            "duration: 1.5 s",
            "duration: 1e5 ms",
        ] {
            assert_eq!(duration(message), None, "{message}");
        }
    }
}
