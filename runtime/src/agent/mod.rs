//! `pganalytics run`: the daemon, and the one place that links collection, the spool, the
//! sender, config reloads and self-monitoring.
//!
//! ```text
//!  plugin tasks (one per enabled plugin, own interval + jitter, one run at a time)
//!     │ run → validate → envelope → spool.append (fsync) → commit state and log offsets
//!     ▼
//!  spool (on disk) ──► backend task: push oldest-first on push_interval, ack on 2xx,
//!                      dead-letter on 400, back off on 429/5xx/network; pull config
//!  main loop: SIGTERM/SIGINT → stop; SIGHUP → re-read the file; pulled config → reload
//! ```
//!
//! A reload builds a new generation (config + plugin host) and replaces the plugin tasks; the
//! spool, the backend task and each plugin's schedule carry over, so nothing buffered is lost and
//! no plugin runs twice at once.

pub mod check;
mod remote;
mod schedule;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, Config, ConfigError};
use crate::pipeline::sender::{self, Delivery, Sender, SenderError};
use crate::pipeline::spool::{BatchId, Spool, SpoolError, SpoolOptions};
use crate::plugin::PluginHost;
use crate::telemetry::{Metrics, labels};
use remote::{PulledConfig, RemoteError};
use shared::{Shared, lock};

/// How long shutdown waits for an in-flight push to finish before abandoning it (the batch
/// stays spooled and is sent again).
const PUSH_GRACE: Duration = Duration::from_secs(5);
/// How often freed heap memory is handed back to the system. glibc keeps what the agent's
/// threads freed (output buffers, rows, JSON) in its arenas for reuse, holes included; in a
/// steady run with the four collectors that was about 10 MiB of the 28 MiB of anonymous memory
/// (`malloc_stats`: 12 MiB in use of 37 MiB held). A trim costs well under a millisecond.
const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Why the agent could not start, stopped, or refused a new config.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot handle {signal}: {error}")]
    Signal {
        signal: &'static str,
        error: std::io::Error,
    },
    #[error(
        "{}: `collector.state_dir` is required by `run` (the spool, plugin state and log offsets live there)",
        config.display()
    )]
    NoStateDir { config: PathBuf },
    #[error("reading {}: {error}", path.display())]
    ReadConfig {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Config(ConfigError),
    #[error("{}: `collector.state_dir` cannot change without a restart", path.display())]
    StateDirChanged { path: PathBuf },
    #[error("opening the spool: {0}")]
    Spool(SpoolError),
    #[error("opening the spool: {0}")]
    SpoolTask(tokio::task::JoinError),
    #[error("{0}")]
    Sender(SenderError),
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    #[error("backend config version {version} rejected, keeping the running config: {error}")]
    PulledRejected { version: u64, error: RemoteError },
    #[error("the backend task stopped unexpectedly: {0}")]
    BackendStopped(String),
}

