//! The C allocator's settings, trims and figures: what the agent asks of glibc's `malloc` so an
//! always-on process keeps a steady resident size. Elsewhere than glibc every call is a no-op
//! and [`usage`] reports nothing. A leaf: imports nothing from the crate.

/// Allocations from this size up get their own mapping (see [`tune`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Two glibc defaults cost an always-on agent resident memory (see BENCHMARKS.md, "Where the
/// anonymous memory is"); an operator's own `MALLOC_*` variable or `GLIBC_TUNABLES` wins.
///
/// - Arenas: glibc gives every thread that allocates its own arena (up to 8 per core), each
///   keeping its freed memory. The agent allocates little and from few threads at once, so two
///   arenas are plenty, and they save several MiB of RSS.
/// - The mmap threshold: by default glibc raises it each time a block it had mapped is freed
///   (up to 32 MiB), after which a run's transient buffers (log text, plugin output, request
///   bodies) all come from the arenas, whose holes keep pages resident between trims. Fixed at
///   1 MiB, each larger buffer gets its own mapping and is returned when freed. In pairs of
///   runs side by side, the agent's anonymous memory was 2 to 4 MiB lower with a fixed
///   threshold, and it cost pg_log 10 to 17 % of its throughput (page faults on fresh
///   mappings).
///
/// Call it first thing in `main`, before any other thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let operator_set = |variable: &str, tunable: &str| {
            std::env::var_os(variable).is_some()
                || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(tunable))
        };
        // SAFETY: the caller runs this before any other thread exists.
        unsafe {
            if !operator_set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if !operator_set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// Returns the allocator's free memory to the system: the top of each heap, and the free pages
/// inside it. Takes each arena's lock: call it from a blocking thread.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory malloc has already freed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The C allocator's own account of the heap (glibc's `mallinfo2`), which tells memory the
/// agent holds from memory the allocator keeps after it was freed (resident until a [`trim`]
/// hands its pages back).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Allocated and not yet freed, including allocations large enough to get their own mapping.
    pub in_use_bytes: f64,
    /// Freed and kept by the allocator in its arenas for later allocations.
    pub free_bytes: f64,
}

/// Whether [`usage`] reports anything with this C library.
pub const REPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// The heap as glibc reports it; `None` elsewhere. `mallinfo2` walks every arena's free lists
/// under their locks.
pub fn usage() -> Option<Usage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
        let info = unsafe { libc::mallinfo2() };
        Some(Usage {
            in_use_bytes: (info.uordblks + info.hblkhd) as f64,
            free_bytes: info.fordblks as f64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn usage_counts_an_allocation_while_it_is_held() {
        // Zeroed and far above any mmap threshold glibc uses (at most 32 MiB): its own mapping,
        // never touched, so it costs address space only. No other test holds this much.
        const HELD: usize = 256 << 20;
        let held = vec![0u8; HELD];
        let during = usage().unwrap();
        assert!(during.in_use_bytes >= HELD as f64, "{during:?}");
        drop(std::hint::black_box(held));
        let after = usage().unwrap();
        assert!(after.in_use_bytes < HELD as f64, "{after:?}");
    }
}
