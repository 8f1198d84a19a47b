//! Project automation behind the README's two quick-start commands:
//!
//! - `cargo xtask demo`: build the runtime and every guest component, run one collection of the
//!   sandboxed collectors on this machine (`pganalytics collect --once`), then the agent itself
//!   (`pganalytics run`) for a few seconds against a local HTTPS test backend.
//! - `cargo xtask test`: make sure what the tests need is installed, then run the whole suite.
//! - `cargo xtask soak [MINUTES]`: the demo's agent with every collector on a 2–5 s interval for
//!   MINUTES (default 20), reporting its RSS over time and what the backend received.
//! - `cargo xtask bench [--quick]`: the benchmark suite (`bench/`), which rewrites BENCHMARKS.md.
//! - `cargo xtask dist`: the Debian package in target/dist (see `dist.rs`); `cargo xtask
//!   test-package` installs, runs and purges it on this machine (`dist_test.rs`, also the last
//!   step of `test`).
//!
//! It only orchestrates `cargo`, `rustup` and (as root, for missing system packages) `apt-get`;
//! it never downloads anything else.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod dist;
mod dist_test;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "soak" => match std::env::args()
            .nth(2)
            .unwrap_or_else(|| "20".into())
            .parse()
        {
            Ok(minutes) => soak(minutes),
            Err(_) => Err("usage: cargo xtask soak [MINUTES]".to_owned()),
        },
        "bench" => bench(std::env::args().nth(2).as_deref() == Some("--quick")),
        "dist" => dist::dist().map(drop),
        "test-package" => dist_test::run(true),
        _ => Err(
            "usage: cargo xtask demo | cargo xtask test | cargo xtask soak [MINUTES] | cargo xtask bench [--quick] | cargo xtask dist | cargo xtask test-package"
                .to_owned(),
        ),
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

/// A cargo command without the variables `cargo run` set for xtask itself. Build scripts watch
/// some of them (ring's reruns when `CARGO_MANIFEST_DIR` or `CARGO_PKG_NAME` change), so
/// inherited they would rebuild ring, rustls, reqwest and the runtime on every xtask command.
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

/// Builds every guest component and the runtime; returns the `pganalytics` binary.
fn build_everything() -> Result<PathBuf, String> {
    build_guests()?;
    run(
        "building the runtime",
        cargo()
            .current_dir(root())
            .args(["build", "--release", "--package", "pganalytics"]),
    )?;
    Ok(root().join("target/release/pganalytics"))
}

fn demo() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_system_packages(false)?;
    let binary = build_everything()?;
    let sample = root().join("config.toml.sample");
    if throwaway_pg::server_bin().is_none() {
        eprintln!(
            "xtask: no PostgreSQL server binaries (Debian: apt-get install postgresql), so the demo runs \
             the system collectors only"
        );
        return run(
            "collecting once with config.toml.sample (envelope on stdout, agent log on stderr)",
            Command::new(binary)
                .args([
                    "collect", "--once", "--plugin", "sysstat", "--plugin", "disk", "--config",
                ])
                .arg(sample),
        );
    }
    // A throwaway cluster stands in for the local PostgreSQL the sample config points at.
    eprintln!("xtask: starting a throwaway PostgreSQL cluster for the demo");
    let cluster =
        throwaway_pg::TestCluster::start(&["logging_collector=on", "log_filename=postgresql.log"]);
    cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements");
    // Something worth seeing in pg_log: an error with its statement.
    let _ = cluster.try_psql("postgres", "SELECT 'demo' || 1/0");
    let sample_text =
        std::fs::read_to_string(&sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let demo_dir = root().join("target/demo");
    std::fs::create_dir_all(&demo_dir).map_err(|e| e.to_string())?;
    let config_path = demo_dir.join("config.toml");
    let demo_text = demo_config(&sample_text, &cluster);
    std::fs::write(&config_path, &demo_text).map_err(|e| e.to_string())?;
    run(
        "collecting once with config.toml.sample pointed at the throwaway cluster (envelope on stdout, agent log on stderr)",
        Command::new(&binary)
            .args(["collect", "--once", "--config"])
            .arg(&config_path),
    )?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_agent(&binary, &demo_text, &demo_dir, AGENT_DEMO, None))
}

