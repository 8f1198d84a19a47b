//! pganalytics: a PostgreSQL host agent whose collectors are sandboxed WebAssembly components.
//!
//! - [`config`]: the operator's TOML, validated.
//! - [`host`]: one module per capability a plugin can be granted; the only place that links them.
//! - [`plugin`]: loading (verify, compile, check grants) and running plugins under limits.
//! - [`pipeline`]: from a plugin's output to an accepted batch: validation and the envelope.

pub mod config;
pub mod host;
pub mod pipeline;
pub mod plugin;

/// Version reported in envelopes and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
