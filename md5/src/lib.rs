//! MD5, the checksum drf-chunked-upload clients send, as fast as this CPU
//! allows. MD5 is one long chain of dependent steps, so a plain
//! implementation is bound by the latency of each step; with AVX-512 a step
//! is four one-cycle instructions (`vpternlogd` computes the round function
//! in one); in general-purpose registers the steps are written in assembly
//! that leaves four or five instructions on the chain per step
//! (`simd/scalar.rs`). Both beat the `md-5` crate's scalar code, whose order
//! is left to LLVM (docs/benchmarks/tuning.md). With AVX-512 the faster of the two is picked at first use. And
//! since many uploads at once are independent chains, the lane service
//! (`lanes.rs`) runs up to sixteen of them side by side in vectors, with
//! AVX-512 or, on CPUs without it, AVX2 (`simd/`).
//!
//! The state saves to the same 88 bytes as `md-5` 0.11's `Md5`, so states
//! saved by earlier builds keep working.

#[cfg(feature = "lanes")]
mod lanes;
#[cfg(target_arch = "x86_64")]
mod simd;

#[cfg(feature = "lanes")]
pub use lanes::{Feed, Shared, Stopped};

/// On other CPUs there are no vector kernels, and MD5 runs on the scalar
/// code of `md-5`.
#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::BLOCK;

    #[derive(Clone, Copy)]
    pub struct Kernels {
        pub name: &'static str,
    }

    impl Kernels {
        pub fn detect() -> Option<Kernels> {
            None
        }

        pub fn eight(&self, _: &mut [[u32; 4]; 8], _: [&[[u8; BLOCK]]; 8], _: usize) {
            unreachable!("no vector kernels on this CPU")
        }

        pub fn sixteen(&self, _: &mut [[u32; 4]; 16], _: [&[[u8; BLOCK]]; 16], _: usize) {
            unreachable!("no vector kernels on this CPU")
        }
    }

    pub fn compress_one(state: &mut [u32; 4], blocks: &[[u8; BLOCK]]) {
        ::md5::block_api::compress(state, blocks);
    }

    pub fn one_chain_name() -> &'static str {
        "md-5's code"
    }
}

/// The instruction set the lane service hashes many uploads with; None
/// where it has none and each upload hashes on its own.
pub fn vector_kernels() -> Option<&'static str> {
    simd::Kernels::detect().map(|kernels| kernels.name)
}

/// What one upload's MD5 runs on; the first call picks it (see
/// `simd::one_chain`).
pub fn one_chain_kernel() -> &'static str {
    simd::one_chain_name()
}

/// The bytes of one compression block.
pub const BLOCK: usize = 64;

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The additive constants of RFC 1321: the integer part of
/// `abs(sin(i + 1)) * 2^32` (checked in a test).
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The message word that step `i` adds.
const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// Bytes of a saved state: the four state words and the block count (as
/// `md-5`'s core), then the length of the pending block and its bytes,
/// zero-padded (as `block-buffer`'s eager buffer).
pub const SAVED_LEN: usize = 16 + 8 + BLOCK;

/// A running MD5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Md5 {
    state: [u32; 4],
    /// Whole blocks compressed so far.
    blocks: u64,
    /// The bytes of the block being gathered, `pending_len` of them.
    pending: [u8; BLOCK],
    pending_len: usize,
}

impl Default for Md5 {
    fn default() -> Self {
        Md5 {
            state: INIT,
            blocks: 0,
            pending: [0; BLOCK],
            pending_len: 0,
        }
    }
}

impl Md5 {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes it has hashed.
    pub fn hashed_len(&self) -> u64 {
        self.blocks.wrapping_mul(BLOCK as u64) + self.pending_len as u64
    }

    pub fn update(&mut self, data: &[u8]) {
        let rest = self.complete_pending(data);
        let (blocks, tail) = rest.as_chunks::<BLOCK>();
        self.compress_blocks(blocks);
        self.keep_tail(tail);
    }

