//! Denied host calls, logged once per (capability, target) per run and counted.
//!
//! Every capability turns a refusal into a guest-visible `denied(..)` value through
//! [`Audit::deny`], so the log line, the counter and the message the plugin sees always agree.
//! A plugin that retries a denied call in a loop costs one log line per run, not one per call.
//! The target (a path, a database name) comes from the guest: it is cut and escaped (see
//! `guest_text`) before it reaches the log line, the dedup set or the message, so a 16 MiB path
//! costs a few hundred bytes wherever it appears.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::bindings::Error;
use super::guest_text;

/// Shared by the capability contexts of one plugin run.
#[derive(Clone)]
pub struct Audit {
    plugin: Arc<str>,
    digest: Arc<str>,
    inner: Arc<Mutex<AuditState>>,
}

#[derive(Default)]
struct AuditState {
    logged: HashSet<(&'static str, String)>,
    denied: u64,
}

impl Audit {
    pub fn new(plugin: Arc<str>, digest: Arc<str>) -> Self {
        Self {
            plugin,
            digest,
            inner: Arc::default(),
        }
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Records a denial of `target` by `capability` and returns the error the guest receives.
    pub fn deny(&self, capability: &'static str, target: &str, reason: &str) -> Error {
        let target = guest_text::quote(target);
        // Reasons are the host's words but may quote the guest's request.
        let reason = guest_text::cut(reason, 2 * guest_text::MAX_GUEST_TEXT_BYTES);
        let message = format!(
            "{capability} `{target}` is not granted to plugin `{}`: {reason}",
            self.plugin
        );
        let mut state = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.denied += 1;
        // Bound the set too: a plugin probing random paths must not grow host memory.
        if state.logged.len() < MAX_DISTINCT_DENIALS_LOGGED
            && state.logged.insert((capability, target.clone()))
        {
            tracing::warn!(
                plugin = %self.plugin,
                digest = %self.digest,
                capability,
                target = %target,
                "denied host call: {reason}"
            );
        }
        Error::Denied(message)
    }

    /// How many host calls were denied in this run.
    pub fn denied_count(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .denied
    }
}

/// Threat: a plugin that asks for millions of distinct paths would otherwise fill the log and the
/// dedup set; past this many distinct targets per run, denials are only counted.
const MAX_DISTINCT_DENIALS_LOGGED: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_or_forged_target_is_cut_and_escaped_everywhere() {
        let audit = Audit::new("p".into(), "d".into());
        let mut path = "self/environ\n2026-01-01T00:00:00Z ERROR forged".to_owned();
        path.push_str(&"a".repeat(16 << 20));
        let Error::Denied(message) = audit.deny("procfs", &path, "no granted pattern matches it")
        else {
            panic!("not a denial");
        };
        assert!(
            message.len() < 2 * guest_text::MAX_GUEST_TEXT_BYTES,
            "{}",
            message.len()
        );
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("self/environ\\n2026"), "{message}");
        assert!(message.contains("…[cut, "), "{message}");
        let state = audit.inner.lock().unwrap();
        assert!(state.logged.iter().all(|(_, t)| t.len() < 1024));
    }
}
