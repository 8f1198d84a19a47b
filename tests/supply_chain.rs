//! End-to-end tests of the plugin supply chain with real components and the real binary: keys,
//! signatures and their CLI; a plugin that requires a signature loads only when a trusted key
//! signed the file as it is; the compile cache rebuilds a corrupted entry from the verified
//! source and keeps its directory private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pganalytics::config;
use pganalytics::plugin::{CacheOutcome, LoadError, PluginHost};
use pganalytics_e2e::*;
use serde_json::Value;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `keygen` through the binary; returns (secret key file, public key file).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (code, stdout, stderr) = run_cli(&["plugin", "keygen", "--name", name, "--out", s(dir)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

fn sign(file: &Path, key: &Path) {
    let (code, stdout, stderr) = run_cli(&["plugin", "sign", s(file), "--key", s(key)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A copy of a built guest in `dir`, so signing and tampering never touch the build output.
fn copy_guest(dir: &Path, guest: &str, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::copy(wasm(guest), &path).unwrap();
    path
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn trust(keys: &[(&str, &Path)]) -> String {
    let mut text = String::from("[trust.keys]\n");
    for (name, path) in keys {
        text += &format!("{name} = {:?}\n", path.display().to_string());
    }
    text
}

fn sysstat_plugin(name: &str, file: &Path, extra: &str) -> String {
    format!(
        "[plugins.{name}]\nwasm = {:?}\nemits = [\"sysstat\"]\n{extra}\n[plugins.{name}.grants.procfs]\npaths = [\"stat\", \"meminfo\", \"diskstats\", \"loadavg\"]\n",
        file.display().to_string()
    )
}

#[test]
fn keygen_sign_verify_round_trip_and_verify_names_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (alice_key, alice_pub) = keygen(&keys, "alice");
    let (mallory_key, mallory_pub) = keygen(&keys, "mallory");
    assert_eq!(
        std::fs::metadata(&alice_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&alice_pub)
            .unwrap()
            .starts_with("pganalytics-ed25519-pub alice ")
    );
    let before = std::fs::read(&alice_key).unwrap();
    let (code, _, stderr) = run_cli(&["plugin", "keygen", "--name", "alice", "--out", s(&keys)]);
    assert_ne!(code, 0);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read(&alice_key).unwrap(), before);

    let file = copy_guest(dir.path(), "sysstat", "sysstat");
    sign(&file, &alice_key);
    let sig = std::fs::read_to_string(dir.path().join("sysstat.wasm.sig")).unwrap();
    assert!(
        sig.starts_with("pganalytics-signature-v1\nalice\n"),
        "{sig}"
    );

    let (code, stdout, stderr) = run_cli(&["plugin", "verify", s(&file), "--pub", s(&alice_pub)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("signed by `alice`"), "{stdout}");

    let (code, _, stderr) = run_cli(&["plugin", "verify", s(&file), "--pub", s(&mallory_pub)]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("signed only by `alice`") && stderr.contains("trusted: `mallory`"),
        "{stderr}"
    );

    // A second signature is appended; either key now verifies.
    sign(&file, &mallory_key);
    let (code, _, stderr) = run_cli(&["plugin", "verify", s(&file), "--pub", s(&mallory_pub)]);
    assert_eq!(code, 0, "{stderr}");

    // `--config` uses [trust]; `inspect --config` shows each signer and whether it verifies.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, trust(&[("alice", &alice_pub)])).unwrap();
    let (code, _, stderr) = run_cli(&["plugin", "verify", s(&file), "--config", s(&config)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run_cli(&[
        "plugin",
        "inspect",
        s(&file),
        "--json",
        "--config",
        s(&config),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["signatures"],
        serde_json::json!([
            {"key": "alice", "status": "valid"},
            {"key": "mallory", "status": "not checked: no trusted key of that name"},
        ])
    );
    let (code, stdout, _) = run_cli(&["plugin", "inspect", s(&file)]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("signed by:") && stdout.contains("alice") && stdout.contains("mallory"),
        "{stdout}"
    );

    // One changed byte: verify exits non-zero and says why.
    flip_last_byte(&file);
    let (code, stdout, stderr) = run_cli(&["plugin", "verify", s(&file), "--pub", s(&alice_pub)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("does not verify") && stderr.contains("does not match the file"),
        "{stderr}"
    );
    let (_, stdout, _) = run_cli(&["plugin", "inspect", s(&file), "--config", s(&config)]);
    assert!(stdout.contains("INVALID"), "{stdout}");

    // No .sig at all.
    let unsigned = copy_guest(dir.path(), "disk", "disk");
    let (code, _, stderr) = run_cli(&["plugin", "verify", s(&unsigned), "--pub", s(&alice_pub)]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("is not signed") && stderr.contains("disk.wasm.sig"),
        "{stderr}"
    );
    let (code, _, stderr) = run_cli(&["plugin", "verify", s(&unsigned)]);
    assert_ne!(code, 0, "verify needs --pub or --config: {stderr}");
}

#[test]
fn a_signed_plugin_loads_and_tampered_untrusted_or_unsigned_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (alice_key, alice_pub) = keygen(&keys, "alice");
    let (mallory_key, mallory_pub) = keygen(&keys, "mallory");

    let good = copy_guest(dir.path(), "sysstat", "good");
    sign(&good, &alice_key);
    let tampered = copy_guest(dir.path(), "sysstat", "tampered");
    sign(&tampered, &alice_key);
    flip_last_byte(&tampered);
    let untrusted = copy_guest(dir.path(), "sysstat", "untrusted");
    sign(&untrusted, &mallory_key);
    let unsigned = copy_guest(dir.path(), "sysstat", "unsigned");
    let garbled = copy_guest(dir.path(), "sysstat", "garbled");
    std::fs::write(dir.path().join("garbled.wasm.sig"), "not a signature\n").unwrap();

    let signed_by = "signed_by = [\"alice\"]";
    let body = [
        trust(&[("alice", &alice_pub), ("mallory", &mallory_pub)]),
        sysstat_plugin("good", &good, signed_by),
        sysstat_plugin("tampered", &tampered, signed_by),
        sysstat_plugin("untrusted", &untrusted, signed_by),
        sysstat_plugin("unsigned", &unsigned, signed_by),
        sysstat_plugin("garbled", &garbled, signed_by),
    ]
    .concat();
    let config_path = write_config(dir.path(), &body);
    let (code, stdout, _) = run_cli(&["config", "check", "--config", s(&config_path)]);
    assert_eq!(code, 1, "{stdout}");
    let line = |plugin: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("plugin `{plugin}`")))
            .unwrap_or_else(|| panic!("no line for {plugin} in {stdout}"))
            .to_owned()
    };
    assert!(line("good").starts_with("ok"), "{stdout}");
    let tampered_line = line("tampered");
    assert!(
        tampered_line.contains("tampered.wasm")
            && tampered_line.contains("the signature by `alice` does not match the file"),
        "{tampered_line}"
    );
    let untrusted_line = line("untrusted");
    assert!(
        untrusted_line.contains("untrusted.wasm")
            && untrusted_line.contains("signed only by `mallory`")
            && untrusted_line.contains("trusted: `alice`"),
        "{untrusted_line}"
    );
    let unsigned_line = line("unsigned");
    assert!(
        unsigned_line.contains("must be signed by `alice`")
            && unsigned_line.contains("unsigned.wasm.sig"),
        "{unsigned_line}"
    );
    assert!(
        line("garbled").contains("garbled.wasm.sig` of") && line("garbled").contains("malformed"),
        "{stdout}"
    );
    assert!(stdout.contains("4 problems"), "{stdout}");

    // The same through the library, by variant; the signature is checked before compiling, so a
    // tampered file is refused for its signature even though the change also broke the component.
    let config = config::load(&config_path).unwrap();
    let host = PluginHost::new(&config.host_setup()).unwrap();
    #[allow(clippy::result_large_err)] // the library's own `load` returns the same error
    let load = |name: &str| host.load(Arc::new(config.plugins[name].clone()));
    let loaded = load("good").unwrap();
    assert_eq!(loaded.signed_by.as_deref(), Some("alice"));
    assert!(matches!(
        load("tampered"),
        Err(LoadError::SignatureRejected { .. })
    ));
    assert!(matches!(
        load("untrusted"),
        Err(LoadError::SignatureRejected { .. })
    ));
    assert!(matches!(
        load("unsigned"),
        Err(LoadError::SignatureMissing { .. })
    ));
    assert!(matches!(
        load("garbled"),
        Err(LoadError::SignatureMalformed { .. })
    ));

    // The accepted plugin runs.
    let (code, stdout, stderr) = run_cli(&[
        "collect",
        "--once",
        "--config",
        s(&config_path),
        "--plugin",
        "good",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"sysstat\""), "{stdout}");
}

#[test]
fn signed_by_and_a_sha256_pin_both_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = keygen(&dir.path().join("keys"), "alice");
    let file = copy_guest(dir.path(), "sysstat", "sysstat");
    sign(&file, &alice_key);
    let body = trust(&[("alice", &alice_pub)])
        + &sysstat_plugin(
            "sysstat",
            &file,
            &format!("signed_by = [\"alice\"]\nsha256 = \"{}\"", "00".repeat(32)),
        );
    let config_path = write_config(dir.path(), &body);
    let (code, stdout, _) = run_cli(&["config", "check", "--config", s(&config_path)]);
    assert_eq!(code, 1);
    assert!(stdout.contains("the config pins 0000"), "{stdout}");
}

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_cache_entry_is_rebuilt_from_the_verified_source() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = keygen(&dir.path().join("keys"), "alice");
    let file = copy_guest(dir.path(), "sysstat", "sysstat");
    sign(&file, &alice_key);
    let body = trust(&[("alice", &alice_pub)])
        + &sysstat_plugin("sysstat", &file, "signed_by = [\"alice\"]");
    let config_path = write_config(dir.path(), &body);
    let config = config::load(&config_path).unwrap();
    let cache_dir = dir.path().join("state/cache");
    assert_eq!(
        config.collector.cache_dir.as_deref(),
        Some(cache_dir.as_path())
    );
    let host = PluginHost::new(&config.host_setup()).unwrap();
    let plugin = Arc::new(config.plugins["sysstat"].clone());

    assert_eq!(
        host.load(plugin.clone()).unwrap().compiled,
        CacheOutcome::Compiled
    );
    let [entry] = cache_entries(&cache_dir).try_into().unwrap();
    let good = std::fs::read(&entry).unwrap();
    assert_eq!(
        host.load(plugin.clone()).unwrap().compiled,
        CacheOutcome::Hit
    );

    // A flipped byte in the middle of the compiled code.
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&entry, &bad).unwrap();
    let loaded = host.load(plugin.clone()).unwrap();
    assert_eq!(loaded.compiled, CacheOutcome::Rebuilt);
    assert_eq!(std::fs::read(&entry).unwrap(), good);
    let output = host.run(&loaded).await.unwrap();
    assert!(output.json.contains("\"sysstat\""));

    // A foreign file under the entry's name, through the binary: logged, rebuilt, collected.
    std::fs::write(&entry, b"\x7fELF not ours").unwrap();
    let (code, stdout, stderr) = run_cli(&["collect", "--once", "--config", s(&config_path)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"sysstat\""), "{stdout}");
    assert!(
        stderr.contains("discarding a compile cache entry")
            && stderr.contains("rebuilding it from the verified source"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&entry).unwrap(), good);

    // A swapped source with a valid signature is a different entry, never the old one's code.
    let other = copy_guest(dir.path(), "disk", "other");
    std::fs::rename(&other, &file).unwrap();
    sign(&file, &alice_key);
    let loaded = host.load(plugin.clone());
    assert!(
        matches!(&loaded, Err(LoadError::NotGranted { .. })),
        "disk needs fs-stats, which this plugin is not granted"
    );
}

#[test]
fn a_cache_directory_open_to_others_is_fixed_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let body = format!(
        "{}{SYSSTAT_GRANTS}",
        plugin("sysstat", "sysstat", "sysstat", "")
    );
    let config_path = write_config(dir.path(), &body);
    let text = std::fs::read_to_string(&config_path).unwrap().replacen(
        "[collector]\n",
        &format!(
            "[collector]\ncache_dir = {:?}\n",
            cache_dir.display().to_string()
        ),
        1,
    );
    std::fs::write(&config_path, text).unwrap();
    let (code, _, stderr) = run_cli(&["collect", "--once", "--config", s(&config_path)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("had mode 777; set it to 700"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(cache_entries(&cache_dir).len(), 1);
}

/// `plugin precompile` through the binary, then `config check` of signed plugins with
/// `precompiled_dir`: the artifact is used for the file it was made from, and ignored with a
/// warning (the plugin compiled, the check still ok) when it is writable by others, renamed to
/// another file's sha256, or when its file was tampered with (refused by the signature first).
#[test]
fn a_precompiled_component_is_used_only_for_its_verified_file_and_when_closed_to_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let keys = dir.path().join("keys");
    let (alice_key, alice_pub) = keygen(&keys, "alice");
    let good = copy_guest(dir.path(), "sysstat", "good");
    sign(&good, &alice_key);
    let tampered = copy_guest(dir.path(), "sysstat", "tampered");
    sign(&tampered, &alice_key);
    let other = copy_guest(dir.path(), "uptime", "other");
    sign(&other, &alice_key);
    let precompiled = dir.path().join("precompiled");
    let (code, stdout, stderr) =
        run_cli(&["plugin", "precompile", s(&good), "--out", s(&precompiled)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let sha = |file: &Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap()))
    };
    let artifact = precompiled.join(format!("{}-plain.cwasm", sha(&good)));
    assert!(stdout.contains(s(&artifact)), "{stdout}");
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().permissions().mode() & 0o777,
        0o444
    );
    // `other` finds `good`'s artifact under its own sha256: its header names another source.
    std::fs::copy(
        &artifact,
        precompiled.join(format!("{}-plain.cwasm", sha(&other))),
    )
    .unwrap();
    // `tampered` was signed, then changed: the signature refuses it before any lookup.
    flip_last_byte(&tampered);

    let signed_by = "signed_by = [\"alice\"]";
    let body = [
        trust(&[("alice", &alice_pub)]),
        sysstat_plugin("good", &good, signed_by),
        format!(
            "[plugins.other]\nwasm = {:?}\nemits = [\"uptime\"]\n{signed_by}\n[plugins.other.grants.procfs]\npaths = [\"uptime\"]\n",
            s(&other)
        ),
    ]
    .concat();
    let config_path = write_config(dir.path(), &body);
    let text = std::fs::read_to_string(&config_path).unwrap().replacen(
        "[collector]\n",
        &format!("[collector]\nprecompiled_dir = {:?}\n", s(&precompiled)),
        1,
    );
    std::fs::write(&config_path, &text).unwrap();
    let check = || run_cli(&["config", "check", "--config", s(&config_path)]);
    let line = |stdout: &str, plugin: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("plugin `{plugin}`")))
            .unwrap_or_else(|| panic!("no line for {plugin} in {stdout}"))
            .to_owned()
    };
    let (code, stdout, stderr) = check();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        line(&stdout, "good").ends_with(", precompiled)"),
        "{stdout}"
    );
    assert!(line(&stdout, "other").ends_with(", compiled)"), "{stdout}");
    assert!(
        stderr.contains("not using the precompiled component")
            && stderr.contains("another source file"),
        "{stderr}"
    );

    // Writable by others: ignored, compiled (and cached) instead.
    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stdout, stderr) = check();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(line(&stdout, "good").ends_with(", compiled)"), "{stdout}");
    assert!(stderr.contains("group or others may write it"), "{stderr}");
    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o444)).unwrap();

    // The directory itself writable by its group: not used at all.
    std::fs::set_permissions(&precompiled, std::fs::Permissions::from_mode(0o775)).unwrap();
    let (code, stdout, stderr) = check();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !line(&stdout, "good").ends_with(", precompiled)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("not using precompiled components"),
        "{stderr}"
    );
    std::fs::set_permissions(&precompiled, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A tampered file never reaches the lookup, even with an artifact under its name.
    std::fs::copy(
        &artifact,
        precompiled.join(format!("{}-plain.cwasm", sha(&tampered))),
    )
    .unwrap();
    let with_tampered = format!("{text}{}", sysstat_plugin("tampered", &tampered, signed_by));
    std::fs::write(&config_path, with_tampered).unwrap();
    let (code, stdout, _) = check();
    assert_eq!(code, 1, "{stdout}");
    assert!(line(&stdout, "tampered").contains("signature"), "{stdout}");
    assert!(
        line(&stdout, "good").ends_with(", precompiled)"),
        "{stdout}"
    );
}

