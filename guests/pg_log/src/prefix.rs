//! `log_line_prefix`: compiled once from the setting, then matched against every stderr line to
//! pull out the session fields PostgreSQL put before the severity.
//!
//! The escapes are those of PostgreSQL 15's `log_line_prefix()` in `elog.c`, with their padding
//! (`%-10u`, `%10p`) and `%q` (the rest is written only by session processes). A prefix is
//! matched by backtracking: a field that may contain spaces (`%a`, `%i`, `%b`, ...) ends where
//! the rest of the prefix, and then a known severity label, also match. The caller decides what
//! may follow the prefix, so a line is only taken as prefixed when the label after it is real.
//! This module must never accept an escape PostgreSQL does not know: PostgreSQL prints nothing
//! for one, and the operator would never learn why no line matches.

use std::fmt;

/// The longest text a single prefix field is searched in. Bounds the backtracking on lines that
/// almost match (names are at most 63 bytes, a host name with port a few hundred).
const MAX_FIELD_BYTES: usize = 512;

/// What a `%` escape stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `%a` application name.
    Application,
    /// `%u` user name.
    User,
    /// `%d` database name.
    Database,
    /// `%r` remote host and port, `host(port)`.
    RemoteHostPort,
    /// `%h` remote host.
    RemoteHost,
    /// `%b` backend type.
    BackendType,
    /// `%p` process id.
    Pid,
    /// `%P` parallel group leader's process id (PostgreSQL 14+).
    LeaderPid,
    /// `%t` time without milliseconds.
    Time,
    /// `%m` time with milliseconds.
    TimeMillis,
    /// `%n` epoch seconds with milliseconds.
    EpochMillis,
    /// `%i` command tag.
    CommandTag,
    /// `%e` SQLSTATE.
    SqlState,
    /// `%c` session id.
    SessionId,
    /// `%l` line number within the session.
    LineNumber,
    /// `%s` session start time.
    SessionStart,
    /// `%v` virtual transaction id.
    VirtualXid,
    /// `%x` transaction id.
    Xid,
    /// `%Q` query id (PostgreSQL 14+).
    QueryId,
}

const ESCAPE_COUNT: usize = 19;

impl Escape {
    fn from_char(c: char) -> Option<Escape> {
        Some(match c {
            'a' => Escape::Application,
            'u' => Escape::User,
            'd' => Escape::Database,
            'r' => Escape::RemoteHostPort,
            'h' => Escape::RemoteHost,
            'b' => Escape::BackendType,
            'p' => Escape::Pid,
            'P' => Escape::LeaderPid,
            't' => Escape::Time,
            'm' => Escape::TimeMillis,
            'n' => Escape::EpochMillis,
            'i' => Escape::CommandTag,
            'e' => Escape::SqlState,
            'c' => Escape::SessionId,
            'l' => Escape::LineNumber,
            's' => Escape::SessionStart,
            'v' => Escape::VirtualXid,
            'x' => Escape::Xid,
            'Q' => Escape::QueryId,
            _ => return None,
        })
    }

