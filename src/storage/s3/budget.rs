//! The memory all uploads together may hold for parts being gathered.

use crate::storage::{StorageError, StorageResult};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a write waits for room in the buffer budget (while holding
/// none of it) before it fails.
const BUDGET_WAIT: Duration = Duration::from_secs(60);

/// Bytes all uploads together may hold in memory for their parts. A writer
/// never waits for it while holding some: it first stores what it holds
/// as a tail piece, so waiting cannot deadlock.
pub struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
    limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        }
    }

    fn used(&self) -> MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn try_take(&self, bytes: u64) -> bool {
        let mut used = self.used();
        let fits = *used + bytes <= self.limit;
        if fits {
            *used += bytes;
        }
        fits
    }

    pub fn take(&self, bytes: u64) -> StorageResult<()> {
        if bytes > self.limit {
            return Err(StorageError::Remote(format!(
                "a part of {bytes} bytes is larger than the S3 buffer budget ({})",
                self.limit
            )));
        }
        let used = self.used();
        let (mut used, waited) = self
            .freed
            .wait_timeout_while(used, BUDGET_WAIT, |used| *used + bytes > self.limit)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            return Err(StorageError::Remote(
                "no room in the S3 buffer budget".into(),
            ));
        }
        *used += bytes;
        Ok(())
    }

    pub fn give(&self, bytes: u64) {
        if bytes > 0 {
            *self.used() -= bytes;
            self.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_lends_and_takes_back() {
        let budget = Budget::new(10);
        assert!(budget.try_take(6));
        assert!(!budget.try_take(6));
        budget.give(6);
        budget.take(10).unwrap();
        assert!(budget.take(11).is_err());
        budget.give(10);
        assert!(budget.try_take(10));
    }
}
