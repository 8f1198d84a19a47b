//! The wasmtime engines plugins are compiled for, and the clock that drives their deadlines.
//!
//! Two engines exist because fuel metering is an engine-wide compile option that slows every
//! instruction: plugins without a `fuel` limit use the unmetered engine and pay nothing for it.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::MAX_WASM_STACK_BYTES;
use super::structure::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES};

/// How often the epoch advances. A guest yields to the async runtime (and its deadline is
/// checked) once per tick, so this is also the deadline's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugin instances that may be alive at once per engine. The agent never runs one plugin twice
/// at a time, so this is the number of plugins that can be mid-run together; one more run fails
/// to instantiate until one ends, and is reported as `RunError::HostBusy`, not charged to it.
/// The pool holds this many runs *at their caps* (see `structure`): each run's store is
/// limited to those caps, so no plugin can take another's slots.
pub const MAX_LIVE_INSTANCES: u32 = 64;

/// Written pages of a linear memory zeroed in place and kept mapped when a run ends (beyond
/// this, they are returned to the kernel). Bounds the memory a pool slot keeps resident between
/// runs: what a small collector (sysstat, disk) writes in a run fits, a pg_log run's megabytes
/// of log text do not and are released as before.
pub const KEEP_RESIDENT_MEMORY_BYTES: usize = 1 << 20;

/// The same for tables (a few KiB for any collector).
pub const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Frames kept in a trap's backtrace.
pub const BACKTRACE_FRAMES: usize = 64;

/// The engines of one runtime. Cheap to clone.
#[derive(Clone)]
pub struct Engines {
    inner: Arc<EnginesInner>,
}

struct EnginesInner {
    plain: Engine,
    metered: OnceLock<Engine>,
}

impl Engines {
    pub fn new() -> wasmtime::Result<Self> {
        let inner = Arc::new(EnginesInner {
            plain: Engine::new(&engine_config(false))?,
            metered: OnceLock::new(),
        });
        start_epoch_ticker(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The engine for a plugin with (`metered`) or without a fuel limit.
    pub fn get(&self, metered: bool) -> wasmtime::Result<Engine> {
        if !metered {
            return Ok(self.inner.plain.clone());
        }
        if let Some(engine) = self.inner.metered.get() {
            return Ok(engine.clone());
        }
        let engine = Engine::new(&engine_config(true))?;
        Ok(self.inner.metered.get_or_init(|| engine).clone())
    }
}

fn engine_config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.max_wasm_stack(MAX_WASM_STACK_BYTES);
    // Enough frames to recognise runaway recursion in a trap (see `plugin::classify_trap`).
    config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(BACKTRACE_FRAMES));
    // The fiber stack hosts the wasm stack plus host frames of async host calls.
    config.async_stack_size(MAX_WASM_STACK_BYTES + (1 << 20));
    // A fresh instance per run is the isolation model; the pooling allocator makes it cheap by
    // reusing pre-reserved slots for memories, tables and fiber stacks instead of mapping new
    // ones on every run (see BENCHMARKS.md). Memory sizes are still capped per plugin by the
    // store's limiter; the pool only bounds what any instance could reach (4 GiB, all of wasm32).
    let mut pool = PoolingAllocationConfig::new();
    let per_run = |cap: u64| MAX_LIVE_INSTANCES * u32::try_from(cap).unwrap_or(u32::MAX);
    pool.total_component_instances(MAX_LIVE_INSTANCES)
        .total_core_instances(per_run(MAX_CORE_INSTANCES))
        .total_memories(per_run(MAX_MEMORIES))
        .total_tables(per_run(MAX_TABLES))
        .total_stacks(MAX_LIVE_INSTANCES)
        .max_memories_per_module(1)
        .max_memory_size(4 << 30)
        // When a run ends, its memory and tables go back to their slot. By default every page
        // the run wrote is handed back to the kernel (`madvise`), and the next run of the
        // plugin faults each one in again. With PAGEMAP_SCAN (Linux 6.7+; older kernels keep
        // the default) the pool finds the pages the run wrote and zeroes up to this much of
        // them in place, so a small collector's working set stays mapped from one run to the
        // next. The guest sees the same fresh memory either way.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the epoch of every engine until the runtime is dropped.
fn start_epoch_ticker(engines: Weak<EnginesInner>) {
    std::thread::Builder::new()
        .name("pganalytics-epoch".into())
        .spawn(move || {
            while let Some(engines) = engines.upgrade() {
                engines.plain.increment_epoch();
                if let Some(metered) = engines.metered.get() {
                    metered.increment_epoch();
                }
                drop(engines);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
