//! Plugins: loading a component (digest pin and signature check, compile or compile cache,
//! grant check, linking) and running one `collect` in a fresh, limited instance.
//!
//! Grants bind to the verified binary: the pin and the signature are checked on every load,
//! hot swaps included, before anything of the file is compiled or looked up in the cache.
//! A plugin never runs unless every interface it imports was granted, and every run gets a new
//! store, so nothing (memory, state, leaked resources) carries over from one run to the next
//! except the `state` blob the host keeps on its behalf. A trap or a limit ends that run with a
//! [`RunError`] naming the plugin and the limit; it never touches other plugins.

pub mod cache;
pub mod engine;
mod error;
pub mod limits;
pub mod manifest;
pub mod precompiled;
pub mod signature;
pub mod structure;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtxView, WasiView};

use crate::host::bindings::{CollectorPre, Error as GuestError};
use crate::host::guest_text;
use crate::host::run::{PluginSettings, RunInfo};
use crate::host::{self, Grants, HostCtx, HostView};
use crate::units::ByteSize;
pub use cache::{CacheOutcome, CompileCache};
pub use engine::Engines;
pub use error::{LoadError, RunError};
use limits::{Limits, RunLimiter};
pub use manifest::{Import, Manifest, check_links};
pub use precompiled::PrecompiledDir;
use signature::PublicKey;

/// Threat: a multi-gigabyte "plugin" file exhausting memory before it is even compiled.
pub const MAX_COMPONENT_FILE_BYTES: u64 = 64 << 20;

/// One plugin, validated from `[plugins.NAME]` and ready to be loaded.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    pub wasm: PathBuf,
    pub sha256: Option<[u8; 32]>,
    /// Keys any one of which must have signed the file; empty: no signature required.
    pub signed_by: Vec<Arc<PublicKey>>,
    pub enabled: bool,
    pub emits: BTreeSet<String>,
    pub interval: Duration,
    pub limits: Limits,
    pub grants: Grants,
    pub settings: Arc<PluginSettings>,
}

/// A verified, compiled and linked plugin, ready to be instantiated for each run.
pub struct LoadedPlugin {
    pub config: Arc<PluginConfig>,
    pub sha256: [u8; 32],
    /// The trusted key whose signature was verified, when the config requires one.
    pub signed_by: Option<String>,
    /// Whether the component was compiled, or came from the compile cache or a precompiled
    /// artifact.
    pub compiled: CacheOutcome,
    pub manifest: Manifest,
    pre: CollectorPre<RunState>,
    /// The name and the digest in hex, shared by every run's audit and contexts instead of
    /// being formatted again for each run.
    run_name: Arc<str>,
    run_digest: Arc<str>,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn sha256_hex(&self) -> String {
        self.run_digest.to_string()
    }
}

/// What a successful `collect` returned, not yet validated.
pub struct RawOutput {
    pub json: String,
    /// What the run leaves to keep (its state blob, log-tail offsets), to be committed once the
    /// output is accepted and safe.
    pub pending: host::Pending,
    pub denied_calls: u64,
    pub timing: RunTiming,
}

/// Where the time of one run went.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTiming {
    /// The whole run: instantiation, `collect` and its host calls.
    pub elapsed: Duration,
    /// Of `elapsed`, creating the instance from the pre-linked component.
    pub instantiate: Duration,
    /// Of `elapsed`, time inside `postgres` host calls talking to the server.
    pub postgres: Duration,
    /// Of `elapsed`, creating the run's host context and store, before instantiation.
    pub setup: Duration,
    /// After `elapsed`: dropping the store, which returns the instance's memory and tables to
    /// their pool slot (resetting the pages the run wrote).
    pub teardown: Duration,
}