/// The demo's agent for `minutes`, with short intervals and an error logged every 5 s so
/// pg_log has work, sampling the agent's RSS every 30 s.
fn soak(minutes: u64) -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_system_packages(true)?;
    let binary = build_everything()?;
    let sample = root().join("config.toml.sample");
    let cluster =
        throwaway_pg::TestCluster::start(&["logging_collector=on", "log_filename=postgresql.log"]);
    cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements");
    let sample_text =
        std::fs::read_to_string(&sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let dir = root().join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = demo_config(&sample_text, &cluster)
        .replace("push_interval = \"60s\"", "push_interval = \"1s\"")
        .replace("interval = \"30s\"", "interval = \"2s\"")
        .replace("interval = \"60s\"", "interval = \"3s\"")
        .replace("interval = \"5m\"", "interval = \"5s\"")
        .replace(
            "\"target/pganalytics-state\"",
            &format!("{:?}", dir.join("state").display().to_string()),
        )
        .replace(
            &format!("{}/target/pganalytics-state", root().display()),
            &dir.join("state").display().to_string(),
        );
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_agent(
        &binary,
        &config,
        &dir,
        std::time::Duration::from_secs(minutes * 60),
        Some(&cluster),
    ))
}

/// The benchmark suite against the release runtime and guests; `quick` is a smoke run of the
/// suite with small sizes (its numbers are not the ones to quote).
fn bench(quick: bool) -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_system_packages(true)?;
    ensure_comparison_exporters();
    let binary = build_everything()?;
    let mut command = cargo();
    command
        .current_dir(root())
        .args([
            "run",
            "--release",
            "--package",
            "pganalytics-bench",
            "--",
            "--agent",
        ])
        .arg(binary);
    if quick {
        command.arg("--quick");
    }
    run(
        "running the benchmark suite (rewrites BENCHMARKS.md)",
        &mut command,
    )
}