    /// Whether `value` (padding already trimmed) is something PostgreSQL writes for this escape.
    fn accepts(self, value: &str) -> bool {
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        match self {
            // Names and free text: anything without the severity separator; padding aside,
            // PostgreSQL never surrounds them with spaces.
            Escape::Application
            | Escape::User
            | Escape::Database
            | Escape::RemoteHostPort
            | Escape::RemoteHost
            | Escape::BackendType
            | Escape::CommandTag => {
                // `value.trim() == value`, looking at the two ends only.
                value.chars().next().is_none_or(|c| !c.is_whitespace())
                    && value.chars().next_back().is_none_or(|c| !c.is_whitespace())
            }
            // Empty for processes without one (padding only).
            Escape::Pid | Escape::LeaderPid | Escape::LineNumber | Escape::Xid => digits(value),
            Escape::QueryId => digits(value.strip_prefix('-').unwrap_or(value)),
            Escape::Time | Escape::TimeMillis | Escape::SessionStart => {
                crate::timestamp::looks_like_timestamp(value)
            }
            Escape::EpochMillis => crate::timestamp::convert_epoch(value).is_some(),
            Escape::SqlState => {
                value.is_empty()
                    || value.len() == 5
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            }
            Escape::SessionId => value.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_hexdigit())
            }),
            Escape::VirtualXid => {
                value.is_empty()
                    || value.split_once('/').is_some_and(|(a, b)| {
                        !a.is_empty()
                            && !b.is_empty()
                            && digits(a.strip_prefix('-').unwrap_or(a))
                            && digits(b)
                    })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `padding` is the signed width PostgreSQL pads to (`%-10u` is -10, left-justified).
    Field {
        escape: Escape,
        padding: i32,
    },
    /// `%q`: the rest is absent for non-session processes.
    SessionOnly,
}

/// A compiled `log_line_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinePrefix {
    source: String,
    tokens: Vec<Token>,
}

/// Why a `log_line_prefix` does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError(String);

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields a line's prefix carried, as written (padding trimmed); `None` when the escape is
/// not in the prefix, or `%q` cut it off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixFields<'a> {
    values: [Option<&'a str>; ESCAPE_COUNT],
}

impl<'a> PrefixFields<'a> {
    /// The value of `escape`, `None` if absent or empty.
    pub fn get(&self, escape: Escape) -> Option<&'a str> {
        self.values[escape as usize].filter(|v| !v.is_empty())
    }

    fn set(&mut self, escape: Escape, value: &'a str) {
        self.values[escape as usize] = Some(value);
    }
}

impl LinePrefix {
    /// Compiles a `log_line_prefix` value.
    pub fn compile(prefix: &str) -> Result<LinePrefix, PrefixError> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = prefix.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let mut spec = String::from("%");
            if let Some(&(_, '%')) = chars.peek() {
                chars.next();
                literal.push('%');
                continue;
            }
            if let Some(&(_, '-')) = chars.peek() {
                chars.next();
                spec.push('-');
            }
            while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                chars.next();
                spec.push(d);
            }
            let Some((_, letter)) = chars.next() else {
                return Err(PrefixError(format!(
                    "`{spec}` at byte {at} is not followed by an escape letter"
                )));
            };
            spec.push(letter);
            let padding = if spec.len() > 2 {
                spec[1..spec.len() - 1]
                    .parse::<i32>()
                    .map_err(|_| PrefixError(format!("bad padding in `{spec}` at byte {at}")))?
            } else {
                0
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            if letter == 'q' {
                tokens.push(Token::SessionOnly);
                continue;
            }
            let escape = Escape::from_char(letter).ok_or_else(|| {
                PrefixError(format!(
                    "unknown escape `{spec}` at byte {at} (PostgreSQL 15 knows \
                     %a %u %d %r %h %b %p %P %t %m %n %i %e %c %l %s %v %x %q %Q %%)"
                ))
            })?;
            tokens.push(Token::Field { escape, padding });
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(LinePrefix {
            source: prefix.to_owned(),
            tokens,
        })
    }

    /// The setting as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the prefix starts with a TAB, which would make a prefixed line look like a
    /// continuation line.
    pub fn starts_with_tab(&self) -> bool {
        matches!(self.tokens.first(), Some(Token::Literal(l)) if l.starts_with('\t'))
    }

    /// Matches the prefix at the start of `line`; `rest_ok` must accept what follows it (the
    /// severity label). Returns the fields and the rest of the line.
    pub fn match_line<'a>(
        &self,
        line: &'a str,
        rest_ok: &dyn Fn(&str) -> bool,
    ) -> Option<(PrefixFields<'a>, &'a str)> {
        let mut fields = PrefixFields::default();
        let rest = self.match_line_into(line, rest_ok, &mut fields)?;
        Some((fields, rest))
    }

    /// [`LinePrefix::match_line`] into `fields`, which must come empty
    /// ([`PrefixFields::default`]) and stay so when the line does not match: the fields are
    /// a few hundred bytes, not worth moving for every line.
    pub fn match_line_into<'a>(
        &self,
        line: &'a str,
        rest_ok: &dyn Fn(&str) -> bool,
        fields: &mut PrefixFields<'a>,
    ) -> Option<&'a str> {
        let mut matcher = Matcher {
            tokens: &self.tokens,
            line,
            separator: None,
            rest_ok,
        };
        let end = matcher.match_from(0, 0, fields)?;
        Some(&line[end..])
    }
}

