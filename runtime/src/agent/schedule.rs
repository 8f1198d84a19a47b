//! One plugin's life in the daemon: its schedule (interval, jitter, backoff after failures), its
//! `.wasm` file watched for changes, and each run carried from collection into the spool.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::shared::{Shared, lock};
use crate::config::{Config, PluginConfig};
use crate::pipeline::{self, Envelope};
use crate::plugin::{LoadedPlugin, PluginHost};
use crate::telemetry::labels;

/// The first run of a plugin is spread over this much time (or its interval, if shorter), so
/// plugins do not all fire at once.
const MAX_START_JITTER: Duration = Duration::from_secs(10);
/// A plugin that keeps failing waits up to this many intervals between runs.
const MAX_BACKOFF_FACTOR: u32 = 16;

/// Identifies the content of a `.wasm` file cheaply; any change means "load it again".
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        })
    }
}

/// The stamps of a plugin's `.wasm` and, when it requires a signature, of its `.sig`: a file
/// refused for its signature is tried again once the signature is renewed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PluginFiles {
    wasm: Option<FileStamp>,
    signature: Option<FileStamp>,
}

impl PluginFiles {
    fn of(plugin: &PluginConfig) -> Self {
        Self {
            wasm: FileStamp::of(&plugin.wasm),
            signature: if plugin.signed_by.is_empty() {
                None
            } else {
                FileStamp::of(&crate::plugin::signature::signature_path(&plugin.wasm))
            },
        }
    }
}

/// The loaded component and the file it came from.
struct Current {
    plugin: Option<LoadedPlugin>,
    stamp: Option<PluginFiles>,
}

pub(super) async fn plugin_loop(
    plugin: Arc<PluginConfig>,
    config: Arc<Config>,
    host: PluginHost,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let name = plugin.name.clone();
    let mut current = Current {
        plugin: None,
        stamp: None,
    };
    let mut failures = 0u32;
    let last = lock(&shared.last_started).get(&name).copied();
    let mut due = match last {
        // A reload keeps the schedule: next run one (new) interval after the last one.
        Some(last) => last + plugin.interval,
        None => Instant::now() + start_jitter(plugin.interval),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => return,
        }
        let run_lock = shared.run_lock(&name);
        let _running = run_lock.lock().await;
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        lock(&shared.last_started).insert(name.clone(), started);
        match run_once(&plugin, &config, &host, &shared, &mut current).await {
            RunResult::Succeeded => failures = 0,
            RunResult::Failed => failures = failures.saturating_add(1),
            // The host had no room: not the plugin's fault, so its backoff does not grow.
            RunResult::HostBusy => {}
        }
        let factor = if failures == 0 {
            1
        } else {
            (1u32 << failures.min(5)).min(MAX_BACKOFF_FACTOR)
        };
        if factor > 1 {
            tracing::info!(plugin = %name, failures, "backing off: next run in {factor} intervals");
        }
        due = started + plugin.interval * factor;
        // A run longer than its interval starts the next one right away, never two at once.
        due = due.max(Instant::now());
    }
}

fn start_jitter(interval: Duration) -> Duration {
    interval
        .min(MAX_START_JITTER)
        .mul_f64(rand::random::<f64>())
}

/// Loads the plugin when its file (or, for a signed plugin, its `.sig`) is new or changed. A
/// file that fails to load (bad digest or signature, not a component, ungranted import) leaves
/// the running version in place.
async fn refresh(
    plugin: &Arc<PluginConfig>,
    host: &PluginHost,
    shared: &Shared,
    current: &mut Current,
) {
    let stamp = Some(PluginFiles::of(plugin));
    if current.plugin.is_some() && stamp == current.stamp {
        return;
    }
    if current.plugin.is_none()
        && stamp.as_ref().is_some_and(|s| s.wasm.is_some())
        && stamp == current.stamp
    {
        // This exact file already failed to load; it was reported then.
        return;
    }
    let (loader, config) = (host.clone(), plugin.clone());
    let loaded = tokio::task::spawn_blocking(move || loader.load(config))
        .await
        .expect("plugin loading panicked");
    current.stamp = stamp;
    match loaded {
        Ok(loaded) => {
            let swapped = current.plugin.is_some();
            tracing::info!(
                plugin = %plugin.name,
                sha256 = %loaded.sha256_hex(),
                file = %plugin.wasm.display(),
                code = loaded.compiled.describe(),
                "{}", if swapped { "the plugin file changed: new version loaded" } else { "plugin loaded" }
            );
            current.plugin = Some(loaded);
        }
        Err(e) => {
            shared.metrics.inc(
                "pganalytics_plugin_load_failures_total",
                &labels(&[("plugin", &plugin.name)]),
            );
            if current.plugin.is_some() {
                tracing::error!(plugin = %plugin.name, "the new plugin file was refused; the previous version keeps running: {e}");
            } else {
                tracing::error!(plugin = %plugin.name, "{e}");
            }
        }
    }
}

