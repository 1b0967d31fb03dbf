//! The vector kernels for x86_64, picked at run time: AVX-512 where the CPU
//! has it, else AVX2 for the kernels that hash many chains at once. Each
//! step of MD5 is `b + rotl(a + f(b, c, d) + m + k, s)`; the kernels for
//! many chains hold one chain per 32-bit lane, with the messages transposed
//! so that each vector holds the same word of all of them.

mod avx2;
mod avx512;
mod scalar;

use super::{word, BLOCK, K};
use std::arch::x86_64::*;
use std::sync::OnceLock;
use std::time::Instant;

/// The rotations of each round, step by step.
const SHIFTS: [[i32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// The 64 steps, in rounds of 16 and groups of 4 that turn the roles of
/// the state words. `$mk(i)` gives the message word plus constant of step i.
/// A step rotates left by its second generic argument; the third is 32
/// minus that, the right shift of a rotation made of two shifts.
macro_rules! rounds {
    ($($step:ident)::+, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident) => {
        rounds!(@round $($step)::+, $mk, $a, $b, $c, $d, 0);
        rounds!(@round $($step)::+, $mk, $a, $b, $c, $d, 1);
        rounds!(@round $($step)::+, $mk, $a, $b, $c, $d, 2);
        rounds!(@round $($step)::+, $mk, $a, $b, $c, $d, 3);
    };
    (@round $($step:ident)::+, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident, $r:tt) => {
        rounds!(@four $($step)::+, $mk, $a, $b, $c, $d, $r, 0);
        rounds!(@four $($step)::+, $mk, $a, $b, $c, $d, $r, 4);
        rounds!(@four $($step)::+, $mk, $a, $b, $c, $d, $r, 8);
        rounds!(@four $($step)::+, $mk, $a, $b, $c, $d, $r, 12);
    };
    (@four $($step:ident)::+, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident, $r:tt, $j:tt) => {
        $a = $($step)::+::<$r, { SHIFTS[$r][0] }, { 32 - SHIFTS[$r][0] }>($a, $b, $c, $d, $mk(16 * $r + $j));
        $d = $($step)::+::<$r, { SHIFTS[$r][1] }, { 32 - SHIFTS[$r][1] }>($d, $a, $b, $c, $mk(16 * $r + $j + 1));
        $c = $($step)::+::<$r, { SHIFTS[$r][2] }, { 32 - SHIFTS[$r][2] }>($c, $d, $a, $b, $mk(16 * $r + $j + 2));
        $b = $($step)::+::<$r, { SHIFTS[$r][3] }, { 32 - SHIFTS[$r][3] }>($b, $c, $d, $a, $mk(16 * $r + $j + 3));
    };
}

/// A kernel hashing `N` chains side by side: it compresses the first
/// `count` blocks of each lane into its state, and panics when a lane has
/// fewer.
pub type Kernel<const N: usize> = unsafe fn(&mut [[u32; 4]; N], [&[[u8; BLOCK]]; N], usize);

/// The kernels for many chains that this CPU runs. Only the lane service
/// runs them; without it (`lanes` off) only `name` is read.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "lanes"), allow(dead_code))]
pub struct Kernels {
    eight: Kernel<8>,
    sixteen: Kernel<16>,
    /// What they are built on, for the log.
    pub name: &'static str,
}

#[cfg_attr(not(feature = "lanes"), allow(dead_code))]
impl Kernels {
    /// The fastest this CPU has; None without AVX2.
    pub fn detect() -> Option<Kernels> {
        if avx512::available() {
            return Some(Kernels {
                eight: avx512::compress_eight,
                sixteen: avx512::compress_sixteen,
                name: "AVX-512",
            });
        }
        avx2::available().then_some(Kernels {
            eight: avx2::compress_eight,
            sixteen: avx2::compress_sixteen,
            name: "AVX2",
        })
    }

    pub fn eight(&self, states: &mut [[u32; 4]; 8], lanes: [&[[u8; BLOCK]]; 8], count: usize) {
        // SAFETY: `detect` only picks kernels this CPU runs.
        unsafe { (self.eight)(states, lanes, count) }
    }

    pub fn sixteen(&self, states: &mut [[u32; 4]; 16], lanes: [&[[u8; BLOCK]]; 16], count: usize) {
        // SAFETY: as in `eight`.
        unsafe { (self.sixteen)(states, lanes, count) }
    }
}

/// A kernel for one chain, and what it runs on, for the log.
#[derive(Clone, Copy)]
struct OneChain {
    compress: fn(&mut [u32; 4], &[[u8; BLOCK]]),
    name: &'static str,
}

static ONE_CHAIN: OnceLock<OneChain> = OnceLock::new();

/// Compresses `blocks` into one state with the faster single-chain kernel
/// of this CPU.
pub fn compress_one(state: &mut [u32; 4], blocks: &[[u8; BLOCK]]) {
    (one_chain().compress)(state, blocks)
}

/// What one chain runs on.
pub fn one_chain_name() -> &'static str {
    one_chain().name
}

/// With AVX-512 one chain runs either in vector registers (`vpternlogd`:
/// four instructions a step) or in general-purpose ones (four or five, but
/// cheaper ones); which is faster depends on the core, so on first use
/// both hash the same 256 KiB, twice each, and the faster is kept (a few
/// milliseconds, once).
fn one_chain() -> OneChain {
    *ONE_CHAIN.get_or_init(|| {
        let general = OneChain {
            compress: scalar::compress_one,
            name: "general-purpose registers",
        };
        if !avx512::available() {
            return general;
        }
        let vector = OneChain {
            compress: |state, blocks| {
                // SAFETY: only picked where the CPU has AVX-512.
                unsafe { avx512::compress_one(state, blocks) }
            },
            name: "AVX-512",
        };
        let sample = vec![[0x5a_u8; BLOCK]; 4096];
        let fastest = |kernel: OneChain| {
            (0..2)
                .map(|_| {
                    let mut state = super::INIT;
                    let began = Instant::now();
                    (kernel.compress)(&mut state, &sample);
                    std::hint::black_box(state);
                    began.elapsed()
                })
                .min()
        };
        if fastest(vector) < fastest(general) {
            vector
        } else {
            general
        }
    })
}

/// A block's sixteen little-endian words, for the single-chain kernels.
#[inline(always)]
fn words(block: &[u8; BLOCK]) -> [u32; 16] {
    std::array::from_fn(|i| {
        u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    })
}

/// `N` chains side by side, one per 32-bit lane of a vector: what the body
/// of a kernel needs of its instruction set.
///
/// # Safety
/// Every method may only run where the CPU has the implementation's
/// instruction set. `block(lanes, n)` reads without bounds checks: every lane
/// must hold more than `n` blocks.
trait Chains<const N: usize> {
    type V: Copy;
    /// Word `w` of every lane's state into one vector, and back.
    unsafe fn load(words: &[u32; N]) -> Self::V;
    unsafe fn store(v: Self::V) -> [u32; N];
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Block `n` of every lane, as `mk` reads it.
    type Block;
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; N], n: usize) -> Self::Block;
    /// The message word of step `i` plus its constant, in every lane.
    unsafe fn mk(block: &Self::Block, i: usize) -> Self::V;
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: Self::V,
        b: Self::V,
        c: Self::V,
        d: Self::V,
        mk: Self::V,
    ) -> Self::V;
}