/// One attempt to match a prefix against one line.
struct Matcher<'t, 'a, 'r> {
    tokens: &'t [Token],
    line: &'a str,
    /// `(from, at)`: the severity separator `":  "` found at `at` when searching from `from`,
    /// so that each field of the prefix does not search the line again.
    separator: Option<(usize, usize)>,
    rest_ok: &'r dyn Fn(&str) -> bool,
}

impl<'a> Matcher<'_, 'a, '_> {
    /// The first `":  "` at or after `pos`, or `pos + MAX_FIELD_BYTES` (at most the line's end)
    /// when there is none before that.
    fn separator_from(&mut self, pos: usize) -> usize {
        let len = self.line.len();
        let end = (pos + MAX_FIELD_BYTES).min(len);
        // There is none in `from..at`, so none in `pos..at` either; `at` is one, or the end.
        if let Some((from, at)) = self.separator
            && from <= pos
            && pos <= at
            && (at == len || self.line.as_bytes()[at..].starts_with(b":  "))
        {
            return at.min(end);
        }
        let at = separator_finder()
            .find(&self.line.as_bytes()[pos..end])
            .map_or(end, |i| pos + i);
        self.separator = Some((pos, at));
        at
    }

    /// Matches tokens `index..` at byte `pos`; the end of the prefix on success.
    fn match_from(
        &mut self,
        index: usize,
        pos: usize,
        fields: &mut PrefixFields<'a>,
    ) -> Option<usize> {
        let line = self.line;
        let Some(token) = self.tokens.get(index) else {
            return (self.rest_ok)(&line[pos..]).then_some(pos);
        };
        match token {
            Token::Literal(literal) => {
                if has_prefix(&line.as_bytes()[pos..], literal.as_bytes()) {
                    self.match_from(index + 1, pos + literal.len(), fields)
                } else {
                    None
                }
            }
            Token::SessionOnly => {
                // A failed match leaves `fields` as it found them (each field attempt restores
                // its slot), so nothing is saved here.
                if let Some(end) = self.match_from(index + 1, pos, fields) {
                    return Some(end);
                }
                // A process without a session: PostgreSQL stopped writing the prefix here.
                (self.rest_ok)(&line[pos..]).then_some(pos)
            }
            &Token::Field { escape, padding } => {
                let rest = &line[pos..];
                // A field never runs into the severity separator, and only the first
                // MAX_FIELD_BYTES are searched, so a long line costs no more than a short one.
                let window = self.separator_from(pos) - pos;
                let attempt = |this: &mut Self, len: usize, fields: &mut PrefixFields<'a>| {
                    let value = unpad(&rest[..len], padding)?;
                    if !escape.accepts(value) {
                        return None;
                    }
                    // A failed attempt leaves `fields` as it found them (every attempt below
                    // restores its own slot), so only this slot is saved, not all of them.
                    let saved = fields.values[escape as usize];
                    fields.set(escape, value);
                    let end = this.match_from(index + 1, pos + len, fields);
                    if end.is_none() {
                        fields.values[escape as usize] = saved;
                    }
                    end
                };
                match self.tokens.get(index + 1) {
                    // The field ends where the literal after it starts: only those places
                    // are tried, shortest first.
                    Some(Token::Literal(next)) => {
                        let searched = &rest.as_bytes()[..(window + 1).min(rest.len())];
                        let first = next.as_bytes()[0];
                        // A field is a few bytes long: a plain loop beats a vector search's
                        // setup there.
                        let starts = searched
                            .iter()
                            .enumerate()
                            .filter(|&(_, &b)| b == first)
                            .map(|(len, _)| len);
                        for len in starts {
                            // A literal starts with a whole character, so `len` is a boundary.
                            if has_prefix(&rest.as_bytes()[len..], next.as_bytes())
                                && let Some(end) = attempt(self, len, fields)
                            {
                                return Some(end);
                            }
                        }
                        None
                    }
                    _ => {
                        for len in 0..=window {
                            if rest.is_char_boundary(len)
                                && let Some(end) = attempt(self, len, fields)
                            {
                                return Some(end);
                            }
                        }
                        None
                    }
                }
            }
        }
    }
}

