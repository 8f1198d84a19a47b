//! Pure parsing of the /proc files behind the `sysstat` item and the arithmetic on them.
//!
//! Everything here takes text and returns typed values, so it runs and is tested natively; it
//! must never call the host. Errors name the /proc file (and line) that did not parse, because
//! the operator reads them in the host log without the file at hand.

use pganalytics_guest::Error;
use serde::{Deserialize, Serialize};

/// The aggregate `cpu` line of /proc/stat: cumulative time since boot, in USER_HZ ticks.
///
/// `guest` and `guest_nice` are left out on purpose: the kernel already counts them inside
/// `user` and `nice`, so adding them would count guest time twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    fn total(&self) -> u64 {
        self.fields().iter().sum()
    }

    fn fields(&self) -> [u64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }

    fn from_fields(fields: [u64; 8]) -> Self {
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields;
        CpuTimes {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
        }
    }

    /// `self - earlier`, or `None` when any counter went backwards: the host rebooted since
    /// `earlier` was saved (state survives restarts), so the difference means nothing.
    fn since(&self, earlier: &CpuTimes) -> Option<CpuTimes> {
        let (now, then) = (self.fields(), earlier.fields());
        let mut delta = [0_u64; 8];
        for (d, (a, b)) in delta.iter_mut().zip(now.into_iter().zip(then)) {
            *d = a.checked_sub(b)?;
        }
        Some(CpuTimes::from_fields(delta))
    }
}

/// Parses the aggregate `cpu` line of /proc/stat.
///
/// The first four counters have existed forever; `iowait`, `irq`, `softirq` (2.6) and `steal`
/// (2.6.11) are read as 0 when an old kernel does not print them.
pub fn parse_stat(text: &str) -> Result<CpuTimes, Error> {
    let line = text
        .lines()
        .find(|line| line.split_ascii_whitespace().next() == Some("cpu"))
        .ok_or_else(|| Error::Invalid("procfs `stat`: no aggregate cpu line".into()))?;
    let mut values = [0_u64; 8];
    let mut count = 0;
    for (slot, field) in values.iter_mut().zip(line.split_ascii_whitespace().skip(1)) {
        *slot = field.parse().map_err(|_| {
            Error::Invalid(format!(
                "procfs `stat`: cpu counter `{field}` is not a number"
            ))
        })?;
        count += 1;
    }
    if count < 4 {
        return Err(Error::Invalid(format!(
            "procfs `stat`: cpu line has {count} counters, expected at least 4"
        )));
    }
    Ok(CpuTimes::from_fields(values))
}

/// CPU time shares in percent over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPercent {
    /// `user + nice`.
    pub user: f64,
    /// `system + irq + softirq`: all time spent in the kernel on the host's behalf.
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    /// Time the hypervisor gave this virtual machine's CPUs to someone else.
    pub steal: f64,
}

/// Percentages of the interval from `previous` to `now`, of the total of all eight counters, so
/// `user + system + idle + iowait + steal` is 100 (up to rounding).
///
/// Without a usable `previous` (first run, a reboot in between, or no tick elapsed) the
/// interval is "since boot": the counters are cumulative, so those are still true percentages,
/// only averaged over a longer time.
pub fn cpu_percent(previous: Option<&CpuTimes>, now: &CpuTimes) -> CpuPercent {
    let interval = previous
        .and_then(|previous| now.since(previous))
        .filter(|delta| delta.total() > 0)
        .unwrap_or(*now);
    let total = interval.total();
    let share = |ticks: u64| {
        if total == 0 {
            0.0
        } else {
            round2(ticks as f64 * 100.0 / total as f64)
        }
    };
    CpuPercent {
        user: share(interval.user + interval.nice),
        system: share(interval.system + interval.irq + interval.softirq),
        idle: share(interval.idle),
        iowait: share(interval.iowait),
        steal: share(interval.steal),
    }
}

