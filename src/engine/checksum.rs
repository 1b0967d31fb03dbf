//! Running checksums whose state is saved with every committed offset, so
//! that completion costs the same for 1 KB and 100 GB. A saved state says
//! how many bytes it covers: it may trail the committed offset (the hash of
//! a chunk's last pieces need not hold up its acknowledgement), and whoever
//! resumes it hashes the rest from the part file.

use super::blocking_failed;
use super::error::{EngineError, EngineResult};
use chunkd_md5::{Feed, Md5, Shared};
use digest::common::hazmat::{SerializableState, SerializedState};
use digest::Digest;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgo {
    Md5,
    Sha1,
    Sha256,
}

impl ChecksumAlgo {
    /// The name clients use: the form field of the completion request.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Md5 => "md5",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Sha256 => "sha256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(ChecksumAlgo::Md5),
            "sha1" => Some(ChecksumAlgo::Sha1),
            "sha256" => Some(ChecksumAlgo::Sha256),
            _ => None,
        }
    }
}

/// Leads every saved state of earlier builds: the layout of RustCrypto's
/// 0.11 hashers (which `chunkd_md5::Md5` keeps), covering exactly the
/// committed offset.
const STATE_AT_OFFSET: u8 = 1;
/// Leads every saved state now: the bytes it covers (8, little-endian),
/// then the same layout. A state of another layout is not trusted; the
/// part file is re-hashed.
const STATE_WITH_LEN: u8 = 2;

#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
    /// Bytes hashed.
    len: u64,
}

#[derive(Clone)]
enum Inner {
    Md5(Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    /// An upload not hashed whole: only its length is counted.
    LengthOnly,
}

fn restore_state<H: SerializableState>(state: &[u8]) -> Option<H> {
    let serialized = SerializedState::<H>::try_from(state).ok()?;
    H::deserialize(&serialized).ok()
}

impl Hasher {
    pub fn new(algo: ChecksumAlgo) -> Self {
        let inner = match algo {
            ChecksumAlgo::Md5 => Inner::Md5(Md5::new()),
            ChecksumAlgo::Sha1 => Inner::Sha1(sha1::Sha1::new()),
            ChecksumAlgo::Sha256 => Inner::Sha256(sha2::Sha256::new()),
        };
        Hasher { inner, len: 0 }
    }

    /// For an upload that is not hashed whole: `len` bytes, no digest.
    pub fn unhashed(len: u64) -> Self {
        Hasher {
            inner: Inner::LengthOnly,
            len,
        }
    }

    /// What it hashes with; None when it does not hash.
    pub fn algo(&self) -> Option<ChecksumAlgo> {
        match self.inner {
            Inner::Md5(_) => Some(ChecksumAlgo::Md5),
            Inner::Sha1(_) => Some(ChecksumAlgo::Sha1),
            Inner::Sha256(_) => Some(ChecksumAlgo::Sha256),
            Inner::LengthOnly => None,
        }
    }

    fn from_md5(md5: Md5) -> Self {
        Hasher {
            len: md5.hashed_len(),
            inner: Inner::Md5(md5),
        }
    }

    /// How many bytes it has hashed.
    pub fn hashed_len(&self) -> u64 {
        self.len
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Md5(h) => h.update(data),
            Inner::Sha1(h) => h.update(data),
            Inner::Sha256(h) => h.update(data),
            Inner::LengthOnly => {}
        }
        self.len += data.len() as u64;
    }

    pub fn save(&self) -> Vec<u8> {
        let mut out = vec![STATE_WITH_LEN];
        out.extend_from_slice(&self.len.to_le_bytes());
        match &self.inner {
            Inner::Md5(h) => out.extend_from_slice(&h.save()),
            Inner::Sha1(h) => out.extend_from_slice(&h.serialize()),
            Inner::Sha256(h) => out.extend_from_slice(&h.serialize()),
            Inner::LengthOnly => {}
        }
        out
    }

