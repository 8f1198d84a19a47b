//! Host capabilities: everything a plugin can ask of the host, one module per WIT interface.
//!
//! Every capability has the same shape: its TOML grant config, the validated grant, a per-run
//! context, and the `Host` trait implementation on that context (see `procfs` for the model).
//! [`link`] is the only place that puts capabilities into a linker, and it links an interface only
//! when the plugin was granted it; [`Capability`] is the only list of what exists, used alike by
//! the linker, `plugin inspect`, grant errors and the audit log.

pub mod audit;
pub mod bindings;
pub mod fs_stats;
pub mod log;
pub mod log_tail;
pub mod postgres;
pub mod procfs;
pub mod settings;
pub mod state;

use std::fmt;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use bindings::pganalytics::collector as wit;

/// The WIT package every plugin is built against.
pub const WIT_PACKAGE: &str = "pganalytics:collector";
pub const WIT_VERSION: &str = "0.1.0";

/// Every interface of `pganalytics:collector`, by the name used in WIT, TOML and logs alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    Types,
    Procfs,
    FsStats,
    LogTail,
    Postgres,
    Settings,
    Log,
    State,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Types,
        Capability::Procfs,
        Capability::FsStats,
        Capability::LogTail,
        Capability::Postgres,
        Capability::Settings,
        Capability::Log,
        Capability::State,
    ];

    /// The interface name, which is also the key under `[plugins.NAME.grants]`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Types => "types",
            Capability::Procfs => "procfs",
            Capability::FsStats => "fs-stats",
            Capability::LogTail => "log-tail",
            Capability::Postgres => "postgres",
            Capability::Settings => "settings",
            Capability::Log => "log",
            Capability::State => "state",
        }
    }

    /// Whether the operator must grant this interface; the others only touch the plugin's own
    /// settings, log budget and state blob.
    pub fn needs_grant(self) -> bool {
        matches!(
            self,
            Capability::Procfs | Capability::FsStats | Capability::LogTail | Capability::Postgres
        )
    }

    pub fn summary(self) -> &'static str {
        match self {
            Capability::Types => "shared types (no access)",
            Capability::Procfs => "read files below /proc",
            Capability::FsStats => "filesystem capacity of mount points",
            Capability::LogTail => "read new lines of log files",
            Capability::Postgres => "read-only SQL on PostgreSQL databases",
            Capability::Settings => "its own [plugins.NAME.settings] table",
            Capability::Log => "write to the host log (capped)",
            Capability::State => "keep a small blob between runs (capped)",
        }
    }

    /// The TOML an operator adds to grant this interface to `plugin`.
    pub fn grant_example(self, plugin: &str) -> Option<String> {
        let body = match self {
            Capability::Procfs => "paths = [\"stat\", \"meminfo\"]",
            Capability::FsStats => "mounts = [\"/\", \"/var/lib/postgresql\"]",
            Capability::LogTail => "paths = [\"/var/log/postgresql/*.log\"]",
            Capability::Postgres => "databases = [\"postgres\"]",
            _ => return None,
        };
        Some(format!("[plugins.{plugin}.grants.{}]\n{body}", self.name()))
    }

    /// Maps a component import such as `pganalytics:collector/fs-stats@0.1.0`.
    pub fn from_import(import: &str) -> Option<Capability> {
        let rest = import.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
        let (name, version) = rest.split_once('@')?;
        // Semver: 0.1.x plugins work with this 0.1 host.
        if !version.starts_with("0.1.") {
            return None;
        }
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The validated grants of one plugin. `None` means not granted.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub procfs: Option<Arc<procfs::ProcfsGrant>>,
    pub fs_stats: Option<Arc<fs_stats::FsStatsGrant>>,
    pub postgres: Option<Arc<postgres::PostgresGrant>>,
    pub log_tail: Option<Arc<log_tail::LogTailGrant>>,
}