/// The three load averages of /proc/loadavg.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Parses /proc/loadavg (`0.52 0.58 0.59 1/467 12345`).
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, Error> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |name: &str| -> Result<f64, Error> {
        let field = fields.next().ok_or_else(|| {
            Error::Invalid(format!("procfs `loadavg`: missing the {name} load average"))
        })?;
        field.parse().map_err(|_| {
            Error::Invalid(format!(
                "procfs `loadavg`: {name} load average `{field}` is not a number"
            ))
        })
    };
    Ok(LoadAvg {
        one: next("1-minute")?,
        five: next("5-minute")?,
        fifteen: next("15-minute")?,
    })
}

/// Memory in MiB (the backend calls the unit `mb`), rounded to two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Memory {
    pub total_mb: f64,
    pub free_mb: f64,
    /// `Cached + Buffers + SReclaimable`: memory the kernel hands back under pressure. This is
    /// what procps `free` reports as `buff/cache`, so `used_mb` matches its `used` column.
    pub cached_mb: f64,
    /// `total - free - cached`, never negative.
    pub used_mb: f64,
}

/// Parses /proc/meminfo (`MemTotal:  16318480 kB` lines).
///
/// `MemTotal` and `MemFree` are required; `Buffers`, `Cached` and `SReclaimable` (absent before
/// 2.6.19) count as 0 when missing.
pub fn parse_meminfo(text: &str) -> Result<Memory, Error> {
    const WANTED: [&str; 5] = ["MemTotal", "MemFree", "Cached", "Buffers", "SReclaimable"];
    let (mut total, mut free, mut cached) = (None, None, 0_u64);
    // The wanted keys seen so far, one bit each: the rest of the file is not read once all
    // five are (SReclaimable is about half way down).
    let mut seen = 0_u8;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(wanted) = WANTED.iter().position(|wanted| *wanted == key) else {
            continue;
        };
        let kib: u64 = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "procfs `meminfo`: `{key}` has no numeric value: `{}`",
                    rest.trim()
                ))
            })?;
        match key {
            "MemTotal" => total = Some(kib),
            "MemFree" => free = Some(kib),
            _ => cached += kib,
        }
        seen |= 1 << wanted;
        if seen == (1 << WANTED.len()) - 1 {
            break;
        }
    }
    let missing = |key: &str| Error::Invalid(format!("procfs `meminfo`: no `{key}` line"));
    let total = total.ok_or_else(|| missing("MemTotal"))?;
    let free = free.ok_or_else(|| missing("MemFree"))?;
    let used = total.saturating_sub(free).saturating_sub(cached);
    let mb = |kib: u64| round2(kib as f64 / 1024.0);
    Ok(Memory {
        total_mb: mb(total),
        free_mb: mb(free),
        cached_mb: mb(cached),
        used_mb: mb(used),
    })
}

/// I/O counters of one block device, cumulative since boot (the backend computes rates; a
/// plugin run only sees one sample and state would double the bookkeeping for no gain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskIo {
    pub device: String,
    /// Reads completed (field 4 of /proc/diskstats).
    pub read_ops: u64,
    /// Writes completed (field 8).
    pub write_ops: u64,
    /// Sectors read (field 6); a sector is always 512 bytes here, whatever the device's.
    pub read_sectors: u64,
    /// Sectors written (field 10).
    pub write_sectors: u64,
}

/// Parses /proc/diskstats into one entry per device, whole disks and partitions alike.
///
/// Kernels print 14 fields per line, 18 since 4.18 (discards) and 20 since 5.5 (flushes); only
/// the first 14 are read, so any count from 14 up is accepted. RAM disks, loop devices and
/// devices that never did any I/O are skipped: they are noise in every fleet dashboard.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskIo>, Error> {
    let mut disks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        // Only the first 14 fields are read, so only they are kept (no allocation per line).
        let mut fields = [""; 14];
        let mut count = 0;
        for (slot, field) in fields.iter_mut().zip(line.split_ascii_whitespace()) {
            *slot = field;
            count += 1;
        }
        if count == 0 {
            continue;
        }
        let line_no = index + 1;
        if count < 14 {
            return Err(Error::Invalid(format!(
                "procfs `diskstats` line {line_no}: {count} fields, expected at least 14"
            )));
        }
        // Fields are numbered from 1 in the kernel's documentation (iostats.rst).
        let counter = |n: usize| -> Result<u64, Error> {
            let field = fields[n - 1];
            field.parse().map_err(|_| {
                Error::Invalid(format!(
                    "procfs `diskstats` line {line_no}: field {n} `{field}` is not a number"
                ))
            })
        };
        let device = fields[2];
        let disk = DiskIo {
            device: device.to_owned(),
            read_ops: counter(4)?,
            read_sectors: counter(6)?,
            write_ops: counter(8)?,
            write_sectors: counter(10)?,
        };
        let pseudo = device.starts_with("ram") || device.starts_with("loop");
        let idle = disk.read_ops == 0 && disk.write_ops == 0;
        if !pseudo && !idle {
            disks.push(disk);
        }
    }
    Ok(disks)
}

