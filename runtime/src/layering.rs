//! The crate's layering, checked on its own source: which top-level module may use which.
//!
//! `units`, `fsutil` and `heap` are leaves; `host` (the capabilities) builds only on leaves and
//! never on `config` or `plugin`; nothing imports in a circle. A module's dependencies are the other
//! top-level modules its files name through `crate::` (or `super::` paths that climb to the
//! crate root), comments excluded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let Some(module) = module_path(relative) else {
            continue;
        };
        let Some(top) = module.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let uses = graph.entry(top.clone()).or_default();
        for named in named_modules(&text, module.len()) {
            if named != top {
                uses.insert(named);
            }
        }
    }
    // A `super::` in a file's test module climbs one level less than counted; keep only names
    // that are modules.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|named| modules.contains(named));
    }
    graph
}

/// `host/postgres/pool.rs` → `[host, postgres, pool]`; `None` for the crate root and `main.rs`.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    if relative.extension()? != "rs" {
        return None;
    }
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [] => None,
        [only] if only == "lib" || only == "main" => None,
        _ => Some(parts),
    }
}

/// The top-level modules a file at `depth` (1 for `config/mod.rs` or `units.rs`) names.
fn named_modules(text: &str, depth: usize) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        loop {
            let at = match (rest.find("crate::"), rest.find("super::")) {
                (Some(a), Some(b)) => a.min(b),
                (Some(at), None) | (None, Some(at)) => at,
                (None, None) => break,
            };
            let (from_root, after) = if rest[at..].starts_with("crate::") {
                (true, &rest[at + "crate::".len()..])
            } else {
                let mut after = &rest[at..];
                let mut climbs = 0;
                while let Some(next) = after.strip_prefix("super::") {
                    climbs += 1;
                    after = next;
                }
                (climbs >= depth, after)
            };
            let word: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::` (a macro's path to this crate) counts the same; items of the crate root
            // (`crate::VERSION`) are not modules.
            if from_root && !word.is_empty() && word.chars().next().unwrap().is_ascii_lowercase() {
                named.insert(word);
            }
            rest = after;
        }
    }
    named
}

/// The modules reachable from `start` (itself included when it is on a circle).
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph
        .get(start)
        .map(|next| next.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(module) = stack.pop() {
        if seen.insert(module.to_owned())
            && let Some(next) = graph.get(module)
        {
            stack.extend(next.iter().map(String::as_str));
        }
    }
    seen
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = dependencies();
    assert!(graph.len() >= 8, "too few modules found: {graph:?}");
    for module in graph.keys() {
        assert!(
            !reachable(&graph, module).contains(module),
            "`{module}` imports itself through {graph:#?}"
        );
    }
}

#[test]
fn leaves_and_capabilities_stay_below_config_and_plugins() {
    let graph = dependencies();
    let leaves = ["units", "fsutil", "heap"];
    for leaf in leaves {
        assert_eq!(graph[leaf], BTreeSet::new(), "`{leaf}` must import nothing");
    }
    let below: BTreeSet<String> = leaves.map(String::from).into();
    assert!(
        reachable(&graph, "host").is_subset(&below),
        "`host` may build on the leaves only: {:?}",
        graph["host"]
    );
    for upper in ["config", "plugin", "pipeline", "agent", "telemetry"] {
        assert!(
            !reachable(&graph, "plugin").contains(upper),
            "`plugin` reaches `{upper}`"
        );
    }
}

#[test]
fn the_scanner_sees_crate_and_climbing_super_paths_but_not_comments() {
    let text = "use crate::units::ByteSize;\n\
                let x = super::super::config::load; // crate::agent\n\
                use super::audit::Audit;\n\
                /// see `crate::pipeline`\n\
                $crate::host::capability::HostCapability";
    let named = named_modules(text, 2);
    let expected: BTreeSet<String> = ["units", "config", "host"].map(String::from).into();
    assert_eq!(named, expected);
}
