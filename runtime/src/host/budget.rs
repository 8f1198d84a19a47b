//! The per-run budget of guest log output, shared by the `log` interface and WASI
//! stdout/stderr, so a plugin cannot flood the host log (or its disk) through either door; what
//! is cut off is counted and reported once at the end of the run. It must never refuse a write
//! (a guest's `println!` that fails would panic): it accepts everything and keeps what fits.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::bindings::pganalytics::collector::log::Level;

/// Bytes a plugin may still log in this run, shared by `log`, stdout and stderr.
#[derive(Clone)]
pub struct LogBudget {
    plugin: Arc<str>,
    inner: Arc<Mutex<BudgetState>>,
}

struct BudgetState {
    remaining: usize,
    dropped_bytes: u64,
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

    /// Takes up to `len` bytes from the budget; returns how many may be kept.
    fn take(&self, state: &mut BudgetState, len: usize) -> usize {
        let kept = len.min(state.remaining);
        state.remaining -= kept;
        state.dropped_bytes += (len - kept) as u64;
        kept
    }

    pub fn log(&self, level: Level, message: &str) {
        let mut state = self.lock();
        let kept = self.take(&mut state, message.len());
        drop(state);
        if kept == 0 {
            return;
        }
        let message = truncate_at_char(message, kept);
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
        let kept = self.take(&mut state, bytes.len());
        let buffer = match stream {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        buffer.extend_from_slice(&bytes[..kept]);
    }

    /// The tail of what the guest wrote to stderr, for error messages.
    pub fn stderr_tail(&self, max: usize) -> String {
        let state = self.lock();
        let text = String::from_utf8_lossy(&state.stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(max);
        let start = (start..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_owned()
    }

    /// Emits captured stdout/stderr into the host log and reports what the cap cut off.
    pub fn finish(&self) {
        let state = self.lock();
        for (name, bytes) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            for line in String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::info!(plugin = &*self.plugin, stream = name, "{line}");
            }
        }
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

fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
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
    fn budget_is_shared_and_counts_what_it_drops() {
        let budget = LogBudget::new("p".into(), 10);
        budget.log(Level::Info, "123456");
        budget.write_stream(Stream::Stderr, b"abcdefgh");
        assert_eq!(budget.dropped_bytes(), 4);
        assert_eq!(budget.stderr_tail(100), "abcd");
        budget.write_stream(Stream::Stdout, b"more");
        assert_eq!(budget.dropped_bytes(), 8);
    }

    #[test]
    fn truncation_respects_utf8() {
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("abc", 5), "abc");
    }
}