/// How one run ended, for the schedule.
enum RunResult {
    Succeeded,
    Failed,
    HostBusy,
}

/// One run, from the sandbox to the spool.
async fn run_once(
    plugin: &Arc<PluginConfig>,
    config: &Config,
    host: &PluginHost,
    shared: &Arc<Shared>,
    current: &mut Current,
) -> RunResult {
    refresh(plugin, host, shared, current).await;
    let Some(loaded) = &current.plugin else {
        return RunResult::Failed;
    };
    let name = plugin.name.as_str();
    let metrics = &shared.metrics;
    let accepted = match pipeline::collect(host, loaded).await {
        Ok(accepted) => accepted,
        Err(e) => {
            let reason = e.reason();
            metrics.inc(
                "pganalytics_collection_failures_total",
                &labels(&[("plugin", name), ("reason", reason)]),
            );
            if e.is_limit() {
                metrics.inc(
                    "pganalytics_limit_hits_total",
                    &labels(&[("plugin", name), ("limit", reason)]),
                );
            }
            tracing::error!(plugin = name, reason, "{e}");
            if e.is_host_side() {
                return RunResult::HostBusy;
            }
            return RunResult::Failed;
        }
    };
    metrics.add(
        "pganalytics_denied_host_calls_total",
        &labels(&[("plugin", name)]),
        accepted.denied_calls,
    );
    let items = accepted.items.len();
    if items > 0 {
        let envelope = Envelope::new(&config.collector, vec![accepted.items]);
        let batch = match envelope.encode() {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(plugin = name, "cannot encode the batch: {e}");
                return RunResult::Failed;
            }
        };
        let size = batch.len();
        if let Err(e) = shared.with_spool(move |spool| spool.append(&batch)).await {
            metrics
                .health
                .spool_write_failed(format!("plugin `{name}`: {e}"));
            metrics.inc(
                "pganalytics_collection_failures_total",
                &labels(&[("plugin", name), ("reason", "spool")]),
            );
            tracing::error!(
                plugin = name,
                "the batch could not be spooled; its lines and counters will be read again next run: {e}"
            );
            return RunResult::Failed;
        }
        metrics.health.spool_write_succeeded();
        metrics.inc("pganalytics_batches_spooled_total", "");
        tracing::debug!(plugin = name, items, bytes = size, "spooled");
    }
    // Only now that the items are on disk do the plugin's counters and log offsets move on.
    if let Err(e) = accepted.commit.apply(host).await {
        tracing::error!(
            plugin = name,
            "the batch is spooled but the plugin's progress could not be saved (its next run may repeat it): {e}"
        );
    }
    metrics.inc(
        "pganalytics_collections_total",
        &labels(&[("plugin", name)]),
    );
    metrics.observe_run(name, accepted.timing.elapsed);
    tracing::debug!(
        plugin = name,
        items,
        elapsed_us = accepted.timing.elapsed.as_micros() as u64,
        instantiate_us = accepted.timing.instantiate.as_micros() as u64,
        postgres_us = accepted.timing.postgres.as_micros() as u64,
        "collected"
    );
    RunResult::Succeeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_jitter_stays_within_the_interval_and_the_cap() {
        for _ in 0..1000 {
            assert!(start_jitter(Duration::from_secs(2)) < Duration::from_secs(2));
            assert!(start_jitter(Duration::from_secs(600)) < MAX_START_JITTER);
        }
    }

    #[test]
    fn a_rewritten_file_has_a_new_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wasm");
        assert_eq!(FileStamp::of(&path), None);
        std::fs::write(&path, b"one").unwrap();
        let first = FileStamp::of(&path).unwrap();
        // Replaced the way deployments do it: a new file renamed over the old one.
        std::fs::write(dir.path().join("p.new"), b"two").unwrap();
        std::fs::rename(dir.path().join("p.new"), &path).unwrap();
        assert_ne!(FileStamp::of(&path).unwrap(), first);
    }
}
