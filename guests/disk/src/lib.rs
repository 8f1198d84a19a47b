//! The `disk_usage` collector: size, use and room of the granted filesystems, as one
//! `disk_usage` item per run.
//!
//! Needs `[plugins.disk.grants.fs-stats] mounts = [...]` and nothing else: it must never import
//! `procfs`, `log-tail` or `postgres` (the host does the statvfs calls; no `df` is spawned).

pub mod usage;

#[cfg(target_arch = "wasm32")]
mod component {
    use crate::usage::{self, ByteCounts, DiskUsage};
    use pganalytics_guest::{Collector, Error, Value, fs_stats};

    struct Disk;

    impl Collector for Disk {
        fn collect() -> Result<Vec<Value>, Error> {
            let filesystems = fs_stats::filesystems()?
                .into_iter()
                .map(|fs| {
                    let bytes = ByteCounts {
                        total: fs.total_bytes,
                        free: fs.free_bytes,
                        available: fs.available_bytes,
                    };
                    usage::usage(&fs.device, &fs.mount_point, bytes)
                })
                .collect();
            Ok(vec![pganalytics_guest::item(
                "disk_usage",
                DiskUsage { filesystems },
            )?])
        }
    }

    pganalytics_guest::export_collector!(Disk);
}