/// How long the demo lets `pganalytics run` work: every plugin's first run is jittered by at
/// most 10 s.
const AGENT_DEMO: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs the agent for `duration` against a local test backend (HTTPS on 127.0.0.1,
/// shared-secret tokens) and reports what the backend received. With a `soak` cluster, an error
/// is logged there every 5 s and the agent's RSS is sampled every 30 s.
async fn run_agent(
    binary: &Path,
    config: &str,
    dir: &Path,
    duration: std::time::Duration,
    soak: Option<&throwaway_pg::TestCluster>,
) -> Result<(), String> {
    use test_backend::{BackendConfig, TestBackend};
    // Like the real backend, the test backend does not decode gzip: the sender's default
    // `compression = "auto"` falls back to plain JSON after the first batch.
    let backend = TestBackend::start(BackendConfig::default()).await;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .map(|()| path.display().to_string())
            .map_err(|e| e.to_string())
    };
    let ca = write("backend-ca.pem", backend.ca_pem().as_bytes())?;
    let secret = write("jwt_secret", &backend.jwt_secret())?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let config = config
        .replace(
            "url = \"https://localhost:8443\"",
            &format!("url = {:?}", backend.url()),
        )
        .replace("push_interval = \"60s\"", "push_interval = \"2s\"")
        .replace(
            "# jwt_secret_file = \"/etc/pganalytics/jwt_secret\"",
            &format!("jwt_secret_file = {secret:?}"),
        )
        .replace(
            "# ca_file = \"/etc/pganalytics/ca.pem\"",
            &format!("ca_file = {ca:?}"),
        )
        .replace(
            "# listen = \"127.0.0.1:10187\"",
            &format!("listen = \"{listen}\""),
        );
    let path = write("agent.toml", config.as_bytes())?;
    eprintln!(
        "\nxtask: running the agent (`pganalytics run --config {path}`) for {} s against a test backend at {}",
        duration.as_secs(),
        backend.url()
    );
    let mut command = Command::new(binary);
    command.args(["run", "--config", &path]);
    if soak.is_some() {
        // Keep the soak's output to the samples; the agent's log goes to a file.
        let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| e.to_string())?;
        command.stderr(log);
    }
    let mut agent = command
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    let started = std::time::Instant::now();
    match soak {
        None => tokio::time::sleep(duration).await,
        Some(cluster) => {
            let mut samples = Vec::new();
            let mut tick = 0u64;
            while started.elapsed() < duration {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let _ = cluster.try_psql("postgres", &format!("SELECT 'soak {tick}' || 1/0"));
                if tick.is_multiple_of(6) {
                    let rss = rss_kib(agent.id());
                    samples.push(rss);
                    eprintln!(
                        "xtask: {:>5} s  agent RSS {:>6} KiB  batches received {}",
                        started.elapsed().as_secs(),
                        rss,
                        backend.batches().len()
                    );
                }
                tick += 1;
            }
            let first = samples.iter().copied().nth(2).unwrap_or(0);
            let max = samples.iter().copied().max().unwrap_or(0);
            let last = samples.last().copied().unwrap_or(0);
            eprintln!("xtask: RSS after 60 s {first} KiB, max {max} KiB, last {last} KiB");
        }
    }
    let metrics = test_backend::agent_get(listen.port(), "/metrics").unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let status = agent.wait().map_err(|e| e.to_string())?;
    let batches = backend.batches();
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    for item in batches.iter().flat_map(|b| b.metrics().to_vec()) {
        *types
            .entry(item["type"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    eprintln!(
        "\nxtask: the backend received {} batches (plain JSON after gzip was refused, Bearer JWT, TLS 1.3); items by type: {types:?}",
        batches.len()
    );
    eprintln!("xtask: a few lines of the agent's own /metrics on {listen}:");
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && [
                "collections_total",
                "batches_sent",
                "spool_batches",
                "push_latency_seconds_count",
                "collection_failures",
                "dropped",
                "retries",
            ]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("  {line}");
    }
    eprintln!("xtask: the agent stopped on SIGTERM with {status}");
    if !status.success() {
        return Err(format!("the agent exited with {status}"));
    }
    if batches.is_empty() {
        return Err("the backend received no batch".into());
    }
    Ok(())
}

/// The sample config with its `[postgres]` connection and log paths pointed at `cluster`, and its
/// relative paths made absolute (the demo config lives in target/demo).
fn demo_config(sample: &str, cluster: &throwaway_pg::TestCluster) -> String {
    let root = root();
    sample
        .replace(
            "host = \"/var/run/postgresql\"",
            &format!("host = {:?}", cluster.socket_dir().display().to_string()),
        )
        // The line of [postgres] itself, not the commented example of another server.
        .replace("\nport = 5432\n", &format!("\nport = {}\n", cluster.port))
        .replace(
            "/var/log/postgresql/postgresql-*.log",
            &format!("{}/postgresql.log", cluster.log_dir().display()),
        )
        .replace("start_at = \"end\"", "start_at = \"beginning\"")
        .replace("\"guests/", &format!("\"{}/guests/", root.display()))
        .replace("\"target/", &format!("\"{}/target/", root.display()))
}

/// PostgreSQL server binaries (for the tests' throwaway clusters) and libclang (for building
/// `pg_query`). As root they are installed with apt-get when missing; otherwise a missing one is
/// an error that names the package (PostgreSQL only when `postgres_required`).
fn ensure_system_packages(postgres_required: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    if throwaway_pg::server_bin().is_none() {
        missing.push("postgresql");
    }
    if !has_libclang() {
        missing.push("libclang-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let can_install =
        throwaway_pg::is_root() && Command::new("apt-get").arg("--version").output().is_ok();
    if !can_install {
        let needed: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|p| *p != "postgresql" || postgres_required)
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        return Err(format!(
            "missing system packages: {} (Debian: sudo apt-get install {})",
            needed.join(", "),
            needed.join(" ")
        ));
    }
    apt_install(&missing)
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("installing {}", packages.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The native exporters and pgbadger the benchmarks compare against (Debian's packages),
/// installed when missing and possible; without them that comparison is reported as skipped.
fn ensure_comparison_exporters() {
    let missing: Vec<&str> = [
        "prometheus-node-exporter",
        "prometheus-postgres-exporter",
        "pgbadger",
    ]
    .into_iter()
    .filter(|name| !Path::new("/usr/bin").join(name).exists())
    .collect();
    if missing.is_empty() {
        return;
    }
    if !throwaway_pg::is_root() {
        eprintln!(
            "xtask: {} not installed (not root): the comparison with native exporters is skipped",
            missing.join(", ")
        );
        return;
    }
    if let Err(e) = apt_install(&missing) {
        eprintln!("xtask: {e}; the comparison with native exporters is skipped");
    }
}

/// Whether bindgen (run by `pg_query`'s build script through clang-sys) will find a libclang
/// it can load AND the clang headers it parses C with. This mirrors clang-sys's own search:
/// `LIBCLANG_PATH`, then the usual library directories, for `libclang.so`, `libclang-N.so`,
/// `libclang.so.N` or `libclang-N.so.N`, never `libclang-cpp` (a different library that
/// llvm-N-dev installs, which bindgen cannot use). Debian's `libclang-dev` brings both the
/// library and the headers (`/usr/lib/llvm-N/lib/clang/*/include/stddef.h`).
fn has_libclang() -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBCLANG_PATH")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for parent in ["/usr/lib", "/usr/local/lib", "/usr/lib64"] {
        dirs.push(PathBuf::from(parent));
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            dirs.push(entry.path());
            dirs.push(entry.path().join("lib"));
        }
    }
    dirs.iter().any(|dir| is_libclang_dir(dir))
}

/// A directory holding a loadable libclang whose clang headers are installed beside it.
fn is_libclang_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let loadable = entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        is_libclang_name(&name) && entry.path().exists()
    });
    loadable && has_clang_headers(dir)
}

