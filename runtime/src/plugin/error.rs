//! Why a plugin could not be loaded ([`LoadError`]) or one of its runs produced nothing
//! ([`RunError`]). Every variant names the plugin; the loader's errors also name the file and,
//! for an ungranted import, the TOML that would grant it.

use std::path::PathBuf;

use super::signature;
use crate::host::Capability;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{plugin}`: cannot read `{}`: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: `{}` is {size} bytes, over the {max}-byte limit for components", path.display())]
    TooLarge {
        plugin: String,
        path: PathBuf,
        size: u64,
        max: u64,
    },
    #[error(
        "plugin `{plugin}`: `{}` has sha256 {actual}, but the config pins {expected}; refusing the changed file",
        path.display()
    )]
    DigestMismatch {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "plugin `{plugin}`: `{}` must be signed by {signers}, but its signature file `{}` is missing: {reason}",
        path.display(),
        signature.display()
    )]
    SignatureMissing {
        plugin: String,
        path: PathBuf,
        signature: PathBuf,
        signers: String,
        reason: String,
    },
    #[error(
        "plugin `{plugin}`: the signature file `{}` of `{}` is unreadable or malformed: {reason}",
        signature.display(),
        path.display()
    )]
    SignatureMalformed {
        plugin: String,
        path: PathBuf,
        signature: PathBuf,
        reason: String,
    },
    #[error(
        "plugin `{plugin}`: refusing `{}` (sha256 {sha256}): {reason}",
        path.display()
    )]
    SignatureRejected {
        plugin: String,
        path: PathBuf,
        sha256: String,
        reason: signature::Rejection,
    },
    #[error("plugin `{plugin}`: `{}` is not a valid WebAssembly component: {message}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "plugin `{plugin}`: `{}` is over the sandbox's structural caps, refused before compiling: {caps}",
        path.display()
    )]
    OverStructuralCap {
        plugin: String,
        path: PathBuf,
        caps: String,
    },
    #[error("plugin `{plugin}`: `{}` does not export `collect` from world `pganalytics:collector/collector`", path.display())]
    NoCollect { plugin: String, path: PathBuf },
    #[error(
        "plugin `{plugin}` imports `{import}`, which this runtime does not provide \
         (it provides pganalytics:collector@0.1.x and WASI 0.2)"
    )]
    UnknownImport { plugin: String, import: String },
    #[error("plugin `{plugin}` imports `{}` but is not granted it; to allow it, add to the config:\n{example}", capability.name())]
    NotGranted {
        plugin: String,
        capability: Capability,
        example: String,
    },
    #[error("plugin `{plugin}`: linking failed: {message}")]
    Link { plugin: String, message: String },
}

/// Why one run of a plugin produced no accepted output. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("plugin `{plugin}` exceeded its {limit} wall-clock deadline")]
    Deadline { plugin: String, limit: String },
    #[error("plugin `{plugin}` exceeded its {limit} memory limit")]
    Memory { plugin: String, limit: String },
    #[error("plugin `{plugin}` ran out of fuel ({fuel} units per run)")]
    Fuel { plugin: String, fuel: u64 },
    #[error("plugin `{plugin}` overflowed its wasm stack (unbounded recursion?)")]
    StackOverflow { plugin: String },
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin `{plugin}` returned {size} bytes of output, over its {limit} limit")]
    OutputTooLarge {
        plugin: String,
        size: u64,
        limit: String,
    },
    /// `message` is the guest's text, cut and escaped (see `host::guest_text`).
    #[error("plugin `{plugin}` reported an error: {kind}: {message}")]
    Guest {
        plugin: String,
        kind: &'static str,
        message: String,
    },
    #[error("plugin `{plugin}` returned invalid output: {reason}")]
    InvalidOutput { plugin: String, reason: String },
    #[error("plugin `{plugin}`: cannot save its state: {message}")]
    State { plugin: String, message: String },
    /// The host had no room for the run (every slot of the shared instance pool was taken by
    /// runs of other plugins). Not the plugin's fault: it is not backed off, and runs again at
    /// its next interval.
    #[error(
        "plugin `{plugin}` was not run: the host is busy ({message}); it runs again at its next interval"
    )]
    HostBusy { plugin: String, message: String },
}

impl RunError {
    /// Whether a sandbox limit stopped the run (as opposed to the plugin failing by itself).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            RunError::Deadline { .. }
                | RunError::Memory { .. }
                | RunError::Fuel { .. }
                | RunError::StackOverflow { .. }
                | RunError::OutputTooLarge { .. }
        )
    }

    /// A short stable label, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RunError::Deadline { .. } => "deadline",
            RunError::Memory { .. } => "memory",
            RunError::Fuel { .. } => "fuel",
            RunError::StackOverflow { .. } => "stack_overflow",
            RunError::Trap { .. } => "trap",
            RunError::OutputTooLarge { .. } => "output_too_large",
            RunError::Guest { .. } => "guest_error",
            RunError::InvalidOutput { .. } => "invalid_output",
            RunError::State { .. } => "state",
            RunError::HostBusy { .. } => "host_busy",
        }
    }

    /// Whether the host, not the plugin, is why the run failed (see [`RunError::HostBusy`]).
    pub fn is_host_side(&self) -> bool {
        matches!(self, RunError::HostBusy { .. })
    }
}
