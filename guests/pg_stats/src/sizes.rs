//! Database sizes remembered between runs (in the plugin's `state` blob), so `pg_database_size`
//! runs at most once per `database_size_interval` per database instead of on every run.
//!
//! Why: `pg_database_size` stats every file of every relation of the database; on a database with
//! 10 000 tables that is most of the server's CPU for a whole `pg_stats` run, for a figure that
//! moves slowly. Honesty: an item whose size was measured in an earlier run says so: `size_at` is
//! always the time the size was measured (the run's own timestamp when it was measured now).
//!
//! A size is reused only when it was measured less than the interval ago by the wall clock; a
//! clock that went backwards, an interval of 0, or a database not seen before means measuring.
//! Only the databases of the current run are kept, at most [`MAX_REMEMBERED`] of them, so the
//! blob stays far below the host's state cap. This module must never call the host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Databases whose sizes are remembered; the others are sized on every run. At most ~130 bytes
/// each (a 63-byte name, a size and a timestamp), well under the host's 64 KiB state cap.
pub const MAX_REMEMBERED: usize = 256;

/// Format of the saved blob; a blob of another version is ignored (everything is re-measured).
const VERSION: u32 = 1;

/// One measured size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub bytes: i64,
    /// When it was measured, as the run's RFC 3339 timestamp.
    pub at: String,
    /// The same instant in seconds since the Unix epoch, for the age check.
    pub at_secs: u64,
}

/// The sizes of the databases, as saved in the plugin state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sizes {
    version: u32,
    databases: BTreeMap<String, Measured>,
    /// Whether anything changed since loading (then the state is saved).
    #[serde(skip)]
    changed: bool,
}

impl Sizes {
    /// The saved sizes, or none when the blob is missing or of another format.
    pub fn from_saved(saved: Option<Sizes>) -> Sizes {
        match saved {
            Some(sizes) if sizes.version == VERSION => Sizes {
                changed: false,
                ..sizes
            },
            _ => Sizes {
                version: VERSION,
                ..Sizes::default()
            },
        }
    }

    /// The size of `database` measured less than `interval_secs` before `now_secs`, if any.
    pub fn fresh(&self, database: &str, now_secs: u64, interval_secs: u64) -> Option<&Measured> {
        let measured = self.databases.get(database)?;
        let age = now_secs.checked_sub(measured.at_secs)?;
        (age < interval_secs).then_some(measured)
    }

    /// Remembers a size just measured (while fewer than [`MAX_REMEMBERED`] are kept).
    pub fn record(&mut self, database: &str, measured: Measured) {
        if self.databases.len() >= MAX_REMEMBERED && !self.databases.contains_key(database) {
            return;
        }
        self.databases.insert(database.to_owned(), measured);
        self.changed = true;
    }

    /// Forgets the databases not in `current` (dropped, or no longer granted).
    pub fn keep_only(&mut self, current: &[String]) {
        let before = self.databases.len();
        self.databases.retain(|name, _| current.contains(name));
        self.changed |= self.databases.len() != before;
    }

    /// Whether the state needs saving.
    pub fn changed(&self) -> bool {
        self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pganalytics_guest::serde_json;

    fn measured(bytes: i64, at_secs: u64) -> Measured {
        Measured {
            bytes,
            at: format!("t{at_secs}"),
            at_secs,
        }
    }

    #[test]
    fn a_size_is_fresh_only_within_the_interval_and_never_from_the_future() {
        let mut sizes = Sizes::from_saved(None);
        assert!(!sizes.changed());
        sizes.record("app", measured(10, 1000));
        assert!(sizes.changed());
        assert_eq!(sizes.fresh("app", 1000, 300).map(|m| m.bytes), Some(10));
        assert_eq!(sizes.fresh("app", 1299, 300).map(|m| m.bytes), Some(10));
        assert_eq!(sizes.fresh("app", 1300, 300), None);
        assert_eq!(sizes.fresh("app", 999, 300), None, "the clock went back");
        assert_eq!(sizes.fresh("app", 1000, 0), None, "interval 0: every run");
        assert_eq!(sizes.fresh("other", 1000, 300), None);
    }

    #[test]
    fn saved_sizes_round_trip_and_other_versions_are_ignored() {
        let mut sizes = Sizes::from_saved(None);
        sizes.record("app", measured(10, 1000));
        let json = serde_json::to_string(&sizes).unwrap();
        let loaded = Sizes::from_saved(serde_json::from_str(&json).ok());
        assert!(!loaded.changed());
        assert_eq!(loaded.fresh("app", 1001, 300).map(|m| m.bytes), Some(10));
        let other = json.replace("\"version\":1", "\"version\":2");
        let loaded = Sizes::from_saved(serde_json::from_str(&other).ok());
        assert_eq!(loaded.fresh("app", 1001, 300), None);
    }

    #[test]
    fn only_current_databases_are_kept_and_the_count_is_bounded() {
        let mut sizes = Sizes::from_saved(None);
        for i in 0..MAX_REMEMBERED + 10 {
            sizes.record(&format!("db{i}"), measured(1, 1));
        }
        assert_eq!(sizes.databases.len(), MAX_REMEMBERED);
        let mut sizes = Sizes::from_saved(Some(sizes));
        sizes.keep_only(&["db1".to_owned(), "gone".to_owned()]);
        assert!(sizes.changed());
        assert_eq!(sizes.databases.keys().collect::<Vec<_>>(), ["db1"]);
        let json = serde_json::to_string(&sizes).unwrap();
        assert!(json.len() < 200, "{json}");
    }
}
