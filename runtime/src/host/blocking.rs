//! The blocking lane: where capabilities run the syscalls that can block (open, read, readdir,
//! stat, statvfs), so that no host call can hold an async worker or outlive its plugin's
//! deadline.
//!
//! A call runs on tokio's blocking pool and the host call awaits it until the run's deadline
//! (plus a short grace, so the runner's own deadline fires first and the run fails as a
//! deadline failure of that plugin, never as a guest error). A thread still stuck in the kernel
//! at that point (a FIFO, a dead NFS mount, a `/proc` file that waits for data) is abandoned,
//! not killed: it stays counted in its plugin's lane until the syscall returns, and while it is
//! stuck every blocking call of that plugin through the same capability is refused at once
//! with `unavailable`, so a plugin holds at most [`MAX_STUCK_CALLS_PER_PLUGIN`] threads per
//! capability, and other plugins are never affected.
//!
//! This module must never run a closure on an async worker, nor wait without a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bindings::Error;

/// Threat: a plugin that keeps hitting a blocking file would pin one thread of the blocking pool
/// per call; past this many threads stuck in one capability, its calls are refused until one
/// returns.
pub const MAX_STUCK_CALLS_PER_PLUGIN: usize = 1;

/// How long after the deadline a host call gives up on its own: the runner's deadline (same
/// instant) is meant to fire first, so this only matters outside a plugin run (tests, benches).
const GRACE_AFTER_DEADLINE: Duration = Duration::from_millis(100);

/// The lanes of every plugin for one capability (part of its shared resources).
#[derive(Clone, Default)]
pub struct BlockingLanes {
    lanes: Arc<Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>>,
}

impl BlockingLanes {
    /// The lane of `plugin` for one run that ends at `deadline`.
    pub fn lane(
        &self,
        capability: &'static str,
        plugin: &Arc<str>,
        deadline: Instant,
    ) -> BlockingLane {
        let stuck = self
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plugin.clone())
            .or_default()
            .clone();
        BlockingLane {
            capability,
            plugin: plugin.clone(),
            stuck,
            deadline,
        }
    }
}

/// One plugin's lane for one capability in one run.
#[derive(Clone)]
pub struct BlockingLane {
    capability: &'static str,
    plugin: Arc<str>,
    /// Calls of this plugin through this capability that have not returned yet, counting those
    /// whose host call was abandoned at a deadline.
    stuck: Arc<AtomicUsize>,
    deadline: Instant,
}

/// Decrements the lane's count when the blocking closure returns (or panics), whether or not
/// anybody still waits for it.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BlockingLane {
    /// A lane with its own count, for tests and tools that run one capability alone.
    pub fn standalone(capability: &'static str, plugin: &str, deadline: Instant) -> Self {
        Self {
            capability,
            plugin: plugin.into(),
            stuck: Arc::default(),
            deadline,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Calls that have not returned yet (tests and diagnostics).
    pub fn in_flight(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// Runs `work` on the blocking pool and waits for it until the deadline. `what` names the
    /// resource for the guest (`procfs `kmsg``); it must not contain host paths the guest was
    /// not given.
    pub async fn run<T, F>(&self, what: &str, work: F) -> Result<T, Error>
    where
        F: FnOnce() -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        // Reserve a slot first, so two calls cannot both pass the check.
        let before = self.stuck.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.stuck.clone());
        if before >= MAX_STUCK_CALLS_PER_PLUGIN {
            drop(guard);
            tracing::warn!(
                plugin = &*self.plugin,
                capability = self.capability,
                "refusing a host call: an earlier call of this plugin is still blocked in the kernel"
            );
            return Err(Error::Unavailable(format!(
                "{what}: an earlier {} call of plugin `{}` is still blocked in the kernel; \
                 calls are refused until it returns",
                self.capability, self.plugin
            )));
        }
        let handle = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            work()
        });
        let give_up = tokio::time::Instant::from_std(self.deadline + GRACE_AFTER_DEADLINE);
        match tokio::time::timeout_at(give_up, handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Io(format!("{what}: the host worker failed: {join}"))),
            Err(_elapsed) => {
                tracing::warn!(
                    plugin = &*self.plugin,
                    capability = self.capability,
                    "a host call was still blocked at the plugin's deadline; its thread is abandoned until the call returns"
                );
                Err(Error::Timeout(format!(
                    "{what}: still blocked at the deadline of plugin `{}`",
                    self.plugin
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_syscall_ends_at_the_deadline_and_blocks_its_plugin_until_it_returns() {
        // A real kernel wait: a blocking open of a FIFO that has no writer yet.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let lanes = BlockingLanes::default();
        let plugin: Arc<str> = "stuck".into();
        let other: Arc<str> = "other".into();
        let deadline = Instant::now() + Duration::from_millis(50);
        let lane = lanes.lane("log-tail", &plugin, deadline);
        let reader = fifo.clone();
        let stuck = lane
            .run("log-tail", move || {
                std::fs::read(&reader).map_err(|e| Error::Io(e.to_string()))
            })
            .await;
        assert!(matches!(stuck, Err(Error::Timeout(m)) if m.contains("`stuck`")));
        assert_eq!(lane.in_flight(), 1);
        // The next run of the same plugin is refused at once, with a named error.
        let next = lanes.lane(
            "log-tail",
            &plugin,
            Instant::now() + Duration::from_secs(60),
        );
        let refused = next.run("log-tail", || Ok(Vec::<u8>::new())).await;
        assert!(
            matches!(&refused, Err(Error::Unavailable(m)) if m.contains("still blocked") && m.contains("`stuck`")),
            "{refused:?}"
        );
        // Another plugin is not affected.
        let fine = lanes.lane("log-tail", &other, Instant::now() + Duration::from_secs(60));
        assert_eq!(fine.run("x", || Ok(7)).await.unwrap(), 7);
        // Once the stuck syscall returns (a writer comes and goes), the plugin may call again.
        std::fs::write(&fifo, b"x").unwrap();
        while next.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(next.run("x", || Ok(1)).await.unwrap(), 1);
    }
}
