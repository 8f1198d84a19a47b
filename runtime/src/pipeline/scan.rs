//! The fast check of a plugin's output: one pass of a hand-written byte scanner over the JSON
//! text that applies every rule of the reference check (`validate::check_item_by_item`) and
//! says only "accepted, N items" or "not accepted here". Anything it does not accept goes to
//! the reference check, which judges it again and names the problem; so this module must never
//! accept an output the reference refuses, and should accept every ordinary output the
//! reference accepts.
//!
//! Why a scanner: most bytes of a large output (pg_log) are string bodies (messages,
//! statements). They are skipped eight bytes at a time, looking only for `"`, `\` and control
//! bytes; the output is already a Rust `String`, so its UTF-8 was checked once when it was
//! lifted from the guest. Only the fields a check needs are decoded: the item's `type`,
//! `timestamp`, and the names of the fields at the levels the contract describes.
//!
//! How it matches the reference (serde_json), rule by rule:
//! - the JSON grammar is serde_json's (no trailing commas, no leading zeros, the four
//!   whitespace bytes, `\u` escapes of four hex digits, no raw control bytes in strings);
//! - a number a contract field requires is handed, as its own text, to the very check the
//!   reference runs (`contract::KindSeed` over serde_json), so ranges and integer rules are the
//!   reference's to the last bit; numbers nobody checks need only be well formed;
//! - names and values that are decoded are compared after decoding (an escape is decoded by
//!   serde_json itself).
//!
//! What it leaves to the reference without judging ([`Defer`]): a repeated item `type` or
//! `timestamp` (the reference takes the last one), a `\u` escape of a surrogate that is not a
//! well formed pair (the reference refuses it only where it decodes the string), and nesting
//! deeper than [`MAX_DEPTH`] (the reference's own limit is 127). Those outputs are correct to
//! refuse here; the reference still decides.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::de::DeserializeSeed;

use super::contract::{Kind, KindSeed, Path, schema};
use super::items::SERVER_FIELD;
use super::validate::Problem;

/// Nesting this scanner follows (the top-level array is 1). serde_json refuses more than 127;
/// staying well below keeps the recursion here shallow and never accepts what it refuses.
const MAX_DEPTH: usize = 64;

/// Why the scanner did not accept an output (only the tests look at the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Defer {
    /// Something the reference refuses too (or the scanner is not sure it accepts).
    Refused,
    /// An item with `type` or `timestamp` twice.
    Repeated,
    /// A `\u` escape of a surrogate that is not part of a well formed pair.
    Surrogate,
    /// Nested deeper than [`MAX_DEPTH`].
    Deep,
}

type Scan<T> = Result<T, Defer>;

