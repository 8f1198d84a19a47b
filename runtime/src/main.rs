//! The `pganalytics` command line. Only argument handling and printing live here; everything
//! else is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use pganalytics::config::{self, Config, LogFormat};
use pganalytics::pipeline::{self, Outcome};
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
    /// Inspect plugin components.
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Collect {
            once,
            config,
            plugins,
        } => collect(once, &config, &plugins),
        Command::Run { config } => run(&config),
        Command::Register { config } => register(&config),
        Command::Plugin {
            command: PluginCommand::Inspect { file, json },
        } => inspect(&file, json),
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
    let host = PluginHost::for_config(&config)
        .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e:#}"))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let collection = runtime.block_on(pipeline::collect_once(&config, &host, only));
    for (name, outcome) in &collection.outcomes {
        if let Outcome::Accepted(accepted) = outcome {
            tracing::info!(
                plugin = name.as_str(),
                items = accepted.items.len(),
                elapsed_us = accepted.elapsed.as_micros() as u64,
                denied_calls = accepted.denied_calls,
                "collected"
            );
        }
    }
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

fn inspect(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let engines = plugin::Engines::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let engine = engines.get(false).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let (bytes, sha256) = plugin::read_component("inspect", file)?;
    let component = plugin::compile(&engine, "inspect", file, &bytes)?;
    let manifest = plugin::Manifest::of(&engine, &component);
    if json {
        let report = serde_json::json!({
            "file": file,
            "sha256": hex::encode(sha256),
            "size_bytes": bytes.len(),
            "imports": manifest.imports,
            "exports": manifest.exports,
            "grants_needed": manifest.capabilities().iter().filter(|c| c.needs_grant()).map(|c| c.name()).collect::<Vec<_>>(),
            "runnable": manifest.unknown_imports().is_empty() && manifest.exports_collect(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin   {}", file.display());
    println!("sha256   {}", hex::encode(sha256));
    println!("size     {} bytes", bytes.len());
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
    let host = PluginHost::for_config(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut problems = 0;
    for plugin in config.plugins.values().filter(|p| p.enabled) {
        match host.load(std::sync::Arc::new(plugin.clone())) {
            Ok(loaded) => println!(
                "ok      plugin `{}` ({}, sha256 {})",
                plugin.name,
                plugin.wasm.display(),
                loaded.sha256_hex()
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
