//! What plugins keep across processes (state blobs, log-tail offsets), remembered in memory per
//! plugin once read from disk. This process is the only writer of its state directory, so what
//! is remembered never disagrees with the file it would read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Per plugin: what it kept, or `None` when it kept nothing (no file, or one that was ignored).
pub struct PerPlugin<T> {
    known: Arc<Mutex<HashMap<String, Option<T>>>>,
}

impl<T> Clone for PerPlugin<T> {
    fn clone(&self) -> Self {
        Self {
            known: self.known.clone(),
        }
    }
}

impl<T> Default for PerPlugin<T> {
    fn default() -> Self {
        Self {
            known: Arc::default(),
        }
    }
}

impl<T: Clone> PerPlugin<T> {
    /// What `plugin` kept: remembered, or found by `read` the first time. `read` runs without
    /// the lock, so that other plugins never wait on its disk access; if `plugin`'s value was
    /// set meanwhile, that newer value wins.
    pub fn get_or_read(&self, plugin: &str, read: impl FnOnce() -> Option<T>) -> Option<T> {
        if let Some(known) = self.lock().get(plugin) {
            return known.clone();
        }
        let found = read();
        self.lock()
            .entry(plugin.to_owned())
            .or_insert(found)
            .clone()
    }

    /// Remembers what `plugin` keeps from now on (after it was saved).
    pub fn set(&self, plugin: &str, value: T) {
        self.lock().insert(plugin.to_owned(), Some(value));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<T>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}
