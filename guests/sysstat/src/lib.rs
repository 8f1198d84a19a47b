//! The `sysstat` collector: CPU, memory and block-device I/O of the host, from four /proc files,
//! as one `sysstat` item per run.
//!
//! Needs `[plugins.sysstat.grants.procfs] paths = ["stat", "meminfo", "diskstats", "loadavg"]`
//! and nothing else: it must never import `fs-stats`, `log-tail` or `postgres`. CPU percentages
//! are over the interval since the previous run, whose counters are kept in the plugin state.

pub mod parse;

#[cfg(target_arch = "wasm32")]
mod component {
    use crate::parse::{self, CpuTimes, ProcFiles};
    use pganalytics_guest::{Error, RawCollector, procfs};
    use serde::{Deserialize, Serialize};

    /// What is kept between runs. The version lets a future layout be told apart from this
    /// one; a blob of another version is dropped, costing one since-boot CPU sample.
    #[derive(Serialize, Deserialize)]
    struct SavedState {
        version: u32,
        cpu: CpuTimes,
    }

    const STATE_VERSION: u32 = 1;

    /// The /proc files of one item, in the order `collect` takes them apart.
    const FILES: [&str; 4] = ["stat", "meminfo", "diskstats", "loadavg"];

    struct Sysstat;

    impl RawCollector for Sysstat {
        fn collect_json() -> Result<String, Error> {
            // One crossing into the host for the four files; each is checked against the
            // grant exactly as a `read` of it would be.
            let paths = FILES.map(String::from);
            let mut texts = procfs::read_many(&paths)?.into_iter();
            let mut next = || {
                texts.next().unwrap_or_else(|| {
                    Err(Error::Io(
                        "procfs read-many: fewer results than paths".into(),
                    ))
                })
            };
            let (stat, meminfo, diskstats, loadavg) = (next()?, next()?, next()?, next()?);
            let files = ProcFiles {
                stat: &stat,
                meminfo: &meminfo,
                diskstats: &diskstats,
                loadavg: &loadavg,
            };
            let previous = pganalytics_guest::load_state::<SavedState>()
                .filter(|saved| saved.version == STATE_VERSION)
                .map(|saved| saved.cpu);
            let (fields, cpu) = parse::sysstat(&files, previous.as_ref())?;
            pganalytics_guest::save_state(&SavedState {
                version: STATE_VERSION,
                cpu,
            })?;
            // One item: serialised straight into the output text, no `Value` tree.
            pganalytics_guest::single_item_json("sysstat", fields)
        }
    }

    pganalytics_guest::export_collector!(raw Sysstat);
}
