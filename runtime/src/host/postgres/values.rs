//! Conversion between PostgreSQL values and the WIT `value` variant.
//!
//! Results come back in binary format; every column type a collector needs maps to one variant,
//! and any other type is refused with a message telling the plugin author to cast it to text,
//! rather than guessing at an encoding.

use std::error::Error as StdError;

use postgres_types::{FromSql, ToSql, Type};
use tokio_postgres::Row;

use crate::host::bindings::pganalytics::collector::postgres::Value;

/// Converts column `index` of `row`.
pub fn column_value(row: &Row, index: usize) -> Result<Value, String> {
    let column = &row.columns()[index];
    let ty = column.type_();
    let value = match *ty {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map(|v| v.map(Value::Boolean)),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map(|v| v.map(|n| Value::Int(n.into()))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map(|v| v.map(|n| Value::Int(n.into()))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map(|v| v.map(Value::Int)),
        Type::OID | Type::XID => row
            .try_get::<_, Option<u32>>(index)
            .map(|v| v.map(|n| Value::Int(n.into()))),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map(|v| v.map(|n| Value::Float(n.into()))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map(|v| v.map(Value::Float)),
        Type::NUMERIC => row
            .try_get::<_, Option<NumericText>>(index)
            .map(|v| v.map(|n| Value::Text(n.0))),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => row
            .try_get::<_, Option<String>>(index)
            .map(|v| v.map(Value::Text)),
        Type::CHAR => row
            .try_get::<_, Option<i8>>(index)
            .map(|v| v.map(|c| Value::Text(((c as u8) as char).to_string()))),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(index)
            .map(|v| {
                v.map(|t| Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
            }),
        // No zone is known: ISO 8601 without an offset, rather than a made-up `Z`.
        Type::TIMESTAMP => row
            .try_get::<_, Option<chrono::NaiveDateTime>>(index)
            .map(|v| v.map(|t| Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))),
        Type::DATE => row
            .try_get::<_, Option<chrono::NaiveDate>>(index)
            .map(|v| v.map(|d| Value::Text(d.to_string()))),
        _ => {
            return Err(format!(
                "column `{}` has type `{}`, which the postgres capability does not convert; cast it to text in the query",
                column.name(),
                ty.name()
            ));
        }
    };
    value
        .map(|v| v.unwrap_or(Value::Null))
        .map_err(|e| format!("column `{}`: {e}", column.name()))
}

/// Bytes a value costs against the per-call cap (text length, 8 for scalars).
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(text) => text.len(),
        _ => 8,
    }
}

/// Parameter type sent to the server for each WIT value (the server casts where it can).
pub fn param_type(value: &Value) -> Type {
    match value {
        Value::Null | Value::Text(_) => Type::TEXT,
        Value::Boolean(_) => Type::BOOL,
        Value::Int(_) => Type::INT8,
        Value::Float(_) => Type::FLOAT8,
    }
}

/// A WIT value as a query parameter.
pub fn param(value: &Value) -> &(dyn ToSql + Sync) {
    match value {
        Value::Null => &None::<String>,
        Value::Boolean(b) => b,
        Value::Int(n) => n,
        Value::Float(f) => f,
        Value::Text(t) => t,
    }
}

/// A NUMERIC decoded from PostgreSQL's binary format into its exact decimal text.
struct NumericText(String);

impl<'a> FromSql<'a> for NumericText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        decode_numeric(raw)
            .map(NumericText)
            .ok_or_else(|| "malformed numeric".into())
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Binary NUMERIC: ndigits i16, weight i16, sign u16, dscale u16, then ndigits base-10000 digits;
/// the first digit is worth 10000^weight.
fn decode_numeric(raw: &[u8]) -> Option<String> {
    let word = |i: usize| raw.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let group = |i: i32| {
        if i >= 0 {
            digits.get(i as usize).copied().unwrap_or(0)
        } else {
            0
        }
    };
    let mut integer = String::new();
    if weight < 0 {
        integer.push('0');
    } else {
        integer.push_str(&group(0).to_string());
        for i in 1..=weight {
            integer.push_str(&format!("{:04}", group(i)));
        }
    }
    let mut fraction = String::new();
    let mut index = weight + 1;
    while fraction.len() < dscale {
        fraction.push_str(&format!("{:04}", group(index)));
        index += 1;
    }
    fraction.truncate(dscale);
    let mut text = if sign == 0x4000 {
        format!("-{integer}")
    } else {
        integer
    };
    if dscale > 0 {
        text.push('.');
        text.push_str(&fraction);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_decode_to_exact_text() {
        assert_eq!(decode_numeric(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(decode_numeric(&numeric(1, 0, 0, 0, &[42])).unwrap(), "42");
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            decode_numeric(&numeric(3, 1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.05 = [500], weight -1, dscale 2
        assert_eq!(
            decode_numeric(&numeric(1, -1, 0x4000, 2, &[500])).unwrap(),
            "-0.05"
        );
        // 1e8 = [1], weight 2 (trailing zero groups are not stored)
        assert_eq!(
            decode_numeric(&numeric(1, 2, 0, 0, &[1])).unwrap(),
            "100000000"
        );
        assert_eq!(
            decode_numeric(&numeric(0, 0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
        assert!(decode_numeric(&[0, 1]).is_none());
    }
}
