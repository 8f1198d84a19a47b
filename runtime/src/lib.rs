//! pganalytics: a PostgreSQL host agent whose collectors are sandboxed WebAssembly components.
//!
//! - [`config`]: the operator's TOML, validated.
//! - [`host`]: one module per capability a plugin can be granted; the only place that links them.
//! - [`plugin`]: loading (verify, compile, check grants) and running plugins under limits.
//! - [`pipeline`]: from a plugin's output to the backend: validation, envelope, spool, sender.
//! - [`agent`]: the daemon (`pganalytics run`) that schedules plugins, pushes, and reloads.
//! - [`fsutil`]: the one way a file is replaced atomically (a leaf).
//! - [`telemetry`]: the agent's own `/healthz` and `/metrics`.
//! - [`units`]: durations and sizes as the config writes them (a leaf: imports nothing of the crate).

pub mod agent;
pub mod config;
pub mod fsutil;
pub mod host;
pub mod pipeline;
pub mod plugin;
pub mod telemetry;
pub mod units;

/// Version reported in envelopes and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