/// The output's item count if every rule holds.
pub(super) fn check(json: &str, emits: &BTreeSet<String>, stamped: bool) -> Scan<usize> {
    let mut scanner = Scanner {
        text: json,
        bytes: json.as_bytes(),
        pos: 0,
    };
    let len = scanner.output(emits, stamped)?;
    scanner.whitespace();
    if scanner.pos != scanner.bytes.len() {
        return Err(Defer::Refused);
    }
    Ok(len)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of the lowest byte of `word` that is `"`, `\` or a control byte is set (bits
/// above it may be set wrongly by borrows; only the lowest one is used).
fn special_bytes(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(word ^ (ONES * u64::from(b'"')))
        | zero(word ^ (ONES * u64::from(b'\\')))
        | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
}

fn hex(byte: u8) -> Option<u16> {
    (byte as char).to_digit(16).map(|d| d as u16)
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Scan<u8> {
        self.bytes.get(self.pos).copied().ok_or(Defer::Refused)
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace).
    fn expect(&mut self, byte: u8) -> Scan<()> {
        self.whitespace();
        if self.peek()? != byte {
            return Err(Defer::Refused);
        }
        self.pos += 1;
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if !self.bytes[self.pos..].starts_with(word) {
            return Err(Defer::Refused);
        }
        self.pos += word.len();
        Ok(())
    }

    /// A string at `pos` (its opening quote): returns its body's range and whether it has an
    /// escape.
    fn string(&mut self) -> Scan<(usize, usize, bool)> {
        if self.peek()? != b'"' {
            return Err(Defer::Refused);
        }
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        let bytes = self.bytes;
        loop {
            while let Some(chunk) = bytes.get(i..i + 8) {
                let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let found = special_bytes(word);
                if found != 0 {
                    i += found.trailing_zeros() as usize / 8;
                    break;
                }
                i += 8;
            }
            match *bytes.get(i).ok_or(Defer::Refused)? {
                b'"' => {
                    self.pos = i + 1;
                    return Ok((start, i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    i = self.escape(i + 1)?;
                }
                0..=0x1f => return Err(Defer::Refused),
                _ => i += 1,
            }
        }
    }

    /// The escape whose letter is at `i`; returns where the string goes on.
    fn escape(&self, i: usize) -> Scan<usize> {
        match *self.bytes.get(i).ok_or(Defer::Refused)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 1),
            b'u' => {
                let unit = self.hex4(i + 1)?;
                match unit {
                    0xD800..=0xDBFF => {
                        // Only a high surrogate directly followed by a low one is accepted.
                        if self.bytes.get(i + 5..i + 7) != Some(b"\\u".as_slice()) {
                            return Err(Defer::Surrogate);
                        }
                        match self.hex4(i + 7)? {
                            0xDC00..=0xDFFF => Ok(i + 11),
                            _ => Err(Defer::Surrogate),
                        }
                    }
                    0xDC00..=0xDFFF => Err(Defer::Surrogate),
                    _ => Ok(i + 5),
                }
            }
            _ => Err(Defer::Refused),
        }
    }

    fn hex4(&self, i: usize) -> Scan<u16> {
        let digits = self.bytes.get(i..i + 4).ok_or(Defer::Refused)?;
        digits.iter().try_fold(0u16, |unit, &d| {
            hex(d).map(|d| unit << 4 | d).ok_or(Defer::Refused)
        })
    }

    /// A string, decoded (borrowed when it has no escape).
    fn text(&mut self) -> Scan<Cow<'a, str>> {
        let (start, end, escaped) = self.string()?;
        if !escaped {
            return Ok(Cow::Borrowed(&self.text[start..end]));
        }
        // Rare: let serde_json decode it, exactly as the reference does.
        serde_json::from_str::<String>(&self.text[start - 1..=end])
            .map(Cow::Owned)
            .map_err(|_| Defer::Refused)
    }

    /// A number's text, checked against serde_json's grammar.
    fn number(&mut self) -> Scan<&'a str> {
        let start = self.pos;
        let bytes = self.bytes;
        let digits = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'0') => {
                i += 1;
                if bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(Defer::Refused);
                }
            }
            Some(b'1'..=b'9') => i = digits(i + 1),
            _ => return Err(Defer::Refused),
        }
        if bytes.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return Err(Defer::Refused);
            }
            i = end;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return Err(Defer::Refused);
            }
            i = end;
        }
        self.pos = i;
        Ok(&self.text[start..i])
    }

    /// Any value, checked for grammar only; returns its text.
    fn skip(&mut self, depth: usize) -> Scan<&'a str> {
        self.whitespace();
        let start = self.pos;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                self.object(depth + 1, |scanner, _, _, depth| {
                    scanner.skip(depth).map(drop)
                })?;
            }
            b'[' => {
                self.array(depth + 1, |scanner, _, depth| scanner.skip(depth).map(drop))?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => {
                self.number()?;
            }
        }
        Ok(&self.text[start..self.pos])
    }

    /// An object at `pos` (after whitespace): `field` is called with each name, raw (its body
    /// and whether it has escapes), before its value, which it must consume.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'a str, bool, usize) -> Scan<()>,
    ) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Defer::Deep);
        }
        self.expect(b'{')?;
        self.whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.whitespace();
            let (start, end, escaped) = self.string()?;
            let name = if escaped {
                &self.text[start - 1..=end]
            } else {
                &self.text[start..end]
            };
            self.expect(b':')?;
            field(self, name, escaped, depth)?;
            self.whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Defer::Refused),
            }
        }
    }

    /// An array at `pos` (after whitespace): `element` is called with the index of each
    /// element, which it must consume.
    fn array(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self, usize, usize) -> Scan<()>,
    ) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Defer::Deep);
        }
        self.expect(b'[')?;
        self.whitespace();
        if self.peek()? == b']' {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            element(self, index, depth)?;
            index += 1;
            self.whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Defer::Refused),
            }
        }
    }

    /// The top level: an array of items.
    fn output(&mut self, emits: &BTreeSet<String>, stamped: bool) -> Scan<usize> {
        self.whitespace();
        let mut len = 0;
        self.array(1, |scanner, _, depth| {
            len += 1;
            scanner.item(depth, emits, stamped)
        })?;
        Ok(len)
    }

    /// One item: an object with a `type` the plugin may emit, an RFC 3339 `timestamp`, no
    /// `server` when the host stamps, and its type's required fields. Fields that come before
    /// `type` are kept as text and checked once it is known.
    fn item(&mut self, depth: usize, emits: &BTreeSet<String>, stamped: bool) -> Scan<()> {
        self.whitespace();
        let mut fields: Option<&'static [(&'static str, Kind)]> = None;
        let mut timestamp = false;
        let mut seen = 0u64;
        let mut before_type: Vec<(Cow<'a, str>, &'a str)> = Vec::new();
        self.object(depth + 1, |scanner, name, escaped, depth| {
            let name = decoded(name, escaped)?;
            scanner.whitespace();
            match name.as_ref() {
                "type" => {
                    if fields.is_some() {
                        return Err(Defer::Repeated);
                    }
                    let item_type = scanner.text()?;
                    if !emits.contains(item_type.as_ref()) {
                        return Err(Defer::Refused);
                    }
                    fields = Some(schema(&item_type).unwrap_or(&[]));
                }
                "timestamp" => {
                    if timestamp {
                        return Err(Defer::Repeated);
                    }
                    let text = scanner.text()?;
                    if chrono::DateTime::parse_from_rfc3339(&text).is_err() {
                        return Err(Defer::Refused);
                    }
                    timestamp = true;
                }
                SERVER_FIELD if stamped => return Err(Defer::Refused),
                _ => match fields {
                    None => {
                        let value = scanner.skip(depth)?;
                        before_type.push((name, value));
                    }
                    Some(fields) => scanner.field(fields, &name, depth, &mut seen)?,
                },
            }
            Ok(())
        })?;
        let Some(fields) = fields.filter(|_| timestamp) else {
            return Err(Defer::Refused);
        };
        for (name, value) in before_type {
            if let Some(i) = position(fields, &name) {
                let mut again = Scanner {
                    text: value,
                    bytes: value.as_bytes(),
                    pos: 0,
                };
                again.kind(fields[i].1, depth)?;
                seen |= 1 << i;
            }
        }
        all_seen(seen, fields)
    }

    /// A field's value (at `pos`, after whitespace): checked as its kind and marked in `seen`
    /// when `name` is one of `fields`, skipped otherwise.
    fn field(
        &mut self,
        fields: &'static [(&'static str, Kind)],
        name: &str,
        depth: usize,
        seen: &mut u64,
    ) -> Scan<()> {
        match position(fields, name) {
            Some(i) => {
                self.kind(fields[i].1, depth)?;
                *seen |= 1 << i;
            }
            None => self.skip(depth).map(drop)?,
        }
        Ok(())
    }

    /// A value of a required field (at `pos`, after whitespace), of `kind`.
    fn kind(&mut self, kind: Kind, depth: usize) -> Scan<()> {
        match (kind, self.peek()?) {
            (Kind::Text | Kind::OptText, b'"') => self.string().map(drop),
            (Kind::OptText, b'n') => self.literal(b"null"),
            (Kind::Number | Kind::Int | Kind::Percent, b'-' | b'0'..=b'9') => {
                let text = self.number()?;
                // The reference's own check of a number, on its text alone.
                let problem = Problem::default();
                let mut de = serde_json::Deserializer::from_str(text);
                KindSeed {
                    kind,
                    path: Path::Root,
                    problem: &problem,
                }
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|_| Defer::Refused)
            }
            (Kind::Object(fields), b'{') => self.fields(fields, depth),
            (Kind::ArrayOf(fields), b'[') => self.array(depth + 1, |scanner, _, depth| {
                scanner.whitespace();
                scanner.fields(fields, depth)
            }),
            _ => Err(Defer::Refused),
        }
    }

    /// An object (at `pos`, after whitespace) with every one of `fields`, each of its kind,
    /// every time it appears; other fields skipped.
    fn fields(&mut self, fields: &'static [(&'static str, Kind)], depth: usize) -> Scan<()> {
        let mut seen = 0u64;
        self.object(depth + 1, |scanner, name, escaped, depth| {
            let name = decoded(name, escaped)?;
            scanner.whitespace();
            scanner.field(fields, &name, depth, &mut seen)
        })?;
        all_seen(seen, fields)
    }
}

/// Whether `seen` marks every one of `fields` (each required field appeared).
fn all_seen(seen: u64, fields: &[(&'static str, Kind)]) -> Scan<()> {
    if seen.count_ones() as usize == fields.len() {
        Ok(())
    } else {
        Err(Defer::Refused)
    }
}

/// A field name: `name` is its body, or with `escaped` its quoted text, decoded by serde_json.
fn decoded(name: &str, escaped: bool) -> Scan<Cow<'_, str>> {
    if !escaped {
        return Ok(Cow::Borrowed(name));
    }
    serde_json::from_str::<String>(name)
        .map(Cow::Owned)
        .map_err(|_| Defer::Refused)
}

fn position(fields: &[(&str, Kind)], name: &str) -> Option<usize> {
    fields.iter().position(|(field, _)| *field == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::validate::check_item_by_item;
    use proptest::prelude::*;
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    fn emits() -> BTreeSet<String> {
        [
            "sysstat",
            "pg_log",
            "pg_stats",
            "pg_query_stats",
            "pg_server",
            "custom",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    }

    const TS: &str = "2026-11-26T10:00:00.000Z";

    /// Outputs the reference accepts, one per shape the contract knows, with escapes, raw
    /// non-ASCII text, fields before `type`, and values nobody checks.
    fn valid_outputs() -> Vec<String> {
        let entry = |message: &str| {
            format!(
                r#"{{"timestamp":"2026-11-26 10:00:00.123 UTC","level":"LOG","user":null,"message":"{message}"}}"#
            )
        };
        vec![
            format!(
                r#"[{{"type":"sysstat","timestamp":"{TS}","cpu":{{"user":1.5,"system":2,"idle":95.0,"iowait":1.5e0,"load_1m":0.1,"load_5m":0.2,"load_15m":-0.3}},"memory":{{"total_mb":100,"free_mb":10.0,"cached_mb":2E1,"used_mb":70}},"disk_io":[{{"device":"vda","read_ops":1,"write_ops":2,"read_sectors":3,"write_sectors":4}}]}}]"#
            ),
            format!(
                "[{{\"type\":\"pg_log\",\"timestamp\":\"{TS}\",\"database\":\"shop\",\"entries\":[{},{},{}]}}]",
                entry(r#"duration: 0.5 ms  statement: SELECT \"x\" FROM t\n\tWHERE a = 'é'"#),
                entry(r"\u00e9\ud83d\ude00 \/ \\ \b\f\r"),
                entry("plain"),
            ),
            format!(
                r#" [ {{ "entries" : [ {} ] , "database" : "d" , "x" : [ 1 , {{ "y" : true }} , false ] , "timestamp" : "{TS}" , "type" : "pg_log" }} ] "#,
                entry("before type")
            ),
            format!(
                r#"[{{"type":"pg_query_stats","timestamp":"{TS}","database":"d","queries":[{{"hash":-9223372036854775808,"text":"q","calls":1,"total_time":1.5,"mean_time":0,"rows":9223372036854775807}}]}},{{"type":"custom","timestamp":"{TS}","\u0073erver":{{"a":[[],{{}}]}}}}]"#
            ),
            format!(
                r#"[{{"type":"pg_server","timestamp":"{TS}","server_version":"17.2","server_version_num":170002,"max_connections":100,"connections":{{"total":3,"active":1}}}},{{"type":"pg_stats","timestamp":"{TS}","database":"d","size_bytes":1,"transactions_committed":1,"transactions_rolledback":0,"tuples_returned":0,"tuples_fetched":0,"tuples_inserted":0,"tuples_updated":0,"tuples_deleted":0,"tables":[{{"schema":"s","name":"t","live_tuples":1,"dead_tuples":0,"modified_since_analyze":0,"size_bytes":8192,"last_vacuum":null,"last_autovacuum":"2026-11-26","last_analyze":null,"last_autoanalyze":null,"vacuum_count":0,"autovacuum_count":1}}],"indexes":[]}}]"#
            ),
            "[]".to_owned(),
        ]
    }

    /// Whether some item of `json` names a top-level field twice after decoding (only `type`
    /// and `timestamp` matter, and only to the reference, which takes the last one).
    fn has_repeated_header(json: &str) -> bool {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
                let mut repeated = false;
                while let Some(item) = seq.next_element::<Keys>()? {
                    repeated |= item.0;
                }
                Ok(repeated)
            }
        }
        struct Keys(bool);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                de.deserialize_any(KeysVisitor)
            }
        }
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an item")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Keys, M::Error> {
                let (mut types, mut timestamps) = (0, 0);
                while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    types += usize::from(key == "type");
                    timestamps += usize::from(key == "timestamp");
                }
                Ok(Keys(types > 1 || timestamps > 1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Keys(false))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys(false))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys(false))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys(false))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys(false))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys(false))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Keys, E> {
                Ok(Keys(false))
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        serde::Deserializer::deserialize_seq(&mut de, Items).unwrap_or(false)
    }

    /// The scanner and the reference agree on `json`: what the scanner accepts the reference
    /// accepts with the same count; what the scanner refuses the reference refuses, unless the
    /// output repeats an item's `type` or `timestamp`; what the reference accepts the scanner
    /// accepts, unless it deferred for one of the documented reasons.
    fn agree(json: &str, stamped: bool) {
        let emits = emits();
        let reference = check_item_by_item(json, &emits, stamped);
        let fast = check(json, &emits, stamped);
        match (fast, &reference) {
            (Ok(n), _) => assert_eq!(reference, Ok(n), "scanner accepted: {json}"),
            (Err(_), Err(_)) => {}
            (Err(Defer::Refused | Defer::Repeated), Ok(_)) => assert!(
                has_repeated_header(json),
                "scanner refused what the reference accepts: {json}"
            ),
            (Err(Defer::Surrogate), Ok(_)) => assert!(json.contains("\\u"), "{json}"),
            (Err(Defer::Deep), Ok(_)) => {}
        }
    }

    #[test]
    fn every_valid_shape_is_accepted_in_one_pass() {
        for json in valid_outputs() {
            let reference = check_item_by_item(&json, &emits(), false);
            assert!(reference.is_ok(), "{json}: {reference:?}");
            assert_eq!(check(&json, &emits(), false).ok(), reference.ok(), "{json}");
        }
    }

    /// Pieces an edit inserts: structure, number and literal fragments, escapes (good, bad and
    /// surrogates), header fields, control and non-ASCII characters.
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "0",
        "1",
        "-",
        ".",
        "e",
        "+",
        " ",
        "\n",
        "\u{1}",
        "\u{7f}",
        "é",
        "null",
        "true",
        "fals",
        "1e400",
        "-0",
        "100.5",
        "18446744073709551616",
        "\\u00e9",
        "\\ud800",
        "\\udc00",
        "\\u12",
        "\\x",
        "\\u0074ype",
        "\"server\":1,",
        "\"type\":\"custom\",",
        "\"type\":\"nope\",",
        "\"timestamp\":\"2026-11-26T10:00:00Z\",",
        "\"timestamp\":\"yesterday\",",
        "{\"type\":\"custom\",\"timestamp\":\"2026-11-26T10:00:00Z\"},",
    ];

    /// Every single edit of every valid shape: each character deleted, and each piece inserted
    /// at each position (or replacing the character there).
    #[test]
    fn every_single_edit_gets_the_reference_verdict() {
        for json in valid_outputs() {
            let boundaries: Vec<usize> = json
                .char_indices()
                .map(|(i, _)| i)
                .chain([json.len()])
                .collect();
            for window in boundaries.windows(2) {
                let (at, next) = (window[0], window[1]);
                let deleted = format!("{}{}", &json[..at], &json[next..]);
                agree(&deleted, false);
                agree(&deleted, true);
                for piece in PIECES {
                    agree(&format!("{}{piece}{}", &json[..at], &json[at..]), false);
                    agree(&format!("{}{piece}{}", &json[..at], &json[next..]), true);
                }
            }
        }
    }

    /// A nesting depth the scanner defers on is still judged by the reference, and nothing
    /// the reference refuses for depth is accepted.
    #[test]
    fn deep_nesting_is_left_to_the_reference() {
        for depth in [MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH, 126, 127, 200] {
            let json = format!(
                r#"[{{"type":"custom","timestamp":"{TS}","x":{}{}}}]"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            agree(&json, false);
        }
        let shallow = format!(r#"[{{"type":"custom","timestamp":"{TS}","x":[[[]]]}}]"#);
        assert_eq!(check(&shallow, &emits(), false), Ok(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Several edits at once (deletions of a few characters, insertions, replacements).
        #[test]
        fn mutated_outputs_get_the_reference_verdict(
            shape in 0..6usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3usize, 0..PIECES.len(), 1..6usize), 1..4),
            stamped in any::<bool>(),
        ) {
            let mut json = valid_outputs().swap_remove(shape);
            for (position, kind, piece, span) in edits {
                let boundaries: Vec<usize> = json
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([json.len()])
                    .collect();
                let i = position.index(boundaries.len());
                let at = boundaries[i];
                let end = boundaries[(i + span).min(boundaries.len() - 1)];
                json = match kind {
                    0 => format!("{}{}", &json[..at], &json[end..]),
                    1 => format!("{}{}{}", &json[..at], PIECES[piece], &json[at..]),
                    _ => format!("{}{}{}", &json[..at], PIECES[piece], &json[end..]),
                };
            }
            agree(&json, stamped);
        }
    }
}

/// Throughput of the scanner beside serde_json's cheapest full pass, on pg_log-like output.
/// Prints figures only: `cargo test --release -p pganalytics --lib scan_throughput -- --ignored
/// --nocapture`.
#[cfg(test)]
#[test]
#[ignore = "measures throughput"]
fn scan_throughput() {
    use std::time::Instant;
    let entry = r#"{"timestamp":"2026-11-26 10:00:00.123 UTC","level":"LOG","user":"app","database":"shop","pid":20017,"message":"duration: 0.123 ms  statement: SELECT o.id, o.total, o.status FROM orders o WHERE o.customer_id = 4242 ORDER BY o.created_at DESC LIMIT 20"}"#;
    let mut json = String::from(
        r#"[{"type":"pg_log","timestamp":"2026-11-26T10:00:00Z","database":"shop","entries":["#,
    );
    while json.len() < 3 << 20 {
        json.push_str(entry);
        json.push(',');
    }
    json.pop();
    json.push_str("]}]");
    let emits: BTreeSet<String> = ["pg_log".to_owned()].into();
    let time = |name: &str, f: &dyn Fn() -> bool| {
        let mut best = f64::MAX;
        for _ in 0..20 {
            let started = Instant::now();
            assert!(f());
            best = best.min(started.elapsed().as_secs_f64());
        }
        eprintln!("{name}: {:.0} MB/s", json.len() as f64 / 1e6 / best);
    };
    time("scan::check", &|| check(&json, &emits, false) == Ok(1));
    time("serde_json IgnoredAny", &|| {
        serde_json::from_str::<serde::de::IgnoredAny>(&json).is_ok()
    });
    time("reference item by item", &|| {
        super::validate::check_item_by_item(&json, &emits, false) == Ok(1)
    });
}
