//! The package test, run by `cargo xtask test` after the suite (alone: `cargo xtask
//! test-package`): it builds the .deb, installs it on this machine with `dpkg -i`, checks the
//! files, their modes, the system user and the unit, runs the unit's `ExecStart=` command line
//! as the unit's `User=` (runuser) with the packaged config pointed, in a copy, at a throwaway
//! PostgreSQL and the HTTPS test backend until every collector's items arrived, reinstalls over
//! a locally edited conffile, then removes and purges the package, checking what each step
//! keeps and deletes. Any failure is an error (non-zero exit).
//!
//! It changes the machine (a package, a system user), so it runs only as root, holds a lock so
//! that two worktrees never run it at once, and never touches a pganalytics package it did not
//! install. It never leaves the package installed: after a failure it purges it.
//!
//! What it cannot show here: this machine's PID 1 is not systemd, so the unit's sandbox
//! settings (namespaces, capability sets, TemporaryFileSystem=) are checked by
//! `systemd-analyze verify` and by reading the unit, not by running under them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::dist::{
    self, BINARY, COLLECTORS, CONFIG, DOC_DIR, DebPackage, KEY_DIR, KEY_NAME, PACKAGE, PLUGIN_DIR,
    PRECOMPILED_DIR, STATE_DIR, UNIT,
};

/// Serializes package tests of several worktrees on one machine (they share one dpkg database
/// and one system user).
const LOCK_FILE: &str = "/run/lock/pganalytics-package-test.lock";
/// Every plugin's first run is jittered by up to 10 s; this only bounds a failing test.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(90);
/// SIGTERM lets in-flight runs finish, each bounded by its plugin `timeout` (30 s at most).
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Another engineer's apt or dpkg may hold the dpkg lock for a while.
const DPKG_LOCK_WAIT: Duration = Duration::from_secs(300);
/// Written into PostgreSQL's log by a failing statement; must come back in a `pg_log` item.
const MARKER: &str = "pganalytics-package-test-marker";
/// The `[Service]` settings the unit must have, exactly (brief of issue 12).
const REQUIRED_SETTINGS: [(&str, &str); 22] = [
    ("User", "pganalytics"),
    ("Group", "pganalytics"),
    ("StateDirectory", "pganalytics"),
    ("StateDirectoryMode", "0750"),
    (
        "ExecStart",
        "/usr/bin/pganalytics run --config /etc/pganalytics/config.toml",
    ),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Restart", "on-failure"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("TemporaryFileSystem", "/var/log:ro"),
    ("BindReadOnlyPaths", "-/var/log/postgresql"),
    ("UMask", "0077"),
];
/// Settings the unit must leave out: the JIT needs W^X transitions, the instance pool large
/// virtual reservations; the `adm` group must survive.
const FORBIDDEN_SETTINGS: [&str; 3] = ["MemoryDenyWriteExecute", "LimitAS", "PrivateUsers"];

