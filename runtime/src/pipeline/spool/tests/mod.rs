//! Tests of the spool: the queue, recovery, the queue against a model, and crashes.

mod corruption;
mod crash;
mod cursor;
mod dead_letter;
mod disk_full;
mod format;
mod model;
mod queue;
mod recovery;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::format::*;
use super::recovery::scan_segment;
use super::*;

fn options(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        segment_bytes,
        ..SpoolOptions::new(max_bytes)
    }
}

fn open(dir: &Path, options: SpoolOptions) -> (Spool, Recovery) {
    Spool::open_with(dir, options).unwrap()
}

/// A JSON-ish batch whose content says which one it is.
fn batch(n: u64, len: usize) -> Vec<u8> {
    let mut out = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    while out.len() + 2 < len {
        out.push(b'a' + (n % 26) as u8);
    }
    out.extend_from_slice(b"\"}");
    out
}

fn contents(spool: &Spool) -> Vec<(u64, Vec<u8>)> {
    spool
        .pending()
        .map(|r| r.map(|(id, b)| (id.get(), b)).unwrap())
        .collect()
}

fn ids(spool: &Spool) -> Vec<u64> {
    contents(spool).into_iter().map(|(id, _)| id).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(SEGMENTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(SEGMENT_SUFFIX))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Three records of 30-byte batches per segment: batches 1-3, 4-6, 7-9.
fn three_per_segment(dir: &Path) -> SpoolOptions {
    let opts = options(1 << 20, record_offset(3, 30) as u64);
    let (mut spool, _) = open(dir, opts);
    for n in 1..=9 {
        spool.append(&batch(n, 30)).unwrap();
    }
    assert_eq!(segment_files(dir).len(), 3);
    opts
}

/// Delivers everything as the agent does (oldest, then ack) and returns what was delivered.
fn drain(spool: &mut Spool) -> Vec<(u64, Vec<u8>)> {
    let mut delivered = Vec::new();
    while let Some((id, batch)) = spool.oldest().unwrap() {
        spool.ack(id).unwrap();
        delivered.push((id.get(), batch));
    }
    delivered
}

/// Delivers everything in pushes of up to `per_push` batches (`oldest_run`, then
/// `ack_through` the last of the run), as the agent does; returns what was delivered, by push.
fn drain_in_runs(spool: &mut Spool, per_push: usize) -> Vec<Vec<(u64, Vec<u8>)>> {
    let mut pushes = Vec::new();
    loop {
        let run = spool.oldest_run(per_push, usize::MAX).unwrap();
        let Some(&(last, _)) = run.last() else {
            return pushes;
        };
        spool.ack_through(last).unwrap();
        pushes.push(run.into_iter().map(|(id, b)| (id.get(), b)).collect());
    }
}

/// The names in `dead-letter/`, sorted.
fn dead_letter_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir.join(DEAD_LETTER_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Where the record at `index` (from 0) starts in a segment of records of `payload` bytes each.
fn record_offset(index: usize, payload: usize) -> usize {
    SEGMENT_HEADER_LEN + index * (RECORD_HEADER_LEN + payload)
}
