//! PostgreSQL log timestamps to instants, and instants to the RFC 3339 text the backend stores.
//!
//! PostgreSQL writes `2026-11-26 10:00:00.123 UTC` (`%m`, csvlog, jsonlog), the same without
//! milliseconds (`%t`, `%s`) or epoch seconds (`%n`). The zone is `log_timezone`'s abbreviation
//! at that instant: `UTC`/`GMT`, a numeric one (`+0545`, `-03`) for zones tzdata gives no
//! letters, or a name (`CET`, `CEST`, `EST`, `IST`). Numeric ones are applied directly. A name is
//! ambiguous on its own (`IST`, `CST`), so it is resolved only through the IANA zone the operator
//! names in the `log_timezone` setting: the wall-clock time is located in that zone, and the
//! abbreviation the zone uses at that instant must be the one in the line (which also settles
//! the repeated hour when DST ends). This module must never guess: a name without a zone, or
//! one that disagrees with the zone, leaves the time as local wall-clock time without an offset
//! ([`LogTime::Local`]), and the entry carries the zone text next to it.

use jiff::tz::{AmbiguousOffset, TimeZone};

/// A time read from a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTime {
    /// Milliseconds since the Unix epoch: written as RFC 3339 UTC (`...Z`).
    Utc(i64),
    /// Wall-clock milliseconds since 1970-01-01 00:00 of a zone that could not be resolved:
    /// written without an offset, and never as UTC.
    Local(i64),
}

/// A converted timestamp, and the zone text when the zone could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted<'a> {
    pub time: LogTime,
    pub zone: Option<&'a str>,
}

/// Seconds a cached zone span is trusted away from its transitions. Offsets change by less
/// than a day, so a wall-clock time this far from a transition has exactly one reading.
const SPAN_MARGIN_SECONDS: i64 = 86_400;

/// The IANA zone of `log_timezone`, with the span of its last resolved offset cached: a log is
/// hours of lines in one span, and asking the zone table for every line costs more than the
/// rest of the line's parsing.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    zone: Option<TimeZone>,
    span: Option<Span>,
    /// The last second converted: consecutive lines mostly share it, so only their fraction
    /// is read again.
    second: Option<Second>,
}

/// A converted `YYYY-MM-DD HH:MM:SS` with its zone text: the same text (and zone) always
/// converts the same way, so the result is reused whatever the fraction after it.
#[derive(Debug, Clone)]
struct Second {
    head: [u8; HEAD_BYTES],
    zone: String,
    local_seconds: i64,
    /// The offset applied, `None` when the zone stayed unresolved.
    offset: Option<i64>,
}

/// `YYYY-MM-DD HH:MM:SS`.
const HEAD_BYTES: usize = 19;

/// An interval of UTC seconds in which the zone keeps one offset and abbreviation.
#[derive(Debug, Clone)]
struct Span {
    from: i64,
    until: i64,
    offset: i64,
    abbreviation: String,
}

impl Clock {
    /// A clock resolving zone names through `zone` (`None`: names stay unresolved).
    pub fn new(zone: Option<TimeZone>) -> Clock {
        Clock {
            zone,
            span: None,
            second: None,
        }
    }

