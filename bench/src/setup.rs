//! What the benchmarks run against: config files for the bundled collectors, a loaded plugin
//! host, and the paths of this checkout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pganalytics::config::Config;
use std::time::{Duration, Instant};

use pganalytics::pipeline::{self, Accepted};
use pganalytics::plugin::{LoadedPlugin, PluginHost};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The release build of bundled guest `name`.
pub fn wasm(name: &str) -> String {
    root()
        .join("guests/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// `[collector]` with its state (and compile cache) in `state_dir`, plus `extra` lines.
pub fn collector_section(state_dir: &Path, extra: &str) -> String {
    format!(
        "[collector]\nid = \"bench\"\nstate_dir = {:?}\nlog_level = \"warn\"\n{extra}\n",
        state_dir.display().to_string()
    )
}

/// `[collector]` without a state directory: plugin state is kept in memory only (and nothing
/// is cached on disk), so saving it after a run is a map insert, not a file write and fsync.
pub fn collector_section_in_memory() -> String {
    "[collector]\nid = \"bench\"\nlog_level = \"warn\"\n\n".to_owned()
}

/// `[backend]` and `[tls]` for `backend`, with shared-secret tokens; the CA and secret files
/// are written to `dir`.
pub fn backend_sections(
    backend: &test_backend::TestBackend,
    dir: &Path,
    push_interval: &str,
) -> String {
    let ca = dir.join("backend-ca.pem");
    let secret = dir.join("jwt_secret");
    std::fs::write(&ca, backend.ca_pem()).expect("writing the CA");
    std::fs::write(&secret, backend.jwt_secret()).expect("writing the secret");
    format!(
        "[backend]\nurl = {:?}\npush_interval = {push_interval:?}\njwt_secret_file = {:?}\n\n\
         [tls]\nca_file = {:?}\n\n",
        backend.url(),
        secret.display().to_string(),
        ca.display().to_string()
    )
}

/// The table of one bundled collector, granted what it needs. `pg_log` tails `log_file`
/// (`format`: stderr | csvlog) from its beginning; `pg_stats` reads `databases`.
pub enum Plugin<'a> {
    Sysstat,
    Disk,
    PgLog { log_file: &'a Path, format: &'a str },
    PgStats { databases: &'a str },
}

impl Plugin<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Plugin::Sysstat => "sysstat",
            Plugin::Disk => "disk",
            Plugin::PgLog { .. } => "pg_log",
            Plugin::PgStats { .. } => "pg_stats",
        }
    }

    pub fn section(&self, interval: &str) -> String {
        let name = self.name();
        let head = |emits: &str| {
            format!(
                "[plugins.{name}]\nwasm = {:?}\nemits = [{emits}]\ninterval = {interval:?}\ntimeout = \"30s\"\n",
                wasm(name)
            )
        };
        match self {
            Plugin::Sysstat => {
                head("\"sysstat\"")
                    + "[plugins.sysstat.grants.procfs]\npaths = [\"stat\", \"meminfo\", \"diskstats\", \"loadavg\"]\n\n"
            }
            Plugin::Disk => {
                head("\"disk_usage\"") + "[plugins.disk.grants.fs-stats]\nmounts = [\"*\"]\n\n"
            }
            Plugin::PgLog { log_file, format } => format!(
                "{}[plugins.pg_log.grants.log-tail]\npaths = [{:?}]\nstart_at = \"beginning\"\n\
                 [plugins.pg_log.settings]\nformat = {format:?}\nlog_line_prefix = {:?}\n\n",
                head("\"pg_log\""),
                log_file.display().to_string(),
                crate::logs::PREFIX,
            ),
            Plugin::PgStats { databases } => format!(
                "{}[plugins.pg_stats.grants.postgres]\ndatabases = [{databases}]\nstatement_timeout = \"30s\"\ncluster = true\n\n",
                head("\"pg_stats\", \"pg_query_stats\", \"pg_server\"")
            ),
        }
    }
}

/// Parses a config the benchmarks wrote; a mistake here is a bug of the suite.
pub fn parse(text: &str, dir: &Path) -> Config {
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).expect("writing the bench config");
    pganalytics::config::parse(text, &path)
        .unwrap_or_else(|e| panic!("the bench config is invalid: {e}\n{text}"))
}

/// A plugin host with every plugin of `config` loaded.
pub struct Loaded {
    pub host: PluginHost,
    pub plugins: BTreeMap<String, LoadedPlugin>,
}

impl Loaded {
    pub fn new(config: Config) -> Loaded {
        let host = PluginHost::new(&config.host_setup()).expect("creating the plugin host");
        let plugins = config
            .plugins
            .values()
            .map(|plugin| {
                let loaded = host
                    .load(Arc::new(plugin.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                (plugin.name.clone(), loaded)
            })
            .collect();
        Loaded { host, plugins }
    }

    pub fn plugin(&self, name: &str) -> &LoadedPlugin {
        &self.plugins[name]
    }

    /// One run of `name` along the agent's own path (sandboxed run, then validation of its
    /// output), which must succeed, and how long that took. Its state blob and log offsets are
    /// then saved as the agent saves them once the items are spooled (not timed).
    pub async fn collect(&self, name: &str) -> (Accepted, Duration) {
        let (mut accepted, wall) = self.collect_unsaved(name).await;
        std::mem::take(&mut accepted.commit)
            .apply(&self.host)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (accepted, wall)
    }

    /// [`Loaded::collect`] without saving what the run left: the caller applies
    /// `accepted.commit` itself (to time it).
    pub async fn collect_unsaved(&self, name: &str) -> (Accepted, Duration) {
        let started = Instant::now();
        let accepted = pipeline::collect(&self.host, self.plugin(name))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (accepted, started.elapsed())
    }
}
