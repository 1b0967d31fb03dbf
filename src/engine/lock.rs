//! Per-upload mutual exclusion.
//!
//! Two layers: an in-process async mutex per upload (requests of one process
//! queue fairly and wake at once), then a lease in the upload's row (requests
//! of other processes sharing the database). A lease is a random token and an
//! expiry time; its holder renews it while it streams and every write of the
//! row checks the token, so a process that dies frees its uploads when the
//! lease runs out, and one that stalls past it changes nothing.

use super::error::{EngineError, EngineResult};
use super::run_blocking;
use crate::meta::{LeaseOutcome, MetaStore, UploadRecord, Viewer};
use chrono::Utc;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

/// The locks of one process: its per-upload mutexes, and the database
/// holding the leases.
pub struct Locks {
    map: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// The chunk in flight on each upload held here.
    in_flight: Mutex<HashMap<Uuid, Arc<InFlight>>>,
    meta: Arc<dyn MetaStore>,
    /// How long a lease lasts without renewal: a dead process frees its
    /// uploads within this time. A holder renews it every quarter of it,
    /// and stops writing once its last renewal is half of it old, leaving
    /// the rest as margin for clock skew between servers.
    lease: Duration,
}

impl Locks {
    pub fn new(meta: Arc<dyn MetaStore>, lease: Duration) -> Self {
        Locks {
            map: Mutex::default(),
            in_flight: Mutex::default(),
            meta,
            lease,
        }
    }

    /// Where the chunk in flight on `id` has reached, if one is in flight
    /// in this process.
    pub fn received(&self, id: Uuid) -> Option<u64> {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight
            .get(&id)
            .map(|chunk| chunk.reached.load(Ordering::Relaxed))
    }

    /// Ends the chunk in flight on `id` in this process, if one is: its
    /// body breaks off there, as if its client had gone. Returns whether
    /// one was.
    pub fn preempt(&self, id: Uuid) -> bool {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let Some(chunk) = in_flight.get(&id) else {
            return false;
        };
        chunk.preempted.store(true, Ordering::SeqCst);
        chunk.waker.wake();
        true
    }

    fn lease_delta(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::seconds(10))
    }

    fn entry(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().clone()
    }

    /// The in-process mutex of an upload, if nobody holds it.
    pub fn try_local(&self, id: Uuid) -> Option<OwnedMutexGuard<()>> {
        let local = self.entry(id).try_lock_owned().ok();
        if local.is_none() {
            self.prune(id);
        }
        local
    }

    /// The in-process mutex of an upload, waiting for it up to `deadline`.
    pub async fn local(
        &self,
        id: Uuid,
        deadline: tokio::time::Instant,
    ) -> Option<OwnedMutexGuard<()>> {
        let local = tokio::time::timeout_at(deadline, self.entry(id).lock_owned())
            .await
            .ok();
        if local.is_none() {
            self.prune(id);
        }
        local
    }

    /// Forgets the mutex of an upload nobody holds or waits for.
    fn prune(&self, id: Uuid) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&id);
        }
    }
}

/// A chunk being received: how far it has reached, and whether a newer
/// request on its upload ended it.
#[derive(Default)]
pub struct InFlight {
    reached: AtomicU64,
    preempted: AtomicBool,
    /// The body's reader, woken when the chunk is preempted.
    waker: AtomicWaker,
}

