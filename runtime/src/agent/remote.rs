//! Config pulled from the backend (`GET /api/v1/config/{collector_id}`, TOML with
//! `X-Config-Version`).
//!
//! Threat: whoever controls the backend (or its credentials) must not gain more on this host than
//! the operator granted. So a pulled config is the whole file, but unless the local file sets
//! `backend.allow_remote_privileged = true` it may differ from the local file only in the keys of
//! [`UNPRIVILEGED`]: schedules, plugin on/off and plugin settings. Grants, `.wasm` paths and
//! digests, limits, connections, TLS and the backend itself stay as the operator wrote them.
//!
//! The last applied pulled config is kept in `STATE_DIR/config/pulled.json` so a restart runs
//! it too; it is checked against the local file again each time (a local edit wins where they
//! conflict on a privileged key: the pulled config is then set aside with an error).

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigError};
use crate::fsutil;
use crate::pipeline::sender::{Sender, SenderError};
use crate::pipeline::transport::explain;

/// Dotted key patterns (`*` = any one key) a pulled config may change without
/// `allow_remote_privileged`. A pattern covers everything below it.
pub const UNPRIVILEGED: &[&str] = &[
    "collector.interval",
    "backend.push_interval",
    "backend.config_pull_interval",
    "backend.compression",
    "plugins.*.interval",
    "plugins.*.enabled",
    "plugins.*.settings",
];

/// The shortest plugin, push or pull interval a pulled config may set. Threat: a backend (or
/// whoever holds its credentials) turning the agent into a load generator against this host's
/// PostgreSQL, or against the backend itself. The local file may go lower (tests do).
pub const MIN_PULLED_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest config the agent accepts from the backend.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Why a pulled config was not fetched, saved or accepted.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("writing {}: {error}", path.display())]
    Save {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("encoding the backend config: {0}")]
    Encode(serde_json::Error),
    #[error("{0}")]
    Config(ConfigError),
    #[error(
        "{name} changes keys only the local file may set ({}); set `backend.allow_remote_privileged = true` in {} to allow that",
        changes.join(", "),
        local.display()
    )]
    Privileged {
        name: String,
        changes: Vec<String>,
        local: PathBuf,
    },
    #[error(
        "{name} sets `{key}` to {value:?}, below the {:?} floor for a config pulled from the backend",
        MIN_PULLED_INTERVAL
    )]
    IntervalTooShort {
        name: String,
        key: String,
        value: std::time::Duration,
    },
    #[error("{which}: {error}")]
    NotToml {
        which: &'static str,
        error: toml::de::Error,
    },
    #[error("{0}")]
    Sender(SenderError),
    #[error("{0}")]
    Transport(String),
    #[error("the backend answered {0}; keeping the running config")]
    Status(StatusCode),
    #[error("the answer has no numeric X-Config-Version header; ignored")]
    NoVersion,
    #[error(
        "config version {version} is {size} bytes, over the {}-byte limit; ignored",
        MAX_CONFIG_BYTES
    )]
    TooLarge { version: u64, size: usize },
    #[error("config version {0} is not UTF-8; ignored")]
    NotUtf8(u64),
}

/// The last config applied from the backend (`STATE_DIR/config/pulled.json`, JSON with its
/// `version`; replaced atomically). A file that cannot be read is ignored with a warning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PulledConfig {
    pub version: u64,
    pub toml: String,
}

impl PulledConfig {
    fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("config").join("pulled.json")
    }

    pub fn load(state_dir: &Path) -> Option<Self> {
        let path = Self::file(state_dir);
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(pulled) => Some(pulled),
            Err(e) => {
                tracing::warn!(file = %path.display(), "ignoring an unreadable saved backend config: {e}");
                None
            }
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), RemoteError> {
        let path = Self::file(state_dir);
        let json = serde_json::to_vec_pretty(self).map_err(RemoteError::Encode)?;
        std::fs::create_dir_all(state_dir.join("config"))
            .and_then(|()| fsutil::write_atomically(&path, &json, fsutil::SHARED))
            .map_err(|error| RemoteError::Save { path, error })
    }

    /// Parses and validates this config with the same rules as a local file (relative paths
    /// resolve against the local file's directory), then checks it changes only what the
    /// backend may change.
    pub fn validate(&self, local_text: &str, local: &Config) -> Result<Config, RemoteError> {
        let name = format!("<backend config version {}>", self.version);
        let virtual_path = local
            .source
            .parent()
            .map_or_else(|| PathBuf::from(&name), |dir| dir.join(&name));
        let config = config::parse(&self.toml, &virtual_path).map_err(RemoteError::Config)?;
        if let Some((key, value)) = interval_below_floor(&config, local) {
            return Err(RemoteError::IntervalTooShort { name, key, value });
        }
        let allow = local
            .backend
            .as_ref()
            .is_some_and(|b| b.allow_remote_privileged);
        if !allow {
            let changes = privileged_changes(local_text, &self.toml)?;
            if !changes.is_empty() {
                return Err(RemoteError::Privileged {
                    name,
                    changes,
                    local: local.source.clone(),
                });
            }
        }
        Ok(config)
    }
}

