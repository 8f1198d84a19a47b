//! Human-friendly durations (`"30s"`) and sizes (`"64MiB"`), as the TOML config writes them and
//! as errors print limits.
//!
//! They are checked while deserialising, so a bad value is reported by the TOML parser with the
//! line and column of the offending key. A leaf module: it must never import anything of the
//! crate, so that config, capabilities and plugins can all use it without depending on each
//! other.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written as a number and a unit: `500ms`, `30s`, `5m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// A size written as a number and an optional unit: `512`, `64KiB`, `4MiB`, `1GiB` (also `KB`,
/// `MB`, `GB` as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Why a duration or size was not understood; the message quotes the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration `{0}`: expected e.g. \"30s\", \"500ms\", \"5m\"")]
    DurationNumber(String),
    #[error("invalid duration `{0}`: the unit must be one of ms, s, m, h, d")]
    DurationUnit(String),
    #[error("invalid duration `{0}`: must be above zero and at most a year")]
    DurationRange(String),
    #[error("invalid size `{0}`: expected e.g. \"64MiB\", \"4KiB\", \"1024\"")]
    SizeNumber(String),
    #[error("invalid size `{0}`: the unit must be one of B, KiB, MiB, GiB, KB, MB, GB")]
    SizeUnit(String),
    #[error("invalid size `{0}`: too large")]
    SizeTooLarge(String),
}

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| UnitError::DurationNumber(text.to_owned()))?;
        let seconds = match unit.trim() {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            _ => return Err(UnitError::DurationUnit(text.to_owned())),
        };
        if !seconds.is_finite() || seconds <= 0.0 || seconds > 365.0 * 86400.0 {
            return Err(UnitError::DurationRange(text.to_owned()));
        }
        Ok(Self(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| UnitError::SizeNumber(text.to_owned()))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            _ => return Err(UnitError::SizeUnit(text.to_owned())),
        };
        number
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| UnitError::SizeTooLarge(text.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{} {unit}", self.0 / factor);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(
            HumanDuration::parse("30s").unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            HumanDuration::parse("1.5h").unwrap().0,
            Duration::from_secs(5400)
        );
        assert!(
            HumanDuration::parse("10")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert!(
            HumanDuration::parse("10x")
                .unwrap_err()
                .to_string()
                .contains("`10x`")
        );
        assert!(HumanDuration::parse("0s").is_err());
        assert!(HumanDuration::parse("s").is_err());
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("4 KiB").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert_eq!(ByteSize::parse("2MB").unwrap().0, 2_000_000);
        assert!(
            ByteSize::parse("12XB")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert!(
            ByteSize::parse("99999999999999GiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
    }
}