/// Compile time of the largest bundled collector without and with a cache entry. Run with
/// `cargo test --release -p pganalytics --test supply_chain -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_compile_time_cold_vs_warm() {
    for guest in ["pg_stats", "sysstat"] {
        let dir = tempfile::tempdir().unwrap();
        let file = copy_guest(dir.path(), guest, guest);
        let body = format!(
            "[plugins.{guest}]\nwasm = {:?}\nemits = [\"x\"]\n[plugins.{guest}.grants.postgres]\ndatabases = [\"*\"]\n[plugins.{guest}.grants.procfs]\npaths = [\"stat\"]\n",
            file.display().to_string()
        );
        let config = config::load(&write_config(dir.path(), &body)).unwrap();
        let host = PluginHost::new(&config.host_setup()).unwrap();
        let plugin = Arc::new(config.plugins[guest].clone());
        let cache_dir = config.collector.cache_dir.clone().unwrap();
        let time = |expect: CacheOutcome| {
            let started = Instant::now();
            let loaded = host.load(plugin.clone()).unwrap();
            assert_eq!(loaded.compiled, expect);
            started.elapsed()
        };
        let median = |mut samples: Vec<Duration>| {
            samples.sort();
            samples[samples.len() / 2]
        };
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for _ in 0..7 {
            for entry in cache_entries(&cache_dir) {
                std::fs::remove_file(entry).unwrap();
            }
            cold.push(time(CacheOutcome::Compiled));
            warm.push(time(CacheOutcome::Hit));
        }
        println!(
            "{guest} ({} bytes): load with compile (cold) median {:?}, from the cache (warm) median {:?}; cold {cold:?}, warm {warm:?}",
            std::fs::metadata(&file).unwrap().len(),
            median(cold.clone()),
            median(warm.clone()),
        );
    }
}