/// The first interval of `config` below [`MIN_PULLED_INTERVAL`] that is also shorter than the
/// local file's own value for it, with its key: the backend may not lower an interval under the
/// floor, but repeating what the operator wrote is not lowering it. Plugin intervals are
/// checked as resolved, so one inherited from `collector.interval` is caught too.
fn interval_below_floor(config: &Config, local: &Config) -> Option<(String, std::time::Duration)> {
    let local_backend = local.backend.as_ref();
    let backend = config.backend.iter().flat_map(|b| {
        [
            (
                "backend.push_interval".to_owned(),
                b.push_interval,
                local_backend.map(|l| l.push_interval),
            ),
            (
                "backend.config_pull_interval".to_owned(),
                b.config_pull_interval,
                local_backend.map(|l| l.config_pull_interval),
            ),
        ]
    });
    let plugins = config.plugins.values().map(|p| {
        (
            format!(
                "plugins.{}.interval (or the `collector.interval` it inherits)",
                p.name
            ),
            p.interval,
            local.plugins.get(&p.name).map(|l| l.interval),
        )
    });
    backend
        .chain(plugins)
        .find(|(_, value, local)| {
            *value < MIN_PULLED_INTERVAL && local.is_none_or(|local| *value < local)
        })
        .map(|(key, value, _)| (key, value))
}

/// The dotted keys where `pulled` differs from `local` outside [`UNPRIVILEGED`].
pub fn privileged_changes(local: &str, pulled: &str) -> Result<Vec<String>, RemoteError> {
    let table = |which, text| {
        toml::from_str::<toml::Table>(text).map_err(|error| RemoteError::NotToml { which, error })
    };
    let local = table("the local config", local)?;
    let pulled = table("the pulled config", pulled)?;
    let mut changes = Vec::new();
    diff(&mut Vec::new(), &local, &pulled, &mut changes);
    Ok(changes)
}

fn diff<'a>(
    path: &mut Vec<&'a str>,
    a: &'a toml::Table,
    b: &'a toml::Table,
    changes: &mut Vec<String>,
) {
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).map(String::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        path.push(key);
        if !unprivileged(path) {
            match (a.get(key), b.get(key)) {
                (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                    diff(path, x, y, changes)
                }
                (x, y) if x != y => changes.push(path.join(".")),
                _ => {}
            }
        }
        path.pop();
    }
}

fn unprivileged(path: &[&str]) -> bool {
    UNPRIVILEGED.iter().any(|pattern| {
        let pattern: Vec<&str> = pattern.split('.').collect();
        pattern.len() <= path.len() && pattern.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
    })
}

