//! The lane service: one thread that hashes the batches of every upload in
//! progress, up to eight at once in the lanes of one vector
//! (`avx512::compress_eight`), or one alone with the single-chain kernel.
//! Eight chains cost about what one costs, so many concurrent uploads take
//! a small part of a core for their checksums, where hashing each on its
//! own thread would take a core per 1 GB/s.
//!
//! Jobs of many slow uploads rarely arrive together, so the service waits
//! a little for them to gather (`GATHER`), unless a job is urgent: its
//! upload is waiting for that hash (a fast upload, or the end of a body).

use super::{avx512, Md5, BLOCK};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bytes that a job shares with the service until it is hashed.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

const LANES: usize = 8;

/// Blocks hashed for a lone job before the service looks for new ones
/// (64 KiB: tens of microseconds).
const SOLO_STEP: usize = 1024;
/// Blocks hashed in every lane at a time when several jobs share the vector.
const SHARED_STEP: usize = 256;

/// How long jobs that nobody waits for yet may wait for others to share the
/// vector with: far below the time a slow upload takes to fill its next
/// batch, so it never stalls one.
const GATHER: Duration = Duration::from_millis(2);

/// Uploads streaming now, each with at most one job in the service: once
/// each has one, there is nothing more to wait for.
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts as a streaming upload while it lives.
pub struct Streaming(());

impl Streaming {
    pub fn start() -> Streaming {
        STREAMS.fetch_add(1, Ordering::Relaxed);
        Streaming(())
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What empty lanes hash: nothing anyone waits for.
static IDLE_LANE: [[u8; BLOCK]; SHARED_STEP] = [[0; BLOCK]; SHARED_STEP];

struct Job {
    hasher: Md5,
    data: Shared,
    /// Its upload waits for it (or soon will): hash it now.
    urgent: Arc<AtomicBool>,
    done: oneshot::Sender<Md5>,
}

struct Service {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Cleared if the service thread ever ends (a panic): jobs then go
    /// back to their callers instead of waiting forever.
    running: AtomicBool,
}

/// The service, started on first use; None on a CPU without the kernels.
fn service() -> Option<&'static Service> {
    static SERVICE: OnceLock<Option<&'static Service>> = OnceLock::new();
    *SERVICE.get_or_init(|| {
        if !avx512::available() {
            return None;
        }
        let service: &'static Service = Box::leak(Box::new(Service {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            running: AtomicBool::new(true),
        }));
        std::thread::Builder::new()
            .name("md5-lanes".into())
            .spawn(move || run(service))
            .ok()?;
        Some(service)
    })
}

/// A job handed to the service.
pub struct LaneJob {
    result: oneshot::Receiver<Md5>,
    urgent: Arc<AtomicBool>,
}

impl LaneJob {
    /// The hasher with the job's bytes added; None if the service failed.
    /// A job still gathering is hashed at once.
    pub async fn wait(self) -> Option<Md5> {
        if self.result.is_empty() && !self.urgent.swap(true, Ordering::AcqRel) {
            if let Some(service) = service() {
                // Through the lock, so that a service that just found
                // nothing urgent is already waiting for this notice.
                drop(service.jobs.lock().unwrap_or_else(|e| e.into_inner()));
                service.ready.notify_one();
            }
        }
        self.result.await.ok()
    }

    /// Whether the hash is ready.
    pub fn is_done(&self) -> bool {
        !self.result.is_empty()
    }
}

/// Adds `data` to `hasher` on the lane service; `urgent` when the caller is
/// about to wait for it. Without a service (a CPU without AVX-512), the
/// hasher comes back for the caller to use.
pub fn hash_in_lanes(hasher: Md5, data: Shared, urgent: bool) -> Result<LaneJob, Md5> {
    let Some(service) = service().filter(|s| s.running.load(Ordering::Acquire)) else {
        return Err(hasher);
    };
    let (done, result) = oneshot::channel();
    let urgent = Arc::new(AtomicBool::new(urgent));
    let mut jobs = service.jobs.lock().unwrap_or_else(|e| e.into_inner());
    jobs.push_back(Job {
        hasher,
        data,
        urgent: urgent.clone(),
        done,
    });
    drop(jobs);
    service.ready.notify_one();
    Ok(LaneJob { result, urgent })
}

/// A job in a lane: its whole blocks from `at` to `end` are still to hash.
struct Lane {
    job: Job,
    at: usize,
    end: usize,
}

impl Lane {
    fn start(mut job: Job) -> Lane {
        let bytes = (*job.data).as_ref();
        let rest = job.hasher.complete_pending(bytes);
        let at = bytes.len() - rest.len();
        let end = at + rest.len() / BLOCK * BLOCK;
        Lane { job, at, end }
    }

    fn blocks_left(&self) -> usize {
        (self.end - self.at) / BLOCK
    }

