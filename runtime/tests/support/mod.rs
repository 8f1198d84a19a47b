//! Shared by the integration tests: builds the guest components (once per test binary; cargo's
//! own lock serialises concurrent builds) and writes throwaway configs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Builds every guest (collectors and hostile fixtures) for wasm32-wasip2 and returns the
/// directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let guests = repo_root().join("guests");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(&guests)
            .args(["build", "--release", "--quiet"]);
        // Variables cargo sets for this test build would leak into the guest build.
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
        ] {
            cargo.env_remove(var);
        }
        let status = cargo.status().expect("running cargo for the guests");
        assert!(status.success(), "building the guest components failed");
        guests.join("target/wasm32-wasip2/release")
    })
}

pub fn wasm(name: &str) -> PathBuf {
    let path = guests().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pganalytics")
}

/// Runs the real binary and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env("PGANALYTICS_LOG", "warn")
        .output()
        .expect("running pganalytics");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `[plugins.NAME]` section for a built guest, with extra TOML lines.
pub fn plugin(name: &str, component: &str, emits: &str, extra: &str) -> String {
    format!(
        "[plugins.{name}]\nwasm = {:?}\nemits = [{emits:?}]\n{extra}\n",
        wasm(component).display().to_string()
    )
}

pub const SYSSTAT_GRANTS: &str = "[plugins.sysstat.grants.procfs]\npaths = [\"stat\", \"meminfo\", \"diskstats\", \"loadavg\"]\n";

/// Writes `body` (plus a `[collector]` section using `dir` as state dir) to `dir/config.toml`.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[collector]\nid = \"test-collector\"\nstate_dir = {:?}\n\n{body}",
        dir.join("state").display().to_string()
    );
    std::fs::write(&path, text).expect("writing the test config");
    path
}
