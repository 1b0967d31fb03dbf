//! The lane service: one thread that computes the MD5 of every upload in
//! progress, up to sixteen at once in the lanes of vectors (`simd::Kernels`,
//! AVX-512 or AVX2), or one alone with the single-chain kernel. Sixteen
//! chains cost a small multiple of what one costs, since one chain leaves
//! the vector units idle waiting on each step, so many concurrent uploads
//! take a small part of a core for their checksums, where hashing each on
//! its own thread would take a core per upload.
//!
//! An upload opens a `Feed` and pushes its body into it piece by piece as
//! the pieces fill; its hasher stays in the service, which hashes the
//! pieces in order as soon as it can, with no hand-over between them. When
//! only a few uploads are hashing but many more fed bytes lately, the
//! service waits a moment (`GATHER`) for them to fill its lanes, unless an
//! upload that it would hold back is waiting for its hash.
//!
//! A feed may outlive its request: parked, it waits for the upload's next
//! chunk (and the service does not wait for it to fill a lane), and its
//! checkpoint, the hasher as of the last piece hashed, is what the chunk
//! saves while the last pieces are still being hashed.
//!
//! The service's thread, its choice of lanes and the feeds' side of it
//! share one state and its lock, so they stay in one file (its tests are in
//! `lanes/tests.rs`).

use super::simd::Kernels;
use super::{Md5, BLOCK};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bytes that a feed shares with the service until they are hashed.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Uploads hashed at once: sixteen in 512-bit vectors, eight or fewer in
/// 256-bit ones (the same time per block for half the lanes).
const LANES: usize = 16;

/// Blocks hashed for a lone upload before the service looks for others
/// (64 KiB: tens of microseconds).
const SOLO_STEP: usize = 1024;
/// Blocks hashed in every lane at a time when several uploads share the
/// vector.
const SHARED_STEP: usize = 256;

/// The longest the service holds bytes back to hash them beside others':
/// far below the time a slow upload takes to fill its next piece.
const GATHER: Duration = Duration::from_millis(2);
/// Uploads streaming at once from which the machine counts as busy.
const BUSY: usize = LANES;

/// What empty lanes hash: nothing anyone waits for.
static IDLE_LANE: [[u8; BLOCK]; SHARED_STEP] = [[0; BLOCK]; SHARED_STEP];

/// One upload's place in the service.
struct Stream {
    /// Fed and not yet taken into a lane.
    pieces: VecDeque<Shared>,
    /// The hasher, while no lane holds it.
    hasher: Option<Md5>,
    /// The feeder waits for the hash: do not hold it back.
    waiting: bool,
    /// Set once the feeder has fed everything: the hasher goes there.
    finished: Option<oneshot::Sender<Md5>>,
    /// The feeder is gone without finishing: drop everything.
    abandoned: bool,
    /// The hasher as it was after the last piece hashed.
    checkpoint: Md5,
    /// Between requests: brings no piece soon, so nothing waits for it.
    parked: bool,
}

struct State {
    streams: HashMap<u64, Stream>,
    /// Streams whose pieces wait for a lane, in the order they came: lanes
    /// go to them first come, first served.
    ready: VecDeque<u64>,
    next_id: u64,
    /// What the service waits for: feeders wake it only when that may
    /// have come (each wake-up is a system call, and a context switch).
    sleep: Sleep,
    /// Pieces fed while it gathers.
    arrivals: usize,
    /// Streams parked.
    parked: usize,
}

#[derive(Clone, Copy)]
enum Sleep {
    Awake,
    /// Nothing to hash: any piece.
    Idle,
    /// Waiting for pieces to fill `free` lanes, or for a feeder to wait.
    Gathering {
        free: usize,
    },
}

impl State {
    /// Forgets a stream.
    fn remove(&mut self, id: u64) {
        if self.streams.remove(&id).is_some_and(|stream| stream.parked) {
            self.parked -= 1;
        }
    }

    /// Counts a piece fed; whether to wake the service for it.
    fn piece_fed(&mut self) -> bool {
        match self.sleep {
            Sleep::Awake => false,
            Sleep::Idle => true,
            Sleep::Gathering { free } => {
                self.arrivals += 1;
                self.arrivals >= free
            }
        }
    }

