//! `cargo xtask dist`: the Debian package of the agent for the host architecture, built with
//! Debian's own `dpkg-deb --build` from a tree staged in `target/dist/stage/`.
//!
//! The package holds the stripped release binary, the four collector components signed with the
//! package's release key and precompiled by that binary for its own engine, their public key,
//! `/etc/pganalytics/config.toml` (a conffile generated from `config.toml.sample`), the hardened
//! systemd unit and the maintainer scripts of `packaging/debian/`. The release key pair lives in
//! `target/dist/keys/` and is kept across builds, so one machine's packages can replace each
//! other; the secret half must never be staged: a build that finds it in the tree fails.
//!
//! Every piece that comes from elsewhere in the repository is checked rather than trusted: each
//! edit of the sample must apply exactly once, the generated config must pass
//! `pganalytics config check` against the staged files, and every signed component must verify.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{root, run};

pub const PACKAGE: &str = "pganalytics";
/// The collectors shipped in the package (file stems under guests/target/wasm32-wasip2/release).
pub const COLLECTORS: [&str; 4] = ["sysstat", "disk", "pg_stats", "pg_log"];
/// Name of the package's signing key, in `[trust.keys]` and each plugin's `signed_by`.
pub const KEY_NAME: &str = "release";

pub const BINARY: &str = "/usr/bin/pganalytics";
pub const PLUGIN_DIR: &str = "/usr/lib/pganalytics/plugins";
/// The collectors compiled ahead of time by the staged binary (`plugin precompile`), so that
/// a first start does not compile them; root-owned and read-only, as the agent requires.
pub const PRECOMPILED_DIR: &str = "/usr/lib/pganalytics/precompiled";
/// Package data, replaced with the plugins on upgrade; operators' own keys go to /etc.
pub const KEY_DIR: &str = "/usr/share/pganalytics/keys";
pub const CONFIG: &str = "/etc/pganalytics/config.toml";
pub const UNIT: &str = "/usr/lib/systemd/system/pganalytics.service";
pub const STATE_DIR: &str = "/var/lib/pganalytics";
pub const DOC_DIR: &str = "/usr/share/doc/pganalytics";
/// What Debian's PostgreSQL writes (`pg_ctlcluster`: postgresql-VERSION-CLUSTER.log, postgres:adm
/// 0640) and what its logrotate leaves uncompressed (`copytruncate`, `delaycompress`). The older
/// rotations are gzip files, which a log tail would read as garbage, so they are not granted.
pub const LOG_GLOBS: [&str; 2] = [
    "/var/log/postgresql/postgresql-*-main.log",
    "/var/log/postgresql/postgresql-*-main.log.1",
];

/// The packaging sources: unit, maintainer scripts, control template, copyright.
const PACKAGING_DIR: &str = "packaging/debian";
const MAINTAINER_SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// A built package.
pub struct DebPackage {
    pub path: PathBuf,
    /// The release key pair that signed its collectors (`NAME.key`, `NAME.pub`).
    pub key_dir: PathBuf,
}

