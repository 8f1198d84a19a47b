//! Host memory while a plugin's output is accepted: the heap peak of `validate_output` and of
//! encoding the envelope it goes into, for an output of `max_output` bytes, against the output
//! itself (the baseline: a host cannot hold less than the text it received).
//!
//! The bench's global allocator counts the heap bytes live on the measuring thread, and only
//! while a measurement is on: every other part of the suite pays one relaxed atomic load per
//! allocation and nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pg_log::settings::Settings;
use pganalytics::pipeline::{Envelope, validate::validate_output};
use pganalytics::plugin::limits::DEFAULT_MAX_OUTPUT_BYTES;

use crate::logs::{PREFIX, write_log};
use crate::measure::mib;
use crate::report::{Report, Verdict};
use crate::setup;

/// The goal: the host holds at most 3x `max_output` while accepting an output.
const GOAL_FACTOR: f64 = 3.0;

pub struct Counting;

/// How many threads are measuring; at 0 the allocator only delegates.
static MEASURING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    if MEASURING.load(Ordering::Relaxed) > 0 && ON.with(Cell::get) {
        let live = LIVE.with(|l| {
            l.set(l.get() + delta);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
    }
}

// SAFETY: delegates to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` on this thread and returns its result and the peak of heap bytes live at once,
/// counting `input_bytes` (what `f` received, built before) from the start.
pub fn peak<T>(input_bytes: usize, f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(input_bytes as isize));
    PEAK.with(|p| p.set(input_bytes as isize));
    ON.with(|on| on.set(true));
    MEASURING.fetch_add(1, Ordering::SeqCst);
    let out = f();
    MEASURING.fetch_sub(1, Ordering::SeqCst);
    ON.with(|on| on.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

pub fn run(report: &mut Report, dir: &Path) {
    let max_output = DEFAULT_MAX_OUTPUT_BYTES as usize;
    let config = setup::parse(&setup::collector_section(&dir.join("state"), ""), dir);
    let mut details = format!(
        "`max_output` {} (the default). Each output is built first, shrunk to its length (as a \
         string lifted from a guest is), then `validate_output` and `Envelope::encode` run on \
         this thread with every heap allocation counted; the peak includes the output itself.\n\n",
        mib(max_output as u64)
    );
    for (name, output) in [
        ("pg_log entries", pg_log_output(dir, max_output)),
        ("many small items", small_items(max_output)),
    ] {
        let size = output.len();
        let items_in = output.matches("\"timestamp\"").count();
        let mut output = std::hint::black_box(output);
        output.shrink_to_fit();
        let emits: BTreeSet<String> = ["pg_log", "custom"].map(String::from).into();
        let ((batch, items), peak) = self::peak(size, || {
            // No server stamp: neither output comes from a plugin with a postgres grant.
            let items = validate_output(output, &emits, None).expect("the output is valid");
            let envelope = Envelope::new(&config.collector, vec![items]);
            let batch = envelope.encode().expect("the envelope encodes");
            (batch.len(), envelope.metrics_count)
        });
        let of_max = peak as f64 / max_output as f64;
        let of_output = peak as f64 / size as f64;
        report.row(
            &format!("host memory while validating a plugin's output: {name}"),
            "≤ 3× `max_output`",
            &format!(
                "heap peak {}: **{of_max:.2}×** `max_output` ({of_output:.2}× the {} output)",
                mib(peak as u64),
                mib(size as u64)
            ),
            if of_max <= GOAL_FACTOR {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        );
        details += &format!(
            "- {name}: output {size} bytes, {items} top-level items ({items_in} timestamps); \
             heap peak {peak} bytes ({of_output:.2}× the output, {of_max:.2}× `max_output`); \
             envelope {batch} bytes\n"
        );
    }
    report.section("Host memory while validating output", &details);
}

/// What the `pg_log` component returns for a busy server's log with its output budget set to
/// just under `max_output`: the parser compiled natively, fed the bench's generated stderr log.
fn pg_log_output(dir: &Path, max_output: usize) -> String {
    let log = dir.join("postgresql.log");
    write_log(&log, "stderr", 4 * max_output as u64);
    let text = std::fs::read_to_string(&log).expect("the generated log");
    let settings = Settings::from_json(
        &serde_json::json!({
            "format": "stderr",
            "log_line_prefix": PREFIX,
            "max_output_bytes": max_output - 4096,
        })
        .to_string(),
    )
    .expect("settings");
    let path = log.display().to_string();
    let mut offset = 0usize;
    let output = pg_log::run::collect(&settings, pganalytics_guest::now_rfc3339(), |max_bytes| {
        // Whole lines from where the last read ended, like the host's `log-tail`.
        let end = text.len().min(offset + max_bytes as usize);
        let end = text[offset..end]
            .rfind('\n')
            .map_or(offset, |i| offset + i + 1);
        let chunk = pg_log::run::Chunk {
            path: path.clone(),
            offset: offset as u64,
            data: text[offset..end].to_owned(),
        };
        offset = end;
        Ok(vec![chunk])
    })
    .expect("parsing");
    output.json
}

/// A custom collector's output of small items (a metric each, ~130 bytes), up to `max_output`:
/// the worst case for the per-item bookkeeping.
fn small_items(max_output: usize) -> String {
    let mut out = String::from("[");
    let mut n = 0u64;
    loop {
        let item = format!(
            r#"{{"type":"custom","timestamp":"2026-12-06T19:00:00.{:03}Z","name":"queue_depth","value":{},"labels":{{"queue":"orders-{}"}}}}"#,
            n % 1000,
            n * 7 % 1013,
            n % 64
        );
        if out.len() + item.len() + 2 > max_output {
            break;
        }
        if n > 0 {
            out.push(',');
        }
        out += &item;
        n += 1;
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_counts_what_was_live_at_once_on_this_thread() {
        let ((), most) = peak(100, || {
            let a = std::hint::black_box(vec![0u8; 1 << 20]);
            drop(a);
            let b = std::hint::black_box(vec![0u8; 1 << 19]);
            drop(b);
        });
        assert_eq!(most, 100 + (1 << 20));
        // Off again: nothing counted outside a measurement.
        let ((), idle) = peak(0, || {});
        assert_eq!(idle, 0);
    }

    #[test]
    fn small_items_fill_max_output_and_are_valid() {
        let output = small_items(64 << 10);
        assert!(
            output.len() <= 64 << 10 && output.len() > 60 << 10,
            "{}",
            output.len()
        );
        let emits: BTreeSet<String> = ["custom".to_owned()].into();
        let items = validate_output(output, &emits, None).expect("valid");
        assert!(items.len() > 400, "{}", items.len());
    }
}
