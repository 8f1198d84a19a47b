//! Structural caps checked on a component's bytes before anything of it is compiled, and the
//! per-run counts of instances, memories and tables that the pooling allocator is sized for.
//!
//! Threats: compiling is the one step whose cost the file alone decides (a 52 MB component
//! with a million functions took 43 s and 5.4 GB to compile), and instantiating is the one
//! step where a plugin draws on slots shared with the others (a 241 KB component with 127 core
//! instances took every memory slot of the pool). The caps below bound both from the binary
//! alone, by a single pass of `wasmparser` that allocates nothing per function; the per-run
//! counts are enforced again at instantiation by the store's limiter (`limits::RunLimiter`),
//! which sees what static counting cannot (a nested component instantiated twice).
//!
//! The shipped collectors use a small fraction of every cap (see the `shipped_guests` test).
//! This module must never compile or run anything.

use std::path::Path;

use wasmparser::{Instance, Parser, Payload};

use super::error::LoadError;

/// Threat: a million small functions making Cranelift run for minutes and gigabytes.
pub const MAX_FUNCTIONS: u64 = 100_000;

/// Threat: a huge code section (compile time and memory grow with it).
pub const MAX_CODE_BYTES: u64 = 16 << 20;

/// Threat: one giant function body (register allocation is superlinear in it).
pub const MAX_FUNCTION_BODY_BYTES: u64 = 1 << 20;

/// Threat: many core modules, each compiled separately.
pub const MAX_CORE_MODULES: u64 = 16;

/// Threat: core instances (each takes a slot of the shared pool) starving other plugins. Also
/// the per-run limit of the store.
pub const MAX_CORE_INSTANCES: u64 = 32;

/// Threat: linear memories (each a pool slot reserving 4 GiB of address space) starving other
/// plugins. Per run, counted over every core instance the component creates.
pub const MAX_MEMORIES: u64 = 4;

/// Threat: tables taking the pool's table slots from other plugins. Per run.
pub const MAX_TABLES: u64 = 16;

/// Threat: deeply nested or many nested components multiplying everything above.
pub const MAX_NESTED_COMPONENTS: u64 = 8;

/// What one component holds, counted over all its nested modules and components.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Structure {
    pub functions: u64,
    pub code_bytes: u64,
    pub largest_function_bytes: u64,
    pub core_modules: u64,
    /// Core module instantiations (each takes a pool slot).
    pub core_instances: u64,
    /// Memories defined by the core instances it creates (imported memories are shared).
    pub memories: u64,
    /// Tables defined by the core instances it creates.
    pub tables: u64,
    pub nested_components: u64,
}

/// One cap a component exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub what: &'static str,
    pub count: u64,
    pub max: u64,
}

impl Structure {
    /// Counts what `bytes` holds, without validating or compiling it. Errors are the parser's
    /// (a malformed binary), which compiling would report too.
    pub fn survey(bytes: &[u8]) -> Result<Structure, wasmparser::BinaryReaderError> {
        let mut s = Structure::default();
        // Per core module (in the order they appear, which is their index in a flat
        // component such as wasm-component-ld produces): its defined memories and tables.
        let mut modules: Vec<(u64, u64)> = Vec::new();
        let mut largest = (0, 0);
        // The module being read, if any (modules cannot nest in core wasm).
        let mut current: Option<(u64, u64)> = None;
        // Module indices restart in each nested component: count conservatively by the
        // largest module of the file when an index is not one of the top level's.
        let mut depth = 0u32;
        let mut instantiations: Vec<u32> = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::ModuleSection { .. } => {
                    s.core_modules += 1;
                    current = Some((0, 0));
                }
                Payload::ComponentSection { .. } => {
                    s.nested_components += 1;
                    depth += 1;
                }
                Payload::End(_) => {
                    if let Some(module) = current.take() {
                        largest = (largest.0.max(module.0), largest.1.max(module.1));
                        if depth == 0 {
                            modules.push(module);
                        }
                    } else {
                        depth = depth.saturating_sub(1);
                    }
                }
                Payload::MemorySection(reader) => {
                    if let Some(module) = &mut current {
                        module.0 += u64::from(reader.count());
                    }
                }
                Payload::TableSection(reader) => {
                    if let Some(module) = &mut current {
                        module.1 += u64::from(reader.count());
                    }
                }
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        // Only instantiations create instances; a bag of exports does not.
                        if let Instance::Instantiate { module_index, .. } = instance? {
                            s.core_instances += 1;
                            // Nested components have their own index space.
                            instantiations.push(if depth == 0 { module_index } else { u32::MAX });
                        }
                    }
                }
                Payload::CodeSectionStart { count, size, .. } => {
                    s.functions += u64::from(count);
                    s.code_bytes += u64::from(size);
                }
                Payload::CodeSectionEntry(body) => {
                    let len = body.range().len() as u64;
                    s.largest_function_bytes = s.largest_function_bytes.max(len);
                }
                _ => {}
            }
        }
        for index in instantiations {
            let (memories, tables) = modules.get(index as usize).copied().unwrap_or(largest);
            s.memories += memories;
            s.tables += tables;
        }
        Ok(s)
    }

    /// The caps this structure exceeds, in a fixed order.
    pub fn exceeded(&self) -> Vec<Exceeded> {
        [
            ("functions", self.functions, MAX_FUNCTIONS),
            ("bytes of code", self.code_bytes, MAX_CODE_BYTES),
            (
                "bytes in one function body",
                self.largest_function_bytes,
                MAX_FUNCTION_BODY_BYTES,
            ),
            ("core modules", self.core_modules, MAX_CORE_MODULES),
            ("core instances", self.core_instances, MAX_CORE_INSTANCES),
            ("linear memories", self.memories, MAX_MEMORIES),
            ("tables", self.tables, MAX_TABLES),
            (
                "nested components",
                self.nested_components,
                MAX_NESTED_COMPONENTS,
            ),
        ]
        .into_iter()
        .filter(|(_, count, max)| count > max)
        .map(|(what, count, max)| Exceeded { what, count, max })
        .collect()
    }
}

