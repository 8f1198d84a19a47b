//! `settings` capability: the plugin's own `[plugins.NAME.settings]` table, read-only.
//!
//! Needs no grant: a plugin can only see the table the operator wrote for it.

use std::sync::Arc;

use super::bindings::pganalytics::collector::settings;

/// Validated settings: the TOML table as JSON, shared by every run of the plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings(pub serde_json::Map<String, serde_json::Value>);

impl PluginSettings {
    pub fn from_toml(table: &toml::Table) -> Result<Self, String> {
        match serde_json::to_value(table).map_err(|e| e.to_string())? {
            serde_json::Value::Object(map) => Ok(Self(map)),
            _ => Err("settings must be a table".into()),
        }
    }
}

pub struct SettingsCtx {
    settings: Arc<PluginSettings>,
}

impl SettingsCtx {
    pub fn new(settings: Arc<PluginSettings>) -> Self {
        Self { settings }
    }
}

impl settings::Host for SettingsCtx {
    async fn get(&mut self, key: String) -> Option<String> {
        self.settings.0.get(&key).map(|value| value.to_string())
    }

    async fn all(&mut self) -> String {
        serde_json::Value::Object(self.settings.0.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settings::Host;

    #[tokio::test]
    async fn settings_are_served_as_json() {
        let table: toml::Table =
            toml::from_str("top = 5\nname = \"x\"\n[nested]\na = [1, 2]").unwrap();
        let mut ctx = SettingsCtx::new(Arc::new(PluginSettings::from_toml(&table).unwrap()));
        assert_eq!(ctx.get("top".into()).await.as_deref(), Some("5"));
        assert_eq!(ctx.get("name".into()).await.as_deref(), Some("\"x\""));
        assert_eq!(ctx.get("missing".into()).await, None);
        let all: serde_json::Value = serde_json::from_str(&ctx.all().await).unwrap();
        assert_eq!(all["nested"]["a"][1], 2);
    }
}
