//! Typed, by-name access to the `rows` a `postgres::query` returns.
//!
//! The host hands back positional values; the mapping code asks for a column by the name the
//! SQL gave it and for the type it cast it to. A missing column or a value of another type is
//! an `Error::Invalid` that names the statement and the column, because it means the SQL and
//! the mapping drifted apart (or the host changed a type mapping): a bug to report, never a
//! value to guess. This module must never call the host.

use pganalytics_guest::Error;
use pganalytics_guest::postgres::{Rows, Value};

/// The result of one named statement.
pub struct Table<'a> {
    /// What the statement is, for error messages (`tables of database `app``).
    what: &'a str,
    rows: &'a Rows,
}

impl<'a> Table<'a> {
    pub fn new(what: &'a str, rows: &'a Rows) -> Self {
        Table { what, rows }
    }

    pub fn len(&self) -> usize {
        self.rows.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.rows.is_empty()
    }

    /// Every row, in the order the server returned them.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.rows.iter().map(move |values| Row {
            table: self,
            values,
        })
    }

    /// The one row of a single-row statement.
    pub fn single(&self) -> Result<Row<'_>, Error> {
        match self.rows.rows.as_slice() {
            [values] => Ok(Row {
                table: self,
                values,
            }),
            rows => Err(Error::Invalid(format!(
                "{}: expected one row, got {}",
                self.what,
                rows.len()
            ))),
        }
    }
}

/// One row, read by column name.
pub struct Row<'a> {
    table: &'a Table<'a>,
    values: &'a [Value],
}

impl Row<'_> {
    /// A `::bigint` (or other integer) column; `None` for SQL NULL.
    pub fn int(&self, column: &str) -> Result<Option<i64>, Error> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(self.mismatch(column, "int", other)),
        }
    }

    /// A `::float8` column; `None` for SQL NULL. An integer is accepted too, since every
    /// integer the server sends here fits a float exactly enough for a metric.
    pub fn float(&self, column: &str) -> Result<Option<f64>, Error> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Float(v) => Ok(Some(*v)),
            Value::Int(v) => Ok(Some(*v as f64)),
            other => Err(self.mismatch(column, "float", other)),
        }
    }

    /// A `::float8` time in milliseconds that PostgreSQL measured with its nanosecond clock
    /// (pg_stat_statements' and the checkpointer's times), rounded to that nanosecond.
    ///
    /// Digits below a nanosecond are floating-point noise of the server's sums and divisions,
    /// not measurement; they are also the bytes gzip cannot shrink (five such numbers per
    /// statement were most of a compressed `pg_query_stats` item). `None` for SQL NULL.
    pub fn millis(&self, column: &str) -> Result<Option<f64>, Error> {
        Ok(self.float(column)?.map(to_nanosecond))
    }

    /// A `::text` (or `::timestamptz`, which arrives as RFC 3339 text) column; `None` for NULL.
    pub fn text(&self, column: &str) -> Result<Option<String>, Error> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(self.mismatch(column, "text", other)),
        }
    }

    /// A `::bool` column; `None` for SQL NULL.
    pub fn boolean(&self, column: &str) -> Result<Option<bool>, Error> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Boolean(v) => Ok(Some(*v)),
            other => Err(self.mismatch(column, "boolean", other)),
        }
    }

    fn value(&self, column: &str) -> Result<&Value, Error> {
        let columns = &self.table.rows.columns;
        let index = columns
            .iter()
            .position(|name| name == column)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no column `{column}` in the result",
                    self.table.what
                ))
            })?;
        self.values.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: a row has {} values for {} columns",
                self.table.what,
                self.values.len(),
                columns.len()
            ))
        })
    }

    fn mismatch(&self, column: &str, expected: &str, got: &Value) -> Error {
        let got = match got {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
        };
        Error::Invalid(format!(
            "{}: column `{column}` is {got}, expected {expected}",
            self.table.what
        ))
    }
}

