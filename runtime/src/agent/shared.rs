//! What outlives a reload of the agent: the spool, the metrics, one run lock per plugin and each
//! plugin's last start, shared by the main loop, the backend task and every plugin task. Nothing
//! here may block an async worker: the spool (which waits for fsync) is only touched from a
//! blocking thread through [`Shared::with_spool`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::pipeline::spool::{Spool, SpoolStats};
use crate::telemetry::Metrics;

/// State that outlives reloads.
pub struct Shared {
    pub spool: Mutex<Spool>,
    pub metrics: Arc<Metrics>,
    /// One lock per plugin name, so a run of the old generation and one of the new never
    /// overlap.
    pub(super) run_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each plugin last started, so a reload keeps its schedule.
    pub(super) last_started: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    pub(super) fn run_lock(&self, plugin: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.run_locks)
            .entry(plugin.to_owned())
            .or_default()
            .clone()
    }

    /// Updates the spool gauges (and the totals the spool keeps across restarts).
    pub fn publish_spool_stats(&self, stats: SpoolStats) {
        self.metrics
            .set("pganalytics_spool_bytes", stats.pending_bytes as f64);
        self.metrics
            .set("pganalytics_spool_batches", stats.pending_batches as f64);
        self.metrics
            .set_total("pganalytics_batches_dropped_total", stats.dropped_batches);
        self.metrics.set_total(
            "pganalytics_batches_dead_lettered_total",
            stats.dead_lettered_batches,
        );
        self.metrics.set_total(
            "pganalytics_batches_dropped_disk_full_total",
            stats.dropped_for_disk_full,
        );
        self.metrics
            .set_total("pganalytics_spool_lost_batches_total", stats.lost_batches);
        self.metrics.set_total(
            "pganalytics_dead_letters_removed_total",
            stats.dead_letters_removed,
        );
        self.metrics
            .set_total("pganalytics_spool_cursor_losses_total", stats.cursor_losses);
    }

    /// Runs `f` on the spool from a blocking thread (appends and acks wait for fsync).
    pub async fn with_spool<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> T {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut spool = lock(&shared.spool);
            let result = f(&mut spool);
            shared.publish_spool_stats(spool.stats());
            result
        })
        .await
        .expect("a spool operation panicked")
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