/// The searcher of the severity separator `":  "`, built once rather than for every field of
/// every line.
pub(crate) fn separator_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b":  "));
    &FINDER
}

/// `text.starts_with(prefix)` for the few bytes of a prefix literal, compared in place rather
/// than through a `memcmp` call per literal per line.
fn has_prefix(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && text.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The value inside a field padded as `%*s` pads it (right-aligned for a positive width,
/// left-aligned for a negative one): `None` if `text` is not such a padding of its value.
fn unpad(text: &str, padding: i32) -> Option<&str> {
    if padding == 0 {
        return Some(text);
    }
    let value = if padding > 0 {
        text.trim_start_matches(' ')
    } else {
        text.trim_end_matches(' ')
    };
    let width = padding.unsigned_abs() as usize;
    let value_chars = value.chars().count();
    if text.chars().count() == width.max(value_chars) {
        Some(value)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stderr parser accepts after a prefix: a label and two spaces.
    fn label(rest: &str) -> bool {
        rest.split_once(":  ").is_some_and(|(label, _)| {
            [
                "LOG",
                "ERROR",
                "DEBUG",
                "STATEMENT",
                "DETAIL",
                "LOCATION",
                "FATAL",
                "WARNING",
            ]
            .contains(&label)
        })
    }

    fn fields<'a>(prefix: &str, line: &'a str) -> Option<(PrefixFields<'a>, &'a str)> {
        LinePrefix::compile(prefix)
            .expect("the prefix compiles")
            .match_line(line, &label)
    }

    #[test]
    fn debian_prefix_for_session_and_background_lines() {
        let prefix = "%m [%p] %q%u@%d ";
        let (f, rest) = fields(
            prefix,
            "2026-11-27 00:25:25.356 UTC [20044] alice@app ERROR:  division by zero",
        )
        .expect("a session line matches");
        assert_eq!(
            f.get(Escape::TimeMillis),
            Some("2026-11-27 00:25:25.356 UTC")
        );
        assert_eq!(f.get(Escape::Pid), Some("20044"));
        assert_eq!(f.get(Escape::User), Some("alice"));
        assert_eq!(f.get(Escape::Database), Some("app"));
        assert_eq!(rest, "ERROR:  division by zero");

        let (f, rest) = fields(
            prefix,
            "2026-11-27 00:25:16.612 UTC [19991] LOG:  starting PostgreSQL 15.18 (Debian \
             15.18-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14+deb12u1) \
             12.2.0, 64-bit",
        )
        .expect("a background line matches without the part after %q");
        assert_eq!(f.get(Escape::Pid), Some("19991"));
        assert_eq!(f.get(Escape::User), None);
        assert!(rest.starts_with("LOG:  starting"));
    }

    #[test]
    fn session_only_rest_is_tried_first_and_dropped_cleanly() {
        // A background line whose message contains `@` and a space-separated label-like word:
        // the session branch fails at the separator, and none of its fields leak out.
        let (f, rest) = fields(
            "%m [%p] %q%u@%d ",
            "2026-11-27 00:25:16.612 UTC [19991] LOG:  mail admin@example.com LOG:  x",
        )
        .expect("matches");
        assert_eq!(f.get(Escape::User), None);
        assert_eq!(f.get(Escape::Database), None);
        assert_eq!(rest, "LOG:  mail admin@example.com LOG:  x");
    }

    #[test]
    fn tcp_prefix_with_empty_and_unknown_fields() {
        let prefix = "%t:%r:%u@%d:[%p]: ";
        let (f, rest) = fields(
            prefix,
            "2026-11-27 06:13:29 +0545::@:[21436]: LOG:  00000: listening on IPv4 address",
        )
        .expect("background line");
        assert_eq!(f.get(Escape::Time), Some("2026-11-27 06:13:29 +0545"));
        assert_eq!(f.get(Escape::RemoteHostPort), None);
        assert_eq!(f.get(Escape::User), None);
        assert_eq!(f.get(Escape::Pid), Some("21436"));
        assert!(rest.starts_with("LOG:  00000: "));

        let (f, _) = fields(
            prefix,
            "2026-11-27 06:13:30 +0545:127.0.0.1(57532):[unknown]@[unknown]:[21448]: LOG:  \
             00000: connection received: host=127.0.0.1 port=57532",
        )
        .expect("unauthenticated line");
        assert_eq!(f.get(Escape::RemoteHostPort), Some("127.0.0.1(57532)"));
        assert_eq!(f.get(Escape::User), Some("[unknown]"));
    }

    #[test]
    fn padded_prefix_with_free_text_fields_containing_spaces() {
        let prefix = "%m %q[%10p] %-8u %d %a|%h|%c|%l|%v|%x|%e|%i|%b|%Q|%s|%n %%%% ";
        let line = "2026-11-27 01:28:50.240 CET [     21535] alice    app my app|127.0.0.1|\
                    6b08cec2.541f|1|3/9|0|00000|startup|client backend|0|2026-11-27 01:28:50 \
                    CET|1795739330.240 %% DEBUG:  CommitTransaction(1) name: unnamed";
        let (f, rest) = fields(prefix, line).expect("matches");
        assert_eq!(f.get(Escape::Pid), Some("21535"));
        assert_eq!(f.get(Escape::User), Some("alice"));
        assert_eq!(f.get(Escape::Database), Some("app"));
        assert_eq!(f.get(Escape::Application), Some("my app"));
        assert_eq!(f.get(Escape::RemoteHost), Some("127.0.0.1"));
        assert_eq!(f.get(Escape::SessionId), Some("6b08cec2.541f"));
        assert_eq!(f.get(Escape::LineNumber), Some("1"));
        assert_eq!(f.get(Escape::VirtualXid), Some("3/9"));
        assert_eq!(f.get(Escape::SqlState), Some("00000"));
        assert_eq!(f.get(Escape::CommandTag), Some("startup"));
        assert_eq!(f.get(Escape::BackendType), Some("client backend"));
        assert_eq!(f.get(Escape::SessionStart), Some("2026-11-27 01:28:50 CET"));
        assert_eq!(f.get(Escape::EpochMillis), Some("1795739330.240"));
        assert!(rest.starts_with("DEBUG:  CommitTransaction"));

        // The postmaster: everything after `%q` is absent.
        let (f, rest) = fields(
            prefix,
            "2026-11-27 01:28:43.690 CET LOG:  checkpoint starting",
        )
        .expect("matches");
        assert_eq!(f.get(Escape::Pid), None);
        assert_eq!(rest, "LOG:  checkpoint starting");

        // An empty `%v` and a negative `%Q` (tests/data/stderr_padded_prefix.log).
        let line = "2026-11-27 01:28:43.794 CET [     21510] postgres app my app|127.0.0.1|\
                    6b08cebb.5406|3|3/3|0|22012|SELECT|client backend|-8441324848661855122|\
                    2026-11-27 01:28:43 CET|1795739323.794 %% ERROR:  division by zero";
        let (f, _) = fields(prefix, line).expect("matches");
        assert_eq!(f.get(Escape::QueryId), Some("-8441324848661855122"));
        assert_eq!(
            f.get(Escape::User),
            Some("postgres"),
            "exactly the padded width"
        );
    }

    #[test]
    fn padding_must_be_exact() {
        assert_eq!(unpad("alice   ", -8), Some("alice"));
        assert_eq!(unpad("alice", -8), None, "too short for %-8u");
        assert_eq!(unpad("   21510", 8), Some("21510"));
        // `%8p` pads on the left: trailing spaces stay in the value, which `%p` refuses.
        assert_eq!(unpad("21510   ", 8), Some("21510   "));
        assert!(!Escape::Pid.accepts("21510   "));
        assert_eq!(unpad("postgres_long", -8), Some("postgres_long"));
        assert_eq!(unpad("        ", -8), Some(""));
    }

    #[test]
    fn a_line_without_the_prefix_does_not_match() {
        let prefix = "%m [%p] %q%u@%d ";
        assert!(fields(prefix, "\tFROM accounts").is_none());
        assert!(fields(prefix, "FROM accounts WHERE x = 'LOG:  y'").is_none());
        assert!(fields(prefix, "2026-11-27 00:25:16.612 UTC [19991] TRAP:  x").is_none());
        assert!(fields(prefix, "").is_none());
    }

    #[test]
    fn fields_are_searched_in_a_bounded_window() {
        let prefix = "%m [%p] %q%u@%d ";
        let long_user = "u".repeat(MAX_FIELD_BYTES + 1);
        let line = format!("2026-11-27 00:25:25.356 UTC [1] {long_user}@app LOG:  x");
        assert!(
            fields(prefix, &line).is_none(),
            "no PostgreSQL name is that long"
        );
        let raw = format!("2026-11-27 00:25:25.356 UTC [1] {}", "y".repeat(1 << 20));
        assert!(fields(prefix, &raw).is_none());
    }

    #[test]
    fn an_empty_prefix_matches_bare_severities() {
        let (f, rest) = fields("", "LOG:  checkpoint starting: time").expect("matches");
        assert_eq!(f, PrefixFields::default());
        assert_eq!(rest, "LOG:  checkpoint starting: time");
    }

    #[test]
    fn a_prefix_ending_in_a_field_finds_the_label() {
        let (f, rest) =
            fields("%p-%u@%d", "123-alice@appERROR:  division by zero").expect("matches");
        assert_eq!(f.get(Escape::Database), Some("app"));
        assert_eq!(rest, "ERROR:  division by zero");
    }

    #[test]
    fn compile_reports_bad_escapes() {
        let err = LinePrefix::compile("%m [%p] %z ").expect_err("%z is not an escape");
        assert!(
            err.to_string().contains("unknown escape `%z` at byte 8"),
            "{err}"
        );
        let err = LinePrefix::compile("%m %").expect_err("a lone % at the end");
        assert!(err.to_string().contains("`%` at byte 3"), "{err}");
        let err = LinePrefix::compile("%-10").expect_err("padding without a letter");
        assert!(err.to_string().contains("`%-10`"), "{err}");
        assert!(LinePrefix::compile("%-").is_err());
        let prefix = LinePrefix::compile("100%% %P %Q %-30a").expect("valid");
        assert_eq!(
            prefix.tokens,
            vec![
                Token::Literal("100% ".into()),
                Token::Field {
                    escape: Escape::LeaderPid,
                    padding: 0
                },
                Token::Literal(" ".into()),
                Token::Field {
                    escape: Escape::QueryId,
                    padding: 0
                },
                Token::Literal(" ".into()),
                Token::Field {
                    escape: Escape::Application,
                    padding: -30
                },
            ]
        );
        assert!(
            LinePrefix::compile("\t%m ")
                .expect("valid")
                .starts_with_tab()
        );
    }
}
