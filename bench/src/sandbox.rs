//! The per-plugin cost of the sandbox: `sysstat` and `disk` run as components by the agent's own
//! code path, against the same collector code compiled natively and called directly, the two
//! alternating in one loop so that both see the same machine. The guide's `uptime` example runs
//! the same way as the floor: a collector that does almost nothing, so that what the sandbox
//! adds to it is what every run pays whatever its collector does.
//!
//! The native side does all the work the component and its host calls do together (read the
//! /proc files or the mount table, statvfs, parse, build and serialise the item, serialise the
//! state) and nothing the sandbox adds (instantiation, copying across the boundary, grant checks,
//! validation of the output).
//!
//! The runs keep plugin state in memory (no state directory). With a state directory, every
//! accepted `sysstat` run is followed by a write, fsync and rename of its state file: that
//! commit is not part of either figure, but the wait for the disk left the next run (sandboxed
//! and native alike) on cold caches, which doubled sysstat's instantiation and teardown beside
//! disk's, which keeps no state. The commit is measured on its own below, on a real state
//! directory.

use std::path::Path;
use std::time::{Duration, Instant};

use pganalytics::host::fs_stats::{
    FsStatsGrant, FsStatsGrantConfig, parse_mountinfo, select_mounts, statvfs,
};

use crate::measure::{Samples, human, ratio};
use crate::report::{Report, Verdict};
use crate::setup::{self, Loaded, Plugin};

pub async fn run(report: &mut Report, dir: &Path, iterations: usize) {
    let plugins = Plugin::Sysstat.section("1s") + &Plugin::Disk.section("1s");
    // The sandbox's floor: the guide's example collector, one /proc read of about 30 bytes and
    // one item, so that nearly all of its sandboxed time is what every run pays.
    let floor = format!(
        "[plugins.uptime]\nwasm = {:?}\nemits = [\"uptime\"]\ninterval = \"1s\"\n\
         [plugins.uptime.grants.procfs]\npaths = [\"uptime\"]\n\n",
        setup::wasm("uptime")
    );
    let text = setup::collector_section_in_memory() + &plugins + &floor;
    let loaded = Loaded::new(setup::parse(&text, dir));

    let mut details = String::new();
    let mut instantiate = Samples::default();
    for (name, native, goal) in [
        ("sysstat", native_sysstat as fn(&mut Vec<u8>) -> usize, true),
        ("disk", native_disk, true),
        ("uptime", native_uptime, false),
    ] {
        let mut sandboxed = Samples::default();
        let mut call = Samples::default();
        let mut instantiated = Samples::default();
        let mut setup = Samples::default();
        let mut teardown = Samples::default();
        let mut validation = Samples::default();
        let mut baseline = Samples::default();
        let mut state = Vec::new();
        let (mut sandboxed_bytes, mut native_bytes) = (0, 0);
        // The first runs fault in code and data; they are not counted.
        for i in 0..iterations + 10 {
            let (accepted, wall) = loaded.collect(name).await;
            let started = Instant::now();
            native_bytes = native(&mut state);
            let native_time = started.elapsed();
            if i >= 10 {
                sandboxed.push(wall);
                let timing = accepted.timing;
                call.push(timing.elapsed - timing.instantiate - timing.setup);
                instantiate.push(timing.instantiate);
                instantiated.push(timing.instantiate);
                setup.push(timing.setup);
                teardown.push(timing.teardown);
                validation.push(wall.saturating_sub(timing.elapsed + timing.teardown));
                baseline.push(native_time);
            }
            sandboxed_bytes = serde_json::to_string(&accepted.items)
                .expect("items serialise")
                .len();
        }
        let factor = ratio(sandboxed.median(), baseline.median());
        let met = factor <= 1.5 && sandboxed.median() <= Duration::from_micros(100);
        let figures = format!(
            "{} vs {} native: **{factor:.2}×**",
            human(sandboxed.median()),
            human(baseline.median())
        );
        if goal {
            report.row(
                &format!("per-plugin collect, `{name}`: sandboxed vs native"),
                "≤ 1.5× native; ≤ 100 µs absolute",
                &figures,
                if met { Verdict::Met } else { Verdict::Missed },
            );
        } else {
            report.row(
                &format!(
                    "the sandbox's cost per run on a collector that does almost nothing \
                     (`{name}`: one /proc read of ~30 bytes, one item), sandboxed vs native"
                ),
                "measured (the floor under every sandboxed figure)",
                &format!(
                    "{figures}; the sandbox adds {}",
                    human(sandboxed.median().saturating_sub(baseline.median()))
                ),
                Verdict::Measured,
            );
        }
        details += &format!(
            "- `{name}`: sandboxed (run + validation) {}; of which creating the run's context and \
             store {}, instantiation {}, `collect` after instantiation (its host calls and the \
             guest's code) {}, dropping the store (the pool slot's reset) {}, and validating the \
             output {}; native {}. Output {sandboxed_bytes} bytes sandboxed, {native_bytes} \
             native.\n",
            sandboxed.describe(),
            setup.describe(),
            instantiated.describe(),
            call.describe(),
            teardown.describe(),
            validation.describe(),
            baseline.describe(),
        );
    }
    report.row(
        "instantiate a plugin from its pre-linked component",
        "measured (inside the per-run figures above)",
        &human(instantiate.median()),
        Verdict::Measured,
    );
    details += &format!(
        "- instantiation (`InstancePre::instantiate_async` inside every run above): {}\n",
        instantiate.describe()
    );
    details += &commit_cost(dir, &plugins, iterations / 5).await;
    report.section("Per-plugin collect and instantiation", &details);
}