/// `required`: whether a non-root caller is an error (`test-package`) or a skip (`test`).
pub fn run(required: bool) -> Result<(), String> {
    if !throwaway_pg::is_root() {
        if required {
            return Err(
                "the package test installs a .deb and creates a system user: run it as root"
                    .to_owned(),
            );
        }
        eprintln!(
            "xtask: package test SKIPPED: it needs root (dpkg -i, a system user); CI runs it as root"
        );
        return Ok(());
    }
    let lock = std::fs::File::create(LOCK_FILE).map_err(|e| format!("{LOCK_FILE}: {e}"))?;
    eprintln!("xtask: package test: waiting for {LOCK_FILE}");
    lock.lock()
        .map_err(|e| format!("locking {LOCK_FILE}: {e}"))?;
    refuse_foreign_install()?;
    // postinst must create the account itself, so one left by an earlier run goes first.
    remove_account()?;
    let package = dist::dist()?;
    let started = Instant::now();
    install_dependencies(&package.path)?;
    let result = exercise(&package);
    if result.is_err() && package_status().is_some() {
        eprintln!("xtask: package test failed; purging the package it installed");
        let _ = dpkg(&["--purge", PACKAGE]);
    }
    result?;
    remove_account()?;
    eprintln!(
        "xtask: package test passed ({:.0} s after the build)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn exercise(package: &DebPackage) -> Result<(), String> {
    let deb = package.path.display().to_string();
    dpkg(&["-i", &deb])?;
    let account = check_account()?;
    check_files(package, &account)?;
    let unit = check_unit()?;
    check_config_as_agent(&unit)?;
    run_unit_command(&unit, &account)?;
    check_state_dir(&account)?;
    reinstall_keeps_local_config(&deb, &account)?;
    remove_then_purge()
}

/// The `pganalytics` system account as postinst made it.
struct Account {
    uid: u32,
    gid: u32,
    adm_gid: u32,
}

fn check_account() -> Result<Account, String> {
    let passwd = command_stdout(Command::new("getent").args(["passwd", PACKAGE]))?;
    let fields: Vec<&str> = passwd.split(':').collect();
    let [_, _, uid, gid, _, home, shell] = fields[..] else {
        return Err(format!("getent passwd {PACKAGE}: unexpected `{passwd}`"));
    };
    let (uid, gid): (u32, u32) = (parse(uid)?, parse(gid)?);
    // Debian's system range (adduser.conf FIRST_SYSTEM_UID..LAST_SYSTEM_UID).
    ensure(
        (100..1000).contains(&uid),
        format!("user `{PACKAGE}` has uid {uid}, not a system uid"),
    )?;
    ensure(
        home == STATE_DIR,
        format!("user `{PACKAGE}` has home `{home}`, not {STATE_DIR}"),
    )?;
    ensure(
        shell == "/usr/sbin/nologin",
        format!("user `{PACKAGE}` has shell `{shell}`, not /usr/sbin/nologin"),
    )?;
    let group = command_stdout(Command::new("getent").args(["group", PACKAGE]))?;
    ensure(
        group.split(':').nth(2) == Some(&gid.to_string()),
        format!("group `{PACKAGE}` (`{group}`) is not the user's primary group {gid}"),
    )?;
    let shadow = command_stdout(Command::new("getent").args(["shadow", PACKAGE]))?;
    let password = shadow.split(':').nth(1).unwrap_or_default();
    ensure(
        password.starts_with('!') || password.starts_with('*'),
        format!("user `{PACKAGE}` has a usable password field `{password}`"),
    )?;
    let groups = command_stdout(Command::new("id").args(["-nG", PACKAGE]))?;
    ensure(
        groups.split_whitespace().any(|g| g == "adm"),
        format!("user `{PACKAGE}` is not in `adm` (Debian's PostgreSQL logs): {groups}"),
    )?;
    let adm = command_stdout(Command::new("getent").args(["group", "adm"]))?;
    let adm_gid = parse(adm.split(':').nth(2).unwrap_or_default())?;
    eprintln!(
        "xtask: user `{PACKAGE}` uid {uid} gid {gid}, groups {groups}, home {home}, shell {shell}"
    );
    Ok(Account { uid, gid, adm_gid })
}

fn check_files(package: &DebPackage, account: &Account) -> Result<(), String> {
    let root_owned = (0, 0);
    let mut expected: Vec<(String, u32, (u32, u32), bool)> = vec![
        (BINARY.to_owned(), 0o755, root_owned, false),
        (UNIT.to_owned(), 0o644, root_owned, false),
        (
            format!("{KEY_DIR}/{KEY_NAME}.pub"),
            0o644,
            root_owned,
            false,
        ),
        (format!("{DOC_DIR}/copyright"), 0o644, root_owned, false),
        (CONFIG.to_owned(), 0o640, (0, account.gid), false),
        (
            STATE_DIR.to_owned(),
            0o750,
            (account.uid, account.gid),
            true,
        ),
    ];
    for name in COLLECTORS {
        for file in [format!("{name}.wasm"), format!("{name}.wasm.sig")] {
            expected.push((format!("{PLUGIN_DIR}/{file}"), 0o644, root_owned, false));
        }
        // Its precompiled artifact, named by the sha256 of the installed file.
        expected.push((
            format!("{PRECOMPILED_DIR}/{}", artifact_name(name)?),
            0o644,
            root_owned,
            false,
        ));
    }
    expected.push((PRECOMPILED_DIR.to_owned(), 0o755, root_owned, true));
    for (path, mode, (uid, gid), is_dir) in &expected {
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{path}: {e}"))?;
        let kind_ok = if *is_dir {
            meta.is_dir()
        } else {
            meta.is_file()
        };
        ensure(
            kind_ok,
            format!(
                "{path}: not a {}",
                if *is_dir { "directory" } else { "regular file" }
            ),
        )?;
        ensure(
            meta.mode() & 0o7777 == *mode && meta.uid() == *uid && meta.gid() == *gid,
            format!(
                "{path}: mode {:o} uid {} gid {}, expected mode {mode:o} uid {uid} gid {gid}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        )?;
    }
    // Stripped: no symbol table and no DWARF left.
    let sections = command_stdout(Command::new("readelf").args(["-S", "--wide", BINARY]))?;
    for section in [".symtab", ".debug_info", ".debug_line"] {
        ensure(
            !sections.contains(section),
            format!("{BINARY} is not stripped: it has {section}"),
        )?;
    }
    let size = std::fs::metadata(BINARY).map_err(|e| e.to_string())?.len();
    let version = command_stdout(Command::new(BINARY).arg("--version"))?;
    eprintln!(
        "xtask: {BINARY}: {version}, stripped, {:.1} MB",
        size as f64 / 1e6
    );

    let conffiles =
        command_stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]))?;
    ensure(
        conffiles
            .lines()
            .any(|l| l.split_whitespace().next() == Some(CONFIG)),
        format!("{CONFIG} is not a conffile of the package: `{conffiles}`"),
    )?;
    // Every installed file matches DEBIAN/md5sums.
    command_stdout(Command::new("dpkg").args(["--verify", PACKAGE]))
        .map_err(|e| format!("dpkg --verify: {e}"))?;

    // The release key's secret half is in none of the installed files, and no key file is.
    let listed = command_stdout(Command::new("dpkg").args(["-L", PACKAGE]))?;
    let key_text = std::fs::read_to_string(package.key_dir.join(format!("{KEY_NAME}.key")))
        .map_err(|e| format!("the release key: {e}"))?;
    let seed = dist::secret_seed(&key_text).ok_or("the release key file is malformed")?;
    let mut scanned = 0;
    for path in listed.lines().map(Path::new) {
        ensure(
            path.extension().is_none_or(|e| e != "key"),
            format!("the package installs a key file: {}", path.display()),
        )?;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.is_file() {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            ensure(
                !dist::contains(&bytes, seed.as_bytes()),
                format!("{} holds the release key's secret", path.display()),
            )?;
            scanned += 1;
        }
    }
    eprintln!(
        "xtask: {} installed paths have the expected modes; {scanned} installed files hold no secret key",
        expected.len()
    );
    Ok(())
}

