//! `types` interface: the shared WIT types (`error`, `value`, ...). It has no functions and
//! gives a plugin no access to anything; it is linked so components that import it resolve.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::pganalytics::collector::types;
use super::capability::{HostCapability, NoGrant};
use super::run::RunInfo;

/// The `types` interface.
pub struct Types;

impl HostCapability for Types {
    const NAME: &'static str = "types";
    const SUMMARY: &'static str = "shared types (no access)";
    const GRANT_EXAMPLE: Option<&'static str> = None;

    type Setup = ();
    type GrantConfig = NoGrant;
    type Grant = NoGrant;
    type GrantError = NoGrant;
    type Shared = ();
    type Ctx = TypesCtx;
    type Pending = ();

    fn grant(config: &NoGrant) -> Result<NoGrant, NoGrant> {
        match *config {}
    }

    fn shared(_: &(), _: Option<&Path>) {}

    fn context(_: Option<Arc<NoGrant>>, _: &(), _: &RunInfo) -> TypesCtx {
        TypesCtx
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut TypesCtx,
    ) -> wasmtime::Result<()> {
        types::add_to_linker::<T, HasSelf<TypesCtx>>(linker, get)
    }
}

/// Per-run state of `types`: nothing.
pub struct TypesCtx;

impl types::Host for TypesCtx {}
