//! End-to-end tests of the sandbox with real guest components: the bundled collectors produce
//! sane values on this machine, and every hostile fixture is contained with its own named error
//! while a well-behaved plugin in the same collection still delivers.

use std::collections::BTreeMap;

use pganalytics::config;
use pganalytics::pipeline::{self, Outcome};
use pganalytics::plugin::{LoadError, PluginHost, RunError};
use pganalytics_e2e::*;
use serde_json::Value;

fn meminfo_kib(key: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn statvfs(path: &str) -> libc::statvfs {
    let c = std::ffi::CString::new(path).unwrap();
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c.as_ptr(), &mut stat) },
        0,
        "statvfs {path}"
    );
    stat
}

fn number(value: &Value, path: &str) -> f64 {
    value
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {value}"))
}

#[test]
fn collect_once_prints_sane_sysstat_and_disk_usage_from_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}{SYSSTAT_GRANTS}{}[plugins.disk.grants.fs-stats]\nmounts = [\"*\"]\n",
        plugin("sysstat", "sysstat", "sysstat", ""),
        plugin("disk", "disk", "disk_usage", "")
    );
    let config = write_config(dir.path(), &body);
    // Twice: the second run computes CPU over the interval from the state the first one saved.
    for run in 0..2 {
        let (code, stdout, stderr) =
            run_cli(&["collect", "--once", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 0, "run {run}: {stderr}");
        let envelope: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(envelope["collector_id"], "test-collector");
        assert_eq!(envelope["metrics_count"], 2);
        assert!(
            chrono::DateTime::parse_from_rfc3339(envelope["timestamp"].as_str().unwrap()).is_ok()
        );
        let metrics = envelope["metrics"].as_array().unwrap();
        let sysstat = metrics
            .iter()
            .find(|m| m["type"] == "sysstat")
            .expect("a sysstat item");
        let disk = metrics
            .iter()
            .find(|m| m["type"] == "disk_usage")
            .expect("a disk_usage item");

        let mut sum = 0.0;
        // Steal is part of the total: on a loaded virtual machine (CI) it can be a quarter of it.
        for field in ["user", "system", "idle", "iowait", "steal"] {
            let pct = number(sysstat, &format!("/cpu/{field}"));
            assert!((0.0..=100.0).contains(&pct), "cpu.{field} = {pct}");
            sum += pct;
        }
        assert!(
            (99.0..=101.0).contains(&sum),
            "cpu percentages sum to {sum}"
        );
        let load = number(sysstat, "/cpu/load_1m");
        assert!(load >= 0.0);
        let total_mb = number(sysstat, "/memory/total_mb");
        assert!(
            (total_mb - meminfo_kib("MemTotal") / 1024.0).abs() < 0.01,
            "total_mb {total_mb}"
        );
        let used = number(sysstat, "/memory/used_mb");
        assert!(used > 0.0 && used <= total_mb);
        let devices = sysstat["disk_io"].as_array().unwrap();
        let diskstats = std::fs::read_to_string("/proc/diskstats").unwrap();
        for device in devices {
            let name = device["device"].as_str().unwrap();
            assert!(
                diskstats
                    .lines()
                    .any(|l| l.split_whitespace().nth(2) == Some(name)),
                "{name}"
            );
        }

        let filesystems = disk["filesystems"].as_array().unwrap();
        assert!(!filesystems.is_empty(), "no filesystem reported");
        for fs in filesystems {
            let mount = fs["mount"].as_str().unwrap();
            let stat = statvfs(mount);
            let gib = (1u64 << 30) as f64;
            let total = stat.f_blocks as f64 * stat.f_frsize as f64 / gib;
            let free = stat.f_bavail as f64 * stat.f_frsize as f64 / gib;
            assert!(
                (number(fs, "/total_gb") - total).abs() < 0.011,
                "{mount}: total {fs} vs {total}"
            );
            // Free space moves while tests write files; a generous band still catches unit bugs.
            assert!(
                (number(fs, "/free_gb") - free).abs() < 0.5,
                "{mount}: free {fs} vs {free}"
            );
            let pct = number(fs, "/percent_used");
            assert!((0.0..=100.0).contains(&pct));
        }
    }
    assert!(
        dir.path().join("state/plugins/sysstat.state").exists(),
        "sysstat state was persisted"
    );
}