    /// Converts `YYYY-MM-DD HH:MM:SS[.fraction] ZONE`; `None` if `text` is not one.
    pub fn convert<'a>(&mut self, text: &'a str) -> Option<Converted<'a>> {
        if let Some(second) = &self.second
            && text.as_bytes().get(..HEAD_BYTES) == Some(&second.head[..])
        {
            // The same second: its calendar and zone checks passed already, only the
            // fraction and the zone text are read.
            let (millis, zone) = parse_tail(text)?;
            if zone == second.zone {
                return Some(converted(
                    second.local_seconds * 1000 + i64::from(millis),
                    second.offset,
                    zone,
                ));
            }
        }
        let (local_seconds, millis, zone) = parse(text)?;
        let local_ms = local_seconds * 1000 + i64::from(millis);
        let offset = match parse_zone(zone)? {
            Zone::Offset(seconds) => Some(seconds),
            Zone::Named(name) => self.resolve(local_seconds, name),
        };
        let mut head = [0; HEAD_BYTES];
        head.copy_from_slice(&text.as_bytes()[..HEAD_BYTES]);
        match &mut self.second {
            Some(second) => {
                second.head = head;
                second.zone.clear();
                second.zone.push_str(zone);
                second.local_seconds = local_seconds;
                second.offset = offset;
            }
            None => {
                self.second = Some(Second {
                    head,
                    zone: zone.to_owned(),
                    local_seconds,
                    offset,
                })
            }
        }
        Some(converted(local_ms, offset, zone))
    }

    /// The offset in seconds of wall-clock `local` (seconds since 1970-01-01 00:00 local) in the
    /// configured zone, if the zone calls that instant `name`.
    fn resolve(&mut self, local: i64, name: &str) -> Option<i64> {
        if let Some(span) = &self.span
            && span.abbreviation == name
        {
            let utc = local - span.offset;
            if span.from.saturating_add(SPAN_MARGIN_SECONDS) < utc
                && utc < span.until.saturating_sub(SPAN_MARGIN_SECONDS)
            {
                return Some(span.offset);
            }
        }
        let zone = self.zone.as_ref()?;
        let (y, mo, d) = pganalytics_guest::civil_from_days(local.div_euclid(86_400));
        let of_day = local.rem_euclid(86_400);
        let civil = jiff::civil::DateTime::new(
            i16::try_from(y).ok()?,
            i8::try_from(mo).ok()?,
            i8::try_from(d).ok()?,
            i8::try_from(of_day / 3600).ok()?,
            i8::try_from(of_day % 3600 / 60).ok()?,
            i8::try_from(of_day % 60).ok()?,
            0,
        )
        .ok()?;
        let candidates = match zone.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => [Some(offset), None],
            // A time in the skipped hour: no reading is right, whatever its abbreviation.
            AmbiguousOffset::Gap { .. } => return None,
            AmbiguousOffset::Fold { before, after } => [Some(before), Some(after)],
        };
        let mut found: Option<(i64, jiff::Timestamp)> = None;
        for offset in candidates.into_iter().flatten() {
            let offset = i64::from(offset.seconds());
            let Ok(instant) = jiff::Timestamp::from_second(local - offset) else {
                continue;
            };
            if zone.to_offset_info(instant).abbreviation() != name {
                continue;
            }
            if found.is_some() {
                // Both readings of a repeated hour carry the same name: nothing tells them apart.
                return None;
            }
            found = Some((offset, instant));
        }
        let (offset, instant) = found?;
        let from = zone
            .preceding(instant)
            .next()
            .map_or(i64::MIN, |t| t.timestamp().as_second());
        let until = zone
            .following(instant)
            .next()
            .map_or(i64::MAX, |t| t.timestamp().as_second());
        self.span = Some(Span {
            from,
            until,
            offset,
            abbreviation: name.to_owned(),
        });
        Some(offset)
    }
}

/// The conversion of wall-clock `local_ms` by `offset` (seconds east of UTC), or left local
/// with its `zone` text when there is none.
fn converted(local_ms: i64, offset: Option<i64>, zone: &str) -> Converted<'_> {
    match offset {
        Some(offset) => Converted {
            time: LogTime::Utc(local_ms - offset * 1000),
            zone: None,
        },
        None => Converted {
            time: LogTime::Local(local_ms),
            zone: Some(zone),
        },
    }
}

/// Converts `%n`'s epoch seconds with milliseconds (`1795739323.792`); `None` if `text` is not
/// that.
pub fn convert_epoch(text: &str) -> Option<LogTime> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !all_digits(seconds) || !(fraction.is_empty() || all_digits(fraction)) {
        return None;
    }
    let seconds: i64 = seconds.parse().ok()?;
    Some(LogTime::Utc(
        seconds.checked_mul(1000)? + i64::from(fraction_millis(fraction.as_bytes())),
    ))
}