/// The body of every kernel; inlined into each, which enables the CPU
/// features its `Chains` needs.
///
/// # Safety
/// The CPU has `T`'s instruction set. The lanes' lengths are checked here,
/// before `block` reads them.
#[inline(always)]
unsafe fn chains<T: Chains<N>, const N: usize>(
    states: &mut [[u32; 4]; N],
    lanes: [&[[u8; BLOCK]]; N],
    count: usize,
) {
    assert!(lanes.iter().all(|lane| lane.len() >= count));
    let column = |w: usize| T::load(&std::array::from_fn(|lane| states[lane][w]));
    let (mut a, mut b, mut c, mut d) = (column(0), column(1), column(2), column(3));
    for n in 0..count {
        let block = T::block(&lanes, n);
        let mk = |i: usize| T::mk(&block, i);
        let (a0, b0, c0, d0) = (a, b, c, d);
        rounds!(T::step, mk, a, b, c, d);
        a = T::add(a, a0);
        b = T::add(b, b0);
        c = T::add(c, c0);
        d = T::add(d, d0);
    }
    let words = [a, b, c, d].map(|v| T::store(v));
    for (lane, state) in states.iter_mut().enumerate() {
        *state = std::array::from_fn(|w| words[w][lane]);
    }
}

/// One step of eight chains on 256-bit vectors, with the instructions of
/// an instruction set; the rest of `Chains<8>` is the same for all.
///
/// # Safety
/// `step` may only run where the CPU has the implementation's instruction
/// set (which includes AVX2, for the rest of `Chains<8>`).
trait Step8 {
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: __m256i,
        b: __m256i,
        c: __m256i,
        d: __m256i,
        mk: __m256i,
    ) -> __m256i;
}