impl InFlight {
    /// Counts bytes received.
    pub fn received(&self, n: usize) {
        self.reached.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Whether a newer request ended the chunk; until it does, `waker`
    /// is woken when one does.
    pub fn is_preempted(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.preempted.load(Ordering::SeqCst)
    }
}

fn new_token() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Both locks on one upload. Dropping it releases them (lease first, then
/// the local mutex) on the blocking pool.
pub struct UploadLock {
    id: Uuid,
    token: String,
    locks: Arc<Locks>,
    local: Option<OwnedMutexGuard<()>>,
    lease_held: bool,
    last_renewal: Mutex<Instant>,
    /// The chunk in flight, once one is (`track_chunk`).
    received: Option<Arc<InFlight>>,
}

/// What trying to take an upload's lease came to.
pub enum Leased<T> {
    /// The locks, the row under them, and what the job run under them gave.
    Held(UploadLock, Box<UploadRecord>, EngineResult<T>),
    /// Another process holds the lease.
    Busy,
    /// No such upload, or none the viewer may see.
    Missing,
}

/// One try: the job comes back unless the lease was taken.
enum Attempt<F, T> {
    Taken(Box<UploadRecord>, EngineResult<T>),
    Busy(F),
    Missing,
}

impl<F, T> Attempt<F, T>
where
    F: FnOnce(&UploadRecord) -> EngineResult<T>,
{
    /// Runs the job once the lease is taken.
    fn of(outcome: LeaseOutcome, job: Option<F>) -> Self {
        match outcome {
            LeaseOutcome::Acquired(upload) => {
                let job = job.expect("kept until the lease is taken");
                let done = job(&upload);
                Attempt::Taken(upload, done)
            }
            LeaseOutcome::Busy => Attempt::Busy(job.expect("kept until the lease is taken")),
            LeaseOutcome::Missing => Attempt::Missing,
        }
    }
}

impl UploadLock {
    /// Takes the lease of an upload `viewer` may see, holding its local
    /// mutex, trying until `deadline`. `then` runs on the row under the
    /// lease in the same blocking job, so that whatever a request needs
    /// before its body (the part file, say) costs no second hand-over.
    pub async fn lease<T, F>(
        id: Uuid,
        viewer: Viewer,
        local: OwnedMutexGuard<()>,
        deadline: tokio::time::Instant,
        locks: &Arc<Locks>,
        then: F,
    ) -> EngineResult<Leased<T>>
    where
        F: FnOnce(&UploadRecord) -> EngineResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut lock = UploadLock {
            id,
            token: new_token(),
            locks: locks.clone(),
            local: Some(local),
            lease_held: false,
            last_renewal: Mutex::new(Instant::now()),
            received: None,
        };
        let viewer = Arc::new(viewer);
        let mut then = Some(then);
        let mut poll = POLL_MIN;
        loop {
            let started = Instant::now();
            let (locks, token, viewer, job) = (
                locks.clone(),
                lock.token.clone(),
                viewer.clone(),
                then.take(),
            );
            // Released on drop even if this request is dropped mid-try (a
            // release of a lease not taken changes nothing).
            lock.lease_held = true;
            let attempt = {
                let now = Utc::now();
                let until = now + locks.lease_delta();
                // In place when the database can take it at once: a hand-over
                // to another thread costs more than the work.
                match locks.meta.try_lease_now(id, &viewer, &token, now, until) {
                    Some(outcome) => outcome
                        .map_err(EngineError::from)
                        .map(|outcome| Attempt::of(outcome, job)),
                    None => {
                        run_blocking(move || {
                            let outcome = locks.meta.try_lease(id, &viewer, &token, now, until)?;
                            Ok(Attempt::of(outcome, job))
                        })
                        .await
                    }
                }
            };
            lock.lease_held = matches!(attempt, Ok(Attempt::Taken(..)));
            match attempt? {
                Attempt::Taken(upload, done) => {
                    lock.last_renewal = Mutex::new(started);
                    return Ok(Leased::Held(lock, upload, done));
                }
                Attempt::Missing => return Ok(Leased::Missing),
                Attempt::Busy(_) if tokio::time::Instant::now() + poll > deadline => {
                    return Ok(Leased::Busy)
                }
                Attempt::Busy(job) => {
                    then = Some(job);
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_MAX);
                }
            }
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts counting a chunk that begins at `from`: what it returns is
    /// told of every byte received. Readers in this process see it at once
    /// (`Locks::received`), other processes with each renewal of the lease.
    pub fn track_chunk(&mut self, from: u64) -> Arc<InFlight> {
        let reached = Arc::new(InFlight {
            reached: AtomicU64::new(from),
            ..InFlight::default()
        });
        let mut in_flight = self
            .locks
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        in_flight.insert(self.id, reached.clone());
        self.received = Some(reached.clone());
        reached
    }

    /// Renews the lease when due; fails once it can no longer be trusted.
    pub async fn keep_alive(&self) -> EngineResult<()> {
        let lease = self.locks.lease;
        if self.renewed_at().elapsed() >= lease / 4 {
            let started = Instant::now();
            let (locks, id, token) = (self.locks.clone(), self.id, self.token.clone());
            let received = self
                .received
                .as_ref()
                .map(|chunk| chunk.reached.load(Ordering::Relaxed));
            let renewed = run_blocking(move || {
                let until = Utc::now() + locks.lease_delta();
                Ok(locks.meta.renew_lease(id, &token, until, received)?)
            })
            .await?;
            if !renewed {
                return Err(EngineError::LeaseLost);
            }
            *self.last_renewal.lock().unwrap_or_else(|e| e.into_inner()) = started;
        }
        if self.renewed_at().elapsed() >= lease / 2 {
            return Err(EngineError::LeaseLost);
        }
        Ok(())
    }

    fn renewed_at(&self) -> Instant {
        *self.last_renewal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row's lease was already cleared by the statement that committed.
    pub fn lease_released_by_commit(&mut self) {
        self.lease_held = false;
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        let (locks, id, token) = (self.locks.clone(), self.id, std::mem::take(&mut self.token));
        let (local, lease_held) = (self.local.take(), self.lease_held);
        if self.received.take().is_some() {
            let mut in_flight = locks.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.remove(&id);
        }
        super::detach_blocking(move || {
            if lease_held {
                if let Err(err) = locks.meta.release_lease(id, &token) {
                    log::warn!(
                        "upload {id}: releasing the lease failed ({err}); it runs out by itself"
                    );
                }
            }
            drop(local);
            locks.prune(id);
        });
    }
}