/// Whether `text` has the shape of `%m`/`%t`/`%s`: `dddd-dd-dd dd:dd:dd[.d+] ZONE`. Used to
/// tell a log_line_prefix timestamp from other text on every line, so it checks the shape only
/// (the conversion that follows checks the calendar) and resolves nothing.
pub fn looks_like_timestamp(text: &str) -> bool {
    const SHAPE: &[u8; 19] = b"dddd-dd-dd dd:dd:dd";
    let b = text.as_bytes();
    if b.len() < 21
        || !b.iter().zip(SHAPE).all(|(&c, &s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
    {
        return false;
    }
    let mut at = 19;
    if b[at] == b'.' {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return false;
        }
        at += 1 + digits;
    }
    b.get(at) == Some(&b' ') && parse_zone(&text[at + 1..]).is_some()
}

/// Wall-clock seconds since 1970-01-01 00:00, milliseconds and the zone token of
/// `YYYY-MM-DD HH:MM:SS[.fraction] ZONE`.
fn parse(text: &str) -> Option<(i64, u32, &str)> {
    let b = text.as_bytes();
    if b.len() < 21 {
        return None;
    }
    let digit = |i: usize| -> Option<i64> {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hours, minutes, seconds) = (two(11)?, two(14)?, two(17)?);
    // 60 is a leap second, which the calendar arithmetic carries into the next minute.
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hours > 23
        || minutes > 59
        || seconds > 60
    {
        return None;
    }
    let (millis, zone) = parse_tail(text)?;
    let days = days_from_civil(year, month as u32, day as u32);
    Some((
        days * 86_400 + hours * 3600 + minutes * 60 + seconds,
        millis,
        zone,
    ))
}

/// The milliseconds and the zone token after the `YYYY-MM-DD HH:MM:SS` of `text` (at least
/// [`HEAD_BYTES`] + 2 long, or `None`).
fn parse_tail(text: &str) -> Option<(u32, &str)> {
    let b = text.as_bytes();
    if b.len() < HEAD_BYTES + 2 {
        return None;
    }
    let mut at = HEAD_BYTES;
    let mut millis = 0;
    if b[at] == b'.' {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        millis = fraction_millis(&b[at + 1..at + 1 + digits]);
        at += 1 + digits;
    }
    if b.get(at) != Some(&b' ') {
        return None;
    }
    Some((millis, &text[at + 1..]))
}

enum Zone<'a> {
    Offset(i64),
    Named(&'a str),
}

/// `UTC`, `GMT`, `UCT`, `Z`, `+HH`, `+HHMM`, `+HH:MM` (and `-`), or any other run of letters,
/// digits and `_/+-` starting with a letter as a name.
fn parse_zone(zone: &str) -> Option<Zone<'_>> {
    if matches!(zone.as_bytes(), b"UTC" | b"GMT" | b"UCT" | b"Z") {
        return Some(Zone::Offset(0));
    }
    let b = zone.as_bytes();
    if let Some(&sign) = b.first().filter(|&&c| c == b'+' || c == b'-') {
        let digits: Vec<u8> = b[1..].iter().copied().filter(|&c| c != b':').collect();
        let colon_ok = match b[1..].iter().position(|&c| c == b':') {
            None => true,
            Some(at) => at == 2 && digits.len() == 4,
        };
        if !colon_ok || !matches!(digits.len(), 2 | 4) || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number = |d: &[u8]| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0');
        let hours = number(&digits[..2]);
        let minutes = if digits.len() == 4 {
            number(&digits[2..])
        } else {
            0
        };
        if hours > 15 || minutes > 59 {
            return None;
        }
        let seconds = hours * 3600 + minutes * 60;
        return Some(Zone::Offset(if sign == b'-' { -seconds } else { seconds }));
    }
    let is_name = b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'/' | b'+' | b'-'));
    is_name.then_some(Zone::Named(zone))
}