    /// Whether to wake the service for a feeder that now waits.
    fn feeder_waits(&self) -> bool {
        matches!(self.sleep, Sleep::Gathering { .. })
    }
}

struct Service {
    kernels: Kernels,
    state: Mutex<State>,
    ready: Condvar,
    /// Cleared if the service thread ever ends (a panic): feeds then fail
    /// instead of waiting forever.
    running: AtomicBool,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The service, started on first use; None on a CPU without the kernels.
fn service() -> Option<&'static Service> {
    static SERVICE: OnceLock<Option<&'static Service>> = OnceLock::new();
    *SERVICE.get_or_init(|| {
        let kernels = Kernels::detect()?;
        let service: &'static Service = Box::leak(Box::new(Service {
            kernels,
            state: Mutex::new(State {
                streams: HashMap::new(),
                ready: VecDeque::new(),
                next_id: 0,
                sleep: Sleep::Awake,
                arrivals: 0,
                parked: 0,
            }),
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

/// One upload's MD5, computed by the service from the pieces fed to it.
pub struct Feed {
    service: &'static Service,
    id: u64,
    finished: bool,
}

/// The service failed (its thread ended).
#[derive(Debug)]
pub struct Stopped;

impl Feed {
    /// Hands `hasher` to the service; without one (a CPU without AVX2)
    /// it comes back for the caller to use.
    pub fn open(hasher: Md5) -> Result<Feed, Md5> {
        let Some(service) = service().filter(|s| s.running.load(Ordering::Acquire)) else {
            return Err(hasher);
        };
        let mut state = service.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.streams.insert(
            id,
            Stream {
                pieces: VecDeque::new(),
                checkpoint: hasher.clone(),
                hasher: Some(hasher),
                waiting: false,
                finished: None,
                abandoned: false,
                parked: false,
            },
        );
        Ok(Feed {
            service,
            id,
            finished: false,
        })
    }

    /// Queues the next bytes of the upload.
    pub fn push(&self, piece: Shared) {
        let mut state = self.service.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            stream.pieces.push_back(piece);
            // Out of the lanes and with nothing queued before: it waits now.
            let ready = stream.hasher.is_some() && stream.pieces.len() == 1;
            let unparked = std::mem::take(&mut stream.parked);
            if ready {
                state.ready.push_back(self.id);
            }
            if unparked {
                state.parked -= 1;
            }
        }
        let wake = state.piece_fed();
        drop(state);
        if wake {
            self.service.ready.notify_one();
        }
    }

    /// Says that no piece comes soon (the request is over, and the feed
    /// kept for the next one): the service does not wait for it to fill a
    /// lane. The next piece pushed unparks it.
    pub fn park(&self) {
        let mut state = self.service.lock();
        let newly = state
            .streams
            .get_mut(&self.id)
            .is_some_and(|stream| !std::mem::replace(&mut stream.parked, true));
        if newly {
            state.parked += 1;
        }
    }

    /// The hasher as of the last piece hashed: it covers the first pieces
    /// pushed, maybe not all (all of them once the stream is at rest, as
    /// every piece done updates it). None once the service stopped.
    pub fn checkpoint(&self) -> Option<Md5> {
        let state = self.service.lock();
        Some(state.streams.get(&self.id)?.checkpoint.clone())
    }

    /// Says whether the feeder is waiting for its pieces to be hashed (or
    /// written): the service then does not hold them back.
    pub fn set_waiting(&self, waiting: bool) {
        let mut state = self.service.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            stream.waiting = waiting;
        }
        let wake = waiting && state.feeder_waits();
        drop(state);
        if wake {
            self.service.ready.notify_one();
        }
    }

    /// The hasher, once every piece fed is hashed.
    pub async fn finish(mut self) -> Result<Md5, Stopped> {
        self.finished = true;
        let (done, result) = oneshot::channel();
        let wake = {
            let mut state = self.service.lock();
            let stream = state.streams.get_mut(&self.id).ok_or(Stopped)?;
            // Out of the lanes with nothing queued: every piece is hashed.
            if stream.hasher.is_some() && stream.pieces.is_empty() {
                let hasher = stream.hasher.take();
                state.remove(self.id);
                return hasher.ok_or(Stopped);
            }
            stream.waiting = true;
            stream.finished = Some(done);
            state.feeder_waits()
        };
        if wake {
            self.service.ready.notify_one();
        }
        result.await.map_err(|_| Stopped)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.service.lock();
        let in_lane = match state.streams.get_mut(&self.id) {
            Some(stream) => {
                stream.pieces.clear();
                stream.abandoned = true;
                stream.hasher.is_none()
            }
            None => return,
        };
        if !in_lane {
            state.remove(self.id);
        }
    }
}

/// A stream in a lane: its hasher and the piece being hashed, whose whole
/// blocks from `at` to `end` are still to do.
struct Lane {
    id: u64,
    hasher: Md5,
    piece: Shared,
    at: usize,
    end: usize,
    /// When the piece came into the lane.
    taken_at: Instant,
}

impl Lane {
    /// Starts on `piece`: tops up the hasher's pending block first.
    fn new(id: u64, mut hasher: Md5, piece: Shared) -> Lane {
        let (at, end) = Self::blocks_of(&mut hasher, &piece);
        Lane {
            id,
            hasher,
            piece,
            at,
            end,
            taken_at: Instant::now(),
        }
    }