/// What saving sysstat's state costs the agent after an accepted run, on a state directory on
/// the benchmark's disk (write to a temporary file, fsync, rename), as a detail line.
async fn commit_cost(dir: &Path, plugins: &str, iterations: usize) -> String {
    let text = setup::collector_section(&dir.join("state"), "") + plugins;
    let loaded = Loaded::new(setup::parse(&text, dir));
    let mut commit = Samples::default();
    for i in 0..iterations + 3 {
        let (mut accepted, _) = loaded.collect_unsaved("sysstat").await;
        let started = Instant::now();
        std::mem::take(&mut accepted.commit)
            .apply(&loaded.host)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if i >= 3 {
            commit.push(started.elapsed());
        }
    }
    format!(
        "- saving `sysstat`'s state after an accepted run (state file written, fsynced and \
         renamed; not in the figures above, whose runs keep state in memory): {}\n",
        commit.describe()
    )
}

/// A /proc file read as the host's procfs reads it: into a buffer of 8 KiB, so a small file
/// takes one read and one more that finds its end. (`std::fs::read_to_string` sizes its buffer
/// by the file's length, which /proc reports as 0, and so reads in steps of 32, 32, 64, ...
/// bytes: six more system calls for /proc/stat, which made the native side slower than what
/// the host does for the plugin.)
fn read_proc(path: &Path) -> String {
    use std::io::Read as _;
    let mut text = String::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// What the `sysstat` component does, natively: four /proc files, parsed into one item, and the
/// CPU counters kept for the next run. Returns the output's size.
fn native_sysstat(state: &mut Vec<u8>) -> usize {
    use sysstat::parse::{self, CpuTimes, ProcFiles};
    let read = |file: &str| read_proc(&Path::new("/proc").join(file));
    let (stat, meminfo, diskstats, loadavg) = (
        read("stat"),
        read("meminfo"),
        read("diskstats"),
        read("loadavg"),
    );
    let files = ProcFiles {
        stat: &stat,
        meminfo: &meminfo,
        diskstats: &diskstats,
        loadavg: &loadavg,
    };
    let previous: Option<CpuTimes> = serde_json::from_slice(state).ok();
    let (fields, cpu) = parse::sysstat(&files, previous.as_ref()).expect("parsing /proc");
    *state = serde_json::to_vec(&cpu).expect("state serialises");
    pganalytics_guest::single_item_json("sysstat", fields)
        .expect("item")
        .len()
}

/// What the `uptime` example does, natively: /proc/uptime's first number as one item.
fn native_uptime(_state: &mut Vec<u8>) -> usize {
    let text = read_proc(Path::new("/proc/uptime"));
    let seconds: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seconds in /proc/uptime");
    let item =
        pganalytics_guest::item("uptime", serde_json::json!({ "seconds": seconds })).expect("item");
    serde_json::to_string(&[item])
        .expect("items serialise")
        .len()
}

/// What the `disk` component and its `fs-stats` host call do, natively: the mount table, the
/// real filesystems in it, statvfs of each, the item. Returns the output's size.
fn native_disk(_state: &mut Vec<u8>) -> usize {
    use disk::usage::{ByteCounts, DiskUsage, usage};
    let all = FsStatsGrant::new(&FsStatsGrantConfig {
        mounts: vec!["*".into()],
    })
    .expect("grant");
    let text = read_proc(Path::new("/proc/self/mountinfo"));
    let filesystems = select_mounts(&parse_mountinfo(&text), &all)
        .iter()
        .filter_map(|mount| statvfs(mount).ok())
        .filter(|fs| fs.total_bytes > 0)
        .map(|fs| {
            let bytes = ByteCounts {
                total: fs.total_bytes,
                free: fs.free_bytes,
                available: fs.available_bytes,
            };
            usage(&fs.device, &fs.mount_point, bytes)
        })
        .collect();
    pganalytics_guest::single_item_json("disk_usage", DiskUsage { filesystems })
        .expect("item")
        .len()
}