/// Every hostile fixture, next to a well-behaved sysstat, in one collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_with_named_errors_while_sysstat_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let procfs_all = |name: &str| format!("[plugins.{name}.grants.procfs]\npaths = [\"stat\"]\n");
    let body = [
        plugin("sysstat", "sysstat", "sysstat", "") + SYSSTAT_GRANTS,
        plugin("loop", "hostile_loop", "x", "timeout = \"1s\""),
        plugin(
            "fuel",
            "hostile_loop",
            "x",
            "timeout = \"10s\"\nfuel = 5000000",
        ),
        plugin("membomb", "hostile_membomb", "x", "memory = \"16MiB\""),
        plugin("recursion", "hostile_recursion", "x", ""),
        plugin("flood", "hostile_flood", "flood", "max_output = \"1MiB\""),
        plugin("badjson", "hostile_badjson", "x", ""),
        plugin("wrongtype", "hostile_wrongtype", "wrongtype_ok", ""),
        plugin("panic", "hostile_panic", "x", ""),
        plugin("environ", "hostile_environ", "probe", "") + &procfs_all("environ"),
        plugin("ungranted", "hostile_ungranted", "x", ""),
        plugin(
            "logspam",
            "hostile_logspam",
            "logspam",
            "max_log_bytes = \"4KiB\"",
        ),
        plugin("statebomb", "hostile_statebomb", "probe", ""),
        plugin("deniedloop", "hostile_procfs_loop", "probe", "") + &procfs_all("deniedloop"),
    ]
    .concat();
    let path = write_config(dir.path(), &body);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let host = PluginHost::new(&config.host_setup()).unwrap();
    let started = std::time::Instant::now();
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let elapsed = started.elapsed();
    let outcomes: BTreeMap<&str, &Outcome> = collection
        .outcomes
        .iter()
        .map(|(n, o)| (n.as_str(), o))
        .collect();
    let message = |name: &str| match outcomes[name] {
        Outcome::Accepted(_) => panic!("plugin `{name}` was accepted"),
        Outcome::LoadFailed(e) => e.to_string(),
        Outcome::RunFailed(e) => e.to_string(),
    };

    // The well-behaved plugin delivers, and only its items (plus accepted probes) are in the envelope.
    let items = collection.envelope.items();
    let types: Vec<&str> = items.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"sysstat"), "{types:?}");
    assert!(
        !types.contains(&"flood") && !types.contains(&"x"),
        "{types:?}"
    );

    assert!(matches!(
        outcomes["loop"],
        Outcome::RunFailed(RunError::Deadline { .. })
    ));
    assert_eq!(
        message("loop"),
        "plugin `loop` exceeded its 1s wall-clock deadline"
    );
    assert!(
        matches!(outcomes["fuel"], Outcome::RunFailed(RunError::Fuel { .. })),
        "{}",
        message("fuel")
    );
    assert_eq!(
        message("membomb"),
        "plugin `membomb` exceeded its 16 MiB memory limit"
    );
    assert!(
        matches!(
            outcomes["recursion"],
            Outcome::RunFailed(RunError::StackOverflow { .. })
        ),
        "{}",
        message("recursion")
    );
    assert!(matches!(
        outcomes["flood"],
        Outcome::RunFailed(RunError::OutputTooLarge { .. })
    ));
    assert!(
        message("flood").contains("over its 1 MiB limit"),
        "{}",
        message("flood")
    );
    assert!(
        message("badjson").starts_with("plugin `badjson` returned invalid output: not valid JSON")
    );
    assert!(
        message("wrongtype")
            .contains("type `sysstat` is not one this plugin may emit (allowed: wrongtype_ok)"),
        "{}",
        message("wrongtype")
    );
    assert!(matches!(
        outcomes["panic"],
        Outcome::RunFailed(RunError::Trap { .. })
    ));
    assert!(
        message("panic").contains("boom"),
        "the panic message is surfaced: {}",
        message("panic")
    );
    assert!(matches!(
        outcomes["ungranted"],
        Outcome::LoadFailed(LoadError::NotGranted { .. })
    ));
    assert!(
        message("ungranted").contains("[plugins.ungranted.grants.postgres]"),
        "{}",
        message("ungranted")
    );

    // Denials are values: the probes ran to completion and saw every escape attempt denied.
    let probe = |key: &str| {
        collection
            .envelope
            .items()
            .into_iter()
            .find(|m| m["type"] == "probe" && m.get(key).is_some())
            .unwrap_or_else(|| panic!("no probe item with `{key}`"))
    };
    let results = probe("results");
    for attempt in [
        "self/environ",
        "../etc/passwd",
        "/etc/passwd",
        "self/root/etc/passwd",
    ] {
        let result = results["results"][attempt].as_str().unwrap_or_default();
        assert!(result.starts_with("denied"), "{attempt}: {result}");
    }
    let state = probe("state_set");
    assert!(
        state["state_set"]
            .as_str()
            .unwrap()
            .starts_with("too-large"),
        "{state}"
    );
    let denials = probe("denials");
    assert_eq!(denials["denials"], 100_000);
    match outcomes["deniedloop"] {
        Outcome::Accepted(accepted) => assert_eq!(accepted.denied_calls, 100_000),
        _ => panic!("the denied-call loop should complete"),
    }
    assert!(
        matches!(outcomes["logspam"], Outcome::Accepted(_)),
        "log output beyond the cap is dropped, not fatal"
    );

    // The 1s deadline bounds the whole collection (the fuel plugin stops long before its 10s).
    assert!(
        elapsed < std::time::Duration::from_secs(8),
        "collection took {elapsed:?}"
    );
}