    fn blocks_of(hasher: &mut Md5, piece: &Shared) -> (usize, usize) {
        let bytes = (**piece).as_ref();
        let rest = hasher.complete_pending(bytes);
        let at = bytes.len() - rest.len();
        (at, at + rest.len() / BLOCK * BLOCK)
    }

    /// Moves on to `next`, once the piece's last partial block is kept.
    fn next_piece(&mut self, next: Shared) {
        (self.at, self.end) = Self::blocks_of(&mut self.hasher, &next);
        self.piece = next;
        self.taken_at = Instant::now();
    }

    fn keep_tail(&mut self) {
        let tail = &(*self.piece).as_ref()[self.end..];
        self.hasher.keep_tail(tail);
    }

    fn blocks_left(&self) -> usize {
        (self.end - self.at) / BLOCK
    }

    fn next_blocks(&self, count: usize) -> &[[u8; BLOCK]] {
        let bytes = &(*self.piece).as_ref()[self.at..self.at + count * BLOCK];
        bytes.as_chunks::<BLOCK>().0
    }

    fn advance(&mut self, count: usize) {
        self.at += count * BLOCK;
        self.hasher.blocks = self.hasher.blocks.wrapping_add(count as u64);
    }
}

/// Marks the service stopped if its thread ends, and fails every feed that
/// waits for its hasher.
struct StopGuard(&'static Service);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        let mut state = self.0.lock();
        state.streams.clear();
        state.parked = 0;
    }
}

fn run(service: &'static Service) {
    let _stop = StopGuard(service);
    let mut lanes: Vec<Lane> = Vec::with_capacity(LANES);
    loop {
        let mut state = service.lock();
        settle_lanes(&mut state, &mut lanes);
        admit(&mut state, &mut lanes);
        while lanes.is_empty() {
            state.sleep = Sleep::Idle;
            state = service.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.sleep = Sleep::Awake;
            admit(&mut state, &mut lanes);
        }
        // Lanes left free while more uploads may bring pieces soon: wait
        // for them, but hold no piece back longer than `GATHER` in all.
        while lanes.len() < LANES && worth_gathering(&state, &lanes) {
            let oldest = lanes.iter().map(|lane| lane.taken_at).min();
            let left = oldest.and_then(|at| (at + GATHER).checked_duration_since(Instant::now()));
            let Some(left) = left else {
                break;
            };
            state.sleep = Sleep::Gathering {
                free: LANES - lanes.len(),
            };
            state.arrivals = 0;
            state = service
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.sleep = Sleep::Awake;
            admit(&mut state, &mut lanes);
        }
        drop(state);
        match lanes.as_mut_slice() {
            [lane] => {
                let count = lane.blocks_left().min(SOLO_STEP);
                let mut state = lane.hasher.state;
                super::simd::compress_one(&mut state, lane.next_blocks(count));
                lane.hasher.state = state;
                lane.advance(count);
            }
            many => hash_side_by_side(&service.kernels, many),
        }
    }
}

