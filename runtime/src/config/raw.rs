//! Stage one of the config: the TOML file as written, with `deny_unknown_fields` everywhere so a
//! misspelt key is an error, not a silently ignored setting. Durations and sizes are checked
//! here already (see `crate::units`), so their errors carry the line of the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

pub use crate::host::RawGrants;
pub use crate::host::postgres::RawPostgres;
use crate::units::{ByteSize, HumanDuration};

/// `[collector]`: who this agent is and where it keeps its files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    /// Collector id sent in every envelope (`collector_id`); must match the token's claim.
    pub id: Option<String>,
    /// Host name reported to the backend; defaults to the system host name.
    pub hostname: Option<String>,
    /// Directory for plugin state, log offsets and the spool. Relative paths are resolved
    /// against the config file's directory.
    pub state_dir: Option<PathBuf>,
    /// Default interval for plugins that do not set their own.
    pub interval: Option<HumanDuration>,
    /// Log format of the agent itself: `text` or `json`.
    pub log_format: Option<String>,
    /// Log level filter, e.g. `info` or `pganalytics=debug`.
    pub log_level: Option<String>,
    /// Address for `/healthz` and `/metrics`, e.g. `127.0.0.1:10187`. Off when unset. A
    /// non-loopback address needs `listen_public = true`.
    pub listen: Option<Spanned<String>>,
    /// Allow `listen` to be a non-loopback address (the endpoints have no authentication).
    pub listen_public: Option<bool>,
    /// `/healthz` answers 503 when no push succeeded for this many push intervals
    /// (default 10).
    pub unhealthy_after_push_intervals: Option<u32>,
    /// Directory of compiled components (default `STATE_DIR/cache`; no cache without a state
    /// directory). Kept at mode 0700.
    pub cache_dir: Option<PathBuf>,
    /// Read-only directory of precompiled components (`pganalytics plugin precompile`), used
    /// only when it and its artifacts pass the ownership and mode checks. Default: none.
    pub precompiled_dir: Option<PathBuf>,
}

/// `[trust]`: the keys plugin signatures are checked against.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// Key name → public key file (`pganalytics-ed25519-pub NAME BASE64`, written by
    /// `pganalytics plugin keygen`). Plugins name these keys in `signed_by`.
    #[serde(default)]
    pub keys: BTreeMap<String, Spanned<PathBuf>>,
}

/// `[backend]`: the pgAnalytics API this agent pushes to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Base URL, e.g. `https://pganalytics.example.com`. `http://` only with
    /// `allow_insecure_http`.
    pub url: Spanned<String>,
    /// Allow an `http://` URL (tokens and batches in clear; lab only, warned at every start).
    pub allow_insecure_http: Option<bool>,
    /// How often buffered batches are pushed.
    pub push_interval: Option<HumanDuration>,
    /// How often the remote config is pulled.
    pub config_pull_interval: Option<HumanDuration>,
    /// Request body compression: `auto` (default: gzip, plain once the backend refuses gzip),
    /// `gzip` (never falls back) or `none`.
    pub compression: Option<String>,
    /// File holding the registration secret (`X-Registration-Secret`): the agent registers on
    /// first start and again when its token can no longer be refreshed.
    pub registration_secret_file: Option<PathBuf>,
    /// File holding a shared HS256 secret: the agent signs its own tokens for `[collector] id`
    /// instead of registering.
    pub jwt_secret_file: Option<PathBuf>,
    /// Whether a config pulled from the backend may change more than plugin intervals,
    /// `enabled` and settings (grants, files, limits, connections). Default false.
    pub allow_remote_privileged: Option<bool>,
}

/// `[buffer]`: the durable spool between collection and delivery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    /// Largest total size of batches waiting for the backend (default 256MiB); beyond it the
    /// oldest are dropped and counted.
    pub max_bytes: Option<ByteSize>,
    /// Largest total size of `STATE_DIR/spool/dead-letter/` (default 64MiB); beyond it the
    /// oldest dead letters are removed, logged and counted.
    pub dead_letter_max_bytes: Option<ByteSize>,
    /// Dead letters older than this are removed, logged and counted (default 30d).
    pub dead_letter_max_age: Option<HumanDuration>,
}

/// `[tls]`: how the agent talks to the backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA bundle (PEM) that signs the backend's certificate; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    pub key_file: Option<PathBuf>,
    /// Verify the backend's certificate; `false` is for lab use only and logged loudly.
    pub verify: Option<bool>,
    /// Lowest TLS version accepted: `1.3` (default) or `1.2`.
    pub min_version: Option<String>,
}

/// `[plugins.NAME]`: one collector component and what it may do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// Path of the component (`.wasm`), relative to the config file's directory.
    pub wasm: PathBuf,
    /// Expected sha256 (hex) of the file; a different file is refused.
    pub sha256: Option<String>,
    /// Keys of `[trust.keys]`, any one of which must have signed the file (`FILE.wasm.sig`).
    pub signed_by: Option<Vec<Spanned<String>>>,
    /// Whether the plugin runs at all (default true).
    pub enabled: Option<bool>,
    /// Metric item `type`s the plugin may emit; any other type rejects the run.
    pub emits: Vec<String>,
    /// How often it runs (default: `[collector] interval`, else 60s).
    pub interval: Option<HumanDuration>,
    /// Wall-clock deadline of one run, host calls included (default 10s).
    pub timeout: Option<HumanDuration>,
    /// Linear memory cap (default 64MiB).
    pub memory: Option<ByteSize>,
    /// Instruction budget per run (wasmtime fuel); unset means unmetered.
    pub fuel: Option<u64>,
    /// Largest JSON output accepted (default 4MiB).
    pub max_output: Option<ByteSize>,
    /// Largest answer of one host call (default 4MiB).
    pub max_host_call_bytes: Option<ByteSize>,
    /// Guest log output per run, `log` and stdout/stderr together (default 64KiB).
    pub max_log_bytes: Option<ByteSize>,
    /// Largest state blob (default 64KiB).
    pub max_state_bytes: Option<ByteSize>,
    /// Capabilities granted to this plugin, one table per WIT interface name (the capability
    /// modules define each table; see `crate::host`).
    #[serde(default)]
    pub grants: RawGrants,
    /// Free-form settings the plugin reads through the `settings` interface.
    #[serde(default)]
    pub settings: toml::Table,
}
