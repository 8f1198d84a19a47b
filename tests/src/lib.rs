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
        let exe = std::env::current_exe().expect("the path of this test executable");
        let build = BuildDir::of_executable(&exe).unwrap_or_else(|why| panic!("{why}"));
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

/// Where cargo put a test executable: `TARGET_DIR[/TRIPLE]/PROFILE/deps/NAME-HASH`.
#[derive(Debug, PartialEq)]
struct BuildDir {
    target_dir: PathBuf,
    triple: Option<String>,
    profile: String,
    profile_dir: PathBuf,
}

impl BuildDir {
    fn of_executable(exe: &Path) -> Result<Self, String> {
        let not_cargo = || {
            format!(
                "{} is not in a cargo target directory; set PGANALYTICS_BIN",
                exe.display()
            )
        };
        let deps = exe.parent().ok_or_else(not_cargo)?;
        if deps.file_name().and_then(|n| n.to_str()) != Some("deps") {
            return Err(not_cargo());
        }
        let profile_dir = deps.parent().ok_or_else(not_cargo)?;
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(not_cargo)?
            .to_owned();
        let above = profile_dir.parent().ok_or_else(not_cargo)?;
        // Cargo marks the root of every target directory with CACHEDIR.TAG; a directory between
        // it and the profile is the `--target` triple.
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").is_file() {
            (above.to_path_buf(), None)
        } else {
            let root = above.parent().ok_or_else(not_cargo)?;
            if !root.join("CACHEDIR.TAG").is_file() {
                return Err(not_cargo());
            }
            let triple = above
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned);
            (root.to_path_buf(), triple)
        };
        Ok(Self {
            target_dir,
            triple,
            profile,
            profile_dir: profile_dir.to_path_buf(),
        })
    }
}

/// A cargo command without the variables cargo set for the crate that runs it. Build scripts
/// watch some of them (ring's reruns when `CARGO_MANIFEST_DIR` or `CARGO_PKG_NAME` differ from
/// what a plain build saw), so inherited they would rebuild ring, rustls, reqwest and the runtime
/// on every nested build, and the outer build once more afterwards.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_crate_variable(name) {
            command.env_remove(name);
        }
    }
    command
}

/// What cargo sets for one crate's build script, binary or test (not the user's own settings
/// such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_crate_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
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

/// A `[plugins.pg_stats]` section for the shipped pg_stats collector (its three item types, a
/// 20 s timeout) with a postgres grant of `databases` (a TOML list) and `cluster = true`, which
/// it needs; `extra` follows the grant (e.g. a settings table).
pub fn pg_stats_plugin(databases: &str, extra: &str) -> String {
    format!(
        "[plugins.pg_stats]\nwasm = {:?}\nemits = [\"pg_stats\", \"pg_query_stats\", \"pg_server\"]\ntimeout = \"20s\"\n[plugins.pg_stats.grants.postgres]\ndatabases = {databases}\ncluster = true\n{extra}",
        wasm("pg_stats").display().to_string()
    )
}

/// A `[plugins.NAME]` of the hostile_sql fixture running `statements` in `database`: its postgres
/// grant names that database plus the `grant` lines; `extra` lines go to the plugin's table.
pub fn sql_probe_plugin(
    name: &str,
    database: &str,
    grant: &str,
    extra: &str,
    statements: &[&str],
) -> String {
    let list = statements
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}[plugins.{name}.grants.postgres]\ndatabases = [{database:?}]\n{grant}\n[plugins.{name}.settings]\ndatabase = {database:?}\nstatements = [{list}]\n",
        plugin(name, "hostile_sql", "probe", extra)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A target directory as cargo lays it out, with a test executable at `exe` below it.
    fn layout(exe: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join(exe).parent().unwrap()).unwrap();
        std::fs::write(
            target.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55",
        )
        .unwrap();
        std::fs::write(target.join(exe), "").unwrap();
        let exe = target.join(exe);
        (dir, exe)
    }

    #[test]
    fn the_profile_and_target_dir_come_from_where_the_test_runs() {
        let (dir, exe) = layout("release/deps/sandbox-0123");
        let build = BuildDir::of_executable(&exe).unwrap();
        let target = dir.path().join("target");
        assert_eq!(
            build,
            BuildDir {
                target_dir: target.clone(),
                triple: None,
                profile: "release".into(),
                profile_dir: target.join("release"),
            }
        );
        let (_dir, exe) = layout("ci-profile/deps/sandbox-0123");
        assert_eq!(BuildDir::of_executable(&exe).unwrap().profile, "ci-profile");
    }

    #[test]
    fn a_target_triple_between_the_root_and_the_profile_is_kept() {
        let (dir, exe) = layout("x86_64-unknown-linux-gnu/debug/deps/pg_log-42");
        let build = BuildDir::of_executable(&exe).unwrap();
        assert_eq!(build.target_dir, dir.path().join("target"));
        assert_eq!(build.triple.as_deref(), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(build.profile, "debug");
    }

    #[test]
    fn an_executable_outside_a_target_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for exe in ["sandbox", "release/sandbox", "a/b/deps/sandbox"] {
            let path = dir.path().join(exe);
            let why = BuildDir::of_executable(&path).unwrap_err();
            assert!(why.contains("PGANALYTICS_BIN"), "{exe}: {why}");
        }
    }
}
