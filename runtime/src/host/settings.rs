//! `settings` capability: the plugin's own `[plugins.NAME.settings]` table, read-only.
//!
//! Needs no grant: a plugin can only see the table the operator wrote for it.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::pganalytics::collector::settings;
use super::capability::{HostCapability, NoGrant};
use super::run::RunInfo;
pub use super::run::{PluginSettings, SettingsError};

/// The `settings` interface.
pub struct Settings;

impl HostCapability for Settings {
    const NAME: &'static str = "settings";
    const SUMMARY: &'static str = "its own [plugins.NAME.settings] table";
    const GRANT_EXAMPLE: Option<&'static str> = None;

    type Setup = ();
    type GrantConfig = NoGrant;
    type Grant = NoGrant;
    type GrantError = NoGrant;
    type Shared = ();
    type Ctx = SettingsCtx;
    type Pending = ();

    fn grant(config: &NoGrant) -> Result<NoGrant, NoGrant> {
        match *config {}
    }

    fn shared(_: &(), _: Option<&Path>) {}

    fn context(_: Option<Arc<NoGrant>>, _: &(), run: &RunInfo) -> SettingsCtx {
        SettingsCtx::new(run.settings.clone())
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut SettingsCtx,
    ) -> wasmtime::Result<()> {
        settings::add_to_linker::<T, HasSelf<SettingsCtx>>(linker, get)
    }
}

/// Per-run state of the `settings` capability: the plugin's table.
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
