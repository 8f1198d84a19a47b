//! `log` capability: plugin messages into the host log, capped per run.
//!
//! Needs no grant. Messages draw on the run's [`LogBudget`], shared with WASI stdout/stderr (see
//! `budget`), so a plugin cannot flood the host log through either door.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::pganalytics::collector::log::{self, Level};
use super::budget::LogBudget;
use super::capability::{HostCapability, NoGrant};
use super::run::RunInfo;

/// The `log` interface.
pub struct Log;

impl HostCapability for Log {
    const NAME: &'static str = "log";
    const SUMMARY: &'static str = "write to the host log (capped)";
    const GRANT_EXAMPLE: Option<&'static str> = None;

    type Setup = ();
    type GrantConfig = NoGrant;
    type Grant = NoGrant;
    type GrantError = NoGrant;
    type Shared = ();
    type Ctx = LogCtx;
    type Pending = ();

    fn grant(config: &NoGrant) -> Result<NoGrant, NoGrant> {
        match *config {}
    }

    fn shared(_: &(), _: Option<&Path>) {}

    fn context(_: Option<Arc<NoGrant>>, _: &(), run: &RunInfo) -> LogCtx {
        LogCtx::new(run.log.clone())
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut LogCtx,
    ) -> wasmtime::Result<()> {
        log::add_to_linker::<T, HasSelf<LogCtx>>(linker, get)
    }
}

/// Per-run state of the `log` capability: the run's budget.
pub struct LogCtx {
    budget: LogBudget,
}

impl LogCtx {
    pub fn new(budget: LogBudget) -> Self {
        Self { budget }
    }
}

impl log::Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) {
        self.budget.log(level, &message);
    }
}
