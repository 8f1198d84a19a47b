//! Timing samples and what is reported of them: medians (these machines are noisy, so never a
//! mean or a best case) with the spread beside them.

use std::time::Duration;

/// Durations of repeated runs of one thing.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0–100), nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// `median (p10–p90, n runs)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (p10 {}, p90 {}, n={})",
            human(self.median()),
            human(self.percentile(10.0)),
            human(self.percentile(90.0)),
            self.len()
        )
    }
}

/// A duration in the unit that keeps three significant digits readable.
pub fn human(duration: Duration) -> String {
    let nanos = duration.as_nanos() as f64;
    if nanos < 10_000.0 {
        format!("{:.2} µs", nanos / 1e3)
    } else if nanos < 1e6 {
        format!("{:.1} µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.2} ms", nanos / 1e6)
    } else {
        format!("{:.2} s", nanos / 1e9)
    }
}

/// `a / b` of two durations.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// Bytes as MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One `kB` field of /proc/PID/status (`VmRSS`, `RssAnon`, `RssFile`), in bytes; 0 when the
/// process is gone.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Resident set size of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces and
/// parentheses): index 0 is `state`, 1 `ppid`, 11 `utime`, 12 `stime`, 13 `cutime`, 14
/// `cstime` (fields 3, 4, 14 to 17 of proc(5)). Empty when the process is gone.
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .map(|(_, rest)| {
            // `state` is a letter: keep the positions, with 0 in its place.
            rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect()
        })
        .unwrap_or_default()
}

fn ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// utime + stime of a process (10 ms ticks here).
pub fn cpu_time(pid: u32) -> Duration {
    let fields = stat_fields(pid);
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    ticks(field(11) + field(12))
}

/// CPU time a PostgreSQL server has used so far, all of its processes together: the
/// postmaster, every live child (backends, parallel workers, autovacuum, the background
/// processes) and the children that already exited (the postmaster's cutime + cstime count
/// them once it has reaped them). The difference over a collection is what that collection
/// cost the server, background activity included.
pub fn server_cpu(postmaster: u32) -> Duration {
    let own = stat_fields(postmaster);
    let field = |fields: &[u64], i: usize| fields.get(i).copied().unwrap_or(0);
    let mut total = field(&own, 11) + field(&own, 12) + field(&own, 13) + field(&own, 14);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let fields = stat_fields(pid);
            if field(&fields, 1) == u64::from(postmaster) {
                total += field(&fields, 11) + field(&fields, 12);
            }
        }
    }
    ticks(total)
}

/// The postmaster's PID, from the first line of `postmaster.pid` in the data directory.
pub fn postmaster_pid(data_dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no postmaster.pid in {}", data_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles_are_nearest_rank_of_the_sorted_samples() {
        let mut samples = Samples::default();
        for ms in [9, 1, 5, 3, 7] {
            samples.push(Duration::from_millis(ms));
        }
        assert_eq!(samples.median(), Duration::from_millis(5));
        assert_eq!(samples.percentile(0.0), Duration::from_millis(1));
        assert_eq!(samples.percentile(100.0), Duration::from_millis(9));
        assert_eq!(Samples::default().median(), Duration::ZERO);
    }

    #[test]
    fn cpu_of_this_process_and_its_children_add_up() {
        let me = std::process::id();
        let start = server_cpu(me);
        // Burn some CPU in a child that exits and is reaped: it moves into our cutime.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh");
        assert!(status.success());
        let after = server_cpu(me);
        assert!(after > start, "{start:?} -> {after:?}");
        assert!(cpu_time(me) <= after);
        assert_eq!(
            cpu_time(u32::MAX),
            Duration::ZERO,
            "a missing process costs nothing"
        );
    }

    #[test]
    fn durations_are_shown_in_a_readable_unit() {
        assert_eq!(human(Duration::from_nanos(1_234)), "1.23 µs");
        assert_eq!(human(Duration::from_micros(250)), "250.0 µs");
        assert_eq!(human(Duration::from_micros(2_500)), "2.50 ms");
        assert_eq!(human(Duration::from_millis(2_500)), "2.50 s");
    }
}