/// `ms` rounded to the nearest nanosecond (six decimals). A value so large that its nanoseconds
/// are beyond a float's precision (over about 104 days of summed time) is already as exact as a
/// float can be and is kept, as is anything not finite.
fn to_nanosecond(ms: f64) -> f64 {
    const NANOS_PER_MS: f64 = 1e6;
    // 2^53: from here on every float is an integer, so rounding cannot change it.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let nanos = ms * NANOS_PER_MS;
    if nanos.is_finite() && nanos.abs() < EXACT {
        nanos.round() / NANOS_PER_MS
    } else {
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pganalytics_guest::{ErrorExt, serde_json};

    fn rows() -> Rows {
        Rows {
            columns: vec!["n".into(), "f".into(), "t".into(), "b".into(), "z".into()],
            rows: vec![vec![
                Value::Int(7),
                Value::Float(1.5),
                Value::Text("x".into()),
                Value::Boolean(true),
                Value::Null,
            ]],
        }
    }

    #[test]
    fn reads_by_name_and_type() {
        let rows = rows();
        let table = Table::new("probe", &rows);
        let row = table.single().expect("one row");
        assert_eq!(row.int("n").expect("int"), Some(7));
        assert_eq!(row.float("f").expect("float"), Some(1.5));
        assert_eq!(row.float("n").expect("an int reads as float"), Some(7.0));
        assert_eq!(row.text("t").expect("text").as_deref(), Some("x"));
        assert_eq!(row.boolean("b").expect("bool"), Some(true));
        assert_eq!(row.int("z").expect("null"), None);
        assert_eq!(row.text("z").expect("null"), None);
    }

    #[test]
    fn names_the_statement_and_column_on_drift() {
        let rows = rows();
        let table = Table::new("tables of database `app`", &rows);
        let row = table.single().expect("one row");
        let err = row.int("t").expect_err("text is not int");
        assert_eq!(err.kind(), "invalid");
        assert_eq!(
            err.message(),
            "tables of database `app`: column `t` is text, expected int"
        );
        let err = row.float("missing").expect_err("no such column");
        assert!(err.message().contains("no column `missing`"), "{err:?}");
    }

    #[test]
    fn single_wants_exactly_one_row() {
        let empty = Rows {
            columns: vec!["n".into()],
            rows: vec![],
        };
        let err = Table::new("server", &empty)
            .single()
            .err()
            .expect("no row is an error");
        assert_eq!(err.message(), "server: expected one row, got 0");
    }

    #[test]
    fn a_short_row_is_an_error_not_a_panic() {
        let short = Rows {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Value::Int(1)]],
        };
        let table = Table::new("probe", &short);
        let row = table.single().expect("one row");
        assert_eq!(row.int("a").expect("present"), Some(1));
        assert!(row.int("b").is_err());
    }

    #[test]
    fn times_are_rounded_to_the_nanosecond() {
        let rows = Rows {
            columns: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
            rows: vec![vec![
                Value::Float(12.345_678_901_234_567),
                Value::Float(0.000_000_4),
                Value::Float(0.000_234),
                Value::Float(1e300),
                Value::Null,
            ]],
        };
        let table = Table::new("probe", &rows);
        let row = table.single().expect("one row");
        let text = |column: &str| {
            serde_json::to_string(&row.millis(column).expect("float")).expect("serialises")
        };
        // The noise goes, and the number is written with at most six decimals.
        assert_eq!(text("a"), "12.345679");
        // Below half a nanosecond is zero; a nanosecond's fraction is kept.
        assert_eq!(text("b"), "0.0");
        assert_eq!(text("c"), "0.000234");
        // Too large to carry nanoseconds: unchanged, never turned into an infinity (null).
        assert_eq!(row.millis("d").expect("float"), Some(1e300));
        assert_eq!(row.millis("e").expect("null"), None);
        assert_eq!(to_nanosecond(-2.5e-7), -0.0);
        assert!(to_nanosecond(f64::NAN).is_nan());
        // Every nanosecond count up to a few days survives exactly.
        for nanos in [
            1_u64,
            999,
            123_456_789,
            86_400_000_000_000,
            300_000_000_000_001,
        ] {
            let ms = nanos as f64 / 1e6;
            assert_eq!(
                (to_nanosecond(ms) * 1e6).round() as u64,
                nanos,
                "{nanos} ns"
            );
        }
    }
}