/// Fetches the backend's config when its version is newer than `seen`.
pub async fn pull(
    sender: &mut Sender,
    url: &str,
    seen: u64,
) -> Result<Option<PulledConfig>, RemoteError> {
    let (collector_id, token) = sender.bearer().await.map_err(RemoteError::Sender)?;
    let response = sender
        .client()
        .get(format!("{url}/api/v1/config/{collector_id}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| RemoteError::Transport(explain(&e)))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(RemoteError::Status(status));
    }
    let version = response
        .headers()
        .get("X-Config-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or(RemoteError::NoVersion)?;
    if version <= seen {
        return Ok(None);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| RemoteError::Transport(explain(&e)))?;
    if body.len() > MAX_CONFIG_BYTES {
        return Err(RemoteError::TooLarge {
            version,
            size: body.len(),
        });
    }
    let toml = String::from_utf8(body.to_vec()).map_err(|_| RemoteError::NotUtf8(version))?;
    Ok(Some(PulledConfig { version, toml }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = r#"
[collector]
id = "c"
[backend]
url = "https://b"
[plugins.sysstat]
wasm = "sysstat.wasm"
interval = "60s"
emits = ["sysstat"]
[plugins.sysstat.grants.procfs]
paths = ["stat"]
[plugins.sysstat.settings]
top = 5
"#;

    #[test]
    fn schedules_switches_and_settings_may_change() {
        let pulled = LOCAL
            .replace("interval = \"60s\"", "interval = \"10s\"\nenabled = false")
            .replace("top = 5", "top = 7\nextra = true");
        assert_eq!(
            privileged_changes(LOCAL, &pulled).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn grants_files_limits_and_new_plugins_may_not() {
        let pulled = LOCAL
            .replace("paths = [\"stat\"]", "paths = [\"*\"]")
            .replace("sysstat.wasm", "other.wasm")
            .replace("url = \"https://b\"", "url = \"https://evil\"")
            + "[plugins.new]\nwasm = \"x.wasm\"\n";
        assert_eq!(
            privileged_changes(LOCAL, &pulled).unwrap(),
            vec![
                "backend.url",
                "plugins.new",
                "plugins.sysstat.grants.procfs.paths",
                "plugins.sysstat.wasm"
            ]
        );
        let with_timeout =
            LOCAL.replace("interval = \"60s\"", "interval = \"60s\"\ntimeout = \"1h\"");
        assert_eq!(
            privileged_changes(LOCAL, &with_timeout).unwrap(),
            vec!["plugins.sysstat.timeout"]
        );
    }

    fn validate(pulled: &str) -> Result<Config, RemoteError> {
        let path = std::path::Path::new("/etc/pganalytics/config.toml");
        let local = config::parse(LOCAL, path).unwrap();
        PulledConfig {
            version: 7,
            toml: pulled.to_owned(),
        }
        .validate(LOCAL, &local)
    }

    #[test]
    fn a_pulled_interval_below_the_floor_is_refused_naming_the_key() {
        assert!(validate(&LOCAL.replace("\"60s\"", "\"1s\"")).is_ok());
        // What the local file itself sets is not lowered by repeating it.
        let fast = LOCAL.replace("\"60s\"", "\"100ms\"");
        let path = std::path::Path::new("/etc/pganalytics/config.toml");
        let local = config::parse(&fast, path).unwrap();
        let same = PulledConfig {
            version: 2,
            toml: fast.clone(),
        };
        assert!(same.validate(&fast, &local).is_ok());
        let lower = PulledConfig {
            version: 3,
            toml: fast.replace("\"100ms\"", "\"50ms\""),
        };
        assert!(matches!(
            lower.validate(&fast, &local),
            Err(RemoteError::IntervalTooShort { .. })
        ));
        let cases = [
            (
                LOCAL.replace("interval = \"60s\"", "interval = \"999ms\""),
                "plugins.sysstat.interval",
            ),
            (
                LOCAL
                    .replace("interval = \"60s\"\n", "")
                    .replace("id = \"c\"", "id = \"c\"\ninterval = \"10ms\""),
                "collector.interval",
            ),
            (
                LOCAL.replace(
                    "url = \"https://b\"",
                    "url = \"https://b\"\npush_interval = \"100ms\"",
                ),
                "backend.push_interval",
            ),
            (
                LOCAL.replace(
                    "url = \"https://b\"",
                    "url = \"https://b\"\nconfig_pull_interval = \"500ms\"",
                ),
                "backend.config_pull_interval",
            ),
        ];
        for (pulled, key) in cases {
            let error = validate(&pulled).unwrap_err();
            assert!(
                matches!(error, RemoteError::IntervalTooShort { .. }),
                "{key}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(key), "{message}");
            assert!(message.contains("backend config version 7"), "{message}");
        }
    }

    #[test]
    fn trust_signers_and_the_compile_cache_may_not() {
        let pulled = LOCAL
            .replace("id = \"c\"", "id = \"c\"\ncache_dir = \"/tmp/shared\"")
            .replace(
                "emits = [\"sysstat\"]",
                "emits = [\"sysstat\"]\nsigned_by = [\"evil\"]",
            )
            + "[trust.keys]\nevil = \"/tmp/evil.pub\"\n";
        assert_eq!(
            privileged_changes(LOCAL, &pulled).unwrap(),
            vec!["collector.cache_dir", "plugins.sysstat.signed_by", "trust"]
        );
    }
}
