//! The one `bindgen!` of the runtime: Rust types and host traits for `wit/collector.wit`.
//!
//! Every capability module implements the generated `Host` trait of its interface on its own
//! per-run context (see `host::link`), so a capability never sees another one's state.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "collector",
    // Host calls may wait on I/O (statvfs on a slow mount, SQL, log files); async lets the
    // plugin's wall-clock deadline cut them off instead of blocking a runtime thread.
    imports: { default: async },
    // `collect` runs under epoch interruption with async yields so a deadline can fire.
    exports: { default: async },
});

// The world's `use types.{error}` puts `Error` at the root of the generated module; bindgen
// also derives `Display` for it (`denied: message`), which host logs and run errors use.
