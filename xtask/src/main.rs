//! Project automation behind the README's two quick-start commands:
//!
//! - `cargo xtask demo`: build the runtime and every guest component, then run one collection of
//!   the sandboxed collectors on this machine (`pganalytics collect --once`).
//! - `cargo xtask test`: make sure what the tests need is installed, then run the whole suite.
//!
//! It only orchestrates `cargo`, `rustup` and (as root, for missing system packages) `apt-get`;
//! it never downloads anything else.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        _ => Err("usage: cargo xtask demo | cargo xtask test".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(what: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = command
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The wasm32-wasip2 standard library, which the guests are built against.
fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run(
        "installing the wasm32-wasip2 target",
        Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .current_dir(root()),
    )
}

fn build_guests() -> Result<(), String> {
    let mut command = cargo();
    command
        .current_dir(root().join("guests"))
        .args(["build", "--release"]);
    // The alias runs us under `cargo run`; its target settings must not leak into the guest build.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    run(
        "building the guest components (wasm32-wasip2)",
        &mut command,
    )
}

fn demo() -> Result<(), String> {
    ensure_wasm_target()?;
    build_guests()?;
    run(
        "building the runtime",
        cargo()
            .current_dir(root())
            .args(["build", "--release", "--package", "pganalytics"]),
    )?;
    let binary = root().join("target/release/pganalytics");
    let config = root().join("config.toml.sample");
    run(
        "collecting once with config.toml.sample (envelope on stdout, agent log on stderr)",
        Command::new(binary)
            .args(["collect", "--once", "--config"])
            .arg(config),
    )
}

fn test() -> Result<(), String> {
    ensure_wasm_target()?;
    build_guests()?;
    let mut totals = Totals::default();
    run_tests(
        "running the guest unit tests (native)",
        cargo().current_dir(root().join("guests")).args([
            "test",
            "--release",
            "--target",
            host_triple(),
        ]),
        &mut totals,
    )?;
    run_tests(
        "running the runtime test suite",
        cargo()
            .current_dir(root())
            .args(["test", "--release", "--workspace"]),
        &mut totals,
    )?;
    // One closing line for the whole run (cargo prints one per test binary).
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs a `cargo test` command, echoing its output and adding up its `test result:` lines.
fn run_tests(what: &str, command: &mut Command, totals: &mut Totals) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: {what}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("{what}: reading output: {e}"))?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count(rest, " passed");
            totals.failed += count(rest, " failed");
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The number before `label` in a line like `ok. 6 passed; 0 failed; ...`.
fn count(line: &str, label: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn host_triple() -> &'static str {
    // xtask is built for the host, so its own target is the host triple.
    env!("XTASK_HOST")
}