/// Reads a component file with the size cap and returns its bytes and sha256.
pub fn read_component(plugin: &str, path: &Path) -> Result<(Vec<u8>, [u8; 32]), LoadError> {
    let read_error = |source| LoadError::Read {
        plugin: plugin.to_owned(),
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_COMPONENT_FILE_BYTES {
        return Err(LoadError::TooLarge {
            plugin: plugin.into(),
            path: path.into(),
            size,
            max: MAX_COMPONENT_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    Ok((bytes, digest))
}

/// Checks the detached signature of a file with `sha256` when `config` requires one, and
/// returns the key that signed it. Call it before compiling anything of the file.
pub fn verify_signature(
    config: &PluginConfig,
    sha256: &[u8; 32],
) -> Result<Option<String>, LoadError> {
    if config.signed_by.is_empty() {
        return Ok(None);
    }
    let plugin = config.name.as_str();
    let sig_path = signature::signature_path(&config.wasm);
    let file = signature::SignatureFile::read(&sig_path).map_err(|e| match e {
        signature::ReadSignatureError::Missing(reason) => LoadError::SignatureMissing {
            plugin: plugin.into(),
            path: config.wasm.clone(),
            signature: sig_path.clone(),
            signers: config
                .signed_by
                .iter()
                .map(|k| format!("`{}`", k.name))
                .collect::<Vec<_>>()
                .join(" or "),
            reason,
        },
        signature::ReadSignatureError::Malformed(reason) => LoadError::SignatureMalformed {
            plugin: plugin.into(),
            path: config.wasm.clone(),
            signature: sig_path.clone(),
            reason,
        },
    })?;
    let trusted: Vec<&signature::PublicKey> = config.signed_by.iter().map(|k| &**k).collect();
    file.verify(sha256, &trusted)
        .map(Some)
        .map_err(|reason| LoadError::SignatureRejected {
            plugin: plugin.into(),
            path: config.wasm.clone(),
            sha256: hex::encode(sha256),
            reason,
        })
}

/// Compiles component bytes for `engine`.
pub fn compile(
    engine: &wasmtime::Engine,
    plugin: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    let compiled = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
        plugin: plugin.into(),
        path: path.into(),
        message: format!("{e:#}"),
    });
    // Cranelift frees its scratch memory (several MiB) when it is done; hand it back to the
    // system rather than keep it in the allocator's free lists for the agent's lifetime.
    crate::heap::trim();
    compiled
}

/// What a plugin host is built from (a config gives it with `Config::host_setup`).
#[derive(Debug, Clone, Default)]
pub struct HostSetup {
    /// Where plugin state and log-tail offsets survive restarts; `None`: in memory only.
    pub state_dir: Option<PathBuf>,
    /// Where compiled components are cached; `None`: every load compiles.
    pub cache_dir: Option<PathBuf>,
    /// Read-only directory of precompiled components (see `precompiled`), tried before the
    /// cache; `None`: none.
    pub precompiled_dir: Option<PathBuf>,
    /// Runtime-wide settings of the capabilities (`[postgres]`).
    pub capabilities: host::Setup,
}

/// Everything plugin runs share: engines, the capabilities' resources (connection pool, state
/// and offsets stores), the precompiled components and the compile cache.
#[derive(Clone)]
pub struct PluginHost {
    engines: Engines,
    resources: host::Resources,
    precompiled: Option<PrecompiledDir>,
    cache: Option<CompileCache>,
}

impl PluginHost {
    /// A host for `setup`. A cache directory that cannot be used is reported and the host
    /// compiles every load; a precompiled directory that cannot be trusted is reported and
    /// not used.
    pub fn new(setup: &HostSetup) -> wasmtime::Result<Self> {
        let precompiled =
            setup
                .precompiled_dir
                .as_deref()
                .and_then(|dir| match PrecompiledDir::open(dir) {
                    Ok(precompiled) => Some(precompiled),
                    Err(e) => {
                        tracing::warn!("{e}; not using precompiled components");
                        None
                    }
                });
        let cache = setup
            .cache_dir
            .as_deref()
            .and_then(|dir| match CompileCache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!("{e}; plugins are compiled on every load");
                    None
                }
            });
        Ok(Self {
            engines: Engines::new()?,
            resources: host::Resources::new(&setup.capabilities, setup.state_dir.as_deref()),
            precompiled,
            cache,
        })
    }

    /// Keeps what an accepted run of `plugin` left (its state blob, log-tail offsets). Call it
    /// only once the run's output is safe.
    pub fn commit(&self, plugin: &str, pending: host::Pending) -> std::io::Result<()> {
        self.resources.commit(plugin, pending)
    }

    /// Verifies, compiles, checks grants against imports and links one plugin.
    pub fn load(&self, config: Arc<PluginConfig>) -> Result<LoadedPlugin, LoadError> {
        let plugin = config.name.as_str();
        let (bytes, sha256) = read_component(plugin, &config.wasm)?;
        if let Some(expected) = config.sha256
            && expected != sha256
        {
            return Err(LoadError::DigestMismatch {
                plugin: plugin.into(),
                path: config.wasm.clone(),
                expected: hex::encode(expected),
                actual: hex::encode(sha256),
            });
        }
        // Before anything of the file is compiled, cached or looked up in the cache.
        let signed_by = verify_signature(&config, &sha256)?;
        structure::check(plugin, &config.wasm, &bytes)?;
        let metered = config.limits.fuel.is_some();
        let engine = self.engines.get(metered).map_err(|e| LoadError::Link {
            plugin: plugin.into(),
            message: e.to_string(),
        })?;
        let compile_source = || compile(&engine, plugin, &config.wasm, &bytes);
        let shipped = self
            .precompiled
            .as_ref()
            .and_then(|dir| dir.load(&engine, metered, &sha256, plugin));
        let (component, compiled) = match (shipped, &self.cache) {
            (Some(component), _) => (component, CacheOutcome::Precompiled),
            (None, Some(cache)) => {
                cache.get_or_compile(&engine, metered, &sha256, compile_source)?
            }
            (None, None) => (compile_source()?, CacheOutcome::Compiled),
        };
        let manifest = Manifest::of(&engine, &component);
        if let Some(import) = manifest.unknown_imports().first() {
            return Err(LoadError::UnknownImport {
                plugin: plugin.into(),
                import: (*import).to_owned(),
            });
        }
        for capability in manifest.capabilities() {
            if !config.grants.allows(capability) {
                return Err(LoadError::NotGranted {
                    plugin: plugin.into(),
                    capability,
                    example: capability.grant_example(plugin).unwrap_or_default(),
                });
            }
        }
        if !manifest.exports_collect() {
            return Err(LoadError::NoCollect {
                plugin: plugin.into(),
                path: config.wasm.clone(),
            });
        }
        let mut linker = Linker::new(&engine);
        let link_error = |e: wasmtime::Error| LoadError::Link {
            plugin: plugin.into(),
            message: format!("{e:#}"),
        };
        host::link(&mut linker, &config.grants).map_err(link_error)?;
        let pre = linker.instantiate_pre(&component).map_err(link_error)?;
        let pre = CollectorPre::new(pre).map_err(link_error)?;
        // What its earlier runs kept, read now (this thread may block) rather than by a run.
        self.resources.prepare(plugin, &config.grants);
        Ok(LoadedPlugin {
            run_name: Arc::from(config.name.as_str()),
            run_digest: Arc::from(hex::encode(sha256)),
            config,
            sha256,
            signed_by,
            compiled,
            manifest,
            pre,
        })
    }

    /// Runs `collect` once in a fresh instance under the plugin's limits.
    pub async fn run(&self, plugin: &LoadedPlugin) -> Result<RawOutput, RunError> {
        let started = Instant::now();
        let config = &plugin.config;
        let name = plugin.run_name.clone();
        let limits = &config.limits;
        let audit = host::audit::Audit::new(name.clone(), plugin.run_digest.clone());
        let budget = host::budget::LogBudget::new(name.clone(), usize_cap(limits.max_log_bytes));
        let deadline = started + limits.timeout;
        let run = RunInfo {
            plugin: name.clone(),
            audit: audit.clone(),
            log: budget.clone(),
            deadline,
            max_host_call_bytes: usize_cap(limits.max_host_call_bytes),
            max_state_bytes: usize_cap(limits.max_state_bytes),
            settings: config.settings.clone(),
        };
        let ctx = HostCtx::new(&config.grants, &self.resources, &run);
        let engine = plugin.pre.engine().clone();
        let mut store = Store::new(
            &engine,
            RunState {
                host: ctx,
                limiter: RunLimiter::new(limits.memory_bytes),
            },
        );
        store.limiter(|state| &mut state.limiter);
        if let Some(fuel) = limits.fuel {
            store.set_fuel(fuel).map_err(|e| RunError::Trap {
                plugin: name.to_string(),
                message: e.to_string(),
            })?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let setup = started.elapsed();

        let mut instantiate = Duration::ZERO;
        let call = async {
            let instantiating = Instant::now();
            let collector = plugin.pre.instantiate_async(&mut store).await?;
            instantiate = instantiating.elapsed();
            collector.call_collect(&mut store).await
        };
        // The epoch callback stops guest code; this timeout also stops a host call that hangs.
        let outcome = tokio::time::timeout(limits.timeout, call).await;
        budget.finish();
        let plugin_name = name.to_string();
        let result = match outcome {
            Err(_elapsed) => Err(RunError::Deadline {
                plugin: plugin_name,
                limit: limits.describe_timeout(),
            }),
            Ok(Err(error)) if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Err(RunError::HostBusy {
                    plugin: plugin_name,
                    message: format!("{error}"),
                })
            }
            Ok(Err(trap)) => Err(classify_trap(&plugin_name, trap, &store, limits, &budget)),
            Ok(Ok(Err(error))) => {
                let (kind, message) = guest_error_text(&error);
                Err(RunError::Guest {
                    plugin: plugin_name,
                    kind,
                    message,
                })
            }
            Ok(Ok(Ok(json))) if json.len() as u64 > limits.max_output_bytes => {
                Err(RunError::OutputTooLarge {
                    plugin: plugin_name,
                    size: json.len() as u64,
                    limit: ByteSize(limits.max_output_bytes).to_string(),
                })
            }
            Ok(Ok(Ok(json))) => Ok(json),
        };
        let denied_calls = audit.denied_count();
        let json = result?;
        let host = &mut store.data_mut().host;
        let pending = host.take_pending();
        let postgres = host.postgres.server_time();
        let elapsed = started.elapsed();
        let tearing_down = Instant::now();
        drop(store);
        Ok(RawOutput {
            json,
            pending,
            denied_calls,
            timing: RunTiming {
                elapsed,
                instantiate,
                postgres,
                setup,
                teardown: tearing_down.elapsed(),
            },
        })
    }
}

