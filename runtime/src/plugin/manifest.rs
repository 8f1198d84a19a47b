//! What a component asks for, read from its import list before it ever runs. Used by the loader
//! to refuse ungranted imports and by `pganalytics plugin inspect`.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::host::Capability;

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
