//! The one way guest-controlled text reaches a host log line or an error message: cut to a
//! length with a visible marker, and with every control character escaped.
//!
//! A plugin chooses the bytes of its `log` messages, stdout/stderr, error results, the paths and
//! names it asks host calls for, its output and even its function names (which show up in trap
//! backtraces). Written as they are, a `\n` forges a log line of the agent, an ESC sequence
//! rewrites an operator's terminal, and a 32 MiB message floods the log. Everything here is
//! guest-controlled by assumption; nothing calls `format!` on guest text without going through
//! [`cut`] or [`quote`] first.

use std::fmt::Write;

/// Threat: one guest string (a denied path, an error message, a JSON value quoted in a
/// validation error) turning one log line or error into megabytes. The default cut.
pub const MAX_GUEST_TEXT_BYTES: usize = 512;

/// The longest marker [`cut`] appends (`…[cut, 18446744073709551615 bytes]`), so that callers
/// that budget written bytes know the worst case.
pub const MAX_MARKER_BYTES: usize = 40;

/// `text` with control characters escaped, cut so the escaped text is at most `max` bytes,
/// followed by `…[cut, N bytes]` (N: bytes of `text` left out) when anything was cut.
///
/// Escaped: C0 controls (`\n`, `\r`, `\t`, ESC and the rest, as `\n`, `\r`, `\t`, `\x1b`), DEL,
/// C1 controls (U+0080..U+009F), the Unicode line and paragraph separators, and the bidi
/// overrides and isolates (which reorder what an operator reads). Backslash is doubled, so an
/// escape in the output always came from the escaping.
pub fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + MAX_MARKER_BYTES);
    let mut piece = String::new();
    for (at, c) in text.char_indices() {
        piece.clear();
        escape_char(c, &mut piece);
        if out.len() + piece.len() > max {
            let left = text.len() - at;
            let _ = write!(out, "…[cut, {left} bytes]");
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// [`cut`] with the default length, for quoting one guest value inside a host message.
pub fn quote(text: &str) -> String {
    cut(text, MAX_GUEST_TEXT_BYTES)
}

/// [`cut`] for raw bytes (stdout/stderr): invalid UTF-8 shows as U+FFFD.
pub fn cut_bytes(bytes: &[u8], max: usize) -> String {
    cut(&String::from_utf8_lossy(bytes), max)
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        '\u{0}'..='\u{1f}' | '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        '\u{80}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{061c}' => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line_or_drive_a_terminal() {
        let forged = "ok\n2026-12-06T10:00:00Z  INFO pganalytics: all good\r\x1b[2J\x07\x7f";
        let out = quote(forged);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert_eq!(
            out,
            "ok\\n2026-12-06T10:00:00Z  INFO pganalytics: all good\\r\\x1b[2J\\x07\\x7f"
        );
        let unicode = "a\u{85}b\u{2028}c\u{202e}d\u{2067}e\\n";
        assert_eq!(
            quote(unicode),
            "a\\u{85}b\\u{2028}c\\u{202e}d\\u{2067}e\\\\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_marker_naming_what_was_left_out() {
        let long = "x".repeat(16 << 20);
        let out = cut(&long, 100);
        assert_eq!(
            out,
            format!("{}…[cut, {} bytes]", "x".repeat(100), (16 << 20) - 100)
        );
        assert!(out.len() <= 100 + MAX_MARKER_BYTES);
        // Escapes count toward the cut: the output is bounded whatever the input.
        let newlines = "\n".repeat(1000);
        let out = cut(&newlines, 10);
        assert_eq!(out, format!("{}…[cut, 995 bytes]", "\\n".repeat(5)));
        // Never inside a character.
        assert_eq!(cut("héllo", 2), "h…[cut, 5 bytes]");
        assert_eq!(cut("short", 100), "short");
        assert_eq!(cut_bytes(b"a\xffb", 100), "a\u{fffd}b");
    }
}
