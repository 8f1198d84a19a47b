//! `process_*` metrics of the agent itself, read from `/proc/self` at scrape time (the names
//! and meanings of the Prometheus client libraries' process collector).
//!
//! Reads only this process's own files; must be called from a blocking thread.

use std::sync::OnceLock;

/// What one scrape reads.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    /// Unix seconds.
    pub start_time_seconds: f64,
    /// The C library's heap, where it reports one (glibc).
    pub heap: Option<crate::heap::Usage>,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as f64 } else { 4096.0 }
}

fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

/// Parses `/proc/self/stat`: the fields after the command name, which may itself hold spaces
/// and parentheses (so the split is at the last `)`).
fn parse_stat(stat: &str, sample: &mut ProcessSample) -> Option<()> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field numbers of proc(5), minus 3 (pid, comm and the split).
    let number = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let ticks = clock_ticks();
    sample.cpu_seconds = (number(14)? + number(15)?) / ticks;
    sample.virtual_bytes = number(23)?;
    sample.resident_bytes = number(24)? * page_size();
    if let Some(boot) = boot_time() {
        sample.start_time_seconds = boot + number(22)? / ticks;
    }
    Some(())
}

/// Reads the current sample; fields that cannot be read stay 0.
pub fn sample() -> ProcessSample {
    let mut sample = ProcessSample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let _ = parse_stat(&stat, &mut sample);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        sample.open_fds = dir.count().saturating_sub(1) as f64;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        sample.max_fds = limit.rlim_cur as f64;
    }
    sample.heap = crate::heap::usage();
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_split_after_the_last_parenthesis() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 123456789 2000 18446744073709551615";
        let mut sample = ProcessSample::default();
        parse_stat(stat, &mut sample).unwrap();
        assert_eq!(sample.cpu_seconds, 300.0 / clock_ticks());
        assert_eq!(sample.virtual_bytes, 123456789.0);
        assert_eq!(sample.resident_bytes, 2000.0 * page_size());
    }

    #[test]
    fn this_process_has_plausible_numbers() {
        let sample = sample();
        assert!(sample.resident_bytes > 1e6, "{sample:?}");
        assert!(
            sample.open_fds >= 3.0 && sample.max_fds >= sample.open_fds,
            "{sample:?}"
        );
        assert!(sample.start_time_seconds > 1.5e9, "{sample:?}");
    }
}