/// The installed unit, as far as this test runs it.
struct Unit {
    user: String,
    exec_start: Vec<String>,
    umask: String,
}

fn check_unit() -> Result<Unit, String> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let output = Command::new("systemd-analyze")
            .args(["verify", UNIT])
            .output()
            .map_err(|e| format!("systemd-analyze: {e}"))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure(
            output.status.success() && said.trim().is_empty(),
            format!("systemd-analyze verify {UNIT} ({}):\n{said}", output.status),
        )?;
        eprintln!("xtask: systemd-analyze verify {UNIT}: clean");
    } else {
        eprintln!(
            "xtask: systemd-analyze is not installed: the unit is checked by reading it only"
        );
    }
    let text = std::fs::read_to_string(UNIT).map_err(|e| format!("{UNIT}: {e}"))?;
    let settings = service_settings(&text);
    for (key, value) in REQUIRED_SETTINGS {
        let found = settings.get(key).map(Vec::as_slice).unwrap_or_default();
        ensure(
            found == [value.to_owned()],
            format!("{UNIT}: `{key}=` is {found:?}, expected exactly `{key}={value}`"),
        )?;
    }
    for key in FORBIDDEN_SETTINGS {
        ensure(
            !settings.contains_key(key),
            format!("{UNIT}: sets `{key}=`, which the agent cannot run under"),
        )?;
        // ... and the unit says why it is left out.
        ensure(
            text.lines()
                .any(|l| l.trim_start().starts_with('#') && l.contains(key)),
            format!("{UNIT}: no comment explains why `{key}=` is not set"),
        )?;
    }
    let single = |key: &str| -> Result<String, String> {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => Ok(value.clone()),
            other => Err(format!("{UNIT}: `{key}=` is {other:?}")),
        }
    };
    let exec_start = single("ExecStart")?;
    ensure(
        !exec_start.contains(['"', '\'', '\\', '$', '%'])
            && !exec_start.starts_with(['-', '@', ':', '+', '!']),
        format!("{UNIT}: this test splits ExecStart on spaces only: `{exec_start}`"),
    )?;
    ensure(
        !settings.contains_key("Environment") && !settings.contains_key("EnvironmentFile"),
        format!("{UNIT}: sets an environment this test does not reproduce"),
    )?;
    let unit = Unit {
        user: single("User")?,
        exec_start: exec_start.split_whitespace().map(str::to_owned).collect(),
        umask: single("UMask")?,
    };
    ensure(
        unit.umask.chars().all(|c| c.is_digit(8)),
        format!("{UNIT}: UMask `{}` is not octal", unit.umask),
    )?;
    Ok(unit)
}