impl Grants {
    pub fn allows(&self, capability: Capability) -> bool {
        match capability {
            Capability::Procfs => self.procfs.is_some(),
            Capability::FsStats => self.fs_stats.is_some(),
            Capability::Postgres => self.postgres.is_some(),
            Capability::LogTail => self.log_tail.is_some(),
            Capability::Types | Capability::Settings | Capability::Log | Capability::State => true,
        }
    }
}

/// Everything one plugin run can reach: WASI (with nothing in it) and one context per
/// capability. It is the data of a fresh store, dropped with it at the end of the run.
pub struct HostCtx {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub procfs: procfs::ProcfsCtx,
    pub fs_stats: fs_stats::FsStatsCtx,
    pub postgres: postgres::PostgresCtx,
    pub log_tail: log_tail::LogTailCtx,
    pub settings: settings::SettingsCtx,
    pub log: log::LogCtx,
    pub state: state::StateCtx,
}

/// Store data that contains a [`HostCtx`].
pub trait HostView: Send + 'static {
    fn host(&mut self) -> &mut HostCtx;
}

/// A WASI context that grants nothing: no preopened directories, no environment, no arguments,
/// no sockets or name lookups. Clocks and random stay available. Guest stdout/stderr go to
/// the run's capped log budget.
pub fn empty_wasi(budget: &log::LogBudget) -> WasiCtx {
    wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(budget.stdout())
        .stderr(budget.stderr())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Links WASI and exactly the granted capabilities into `linker`. This is the only function
/// that registers host interfaces.
pub fn link<T: HostView + WasiView>(
    linker: &mut Linker<T>,
    grants: &Grants,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<T, HasSelf<HostCtx>>(linker, |t| t.host())?;
    wit::settings::add_to_linker::<T, HasSelf<settings::SettingsCtx>>(linker, |t| {
        &mut t.host().settings
    })?;
    wit::log::add_to_linker::<T, HasSelf<log::LogCtx>>(linker, |t| &mut t.host().log)?;
    wit::state::add_to_linker::<T, HasSelf<state::StateCtx>>(linker, |t| &mut t.host().state)?;
    if grants.procfs.is_some() {
        wit::procfs::add_to_linker::<T, HasSelf<procfs::ProcfsCtx>>(linker, |t| {
            &mut t.host().procfs
        })?;
    }
    if grants.fs_stats.is_some() {
        wit::fs_stats::add_to_linker::<T, HasSelf<fs_stats::FsStatsCtx>>(linker, |t| {
            &mut t.host().fs_stats
        })?;
    }
    if grants.postgres.is_some() {
        wit::postgres::add_to_linker::<T, HasSelf<postgres::PostgresCtx>>(linker, |t| {
            &mut t.host().postgres
        })?;
    }
    if grants.log_tail.is_some() {
        wit::log_tail::add_to_linker::<T, HasSelf<log_tail::LogTailCtx>>(linker, |t| {
            &mut t.host().log_tail
        })?;
    }
    Ok(())
}

impl wit::types::Host for HostCtx {}

impl HostView for HostCtx {
    fn host(&mut self) -> &mut HostCtx {
        self
    }
}

impl WasiView for HostCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_capabilities_by_wit_name() {
        assert_eq!(
            Capability::from_import("pganalytics:collector/fs-stats@0.1.0"),
            Some(Capability::FsStats)
        );
        assert_eq!(
            Capability::from_import("pganalytics:collector/procfs@0.1.3"),
            Some(Capability::Procfs)
        );
        assert_eq!(
            Capability::from_import("pganalytics:collector/procfs@0.2.0"),
            None
        );
        assert_eq!(
            Capability::from_import("pganalytics:collector/nope@0.1.0"),
            None
        );
        assert_eq!(Capability::from_import("wasi:cli/environment@0.2.0"), None);
    }

    #[test]
    fn grant_examples_use_the_toml_key_of_the_interface() {
        let example = Capability::FsStats.grant_example("disk").unwrap();
        assert!(
            example.starts_with("[plugins.disk.grants.fs-stats]"),
            "{example}"
        );
        assert!(Capability::Log.grant_example("x").is_none());
    }
}