/// `cargo xtask dist`: builds everything, then the .deb.
pub fn dist() -> Result<DebPackage, String> {
    super::ensure_wasm_target()?;
    super::ensure_system_packages(false)?;
    ensure_packaging_tools()?;
    let binary = super::build_everything()?;
    let started = Instant::now();
    let package = build_deb(&binary)?;
    let bytes = std::fs::metadata(&package.path)
        .map_err(|e| format!("{}: {e}", package.path.display()))?
        .len();
    eprintln!(
        "xtask: built {} ({:.1} MB) in {:.1} s after the build",
        package.path.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(package)
}

/// `dpkg-shlibdeps` (dpkg-dev) computes the library dependencies, `strip` (binutils, which
/// dpkg-dev depends on) strips the binary. `dpkg-deb` itself is part of dpkg.
fn ensure_packaging_tools() -> Result<(), String> {
    let present = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if present("dpkg-shlibdeps") && present("strip") {
        return Ok(());
    }
    if !throwaway_pg::is_root() {
        return Err(
            "missing dpkg-shlibdeps or strip (Debian: sudo apt-get install dpkg-dev)".to_owned(),
        );
    }
    super::apt_install(&["dpkg-dev"])
}

fn build_deb(binary: &Path) -> Result<DebPackage, String> {
    let dist = root().join("target/dist");
    let stage = dist.join("stage");
    remove_dir_if_present(&stage)?;
    let at = |installed: &str| stage.join(installed.trim_start_matches('/'));

    // The binary, stripped: its symbols and line tables are most of its size.
    create_dir(at(BINARY).parent().expect("a file in a directory"))?;
    run(
        "stripping the pganalytics binary",
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(at(BINARY))
            .arg(binary),
    )?;
    set_mode(&at(BINARY), 0o755)?;

    // The collectors, each signed with the release key; only the public half is staged.
    let key_dir = dist.join("keys");
    let secret_key = key_dir.join(format!("{KEY_NAME}.key"));
    let public_key = key_dir.join(format!("{KEY_NAME}.pub"));
    if !secret_key.exists() {
        run(
            "generating the package's release signing key (kept in target/dist/keys)",
            Command::new(binary)
                .args(["plugin", "keygen", "--name", KEY_NAME, "--out"])
                .arg(&key_dir),
        )?;
    }
    install_file(
        &public_key,
        &at(&format!("{KEY_DIR}/{KEY_NAME}.pub")),
        0o644,
    )?;
    let guests = root().join("guests/target/wasm32-wasip2/release");
    for name in COLLECTORS {
        let staged = at(&format!("{PLUGIN_DIR}/{name}.wasm"));
        install_file(&guests.join(format!("{name}.wasm")), &staged, 0o644)?;
        run(
            &format!("signing {name}.wasm with the release key"),
            Command::new(binary)
                .args(["plugin", "sign"])
                .arg(&staged)
                .arg("--key")
                .arg(&secret_key),
        )?;
        let signature = at(&format!("{PLUGIN_DIR}/{name}.wasm.sig"));
        set_mode(&signature, 0o644)?;
        run(
            &format!("verifying the signature of {name}.wasm"),
            Command::new(binary)
                .args(["plugin", "verify"])
                .arg(&staged)
                .arg("--pub")
                .arg(&public_key),
        )?;
    }

    // The collectors compiled by the staged binary itself, so the artifacts fit its engine
    // exactly; each is bound to the sha256 of the signed file beside it.
    let precompiled = at(PRECOMPILED_DIR);
    let mut precompile = Command::new(at(BINARY));
    precompile
        .args(["plugin", "precompile", "--out"])
        .arg(&precompiled);
    for name in COLLECTORS {
        precompile.arg(at(&format!("{PLUGIN_DIR}/{name}.wasm")));
    }
    run(
        "precompiling the collectors with the staged binary",
        &mut precompile,
    )?;
    for entry in
        std::fs::read_dir(&precompiled).map_err(|e| format!("{}: {e}", precompiled.display()))?
    {
        let entry = entry.map_err(|e| format!("{}: {e}", precompiled.display()))?;
        set_mode(&entry.path(), 0o644)?;
    }

    // The config, then a copy of it pointed at the staged tree, checked by the staged binary.
    let sample = root().join("config.toml.sample");
    let sample_text =
        std::fs::read_to_string(&sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let config = debian_config(&sample_text)?;
    write_file(&at(CONFIG), config.as_bytes(), 0o644)?;
    check_staged_config(&config, &stage, &dist)?;

    let packaging = root().join(PACKAGING_DIR);
    install_file(&packaging.join("pganalytics.service"), &at(UNIT), 0o644)?;
    install_file(
        &packaging.join("copyright"),
        &at(&format!("{DOC_DIR}/copyright")),
        0o644,
    )?;
    for doc in ["README.md", "CHANGELOG.md", "SECURITY.md"] {
        let text = std::fs::read(root().join(doc)).map_err(|e| format!("{doc}: {e}"))?;
        write_file(&at(&format!("{DOC_DIR}/{doc}.gz")), &gzip(&text)?, 0o644)?;
    }
    // The Apache-2.0 text itself is in /usr/share/common-licenses (named by `copyright`).

    let control_dir = stage.join("DEBIAN");
    create_dir(&control_dir)?;
    for script in MAINTAINER_SCRIPTS {
        install_file(&packaging.join(script), &control_dir.join(script), 0o755)?;
    }
    write_file(
        &control_dir.join("conffiles"),
        format!("{CONFIG}\n").as_bytes(),
        0o644,
    )?;
    write_file(&control_dir.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    let version = env!("CARGO_PKG_VERSION");
    let control = std::fs::read_to_string(packaging.join("control.in"))
        .map_err(|e| format!("{PACKAGING_DIR}/control.in: {e}"))?
        .replace("@VERSION@", version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&stage)?.to_string())
        .replace("@DEPENDS@", &library_depends(&at(BINARY), &dist)?);
    write_file(&control_dir.join("control"), control.as_bytes(), 0o644)?;

    normalize_dirs(&stage)?;
    refuse_secret_key(&stage, &secret_key)?;
    let path = dist.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(
        "building the package with dpkg-deb",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&path),
    )?;
    Ok(DebPackage { path, key_dir })
}

/// Edits that turn `config.toml.sample` into the package's `/etc/pganalytics/config.toml`.
/// Each `from` must occur exactly once in the sample, so a change there fails the build here
/// instead of shipping a config that silently kept a development path.
fn config_edits() -> Vec<(String, String)> {
    let mut edits: Vec<(String, String)> = [
        (
            "the directory of this file. This sample runs from a clean clone after the README's first command.",
            "the directory of this file. Installed by the pganalytics Debian package from\n# config.toml.sample; a conffile: your edits are kept on upgrade.",
        ),
        (
            "id = \"sample-collector\"",
            "# id = \"db1.example.com\"",
        ),
        (
            "state_dir = \"target/pganalytics-state\"",
            "state_dir = \"/var/lib/pganalytics\"",
        ),
        (
            "cache_dir = \"target/pganalytics-state/cache\"",
            "cache_dir = \"/var/lib/pganalytics/cache\"",
        ),
        (
            "# precompiled_dir = \"/usr/lib/pganalytics/precompiled\"",
            "precompiled_dir = \"/usr/lib/pganalytics/precompiled\"",
        ),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.to_owned()))
    .collect();
    edits.push((
        "# release = \"/etc/pganalytics/keys/release.pub\"".to_owned(),
        format!(
            "# The key that signed the collectors shipped in the package. Add your own keys in\n# /etc/pganalytics/keys/ for plugins you sign yourself.\n{KEY_NAME} = \"{KEY_DIR}/{KEY_NAME}.pub\""
        ),
    ));
    for name in COLLECTORS {
        edits.push((
            format!("wasm = \"guests/target/wasm32-wasip2/release/{name}.wasm\""),
            format!("wasm = \"{PLUGIN_DIR}/{name}.wasm\"\nsigned_by = [\"{KEY_NAME}\"]"),
        ));
    }
    edits.push((
        "paths = [\"/var/log/postgresql/postgresql-*.log\"]".to_owned(),
        format!(
            "# Debian's cluster `main` of any version, and its first rotation (logrotate's\n# copytruncate and delaycompress); older rotations are gzip, not text.\npaths = [{}]",
            LOG_GLOBS.map(|g| format!("\"{g}\"")).join(", ")
        ),
    ));
    edits
}