#[test]
fn inspect_shows_what_a_plugin_needs_before_it_runs() {
    let disk = wasm("disk");
    let (code, stdout, stderr) = run_cli(&["plugin", "inspect", disk.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["grants_needed"], serde_json::json!(["fs-stats"]));
    assert_eq!(report["runnable"], true);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&disk).unwrap()))
    };
    assert_eq!(report["sha256"], sha);

    let (code, stdout, _) = run_cli(&[
        "plugin",
        "inspect",
        wasm("hostile_ungranted").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("postgres")
            && stdout.contains("[plugins.hostile_ungranted.grants.postgres]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no files, no environment, no network"),
        "{stdout}"
    );
    assert!(stdout.contains("runnable: yes"), "{stdout}");
}

/// A component importing `interface` as an instance with one function `name: func()`.
fn component_importing(interface: &str, name: &str) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut instance = InstanceType::new();
    instance
        .ty()
        .function()
        .params(Vec::<(&str, wasm_encoder::ComponentValType)>::new())
        .result(None);
    instance.export(name, ComponentTypeRef::Func(0));
    let mut types = ComponentTypeSection::new();
    types.instance(&instance);
    let mut imports = ComponentImportSection::new();
    imports.import(interface, ComponentTypeRef::Instance(0));
    let mut component = Component::new();
    component.section(&types).section(&imports);
    component.finish()
}

#[test]
fn inspect_does_not_call_runnable_what_the_host_cannot_link() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown WASI interfaces and versions, foreign packages, and functions of the right
    // interface with the wrong signature (or that do not exist): each is named.
    for (interface, function) in [
        ("wasi:sockets/tcp-create-socket@0.2.0", "connect-anywhere"),
        ("wasi:nn/graph@0.2.0", "load"),
        ("wasi:http/outgoing-handler@0.2.0", "handle"),
        ("wasi:filesystem/preopens@0.9.0", "get-directories"),
        ("acme:spy/exfiltrate@1.0.0", "send"),
        ("pganalytics:collector/procfs@0.1.0", "read"),
        ("pganalytics:collector/postgres@0.1.0", "drop-database"),
        ("pganalytics:collector/log-tail@0.1.0", "read-lines"),
    ] {
        let file = dir.path().join("odd.wasm");
        std::fs::write(&file, component_importing(interface, function)).unwrap();
        let (code, stdout, stderr) =
            run_cli(&["plugin", "inspect", file.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["runnable"], false, "{interface}: {stdout}");
        let why = report["not_runnable_because"].as_str().unwrap();
        assert!(why.contains(interface), "{interface}: {why}");

        let (_, text, _) = run_cli(&["plugin", "inspect", file.to_str().unwrap()]);
        eprintln!("{text}");
        assert!(
            text.contains("runnable: NO") && text.contains(interface),
            "{text}"
        );
    }
}