    /// The state saved for an upload at `offset`; None when it is not one
    /// this build or an earlier one wrote, or covers more than `offset`.
    pub fn restore(algo: ChecksumAlgo, state: &[u8], offset: u64) -> Option<Self> {
        let (len, body) = match state.split_first()? {
            (&STATE_AT_OFFSET, body) => (offset, body),
            (&STATE_WITH_LEN, rest) => {
                let (len, body) = rest.split_first_chunk::<8>()?;
                (u64::from_le_bytes(*len), body)
            }
            _ => return None,
        };
        let inner = match algo {
            ChecksumAlgo::Md5 => {
                let md5 = Md5::restore(body).filter(|md5| md5.hashed_len() == len)?;
                Inner::Md5(md5)
            }
            ChecksumAlgo::Sha1 => Inner::Sha1(restore_state(body)?),
            ChecksumAlgo::Sha256 => Inner::Sha256(restore_state(body)?),
        };
        (len <= offset).then_some(Hasher { inner, len })
    }

    /// The digest of everything fed so far; None when it does not hash.
    pub fn digest(self) -> Option<Vec<u8>> {
        match self.inner {
            Inner::Md5(h) => Some(h.finalize().to_vec()),
            Inner::Sha1(h) => Some(h.finalize().to_vec()),
            Inner::Sha256(h) => Some(h.finalize().to_vec()),
            Inner::LengthOnly => None,
        }
    }

    /// The lower-case hex digest of everything fed so far.
    pub fn hex(self) -> Option<String> {
        self.digest().map(|digest| to_hex(&digest))
    }
}

/// A checksum fed piece by piece off the request's thread: MD5 in the lane
/// service, where there is one; otherwise one piece at a time on the
/// blocking pool. It may outlive the request that opened it, kept for the
/// upload's next chunk, still hashing the last pieces.
pub enum HashFeed {
    Lanes(Feed),
    Pool(Box<PoolFeed>),
    /// Nothing to hash: the bytes are only counted, in place.
    Unhashed(u64),
}

pub struct PoolFeed {
    /// None while `job` runs.
    hasher: Option<Hasher>,
    job: Option<JoinHandle<Hasher>>,
    /// The hasher as of the last job seen done.
    checkpoint: Hasher,
}

fn lanes_stopped() -> EngineError {
    EngineError::Internal("the MD5 lane service stopped".into())
}

impl HashFeed {
    pub fn open(hasher: Hasher) -> HashFeed {
        let hasher = match hasher.inner {
            Inner::Md5(md5) => match Feed::open(md5) {
                Ok(feed) => return HashFeed::Lanes(feed),
                Err(md5) => Hasher::from_md5(md5),
            },
            Inner::LengthOnly => return HashFeed::Unhashed(hasher.len),
            _ => hasher,
        };
        HashFeed::Pool(Box::new(PoolFeed {
            checkpoint: hasher.clone(),
            hasher: Some(hasher),
            job: None,
        }))
    }

    /// Adds the next piece; on the pool, once the previous one is hashed.
    pub async fn push(&mut self, piece: Shared) -> EngineResult<()> {
        match self {
            HashFeed::Lanes(feed) => feed.push(piece),
            HashFeed::Pool(pool) => {
                let mut ready = match pool.job.take() {
                    Some(running) => {
                        let done = running.await.map_err(blocking_failed)?;
                        pool.checkpoint.clone_from(&done);
                        done
                    }
                    None => pool.hasher.take().ok_or_else(|| {
                        EngineError::Internal("hasher missing from its feed".into())
                    })?,
                };
                pool.job = Some(tokio::task::spawn_blocking(move || {
                    ready.update((*piece).as_ref());
                    ready
                }));
            }
            HashFeed::Unhashed(len) => *len += (*piece).as_ref().len() as u64,
        }
        Ok(())
    }

    /// Tells the lane service whether the request waits for its pieces.
    pub fn set_waiting(&self, waiting: bool) {
        if let HashFeed::Lanes(feed) = self {
            feed.set_waiting(waiting);
        }
    }

    /// Tells the lane service that no piece comes until the next request.
    pub fn park(&self) {
        if let HashFeed::Lanes(feed) = self {
            feed.park();
        }
    }

