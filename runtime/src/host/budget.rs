//! The per-run budget of guest log output, shared by the `log` interface and WASI
//! stdout/stderr, so a plugin cannot flood the host log (or its disk) through either door; what
//! is cut off is counted and reported once at the end of the run. It must never refuse a write
//! (a guest's `println!` that fails would panic): it accepts everything and keeps what fits.
//!
//! The budget counts what is *written* to the host log, not what the guest sent: each line
//! costs its text after escaping and cutting (see `guest_text`) plus [`LINE_OVERHEAD_BYTES`]
//! for the timestamp, level and fields the host adds, so a stream of 2-byte stderr lines or of
//! control characters that escape to four bytes each cannot multiply the limit.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::bindings::pganalytics::collector::log::Level;
use super::guest_text;

/// What the host adds to each guest line it logs (timestamp, level, target, `plugin=` and
/// `stream=` fields), counted against the budget so that many tiny lines cost what they write.
pub const LINE_OVERHEAD_BYTES: usize = 96;

/// Threat: one guest line as long as the whole budget hiding the lines after it; also bounds a
/// single `log` message before it is escaped.
const MAX_LINE_BYTES: usize = 4096;

/// Bytes a plugin may still log in this run, shared by `log`, stdout and stderr.
#[derive(Clone)]
pub struct LogBudget {
    plugin: Arc<str>,
    inner: Arc<Mutex<BudgetState>>,
}

struct BudgetState {
    /// Bytes that may still be written to the host log.
    remaining: usize,
    /// Bytes the guest sent that were not written (cut off or over the budget).
    dropped_bytes: u64,
    /// How much raw stdout/stderr is kept until the end of the run (the budget's size: more
    /// could never be written).
    capture_limit: usize,
    /// Guest stdout and stderr, kept (within the budget) to be logged line by line and to
    /// explain a trap (a Rust panic message arrives on stderr just before the trap).
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LogBudget {
    pub fn new(plugin: Arc<str>, limit: usize) -> Self {
        Self {
            plugin,
            inner: Arc::new(Mutex::new(BudgetState {
                remaining: limit,
                dropped_bytes: 0,
                capture_limit: limit,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Charges one line of guest text (`received` bytes from the guest) to the budget and
    /// returns the line as it may be written (escaped, cut), or `None` when the budget has no
    /// room left for even a cut line.
    fn charge_line(state: &mut BudgetState, text: &str, received: usize) -> Option<String> {
        let room = state
            .remaining
            .checked_sub(LINE_OVERHEAD_BYTES + guest_text::MAX_MARKER_BYTES)?;
        let line = guest_text::cut(text, room.min(MAX_LINE_BYTES));
        let written = line.len() + LINE_OVERHEAD_BYTES;
        state.remaining = state.remaining.saturating_sub(written);
        if line.len() < text.len() {
            // Not exact when escapes grew the line; an estimate of what was left out.
            state.dropped_bytes += received.saturating_sub(line.len()) as u64;
        }
        Some(line)
    }

    pub fn log(&self, level: Level, message: &str) {
        let mut state = self.lock();
        let Some(message) = Self::charge_line(&mut state, message, message.len()) else {
            state.dropped_bytes += message.len() as u64;
            return;
        };
        drop(state);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn write_stream(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        let limit = state.capture_limit;
        let buffer = match stream {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        let kept = bytes.len().min(limit.saturating_sub(buffer.len()));
        buffer.extend_from_slice(&bytes[..kept]);
        state.dropped_bytes += (bytes.len() - kept) as u64;
    }

    /// The tail of what the guest wrote to stderr, escaped, for error messages.
    pub fn stderr_tail(&self, max: usize) -> String {
        let state = self.lock();
        let text = String::from_utf8_lossy(&state.stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(max);
        let start = (start..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        guest_text::cut(&text[start..], max)
    }

    /// Emits captured stdout/stderr into the host log, line by line within what is left of
    /// the budget, and reports what the budget cut off.
    pub fn finish(&self) {
        let mut state = self.lock();
        let stdout = std::mem::take(&mut state.stdout);
        let stderr = std::mem::take(&mut state.stderr);
        for (name, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
            for raw in bytes.split(|&b| b == b'\n') {
                let text = String::from_utf8_lossy(raw);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                match Self::charge_line(&mut state, text, raw.len()) {
                    Some(line) => tracing::info!(plugin = &*self.plugin, stream = name, "{line}"),
                    None => state.dropped_bytes += raw.len() as u64,
                }
            }
        }
        // Kept for `stderr_tail` (a trap is classified after `finish`).
        state.stderr = stderr;
        if state.dropped_bytes > 0 {
            tracing::warn!(
                plugin = &*self.plugin,
                dropped_bytes = state.dropped_bytes,
                "plugin log output exceeded its per-run limit; the rest was dropped"
            );
        }
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped_bytes
    }

    pub fn stdout(&self) -> GuestOutput {
        GuestOutput {
            budget: self.clone(),
            stream: Stream::Stdout,
        }
    }

    pub fn stderr(&self) -> GuestOutput {
        GuestOutput {
            budget: self.clone(),
            stream: Stream::Stderr,
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A WASI stdout/stderr that accepts every write (so a guest's `println!` never fails and
/// panics) but keeps only what the budget allows.
#[derive(Clone)]
pub struct GuestOutput {
    budget: LogBudget,
    stream: Stream,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.budget.write_stream(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_written_bytes_with_line_overhead() {
        let line = LINE_OVERHEAD_BYTES;
        let budget = LogBudget::new("p".into(), 3 * line + 200);
        budget.log(Level::Info, "123456");
        budget.write_stream(Stream::Stderr, b"abcdefgh");
        budget.write_stream(Stream::Stdout, b"more");
        assert_eq!(budget.dropped_bytes(), 0);
        assert_eq!(budget.stderr_tail(100), "abcdefgh");
        assert_eq!(budget.lock().remaining, 2 * line + 194);
        budget.finish();
        // Two more lines written: two overheads plus their text.
        assert_eq!(budget.lock().remaining, 194 - 8 - 4);
    }

    #[test]
    fn tiny_lines_cost_their_overhead_and_stop_at_the_budget() {
        let budget = LogBudget::new("p".into(), 64 << 10);
        // 1 MiB of 2-byte stderr lines: only the first 64 KiB is even kept.
        let lines = b"x\n".repeat(512 << 10);
        budget.write_stream(Stream::Stderr, &lines);
        budget.finish();
        let state = budget.lock();
        let written = (64 << 10) - state.remaining;
        assert!(written <= 64 << 10);
        // Each written line cost 1 byte of text plus the overhead.
        assert_eq!(written % (1 + LINE_OVERHEAD_BYTES), 0);
        let written_lines = written / (1 + LINE_OVERHEAD_BYTES);
        assert!(
            written_lines < (64 << 10) / LINE_OVERHEAD_BYTES,
            "{written_lines}"
        );
        assert!(state.dropped_bytes >= (1 << 20) - (64 << 10));
    }

    #[test]
    fn a_huge_message_is_cut_and_escaped() {
        let budget = LogBudget::new("p".into(), 64 << 10);
        let mut message = "a\nforged line".to_owned();
        message.push_str(&"y".repeat(32 << 20));
        budget.log(Level::Error, &message);
        let state = budget.lock();
        let written = (64 << 10) - state.remaining;
        assert!(written <= MAX_LINE_BYTES + guest_text::MAX_MARKER_BYTES + LINE_OVERHEAD_BYTES);
        assert!(state.dropped_bytes >= (32 << 20) - 2 * MAX_LINE_BYTES as u64);
    }
}
