//! The SQL guard's verdicts, remembered per grant, so a collector that sends the same statements
//! every run pays for libpg_query and the tree walk once, not on every call.
//!
//! A verdict depends on two things only: the statement's exact text and the grant's policy
//! (`cluster`, `functions`). The cache lives in the [`super::PostgresGrant`] it belongs to, which
//! is immutable for its lifetime (a changed config builds a new grant, and with it an empty
//! cache), so a verdict is never seen by another grant or another plugin. Keys are the exact text,
//! byte for byte: nothing is normalised, so two texts the server would read alike are each
//! checked once. Refusals are remembered as well as permissions; the caller logs and reports
//! either exactly as when the guard ran.
//!
//! Bounded in entries and in bytes; when full the oldest entry goes first, so a plugin that sends
//! endless distinct statements churns its own cache and never grows host memory beyond the
//! bounds. It must never hand out a verdict it did not get from the guard for that same text.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::guard::Refusal;

/// Threat: a plugin sending endless distinct statements growing host memory; collectors send a
/// handful of distinct statements.
pub const MAX_VERDICTS: usize = 128;

/// Threat: the same, with long statements: the bytes of all remembered texts and refusals.
pub const MAX_VERDICT_BYTES: usize = 256 << 10;

/// Threat: one huge statement taking the whole byte budget; longer texts are checked every time.
pub const MAX_CACHED_STATEMENT_BYTES: usize = 32 << 10;

/// Bytes charged per entry beyond its text (map slot, queue slot, reference counts).
const ENTRY_OVERHEAD: usize = 64;

/// The remembered verdicts of one grant.
#[derive(Default)]
pub struct VerdictCache {
    inner: Mutex<Verdicts>,
}

#[derive(Default)]
struct Verdicts {
    by_text: HashMap<Arc<str>, Result<(), Refusal>>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

fn cost(sql: &str, verdict: &Result<(), Refusal>) -> usize {
    let refusal = verdict.as_ref().err().map_or(0, |r| r.0.len());
    sql.len() + refusal + ENTRY_OVERHEAD
}

impl VerdictCache {
    /// The verdict for `sql`: remembered, or from `check` (then remembered when it fits).
    pub fn get_or_check(
        &self,
        sql: &str,
        check: impl FnOnce() -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        if let Some(verdict) = self.lock().by_text.get(sql) {
            return verdict.clone();
        }
        // The guard runs without the lock: concurrent runs of one plugin may both check the same
        // text, and both get the same verdict.
        let verdict = check();
        if sql.len() <= MAX_CACHED_STATEMENT_BYTES {
            self.lock().insert(sql, &verdict);
        }
        verdict
    }

    /// How many verdicts are remembered.
    pub fn len(&self) -> usize {
        self.lock().by_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the remembered verdicts.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Verdicts {
    fn insert(&mut self, sql: &str, verdict: &Result<(), Refusal>) {
        if self.by_text.contains_key(sql) {
            return;
        }
        let needed = cost(sql, verdict);
        while !self.order.is_empty()
            && (self.by_text.len() >= MAX_VERDICTS || self.bytes + needed > MAX_VERDICT_BYTES)
        {
            if let Some(oldest) = self.order.pop_front()
                && let Some(old) = self.by_text.remove(&oldest)
            {
                self.bytes -= cost(&oldest, &old);
            }
        }
        if self.bytes + needed > MAX_VERDICT_BYTES {
            return;
        }
        let key: Arc<str> = Arc::from(sql);
        self.order.push_back(key.clone());
        self.by_text.insert(key, verdict.clone());
        self.bytes += needed;
    }
}

/// A clone starts empty: verdicts belong to the grant they were made for.
impl Clone for VerdictCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("verdicts", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_verdict_is_checked_once_and_then_remembered_allowed_or_refused() {
        let cache = VerdictCache::default();
        let checks = Cell::new(0);
        let allow = || {
            checks.set(checks.get() + 1);
            Ok(())
        };
        let refuse = || {
            checks.set(checks.get() + 1);
            Err(Refusal("no".into()))
        };
        assert_eq!(cache.get_or_check("SELECT 1", allow), Ok(()));
        assert_eq!(cache.get_or_check("SELECT 1", refuse), Ok(()));
        assert_eq!(
            cache.get_or_check("SELECT 2", refuse),
            Err(Refusal("no".into()))
        );
        assert_eq!(
            cache.get_or_check("SELECT 2", allow),
            Err(Refusal("no".into()))
        );
        assert_eq!(checks.get(), 2);
        // The exact text: a different spelling is checked on its own.
        assert_eq!(
            cache.get_or_check("SELECT 1 ", refuse),
            Err(Refusal("no".into()))
        );
        assert_eq!(checks.get(), 3);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn entries_and_bytes_stay_bounded_and_the_oldest_go_first() {
        let cache = VerdictCache::default();
        for i in 0..10 * MAX_VERDICTS {
            let _ = cache.get_or_check(&format!("SELECT {i}"), || Ok(()));
            assert!(cache.len() <= MAX_VERDICTS);
        }
        assert_eq!(cache.len(), MAX_VERDICTS);
        let newest = format!("SELECT {}", 10 * MAX_VERDICTS - 1);
        assert_eq!(
            cache.get_or_check(&newest, || Err(Refusal("x".into()))),
            Ok(())
        );
        assert_eq!(
            cache.get_or_check("SELECT 0", || Err(Refusal("evicted".into()))),
            Err(Refusal("evicted".into()))
        );

        let cache = VerdictCache::default();
        let long = "x".repeat(MAX_CACHED_STATEMENT_BYTES - 10);
        for i in 0..100 {
            let _ = cache.get_or_check(&format!("{long}{i}"), || Err(Refusal(long.clone())));
            assert!(cache.bytes() <= MAX_VERDICT_BYTES, "{}", cache.bytes());
        }
        assert!(cache.len() >= 2, "{}", cache.len());

        // Longer than an entry may be: checked every time, never kept.
        let huge = "y".repeat(MAX_CACHED_STATEMENT_BYTES + 1);
        let cache = VerdictCache::default();
        assert_eq!(cache.get_or_check(&huge, || Ok(())), Ok(()));
        assert!(cache.is_empty());
        assert_eq!(
            cache.get_or_check(&huge, || Err(Refusal("again".into()))),
            Err(Refusal("again".into()))
        );
    }

    #[test]
    fn a_clone_starts_empty() {
        let cache = VerdictCache::default();
        let _ = cache.get_or_check("SELECT 1", || Ok(()));
        assert_eq!(cache.clone().len(), 0);
    }
}