/// guests/README.md's walkthrough, step by step, on its example crate (guests/examples/uptime):
/// inspect, keygen, sign, verify, grant with `signed_by`, run.
#[test]
fn the_guide_example_is_built_signed_granted_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = copy_guest(dir.path(), "uptime", "uptime");

    let (code, inspected, stderr) = run_cli(&["plugin", "inspect", s(&file)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        inspected.contains("[plugins.uptime.grants.procfs]"),
        "{inspected}"
    );

    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (key, public) = keygen(&keys, "release");
    sign(&file, &key);
    let (code, stdout, stderr) = run_cli(&["plugin", "verify", s(&file), "--pub", s(&public)]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let body = format!(
        "{}[plugins.uptime]\nwasm = {:?}\nsigned_by = [\"release\"]\nemits = [\"uptime\"]\ninterval = \"60s\"\n\n[plugins.uptime.grants.procfs]\npaths = [\"uptime\"]\n",
        trust(&[("release", &public)]),
        file.display().to_string()
    );
    let config = write_config(dir.path(), &body);
    let (code, stdout, stderr) = run_cli(&["config", "check", "--config", s(&config)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run_cli(&["collect", "--once", "--config", s(&config)]);
    assert_eq!(code, 0, "{stderr}");
    let envelope: Value = serde_json::from_str(&stdout).unwrap();
    let item = &envelope["metrics"][0];
    assert_eq!(item["type"], "uptime");
    let seconds = item["seconds"].as_f64().unwrap();
    let now: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        seconds > 0.0 && seconds <= now && now - seconds < 30.0,
        "{seconds} vs {now}"
    );
}
