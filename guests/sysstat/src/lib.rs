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
    use pganalytics_guest::{Collector, Error, Value, procfs};
    use serde::{Deserialize, Serialize};

    /// What is kept between runs. The version lets a future layout be told apart from this
    /// one; a blob of another version is dropped, costing one since-boot CPU sample.
    #[derive(Serialize, Deserialize)]
    struct SavedState {
        version: u32,
        cpu: CpuTimes,
    }

    const STATE_VERSION: u32 = 1;

    struct Sysstat;

    impl Collector for Sysstat {
        fn collect() -> Result<Vec<Value>, Error> {
            let (stat, meminfo, diskstats, loadavg) = (
                procfs::read("stat")?,
                procfs::read("meminfo")?,
                procfs::read("diskstats")?,
                procfs::read("loadavg")?,
            );
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
            Ok(vec![pganalytics_guest::item("sysstat", fields)?])
        }
    }

    pganalytics_guest::export_collector!(Sysstat);
}