#[test]
fn a_changed_file_is_refused_when_pinned_and_garbage_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"\0asm this is not a component").unwrap();
    let body = format!(
        "{}sha256 = \"{}\"\n{SYSSTAT_GRANTS}[plugins.fake]\nwasm = {:?}\nemits = [\"x\"]\n",
        plugin("sysstat", "sysstat", "sysstat", ""),
        "00".repeat(32),
        fake.display().to_string()
    );
    let config = write_config(dir.path(), &body);
    let (code, stdout, _) = run_cli(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("plugin `sysstat`") && stdout.contains("the config pins 0000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plugin `fake`") && stdout.contains("not a valid WebAssembly component"),
        "{stdout}"
    );
    assert!(stdout.contains("2 problems"), "{stdout}");
}

#[test]
fn config_check_reports_every_problem_with_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[collector]\nid = \"x\"\n\n[plugins.a]\nwasm = \"a.wasm\"\nemits = [\"a\"]\ntimeout = \"soon\"\n\n[plugins.b]\nwasm = \"b.wasm\"\nemits = [\"b\"]\n[plugins.b.grants.procfs]\npaths = [\"/etc/shadow\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let file = path.display().to_string();
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:7: `plugins.a.timeout`: invalid duration `soon`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "`plugins.b.grants.procfs.paths`: procfs path `/etc/shadow` must be relative"
        ),
        "{stderr}"
    );
}

#[test]
fn the_sample_config_checks_clean_after_the_guests_are_built() {
    guests();
    let sample = repo_root().join("config.toml.sample");
    let (code, stdout, stderr) =
        run_cli(&["config", "check", "--config", sample.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("plugin `sysstat`") && stdout.contains("plugin `disk`"),
        "{stdout}"
    );
}

/// More plugins mid-run at once than the instance pool holds (64 runs): those that find it full
/// fail as `host_busy`, the host's refusal and not their fault (the agent does not back them
/// off), and the runs that got a slot are unaffected. Each run holds its slot by sleeping on a
/// WASI clock (no CPU) for 8 s; the compile cache is warmed first, so loading all 70 takes a
/// small part of that (compiling each would take about 0.2 s of CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_is_host_busy_for_the_runs_that_find_it_full() {
    const PLUGINS: usize = 70;
    let dir = tempfile::tempdir().unwrap();
    let mut body = plugin("warm", "ticker", "tick", "");
    body += &(0..PLUGINS)
        .map(|i| {
            let name = format!("tick{i}");
            format!(
                "{}[plugins.{name}.settings]\nsleep_ms = 8000\n",
                plugin(&name, "ticker", "tick", "timeout = \"30s\"")
            )
        })
        .collect::<String>();
    let config = config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
    let host = PluginHost::new(&config.host_setup()).unwrap();
    let warm = pipeline::collect_once(&config, &host, &["warm".to_owned()]).await;
    assert!(
        matches!(warm.outcomes[0].1, Outcome::Accepted(_)),
        "{:?}",
        warm.outcomes
    );
    let ticks: Vec<String> = (0..PLUGINS).map(|i| format!("tick{i}")).collect();
    let collection = pipeline::collect_once(&config, &host, &ticks).await;
    let (mut busy, mut accepted) = (0, 0);
    for (name, outcome) in &collection.outcomes {
        match outcome {
            Outcome::RunFailed(e @ RunError::HostBusy { .. }) => {
                assert_eq!(e.reason(), "host_busy");
                assert!(e.is_host_side());
                let text = e.to_string();
                assert!(
                    text.contains(&format!("`{name}`")) && text.contains("busy"),
                    "{text}"
                );
                busy += 1;
            }
            Outcome::Accepted(_) => accepted += 1,
            other => panic!("{name}: {other:?}"),
        }
    }
    eprintln!("{busy} runs host_busy, {accepted} accepted");
    assert_eq!((busy, accepted), (PLUGINS - 64, 64));
    assert_eq!(collection.envelope.items().len(), 64);
}
