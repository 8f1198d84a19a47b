//! The validated configuration: what the rest of the runtime reads, with durations and sizes
//! parsed, paths resolved against the config file's directory, grants compiled and limits
//! defaulted. Built only by `check`; nothing here reads files or validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::host::postgres::{PostgresConfig, PostgresServers};
use crate::plugin::signature::PublicKey;
use crate::plugin::{HostSetup, PluginConfig};

/// Default bound of the spool (`[buffer] max_bytes`).
pub const DEFAULT_SPOOL_BYTES: u64 = 256 << 20;

/// Default plugin interval when neither the plugin nor `[collector]` sets one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Default of `[collector] unhealthy_after_push_intervals`.
pub const DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS: u32 = 10;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub collector: CollectorConfig,
    pub backend: Option<BackendConfig>,
    /// `[postgres]` and `[postgres.servers.NAME]` by server name; empty without `[postgres]`.
    pub postgres: PostgresServers,
    pub tls: TlsConfig,
    pub buffer: BufferConfig,
    pub trust: TrustConfig,
    pub plugins: BTreeMap<String, PluginConfig>,
}

impl Config {
    /// What the plugin host of this config is built from: its state and cache directories and
    /// the capabilities' runtime-wide settings.
    pub fn host_setup(&self) -> HostSetup {
        let capabilities = crate::host::Setup {
            postgres: self.postgres.clone(),
            ..Default::default()
        };
        HostSetup {
            state_dir: self.collector.state_dir.clone(),
            cache_dir: self.collector.cache_dir.clone(),
            precompiled_dir: self.collector.precompiled_dir.clone(),
            capabilities,
        }
    }
}

/// `[trust]`: public keys by name, read from their files when the config is loaded.
#[derive(Debug, Clone, Default)]
pub struct TrustConfig {
    pub keys: BTreeMap<String, Arc<PublicKey>>,
}

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub id: String,
    pub hostname: String,
    pub state_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub listen: Option<std::net::SocketAddr>,
    /// `listen` may be a non-loopback address.
    pub listen_public: bool,
    /// `/healthz` is 503 after this many push intervals without a successful push.
    pub unhealthy_after_push_intervals: u32,
    /// Where compiled components are cached; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Read-only directory of precompiled components; `None`: none.
    pub precompiled_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub url: String,
    pub push_interval: Duration,
    pub config_pull_interval: Duration,
    pub compression: Compression,
    /// `backend.allow_insecure_http`: an `http://` URL was allowed explicitly.
    pub allow_insecure_http: bool,
    pub registration_secret_file: Option<PathBuf>,
    pub jwt_secret_file: Option<PathBuf>,
    pub allow_remote_privileged: bool,
}

/// `backend.compression`: how push bodies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip, falling back to plain bodies (remembered) when the backend refuses gzip.
    Auto,
    /// Always gzip; a backend that refuses it dead-letters the batch.
    Gzip,
    /// Never compress.
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BufferConfig {
    pub max_bytes: u64,
    /// `None`: the spool's default bound.
    pub dead_letter_max_bytes: Option<u64>,
    pub dead_letter_max_age: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify: bool,
    pub min_tls12: bool,
}

/// The system host name, or `localhost` when it cannot be read.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
