//! What one run of one plugin brings to every capability context besides its grants: who the
//! plugin is, its own settings table, its per-run limits and deadline, and the audit and log
//! budget its contexts share. Built by the plugin runner for each run and dropped with it.

use std::sync::Arc;
use std::time::Instant;

use super::audit::Audit;
use super::budget::LogBudget;

/// The inputs of one run that are not grants.
pub struct RunInfo {
    /// The plugin's name, as in `[plugins.NAME]`.
    pub plugin: Arc<str>,
    /// Denials of this run, logged and counted.
    pub audit: Audit,
    /// Guest log output of this run (`log`, stdout and stderr together).
    pub log: LogBudget,
    /// When the run's wall-clock deadline passes; host calls never wait beyond it.
    pub deadline: Instant,
    /// Largest answer of one host call, in bytes.
    pub max_host_call_bytes: usize,
    /// Largest state blob, in bytes.
    pub max_state_bytes: usize,
    /// The plugin's own `[plugins.NAME.settings]` table.
    pub settings: Arc<PluginSettings>,
}

/// Validated settings: the TOML table as JSON, shared by every run of the plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings(pub serde_json::Map<String, serde_json::Value>);

/// Why a settings table cannot be handed to a plugin.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings must be a table")]
    NotATable,
    #[error("{0}")]
    Json(serde_json::Error),
}

impl PluginSettings {
    pub fn from_toml(table: &toml::Table) -> Result<Self, SettingsError> {
        match serde_json::to_value(table).map_err(SettingsError::Json)? {
            serde_json::Value::Object(map) => Ok(Self(map)),
            _ => Err(SettingsError::NotATable),
        }
    }
}