/// Takes streams with pieces into free lanes.
fn admit(state: &mut State, lanes: &mut Vec<Lane>) {
    while lanes.len() < LANES {
        let Some(id) = state.ready.pop_front() else {
            return;
        };
        // Gone, or in a lane already (fed again after its lane emptied).
        let Some(stream) = state.streams.get_mut(&id) else {
            continue;
        };
        let Some(hasher) = stream.hasher.take() else {
            continue;
        };
        match stream.pieces.pop_front() {
            Some(piece) => lanes.push(Lane::new(id, hasher, piece)),
            None => stream.hasher = Some(hasher),
        }
    }
}

/// Whether to wait before hashing the lanes at hand: more uploads are
/// streaming than have pieces in the lanes, and none of those waits for its
/// hash, unless so many stream that the machine is busy anyway and hashing
/// them side by side matters more than a moment's wait.
fn worth_gathering(state: &State, lanes: &[Lane]) -> bool {
    let streaming = state.streams.len() - state.parked;
    if lanes.len() >= streaming.min(LANES) {
        return false;
    }
    let waited_for = lanes
        .iter()
        .any(|lane| state.streams.get(&lane.id).is_some_and(|s| s.waiting));
    !waited_for || streaming >= BUSY
}

/// After a step: lanes whose piece is done move to the stream's next piece,
/// or give the hasher back (to the feeder, if it finished).
fn settle_lanes(state: &mut State, lanes: &mut Vec<Lane>) {
    let mut i = 0;
    while i < lanes.len() {
        if lanes[i].blocks_left() > 0 {
            i += 1;
            continue;
        }
        let id = lanes[i].id;
        let Some(stream) = state.streams.get_mut(&id) else {
            lanes.swap_remove(i);
            continue;
        };
        if stream.abandoned {
            state.remove(id);
            lanes.swap_remove(i);
            continue;
        }
        lanes[i].keep_tail();
        stream.checkpoint.clone_from(&lanes[i].hasher);
        if let Some(next) = stream.pieces.pop_front() {
            lanes[i].next_piece(next);
            i += 1;
            continue;
        }
        let lane = lanes.swap_remove(i);
        match stream.finished.take() {
            Some(done) => {
                // The feeder may have gone since: nothing to do then.
                let _ = done.send(lane.hasher);
                state.remove(id);
            }
            None => stream.hasher = Some(lane.hasher),
        }
    }
}

/// Hashes the same number of blocks of every lane, in one vector.
fn hash_side_by_side(kernels: &Kernels, lanes: &mut [Lane]) {
    if lanes.len() <= 8 {
        side_by_side::<8>(lanes, |states, inputs, count| {
            kernels.eight(states, inputs, count)
        });
    } else {
        side_by_side::<16>(lanes, |states, inputs, count| {
            kernels.sixteen(states, inputs, count)
        });
    }
}

fn side_by_side<const N: usize>(
    lanes: &mut [Lane],
    kernel: impl FnOnce(&mut [[u32; 4]; N], [&[[u8; BLOCK]]; N], usize),
) {
    let count = lanes
        .iter()
        .map(Lane::blocks_left)
        .min()
        .unwrap_or(0)
        .min(SHARED_STEP);
    let mut states = [[0u32; 4]; N];
    let mut inputs: [&[[u8; BLOCK]]; N] = [&IDLE_LANE; N];
    for (n, lane) in lanes.iter().enumerate() {
        states[n] = lane.hasher.state;
        inputs[n] = lane.next_blocks(count);
    }
    kernel(&mut states, inputs, count);
    for (lane, state) in lanes.iter_mut().zip(states) {
        lane.hasher.state = state;
        lane.advance(count);
    }
}

#[cfg(test)]
mod tests;
