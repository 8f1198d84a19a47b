//! Pure arithmetic from filesystem byte counts to the `disk_usage` item's numbers.
//!
//! Kept apart from the host call so it runs and is tested natively; it must never call the host.

use serde::Serialize;

/// One filesystem as the backend expects it; sizes in GiB (the contract calls them `gb`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesystemUsage {
    pub device: String,
    pub mount: String,
    /// All blocks of the filesystem.
    pub total_gb: f64,
    /// Blocks in use: total minus free, where free includes the root-reserved blocks.
    pub used_gb: f64,
    /// What unprivileged users can still write (reserved blocks excluded), the number that
    /// matters to PostgreSQL running as `postgres`.
    pub free_gb: f64,
    /// `used / (used + available)`, like `df`: the reserved blocks do not count as room, so
    /// 100% means users can write nothing even if root still can.
    pub percent_used: f64,
}

/// The byte counts of one filesystem as statvfs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteCounts {
    /// f_blocks * f_frsize.
    pub total: u64,
    /// f_bfree * f_frsize, including the root-reserved blocks.
    pub free: u64,
    /// f_bavail * f_frsize.
    pub available: u64,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Converts byte counts into the item's numbers, rounded to two decimals.
///
/// Saturating arithmetic because the counts come from the kernel at slightly different moments
/// and a filesystem busy during the read can report `free > total` by a few blocks.
pub fn usage(device: &str, mount: &str, bytes: ByteCounts) -> FilesystemUsage {
    let used = bytes.total.saturating_sub(bytes.free);
    let room = used.saturating_add(bytes.available);
    let percent_used = if bytes.total == 0 || room == 0 {
        0.0
    } else {
        used as f64 * 100.0 / room as f64
    };
    let gib = |b: u64| round2(b as f64 / GIB);
    FilesystemUsage {
        device: device.to_owned(),
        mount: mount.to_owned(),
        total_gb: gib(bytes.total),
        used_gb: gib(used),
        free_gb: gib(bytes.available),
        percent_used: round2(percent_used),
    }
}

/// The fields of one `disk_usage` item (the SDK adds `type` and `timestamp`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskUsage {
    pub filesystems: Vec<FilesystemUsage>,
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB_BYTES: u64 = 1 << 30;

    #[test]
    fn computes_like_df() {
        // A 100 GiB ext4 volume with 5 GiB reserved for root: 40 GiB free, of which 35 GiB are
        // available to users. df shows Used 60G, Avail 35G, Use% 64 (60 / 95).
        let u = usage(
            "/dev/vda1",
            "/var/lib/postgresql",
            ByteCounts {
                total: 100 * GIB_BYTES,
                free: 40 * GIB_BYTES,
                available: 35 * GIB_BYTES,
            },
        );
        assert_eq!(
            u,
            FilesystemUsage {
                device: "/dev/vda1".into(),
                mount: "/var/lib/postgresql".into(),
                total_gb: 100.0,
                used_gb: 60.0,
                free_gb: 35.0,
                percent_used: 63.16,
            }
        );
    }

    #[test]
    fn rounds_to_two_decimals() {
        let u = usage(
            "d",
            "/",
            ByteCounts {
                total: 10_000_000_000,
                free: 3_333_333_333,
                available: 3_333_333_333,
            },
        );
        assert_eq!(u.total_gb, 9.31);
        assert_eq!(u.used_gb, 6.21);
        assert_eq!(u.free_gb, 3.1);
        assert_eq!(u.percent_used, 66.67);
    }

    #[test]
    fn an_empty_filesystem_is_zero_percent_not_nan() {
        let u = usage(
            "none",
            "/empty",
            ByteCounts {
                total: 0,
                free: 0,
                available: 0,
            },
        );
        assert_eq!((u.total_gb, u.used_gb, u.percent_used), (0.0, 0.0, 0.0));
    }

    #[test]
    fn inconsistent_counts_do_not_underflow() {
        let u = usage(
            "d",
            "/",
            ByteCounts {
                total: 100,
                free: 200,
                available: 200,
            },
        );
        assert_eq!((u.used_gb, u.percent_used), (0.0, 0.0));
    }

    #[test]
    fn a_full_filesystem_is_a_hundred_percent() {
        // Only root's reserve is left: users can write nothing.
        let u = usage(
            "d",
            "/",
            ByteCounts {
                total: 100 * GIB_BYTES,
                free: 5 * GIB_BYTES,
                available: 0,
            },
        );
        assert_eq!(u.percent_used, 100.0);
    }

    #[test]
    fn serialises_with_the_contract_field_names() {
        let item = DiskUsage {
            filesystems: vec![usage(
                "d",
                "/",
                ByteCounts {
                    total: 1,
                    free: 1,
                    available: 1,
                },
            )],
        };
        let json = pganalytics_guest::serde_json::to_value(&item).expect("serialisable");
        let mut keys: Vec<&String> = json["filesystems"][0]
            .as_object()
            .expect("an object")
            .keys()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "device",
                "free_gb",
                "mount",
                "percent_used",
                "total_gb",
                "used_gb"
            ]
        );
    }
}