/// The sample with the package's paths: state in /var/lib/pganalytics, signed plugins from
/// /usr/lib/pganalytics/plugins, PostgreSQL over Debian's socket directory, Debian's log files.
pub fn debian_config(sample: &str) -> Result<String, String> {
    let mut config = sample.to_owned();
    for (from, to) in config_edits() {
        match config.matches(from.as_str()).count() {
            1 => config = config.replacen(from.as_str(), &to, 1),
            n => {
                return Err(format!(
                    "config.toml.sample: expected `{from}` exactly once, found it {n} times; update the package's config edits in xtask/src/dist.rs"
                ));
            }
        }
    }
    // Whatever the edits did not reach must not point into a source tree.
    for (number, line) in config.lines().enumerate() {
        let setting = line.split('#').next().unwrap_or_default();
        if setting.contains("target/") || setting.contains("guests/") {
            return Err(format!(
                "config.toml.sample: line {} of the package config still points into the source tree: `{line}`",
                number + 1
            ));
        }
    }
    for required in [
        "host = \"/var/run/postgresql\"",
        "user = \"pganalytics\"",
        "port = 5432",
    ] {
        if !config.contains(required) {
            return Err(format!(
                "config.toml.sample: the package expects `{required}` (Debian's PostgreSQL socket and the monitoring role)"
            ));
        }
    }
    Ok(config)
}

