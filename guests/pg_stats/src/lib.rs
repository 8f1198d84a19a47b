//! The `pg_stats` collector: per-database activity, table and index statistics, the top
//! statements of pg_stat_statements, and server-wide state, read with plain `SELECT`s on the
//! host's read-only connections.
//!
//! Each run emits one `pg_server` item (queried on the first granted database), one `pg_stats`
//! item per granted database, and one `pg_query_stats` item per database where the
//! pg_stat_statements extension is installed (unless `query_stats = false`).
//!
//! Needs `[plugins.pg_stats.grants.postgres] databases = [...]` and nothing else: it must never
//! import `procfs`, `fs-stats` or `log-tail`, and never runs anything but the read-only
//! statements of [`sql`]. Settings (all optional): `top_tables`, `top_indexes`, `top_queries`
//! (each default 100), `max_query_text` (bytes, default 4096), `query_stats` (default true),
//! `database_size_interval` (seconds a measured database size is reused, default 300; see
//! [`sizes`]).
//!
//! [`sql`] holds the statements, [`rows`] and [`items`] turn results into item fields,
//! [`sizes`] keeps database sizes between runs, and [`run`] drives one run through the
//! [`run::Host`] trait; all five compile and are tested natively. Only the glue below talks to the real host.

pub mod items;
pub mod rows;
pub mod run;
pub mod sizes;
pub mod sql;

#[cfg(test)]
mod fixtures;

#[cfg(target_arch = "wasm32")]
mod component {
    use crate::run::{self, Host, Now, Settings};
    use crate::sizes::Sizes;
    use pganalytics_guest::postgres::{self, Rows, Value as SqlValue};
    use pganalytics_guest::{Collector, Error, ErrorExt, Value, log};
    use serde::de::DeserializeOwned;

    /// The real host behind [`Host`].
    struct Wasm;

    impl Host for Wasm {
        fn databases(&self) -> Result<Vec<String>, Error> {
            postgres::databases()
        }

        fn query(&self, database: &str, sql: &str, params: &[SqlValue]) -> Result<Rows, Error> {
            postgres::query(database, sql, params)
        }

        fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
            pganalytics_guest::setting(key)
        }

        fn warn(&self, message: &str) {
            log::warn(message);
        }
    }

    struct PgStats;

    impl Collector for PgStats {
        fn collect() -> Result<Vec<Value>, Error> {
            let settings = Settings::load(&Wasm)?;
            let time = std::time::SystemTime::now();
            let timestamp = pganalytics_guest::format_rfc3339_millis(time);
            let unix_secs = time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let now = Now {
                timestamp: &timestamp,
                unix_secs,
            };
            let mut sizes = Sizes::from_saved(pganalytics_guest::load_state());
            let items = run::collect(&Wasm, &settings, now, &mut sizes)?;
            // Kept only when the run's output is accepted; a failed save costs a re-measure.
            if sizes.changed()
                && let Err(e) = pganalytics_guest::save_state(&sizes)
            {
                log::warn(&format!(
                    "database sizes not kept for the next run: {}",
                    e.message()
                ));
            }
            Ok(items)
        }
    }

    pganalytics_guest::export_collector!(PgStats);
}
