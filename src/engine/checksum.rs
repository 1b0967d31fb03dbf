//! Running checksums whose state is saved with every committed offset, so
//! that completion costs the same for 1 KB and 100 GB.

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

/// Leads every saved state: the layout of RustCrypto's 0.11 hashers (which
/// `chunkd_md5::Md5` keeps). A state of another layout is not trusted; the
/// part file is re-hashed.
const STATE_FORMAT: u8 = 1;

#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

fn tagged(state: &[u8]) -> Vec<u8> {
    let mut out = vec![STATE_FORMAT];
    out.extend_from_slice(state);
    out
}

fn restore_state<H: SerializableState>(state: &[u8]) -> Option<H> {
    let serialized = SerializedState::<H>::try_from(state).ok()?;
    H::deserialize(&serialized).ok()
}

impl Hasher {
    pub fn new(algo: ChecksumAlgo) -> Self {
        match algo {
            ChecksumAlgo::Md5 => Hasher::Md5(Md5::new()),
            ChecksumAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => tagged(&h.save()),
            Hasher::Sha1(h) => tagged(&h.serialize()),
            Hasher::Sha256(h) => tagged(&h.serialize()),
        }
    }

    /// None when the state is not one this build wrote.
    pub fn restore(algo: ChecksumAlgo, state: &[u8]) -> Option<Self> {
        let state = match state.split_first() {
            Some((&STATE_FORMAT, body)) => body,
            _ => return None,
        };
        match algo {
            ChecksumAlgo::Md5 => Md5::restore(state).map(Hasher::Md5),
            ChecksumAlgo::Sha1 => restore_state(state).map(Hasher::Sha1),
            ChecksumAlgo::Sha256 => restore_state(state).map(Hasher::Sha256),
        }
    }

    /// The digest of everything fed so far.
    pub fn digest(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }

    /// The lower-case hex digest of everything fed so far.
    pub fn hex(self) -> String {
        to_hex(&self.digest())
    }
}

/// A checksum fed piece by piece off the request's thread: MD5 in the lane
/// service, where there is one; otherwise one piece at a time on the
/// blocking pool.
pub enum HashFeed {
    Lanes(Feed),
    Pool {
        /// None while `job` runs.
        hasher: Option<Hasher>,
        job: Option<JoinHandle<Hasher>>,
    },
}

fn lanes_stopped() -> EngineError {
    EngineError::Internal("the MD5 lane service stopped".into())
}

impl HashFeed {
    pub fn open(hasher: Hasher) -> HashFeed {
        let hasher = match hasher {
            Hasher::Md5(md5) => match Feed::open(md5) {
                Ok(feed) => return HashFeed::Lanes(feed),
                Err(md5) => Hasher::Md5(md5),
            },
            other => other,
        };
        HashFeed::Pool {
            hasher: Some(hasher),
            job: None,
        }
    }

    /// Adds the next piece; on the pool, once the previous one is hashed.
    pub async fn push(&mut self, piece: Shared) -> EngineResult<()> {
        match self {
            HashFeed::Lanes(feed) => feed.push(piece),
            HashFeed::Pool { hasher, job } => {
                let mut ready = match job.take() {
                    Some(running) => running.await.map_err(blocking_failed)?,
                    None => hasher.take().ok_or_else(|| {
                        EngineError::Internal("hasher missing from its feed".into())
                    })?,
                };
                *job = Some(tokio::task::spawn_blocking(move || {
                    ready.update((*piece).as_ref());
                    ready
                }));
            }
        }
        Ok(())
    }

    /// Tells the lane service whether the request waits for its pieces.
    pub fn set_waiting(&self, waiting: bool) {
        if let HashFeed::Lanes(feed) = self {
            feed.set_waiting(waiting);
        }
    }

    /// The hasher, once every piece is in.
    pub async fn finish(self) -> EngineResult<Hasher> {
        match self {
            HashFeed::Lanes(feed) => feed
                .finish()
                .await
                .map(Hasher::Md5)
                .map_err(|_| lanes_stopped()),
            HashFeed::Pool { hasher, job } => match job {
                Some(running) => running.await.map_err(blocking_failed),
                None => hasher
                    .ok_or_else(|| EngineError::Internal("hasher missing from its feed".into())),
            },
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
            let mut resumed = Hasher::restore(algo, &first.save()).expect("restores");
            resumed.update(&data[33_333..]);
            assert_eq!(resumed.hex(), whole.hex());
        }
    }

    #[test]
    fn known_digests() {
        let mut md5 = Hasher::new(ChecksumAlgo::Md5);
        md5.update(b"hello chunked world! 0123456789 the end\n");
        assert_eq!(md5.hex(), "6d29a9e5c8ea214320cd61f0fa34a6ce");
        assert_eq!(
            Hasher::new(ChecksumAlgo::Md5).hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn foreign_or_damaged_state_is_refused() {
        let state = Hasher::new(ChecksumAlgo::Md5).save();
        assert!(Hasher::restore(ChecksumAlgo::Md5, &state[..10]).is_none());
        let mut other_format = state.clone();
        other_format[0] = 9;
        assert!(Hasher::restore(ChecksumAlgo::Md5, &other_format).is_none());
        assert!(Hasher::restore(ChecksumAlgo::Sha256, &state).is_none());
    }
}
