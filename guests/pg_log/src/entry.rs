//! One log entry as the backend receives it, the severity order used by `min_level`, and the
//! capped text fields that keep one huge statement from eating a run's memory and output.
//!
//! The three format parsers all build an [`Entry`]; this module must never know which format
//! an entry came from. A value that is cut is always flagged (`truncated`), never cut silently.

use serde::Serialize;

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
        Some(match label {
            "DETAIL" => TextField::Detail,
            "HINT" => TextField::Hint,
            "QUERY" => TextField::Query,
            "CONTEXT" => TextField::Context,
            "LOCATION" => TextField::Location,
            "STATEMENT" => TextField::Statement,
            "BACKTRACE" => TextField::Backtrace,
            _ => return None,
        })
    }
}

/// One entry of a `pg_log` item. Field names are the backend contract (`timestamp`, `level`,
/// `message` are required; the rest appear only when known).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Entry {
    /// RFC 3339 UTC. Empty while parsing when the line carries no time; the run then fills in
    /// the collection time and sets `timestamp_estimated`.
    pub timestamp: String,
    /// The zone name of a timestamp whose zone could not be resolved without tzdata: the
    /// timestamp is then the wall-clock time written as if it were UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub timestamp_estimated: bool,
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The client's address without its port (`[local]` for a Unix socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    /// Absent for `00000` (see [`NO_ERROR_SQLSTATE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// 1-based character position of the error in `query` (csvlog and jsonlog only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// 1-based character position of the error in `statement` (csvlog and jsonlog only; stderr
    /// appends "at character N" to the message instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    pub file: String,
    /// Byte offset of the entry's first line in `file`.
    pub line_offset: u64,
    /// Some text field was cut at `max_message_bytes`.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// The entry continues one from before this run (or before a rotation), whose first line
    /// was read by an earlier run: its severity and message are unknown.
    #[serde(skip_serializing_if = "is_false")]
    pub orphan: bool,
    /// Why the record did not parse; `message` then holds the raw text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Entry {
    /// An entry of `file` starting at byte `line_offset`, with everything else unknown.
    pub fn at(file: &str, line_offset: u64) -> Entry {
        Entry {
            file: file.to_owned(),
            line_offset,
            ..Entry::default()
        }
    }

    /// The text of `field`, created empty if absent.
    fn slot(&mut self, field: TextField) -> &mut String {
        match field {
            TextField::Message => &mut self.message,
            TextField::Detail => self.detail.get_or_insert_with(String::new),
            TextField::Hint => self.hint.get_or_insert_with(String::new),
            TextField::Query => self.query.get_or_insert_with(String::new),
            TextField::Context => self.context.get_or_insert_with(String::new),
            TextField::Location => self.location.get_or_insert_with(String::new),
            TextField::Statement => self.statement.get_or_insert_with(String::new),
            TextField::Backtrace => self.backtrace.get_or_insert_with(String::new),
        }
    }

    /// Replaces `field` with `text`, cut at `max_bytes`.
    pub fn set_text(&mut self, field: TextField, text: &str, max_bytes: usize) {
        let slot = self.slot(field);
        slot.clear();
        if push_capped(slot, text, max_bytes) {
            self.truncated = true;
        }
    }

    /// Sets `field` to `text` (cut at `max_bytes`) unless `text` is empty, which PostgreSQL
    /// writes for "not set".
    pub fn set_text_if_present(&mut self, field: TextField, text: &str, max_bytes: usize) {
        if !text.is_empty() {
            self.set_text(field, text, max_bytes);
        }
    }

    /// Sets `field` to `text`, or appends `text` as a further line when the field already has
    /// some (so that a label repeated within one entry loses nothing).
    pub fn add_text(&mut self, field: TextField, text: &str, max_bytes: usize) {
        let has_text = match field {
            TextField::Message => !self.message.is_empty(),
            TextField::Detail => self.detail.is_some(),
            TextField::Hint => self.hint.is_some(),
            TextField::Query => self.query.is_some(),
            TextField::Context => self.context.is_some(),
            TextField::Location => self.location.is_some(),
            TextField::Statement => self.statement.is_some(),
            TextField::Backtrace => self.backtrace.is_some(),
        };
        if has_text {
            self.append_line(field, text, max_bytes);
        } else {
            self.set_text(field, text, max_bytes);
        }
    }

    /// Appends a continuation line to `field` as `"\n" + text`, keeping the field within
    /// `max_bytes`.
    pub fn append_line(&mut self, field: TextField, text: &str, max_bytes: usize) {
        let slot = self.slot(field);
        // Short-circuits: when not even the newline fits, the text is left out too.
        if push_capped(slot, "\n", max_bytes) || push_capped(slot, text, max_bytes) {
            self.truncated = true;
        }
    }
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
pub fn known(text: &str) -> Option<String> {
    match text {
        "" | "[unknown]" => None,
        text => Some(text.to_owned()),
    }
}

/// The host of a client address written as `host(port)` (`%r`) or `host:port` (csvlog's
/// `connection_from`, which always has a port for TCP), without the port; `[local]` and bare
/// host names unchanged.
pub fn remote_host_without_port(address: &str) -> Option<String> {
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
}