/// `pganalytics config check` on the package config with its installed paths mapped into the
/// staged tree and a throwaway state directory: the digest, signature, compilation and grants
/// of every collector are checked before anything is packaged.
fn check_staged_config(config: &str, stage: &Path, dist: &Path) -> Result<(), String> {
    let check_dir = dist.join("check");
    remove_dir_if_present(&check_dir)?;
    create_dir(&check_dir)?;
    let staged = |dir: &str| {
        stage
            .join(dir.trim_start_matches('/'))
            .display()
            .to_string()
    };
    let text = config
        .replace(PLUGIN_DIR, &staged(PLUGIN_DIR))
        .replace(PRECOMPILED_DIR, &staged(PRECOMPILED_DIR))
        .replace(KEY_DIR, &staged(KEY_DIR))
        .replace(STATE_DIR, &check_dir.join("state").display().to_string());
    let path = check_dir.join("config.toml");
    write_file(&path, text.as_bytes(), 0o644)?;
    let binary = stage.join(BINARY.trim_start_matches('/'));
    let output = Command::new(&binary)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the package config fails `pganalytics config check`:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for name in COLLECTORS {
        if !stdout.contains(&format!("ok      plugin `{name}`")) {
            return Err(format!(
                "`pganalytics config check` of the package config did not load `{name}`:\n{stdout}"
            ));
        }
    }
    // The staged tree may sit below a directory others can write (then the agent rightly
    // ignores the artifacts there); the package test checks them installed, where it may not.
    let precompiled = COLLECTORS
        .iter()
        .filter(|name| {
            stdout.lines().any(|l| {
                l.starts_with(&format!("ok      plugin `{name}`")) && l.ends_with(", precompiled)")
            })
        })
        .count();
    if precompiled != COLLECTORS.len() {
        eprintln!(
            "xtask: warning: only {precompiled} of {} staged collectors loaded from their precompiled artifacts (see the check's warnings above)",
            COLLECTORS.len()
        );
    }
    eprintln!("xtask: the package config passes `pganalytics config check` (4 signed collectors)");
    Ok(())
}