    fn next_blocks(&self, count: usize) -> &[[u8; BLOCK]] {
        let bytes = &(*self.job.data).as_ref()[self.at..self.at + count * BLOCK];
        bytes.as_chunks::<BLOCK>().0
    }

    fn advance(&mut self, count: usize) {
        self.at += count * BLOCK;
        self.job.hasher.blocks = self.job.hasher.blocks.wrapping_add(count as u64);
    }

    fn finish(self) {
        let Job {
            mut hasher,
            data,
            done,
            ..
        } = self.job;
        hasher.keep_tail(&(*data).as_ref()[self.end..]);
        // The caller may have gone (its request was dropped): nothing to do.
        let _ = done.send(hasher);
    }
}

/// Marks the service stopped and hands back waiting jobs if its thread
/// ends.
struct Stopped(&'static Service);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        self.0
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

fn run(service: &'static Service) {
    let _stopped = Stopped(service);
    let mut lanes: Vec<Lane> = Vec::with_capacity(LANES);
    let mut arrived = Vec::with_capacity(LANES);
    loop {
        {
            let mut jobs = service.jobs.lock().unwrap_or_else(|e| e.into_inner());
            while lanes.is_empty() && jobs.is_empty() {
                jobs = service.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
            if lanes.is_empty() {
                jobs = gather(service, jobs);
            }
            let taken = (LANES - lanes.len()).min(jobs.len());
            arrived.extend(jobs.drain(..taken));
        }
        lanes.extend(arrived.drain(..).map(Lane::start));
        match lanes.as_mut_slice() {
            [] => {}
            [lane] => {
                let count = lane.blocks_left().min(SOLO_STEP);
                let mut state = lane.job.hasher.state;
                super::compress(&mut state, lane.next_blocks(count));
                lane.job.hasher.state = state;
                lane.advance(count);
            }
            many => hash_side_by_side(many),
        }
        let mut i = 0;
        while i < lanes.len() {
            if lanes[i].blocks_left() == 0 {
                lanes.swap_remove(i).finish();
            } else {
                i += 1;
            }
        }
    }
}

/// Before a round: waits up to `GATHER` while the jobs at hand are fewer
/// than the lanes and the uploads that may send one, and none is urgent.
fn gather<'a>(
    service: &'a Service,
    mut jobs: MutexGuard<'a, VecDeque<Job>>,
) -> MutexGuard<'a, VecDeque<Job>> {
    let deadline = Instant::now() + GATHER;
    loop {
        let streams = STREAMS.load(Ordering::Relaxed);
        let wanted = streams.min(LANES);
        let hurried = streams < LANES && jobs.iter().any(|job| job.urgent.load(Ordering::Acquire));
        if jobs.len() >= wanted || hurried {
            return jobs;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return jobs;
        };
        jobs = service
            .ready
            .wait_timeout(jobs, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Hashes the same number of blocks of every lane, in one vector.
fn hash_side_by_side(lanes: &mut [Lane]) {
    let count = lanes
        .iter()
        .map(Lane::blocks_left)
        .min()
        .unwrap_or(0)
        .min(SHARED_STEP);
    let mut states = [[0u32; 4]; LANES];
    let mut inputs: [&[[u8; BLOCK]]; LANES] = [&IDLE_LANE; LANES];
    for (n, lane) in lanes.iter().enumerate() {
        states[n] = lane.job.hasher.state;
        inputs[n] = lane.next_blocks(count);
    }
    // SAFETY: the service runs only where `avx512::available()`.
    unsafe { avx512::compress_eight(&mut states, inputs, count) };
    for (lane, state) in lanes.iter_mut().zip(states) {
        lane.job.hasher.state = state;
        lane.advance(count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use digest::Digest;

    /// Many jobs at once, of lengths that leave partial blocks on both
    /// sides, each continuing a hasher that already holds a partial block.
    #[tokio::test]
    async fn concurrent_jobs_match_md5_crate() {
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            tasks.push(tokio::spawn(async move {
                let data = sample(5 + 70_001 * (n as usize % 7), n);
                let mut hasher = Md5::new();
                hasher.update(&data[..5]);
                let mut pieces = data[5..].chunks(9_999 + n as usize * 101);
                let shared = |piece: &[u8]| -> Shared { Arc::new(piece.to_vec()) };
                for piece in pieces.by_ref() {
                    hasher = match hash_in_lanes(hasher, shared(piece), n % 2 == 0) {
                        Ok(job) => job.wait().await.expect("the service hashes"),
                        Err(mut back) => {
                            back.update(piece);
                            back
                        }
                    };
                }
                assert_eq!(
                    hasher.finalize()[..],
                    ::md5::Md5::digest(&data)[..],
                    "job {n}"
                );
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}
