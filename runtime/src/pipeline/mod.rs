//! The one path from a plugin run to the backend: run → validate → envelope → spool → commit the
//! plugin's state and log offsets → send. Nothing of a run that fails any step reaches the
//! envelope, and its state is not saved, so the next run starts from the last accepted counters
//! and re-reads the same log lines.
//!
//! - [`collect`] runs and validates one plugin;
//! - [`spool`] keeps batches on disk until the backend has them;
//! - [`sender`] pushes them ([`auth`] and [`transport`] underneath);
//! - `crate::agent` schedules all of it.

pub mod auth;
mod contract;
pub mod encoding;
pub mod items;
mod scan;
pub mod sender;
pub mod spool;
pub mod transport;
pub mod validate;

use std::sync::Arc;

use serde::Serialize;

use crate::config::{CollectorConfig, Config};
use crate::host::Pending;
use crate::plugin::{LoadError, LoadedPlugin, PluginHost, RunError, RunTiming};
pub use items::Items;

/// The body pushed to the backend (`POST /api/v1/metrics/push`).
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub collector_id: String,
    pub hostname: String,
    pub timestamp: String,
    pub version: String,
    pub metrics_count: usize,
    /// The accepted items of one or more runs, written verbatim as one JSON array.
    #[serde(serialize_with = "items::serialize_items_flat")]
    pub metrics: Vec<Items>,
}

impl Envelope {
    pub fn new(collector: &CollectorConfig, metrics: Vec<Items>) -> Self {
        Self {
            collector_id: collector.id.clone(),
            hostname: collector.hostname.clone(),
            timestamp: now_rfc3339(),
            version: crate::VERSION.to_owned(),
            metrics_count: metrics.iter().map(Items::len).sum(),
            metrics,
        }
    }

    /// Every accepted item parsed into a JSON value, in order, server stamp included: for
    /// callers that inspect items (tests, `run --once` output checks). The send path never
    /// builds these trees.
    pub fn items(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for run in &self.metrics {
            let array: Vec<serde_json::Value> = serde_json::to_string(run)
                .and_then(|json| serde_json::from_str(&json))
                .expect("items were validated as JSON");
            out.extend(array);
        }
        out
    }

    /// The envelope as JSON, in a buffer sized for it up front (a growing `Vec` would hold up
    /// to twice the batch while it doubles).
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let items: usize = self.metrics.iter().map(Items::serialized_len).sum();
        let mut batch = Vec::with_capacity(items + 512);
        serde_json::to_writer(&mut batch, self)?;
        Ok(batch)
    }
}

/// The current time as RFC 3339 UTC with milliseconds, as the backend expects.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs one plugin and returns its accepted items. Its state blob and log offsets are not saved
/// yet: the caller applies [`Accepted::commit`] once the items are safe (spooled, or printed by
/// `collect --once`), so a run whose items are lost is read again.
pub async fn collect(host: &PluginHost, plugin: &LoadedPlugin) -> Result<Accepted, RunError> {
    let output = host.run(plugin).await?;
    // The host, not the guest, says which server the items come from.
    let server = plugin.config.grants.postgres.as_deref().map(|g| g.server());
    let items =
        validate::validate_output(output.json, &plugin.config.emits, server).map_err(|reason| {
            RunError::InvalidOutput {
                plugin: plugin.name().to_owned(),
                reason,
            }
        })?;
    Ok(Accepted {
        items,
        timing: output.timing,
        denied_calls: output.denied_calls,
        commit: Commit {
            plugin: plugin.name().to_owned(),
            pending: output.pending,
        },
    })
}

/// A run whose output was accepted.
#[derive(Debug)]
pub struct Accepted {
    pub items: Items,
    pub timing: RunTiming,
    pub denied_calls: u64,
    pub commit: Commit,
}

