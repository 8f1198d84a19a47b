//! RFC 3339 timestamps for metric items, from the WASI wall clock (which the host allows).
//!
//! Done by hand instead of with chrono: the conversion is twenty lines, and every dependency
//! is bytes in every plugin. Always UTC with millisecond precision, the form the backend
//! stores; it must never depend on a time zone database, which the sandbox does not have.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    format_rfc3339_millis(SystemTime::now())
}

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds truncated).
///
/// Times before 1970 are clamped to the epoch: a wall clock that far off is a host problem, and
/// a timestamp the backend accepts is more useful than a panic.
pub fn format_rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    // u64 seconds / 86 400 fits an i64 day count with room to spare.
    let days = (secs / 86_400) as i64;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    )
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01: for collectors that
/// write timestamps into their own output buffer.
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>):
/// shift the epoch to 0000-03-01 so that the leap day is the last day of a "year", then split
/// into 400-year eras of exactly 146 097 days.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let mp = (5 * day_of_year + 2) / 153; // month from March = 0, [0, 11]
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // `date -u -d @951782400` = 2000-02-29 00:00:00 (a leap day in a 400-year leap year).
        assert_eq!(
            format_rfc3339_millis(at(951_782_400, 7)),
            "2000-02-29T00:00:00.007Z"
        );
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(
            format_rfc3339_millis(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339_millis(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_millis(at(1_700_000_000, 123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(at(1_735_689_599, 500)),
            "2024-12-31T23:59:59.500Z"
        );
    }

    #[test]
    fn truncates_sub_millisecond_precision() {
        let time = UNIX_EPOCH + Duration::from_nanos(1_999_999);
        assert_eq!(format_rfc3339_millis(time), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn clamps_times_before_the_epoch() {
        let time = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_rfc3339_millis(time), "1970-01-01T00:00:00.000Z");
    }

    /// Every day of 1970..2400 against a naive day-by-day calendar walk.
    #[test]
    fn civil_from_days_matches_a_calendar_walk() {
        let (mut year, mut month, mut day) = (1970_i64, 1_u32, 1_u32);
        for days in 0..(430 * 366) {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
