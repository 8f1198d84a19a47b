//! The shape every capability has: one implementation of [`HostCapability`] per WIT interface.
//!
//! A capability owns its whole vertical: the TOML grant it reads (`GrantConfig`), the validated
//! grant shared by every run of a plugin (`Grant`), the resources it shares across all runs of
//! all plugins (`Shared`, e.g. a connection pool or an offsets store), the per-run context its
//! WIT `Host` trait is implemented on (`Ctx`), and what an accepted run leaves to keep
//! (`Pending`). The registry in `host/mod.rs` turns one list of these into everything else (the
//! `Capability` names, `RawGrants`, `Grants`, `HostCtx`, `link`). This module must never know
//! about any particular capability.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use wasmtime::component::Linker;

use super::run::RunInfo;

/// One WIT interface of `pganalytics:collector` and everything the host needs to serve it.
pub trait HostCapability: 'static {
    /// The interface name in WIT; also its key under `[plugins.NAME.grants]` and its name in
    /// logs and `plugin inspect`.
    const NAME: &'static str;
    /// What it gives a plugin, in a few words, for `plugin inspect`.
    const SUMMARY: &'static str;
    /// The body of an example grant table (`paths = ["stat"]`), shown to operators when a plugin
    /// imports it ungranted; `None` when it needs no grant (it only touches the plugin's own
    /// settings, log budget or state).
    const GRANT_EXAMPLE: Option<&'static str>;

    /// Runtime-wide settings from the config's own section for it (`[postgres]`); `()` for
    /// capabilities that have none.
    type Setup: fmt::Debug + Clone + Default + Send + Sync;
    /// `[plugins.NAME.grants.<NAME>]` as written (serde, unknown keys rejected).
    type GrantConfig: DeserializeOwned + fmt::Debug + Send + Sync;
    /// The validated grant, shared by every run of the plugin.
    type Grant: fmt::Debug + Send + Sync + 'static;
    /// Why a grant table is invalid; names the key at fault.
    type GrantError: GrantProblem;
    /// Resources shared by every run of every plugin of one host (cheap to clone).
    type Shared: Clone + Send + Sync + 'static;
    /// Per-run state; the WIT `Host` trait is implemented on it, so a capability only ever
    /// sees its own state.
    type Ctx: Send + 'static;
    /// What an accepted run leaves to keep (a state blob, log offsets); `()` for most.
    type Pending: fmt::Debug + Send + 'static;

    /// Validates a grant table.
    fn grant(config: &Self::GrantConfig) -> Result<Self::Grant, Self::GrantError>;

    /// Builds the shared resources; `state_dir` is where what must survive a restart is kept
    /// (`None`: in memory only).
    fn shared(setup: &Self::Setup, state_dir: Option<&Path>) -> Self::Shared;

    /// Reads what `plugin` kept on disk in an earlier process (its state blob, its log
    /// offsets) into `shared`, when the plugin is loaded. Loading runs on a blocking thread,
    /// so that `context`, which runs on an async worker at the start of every run, finds it in
    /// memory and never waits on the disk. `grant` as in `context`.
    fn prepare(_shared: &Self::Shared, _grant: Option<&Self::Grant>, _plugin: &str) {}

    /// The context of one run. `grant` is `None` when the plugin was not granted this
    /// capability (it is then not linked either, unless it needs no grant).
    fn context(grant: Option<Arc<Self::Grant>>, shared: &Self::Shared, run: &RunInfo) -> Self::Ctx;

    /// Puts the interface into `linker`, serving each call from the context `get` returns.
    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut Self::Ctx,
    ) -> wasmtime::Result<()>;

    /// Takes what a run leaves to keep once its output is accepted.
    fn take_pending(_ctx: &mut Self::Ctx) -> Option<Self::Pending> {
        None
    }

    /// Keeps it (only after the run's output is safe, so a lost run is read again).
    fn commit(
        _shared: &Self::Shared,
        _plugin: &str,
        _pending: Self::Pending,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// A grant validation error: says what is wrong and under which key of the grant table.
pub trait GrantProblem: std::error::Error + Send + Sync + 'static {
    /// The key of the grant table at fault (`paths`, `start_at`).
    fn key(&self) -> &'static str;
}

/// The grant of a capability that needs none: it cannot be written, validated or held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoGrant {}

impl fmt::Display for NoGrant {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoGrant {}

impl GrantProblem for NoGrant {
    fn key(&self) -> &'static str {
        match *self {}
    }
}

impl<'de> serde::Deserialize<'de> for NoGrant {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        // `RawGrants` never offers these keys; this only keeps the type honest.
        Err(serde::de::Error::custom("this interface needs no grant"))
    }
}