/// `Depends:` for the binary's shared libraries, from dpkg-shlibdeps (libc6 and libgcc-s1 with
/// the versions of the symbols it uses). It insists on a debian/control, which may be empty.
fn library_depends(binary: &Path, dist: &Path) -> Result<String, String> {
    let work = dist.join("shlibdeps");
    create_dir(&work.join("debian"))?;
    std::fs::write(work.join("debian/control"), "")
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let output = command_output(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(binary)
            .current_dir(&work),
    )?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .ok_or_else(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {output}"))
}

/// `DEBIAN/md5sums`: one `HASH  relative/path` line per file, as `dpkg --verify` reads it.
fn md5sums(stage: &Path) -> Result<Vec<u8>, String> {
    let mut files = Vec::new();
    walk(stage, &mut |path, is_dir| {
        if !is_dir {
            let relative = path.strip_prefix(stage).expect("walked below stage");
            if !relative.starts_with("DEBIAN") {
                files.push(relative.to_path_buf());
            }
        }
    })?;
    files.sort();
    let output = Command::new("md5sum")
        .args(&files)
        .current_dir(stage)
        .output()
        .map_err(|e| format!("md5sum: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "md5sum failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

/// `Installed-Size:` in KiB, counted as dpkg-gencontrol does (each file rounded up, plus one
/// per directory).
fn installed_size_kib(stage: &Path) -> Result<u64, String> {
    let mut kib = 0;
    let mut error = None;
    walk(stage, &mut |path, is_dir| {
        if path
            .strip_prefix(stage)
            .is_ok_and(|p| p.starts_with("DEBIAN"))
        {
            return;
        }
        if is_dir {
            kib += 1;
        } else {
            match std::fs::metadata(path) {
                Ok(meta) => kib += meta.len().div_ceil(1024),
                Err(e) => error = Some(format!("{}: {e}", path.display())),
            }
        }
    })?;
    error.map_or(Ok(kib), Err)
}

/// The secret half of the release key must never leave target/dist/keys: no staged file may
/// contain its text (its base64 seed).
fn refuse_secret_key(stage: &Path, secret_key: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(secret_key)
        .map_err(|e| format!("{}: {e}", secret_key.display()))?;
    let seed = secret_seed(&text)
        .ok_or_else(|| format!("{}: not a `plugin keygen` key file", secret_key.display()))?;
    let mut leaked = Vec::new();
    let mut error = None;
    walk(stage, &mut |path, is_dir| {
        if is_dir {
            return;
        }
        match std::fs::read(path) {
            Ok(bytes) if contains(&bytes, seed.as_bytes()) => leaked.push(path.to_path_buf()),
            Ok(_) => {}
            Err(e) => error = Some(format!("{}: {e}", path.display())),
        }
    })?;
    if let Some(error) = error {
        return Err(error);
    }
    if !leaked.is_empty() {
        return Err(format!(
            "the release signing key's secret is in staged files: {leaked:?}"
        ));
    }
    Ok(())
}

/// The base64 seed of a `NAME.key` file (`pganalytics-ed25519-key NAME BASE64`).
pub fn secret_seed(key_file_text: &str) -> Option<String> {
    let mut words = key_file_text.split_whitespace();
    (words.next()? == "pganalytics-ed25519-key")
        .then(|| words.nth(1).map(str::to_owned))
        .flatten()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("gzip: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
    writer
        .join()
        .map_err(|_| "gzip: the writer panicked".to_owned())?
        .map_err(|e| format!("gzip: {e}"))?;
    if !output.status.success() {
        return Err(format!("gzip failed ({})", output.status));
    }
    Ok(output.stdout)
}

/// Directories of a package are 0755 whatever the umask of the build.
fn normalize_dirs(stage: &Path) -> Result<(), String> {
    let mut dirs = Vec::new();
    walk(stage, &mut |path, is_dir| {
        if is_dir {
            dirs.push(path.to_path_buf());
        }
    })?;
    dirs.iter().try_for_each(|dir| set_mode(dir, 0o755))
}

/// Visits every entry below `dir` (not following symlinks), directories before their contents.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, bool)) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        visit(&entry.path(), kind.is_dir());
        if kind.is_dir() {
            walk(&entry.path(), visit)?;
        }
    }
    Ok(())
}

fn command_output(command: &mut Command) -> Result<String, String> {
    let what = format!("{command:?}");
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn remove_dir_if_present(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn install_file(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    write_file(to, &bytes, mode)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    create_dir(path.parent().expect("a file in a directory"))?;
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    set_mode(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        std::fs::read_to_string(root().join("config.toml.sample")).unwrap()
    }

    #[test]
    fn the_package_config_has_debian_paths_and_signed_plugins() {
        let config = debian_config(&sample()).unwrap();
        assert!(config.contains("state_dir = \"/var/lib/pganalytics\""));
        assert!(config.contains("\nprecompiled_dir = \"/usr/lib/pganalytics/precompiled\""));
        assert!(config.contains("release = \"/usr/share/pganalytics/keys/release.pub\""));
        for name in COLLECTORS {
            assert!(
                config.contains(&format!(
                    "wasm = \"/usr/lib/pganalytics/plugins/{name}.wasm\"\nsigned_by = [\"release\"]"
                )),
                "{name}"
            );
        }
        assert!(config.contains(
            "paths = [\"/var/log/postgresql/postgresql-*-main.log\", \"/var/log/postgresql/postgresql-*-main.log.1\"]"
        ));
        assert!(!config.contains("id = \"sample-collector\""));
    }

    #[test]
    fn a_sample_the_edits_no_longer_fit_is_an_error_naming_the_text() {
        let moved = sample().replace("state_dir = \"target/pganalytics-state\"", "");
        let error = debian_config(&moved).unwrap_err();
        assert!(
            error.contains("state_dir = \"target/pganalytics-state\""),
            "{error}"
        );
        let doubled = format!("{}\nid = \"sample-collector\"\n", sample());
        let error = debian_config(&doubled).unwrap_err();
        assert!(error.contains("found it 2 times"), "{error}");
        // A new development path the edits do not know about.
        let extra = format!(
            "{}\n[plugins.extra]\nwasm = \"guests/target/wasm32-wasip2/release/extra.wasm\"\n",
            sample()
        );
        let error = debian_config(&extra).unwrap_err();
        assert!(error.contains("extra.wasm"), "{error}");
    }

    #[test]
    fn the_secret_seed_is_found_only_in_a_key_file() {
        assert_eq!(
            secret_seed("pganalytics-ed25519-key release AAAA=\n").as_deref(),
            Some("AAAA=")
        );
        assert_eq!(secret_seed("pganalytics-ed25519-pub release AAAA=\n"), None);
        assert_eq!(secret_seed("pganalytics-ed25519-key release"), None);
        assert!(contains(b"xxAAAA=yy", b"AAAA="));
        assert!(!contains(b"xxAAA=yy", b"AAAA="));
        assert!(!contains(b"anything", b""));
    }
}
