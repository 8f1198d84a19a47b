//! The `disk_usage` collector: size, use and room of the granted filesystems, as one
//! `disk_usage` item per run.
//!
//! Needs `[plugins.disk.grants.fs-stats] mounts = [...]` and nothing else: it must never import
//! `procfs`, `log-tail` or `postgres` (the host does the statvfs calls; no `df` is spawned).

pub mod usage;

#[cfg(target_arch = "wasm32")]
mod component {
    use crate::usage::{self, ByteCounts, DiskUsage};
    use pganalytics_guest::{Error, RawCollector, fs_stats};

    struct Disk;

    impl RawCollector for Disk {
        fn collect_json() -> Result<String, Error> {
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
            // One item: serialised straight into the output text, no `Value` tree.
            pganalytics_guest::single_item_json("disk_usage", DiskUsage { filesystems })
        }
    }

    pganalytics_guest::export_collector!(raw Disk);
}
