//! The `pganalytics` command line. Only argument handling and printing live here; everything
//! else is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use pganalytics::config::{self, Config, LogFormat};
use pganalytics::fsutil;
use pganalytics::pipeline;
use pganalytics::plugin::signature::{self, PublicKey, SecretKey, SignatureFile};
use pganalytics::plugin::{self, Import, PluginHost};

/// PostgreSQL host agent whose collectors run as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "pganalytics", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the enabled plugins and print the resulting envelope (JSON) on stdout.
    Collect {
        /// Run each plugin once and exit (the only mode of this command).
        #[arg(long)]
        once: bool,
        #[arg(long, short, env = "PGANALYTICS_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only run these plugins (enabled or not); repeatable.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
    /// Run the agent: collect on each plugin's interval, spool, push to the backend, pull its
    /// config, reload on SIGHUP; stop cleanly on SIGTERM/SIGINT.
    #[command(alias = "cron")]
    Run {
        #[arg(long, short, env = "PGANALYTICS_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Register with the backend now (`[backend] registration_secret_file`) and save the
    /// identity (collector id, token, certificate, key) in the state directory, mode 0600.
    Register {
        #[arg(long, short, env = "PGANALYTICS_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the config, then try each PostgreSQL server and the backend (TLS handshake,
    /// token, one authenticated request; no push): one line per check, exit 1 on any FAIL.
    Check {
        #[arg(long, short, env = "PGANALYTICS_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Inspect, sign and verify plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what a component imports, the grants it needs and its sha256, without running it.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Check the signatures in FILE.sig against the `[trust]` keys of this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create an Ed25519 key pair for signing plugins: DIR/NAME.key (mode 0600, keep it
    /// private) and DIR/NAME.pub (for `[trust.keys]`). Existing files are never overwritten.
    Keygen {
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component: add (or renew) the key's signature in FILE.sig.
    Sign {
        file: PathBuf,
        /// The secret key file written by `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Compile components ahead of time for this agent's engine into DIR/SHA256-plain.cwasm
    /// (or -metered), for `[collector] precompiled_dir`. Each artifact is bound to the sha256 of
    /// the file it was made from; install DIR owned by root, not writable by group or others.
    Precompile {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// For plugins with a `fuel` limit (the metered engine).
        #[arg(long)]
        metered: bool,
    },
    /// Check FILE.sig: exit 0 only when a given key signed the file exactly as it is.
    #[command(group(clap::ArgGroup::new("keys").required(true).multiple(true).args(["public", "config"])))]
    Verify {
        file: PathBuf,
        /// A public key file written by `keygen`; repeatable, any one suffices.
        #[arg(long = "pub")]
        public: Vec<PathBuf>,
        /// Use the `[trust]` keys of this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config and every enabled plugin it names (digest, compile, grants); report
    /// every problem with file, key and line.
    Check {
        #[arg(long, short, env = "PGANALYTICS_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

const DEFAULT_CONFIG: &str = "/etc/pganalytics/config.toml";

fn main() -> ExitCode {
    pganalytics::heap::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Collect {
            once,
            config,
            plugins,
        } => collect(once, &config, &plugins),
        Command::Run { config } => run(&config),
        Command::Register { config } => register(&config),
        Command::Check { config } => connect_check(&config),
        Command::Plugin { command } => match command {
            PluginCommand::Inspect { file, json, config } => {
                inspect(&file, json, config.as_deref())
            }
            PluginCommand::Keygen { name, out } => keygen(&name, &out),
            PluginCommand::Sign { file, key } => sign(&file, &key),
            PluginCommand::Precompile {
                files,
                out,
                metered,
            } => precompile(&files, &out, metered),
            PluginCommand::Verify {
                file,
                public,
                config,
            } => verify(&file, &public, config.as_deref()),
        },
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGANALYTICS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn collect(once: bool, config_path: &Path, only: &[String]) -> anyhow::Result<ExitCode> {
    if !once {
        anyhow::bail!("`collect` needs `--once`; for continuous collection use `pganalytics run`");
    }
    let config = load_config(config_path)?;
    init_logging(config.collector.log_format, &config.collector.log_level);
    for name in only {
        if !config.plugins.contains_key(name) {
            anyhow::bail!("no plugin `{name}` in {}", config_path.display());
        }
    }
    let host = PluginHost::new(&config.host_setup())
        .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e:#}"))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let collection = runtime.block_on(pipeline::collect_once(&config, &host, only));
    let mut failed = 0;
    for (name, error) in collection.failures() {
        failed += 1;
        tracing::error!(plugin = name, "{error}");
    }
    println!("{}", serde_json::to_string_pretty(&collection.envelope)?);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    init_logging(config.collector.log_format, &config.collector.log_level);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(pganalytics::agent::run(config_path, config))?;
    Ok(ExitCode::SUCCESS)
}

fn register(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    init_logging(config.collector.log_format, &config.collector.log_level);
    if config.collector.state_dir.is_none() {
        anyhow::bail!(
            "{}: `collector.state_dir` is required to keep the identity",
            config_path.display()
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let metrics = std::sync::Arc::new(pganalytics::telemetry::Metrics::default());
    let id = runtime.block_on(async {
        let mut sender = pipeline::sender::Sender::new(&config, metrics)?;
        sender.register().await
    })?;
    println!(
        "registered as collector `{id}`; identity saved under {}",
        config
            .collector
            .state_dir
            .unwrap()
            .join("identity")
            .display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The trusted keys named on the command line (`--pub`) and in a config's `[trust]`.
fn trusted_keys(public: &[PathBuf], config: Option<&Path>) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for path in public {
        keys.push(PublicKey::read(path).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    if let Some(path) = config {
        let config = load_config(path)?;
        keys.extend(config.trust.keys.values().map(|k| (**k).clone()));
    }
    Ok(keys)
}

fn keygen(name: &str, out: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let key = SecretKey::generate(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (key_path, pub_path) = (
        out.join(format!("{name}.key")),
        out.join(format!("{name}.pub")),
    );
    for path in [&key_path, &pub_path] {
        if path.exists() {
            anyhow::bail!("`{}` exists; refusing to overwrite a key", path.display());
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| format!("creating `{}`", out.display()))?;
    let write = |path: &Path, mode: u32, text: String| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating `{}`", path.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing `{}`", path.display()))
    };
    write(&key_path, 0o600, key.to_file_text())?;
    write(&pub_path, 0o644, key.public().to_file_text())?;
    println!(
        "secret key  {} (mode 0600: keep it off the hosts that run plugins)\npublic key  {}\n\ntrust it in the config:\n  [trust.keys]\n  {name} = {:?}",
        key_path.display(),
        pub_path.display(),
        pub_path.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(file: &Path, key_path: &Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::PermissionsExt;
    let key = SecretKey::read(key_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Ok(meta) = std::fs::metadata(key_path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: `{}` is readable by others (mode {:o}); chmod 600 it",
            key_path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let (_, sha256) = plugin::read_component("sign", file)?;
    let sig_path = signature::signature_path(file);
    let mut signatures = match SignatureFile::read(&sig_path) {
        Ok(existing) => existing,
        Err(signature::ReadSignatureError::Missing(_)) => SignatureFile::default(),
        Err(signature::ReadSignatureError::Malformed(why)) => anyhow::bail!(
            "`{}` exists but is malformed ({why}); move it away to start a new one",
            sig_path.display()
        ),
    };
    signatures.add(key.sign(&sha256));
    fsutil::write_atomically(
        &sig_path,
        signatures.to_file_text().as_bytes(),
        fsutil::SHARED,
    )
    .with_context(|| format!("writing `{}`", sig_path.display()))?;
    println!(
        "signed `{}` (sha256 {}) with key `{}`; `{}` holds {} signature{}",
        file.display(),
        hex::encode(sha256),
        key.name,
        sig_path.display(),
        signatures.blocks.len(),
        if signatures.blocks.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn precompile(files: &[PathBuf], out: &Path, metered: bool) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::DirBuilderExt;
    let engines = plugin::Engines::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let engine = engines
        .get(metered)
        .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e:#}"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(out)
        .with_context(|| format!("creating `{}`", out.display()))?;
    for file in files {
        let started = std::time::Instant::now();
        let (bytes, sha256) = plugin::read_component("precompile", file)?;
        plugin::structure::check("precompile", file, &bytes)?;
        let artifact = plugin::precompiled::build_artifact(&engine, metered, &sha256, &bytes)
            .map_err(|e| anyhow::anyhow!("compiling `{}`: {e:#}", file.display()))?;
        let path = out.join(plugin::PrecompiledDir::file_name(&sha256, metered));
        // Read-only for everyone: the agent refuses an artifact that group or others may write.
        fsutil::write_atomically(&path, &artifact, 0o444)
            .with_context(|| format!("writing `{}`", path.display()))?;
        println!(
            "precompiled `{}` (sha256 {}) into `{}` ({} bytes) in {} ms",
            file.display(),
            hex::encode(sha256),
            path.display(),
            artifact.len(),
            started.elapsed().as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(file: &Path, public: &[PathBuf], config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let keys = trusted_keys(public, config)?;
    if keys.is_empty() {
        anyhow::bail!("no trusted keys: the config has no `[trust.keys]`");
    }
    let (_, sha256) = plugin::read_component("verify", file)?;
    let sig_path = signature::signature_path(file);
    let signatures = SignatureFile::read(&sig_path)
        .map_err(|e| anyhow::anyhow!("`{}` is not signed: {e}", file.display()))?;
    let trusted: Vec<&PublicKey> = keys.iter().collect();
    match signatures.verify(&sha256, &trusted) {
        Ok(signer) => {
            println!(
                "ok: `{}` (sha256 {}) is signed by `{signer}`",
                file.display(),
                hex::encode(sha256)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => anyhow::bail!(
            "`{}` (sha256 {}) does not verify: {reason}",
            file.display(),
            hex::encode(sha256)
        ),
    }
}

fn inspect(file: &Path, json: bool, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let trusted = match config {
        Some(_) => Some(trusted_keys(&[], config)?),
        None => None,
    };
    let engines = plugin::Engines::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let engine = engines.get(false).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let (bytes, sha256) = plugin::read_component("inspect", file)?;
    let sig_path = signature::signature_path(file);
    // (key, status) per signature block, or why the .sig file gives none.
    let signers: Result<Vec<(String, String)>, String> = match SignatureFile::read(&sig_path) {
        Ok(signatures) => Ok(match &trusted {
            Some(keys) => signatures
                .check(&sha256, &keys.iter().collect::<Vec<_>>())
                .into_iter()
                .map(|(key, status)| (key, status.to_string()))
                .collect(),
            None => signatures
                .blocks
                .iter()
                .map(|b| {
                    (
                        b.key_name.clone(),
                        "not checked (give --config to check against its [trust] keys)".to_owned(),
                    )
                })
                .collect(),
        }),
        Err(signature::ReadSignatureError::Missing(_)) => {
            Err(format!("none (no `{}`)", sig_path.display()))
        }
        Err(signature::ReadSignatureError::Malformed(why)) => {
            Err(format!("`{}` is malformed: {why}", sig_path.display()))
        }
    };
    // The same bounds as the loader's before anything is compiled (a hostile file must not
    // make `inspect` itself spend minutes and gigabytes compiling).
    plugin::structure::check("inspect", file, &bytes)?;
    let component = plugin::compile(&engine, "inspect", file, &bytes)?;
    let manifest = plugin::Manifest::of(&engine, &component);
    // Runnable: every import satisfiable with the right types and `collect` exported, checked
    // by pre-instantiating against a linker holding everything the runtime can provide.
    let runnable = plugin::check_links(&engine, &component);
    if json {
        let report = serde_json::json!({
            "file": file,
            "sha256": hex::encode(sha256),
            "size_bytes": bytes.len(),
            "imports": manifest.imports,
            "exports": manifest.exports,
            "grants_needed": manifest.capabilities().iter().filter(|c| c.needs_grant()).map(|c| c.name()).collect::<Vec<_>>(),
            "runnable": runnable.is_ok(),
            "not_runnable_because": runnable.as_ref().err(),
            "signatures": match &signers {
                Ok(list) => serde_json::json!(list.iter().map(|(key, status)| serde_json::json!({"key": key, "status": status})).collect::<Vec<_>>()),
                Err(why) => serde_json::json!({"error": why}),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin   {}", file.display());
    println!("sha256   {}", hex::encode(sha256));
    println!("size     {} bytes", bytes.len());
    match &signers {
        Ok(list) => {
            println!("signed by:");
            for (key, status) in list {
                println!("  {key:<16} {status}");
            }
        }
        Err(why) => println!("signed by: {why}"),
    }
    println!("\ncapabilities it imports:");
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("NAME");
    let mut grants = Vec::new();
    for import in &manifest.imports {
        if let Import::Capability {
            interface,
            capability,
            needs_grant,
            summary,
        } = import
        {
            let note = if *needs_grant {
                "needs a grant"
            } else {
                "always available"
            };
            println!("  {capability:<10} {summary} ({note})  [{interface}]");
            if *needs_grant {
                grants.push(*capability);
            }
        }
    }
    let wasi: Vec<&str> = manifest
        .imports
        .iter()
        .filter_map(|i| match i {
            Import::Wasi { interface } => Some(interface.as_str()),
            _ => None,
        })
        .collect();
    println!(
        "\nWASI imports (linked with no files, no environment, no network): {}",
        wasi.len()
    );
    for interface in wasi {
        println!("  {interface}");
    }
    let unknown = manifest.unknown_imports();
    if !unknown.is_empty() {
        println!("\nimports this runtime cannot provide (the plugin will be refused):");
        for interface in unknown {
            println!("  {interface}");
        }
    }
    if !manifest.exports_collect() {
        println!(
            "\nit does not export `collect`: it is not a pganalytics collector and will be refused"
        );
    }
    match &runnable {
        Ok(()) => println!("\nrunnable: yes, once granted what it imports"),
        Err(why) => println!(
            "\nrunnable: NO, the runtime will refuse to load it:\n  {}",
            why.replace('\n', "\n  ")
        ),
    }
    println!("\ngrants to add to the config (adjust the values):");
    if grants.is_empty() {
        println!("  none");
    }
    for capability in pganalytics::host::Capability::ALL {
        if grants.contains(&capability.name())
            && let Some(example) = capability.grant_example(name)
        {
            println!("  {}", example.replace('\n', "\n  "));
        }
    }
    println!(
        "\npin it with:\n  [plugins.{name}]\n  sha256 = \"{}\"",
        hex::encode(sha256)
    );
    println!(
        "or require a signature (`pganalytics plugin sign`) with:\n  signed_by = [\"KEY\"]   # a key of [trust.keys]"
    );
    Ok(ExitCode::SUCCESS)
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Warnings (a cache or precompiled directory not used, an artifact ignored) go to stderr.
    init_logging(config.collector.log_format, "warn");
    let host = PluginHost::new(&config.host_setup()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut problems = 0;
    for plugin in config.plugins.values().filter(|p| p.enabled) {
        match host.load(std::sync::Arc::new(plugin.clone())) {
            Ok(loaded) => println!(
                "ok      plugin `{}` ({}, sha256 {}, {})",
                plugin.name,
                plugin.wasm.display(),
                loaded.sha256_hex(),
                loaded.compiled.describe()
            ),
            Err(e) => {
                problems += 1;
                println!("problem {}: {e}", config_path.display());
            }
        }
    }
    if problems == 0 {
        println!(
            "{}: ok ({} plugins)",
            config_path.display(),
            config.plugins.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{}: {problems} problem{}",
            config_path.display(),
            if problems == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `pganalytics check`: the config, then every connection `run` needs.
fn connect_check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(config) => {
            println!("ok   config {}: valid", config_path.display());
            config
        }
        Err(e) => {
            for problem in &e.problems {
                println!("FAIL config {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    init_logging(config.collector.log_format, "warn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let checks = runtime.block_on(pganalytics::agent::check::run_checks(&config));
    if checks.is_empty() {
        println!("ok   nothing to connect to: the config has no [postgres] and no [backend]");
    }
    for check in &checks {
        println!("{check}");
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