/// Refuses a component over any structural cap, naming the plugin, the file and every cap.
pub fn check(plugin: &str, path: &Path, bytes: &[u8]) -> Result<Structure, LoadError> {
    let structure = Structure::survey(bytes).map_err(|e| LoadError::Compile {
        plugin: plugin.into(),
        path: path.into(),
        message: e.to_string(),
    })?;
    let exceeded = structure.exceeded();
    if exceeded.is_empty() {
        return Ok(structure);
    }
    Err(LoadError::OverStructuralCap {
        plugin: plugin.into(),
        path: path.into(),
        caps: exceeded
            .iter()
            .map(|e| format!("{} {} (max {})", e.count, e.what, e.max))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, InstanceSection, MemorySection,
        MemoryType, Module, ModuleArg, ModuleSection, TableSection, TableType, TypeSection,
        ValType,
    };

    /// A core module with `functions` empty functions, `memories` memories and `tables` tables.
    pub(crate) fn module(functions: u32, memories: u32, tables: u32) -> Module {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types
            .ty()
            .function(Vec::<ValType>::new(), Vec::<ValType>::new());
        module.section(&types);
        let mut funcs = FunctionSection::new();
        for _ in 0..functions {
            funcs.function(0);
        }
        module.section(&funcs);
        let mut tabs = TableSection::new();
        for _ in 0..tables {
            tabs.table(TableType {
                element_type: wasm_encoder::RefType::FUNCREF,
                minimum: 1,
                maximum: None,
                table64: false,
                shared: false,
            });
        }
        module.section(&tabs);
        let mut mems = MemorySection::new();
        for _ in 0..memories {
            mems.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        module.section(&mems);
        let mut code = CodeSection::new();
        for _ in 0..functions {
            let mut f = Function::new(Vec::new());
            f.instructions().end();
            code.function(&f);
        }
        module.section(&code);
        module
    }

    /// A component holding `module` and instantiating it `instances` times.
    pub(crate) fn component(module: &Module, instances: u32) -> Vec<u8> {
        let mut component = Component::new();
        component.section(&ModuleSection(module));
        let mut section = InstanceSection::new();
        for _ in 0..instances {
            section.instantiate(0, Vec::<(&str, ModuleArg)>::new());
        }
        component.section(&section);
        component.finish()
    }

    #[test]
    fn counts_what_instantiation_will_create() {
        let s = Structure::survey(&component(&module(3, 1, 2), 5)).unwrap();
        assert_eq!(
            (
                s.functions,
                s.core_modules,
                s.core_instances,
                s.memories,
                s.tables
            ),
            (3, 1, 5, 5, 10)
        );
        assert!(s.exceeded().iter().any(|e| e.what == "linear memories"));
    }

    #[test]
    fn each_cap_is_named_with_its_count() {
        let cases = [
            (
                component(&module(1, 1, 0), 127),
                vec!["core instances", "linear memories"],
            ),
            (component(&module(0, 0, 1), 17), vec!["tables"]),
            (
                component(&module(MAX_FUNCTIONS as u32 + 1, 0, 0), 0),
                vec!["functions"],
            ),
        ];
        for (bytes, expected) in cases {
            let err = check("hostile", Path::new("h.wasm"), &bytes)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("plugin `hostile`") && err.contains("h.wasm"),
                "{err}"
            );
            for what in expected {
                assert!(err.contains(what), "{what}: {err}");
            }
        }
        let mut many = Component::new();
        for _ in 0..=MAX_CORE_MODULES {
            many.section(&ModuleSection(&module(0, 0, 0)));
        }
        let err = check("m", Path::new("m.wasm"), &many.finish())
            .unwrap_err()
            .to_string();
        assert!(err.contains("17 core modules (max 16)"), "{err}");
    }

    #[test]
    fn a_huge_function_body_or_code_section_is_refused() {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types
            .ty()
            .function(Vec::<ValType>::new(), Vec::<ValType>::new());
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut code = CodeSection::new();
        let mut f = Function::new(Vec::new());
        for _ in 0..(MAX_FUNCTION_BODY_BYTES as usize) {
            f.instructions().nop();
        }
        f.instructions().end();
        code.function(&f);
        m.section(&code);
        let err = check("big", Path::new("big.wasm"), &component(&m, 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bytes in one function body"), "{err}");
    }

    /// The collectors and fixtures this repository ships use a small part of every cap.
    #[test]
    fn shipped_guests_pass_by_a_wide_margin() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../guests/target/wasm32-wasip2/release"
        );
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("no guests built in {dir}; skipped");
            return;
        };
        let mut seen = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let s = Structure::survey(&std::fs::read(&path).unwrap()).unwrap();
            eprintln!("{}: {s:?}", path.display());
            assert!(
                s.functions * 10 < MAX_FUNCTIONS,
                "{}: {s:?}",
                path.display()
            );
            assert!(
                s.code_bytes * 4 < MAX_CODE_BYTES,
                "{}: {s:?}",
                path.display()
            );
            assert!(
                s.core_instances * 2 <= MAX_CORE_INSTANCES,
                "{}: {s:?}",
                path.display()
            );
            assert!(s.memories * 2 <= MAX_MEMORIES, "{}: {s:?}", path.display());
            assert!(s.tables * 2 <= MAX_TABLES, "{}: {s:?}", path.display());
            seen += 1;
        }
        eprintln!("{seen} components checked");
    }
}
