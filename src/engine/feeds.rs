//! Hash feeds kept between the chunks of an upload. A chunk is acknowledged
//! once its bytes are durable, while its last pieces may still be hashing;
//! its feed waits here for the next chunk, which goes on with it instead of
//! waiting for the hash. The row saves what the hash covered at the commit,
//! so a chunk that arrives at another process, or after a restart, hashes
//! the rest from the part file.

use super::checksum::HashFeed;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Uploads whose feeds are kept (a feed at rest costs a few hundred bytes);
/// past it, one is let go, and its upload's next chunk re-reads a little.
const KEPT: usize = 4096;

/// A feed that was fed the first `offset` bytes of its upload.
struct Parked {
    offset: u64,
    feed: HashFeed,
}

#[derive(Default)]
pub struct ParkedFeeds {
    parked: Mutex<HashMap<Uuid, Parked>>,
}

impl ParkedFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Parked>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The feed kept for the upload, if it was fed exactly its committed
    /// bytes (`offset` of them).
    pub fn take(&self, id: Uuid, offset: u64) -> Option<HashFeed> {
        let parked = self.lock().remove(&id)?;
        (parked.offset == offset).then_some(parked.feed)
    }

    /// Keeps the feed of an upload whose first `offset` bytes it was fed.
    pub fn park(&self, id: Uuid, offset: u64, feed: HashFeed) {
        feed.park();
        let mut parked = self.lock();
        let mut evicted = None;
        if parked.len() >= KEPT && !parked.contains_key(&id) {
            let old = parked.keys().next().copied();
            evicted = old.and_then(|old| parked.remove(&old));
        }
        let replaced = parked.insert(id, Parked { offset, feed });
        drop(parked);
        drop((evicted, replaced));
    }

    /// Drops the feed of an upload that is gone.
    pub fn forget(&self, id: Uuid) {
        let forgotten = self.lock().remove(&id);
        drop(forgotten);
    }
}