/// The file names clang-sys loads: `libclang.so`, `libclang.so.1`, `libclang-14.so`,
/// `libclang-14.so.1`; not `libclang-cpp.so.14` nor static archives.
fn is_libclang_name(name: &str) -> bool {
    if name.contains("-cpp") {
        return false;
    }
    name == "libclang.so"
        || name.starts_with("libclang.so.")
        || (name.starts_with("libclang-") && (name.ends_with(".so") || name.contains(".so.")))
}

/// clang's own headers (stddef.h and friends), which bindgen needs to parse `pg_query.h`.
/// They live in `<llvm>/lib/clang/<version>/include`; for a library in the multiarch
/// directory, in any `/usr/lib/llvm-*/lib/clang/*/include`.
fn has_clang_headers(dir: &Path) -> bool {
    let mut roots = vec![dir.join("clang")];
    for entry in std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("llvm-") {
            roots.push(entry.path().join("lib/clang"));
        }
    }
    roots.iter().any(|root| {
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|version| version.path().join("include/stddef.h").is_file())
    })
}

fn test() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_system_packages(true)?;
    // The end-to-end tests (the `pganalytics-e2e` crate) drive these builds; building them here
    // first shows the compile output and leaves the tests' own build step nothing to do.
    build_everything()?;
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
    dist_test::run(false)?;
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

/// Resident set size of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::is_libclang_name;

    #[test]
    fn libclang_names_are_what_clang_sys_loads() {
        for name in [
            "libclang.so",
            "libclang.so.1",
            "libclang-14.so",
            "libclang-14.so.1",
            "libclang-14.0.6.so",
        ] {
            assert!(is_libclang_name(name), "{name}");
        }
        // llvm-N-dev ships libclang-cpp, which bindgen cannot load: counting it skipped the
        // libclang-dev install on fresh machines.
        for name in [
            "libclang-cpp.so.14",
            "libclang-cpp.so",
            "libclang.a",
            "libclangBasic.a",
            "libclang-14.a",
        ] {
            assert!(!is_libclang_name(name), "{name}");
        }
    }
}