/// The `[Service]` section's `Key=value` lines; a key may repeat.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings = BTreeMap::<String, Vec<String>>::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((key, value)) = line.split_once('=')
        {
            settings
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    settings
}

/// `config check` of the installed config, as the agent's user (as root it would create a
/// compile cache the agent then refuses); and the package's trust really enforced: the same
/// config with one plugin's file changed after signing fails.
fn check_config_as_agent(unit: &Unit) -> Result<(), String> {
    let binary = &unit.exec_start[0];
    let output = as_user(
        &unit.user,
        [binary.as_str(), "config", "check", "--config", CONFIG],
    )?;
    let said = output_text(&output);
    ensure(
        output.status.success(),
        format!(
            "`pganalytics config check` of {CONFIG} failed ({}):\n{said}",
            output.status
        ),
    )?;
    for name in COLLECTORS {
        ensure(
            said.lines().any(|line| {
                line.starts_with(&format!("ok      plugin `{name}`"))
                    && line.ends_with(", precompiled)")
            }),
            format!(
                "`config check` of {CONFIG} did not load `{name}` from its precompiled artifact:\n{said}"
            ),
        )?;
    }
    eprintln!(
        "xtask: {CONFIG} passes `pganalytics config check` as user `{}`, every collector from {PRECOMPILED_DIR}",
        unit.user
    );

    let dir = TestDir::create("tamper")?;
    let original = format!("{PLUGIN_DIR}/sysstat.wasm");
    let tampered = dir.path.join("sysstat.wasm");
    let mut bytes = std::fs::read(&original).map_err(|e| format!("{original}: {e}"))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&tampered, &bytes).map_err(|e| e.to_string())?;
    std::fs::copy(format!("{original}.sig"), dir.path.join("sysstat.wasm.sig"))
        .map_err(|e| e.to_string())?;
    let config = replace_once(
        &read(CONFIG)?,
        &format!("wasm = \"{original}\""),
        &format!("wasm = {:?}", tampered.display().to_string()),
    )?;
    let config_path = dir.write("config.toml", config.as_bytes(), 0o640)?;
    let output = as_user(
        &unit.user,
        [binary.as_str(), "config", "check", "--config", &config_path],
    )?;
    let said = output_text(&output);
    ensure(
        !output.status.success() && said.contains("sysstat") && said.contains("signature"),
        format!(
            "a changed sysstat.wasm with the package's .sig was not refused for its signature ({}):\n{said}",
            output.status
        ),
    )?;
    eprintln!("xtask: a collector changed after signing is refused by the packaged config's trust");
    Ok(())
}