/// The kind and the cut, escaped message of an error a guest returned from `collect`.
fn guest_error_text(error: &GuestError) -> (&'static str, String) {
    let (kind, text) = match error {
        GuestError::Denied(m) => ("denied", m),
        GuestError::NotFound(m) => ("not-found", m),
        GuestError::Invalid(m) => ("invalid", m),
        GuestError::Timeout(m) => ("timeout", m),
        GuestError::TooLarge(m) => ("too-large", m),
        GuestError::Unavailable(m) => ("unavailable", m),
        GuestError::Io(m) => ("io", m),
    };
    (kind, guest_text::quote(text))
}

fn usize_cap(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn classify_trap(
    plugin: &str,
    error: wasmtime::Error,
    store: &Store<RunState>,
    limits: &Limits,
    budget: &host::budget::LogBudget,
) -> RunError {
    let plugin = plugin.to_owned();
    if store.data().limiter.memory_limit_hit {
        return RunError::Memory {
            plugin,
            limit: limits.describe_memory(),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RunError::Deadline {
            plugin,
            limit: limits.describe_timeout(),
        },
        Some(Trap::OutOfFuel) => RunError::Fuel {
            plugin,
            fuel: limits.fuel.unwrap_or(0),
        },
        Some(Trap::StackOverflow) => RunError::StackOverflow { plugin },
        Some(Trap::MemoryOutOfBounds) if is_runaway_recursion(&error) => {
            RunError::StackOverflow { plugin }
        }
        other => {
            // A trap's text can quote the guest (function names in the backtrace come from
            // its name section): cut and escaped like any guest text.
            let mut message = match other {
                Some(trap) => trap.to_string(),
                None => {
                    guest_text::cut(&format!("{error:#}"), 4 * guest_text::MAX_GUEST_TEXT_BYTES)
                }
            };
            // A Rust guest prints its panic message to stderr right before it aborts.
            let stderr = budget.stderr_tail(guest_text::MAX_GUEST_TEXT_BYTES);
            if !stderr.is_empty() {
                message = format!("{message} (guest stderr: {stderr})");
            }
            RunError::Trap { plugin, message }
        }
    }
}

/// Rust (and C) guests keep their stack in linear memory; overflowing it shows up as an
/// out-of-bounds access below address 0, not as wasmtime's own stack overflow. The telltale is
/// a backtrace that is full and made almost entirely of one function calling itself.
fn is_runaway_recursion(error: &wasmtime::Error) -> bool {
    let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    if frames.len() < engine::BACKTRACE_FRAMES {
        return false;
    }
    let mut counts = std::collections::HashMap::new();
    for frame in frames {
        *counts.entry(frame.func_index()).or_insert(0usize) += 1;
    }
    counts
        .values()
        .max()
        .is_some_and(|&most| most * 10 >= frames.len() * 9)
}

/// The data of a run's store: the capability contexts and the resource limiter.
pub struct RunState {
    host: HostCtx,
    limiter: RunLimiter,
}

impl HostView for RunState {
    fn host(&mut self) -> &mut HostCtx {
        &mut self.host
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.host.ctx()
    }
}
