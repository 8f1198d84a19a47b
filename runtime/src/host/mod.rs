//! Host capabilities: everything a plugin can ask of the host, one module per WIT interface.
//!
//! Every capability has the same shape (see [`capability::HostCapability`]): its TOML grant, the
//! validated grant, the resources it shares across runs, a per-run context, and the `Host` trait
//! implementation on that context, all in its own module (see `procfs` for the model). The list
//! below is the only place that enumerates them; the registry (`registry.rs`) generates from it
//! the [`Capability`] names, [`RawGrants`], [`Grants`], [`Resources`], [`HostCtx`], [`Pending`]
//! and [`link_where`], the only function that puts capabilities into a linker ([`link`]: only
//! the granted ones).
//!
//! This module must never import `config` or `plugin`: they build on it, not the other way.

pub mod audit;
pub mod bindings;
pub mod blocking;
pub mod budget;
pub mod capability;
pub mod guest_text;
pub mod kept;
#[macro_use]
mod registry;
pub mod run;

pub mod fs_stats;
pub mod fsio;
pub mod log;
pub mod log_tail;
pub mod postgres;
pub mod procfs;
pub mod settings;
pub mod state;
pub mod types;

use std::fmt;
use std::sync::OnceLock;

use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use budget::LogBudget;
use capability::GrantProblem;

// The one list of capabilities: `Variant => module::Implementation`, in the order they are
// listed, linked and committed. A new capability is a new module implementing
// `HostCapability` plus one line here.
capabilities! {
    Types => types::Types,
    Procfs => procfs::Procfs,
    FsStats => fs_stats::FsStats,
    LogTail => log_tail::LogTail,
    Postgres => postgres::Postgres,
    Settings => settings::Settings,
    Log => log::Log,
    State => state::State,
}

/// The WIT package every plugin is built against.
pub const WIT_PACKAGE: &str = "pganalytics:collector";

impl Capability {
    /// The TOML an operator adds to grant this interface to `plugin`.
    pub fn grant_example(self, plugin: &str) -> Option<String> {
        let body = self.example_body()?;
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

    /// The names accepted under `[plugins.NAME.grants]`.
    fn grantable_names() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
        NAMES.get_or_init(|| {
            Capability::ALL
                .into_iter()
                .filter(|c| c.needs_grant())
                .map(Capability::name)
                .collect()
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key of `[plugins.NAME.grants]`: the name of a capability that needs a grant.
struct GrantKey(Capability);

impl<'de> serde::Deserialize<'de> for GrantKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GrantKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<GrantKey, E> {
                Capability::ALL
                    .into_iter()
                    .find(|c| c.needs_grant() && c.name() == name)
                    .map(GrantKey)
                    .ok_or_else(|| E::unknown_field(name, Capability::grantable_names()))
            }
        }
        deserializer.deserialize_identifier(Visitor)
    }
}

/// A grant table that failed validation: which capability, which of its keys, and why.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidGrant {
    pub capability: Capability,
    /// The key of the grant table at fault (`paths`).
    pub key: &'static str,
    reason: Box<dyn std::error::Error + Send + Sync>,
}

impl InvalidGrant {
    fn new(capability: Capability, error: impl GrantProblem) -> Self {
        Self {
            capability,
            key: error.key(),
            reason: Box::new(error),
        }
    }

    /// The dotted key below `[plugins.NAME]`, e.g. `grants.procfs.paths`.
    pub fn key_path(&self) -> String {
        format!("grants.{}.{}", self.capability, self.key)
    }
}

/// Store data that contains a [`HostCtx`].
pub trait HostView: Send + 'static {
    fn host(&mut self) -> &mut HostCtx;
}

/// A WASI context that grants nothing: no preopened directories, no environment, no arguments,
/// no sockets or name lookups. Clocks and random stay available. Guest stdout/stderr go to
/// the run's capped log budget.
pub fn empty_wasi(budget: &LogBudget) -> WasiCtx {
    wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(budget.stdout())
        .stderr(budget.stderr())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

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
    fn preparing_a_plugin_reads_what_it_kept_so_that_runs_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let resources = Resources::new(&Setup::default(), Some(dir.path()));
        state::StateStore::new(Some(dir.path().to_path_buf()))
            .save("p", b"counters".to_vec())
            .unwrap();
        resources.prepare("p", &Grants::default());
        // Gone from the disk: a run's context still gets it, from memory.
        std::fs::remove_dir_all(dir.path().join("plugins")).unwrap();
        assert_eq!(resources.state.load("p").as_deref(), Some(&b"counters"[..]));
    }

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
    fn every_wit_interface_is_in_the_list_and_nothing_else() {
        let wit =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/collector.wit"))
                .unwrap();
        let mut interfaces: Vec<&str> = wit
            .lines()
            .filter_map(|line| line.strip_prefix("interface "))
            .map(|rest| rest.trim_end_matches(" {").trim())
            .collect();
        interfaces.sort();
        let mut listed: Vec<&str> = Capability::ALL.into_iter().map(Capability::name).collect();
        listed.sort();
        assert_eq!(listed, interfaces);
    }

    fn raw_grants(text: &str) -> Result<RawGrants, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn grant_tables_are_keyed_by_the_interfaces_that_need_a_grant() {
        let raw = raw_grants(
            "[procfs]\npaths = [\"stat\"]\n[fs-stats]\nmounts = [\"/\"]\n\
             [log-tail]\npaths = [\"/var/log/*.log\"]\n[postgres]\ndatabases = [\"*\"]\n",
        )
        .unwrap();
        let grants = Grants::validate(&raw).unwrap();
        for capability in Capability::ALL {
            assert!(grants.allows(capability), "{capability}");
        }
        let none = Grants::validate(&RawGrants::default()).unwrap();
        let allowed: Vec<&str> = Capability::ALL
            .into_iter()
            .filter(|c| none.allows(*c))
            .map(Capability::name)
            .collect();
        assert_eq!(allowed, ["types", "settings", "log", "state"]);
        for key in ["state", "log", "settings", "types", "procs", "fs_stats"] {
            let err = raw_grants(&format!("[{key}]\n")).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unknown field `{key}`"))
                    && err.contains("`procfs`, `fs-stats`, `log-tail`, `postgres`"),
                "{err}"
            );
        }
        let err = raw_grants("[procfs]\npaths = [\"stat\"]\nextra = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn every_invalid_grant_is_reported_with_its_key() {
        let raw = raw_grants(
            "[procfs]\npaths = [\"/etc/shadow\"]\n[fs-stats]\nmounts = [\"var\"]\n\
             [log-tail]\npaths = [\"/var/log/*.log\"]\nstart_at = \"middle\"\n\
             [postgres]\ndatabases = []\n",
        )
        .unwrap();
        let invalid = Grants::validate(&raw).unwrap_err();
        let found: Vec<(String, String)> = invalid
            .iter()
            .map(|e| (e.key_path(), e.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "grants.procfs.paths".to_owned(),
                    "procfs path `/etc/shadow` must be relative to /proc, not absolute".to_owned()
                ),
                (
                    "grants.fs-stats.mounts".to_owned(),
                    "mount `var` must be an absolute path or \"*\"".to_owned()
                ),
                (
                    "grants.log-tail.start_at".to_owned(),
                    "start_at `middle` is not `end` or `beginning`".to_owned()
                ),
                (
                    "grants.postgres.databases".to_owned(),
                    "list at least one database, or \"*\" for all".to_owned()
                ),
            ]
        );
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
