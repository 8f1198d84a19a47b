//! What `/healthz` answers. Unhealthy (503, with the reason as the body) when:
//!
//! - the last write to the spool failed (a batch could not be spooled, or a delivery could not
//!   be recorded), until a write succeeds again;
//! - a backend is configured and no push round succeeded for `unhealthy_after_push_intervals`
//!   push intervals (counted from the start while none ever succeeded). A round succeeds when
//!   every pending batch was delivered or set aside, an empty spool included.
//!
//! It never blocks: every field is a lock held for a copy.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS;

#[derive(Debug)]
struct State {
    started: Instant,
    last_push_success: Option<Instant>,
    spool_error: Option<String>,
    /// `None`: no backend, pushes are not watched.
    push_interval: Option<Duration>,
    push_intervals: u32,
}

/// The agent's health, shared by the tasks that report to it.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                started: Instant::now(),
                last_push_success: None,
                spool_error: None,
                push_interval: None,
                push_intervals: DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS,
            }),
        }
    }
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the push interval (`None` without a backend) and how many may pass without a
    /// successful push; called at start and on every reload.
    pub fn configure(&self, push_interval: Option<Duration>, push_intervals: u32) {
        let mut state = self.state();
        state.push_interval = push_interval;
        state.push_intervals = push_intervals.max(1);
    }

    pub fn push_succeeded(&self) {
        self.state().last_push_success = Some(Instant::now());
    }

    pub fn spool_write_failed(&self, why: impl Into<String>) {
        self.state().spool_error = Some(why.into());
    }

    pub fn spool_write_succeeded(&self) {
        let mut state = self.state();
        if state.spool_error.is_some() {
            state.spool_error = None;
        }
    }

    /// `Ok` when healthy, else why not.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        if let Some(why) = &state.spool_error {
            return Err(format!("the spool cannot be written: {why}"));
        }
        if let Some(interval) = state.push_interval {
            let allowed = interval.saturating_mul(state.push_intervals);
            let since = state.last_push_success.unwrap_or(state.started);
            let quiet = now.saturating_duration_since(since);
            if quiet > allowed {
                let what = if state.last_push_success.is_some() {
                    "no push succeeded"
                } else {
                    "no push has succeeded since the start"
                };
                return Err(format!(
                    "{what} for {}s (over {} push intervals of {:?}; `collector.unhealthy_after_push_intervals`)",
                    quiet.as_secs(),
                    state.push_intervals,
                    interval
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_and_spool_writes_decide_health() {
        let health = Health::default();
        let start = Instant::now();
        assert!(
            health.check_at(start + Duration::from_secs(3600)).is_ok(),
            "no backend"
        );
        health.configure(Some(Duration::from_secs(60)), 10);
        assert!(health.check_at(start + Duration::from_secs(599)).is_ok());
        let why = health
            .check_at(start + Duration::from_secs(601))
            .unwrap_err();
        assert!(
            why.contains("since the start") && why.contains("10 push intervals"),
            "{why}"
        );
        health.push_succeeded();
        assert!(
            health
                .check_at(Instant::now() + Duration::from_secs(599))
                .is_ok()
        );
        let why = health
            .check_at(Instant::now() + Duration::from_secs(700))
            .unwrap_err();
        assert!(why.starts_with("no push succeeded for"), "{why}");

        health.spool_write_failed("No space left on device");
        let why = health.check().unwrap_err();
        assert!(
            why.contains("spool") && why.contains("No space left"),
            "{why}"
        );
        health.spool_write_succeeded();
        assert!(health.check().is_ok());
    }
}
