//! Limits on what one plugin run may consume. Each has a default here, a per-plugin override in
//! TOML, and its own error when hit (see `plugin::RunError`).

use std::time::Duration;

use crate::units::{ByteSize, HumanDuration};

/// Threat: an infinite loop or a host call that never returns would stall the collector.
/// Enforced by epoch interruption (guest code) and a timeout around the whole call (host calls).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Threat: a memory bomb exhausting the host. Linear memory may not grow past this.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// Threat: a huge result filling the buffer and the backend. Checked before parsing.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 20;

/// Threat: one host call (file read, log chunk, query result) copying unbounded data into the
/// guest and the host.
pub const DEFAULT_MAX_HOST_CALL_BYTES: u64 = 4 << 20;

/// Threat: a plugin flooding the host log (and its disk) through `log` or stdout/stderr.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 10;

/// Threat: unbounded recursion. wasmtime traps with a stack overflow past this much wasm stack.
pub const MAX_WASM_STACK_BYTES: usize = 1 << 20;

/// The limits of one plugin, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub timeout: Duration,
    /// Instructions (wasmtime fuel) per run; `None` disables metering for this plugin.
    pub fuel: Option<u64>,
    pub memory_bytes: u64,
    pub max_output_bytes: u64,
    pub max_host_call_bytes: u64,
    pub max_log_bytes: u64,
    pub max_state_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            fuel: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_host_call_bytes: DEFAULT_MAX_HOST_CALL_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_state_bytes: crate::host::state::DEFAULT_MAX_STATE_BYTES,
        }
    }
}

impl Limits {
    pub fn describe_timeout(&self) -> String {
        HumanDuration(self.timeout).to_string()
    }

    pub fn describe_memory(&self) -> String {
        ByteSize(self.memory_bytes).to_string()
    }
}

/// Caps linear memories and tables of one store and remembers whether the cap was hit, so a
/// resulting trap (Rust's allocator aborts when `memory.grow` fails) is reported as a memory
/// limit rather than a generic trap.
pub struct RunLimiter {
    memory_bytes: usize,
    pub memory_limit_hit: bool,
}

impl RunLimiter {
    pub fn new(memory_bytes: u64) -> Self {
        Self {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            memory_limit_hit: false,
        }
    }
}

/// Threat: a table grown to millions of entries costs host memory outside linear memory.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for RunLimiter {
    // Per run, so that a run cannot take pool slots beyond what the pool keeps for it (the
    // pool is sized for every live run at these caps; see `engine`).
    fn instances(&self) -> usize {
        super::structure::MAX_CORE_INSTANCES as usize
    }

    fn memories(&self) -> usize {
        super::structure::MAX_MEMORIES as usize
    }

    fn tables(&self) -> usize {
        super::structure::MAX_TABLES as usize
    }

    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