/// The running config and the plugin tasks built from it.
struct Generation {
    config: Arc<Config>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Generation {
    fn start(config: Arc<Config>, shared: &Arc<Shared>) -> Result<Self, AgentError> {
        let host = PluginHost::new(&config.host_setup())
            .map_err(|e| AgentError::Engine(format!("{e:#}")))?;
        let (stop, stopped) = watch::channel(false);
        let tasks = config
            .plugins
            .values()
            .filter(|p| p.enabled)
            .map(|plugin| {
                tokio::spawn(schedule::plugin_loop(
                    Arc::new(plugin.clone()),
                    config.clone(),
                    host.clone(),
                    shared.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        let enabled: Vec<&str> = config
            .plugins
            .values()
            .filter(|p| p.enabled)
            .map(|p| p.name.as_str())
            .collect();
        tracing::info!(plugins = ?enabled, "collecting");
        Ok(Self {
            config,
            stop,
            tasks,
        })
    }

    /// Lets in-flight runs finish (each is bounded by its plugin's deadline), then abandons
    /// whatever is left.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let grace = self
            .config
            .plugins
            .values()
            .map(|p| p.limits.timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// The config as the operator wrote it, and what the backend last sent.
struct Sources {
    path: PathBuf,
    local_text: String,
    pulled: Option<PulledConfig>,
}

impl Sources {
    /// The config to run: the pulled one when there is one and it passes, else the local file.
    fn effective(&self, local: Config) -> Config {
        let Some(pulled) = &self.pulled else {
            return local;
        };
        match pulled.validate(&self.local_text, &local) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    version = pulled.version,
                    "the saved backend config no longer fits the local file, running the local file: {e}"
                );
                local
            }
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config_path: &Path, local: Config) -> Result<(), AgentError> {
    // First, so a SIGTERM during startup is a clean stop rather than the default kill.
    let handler = |name: &'static str, kind: SignalKind| {
        signal(kind).map_err(|error| AgentError::Signal {
            signal: name,
            error,
        })
    };
    let mut sigterm = handler("SIGTERM", SignalKind::terminate())?;
    let mut sigint = handler("SIGINT", SignalKind::interrupt())?;
    let mut sighup = handler("SIGHUP", SignalKind::hangup())?;
    let state_dir = local
        .collector
        .state_dir
        .clone()
        .ok_or_else(|| AgentError::NoStateDir {
            config: config_path.to_owned(),
        })?;
    let local_text =
        std::fs::read_to_string(config_path).map_err(|error| AgentError::ReadConfig {
            path: config_path.to_owned(),
            error,
        })?;
    let mut sources = Sources {
        path: config_path.to_owned(),
        local_text,
        pulled: PulledConfig::load(&state_dir),
    };
    let config = Arc::new(sources.effective(local));

    let metrics = Arc::new(Metrics::default());
    let spool_dir = state_dir.join("spool");
    let options = spool_options(&config.buffer);
    let (spool, recovery) =
        tokio::task::spawn_blocking(move || Spool::open_with(&spool_dir, options))
            .await
            .map_err(AgentError::SpoolTask)?
            .map_err(AgentError::Spool)?;
    tracing::info!(
        pending = recovery.pending_batches,
        clean = recovery.is_clean(),
        "spool opened"
    );
    let shared = Arc::new(Shared {
        spool: Mutex::new(spool),
        metrics: metrics.clone(),
        run_locks: Mutex::default(),
        last_started: Mutex::default(),
    });
    shared.publish_spool_stats(lock(&shared.spool).stats());

    configure_health(&metrics, &config);
    let public = config.collector.listen_public;
    if let (Some(addr), true) = (config.collector.listen, public) {
        tracing::warn!(%addr, "`collector.listen_public = true`: /metrics and /healthz are served beyond this host");
    }
    let _listener = config.collector.listen.map(|addr| {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::serve(addr, public, metrics).await {
                tracing::error!("health listener on {addr}: {e}");
            }
        })
    });

    let _trimmer = tokio::spawn(async {
        let mut every = tokio::time::interval(HEAP_TRIM_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // It takes each arena's lock and madvises free pages: off the async workers.
            let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
        }
    });

    let sender = Sender::new(&config, metrics.clone()).map_err(AgentError::Sender)?;
    let (config_tx, config_rx) = watch::channel(config.clone());
    let (pulled_tx, mut pulled_rx) = mpsc::channel::<PulledConfig>(4);
    let (stop_backend, backend_stopped) = watch::channel(false);
    let applied_version = sources.pulled.as_ref().map_or(0, |p| p.version);
    let mut backend = tokio::spawn(backend_loop(
        sender,
        shared.clone(),
        config_rx,
        pulled_tx,
        applied_version,
        backend_stopped,
    ));

    let mut generation = Generation::start(config, &shared)?;
    tracing::info!(version = crate::VERSION, "agent running");
    loop {
        let next = tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                tracing::info!(file = %sources.path.display(), "SIGHUP: re-reading the config file");
                match reread_local(&mut sources) {
                    Ok(local) => Ok((sources.effective(local), "sighup")),
                    Err(e) => Err((e, "sighup")),
                }
            }
            Some(pulled) = pulled_rx.recv() => {
                let version = pulled.version;
                let current_local = config::parse(&sources.local_text, &sources.path)
                    .map_err(RemoteError::Config);
                match current_local.and_then(|local| pulled.validate(&sources.local_text, &local)) {
                    Ok(config) => {
                        if let Err(e) = pulled.save(&state_dir) {
                            tracing::warn!("cannot save backend config version {version}: {e}");
                        }
                        tracing::info!(version, "applying the config pulled from the backend");
                        sources.pulled = Some(pulled);
                        Ok((config, "backend"))
                    }
                    Err(error) => Err((AgentError::PulledRejected { version, error }, "backend")),
                }
            }
            result = &mut backend => {
                return Err(AgentError::BackendStopped(format!("{result:?}")));
            }
        };
        match next {
            Ok((config, source)) => {
                let config = Arc::new(config);
                generation.stop().await;
                generation = Generation::start(config.clone(), &shared)?;
                configure_health(&metrics, &config);
                let _ = config_tx.send(config);
                metrics.inc(
                    "pganalytics_config_reloads_total",
                    &labels(&[("source", source), ("result", "applied")]),
                );
            }
            Err((e, source)) => {
                tracing::error!("{e}");
                metrics.inc(
                    "pganalytics_config_reloads_total",
                    &labels(&[("source", source), ("result", "rejected")]),
                );
            }
        }
    }

    tracing::info!("stopping: letting in-flight collections finish");
    generation.stop().await;
    let _ = stop_backend.send(true);
    if tokio::time::timeout(PUSH_GRACE, &mut backend)
        .await
        .is_err()
    {
        backend.abort();
    }
    let stats = lock(&shared.spool).stats();
    tracing::info!(
        pending_batches = stats.pending_batches,
        "stopped; pending batches stay in the spool"
    );
    Ok(())
}

/// What `/healthz` watches, from the running config.
fn configure_health(metrics: &Metrics, config: &Config) {
    metrics.health.configure(
        config.backend.as_ref().map(|b| b.push_interval),
        config.collector.unhealthy_after_push_intervals,
    );
}

/// The spool's bounds from `[buffer]`, its own defaults where unset.
fn spool_options(buffer: &config::BufferConfig) -> SpoolOptions {
    let defaults = SpoolOptions::new(buffer.max_bytes);
    SpoolOptions {
        dead_letter_max_bytes: buffer
            .dead_letter_max_bytes
            .unwrap_or(defaults.dead_letter_max_bytes),
        dead_letter_max_age: buffer
            .dead_letter_max_age
            .unwrap_or(defaults.dead_letter_max_age),
        ..defaults
    }
}

fn reread_local(sources: &mut Sources) -> Result<Config, AgentError> {
    let text = std::fs::read_to_string(&sources.path).map_err(|error| AgentError::ReadConfig {
        path: sources.path.clone(),
        error,
    })?;
    let config = config::parse(&text, &sources.path).map_err(AgentError::Config)?;
    if config.collector.state_dir != config_state_dir(&sources.path, &sources.local_text) {
        return Err(AgentError::StateDirChanged {
            path: sources.path.clone(),
        });
    }
    sources.local_text = text;
    Ok(config)
}

fn config_state_dir(path: &Path, text: &str) -> Option<PathBuf> {
    config::parse(text, path)
        .ok()
        .and_then(|c| c.collector.state_dir)
}

/// Pushes spooled batches oldest-first and pulls the backend's config, sharing one identity
/// (so a token is never refreshed or registered twice at once).
async fn backend_loop(
    mut sender: Sender,
    shared: Arc<Shared>,
    mut config: watch::Receiver<Arc<Config>>,
    pulled: mpsc::Sender<PulledConfig>,
    mut seen_version: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut next_push = tokio::time::Instant::now();
    let mut next_pull = tokio::time::Instant::now();
    // The config `sender` was built from.
    let mut built_for = config.borrow().clone();
    loop {
        let current = config.borrow_and_update().clone();
        let Some(backend) = current.backend.clone() else {
            return;
        };
        if !Arc::ptr_eq(&current, &built_for) {
            // A reload may have changed the backend or TLS settings: rebuild the client. This
            // is checked here, not only when `changed()` fires below: a reload that lands while
            // a push is under way is marked seen by `borrow_and_update` above, and the old
            // client (say, with the wrong CA) would otherwise be kept until the next reload.
            match Sender::new(&current, shared.metrics.clone()) {
                Ok(new) => sender = new,
                Err(e) => tracing::error!("keeping the previous backend client: {e}"),
            }
            built_for = current.clone();
            next_push = next_push.min(tokio::time::Instant::now() + backend.push_interval);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_push) => {
                match drain(&mut sender, &shared).await {
                    Ok(()) => {
                        shared.metrics.health.push_succeeded();
                        failures = 0;
                        next_push = tokio::time::Instant::now() + backend.push_interval;
                    }
                    Err(after) => {
                        failures += 1;
                        let wait = sender::backoff(failures, after);
                        tracing::info!(retry_in_ms = wait.as_millis() as u64, failures, "delivery paused");
                        next_push = tokio::time::Instant::now() + wait;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_pull) => {
                next_pull = tokio::time::Instant::now() + backend.config_pull_interval;
                match remote::pull(&mut sender, &backend.url, seen_version).await {
                    Ok(Some(config)) => {
                        seen_version = config.version;
                        let _ = pulled.send(config).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("config pull: {e}"),
                }
            }
            // A reload: the top of the loop rebuilds the client.
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Sends pending batches oldest-first until the spool is empty (`Ok`) or the backend must be
/// left alone for a while (`Err(retry_after)`). The batches waiting are sent several per push
/// (up to [`sender::MAX_BATCHES_PER_PUSH`] and [`sender::MAX_PUSH_BYTES`]) and acked together;
/// when the backend rejects such a push, its batches are sent again one by one, so only a batch
/// the backend refuses on its own is set aside.
async fn drain(sender: &mut Sender, shared: &Arc<Shared>) -> Result<(), Option<Duration>> {
    loop {
        let run = shared
            .with_spool(|spool| {
                spool.oldest_run(sender::MAX_BATCHES_PER_PUSH, sender::MAX_PUSH_BYTES)
            })
            .await;
        let run: Vec<(BatchId, Vec<u8>)> = match run {
            Ok(run) if run.is_empty() => return Ok(()),
            Ok(run) => run,
            Err(e) => {
                tracing::error!("cannot read the spool: {e}");
                return Err(None);
            }
        };
        let bodies: Vec<&[u8]> = run.iter().map(|(_, batch)| batch.as_slice()).collect();
        let delivery = sender.push(&bodies).await;
        match delivery {
            Delivery::Rejected(reason) if run.len() > 1 => {
                tracing::info!(
                    batches = run.len(),
                    "the backend rejected a push of several batches ({reason}); sending them one by one"
                );
                for (id, batch) in &run {
                    let delivery = sender.push(&[batch.as_slice()]).await;
                    settle(shared, *id, 1, delivery).await?;
                }
            }
            delivery => {
                let last = run.last().map(|(id, _)| *id).expect("the run is not empty");
                settle(shared, last, run.len(), delivery).await?;
            }
        }
    }
}

/// Acts on what became of a push of the `count` oldest pending batches, `last` the newest of
/// them: acks them, sets the (single) rejected batch aside, or says when to try again.
async fn settle(
    shared: &Arc<Shared>,
    last: BatchId,
    count: usize,
    delivery: Delivery,
) -> Result<(), Option<Duration>> {
    match delivery {
        Delivery::Delivered => {
            shared
                .metrics
                .add("pganalytics_batches_sent_total", "", count as u64);
            if let Err(e) = shared
                .with_spool(move |spool| spool.ack_through(last))
                .await
            {
                shared
                    .metrics
                    .health
                    .spool_write_failed(format!("recording a delivery: {e}"));
                tracing::error!(
                    "cannot record delivery of the batches through {last} (they will be sent again): {e}"
                );
                return Err(None);
            }
            Ok(())
        }
        Delivery::Rejected(reason) => {
            let why = reason.clone();
            match shared
                .with_spool(move |spool| spool.dead_letter(last, &why))
                .await
            {
                Ok(path) => {
                    tracing::error!(
                        batch = %last,
                        file = %path.display(),
                        "the backend rejected a batch; it was set aside: {reason}"
                    );
                    Ok(())
                }
                Err(e) => {
                    tracing::error!("cannot set rejected batch {last} aside: {e}");
                    Err(None)
                }
            }
        }
        Delivery::Retry {
            reason,
            cause,
            after,
        } => {
            shared.metrics.inc(
                "pganalytics_push_retries_total",
                &labels(&[("cause", cause)]),
            );
            tracing::warn!(batch = %last, cause, "push failed, will retry: {reason}");
            Err(after)
        }
    }
}