    /// A hasher covering the first bytes pushed, maybe not all of them:
    /// what is saved with a chunk while its last pieces are still hashed.
    pub fn checkpoint(&self) -> EngineResult<Hasher> {
        match self {
            HashFeed::Lanes(feed) => feed
                .checkpoint()
                .map(Hasher::from_md5)
                .ok_or_else(lanes_stopped),
            HashFeed::Pool(pool) => Ok(pool.checkpoint.clone()),
            HashFeed::Unhashed(len) => Ok(Hasher::unhashed(*len)),
        }
    }

    /// The hasher, once every piece is in.
    pub async fn finish(self) -> EngineResult<Hasher> {
        match self {
            HashFeed::Lanes(feed) => feed
                .finish()
                .await
                .map(Hasher::from_md5)
                .map_err(|_| lanes_stopped()),
            HashFeed::Pool(pool) => match pool.job {
                Some(running) => running.await.map_err(blocking_failed),
                None => pool
                    .hasher
                    .ok_or_else(|| EngineError::Internal("hasher missing from its feed".into())),
            },
            HashFeed::Unhashed(len) => Ok(Hasher::unhashed(len)),
        }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_continues_the_same_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algo in [ChecksumAlgo::Md5, ChecksumAlgo::Sha1, ChecksumAlgo::Sha256] {
            let mut whole = Hasher::new(algo);
            whole.update(&data);
            let mut first = Hasher::new(algo);
            first.update(&data[..33_333]);
            let mut resumed = Hasher::restore(algo, &first.save(), 40_000).expect("restores");
            assert_eq!(resumed.hashed_len(), 33_333);
            resumed.update(&data[33_333..]);
            assert_eq!(resumed.hex(), whole.hex());
        }
    }

    #[test]
    fn an_unhashed_upload_counts_its_bytes_and_has_no_digest() {
        let mut hasher = Hasher::unhashed(5);
        hasher.update(b"abc");
        assert_eq!(hasher.hashed_len(), 8);
        assert_eq!(hasher.algo(), None);
        assert_eq!(hasher.clone().digest(), None);
        assert_eq!(hasher.hex(), None);
    }

    #[test]
    fn known_digests() {
        let mut md5 = Hasher::new(ChecksumAlgo::Md5);
        md5.update(b"hello chunked world! 0123456789 the end\n");
        assert_eq!(md5.hex().unwrap(), "6d29a9e5c8ea214320cd61f0fa34a6ce");
        assert_eq!(
            Hasher::new(ChecksumAlgo::Md5).hex().unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn foreign_or_damaged_state_is_refused() {
        let mut hasher = Hasher::new(ChecksumAlgo::Md5);
        hasher.update(b"abc");
        let state = hasher.save();
        let restore = |state: &[u8], offset| Hasher::restore(ChecksumAlgo::Md5, state, offset);
        assert!(restore(&state, 3).is_some());
        assert!(restore(&state[..10], 3).is_none());
        let mut other_format = state.clone();
        other_format[0] = 9;
        assert!(restore(&other_format, 3).is_none());
        assert!(Hasher::restore(ChecksumAlgo::Sha256, &state, 3).is_none());
        // Ahead of the bytes committed, or at odds with the MD5 inside.
        assert!(restore(&state, 2).is_none());
        let mut wrong_len = state.clone();
        wrong_len[1] = 4;
        assert!(restore(&wrong_len, 10).is_none());
    }

    /// A state of an earlier build (format 1) covers the committed offset.
    #[test]
    fn earlier_states_cover_the_offset() {
        let mut md5 = Md5::new();
        md5.update(b"abcd");
        let mut earlier = vec![STATE_AT_OFFSET];
        earlier.extend_from_slice(&md5.save());
        let mut resumed = Hasher::restore(ChecksumAlgo::Md5, &earlier, 4).expect("restores");
        assert_eq!(resumed.hashed_len(), 4);
        resumed.update(b"e");
        let mut whole = Hasher::new(ChecksumAlgo::Md5);
        whole.update(b"abcde");
        assert_eq!(resumed.hex(), whole.hex());
    }
}