impl<T: Step8> Chains<8> for T {
    type V = __m256i;

    #[inline(always)]
    unsafe fn load(words: &[u32; 8]) -> __m256i {
        _mm256_loadu_si256(words.as_ptr().cast())
    }

    #[inline(always)]
    unsafe fn store(v: __m256i) -> [u32; 8] {
        let mut words = [0u32; 8];
        _mm256_storeu_si256(words.as_mut_ptr().cast(), v);
        words
    }

    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    /// Each lane's block as two rows of eight words, transposed: vector
    /// `w` holds word `w` of every lane.
    type Block = [__m256i; 16];

    #[inline(always)]
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; 8], n: usize) -> [__m256i; 16] {
        let half = |offset: usize| {
            transpose8(std::array::from_fn(|lane| {
                _mm256_loadu_si256(lanes[lane].as_ptr().add(n).cast::<u8>().add(offset).cast())
            }))
        };
        let (low, high) = (half(0), half(32));
        std::array::from_fn(|w| if w < 8 { low[w] } else { high[w - 8] })
    }

    #[inline(always)]
    unsafe fn mk(block: &[__m256i; 16], i: usize) -> __m256i {
        _mm256_add_epi32(block[word(i)], _mm256_set1_epi32(K[i] as i32))
    }

    #[inline(always)]
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: __m256i,
        b: __m256i,
        c: __m256i,
        d: __m256i,
        mk: __m256i,
    ) -> __m256i {
        <T as Step8>::step::<R, S, RIGHT>(a, b, c, d, mk)
    }
}

/// Transposes eight rows of eight 32-bit words: word j of row i becomes
/// word i of row j.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // In each 128-bit half h: word 4h + k of rows 0–3 (u0..u3) or 4–7 (u4..u7).
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    /// The AVX-512 chain is only ever picked where the CPU has it, and the
    /// kernel picked hashes as `md-5` does.
    #[test]
    fn one_chain_is_one_this_cpu_runs() {
        let name = one_chain_name();
        if avx512::available() {
            assert!(
                ["AVX-512", "general-purpose registers"].contains(&name),
                "{name}"
            );
        } else {
            assert_eq!(name, "general-purpose registers");
        }
        let data = sample(100 * BLOCK, 13);
        let (blocks, _) = data.as_chunks::<BLOCK>();
        let (mut state, mut expected) = (super::super::INIT, super::super::INIT);
        compress_one(&mut state, blocks);
        ::md5::block_api::compress(&mut expected, blocks);
        assert_eq!(state, expected);
    }

    /// Whether the kernels of `set` (`avx2`, `avx512`) can be tested here.
    /// No emulator in reach runs AVX-512 (QEMU's TCG has none), so a CPU
    /// without it skips those tests, saying so; `CHUNKD_MD5_KERNELS=avx2,avx512`
    /// turns a skip of a kernel it names into a failure.
    pub(super) fn cpu_runs(set: &str, available: bool) -> bool {
        let required = std::env::var("CHUNKD_MD5_KERNELS").unwrap_or_default();
        if !available {
            assert!(
                !required.split(',').any(|name| name.trim() == set),
                "CHUNKD_MD5_KERNELS requires {set}, which this CPU lacks"
            );
            eprintln!("skipped: this CPU has no {set}");
        }
        available
    }

    /// `N` chains at once, one of which starts from a state of its own,
    /// against the scalar kernel chain by chain.
    pub(super) fn chains_match_the_scalar_kernel<const N: usize>(kernel: Kernel<N>) {
        let count = 30;
        let data: Vec<Vec<u8>> = (0..N)
            .map(|lane| sample((count + lane) * BLOCK, (N + lane) as u32))
            .collect();
        let lanes: [&[[u8; BLOCK]]; N] =
            std::array::from_fn(|lane| data[lane].as_chunks::<BLOCK>().0);
        let start = |lane: usize| {
            if lane == N / 2 {
                [5, 6, 7, 8]
            } else {
                super::super::INIT
            }
        };
        let mut states: [[u32; 4]; N] = std::array::from_fn(start);
        // SAFETY: the callers check that the CPU runs the kernel first.
        unsafe { kernel(&mut states, lanes, count) };
        for (lane, state) in states.iter().enumerate() {
            let mut expected = start(lane);
            ::md5::block_api::compress(&mut expected, &lanes[lane][..count]);
            assert_eq!(*state, expected, "lane {lane} of {N}");
        }
    }
}