/// The `cpu` object of the item: percentages and load averages side by side, as the backend
/// expects them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    /// Beyond the backend contract's four: on a busy virtual machine steal is what is missing
    /// from the other four's sum, and an operator needs to see it.
    pub steal: f64,
    pub load_1m: f64,
    pub load_5m: f64,
    pub load_15m: f64,
}

/// The fields of one `sysstat` item (the SDK adds `type` and `timestamp`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sysstat {
    pub cpu: Cpu,
    pub memory: Memory,
    pub disk_io: Vec<DiskIo>,
}

/// The raw text of the four /proc files one `sysstat` item is made of.
pub struct ProcFiles<'a> {
    pub stat: &'a str,
    pub meminfo: &'a str,
    pub diskstats: &'a str,
    pub loadavg: &'a str,
}

/// Builds the item fields from the /proc files and the CPU counters of the previous run, and
/// returns the current CPU counters to save for the next one.
pub fn sysstat(
    files: &ProcFiles<'_>,
    previous: Option<&CpuTimes>,
) -> Result<(Sysstat, CpuTimes), Error> {
    let times = parse_stat(files.stat)?;
    let percent = cpu_percent(previous, &times);
    let load = parse_loadavg(files.loadavg)?;
    let item = Sysstat {
        cpu: Cpu {
            user: percent.user,
            system: percent.system,
            idle: percent.idle,
            iowait: percent.iowait,
            steal: percent.steal,
            load_1m: load.one,
            load_5m: load.five,
            load_15m: load.fifteen,
        },
        memory: parse_meminfo(files.meminfo)?,
        disk_io: parse_diskstats(files.diskstats)?,
    };
    Ok((item, times))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use pganalytics_guest::ErrorExt;

    const STAT: &str = "\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
intr 1462898 0 0
ctxt 8179289
btime 1697190000
";

    const MEMINFO: &str = "\
MemTotal:       16318480 kB
MemFree:         1205600 kB
MemAvailable:    9872044 kB
Buffers:          412344 kB
Cached:          7654320 kB
SwapCached:            0 kB
SReclaimable:     512000 kB
SUnreclaim:       123456 kB
HugePages_Total:       0
";

    /// Lines with 14 (old kernel), 18 (4.18+) and 20 (5.5+) fields, plus the skipped kinds.
    const DISKSTATS: &str = "\
   7       0 loop0 52 0 2236 21 0 0 0 0 0 36 21 0 0 0 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0
 253       0 vda 127340 37810 8735410 68421 401245 227145 12083456 520124 0 401236 611534
 253       1 vda1 126980 37810 8721066 68302 401245 227145 12083456 520124 0 401228 588426 0 0 0 0
 259       0 nvme0n1 9001 12 731210 1500 4200 88 64000 2100 0 3300 3600 10 0 80 1 7 9
 259       1 nvme0n1p1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn parses_the_aggregate_cpu_line_and_ignores_guest_time() {
        let times = parse_stat(STAT).expect("valid stat");
        assert_eq!(
            times,
            CpuTimes {
                user: 10132153,
                nice: 290696,
                system: 3084719,
                idle: 46828483,
                iowait: 16683,
                irq: 0,
                softirq: 25195,
                steal: 0,
            }
        );
    }

    #[test]
    fn old_kernels_without_steal_read_as_zero() {
        let times = parse_stat("cpu 1 2 3 4 5\n").expect("valid stat");
        assert_eq!((times.iowait, times.irq, times.steal), (5, 0, 0));
    }

    #[test]
    fn stat_errors_name_the_file() {
        let err = parse_stat("cpu0 1 2 3 4\n").expect_err("no aggregate line");
        assert_eq!(err.message(), "procfs `stat`: no aggregate cpu line");
        let err = parse_stat("cpu 1 2 x 4\n").expect_err("not a number");
        assert_eq!(err.kind(), "invalid");
        assert!(err.message().contains("`x`"), "{}", err.message());
        let err = parse_stat("cpu 1 2\n").expect_err("too short");
        assert!(err.message().contains("2 counters"), "{}", err.message());
    }

    fn times(user: u64, system: u64, idle: u64, iowait: u64, steal: u64) -> CpuTimes {
        CpuTimes {
            user,
            nice: 0,
            system,
            idle,
            iowait,
            irq: 0,
            softirq: 0,
            steal,
        }
    }

    #[test]
    fn cpu_percent_over_the_interval() {
        let previous = times(1000, 500, 8000, 100, 0);
        let now = CpuTimes {
            nice: 10,
            irq: 5,
            softirq: 5,
            steal: 20,
            ..times(1100, 530, 8600, 130, 0)
        };
        // Deltas: user 100 + nice 10, system 30 + irq 5 + softirq 5, idle 600, iowait 30,
        // steal 20; total 800.
        let p = cpu_percent(Some(&previous), &now);
        assert_eq!(p.user, 13.75);
        assert_eq!(p.system, 5.0);
        assert_eq!(p.idle, 75.0);
        assert_eq!(p.iowait, 3.75);
        assert_eq!(p.steal, 2.5);
        assert_eq!(p.user + p.system + p.idle + p.iowait + p.steal, 100.0);
    }

    #[test]
    fn first_run_is_since_boot() {
        let now = times(200, 100, 600, 100, 0);
        let p = cpu_percent(None, &now);
        assert_eq!(
            (p.user, p.system, p.idle, p.iowait),
            (20.0, 10.0, 60.0, 10.0)
        );
    }

    #[test]
    fn counters_going_backwards_mean_a_reboot() {
        let previous = times(5000, 5000, 5000, 5000, 0);
        let now = times(200, 100, 600, 100, 0);
        let p = cpu_percent(Some(&previous), &now);
        assert_eq!(
            (p.user, p.system, p.idle, p.iowait),
            (20.0, 10.0, 60.0, 10.0)
        );
    }

    #[test]
    fn an_interval_without_ticks_falls_back_to_since_boot() {
        let now = times(200, 100, 600, 100, 0);
        let p = cpu_percent(Some(&now), &now);
        assert_eq!(p.idle, 60.0);
    }

    #[test]
    fn all_zero_counters_give_zero_not_nan() {
        let p = cpu_percent(None, &times(0, 0, 0, 0, 0));
        assert_eq!((p.user, p.idle), (0.0, 0.0));
    }

    #[test]
    fn parses_loadavg() {
        let load = parse_loadavg("0.52 0.58 0.59 1/467 12345\n").expect("valid loadavg");
        assert_eq!(
            load,
            LoadAvg {
                one: 0.52,
                five: 0.58,
                fifteen: 0.59
            }
        );
        let err = parse_loadavg("0.52 0.58\n").expect_err("truncated");
        assert_eq!(
            err.message(),
            "procfs `loadavg`: missing the 15-minute load average"
        );
    }

    #[test]
    fn parses_meminfo() {
        let memory = parse_meminfo(MEMINFO).expect("valid meminfo");
        assert_eq!(memory.total_mb, 15936.02);
        assert_eq!(memory.free_mb, 1177.34);
        // 412344 + 7654320 + 512000 = 8578664 kB.
        assert_eq!(memory.cached_mb, 8377.6);
        // 16318480 - 1205600 - 8578664 = 6534216 kB.
        assert_eq!(memory.used_mb, 6381.07);
    }

    #[test]
    fn used_memory_is_never_negative() {
        let memory = parse_meminfo("MemTotal: 100 kB\nMemFree: 80 kB\nCached: 50 kB\n")
            .expect("valid meminfo");
        assert_eq!(memory.used_mb, 0.0);
    }

    #[test]
    fn meminfo_errors_name_the_key() {
        let err = parse_meminfo("MemFree: 1 kB\n").expect_err("no total");
        assert_eq!(err.message(), "procfs `meminfo`: no `MemTotal` line");
        let err = parse_meminfo("MemTotal: lots kB\nMemFree: 1 kB\n").expect_err("not a number");
        assert!(err.message().contains("`MemTotal`"), "{}", err.message());
    }

    #[test]
    fn parses_diskstats_of_every_width_and_skips_noise() {
        let disks = parse_diskstats(DISKSTATS).expect("valid diskstats");
        let names: Vec<&str> = disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["vda", "vda1", "nvme0n1"]);
        assert_eq!(
            disks[0],
            DiskIo {
                device: "vda".into(),
                read_ops: 127340,
                write_ops: 401245,
                read_sectors: 8735410,
                write_sectors: 12083456,
            }
        );
        assert_eq!(disks[2].read_sectors, 731210);
        assert_eq!(disks[2].write_ops, 4200);
    }

    #[test]
    fn short_diskstats_lines_are_an_error() {
        let err = parse_diskstats("8 0 sda 1 2 3 4\n").expect_err("7 fields");
        assert_eq!(
            err.message(),
            "procfs `diskstats` line 1: 7 fields, expected at least 14"
        );
        let err = parse_diskstats("8 0 sda 1 2 3 4 x 6 7 8 9 10 11\n").expect_err("bad field");
        assert!(err.message().contains("field 8 `x`"), "{}", err.message());
    }

    #[test]
    fn builds_the_item_with_the_contract_field_names() {
        let files = ProcFiles {
            stat: STAT,
            meminfo: MEMINFO,
            diskstats: DISKSTATS,
            loadavg: "1.00 2.00 3.00 1/1 1\n",
        };
        let (item, saved) = sysstat(&files, None).expect("valid files");
        assert_eq!(saved, parse_stat(STAT).expect("valid stat"));
        let json = pganalytics_guest::serde_json::to_value(&item).expect("serialisable");
        let keys = |v: &pganalytics_guest::Value| {
            let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&json), ["cpu", "disk_io", "memory"]);
        assert_eq!(
            keys(&json["cpu"]),
            [
                "idle", "iowait", "load_15m", "load_1m", "load_5m", "steal", "system", "user"
            ]
        );
        assert_eq!(
            keys(&json["memory"]),
            ["cached_mb", "free_mb", "total_mb", "used_mb"]
        );
        assert_eq!(
            keys(&json["disk_io"][0]),
            [
                "device",
                "read_ops",
                "read_sectors",
                "write_ops",
                "write_sectors"
            ]
        );
        assert_eq!(json["cpu"]["load_15m"], 3.0);
    }

    #[test]
    fn parses_this_machines_proc_files() {
        // A smoke test against the real kernel's formats; skipped where /proc is not Linux's.
        let read = |name: &str| std::fs::read_to_string(format!("/proc/{name}")).ok();
        let (Some(stat), Some(meminfo), Some(diskstats), Some(loadavg)) = (
            read("stat"),
            read("meminfo"),
            read("diskstats"),
            read("loadavg"),
        ) else {
            return;
        };
        let files = ProcFiles {
            stat: &stat,
            meminfo: &meminfo,
            diskstats: &diskstats,
            loadavg: &loadavg,
        };
        let (item, _) = sysstat(&files, None).expect("this kernel's /proc parses");
        let sum = item.cpu.user + item.cpu.system + item.cpu.idle + item.cpu.iowait;
        assert!(sum > 0.0 && sum <= 100.05, "{sum}");
        assert!(item.memory.total_mb > 0.0);
    }
}
