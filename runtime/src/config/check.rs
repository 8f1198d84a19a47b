//! Stage two of the config: the checks that turn the raw sections into a [`Config`], with every
//! problem recorded (file, key, line) rather than stopping at the first. Capabilities validate
//! their own grant tables and sections (`crate::host`); this module only places their typed
//! errors at the right key. It must never touch the network or load a plugin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::model::{
    BackendConfig, BufferConfig, CollectorConfig, Compression, Config, DEFAULT_INTERVAL,
    DEFAULT_SPOOL_BYTES, LogFormat, PostgresServers, TlsConfig, TrustConfig, system_hostname,
};
use super::problem::Problem;
use super::raw;
use crate::host::Grants;
use crate::host::run::PluginSettings;
use crate::plugin::PluginConfig;
use crate::plugin::limits::Limits;
use crate::plugin::signature::{self, PublicKey};

/// Collects the problems of one config text while building its [`Config`].
pub(super) struct Checker<'a> {
    file: PathBuf,
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(file: PathBuf, text: &'a str) -> Self {
        Self {
            file,
            text,
            problems: Vec::new(),
        }
    }

    pub(super) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    fn base_dir(&self) -> PathBuf {
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn problem(
        &mut self,
        key: impl Into<String>,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Deserialises one table of the document, turning a serde error into a problem that names
    /// the key found at the error's position.
    fn section<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'a>>,
    ) -> Option<T> {
        let DeValue::Table(table) = value.get_ref() else {
            self.problem(key, Some(value.span()), "must be a table");
            return None;
        };
        let table = Spanned::new(value.span(), table.clone());
        match T::deserialize(toml::de::Deserializer::from(table)) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                let span = e.span();
                let key = match &span {
                    Some(span) => self.key_at(key, span.start),
                    None => key.to_owned(),
                };
                self.problem(key, span, e.message().trim().to_owned());
                None
            }
        }
    }

    /// The dotted key of the `name = value` line at `offset`, within `section`.
    fn key_at(&self, section: &str, offset: usize) -> String {
        let start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((name, _)) if !line.trim_start().starts_with('[') => {
                let name = name.trim().trim_matches('"');
                if name.is_empty() {
                    section.to_owned()
                } else {
                    format!("{section}.{name}")
                }
            }
            _ => section.to_owned(),
        }
    }

    pub(super) fn check(&mut self) -> Option<Config> {
        let document = match DeTable::parse(self.text) {
            Ok(document) => document,
            Err(e) => {
                let message = e.message().trim().to_owned();
                self.problem("", e.span(), format!("not valid TOML: {message}"));
                return None;
            }
        };
        let root = document.get_ref();
        let mut sections: BTreeMap<String, Spanned<DeValue<'a>>> = BTreeMap::new();
        for (key, value) in root.iter() {
            let name = key.get_ref().to_string();
            match name.as_str() {
                "collector" | "backend" | "postgres" | "tls" | "buffer" | "trust" | "plugins" => {
                    sections.insert(name, value.clone());
                }
                _ => self.problem(
                    name.clone(),
                    Some(key.span()),
                    "unknown section (expected collector, backend, postgres, tls, buffer, trust or plugins)",
                ),
            }
        }

        let collector: raw::RawCollector = match sections.get("collector") {
            Some(value) => self.section("collector", value).unwrap_or_default(),
            None => raw::RawCollector::default(),
        };
        let backend: Option<raw::RawBackend> = sections
            .get("backend")
            .and_then(|v| self.section("backend", v));
        let postgres: Option<raw::RawPostgres> = sections
            .get("postgres")
            .and_then(|v| self.section("postgres", v));
        let buffer: raw::RawBuffer = sections
            .get("buffer")
            .and_then(|v| self.section("buffer", v))
            .unwrap_or_default();
        let tls: raw::RawTls = sections
            .get("tls")
            .and_then(|v| self.section("tls", v))
            .unwrap_or_default();

        let trust: raw::RawTrust = sections
            .get("trust")
            .and_then(|v| self.section("trust", v))
            .unwrap_or_default();

        let collector = self.collector(collector);
        let trust = self.trust(trust);
        let default_interval = collector.1;
        let mut plugins = BTreeMap::new();
        if let Some(value) = sections.get("plugins") {
            match value.get_ref() {
                DeValue::Table(table) => {
                    for (name, value) in table.iter() {
                        let name = name.get_ref().to_string();
                        let key = format!("plugins.{name}");
                        if !valid_plugin_name(&name) {
                            self.problem(
                                &key,
                                Some(value.span()),
                                "a plugin name may only contain letters, digits, `_` and `-`",
                            );
                            continue;
                        }
                        let span = value.span();
                        if let Some(raw) = self.section::<raw::RawPlugin>(&key, value)
                            && let Some(plugin) =
                                self.plugin(&name, raw, default_interval, &trust, span)
                        {
                            plugins.insert(name, plugin);
                        }
                    }
                }
                _ => self.problem(
                    "plugins",
                    Some(value.span()),
                    "must be a table of `[plugins.NAME]` tables",
                ),
            }
        }

        let postgres = postgres.map(|p| self.postgres(p)).unwrap_or_default();
        self.grant_servers(&plugins, &postgres);

        Some(Config {
            source: self.file.clone(),
            collector: collector.0,
            backend: backend.and_then(|b| self.backend(b)),
            postgres,
            tls: self.tls(tls),
            buffer: BufferConfig {
                max_bytes: buffer.max_bytes.map_or(DEFAULT_SPOOL_BYTES, |b| b.0),
                dead_letter_max_bytes: buffer.dead_letter_max_bytes.map(|b| b.0),
                dead_letter_max_age: buffer.dead_letter_max_age.map(|d| d.0),
            },
            trust,
            plugins,
        })
    }

    fn trust(&mut self, raw: raw::RawTrust) -> TrustConfig {
        let mut keys = BTreeMap::new();
        for (name, path) in raw.keys {
            let key = format!("trust.keys.{name}");
            let span = Some(path.span());
            if !signature::valid_key_name(&name) {
                self.problem(
                    key,
                    span,
                    "a key name may only contain letters, digits, `_`, `-` and `.`",
                );
                continue;
            }
            match PublicKey::read(&self.resolve(path.get_ref())) {
                Ok(public) if public.name == name => {
                    keys.insert(name, Arc::new(public));
                }
                Ok(public) => self.problem(
                    key,
                    span,
                    format!(
                        "`{}` holds the key named `{}`; the names must match",
                        path.get_ref().display(),
                        public.name
                    ),
                ),
                Err(why) => self.problem(key, span, why),
            }
        }
        TrustConfig { keys }
    }

    fn collector(&mut self, raw: raw::RawCollector) -> (CollectorConfig, Duration) {
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "collector.log_format",
                    None,
                    format!("`{other}` is not `text` or `json`"),
                );
                LogFormat::Text
            }
        };
        let hostname = raw.hostname.unwrap_or_else(system_hostname);
        let state_dir = raw.state_dir.map(|dir| self.resolve(&dir));
        let config = CollectorConfig {
            cache_dir: self.cache_dir(raw.cache_dir.as_deref(), state_dir.as_deref()),
            precompiled_dir: raw.precompiled_dir.map(|dir| self.resolve(&dir)),
            id: raw.id.unwrap_or_else(|| hostname.clone()),
            hostname,
            state_dir,
            log_format,
            log_level: raw.log_level.unwrap_or_else(|| "info".into()),
            listen: raw.listen.and_then(|text| {
                let span = Some(text.span());
                let text = text.into_inner();
                match text.parse::<std::net::SocketAddr>() {
                    Ok(addr) if addr.ip().is_loopback() || raw.listen_public == Some(true) => {
                        Some(addr)
                    }
                    Ok(_) => {
                        self.problem(
                            "collector.listen",
                            span,
                            format!(
                                "`{text}` is not a loopback address; /metrics and /healthz have no \
                                 authentication: set `collector.listen_public = true` to serve them \
                                 beyond this host"
                            ),
                        );
                        None
                    }
                    Err(_) => {
                        self.problem(
                            "collector.listen",
                            span,
                            format!("`{text}` is not an address like 127.0.0.1:10187"),
                        );
                        None
                    }
                }
            }),
            listen_public: raw.listen_public.unwrap_or(false),
            unhealthy_after_push_intervals: match raw.unhealthy_after_push_intervals {
                Some(0) => {
                    self.problem(
                        "collector.unhealthy_after_push_intervals",
                        None,
                        "must be at least 1",
                    );
                    1
                }
                Some(n) => n,
                None => super::model::DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS,
            },
        };
        (config, raw.interval.map_or(DEFAULT_INTERVAL, |i| i.0))
    }

    /// `cache_dir` as written, else `STATE_DIR/cache`, else no cache.
    fn cache_dir(&self, raw: Option<&Path>, state_dir: Option<&Path>) -> Option<PathBuf> {
        match raw {
            Some(dir) => Some(self.resolve(dir)),
            None => state_dir.map(|dir| dir.join("cache")),
        }
    }

    fn backend(&mut self, raw: raw::RawBackend) -> Option<BackendConfig> {
        let url_span = Some(raw.url.span());
        let url = raw.url.into_inner();
        let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if scheme.as_deref() == Some("http") {
            if !allow_insecure_http {
                self.problem(
                    "backend.url",
                    url_span,
                    format!(
                        "`{url}` is plain HTTP: tokens, the registration secret and every batch would \
                         cross the network in clear; use https://, or set \
                         `backend.allow_insecure_http = true` (lab only)"
                    ),
                );
            }
        } else if scheme.as_deref() != Some("https") {
            self.problem(
                "backend.url",
                url_span,
                format!("`{url}` is not an https:// URL"),
            );
        }
        let compression = match raw.compression.as_deref() {
            None | Some("auto") => Compression::Auto,
            Some("gzip") => Compression::Gzip,
            Some("none") => Compression::None,
            Some(other) => {
                self.problem(
                    "backend.compression",
                    None,
                    format!("`{other}` is not `auto`, `gzip` or `none`"),
                );
                Compression::Auto
            }
        };
        Some(BackendConfig {
            url: url.trim_end_matches('/').to_owned(),
            push_interval: raw.push_interval.map_or(Duration::from_secs(60), |d| d.0),
            config_pull_interval: raw
                .config_pull_interval
                .map_or(Duration::from_secs(300), |d| d.0),
            compression,
            allow_insecure_http,
            registration_secret_file: raw.registration_secret_file.map(|p| self.resolve(&p)),
            jwt_secret_file: raw.jwt_secret_file.map(|p| self.resolve(&p)),
            allow_remote_privileged: raw.allow_remote_privileged.unwrap_or(false),
        })
    }

    /// Every server of `[postgres]`; none when any of them is invalid (the config is refused
    /// then anyway).
    fn postgres(&mut self, raw: raw::RawPostgres) -> PostgresServers {
        match raw.servers(|path| self.resolve(path)) {
            Ok(servers) => servers,
            Err(problems) => {
                for problem in problems {
                    self.problem(problem.key(), None, problem.to_string());
                }
                PostgresServers::new()
            }
        }
    }

    /// A plugin's postgres grant must name a server the config defines (see
    /// `PostgresGrant::server_is_configured`). Skipped when `[postgres]` itself is invalid: its
    /// own problems are reported already.
    fn grant_servers(
        &mut self,
        plugins: &BTreeMap<String, PluginConfig>,
        servers: &PostgresServers,
    ) {
        let in_postgres = |key: &str| key == "postgres" || key.starts_with("postgres.");
        if self.problems.iter().any(|p| in_postgres(&p.key)) {
            return;
        }
        for (name, plugin) in plugins {
            let Some(grant) = &plugin.grants.postgres else {
                continue;
            };
            if grant.server_is_configured(servers.keys().map(String::as_str)) {
                continue;
            }
            let known = if servers.is_empty() {
                "the config has no `[postgres]` section".to_owned()
            } else {
                format!(
                    "configured: {}",
                    servers
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            self.problem(
                format!("plugins.{name}.grants.postgres.server"),
                None,
                format!("no PostgreSQL server `{}` ({known})", grant.server()),
            );
        }
    }

    fn tls(&mut self, raw: raw::RawTls) -> TlsConfig {
        let min_tls12 = match raw.min_version.as_deref() {
            None | Some("1.3") => false,
            Some("1.2") => true,
            Some(other) => {
                self.problem(
                    "tls.min_version",
                    None,
                    format!("`{other}` is not `1.3` or `1.2`"),
                );
                false
            }
        };
        if raw.cert_file.is_some() != raw.key_file.is_some() {
            self.problem(
                "tls.cert_file",
                None,
                "mTLS needs both `cert_file` and `key_file`",
            );
        }
        TlsConfig {
            ca_file: raw.ca_file.map(|p| self.resolve(&p)),
            cert_file: raw.cert_file.map(|p| self.resolve(&p)),
            key_file: raw.key_file.map(|p| self.resolve(&p)),
            verify: raw.verify.unwrap_or(true),
            min_tls12,
        }
    }

    fn plugin(
        &mut self,
        name: &str,
        raw: raw::RawPlugin,
        default_interval: Duration,
        trust: &TrustConfig,
        span: std::ops::Range<usize>,
    ) -> Option<PluginConfig> {
        let key = |field: &str| format!("plugins.{name}.{field}");
        let problems_before = self.problems.len();
        let sha256 = raw
            .sha256
            .as_deref()
            .and_then(|hex_text| match parse_sha256(hex_text) {
                Ok(digest) => Some(digest),
                Err(why) => {
                    self.problem(key("sha256"), Some(span.clone()), why);
                    None
                }
            });
        let mut signed_by = Vec::new();
        for signer in raw.signed_by.iter().flatten() {
            match trust.keys.get(signer.get_ref()) {
                Some(public) => signed_by.push(public.clone()),
                None => self.problem(
                    key("signed_by"),
                    Some(signer.span()),
                    format!(
                        "no key `{}` in `[trust.keys]` (known: {})",
                        signer.get_ref(),
                        if trust.keys.is_empty() {
                            "none".to_owned()
                        } else {
                            trust.keys.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ),
            }
        }
        if raw.signed_by.as_ref().is_some_and(Vec::is_empty) {
            self.problem(
                key("signed_by"),
                Some(span.clone()),
                "list at least one key (omit `signed_by` to load the plugin unsigned)",
            );
        }
        if raw.emits.is_empty() {
            self.problem(
                key("emits"),
                Some(span.clone()),
                "list at least one metric type the plugin may emit",
            );
        }
        let defaults = Limits::default();
        let limits = Limits {
            timeout: raw.timeout.map_or(defaults.timeout, |d| d.0),
            fuel: raw.fuel,
            memory_bytes: raw.memory.map_or(defaults.memory_bytes, |s| s.0),
            max_output_bytes: raw.max_output.map_or(defaults.max_output_bytes, |s| s.0),
            max_host_call_bytes: raw
                .max_host_call_bytes
                .map_or(defaults.max_host_call_bytes, |s| s.0),
            max_log_bytes: raw.max_log_bytes.map_or(defaults.max_log_bytes, |s| s.0),
            max_state_bytes: raw
                .max_state_bytes
                .map_or(defaults.max_state_bytes, |s| s.0),
        };
        if limits.memory_bytes < 1 << 20 {
            self.problem(
                key("memory"),
                Some(span.clone()),
                "must be at least 1MiB (one wasm page is 64KiB)",
            );
        }
        if limits.max_state_bytes > crate::host::state::MAX_STATE_BYTES_CEILING {
            self.problem(
                key("max_state_bytes"),
                Some(span.clone()),
                format!(
                    "must be at most {} (state is for counters between runs; it is read into \
                     memory and rewritten with fsync after every run)",
                    crate::units::ByteSize(crate::host::state::MAX_STATE_BYTES_CEILING)
                ),
            );
        }
        if limits.fuel == Some(0) {
            self.problem(
                key("fuel"),
                Some(span.clone()),
                "must be above zero (omit it to disable metering)",
            );
        }

        let grants = match Grants::validate(&raw.grants) {
            Ok(grants) => grants,
            Err(invalid) => {
                for grant in invalid {
                    self.problem(
                        key(&grant.key_path()),
                        Some(span.clone()),
                        grant.to_string(),
                    );
                }
                Grants::default()
            }
        };
        let settings = match PluginSettings::from_toml(&raw.settings) {
            Ok(settings) => settings,
            Err(why) => {
                self.problem(key("settings"), Some(span.clone()), why.to_string());
                PluginSettings::default()
            }
        };
        if self.problems.len() > problems_before {
            return None;
        }
        Some(PluginConfig {
            name: name.to_owned(),
            wasm: self.resolve(&raw.wasm),
            sha256,
            signed_by,
            enabled: raw.enabled.unwrap_or(true),
            emits: raw.emits.into_iter().collect(),
            interval: raw.interval.map_or(default_interval, |d| d.0),
            limits,
            grants,
            settings: Arc::new(settings),
        })
    }
}

fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|_| format!("`{text}` is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("`{text}` is not 64 hex digits (a sha256)"))
}
