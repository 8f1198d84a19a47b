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
    fn durations_are_shown_in_a_readable_unit() {
        assert_eq!(human(Duration::from_nanos(1_234)), "1.23 µs");
        assert_eq!(human(Duration::from_micros(250)), "250.0 µs");
        assert_eq!(human(Duration::from_micros(2_500)), "2.50 ms");
        assert_eq!(human(Duration::from_millis(2_500)), "2.50 s");
    }
}
