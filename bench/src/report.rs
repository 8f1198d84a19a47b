//! BENCHMARKS.md: the machine, the summary table (one row per goal of the issue, each marked
//! met, missed or measured) and one section of details per benchmark.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No goal, or the goal is a number to report.
    Measured,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::Measured => "measured",
        }
    }
}

struct Row {
    what: String,
    goal: String,
    result: String,
    verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    sections: Vec<(String, String)>,
}

impl Report {
    pub fn row(&mut self, what: &str, goal: &str, result: &str, verdict: Verdict) {
        eprintln!("bench: {what}: {result} ({})", verdict.label());
        self.rows.push(Row {
            what: what.into(),
            goal: goal.into(),
            result: result.into(),
            verdict,
        });
    }

    pub fn section(&mut self, title: &str, markdown: &str) {
        self.sections.push((title.into(), markdown.into()));
    }

    pub fn missed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Missed)
            .count()
    }

    /// The whole file. `preamble` is the machine and the command; `analysis` the hand-written
    /// part kept between runs (profiles, what was changed, what remains).
    pub fn render(&self, preamble: &str, analysis: &str) -> String {
        let mut out = String::new();
        out += "# Benchmarks\n\n";
        out += "<!-- Written by `cargo xtask bench`; everything above ANALYSIS is regenerated on every run. -->\n\n";
        out += preamble;
        out += "\n## Summary\n\n| what | goal | result (median) | |\n|---|---|---|---|\n";
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.what,
                row.goal,
                row.result,
                row.verdict.label()
            );
        }
        for (title, body) in &self.sections {
            let _ = write!(out, "\n## {title}\n\n{body}");
        }
        out += "\n<!-- ANALYSIS -->\n";
        out += analysis;
        out
    }
}

/// The hand-written part of an existing BENCHMARKS.md (everything after the ANALYSIS marker).
pub fn kept_analysis(existing: &str) -> String {
    existing
        .split_once("<!-- ANALYSIS -->\n")
        .map(|(_, analysis)| analysis.to_owned())
        .unwrap_or_else(|| "\n## Analysis\n\n(not written yet)\n".into())
}

/// CPU model, cores, memory, kernel, and the CPU time stolen by the hypervisor while the suite
/// ran (these VMs share their cores; a high figure makes every number here slower).
pub struct Machine {
    steal_at_start: Option<(u64, u64)>,
}

impl Machine {
    pub fn start() -> Machine {
        Machine {
            steal_at_start: steal_and_total(),
        }
    }

    pub fn describe(&self) -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or("?".into(), |kib| {
                format!("{:.0} GiB", kib as f64 / 1048576.0)
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let steal = match (self.steal_at_start, steal_and_total()) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
                format!("{:.1} %", (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => "unknown".into(),
        };
        format!(
            "- machine: {model}, {cores} cores, {memory} RAM, Linux {kernel}\n\
             - CPU time stolen by the hypervisor during the run: {steal}\n"
        )
    }
}

/// (steal, total) jiffies of all CPUs from /proc/stat.
fn steal_and_total() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user already).
    let total = fields.iter().take(8).sum();
    Some((*fields.get(7)?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_survives_a_rewrite() {
        let mut report = Report::default();
        report.row("a", "≤ 1", "2", Verdict::Missed);
        let first = report.render("pre\n", "\n## Analysis\n\nhand-written\n");
        assert!(first.contains("| a | ≤ 1 | 2 | **missed** |"));
        assert_eq!(kept_analysis(&first), "\n## Analysis\n\nhand-written\n");
        assert_eq!(report.missed(), 1);
    }
}