/// The milliseconds of a decimal fraction's digits (`"5"` is 500, `"123456"` is 123).
fn fraction_millis(fraction: &[u8]) -> u32 {
    let mut millis = 0;
    for (i, digit) in fraction.iter().take(3).enumerate() {
        millis += u32::from(digit - b'0') * [100, 10, 1][i];
    }
    millis
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date: the inverse of the SDK's
/// `civil_from_days` (Howard Hinnant's `days_from_civil`, with the year starting in March so
/// that the leap day comes last).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // [0, 399]
    let month_from_march = i64::from((month + 9) % 12); // [0, 11]
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Appends `time` as RFC 3339 with milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ` for UTC, without
/// the `Z` for local wall-clock time. Times before 1970 are clamped to the epoch (a log line
/// from before 1970 is a broken clock, and the backend needs some timestamp).
pub fn write_rfc3339<O: crate::entry::JsonOut + ?Sized>(out: &mut O, time: LogTime) {
    let (ms, utc) = match time {
        LogTime::Utc(ms) => (ms, true),
        LogTime::Local(ms) => (ms, false),
    };
    let ms = ms.max(0);
    let (seconds, millis) = (ms / 1000, ms % 1000);
    let (year, month, day) = pganalytics_guest::civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let two = |n: i64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let year = year.clamp(0, 9999);
    put_two(out, two(year / 100));
    put_two(out, two(year % 100));
    out.put_ascii(b'-');
    put_two(out, two(i64::from(month)));
    out.put_ascii(b'-');
    put_two(out, two(i64::from(day)));
    out.put_ascii(b'T');
    put_two(out, two(of_day / 3600));
    out.put_ascii(b':');
    put_two(out, two(of_day % 3600 / 60));
    out.put_ascii(b':');
    put_two(out, two(of_day % 60));
    out.put_ascii(b'.');
    out.put_ascii(b'0' + (millis / 100) as u8);
    put_two(out, two(millis % 100));
    if utc {
        out.put_ascii(b'Z');
    }
}

/// Two ASCII digits.
fn put_two<O: crate::entry::JsonOut + ?Sized>(out: &mut O, digits: [u8; 2]) {
    out.put_ascii(digits[0]);
    out.put_ascii(digits[1]);
}

/// [`write_rfc3339`] as a `String`.
pub fn rfc3339(time: LogTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, time);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> Clock {
        Clock::new(Some(
            jiff::tz::db().get(name).expect("the bundled table has it"),
        ))
    }

    /// The RFC 3339 text and unresolved zone of `text` converted by `clock`.
    fn with(clock: &mut Clock, text: &str) -> (String, Option<String>) {
        let converted = clock
            .convert(text)
            .unwrap_or_else(|| panic!("`{text}` should convert"));
        (rfc3339(converted.time), converted.zone.map(str::to_owned))
    }

    fn utc(text: &str) -> String {
        let (time, zone) = with(&mut Clock::default(), text);
        assert_eq!(zone, None, "{text}");
        time
    }

    #[test]
    fn converts_utc_with_and_without_milliseconds() {
        assert_eq!(
            utc("2026-11-26 10:00:00.123 UTC"),
            "2026-11-26T10:00:00.123Z"
        );
        assert_eq!(utc("2026-11-27 00:25:16 UTC"), "2026-11-27T00:25:16.000Z");
        assert_eq!(utc("2026-11-27 00:25:16.6 GMT"), "2026-11-27T00:25:16.600Z");
        assert_eq!(
            utc("2026-11-27 00:25:16.123999 UTC"),
            "2026-11-27T00:25:16.123Z"
        );
    }

    #[test]
    fn applies_numeric_zones() {
        // Asia/Kathmandu, as written by PostgreSQL 15 in tests/data/stderr_tcp_verbose.log.
        assert_eq!(
            utc("2026-11-27 06:13:29.989 +0545"),
            "2026-11-27T00:28:29.989Z"
        );
        assert_eq!(utc("2026-11-27 06:13:29 +0545"), "2026-11-27T00:28:29.000Z");
        assert_eq!(
            utc("2026-01-01 01:30:00.000 +02"),
            "2025-12-31T23:30:00.000Z"
        );
        assert_eq!(
            utc("2026-12-31 22:00:00.000 -03"),
            "2027-01-01T01:00:00.000Z"
        );
        assert_eq!(
            utc("2026-03-01 00:10:00.000 +05:30"),
            "2026-02-28T18:40:00.000Z"
        );
        assert_eq!(
            utc("2024-02-29 21:00:00.500 -03:30"),
            "2024-03-01T00:30:00.500Z"
        );
        assert_eq!(utc("2026-07-01 12:00:00 -0430"), "2026-07-01T16:30:00.000Z");
    }

    #[test]
    fn the_cached_second_gives_what_a_fresh_clock_gives() {
        // Each line after the first shares the second of the one before it; the cached
        // conversion must not carry over a zone, a fraction or a failure.
        let lines = [
            "2026-11-27 01:28:43.690 UTC",
            "2026-11-27 01:28:43.691 UTC",
            "2026-11-27 01:28:43 UTC",
            "2026-11-27 01:28:43.5 +02",
            "2026-11-27 01:28:43.5 CET",
            "2026-11-27 01:28:43.5 CEST",
            "2026-11-27 01:28:43. UTC",
            "2026-11-27 01:28:43.123UTC",
            "2026-11-27 01:28:43.123 U+C",
            "2026-11-27 01:28:43",
            "2026-11-27 01:28:43.250 UTC",
            "2026-11-27 01:28:44.000 UTC",
            "2026-02-30 01:28:44.000 UTC",
            "2026-02-30 01:28:44.001 UTC",
            "2026-10-25 02:30:00.000 CEST",
            "2026-10-25 02:30:00.000 CET",
            "2026-10-25 02:30:00.999 CEST",
        ];
        for zone_name in [None, Some("Europe/Berlin")] {
            let fresh = || zone_name.map_or_else(Clock::default, zone);
            let mut cached = fresh();
            for line in lines {
                let expected = fresh().convert(line);
                assert_eq!(cached.convert(line), expected, "{line} in {zone_name:?}");
            }
        }
    }

    #[test]
    fn named_zones_without_log_timezone_stay_local_and_never_claim_utc() {
        // Europe/Berlin in winter, as in tests/data/stderr_padded_prefix.log.
        let (time, zone) = with(&mut Clock::default(), "2026-11-27 01:28:43.690 CET");
        assert_eq!(time, "2026-11-27T01:28:43.690", "no offset, no `Z`");
        assert_eq!(zone.as_deref(), Some("CET"));
        let (_, zone) = with(
            &mut Clock::default(),
            "2026-07-01 12:00:00 America/New_York",
        );
        assert_eq!(zone.as_deref(), Some("America/New_York"));
    }

    #[test]
    fn named_zones_resolve_through_log_timezone_across_dst() {
        let mut berlin = zone("Europe/Berlin");
        // Winter (CET, +01) and summer (CEST, +02).
        assert_eq!(
            with(&mut berlin, "2026-11-27 01:28:43.690 CET"),
            ("2026-11-27T00:28:43.690Z".into(), None)
        );
        assert_eq!(
            with(&mut berlin, "2026-07-01 12:00:00.000 CEST"),
            ("2026-07-01T10:00:00.000Z".into(), None)
        );
        // The span cache must not carry CEST's offset past the transition of 2026-10-25.
        assert_eq!(
            with(&mut berlin, "2026-10-25 01:59:59.000 CEST"),
            ("2026-10-24T23:59:59.000Z".into(), None)
        );
        // 02:30 happens twice on 2026-10-25; the abbreviation says which.
        assert_eq!(
            with(&mut berlin, "2026-10-25 02:30:00.000 CEST"),
            ("2026-10-25T00:30:00.000Z".into(), None)
        );
        assert_eq!(
            with(&mut berlin, "2026-10-25 02:30:00.000 CET"),
            ("2026-10-25T01:30:00.000Z".into(), None)
        );
        assert_eq!(
            with(&mut berlin, "2026-10-25 03:00:00.000 CET"),
            ("2026-10-25T02:00:00.000Z".into(), None)
        );
        // Spring forward on 2026-03-29: 01:59 CET, then 03:00 CEST.
        assert_eq!(
            with(&mut berlin, "2026-03-29 01:59:00.000 CET"),
            ("2026-03-29T00:59:00.000Z".into(), None)
        );
        assert_eq!(
            with(&mut berlin, "2026-03-29 03:00:00.000 CEST"),
            ("2026-03-29T01:00:00.000Z".into(), None)
        );

        let mut new_york = zone("America/New_York");
        assert_eq!(
            with(&mut new_york, "2026-01-15 08:00:00 EST"),
            ("2026-01-15T13:00:00.000Z".into(), None)
        );
        assert_eq!(
            with(&mut new_york, "2026-07-15 08:00:00 EDT"),
            ("2026-07-15T12:00:00.000Z".into(), None)
        );
        // Southern hemisphere: DST in January.
        let mut sydney = zone("Australia/Sydney");
        assert_eq!(
            with(&mut sydney, "2026-01-15 10:00:00 AEDT"),
            ("2026-01-14T23:00:00.000Z".into(), None)
        );
        assert_eq!(
            with(&mut sydney, "2026-07-15 10:00:00 AEST"),
            ("2026-07-15T00:00:00.000Z".into(), None)
        );
        // `IST` is India's here, Ireland's or Israel's elsewhere.
        let mut kolkata = zone("Asia/Kolkata");
        assert_eq!(
            with(&mut kolkata, "2026-07-15 10:00:00 IST"),
            ("2026-07-15T04:30:00.000Z".into(), None)
        );
    }

    #[test]
    fn an_abbreviation_the_zone_does_not_use_is_not_guessed() {
        let mut berlin = zone("Europe/Berlin");
        for text in [
            // Summer time named in winter and the other way round.
            "2026-01-15 12:00:00 CEST",
            "2026-07-15 12:00:00 CET",
            // Another zone's name.
            "2026-01-15 12:00:00 EST",
            // The skipped hour of 2026-03-29 does not exist in Berlin.
            "2026-03-29 02:30:00 CET",
            "2026-03-29 02:30:00 CEST",
        ] {
            let (time, zone) = with(&mut berlin, text);
            assert!(!time.ends_with('Z'), "{text}: {time}");
            assert_eq!(zone.as_deref(), text.rsplit(' ').next(), "{text}");
        }
        // A valid reading before and after the failures still resolves (the cache is sound).
        assert_eq!(
            with(&mut berlin, "2026-01-15 12:00:00 CET"),
            ("2026-01-15T11:00:00.000Z".into(), None)
        );
    }

    #[test]
    fn converts_epoch_seconds() {
        // `%n` and `%m` of the same line of tests/data/stderr_padded_prefix.log (CET = +01).
        assert_eq!(
            convert_epoch("1795739323.792").map(rfc3339),
            Some("2026-11-27T00:28:43.792Z".into())
        );
        assert_eq!(
            convert_epoch("0").map(rfc3339),
            Some("1970-01-01T00:00:00.000Z".into())
        );
        assert_eq!(convert_epoch("12a.3"), None);
        assert_eq!(convert_epoch(""), None);
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "2026-11-27 00:25:16.612",
            "2026-11-27T00:25:16.612Z",
            "2026-13-01 00:00:00 UTC",
            "2026-02-29 00:00:00 UTC",
            "2026-11-27 24:00:00 UTC",
            "2026-11-27 00:25:16. UTC",
            "2026-11-27 00:25 UTC",
            "26-11-27 00:25:16 UTC",
            "2026-11-27 00:25:16 +5",
            "2026-11-27 00:25:16 +16",
            "2026-11-27 00:25:16 +05:3",
            "2026-11-27 00:25:16 [19991]",
            "2026-11-27 00:25:16  UTC",
            "2026-1a-27 00:25:16 UTC",
        ] {
            assert_eq!(Clock::default().convert(text), None, "`{text}`");
            // The shape check leaves the calendar to the conversion.
            let calendar = ["2026-13-01", "2026-02-29", "2026-11-27 24"]
                .iter()
                .any(|bad| text.starts_with(bad));
            assert_eq!(looks_like_timestamp(text), calendar, "`{text}`");
        }
        assert!(looks_like_timestamp("2024-02-29 00:00:00 UTC"));
        assert!(looks_like_timestamp("2024-02-29 00:00:00 CET"));
        assert!(looks_like_timestamp("2024-02-29 00:00:00.123456 +05:30"));
    }

    /// Every day of 1970..2400 through the SDK's calendar and back.
    #[test]
    fn days_from_civil_inverts_the_sdk_calendar() {
        for days in 0..(430 * 366) {
            let (y, m, d) = pganalytics_guest::civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn writes_what_the_sdk_writes() {
        for ms in [0, 951_782_400_007, 4_107_542_399_999, 1_700_000_000_123] {
            let sdk = pganalytics_guest::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
            );
            assert_eq!(rfc3339(LogTime::Utc(ms)), sdk);
            assert_eq!(rfc3339(LogTime::Local(ms)), sdk.trim_end_matches('Z'));
        }
        assert_eq!(rfc3339(LogTime::Utc(-5)), "1970-01-01T00:00:00.000Z");
    }
}
