//! What a component asks for, read from its import list before it ever runs, and whether this
//! host can satisfy it. Used by the loader to refuse ungranted imports and by `pganalytics plugin
//! inspect`.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use crate::host::bindings::CollectorPre;
use crate::host::{self, Capability};

use super::RunState;

/// One import of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Import {
    /// An interface of `pganalytics:collector`.
    Capability {
        interface: String,
        capability: &'static str,
        needs_grant: bool,
        summary: &'static str,
    },
    /// A WASI interface; the runtime links WASI with no files, environment or network.
    Wasi { interface: String },
    /// Anything else: the runtime cannot satisfy it.
    Unknown { interface: String },
}

/// The imports and exports of a component.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub imports: Vec<Import>,
    pub exports: Vec<String>,
}

impl Manifest {
    pub fn of(engine: &Engine, component: &Component) -> Self {
        let ty = component.component_type();
        let imports = ty
            .imports(engine)
            .map(|(name, _)| match Capability::from_import(name) {
                Some(capability) => Import::Capability {
                    interface: name.to_owned(),
                    capability: capability.name(),
                    needs_grant: capability.needs_grant(),
                    summary: capability.summary(),
                },
                None if name.starts_with("wasi:") => Import::Wasi {
                    interface: name.to_owned(),
                },
                None => Import::Unknown {
                    interface: name.to_owned(),
                },
            })
            .collect();
        let exports = ty
            .exports(engine)
            .map(|(name, item)| match item.ty {
                ComponentItem::ComponentFunc(_) => format!("func {name}"),
                _ => name.to_owned(),
            })
            .collect();
        Self { imports, exports }
    }

    /// Capabilities this component imports.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut capabilities: Vec<Capability> = self
            .imports
            .iter()
            .filter_map(|import| match import {
                Import::Capability { interface, .. } => Capability::from_import(interface),
                _ => None,
            })
            .collect();
        capabilities.sort();
        capabilities.dedup();
        capabilities
    }

    pub fn unknown_imports(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter_map(|import| match import {
                Import::Unknown { interface } => Some(interface.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn exports_collect(&self) -> bool {
        self.exports.iter().any(|e| e == "func collect")
    }
}

/// Whether this host can satisfy every import of `component`, with the types the component
/// expects, and finds `collect` with the contract's signature: WASI and every capability are
/// linked, as if all were granted, and the component is pre-instantiated (nothing runs). A
/// `wasi:` interface the runtime does not implement, an interface of another version, or a
/// function of `pganalytics:collector` with the wrong signature fails here with wasmtime's reason,
/// which names the import. The loader does the same with only the plugin's grants linked.
pub fn check_links(engine: &Engine, component: &Component) -> Result<(), String> {
    let mut linker: Linker<RunState> = Linker::new(engine);
    host::link_where(&mut linker, |_| true).map_err(|e| format!("{e:#}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    CollectorPre::new(pre).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::Component as Encoder;

    fn check(bytes: &[u8]) -> Result<(), String> {
        let engines = super::super::Engines::new().unwrap();
        let engine = engines.get(false).unwrap();
        let component = Component::new(&engine, bytes).unwrap();
        check_links(&engine, &component)
    }

    // Imports the host cannot satisfy: tests/sandbox.rs, through `plugin inspect`.

    #[test]
    fn a_component_without_collect_is_not_runnable() {
        let err = check(&Encoder::new().finish()).unwrap_err();
        assert!(err.contains("collect"), "{err}");
    }

    /// The collectors this repository ships pass (when they were built).
    #[test]
    fn shipped_collectors_are_runnable() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../guests/target/wasm32-wasip2/release"
        );
        for name in ["sysstat", "disk", "pg_log", "pg_stats"] {
            let path = format!("{dir}/{name}.wasm");
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!("{path} not built; skipped");
                continue;
            };
            check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