/// Runs the unit's command line as its user against a throwaway cluster and the test backend
/// until items of every collector arrived, then stops it with SIGTERM.
fn run_unit_command(unit: &Unit, account: &Account) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    // A backend that does not decode gzip, like the real one (`compression = "auto"` copes).
    let backend = runtime.block_on(test_backend::TestBackend::start(
        test_backend::BackendConfig::default(),
    ));
    // Debian's log layout in miniature: a postgres:adm 2750 directory, the log postgres:adm
    // 0640, so the agent reads it only through its `adm` membership.
    let cluster = throwaway_pg::TestCluster::start(&[
        "logging_collector=on",
        "log_filename=postgresql-15-main.log",
        "log_file_mode=0640",
    ]);
    let log_dir = cluster.log_dir();
    let log_file = log_dir.join("postgresql-15-main.log");
    for (path, mode) in [(&log_dir, 0o2750), (&log_file, 0o640)] {
        run_quiet(Command::new("chown").arg("postgres:adm").arg(path))?;
        set_mode(path, mode)?;
    }
    // The socket directory: enter, not list.
    set_mode(cluster.socket_dir(), 0o711)?;
    check_log_needs_adm(&unit.user, &log_file)?;

    let dir = TestDir::create("run")?;
    let ca = dir.write("backend-ca.pem", backend.ca_pem().as_bytes(), 0o644)?;
    let secret = dir.write("jwt_secret", &backend.jwt_secret(), 0o640)?;
    let installed = read(CONFIG)?;
    let mut config = installed.clone();
    for (from, to) in [
        (
            "host = \"/var/run/postgresql\"".to_owned(),
            format!("host = {:?}", cluster.socket_dir().display().to_string()),
        ),
        // The line of [postgres] itself, not the commented example of another server.
        (
            "\nport = 5432\n".to_owned(),
            format!("\nport = {}\n", cluster.port),
        ),
        (
            "url = \"https://localhost:8443\"".to_owned(),
            format!("url = {:?}", backend.url()),
        ),
        (
            "# jwt_secret_file = \"/etc/pganalytics/jwt_secret\"".to_owned(),
            format!("jwt_secret_file = {secret:?}"),
        ),
        (
            "# ca_file = \"/etc/pganalytics/ca.pem\"".to_owned(),
            format!("ca_file = {ca:?}"),
        ),
        (
            "push_interval = \"60s\"".to_owned(),
            "push_interval = \"1s\"".to_owned(),
        ),
    ] {
        config = replace_once(&config, &from, &to)?;
    }
    // Short intervals, and the packaged log globs pointed at the cluster's log directory.
    for (from, to) in [
        ("interval = \"30s\"", "interval = \"2s\"".to_owned()),
        ("interval = \"60s\"", "interval = \"3s\"".to_owned()),
        ("interval = \"5m\"", "interval = \"5s\"".to_owned()),
        (
            "\"/var/log/postgresql/postgresql-",
            format!("\"{}/postgresql-", log_dir.display()),
        ),
    ] {
        ensure(
            config.contains(from),
            format!("{CONFIG}: `{from}` not found; update the package test"),
        )?;
        config = config.replace(from, &to);
    }
    let config_path = dir.write("config.toml", config.as_bytes(), 0o640)?;

    let mut command_line = unit.exec_start.clone();
    let at = command_line
        .iter()
        .position(|a| a == "--config")
        .filter(|at| at + 1 < command_line.len())
        .ok_or_else(|| format!("{UNIT}: ExecStart has no `--config FILE`"))?;
    command_line[at + 1] = config_path.clone();
    eprintln!(
        "xtask: running the unit's command line as `{}` (umask {}): {}",
        unit.user,
        unit.umask,
        command_line.join(" ")
    );
    let log_path = dir.path.join("agent.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut runuser = Command::new("runuser");
    runuser
        .args(["-u", &unit.user, "--", "sh", "-c"])
        .arg(format!("umask {} && exec \"$@\"", unit.umask))
        .arg("pganalytics-unit")
        .args(&command_line)
        .current_dir("/")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let mut child = runuser.spawn().map_err(|e| format!("runuser: {e}"))?;
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Outside the closure so that a failure can stop the agent too, not only `runuser` (which
    // does not pass a SIGKILL on; a leftover agent keeps the package user from being deleted).
    let seen_pid = std::cell::Cell::new(None::<u32>);
    let result = (|| {
        let started = Instant::now();
        let wanted = ["sysstat", "disk_usage", "pg_stats", "pg_server"];
        let mut agent_pid = None;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "the agent exited early ({status}); its log:\n{}",
                    agent_log()
                ));
            }
            if agent_pid.is_none() {
                agent_pid = child_of(child.id());
                seen_pid.set(agent_pid);
                if let Some(pid) = agent_pid {
                    check_process_identity(pid, account)?;
                }
            }
            let _ = cluster.try_psql("postgres", &format!("SELECT '{MARKER}' || 1/0"));
            let metrics = backend.metrics();
            let types: BTreeSet<&str> = metrics.iter().filter_map(|m| m["type"].as_str()).collect();
            let marker_seen = metrics
                .iter()
                .any(|m| m["type"] == "pg_log" && m.to_string().contains(MARKER));
            if wanted.iter().all(|t| types.contains(t)) && marker_seen {
                eprintln!(
                    "xtask: after {:.1} s the backend had {} batches, items of {types:?}, and the marker from PostgreSQL's log",
                    started.elapsed().as_secs_f64(),
                    backend.batches().len()
                );
                break;
            }
            if started.elapsed() > ARRIVAL_DEADLINE {
                return Err(format!(
                    "after {} s the backend had items of {types:?} (marker in pg_log: {marker_seen}), expected {wanted:?} and the marker; the agent's log:\n{}",
                    ARRIVAL_DEADLINE.as_secs(),
                    agent_log()
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let pid = agent_pid.ok_or("the agent's process was never seen under runuser")?;
        run_quiet(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        let stopping = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if stopping.elapsed() > STOP_DEADLINE {
                return Err(format!(
                    "the agent did not stop within {} s of SIGTERM; its log:\n{}",
                    STOP_DEADLINE.as_secs(),
                    agent_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        ensure(
            status.success(),
            format!(
                "the agent exited with {status} on SIGTERM; its log:\n{}",
                agent_log()
            ),
        )?;
        eprintln!("xtask: the agent stopped on SIGTERM with {status}");
        let said = agent_log();
        for name in COLLECTORS {
            ensure(
                said.lines().any(|line| {
                    line.contains("plugin loaded")
                        && line.contains(&format!("plugin={name} "))
                        && line.contains("precompiled")
                }),
                format!("the agent did not load `{name}` from {PRECOMPILED_DIR}; its log:\n{said}"),
            )?;
        }
        eprintln!("xtask: the agent loaded every collector from {PRECOMPILED_DIR}");
        Ok(())
    })();
    if result.is_err() {
        if let Some(pid) = seen_pid.get() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(cluster);
    runtime.block_on(async move {
        let mut backend = backend;
        backend.stop().await;
    });
    result
}

/// The package user reads the log through `adm` and only through it: without its supplementary
/// groups (`runuser -g`) the same read fails.
fn check_log_needs_adm(user: &str, log: &Path) -> Result<(), String> {
    let log = log.display().to_string();
    let with_groups = as_user(user, ["head", "-c", "1", log.as_str()])?;
    ensure(
        with_groups.status.success(),
        format!(
            "user `{user}` cannot read {log} with its groups: {}",
            output_text(&with_groups)
        ),
    )?;
    let without = Command::new("runuser")
        .args(["-u", user, "-g", user, "--", "head", "-c", "1", &log])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("runuser: {e}"))?;
    ensure(
        !without.status.success(),
        format!(
            "user `{user}` reads {log} without `adm`: the test's log permissions prove nothing"
        ),
    )?;
    eprintln!("xtask: the package user reads a postgres:adm 0640 log only through `adm`");
    Ok(())
}

/// The agent runs as the package user with its groups, the binary being the installed one.
fn check_process_identity(pid: u32, account: &Account) -> Result<(), String> {
    let status = read(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (uids, gids, groups) = (field("Uid:"), field("Gid:"), field("Groups:"));
    ensure(
        uids == [account.uid; 4] && gids == [account.gid; 4] && groups.contains(&account.adm_gid),
        format!("the agent (pid {pid}) runs with uids {uids:?}, gids {gids:?}, groups {groups:?}"),
    )?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
    ensure(
        exe == Path::new(BINARY),
        format!("the agent (pid {pid}) runs {}", exe.display()),
    )?;
    eprintln!(
        "xtask: the agent (pid {pid}) runs {BINARY} as uid {} gid {} with `adm`",
        account.uid, account.gid
    );
    Ok(())
}

/// The process runuser started (after `sh` exec'd into the agent, the agent itself).
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let child: u32 = children.split_whitespace().next()?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok()?;
    (exe == Path::new(BINARY)).then_some(child)
}

/// Everything the agent wrote is its own and closed to other users (UMask=0077), and the
/// compile cache stayed empty: every collector came precompiled, so nothing was compiled.
fn check_state_dir(account: &Account) -> Result<(), String> {
    let mut entries = Vec::new();
    walk(Path::new(STATE_DIR), &mut entries)?;
    let mut problems = Vec::new();
    for path in &entries {
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        if meta.uid() != account.uid || meta.mode() & 0o007 != 0 {
            problems.push(format!(
                "{} (uid {}, mode {:o})",
                path.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
    }
    ensure(
        problems.is_empty(),
        format!("in {STATE_DIR}, not the agent's own or open to others: {problems:?}"),
    )?;
    let compiled = cache_entries()?;
    ensure(
        compiled == 0,
        format!(
            "{STATE_DIR}/cache holds {compiled} compiled components: the agent compiled instead of using {PRECOMPILED_DIR}"
        ),
    )?;
    for sub in ["spool", "cache"] {
        ensure(
            Path::new(STATE_DIR).join(sub).is_dir(),
            format!("{STATE_DIR}/{sub} was not created"),
        )?;
    }
    eprintln!(
        "xtask: {STATE_DIR}: {} entries, all owned by the agent and closed to others; nothing compiled into the cache",
        entries.len()
    );
    Ok(())
}

/// The file name of the precompiled artifact of the installed collector `name`:
/// `SHA256-plain.cwasm`, the sha256 of its installed `.wasm` (by `sha256sum`).
fn artifact_name(name: &str) -> Result<String, String> {
    let path = format!("{PLUGIN_DIR}/{name}.wasm");
    let sum = command_stdout(Command::new("sha256sum").arg(&path))?;
    let digest = sum
        .split_whitespace()
        .next()
        .filter(|d| d.len() == 64)
        .ok_or_else(|| format!("sha256sum {path}: `{sum}`"))?;
    Ok(format!("{digest}-plain.cwasm"))
}

fn cache_entries() -> Result<usize, String> {
    let dir = format!("{STATE_DIR}/cache");
    Ok(std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .count())
}

/// An upgrade (here a reinstall of the same version, the same maintainer-script path) keeps a
/// locally edited conffile without asking, the config's ownership and the state.
fn reinstall_keeps_local_config(deb: &str, account: &Account) -> Result<(), String> {
    let edit = "\n# local edit, kept across upgrades (package test)\n";
    let edited = format!("{}{edit}", read(CONFIG)?);
    std::fs::write(CONFIG, &edited).map_err(|e| format!("{CONFIG}: {e}"))?;
    let cached = cache_entries()?;
    dpkg(&["-i", deb])?;
    ensure(
        read(CONFIG)? == edited,
        format!("reinstalling replaced the locally edited {CONFIG}"),
    )?;
    for suffix in [".dpkg-dist", ".dpkg-new", ".dpkg-old"] {
        ensure(
            !Path::new(&format!("{CONFIG}{suffix}")).exists(),
            format!("reinstalling left {CONFIG}{suffix}"),
        )?;
    }
    let meta = std::fs::metadata(CONFIG).map_err(|e| e.to_string())?;
    ensure(
        meta.mode() & 0o7777 == 0o640 && meta.uid() == 0 && meta.gid() == account.gid,
        format!(
            "{CONFIG}: mode {:o} gid {} after reinstalling",
            meta.mode() & 0o7777,
            meta.gid()
        ),
    )?;
    ensure(
        cache_entries()? == cached,
        format!("reinstalling changed {STATE_DIR}/cache"),
    )?;
    eprintln!("xtask: reinstalling kept the edited conffile, its mode and the state");
    Ok(())
}

fn remove_then_purge() -> Result<(), String> {
    dpkg(&["-r", PACKAGE])?;
    for gone in [BINARY, UNIT, PLUGIN_DIR, PRECOMPILED_DIR, KEY_DIR] {
        ensure(!exists(gone), format!("`dpkg -r` left {gone}"))?;
    }
    for kept in [CONFIG, STATE_DIR] {
        ensure(
            exists(kept),
            format!("`dpkg -r` removed {kept}, which only a purge may"),
        )?;
    }
    dpkg(&["--purge", PACKAGE])?;
    for gone in [
        CONFIG,
        "/etc/pganalytics",
        STATE_DIR,
        "/usr/lib/pganalytics",
        "/usr/share/pganalytics",
        DOC_DIR,
    ] {
        ensure(!exists(gone), format!("`dpkg --purge` left {gone}"))?;
    }
    ensure(
        package_status().is_none(),
        format!(
            "`dpkg --purge` left the package known as {:?}",
            package_status()
        ),
    )?;
    // Kept on purpose (postrm explains): a reused uid must not inherit files.
    ensure(
        Command::new("getent")
            .args(["passwd", PACKAGE])
            .output()
            .is_ok_and(|o| o.status.success()),
        format!("`dpkg --purge` removed the `{PACKAGE}` user, which postrm keeps"),
    )?;
    eprintln!(
        "xtask: `dpkg -r` kept the config and state; `dpkg --purge` removed both, kept the system user"
    );
    Ok(())
}

/// Deletes the `pganalytics` account and group that a purge keeps, if they look like the
/// package's (a system uid, home in the state directory); anything else is not this test's.
fn remove_account() -> Result<(), String> {
    let Ok(passwd) = command_stdout(Command::new("getent").args(["passwd", PACKAGE])) else {
        return Ok(());
    };
    let fields: Vec<&str> = passwd.split(':').collect();
    let ours = fields.len() == 7
        && fields[2]
            .parse::<u32>()
            .is_ok_and(|uid| (100..1000).contains(&uid))
        && fields[5] == STATE_DIR;
    ensure(
        ours,
        format!(
            "an account `{PACKAGE}` that the package did not make exists (`{passwd}`); the package test refuses to touch it"
        ),
    )?;
    run_quiet(Command::new("deluser").args(["--system", "--quiet", PACKAGE]))?;
    if command_stdout(Command::new("getent").args(["group", PACKAGE])).is_ok() {
        run_quiet(Command::new("delgroup").args(["--system", "--quiet", PACKAGE]))?;
    }
    Ok(())
}

/// The package's dpkg status (`ii`, `rc`, ...), or None when not installed in any form.
fn package_status() -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", PACKAGE])
        .output()
        .ok()?;
    let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success()
        && !status.is_empty()
        && !status.starts_with('u')
        && !status.starts_with('p'))
    .then_some(status)
}

/// A pganalytics package this test did not install is not its to remove.
fn refuse_foreign_install() -> Result<(), String> {
    match package_status() {
        None => Ok(()),
        Some(status) => Err(format!(
            "package `{PACKAGE}` is already on this machine (dpkg status `{status}`); the package test installs and purges it, so it refuses to run. If it is a leftover of an interrupted test: dpkg --purge {PACKAGE}"
        )),
    }
}

/// Installs the package's declared dependencies that are missing, with apt.
fn install_dependencies(deb: &Path) -> Result<(), String> {
    let depends = command_stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"))?;
    let mut missing = Vec::new();
    for group in depends.split(',') {
        let alternatives: Vec<&str> = group
            .split('|')
            .filter_map(|a| a.split_whitespace().next())
            .collect();
        let installed = alternatives.iter().any(|name| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", name])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        });
        if !installed && let Some(first) = alternatives.first() {
            missing.push(*first);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    super::apt_install(&missing)
}

/// dpkg, waiting while another process holds its lock; its stdin is closed so that a conffile
/// prompt fails the test instead of hanging it.
fn dpkg(args: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        eprintln!("xtask: dpkg {}", args.join(" "));
        let output = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("dpkg: {e}"))?;
        let said = output_text(&output);
        if output.status.success() {
            return Ok(());
        }
        if said.contains("lock") && started.elapsed() < DPKG_LOCK_WAIT {
            std::thread::sleep(Duration::from_secs(3));
            continue;
        }
        return Err(format!(
            "dpkg {} failed ({}):\n{said}",
            args.join(" "),
            output.status
        ));
    }
}

fn as_user<'a>(user: &str, args: impl IntoIterator<Item = &'a str>) -> Result<Output, String> {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("runuser: {e}"))
}

/// A directory below /tmp that the agent's group may read, removed on drop.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn create(what: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "pganalytics-package-test-{what}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = Self { path };
        dir.share(&dir.path, 0o750)?;
        Ok(dir)
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<String, String> {
        let path = self.path.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        self.share(&path, mode)?;
        Ok(path.display().to_string())
    }

    /// root:pganalytics with `mode`, as an operator would set up a secret for the agent.
    fn share(&self, path: &Path, mode: u32) -> Result<(), String> {
        run_quiet(
            Command::new("chown")
                .arg(format!("root:{PACKAGE}"))
                .arg(path),
        )?;
        set_mode(path, mode)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        into.push(entry.path());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            walk(&entry.path(), into)?;
        }
    }
    Ok(())
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String, String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => Err(format!(
            "{CONFIG}: expected `{from}` once, found it {n} times; update the package test"
        )),
    }
}

fn ensure(condition: bool, message: String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(message) }
}

fn parse(number: &str) -> Result<u32, String> {
    number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_quiet(command: &mut Command) -> Result<(), String> {
    command_stdout(command).map(drop)
}

fn command_stdout(command: &mut Command) -> Result<String, String> {
    let what = format!("{command:?}");
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            output_text(&output)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_unit_has_every_required_setting_and_none_forbidden() {
        let unit = std::fs::read_to_string(
            super::super::root().join("packaging/debian/pganalytics.service"),
        )
        .unwrap();
        let settings = service_settings(&unit);
        for (key, value) in REQUIRED_SETTINGS {
            assert_eq!(settings.get(key), Some(&vec![value.to_owned()]), "{key}");
        }
        for key in FORBIDDEN_SETTINGS {
            assert!(!settings.contains_key(key), "{key}");
        }
    }

    #[test]
    fn unit_settings_are_read_from_the_service_section_only() {
        let settings = service_settings(
            "[Unit]\nUser=wrong\n[Service]\n# User=commented\nUser=pganalytics\nCapabilityBoundingSet=\nBindReadOnlyPaths=/a\nBindReadOnlyPaths=/b\n[Install]\nWantedBy=multi-user.target\n",
        );
        assert_eq!(settings["User"], ["pganalytics"]);
        assert_eq!(settings["CapabilityBoundingSet"], [""]);
        assert_eq!(settings["BindReadOnlyPaths"], ["/a", "/b"]);
        assert!(!settings.contains_key("WantedBy"));
    }
}
