//! The `pg_log` collector: new lines of PostgreSQL's server logs (stderr, csvlog or jsonlog),
//! parsed into entries and sent as `pg_log` items, one per database seen in the run.
//!
//! Needs `[plugins.pg_log.grants.log-tail] paths = [...]` and nothing else: it must never import
//! `procfs`, `fs-stats` or `postgres`. The host keeps the file offsets and commits them only when
//! the run's output is accepted, so a failed run is offered the same lines again; this collector
//! therefore keeps no state of its own and must never drop a line it was given (an entry it
//! cannot fully parse is still sent, marked `UNKNOWN`). The one exception fails the whole run
//! instead: stderr lines written under another `log_line_prefix` than the configured one would
//! be glued into a few giant, truncated entries, so the run returns an error naming the setting
//! and nothing is committed until the setting is fixed.
//!
//! Throughput: entries borrow their text from the chunk being parsed and are written as JSON
//! straight into their item's buffer, so a typical entry costs no allocation.
//!
//! Everything but the host calls lives in modules that compile and are tested natively:
//! [`settings`] (the settings and their defaults), [`prefix`] (`log_line_prefix`),
//! [`timestamp`] (with the zone table for `log_timezone`), [`entry`] (the entry sent and its
//! JSON), one parser per format ([`stderr`], [`csv`],
//! [`json`]) and [`run`] (per-file parsers, grouping and the output JSON).

pub mod csv;
pub mod entry;
pub mod json;
pub mod prefix;
pub mod run;
pub mod settings;
pub mod stderr;
pub mod timestamp;

/// The lines of `data` (which starts at byte `offset` of its file) with the offset of each,
/// without their `\n` or `\r\n`. A last line without a newline is still a line.
pub(crate) fn split_lines(data: &str, offset: u64) -> impl Iterator<Item = (u64, &str)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end =
            memchr::memchr(b'\n', &data.as_bytes()[start..]).map_or(data.len(), |n| start + n);
        let line = &data[start..end];
        let at = offset + start as u64;
        start = end + 1;
        Some((at, line.strip_suffix('\r').unwrap_or(line)))
    })
}

#[cfg(target_arch = "wasm32")]
mod component {
    use crate::run::{self, Chunk};
    use crate::settings::Settings;
    use pganalytics_guest::{Error, RawCollector, log, log_tail};
    use std::time::{Duration, Instant};

    struct PgLog;

    impl RawCollector for PgLog {
        fn collect_json() -> Result<String, Error> {
            let started = Instant::now();
            let settings = Settings::from_json(&pganalytics_guest::settings::all())?;
            // Time spent in the host's `read-new` (reading, copying into this instance), so
            // that the debug line tells the host's share of a run from the parsing.
            let mut in_host = Duration::ZERO;
            let output = run::collect(&settings, pganalytics_guest::now_rfc3339(), |max_bytes| {
                let asked = Instant::now();
                let chunks = log_tail::read_new(max_bytes)?;
                in_host += asked.elapsed();
                Ok(chunks
                    .into_iter()
                    .map(|chunk| Chunk {
                        path: chunk.path,
                        offset: chunk.offset,
                        data: chunk.data,
                    })
                    .collect())
            })?;
            log::debug(&format!(
                "pg_log: read {} bytes; {} entries in {} items ({} bytes), {} below `min_level`; \
                 {} us in the run, {} us of it in `read-new`",
                output.read_bytes,
                output.entries,
                output.items,
                output.json.len(),
                output.filtered,
                started.elapsed().as_micros(),
                in_host.as_micros(),
            ));
            Ok(output.json)
        }
    }

    pganalytics_guest::export_collector!(raw PgLog);
}
