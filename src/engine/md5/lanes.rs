//! The lane service: one thread that hashes the batches of every upload in
//! progress, up to eight at once in the lanes of one vector
//! (`avx512::compress_eight`), or one alone with the single-chain kernel.
//! Eight chains cost about what one costs, so many concurrent uploads take
//! a small part of a core for their checksums, where hashing each on its
//! own thread would take a core per 1 GB/s.

use super::{avx512, Md5, BLOCK};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use tokio::sync::oneshot;

/// Bytes that a job shares with the service until it is hashed.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

const LANES: usize = 8;

/// Blocks hashed for a lone job before the service looks for new ones
/// (64 KiB: tens of microseconds).
const SOLO_STEP: usize = 1024;
/// Blocks hashed in every lane at a time when several jobs share the vector.
const SHARED_STEP: usize = 256;

/// What empty lanes hash: nothing anyone waits for.
static IDLE_LANE: [[u8; BLOCK]; SHARED_STEP] = [[0; BLOCK]; SHARED_STEP];

struct Job {
    hasher: Md5,
    data: Shared,
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
pub struct LaneJob(oneshot::Receiver<Md5>);

impl LaneJob {
    /// The hasher with the job's bytes added; None if the service failed.
    pub async fn wait(self) -> Option<Md5> {
        self.0.await.ok()
    }
}

/// Adds `data` to `hasher` on the lane service. Without one (a CPU without
/// AVX-512), the hasher comes back for the caller to use.
pub fn hash_in_lanes(hasher: Md5, data: Shared) -> Result<LaneJob, Md5> {
    let Some(service) = service().filter(|s| s.running.load(Ordering::Acquire)) else {
        return Err(hasher);
    };
    let (done, result) = oneshot::channel();
    let mut jobs = service.jobs.lock().unwrap_or_else(|e| e.into_inner());
    jobs.push_back(Job { hasher, data, done });
    drop(jobs);
    service.ready.notify_one();
    Ok(LaneJob(result))
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
                    hasher = match hash_in_lanes(hasher, shared(piece)) {
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
