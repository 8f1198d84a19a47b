//! Shared by the end-to-end tests: builds the guest components and the `pganalytics` binary (once
//! per test binary; cargo's own locks serialise concurrent builds), runs the binary and writes
//! throwaway configs.
//!
//! The binary is the one of this workspace, in the target directory and profile these tests were
//! built for: a test executable lives in `TARGET_DIR[/TRIPLE]/PROFILE/deps/`, and
//! `TARGET_DIR/PROFILE/pganalytics` sits beside `deps/`. That honours `CARGO_TARGET_DIR`,
//! `--target-dir`, `--target` and `--profile` without reading them. Before the first use it runs
//! `cargo build -p pganalytics --bin pganalytics` for that same directory, profile and target,
//! which is a no-op when the binary is up to date and builds it when it is missing or stale, so
//! the tests never drive an old binary. `PGANALYTICS_BIN=/path/to/pganalytics` skips all of that
//! and tests the given binary (an installed package, say).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds every guest (collectors and hostile fixtures) for wasm32-wasip2 and returns the
/// directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let guests = repo_root().join("guests");
        let mut cargo = cargo();
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

/// The `pganalytics` binary under test, built first if it is missing or stale (see the module
/// documentation).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(given) = std::env::var_os("PGANALYTICS_BIN") {
            return PathBuf::from(given);
        }
        let build = BuildDir::of_this_test();
        let mut cargo = cargo();
        cargo.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "--package",
            "pganalytics",
            "--bin",
            "pganalytics",
            "--target-dir",
        ]);
        cargo.arg(&build.target_dir);
        match build.profile.as_str() {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        if let Some(triple) = &build.triple {
            cargo.args(["--target", triple]);
        }
        let status = cargo.status().expect("running cargo to build pganalytics");
        assert!(status.success(), "building the pganalytics binary failed");
        let binary = build.profile_dir.join("pganalytics");
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// Where cargo put this test executable: `TARGET_DIR[/TRIPLE]/PROFILE/deps/NAME-HASH`.
struct BuildDir {
    target_dir: PathBuf,
    triple: Option<String>,
    profile: String,
    profile_dir: PathBuf,
}

impl BuildDir {
    fn of_this_test() -> Self {
        let exe = std::env::current_exe().expect("the path of this test executable");
        let deps = exe.parent().expect("the test executable is in a directory");
        assert_eq!(
            deps.file_name().and_then(|n| n.to_str()),
            Some("deps"),
            "{} is not in cargo's `deps` directory; set PGANALYTICS_BIN",
            exe.display()
        );
        let profile_dir = deps.parent().expect("`deps` has a parent").to_path_buf();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile directory name")
            .to_owned();
        let above = profile_dir.parent().expect("a target directory");
        // Cargo marks the root of every target directory with CACHEDIR.TAG; a directory between
        // it and the profile is the `--target` triple.
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").is_file() {
            (above.to_path_buf(), None)
        } else {
            let triple = above.file_name().and_then(|n| n.to_str()).map(str::to_owned);
            let root = above.parent().expect("a target directory").to_path_buf();
            (root, triple)
        };
        Self {
            target_dir,
            triple,
            profile,
            profile_dir,
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