/// What an accepted run leaves to save once its items are safe: the plugin's state blob and its
/// log-tail offsets (whatever its capabilities keep, see `host::Pending`).
#[derive(Debug, Default)]
pub struct Commit {
    plugin: String,
    pending: Pending,
}

impl Commit {
    /// Saves what the run left (each file replaced atomically), on a blocking thread: the
    /// writes wait for fsync, which must not hold up an async worker and the runs on it.
    pub async fn apply(self, host: &PluginHost) -> Result<(), RunError> {
        let host = host.clone();
        let plugin = self.plugin.clone();
        let saved = tokio::task::spawn_blocking(move || host.commit(&self.plugin, self.pending))
            .await
            .unwrap_or_else(|e| {
                Err(std::io::Error::other(format!(
                    "the saving thread failed: {e}"
                )))
            });
        saved.map_err(|e| RunError::State {
            plugin,
            message: e.to_string(),
        })
    }
}

/// What became of one plugin in a collection.
#[derive(Debug)]
pub enum Outcome {
    Accepted(Accepted),
    LoadFailed(LoadError),
    RunFailed(RunError),
}

/// The result of `collect --once`: the envelope of everything accepted, and every plugin's fate.
pub struct Collection {
    pub envelope: Envelope,
    pub outcomes: Vec<(String, Outcome)>,
}

impl Collection {
    pub fn failures(&self) -> impl Iterator<Item = (&str, String)> {
        self.outcomes
            .iter()
            .filter_map(|(name, outcome)| match outcome {
                Outcome::Accepted(_) => None,
                Outcome::LoadFailed(e) => Some((name.as_str(), e.to_string())),
                Outcome::RunFailed(e) => Some((name.as_str(), e.to_string())),
            })
    }
}

/// Loads and runs each enabled plugin (or those named in `only`) once, concurrently, and builds
/// one envelope from what was accepted. A plugin that fails to load or run is reported in the
/// outcomes and costs the others nothing.
pub async fn collect_once(config: &Config, host: &PluginHost, only: &[String]) -> Collection {
    let selected: Vec<_> = config
        .plugins
        .values()
        .filter(|p| {
            if only.is_empty() {
                p.enabled
            } else {
                only.contains(&p.name)
            }
        })
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    for plugin in selected {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let name = plugin.name.clone();
            // Compiling takes tens of milliseconds of CPU: keep it off the async workers.
            let loader = host.clone();
            let loaded = tokio::task::spawn_blocking(move || loader.load(Arc::new(plugin))).await;
            let outcome = match loaded.expect("plugin loading panicked") {
                Err(e) => Outcome::LoadFailed(e),
                Ok(loaded) => match collect(&host, &loaded).await {
                    Ok(accepted) => Outcome::Accepted(accepted),
                    Err(e) => Outcome::RunFailed(e),
                },
            };
            (name, outcome)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(done) => outcomes.push(done),
            Err(e) => tracing::error!("a plugin task failed: {e}"),
        }
    }
    let mut metrics = Vec::new();
    for (name, outcome) in &mut outcomes {
        if let Outcome::Accepted(accepted) = outcome {
            // Logged here: the items move into the envelope below.
            tracing::info!(
                plugin = name.as_str(),
                items = accepted.items.len(),
                elapsed_us = accepted.timing.elapsed.as_micros() as u64,
                instantiate_us = accepted.timing.instantiate.as_micros() as u64,
                postgres_us = accepted.timing.postgres.as_micros() as u64,
                denied_calls = accepted.denied_calls,
                "collected"
            );
            // The envelope goes straight to the caller: the items are as safe as they get here.
            let commit = std::mem::take(&mut accepted.commit);
            match commit.apply(host).await {
                Ok(()) => metrics.push(std::mem::replace(&mut accepted.items, Items::empty())),
                Err(e) => *outcome = Outcome::RunFailed(e),
            }
        }
    }
    Collection {
        envelope: Envelope::new(&config.collector, metrics),
        outcomes,
    }
}
