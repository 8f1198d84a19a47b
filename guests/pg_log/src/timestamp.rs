//! PostgreSQL log timestamps to the RFC 3339 UTC form the backend stores.
//!
//! PostgreSQL writes `2026-11-26 10:00:00.123 UTC` (`%m`, csvlog, jsonlog), the same without
//! milliseconds (`%t`, `%s`) or epoch seconds (`%n`). The zone is `log_timezone`'s abbreviation:
//! `UTC`/`GMT`, a numeric one (`+0545`, `-03`) for zones tzdata gives no letters, or a name
//! (`CET`, `EST`, `IST`). The sandbox has no tzdata, and names are ambiguous (`IST`, `CST`), so
//! this module must never guess an offset for a name: it keeps the wall-clock time as if UTC and
//! hands the name back for the entry's `zone`, so that nothing is silently wrong.

use std::time::{Duration, UNIX_EPOCH};

/// A timestamp converted to `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub rfc3339: String,
    /// The zone name when it could not be resolved (the time is then wall-clock).
    pub zone: Option<String>,
}

/// Converts `YYYY-MM-DD HH:MM:SS[.fraction] ZONE`; `None` if `text` is not one.
pub fn convert(text: &str) -> Option<Converted> {
    let (wall, zone) = text.rsplit_once(' ')?;
    let (date, time) = wall.split_once(' ')?;
    let days = parse_date(date)?;
    let (seconds_of_day, millis) = parse_time(time)?;
    let (offset_seconds, unresolved) = match parse_zone(zone)? {
        Zone::Offset(seconds) => (seconds, None),
        Zone::Named(name) => (0, Some(name.to_owned())),
    };
    let seconds = days * 86_400 + seconds_of_day - offset_seconds;
    Some(Converted {
        rfc3339: format_epoch_millis(seconds, millis),
        zone: unresolved,
    })
}

/// Converts `%n`'s epoch seconds with milliseconds (`1795739323.792`); `None` if `text` is not
/// that.
pub fn convert_epoch(text: &str) -> Option<Converted> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !all_digits(seconds) || !(fraction.is_empty() || all_digits(fraction)) {
        return None;
    }
    let seconds: i64 = seconds.parse().ok()?;
    Some(Converted {
        rfc3339: format_epoch_millis(seconds, fraction_millis(fraction)),
        zone: None,
    })
}

/// Whether `text` has the shape of `%m`/`%t`/`%s`: date, time and a zone token. Cheaper than a
/// conversion; used to tell a log_line_prefix timestamp from other text.
pub fn looks_like_timestamp(text: &str) -> bool {
    convert(text).is_some()
}

enum Zone<'a> {
    Offset(i64),
    Named(&'a str),
}

/// `UTC`, `GMT`, `UCT`, `Z`, `+HH`, `+HHMM`, `+HH:MM` (and `-`), or any other run of letters,
/// digits and `_/+-` as a name.
fn parse_zone(zone: &str) -> Option<Zone<'_>> {
    if matches!(zone, "UTC" | "GMT" | "UCT" | "Z") {
        return Some(Zone::Offset(0));
    }
    if let Some(sign) = zone.chars().next().filter(|c| matches!(c, '+' | '-')) {
        let digits: String = zone[1..].chars().filter(|&c| c != ':').collect();
        let colon_ok = match zone[1..].find(':') {
            None => true,
            Some(at) => at == 2 && digits.len() == 4,
        };
        if colon_ok && all_digits(&digits) && matches!(digits.len(), 2 | 4) {
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0
            };
            if hours > 15 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            return Some(Zone::Offset(if sign == '-' { -seconds } else { seconds }));
        }
        return None;
    }
    let is_name = !zone.is_empty()
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '+' | '-'))
        && zone.starts_with(|c: char| c.is_ascii_alphabetic());
    is_name.then_some(Zone::Named(zone))
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
fn parse_date(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let (year, month, day): (i64, u32, u32) = (
        parse_digits(year)?,
        parse_digits(month)?,
        parse_digits(day)?,
    );
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Seconds of the day and milliseconds of `HH:MM:SS[.fraction]`.
fn parse_time(time: &str) -> Option<(i64, u32)> {
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    if time.contains('.') && (fraction.is_empty() || !all_digits(fraction)) {
        return None;
    }
    let mut parts = hms.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [hours, minutes, seconds].iter().any(|p| p.len() != 2) {
        return None;
    }
    let (hours, minutes, seconds): (i64, i64, i64) = (
        parse_digits(hours)?,
        parse_digits(minutes)?,
        parse_digits(seconds)?,
    );
    // 60 is a leap second, which the calendar arithmetic carries into the next minute.
    if hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    Some((
        hours * 3600 + minutes * 60 + seconds,
        fraction_millis(fraction),
    ))
}

/// The milliseconds of a decimal fraction's digits (`"5"` is 500, `"123456"` is 123).
fn fraction_millis(fraction: &str) -> u32 {
    let mut millis = 0;
    for (i, digit) in fraction.bytes().take(3).enumerate() {
        millis += u32::from(digit - b'0') * [100, 10, 1][i];
    }
    millis
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if all_digits(text) {
        text.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
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

/// Formats through the SDK, which clamps times before 1970 to the epoch (a log line from before
/// 1970 is a broken clock, and the backend needs some timestamp).
fn format_epoch_millis(seconds: i64, millis: u32) -> String {
    let since_epoch = Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
        + Duration::from_millis(if seconds < 0 { 0 } else { u64::from(millis) });
    pganalytics_guest::format_rfc3339_millis(UNIX_EPOCH + since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> String {
        let converted = convert(text).unwrap_or_else(|| panic!("`{text}` should convert"));
        assert_eq!(converted.zone, None, "{text}");
        converted.rfc3339
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
    }

    #[test]
    fn keeps_named_zones_as_wall_clock_time() {
        // Europe/Berlin in winter, as in tests/data/stderr_padded_prefix.log.
        assert_eq!(
            convert("2026-11-27 01:28:43.690 CET"),
            Some(Converted {
                rfc3339: "2026-11-27T01:28:43.690Z".into(),
                zone: Some("CET".into()),
            })
        );
        assert_eq!(
            convert("2026-07-01 12:00:00 America/New_York").and_then(|c| c.zone),
            Some("America/New_York".into())
        );
    }

    #[test]
    fn converts_epoch_seconds() {
        // `%n` and `%m` of the same line of tests/data/stderr_padded_prefix.log (CET = +01).
        assert_eq!(
            convert_epoch("1795739323.792").map(|c| c.rfc3339),
            Some("2026-11-27T00:28:43.792Z".into())
        );
        assert_eq!(
            convert_epoch("0").map(|c| c.rfc3339),
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
        ] {
            assert_eq!(convert(text), None, "`{text}`");
        }
        assert!(looks_like_timestamp("2024-02-29 00:00:00 UTC"));
    }

    /// Every day of 1970..2400 through the SDK's formatter and back.
    #[test]
    fn days_from_civil_inverts_the_sdk_calendar() {
        for days in 0..(430 * 366) {
            let formatted = format_epoch_millis(days * 86_400, 0);
            let date = &formatted[..10];
            assert_eq!(parse_date(date), Some(days), "{formatted}");
        }
    }
}
