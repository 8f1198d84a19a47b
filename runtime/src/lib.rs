//! pganalytics: a PostgreSQL host agent whose collectors are sandboxed WebAssembly components.
//!
//! Modules, bottom up (each uses only those above it; the `layering` test checks it):
//!
//! - [`units`]: durations and sizes as the config writes them; [`fsutil`]: the one way a file
//!   is replaced atomically; [`heap`]: the C allocator's settings, trims and figures. All three
//!   are leaves.
//! - [`host`]: one module per capability a plugin can be granted, and the one list of them; the
//!   only place that links them.
//! - [`plugin`]: loading (verify, compile, check grants) and running plugins under limits.
//! - [`config`]: the operator's TOML, validated into what `host` and `plugin` take.
//! - [`telemetry`]: the agent's own `/healthz` and `/metrics`.
//! - [`pipeline`]: from a plugin's output to the backend: validation, envelope, spool, sender.
//! - [`agent`]: the daemon (`pganalytics run`) that schedules plugins, pushes, and reloads.

pub mod agent;
pub mod config;
pub mod fsutil;
pub mod heap;
pub mod host;
pub mod pipeline;
pub mod plugin;
pub mod telemetry;
pub mod units;

#[cfg(test)]
mod layering;

/// Version reported in envelopes and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