    /// Tops up the pending block from `data` and compresses it once full;
    /// returns the rest of `data`.
    fn complete_pending<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        if self.pending_len == 0 {
            return data;
        }
        let take = (BLOCK - self.pending_len).min(data.len());
        self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
        self.pending_len += take;
        if self.pending_len == BLOCK {
            let block = self.pending;
            self.compress_blocks(&[block]);
            self.pending_len = 0;
        }
        &data[take..]
    }

    fn compress_blocks(&mut self, blocks: &[[u8; BLOCK]]) {
        simd::compress_one(&mut self.state, blocks);
        self.blocks = self.blocks.wrapping_add(blocks.len() as u64);
    }

    /// Keeps the bytes after the last whole block; only called once the
    /// pending block is empty.
    fn keep_tail(&mut self, tail: &[u8]) {
        debug_assert!(self.pending_len == 0 || tail.is_empty());
        self.pending[self.pending_len..self.pending_len + tail.len()].copy_from_slice(tail);
        self.pending_len += tail.len();
    }

    pub fn finalize(mut self) -> [u8; 16] {
        let bits = (self.blocks.wrapping_mul(BLOCK as u64))
            .wrapping_add(self.pending_len as u64)
            .wrapping_mul(8);
        let mut padding = [0u8; 2 * BLOCK];
        padding[0] = 0x80;
        // Up to 56 bytes into a block, then the length in bits.
        let zeros = (BLOCK + 56 - 1 - self.pending_len % BLOCK) % BLOCK;
        let end = 1 + zeros;
        padding[end..end + 8].copy_from_slice(&bits.to_le_bytes());
        self.update(&padding[..end + 8]);
        debug_assert_eq!(self.pending_len, 0);
        let mut digest = [0u8; 16];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_le_bytes());
        }
        digest
    }

    pub fn save(&self) -> [u8; SAVED_LEN] {
        let mut out = [0u8; SAVED_LEN];
        for (slot, word) in out[..16].chunks_exact_mut(4).zip(self.state) {
            slot.copy_from_slice(&word.to_le_bytes());
        }
        out[16..24].copy_from_slice(&self.blocks.to_le_bytes());
        // The length always fits: it stays below a block.
        out[24] = self.pending_len as u8;
        out[25..25 + self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        out
    }

    /// None unless `saved` is exactly what `save` writes.
    pub fn restore(saved: &[u8]) -> Option<Self> {
        let saved: &[u8; SAVED_LEN] = saved.try_into().ok()?;
        let pending_len = usize::from(saved[24]);
        if pending_len >= BLOCK || saved[25 + pending_len..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut state = [0u32; 4];
        for (word, bytes) in state.iter_mut().zip(saved[..16].chunks_exact(4)) {
            *word = u32::from_le_bytes(bytes.try_into().ok()?);
        }
        let mut pending = [0u8; BLOCK];
        pending[..pending_len].copy_from_slice(&saved[25..25 + pending_len]);
        Some(Md5 {
            state,
            blocks: u64::from_le_bytes(saved[16..24].try_into().ok()?),
            pending,
            pending_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use digest::common::hazmat::SerializableState;
    use digest::Digest;

    /// Bytes that do not repeat within a block.
    pub(super) fn sample(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn constants_are_rfc_1321s() {
        for (i, k) in K.iter().enumerate() {
            let expected = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32;
            assert_eq!(*k, expected, "K[{i}]");
        }
    }

    #[test]
    fn digests_match_md5_crate_at_every_length_and_split() {
        let data = sample(3 * BLOCK + 7, 1);
        for len in 0..data.len() {
            let expected = ::md5::Md5::digest(&data[..len]);
            let mut whole = Md5::new();
            whole.update(&data[..len]);
            assert_eq!(whole.finalize()[..], expected[..], "length {len}");
            for split in [1, 63, 64, 65, len / 2] {
                let split = split.min(len);
                let mut parts = Md5::new();
                parts.update(&data[..split]);
                parts.update(&data[split..len]);
                assert_eq!(
                    parts.finalize()[..],
                    expected[..],
                    "length {len} split {split}"
                );
            }
        }
    }

    /// A seeded generator of the cases below.
    pub(super) struct Cases(u64);

    impl Cases {
        pub(super) fn new(seed: u64) -> Self {
            Cases(seed)
        }

        /// A number below `bound`.
        pub(super) fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % bound as u64) as usize
        }

        /// Up to five cut points of `0..len`, in order.
        pub(super) fn cuts(&mut self, len: usize) -> Vec<usize> {
            let mut cuts: Vec<usize> = (0..self.below(6)).map(|_| self.below(len + 1)).collect();
            cuts.sort_unstable();
            cuts
        }
    }

    /// Thousands of seeded cases: random lengths fed in random pieces, and
    /// states saved and restored at random points, against `md-5`.
    #[test]
    fn random_lengths_splits_and_saved_states_match_md5_crate() {
        let data = sample(40_000, 7);
        let mut cases = Cases::new(0x5eed);
        for case in 0..3000 {
            let len = cases.below(data.len() + 1);
            let expected = ::md5::Md5::digest(&data[..len]);
            let mut ours = Md5::new();
            let mut at = 0;
            for cut in cases.cuts(len) {
                ours.update(&data[at..cut]);
                at = cut;
                if cases.below(3) == 0 {
                    ours = Md5::restore(&ours.save()).expect("a saved state restores");
                }
            }
            ours.update(&data[at..len]);
            assert_eq!(
                ours.finalize()[..],
                expected[..],
                "case {case}: length {len}"
            );
        }
    }

    #[test]
    fn large_input_matches_md5_crate() {
        let data = sample(5 << 20, 2);
        let mut ours = Md5::new();
        for piece in data.chunks(100_003) {
            ours.update(piece);
        }
        assert_eq!(ours.finalize()[..], ::md5::Md5::digest(&data)[..]);
    }

    #[test]
    fn saves_exactly_what_md5_crate_serializes() {
        let data = sample(1000, 3);
        for len in [0, 1, 63, 64, 65, 127, 128, 999] {
            let mut ours = Md5::new();
            ours.update(&data[..len]);
            let mut theirs = ::md5::Md5::new();
            theirs.update(&data[..len]);
            assert_eq!(ours.save()[..], theirs.serialize()[..], "length {len}");
            let mut restored = Md5::restore(&theirs.serialize()).expect("restores");
            assert_eq!(restored, ours);
            restored.update(&data[len..]);
            assert_eq!(restored.finalize()[..], ::md5::Md5::digest(&data)[..]);
        }
    }

    #[test]
    fn restore_refuses_what_save_never_writes() {
        let mut hasher = Md5::new();
        hasher.update(b"abc");
        let saved = hasher.save();
        assert!(Md5::restore(&saved[..SAVED_LEN - 1]).is_none());
        let mut long_pending = saved;
        long_pending[24] = 64;
        assert!(Md5::restore(&long_pending).is_none());
        let mut stray_byte = saved;
        stray_byte[SAVED_LEN - 1] = 1;
        assert!(Md5::restore(&stray_byte).is_none());
    }
}
