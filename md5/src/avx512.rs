//! MD5 compression with AVX-512 (AVX512F and AVX512VL, on 128- and 256-bit
//! vectors). Each step of MD5 is `b + rotl(a + f(b, c, d) + m + k, s)`; here
//! `f` is one `vpternlogd`, the rotation one `vprold`, and `m + k` is added
//! to `a` off the critical path, which leaves four one-cycle instructions
//! per step. `compress_one` runs a single chain in lane 0 of a vector;
//! `compress_eight` runs eight independent chains, one per 32-bit lane, with
//! the eight messages transposed so that each vector holds the same word of
//! all of them.

use super::{word, BLOCK, K};
use std::arch::x86_64::*;

/// The rotations of each round, step by step.
const SHIFTS: [[i32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// A kernel hashing `N` chains side by side (`compress_eight`,
/// `compress_sixteen`).
pub type Kernel<const N: usize> = unsafe fn(&mut [[u32; 4]; N], [&[[u8; BLOCK]]; N], usize);

/// Whether this CPU runs the kernels here.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// The 64 steps, in rounds of 16 and groups of 4 that turn the roles of
/// the state words. `$mk(i)` gives the message word plus constant of step i.
macro_rules! rounds {
    ($step:ident, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident) => {
        rounds!(@round $step, $mk, $a, $b, $c, $d, 0);
        rounds!(@round $step, $mk, $a, $b, $c, $d, 1);
        rounds!(@round $step, $mk, $a, $b, $c, $d, 2);
        rounds!(@round $step, $mk, $a, $b, $c, $d, 3);
    };
    (@round $step:ident, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident, $r:tt) => {
        rounds!(@four $step, $mk, $a, $b, $c, $d, $r, 0);
        rounds!(@four $step, $mk, $a, $b, $c, $d, $r, 4);
        rounds!(@four $step, $mk, $a, $b, $c, $d, $r, 8);
        rounds!(@four $step, $mk, $a, $b, $c, $d, $r, 12);
    };
    (@four $step:ident, $mk:expr, $a:ident, $b:ident, $c:ident, $d:ident, $r:tt, $j:tt) => {
        $a = $step::<$r, { SHIFTS[$r][0] }>($a, $b, $c, $d, $mk(16 * $r + $j));
        $d = $step::<$r, { SHIFTS[$r][1] }>($d, $a, $b, $c, $mk(16 * $r + $j + 1));
        $c = $step::<$r, { SHIFTS[$r][2] }>($c, $d, $a, $b, $mk(16 * $r + $j + 2));
        $b = $step::<$r, { SHIFTS[$r][3] }>($b, $c, $d, $a, $mk(16 * $r + $j + 3));
    };
}

/// The truth tables of the round functions for `vpternlogd`, whose
/// operands are (b, c, d) except in round 1, (d, b, c):
/// F = b ? c : d, G = d ? b : c, H = b ^ c ^ d, I = c ^ (b | !d).
const SELECT: i32 = 0xCA;
const PARITY: i32 = 0x96;
const ROUND_I: i32 = 0x39;

/// One step on 128-bit vectors (only lane 0 matters to `compress_one`).
#[inline(always)]
unsafe fn step1<const R: usize, const S: i32>(
    a: __m128i,
    b: __m128i,
    c: __m128i,
    d: __m128i,
    mk: __m128i,
) -> __m128i {
    let f = match R {
        0 => _mm_ternarylogic_epi32::<SELECT>(b, c, d),
        1 => _mm_ternarylogic_epi32::<SELECT>(d, b, c),
        2 => _mm_ternarylogic_epi32::<PARITY>(b, c, d),
        _ => _mm_ternarylogic_epi32::<ROUND_I>(b, c, d),
    };
    _mm_add_epi32(
        b,
        _mm_rol_epi32::<S>(_mm_add_epi32(_mm_add_epi32(a, mk), f)),
    )
}

/// One step on 256-bit vectors: eight chains at once.
#[inline(always)]
unsafe fn step8<const R: usize, const S: i32>(
    a: __m256i,
    b: __m256i,
    c: __m256i,
    d: __m256i,
    mk: __m256i,
) -> __m256i {
    let f = match R {
        0 => _mm256_ternarylogic_epi32::<SELECT>(b, c, d),
        1 => _mm256_ternarylogic_epi32::<SELECT>(d, b, c),
        2 => _mm256_ternarylogic_epi32::<PARITY>(b, c, d),
        _ => _mm256_ternarylogic_epi32::<ROUND_I>(b, c, d),
    };
    _mm256_add_epi32(
        b,
        _mm256_rol_epi32::<S>(_mm256_add_epi32(_mm256_add_epi32(a, mk), f)),
    )
}

/// Compresses `blocks` into one state.
///
/// # Safety
/// The CPU must have AVX512F and AVX512VL (`available`).
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn compress_one(state: &mut [u32; 4], blocks: &[[u8; BLOCK]]) {
    let [mut a, mut b, mut c, mut d] = state.map(|w| _mm_cvtsi32_si128(w as i32));
    for block in blocks {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let mk = |i: usize| _mm_cvtsi32_si128(m[word(i)].wrapping_add(K[i]) as i32);
        let (a0, b0, c0, d0) = (a, b, c, d);
        rounds!(step1, mk, a, b, c, d);
        a = _mm_add_epi32(a, a0);
        b = _mm_add_epi32(b, b0);
        c = _mm_add_epi32(c, c0);
        d = _mm_add_epi32(d, d0);
    }
    *state = [a, b, c, d].map(|v| _mm_cvtsi128_si32(v) as u32);
}

/// Transposes eight rows of eight 32-bit words: word j of row i becomes
/// word i of row j.
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

/// Compresses the first `count` blocks of each lane into its state: eight
/// independent MD5 chains at once.
///
/// # Safety
/// The CPU must have AVX512F and AVX512VL (`available`).
///
/// # Panics
/// When a lane has fewer than `count` blocks.
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn compress_eight(states: &mut [[u32; 4]; 8], lanes: [&[[u8; BLOCK]]; 8], count: usize) {
    assert!(lanes.iter().all(|lane| lane.len() >= count));
    let column = |w: usize| {
        let words: [u32; 8] = std::array::from_fn(|lane| states[lane][w]);
        _mm256_loadu_si256(words.as_ptr().cast())
    };
    let (mut a, mut b, mut c, mut d) = (column(0), column(1), column(2), column(3));
    for n in 0..count {
        // Each lane's block as two rows of eight words.
        let half = |offset: usize| {
            transpose8(std::array::from_fn(|lane| {
                _mm256_loadu_si256(lanes[lane].as_ptr().add(n).cast::<u8>().add(offset).cast())
            }))
        };
        let (low, high) = (half(0), half(32));
        let mk = |i: usize| {
            let w = word(i);
            let m = if w < 8 { low[w] } else { high[w - 8] };
            _mm256_add_epi32(m, _mm256_set1_epi32(K[i] as i32))
        };
        let (a0, b0, c0, d0) = (a, b, c, d);
        rounds!(step8, mk, a, b, c, d);
        a = _mm256_add_epi32(a, a0);
        b = _mm256_add_epi32(b, b0);
        c = _mm256_add_epi32(c, c0);
        d = _mm256_add_epi32(d, d0);
    }
    let mut words = [[0u32; 8]; 4];
    for (out, v) in words.iter_mut().zip([a, b, c, d]) {
        _mm256_storeu_si256(out.as_mut_ptr().cast(), v);
    }
    for (lane, state) in states.iter_mut().enumerate() {
        *state = std::array::from_fn(|w| words[w][lane]);
    }
}

/// One step on 512-bit vectors: sixteen chains at once.
#[inline(always)]
unsafe fn step16<const R: usize, const S: i32>(
    a: __m512i,
    b: __m512i,
    c: __m512i,
    d: __m512i,
    mk: __m512i,
) -> __m512i {
    let f = match R {
        0 => _mm512_ternarylogic_epi32::<SELECT>(b, c, d),
        1 => _mm512_ternarylogic_epi32::<SELECT>(d, b, c),
        2 => _mm512_ternarylogic_epi32::<PARITY>(b, c, d),
        _ => _mm512_ternarylogic_epi32::<ROUND_I>(b, c, d),
    };
    _mm512_add_epi32(
        b,
        _mm512_rol_epi32::<S>(_mm512_add_epi32(_mm512_add_epi32(a, mk), f)),
    )
}

/// Transposes sixteen rows of sixteen 32-bit words.
#[inline(always)]
unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // Pairs of rows interleaved by word, then by pairs of words: in each
    // 128-bit quarter q, u[4g + k] holds word 4q + k of rows 4g..4g + 3.
    let t: [__m512i; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    let u: [__m512i; 16] = std::array::from_fn(|i| {
        let (g, k) = (i / 4, i % 4);
        let (lo, hi) = (t[4 * g + k / 2], t[4 * g + 2 + k / 2]);
        if k % 2 == 0 {
            _mm512_unpacklo_epi64(lo, hi)
        } else {
            _mm512_unpackhi_epi64(lo, hi)
        }
    });
    let mut out = [_mm512_setzero_si512(); 16];
    for k in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x88>(u[k], u[4 + k]);
        let v1 = _mm512_shuffle_i32x4::<0xDD>(u[k], u[4 + k]);
        let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + k], u[12 + k]);
        let v3 = _mm512_shuffle_i32x4::<0xDD>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        out[8 + k] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        out[4 + k] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        out[12 + k] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
    out
}

/// `compress_eight` for sixteen chains, on 512-bit vectors.
///
/// # Safety
/// The CPU must have AVX512F and AVX512VL (`available`).
///
/// # Panics
/// When a lane has fewer than `count` blocks.
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn compress_sixteen(
    states: &mut [[u32; 4]; 16],
    lanes: [&[[u8; BLOCK]]; 16],
    count: usize,
) {
    assert!(lanes.iter().all(|lane| lane.len() >= count));
    let column = |w: usize| {
        let words: [u32; 16] = std::array::from_fn(|lane| states[lane][w]);
        _mm512_loadu_si512(words.as_ptr().cast())
    };
    let (mut a, mut b, mut c, mut d) = (column(0), column(1), column(2), column(3));
    for n in 0..count {
        let m = transpose16(std::array::from_fn(|lane| {
            _mm512_loadu_si512(lanes[lane].as_ptr().add(n).cast())
        }));
        let mk = |i: usize| _mm512_add_epi32(m[word(i)], _mm512_set1_epi32(K[i] as i32));
        let (a0, b0, c0, d0) = (a, b, c, d);
        rounds!(step16, mk, a, b, c, d);
        a = _mm512_add_epi32(a, a0);
        b = _mm512_add_epi32(b, b0);
        c = _mm512_add_epi32(c, c0);
        d = _mm512_add_epi32(d, d0);
    }
    let mut words = [[0u32; 16]; 4];
    for (out, v) in words.iter_mut().zip([a, b, c, d]) {
        _mm512_storeu_si512(out.as_mut_ptr().cast(), v);
    }
    for (lane, state) in states.iter_mut().enumerate() {
        *state = std::array::from_fn(|w| words[w][lane]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn scalar(blocks: &[[u8; BLOCK]]) -> [u32; 4] {
        let mut state = super::super::INIT;
        ::md5::block_api::compress(&mut state, blocks);
        state
    }

    #[test]
    fn one_chain_matches_the_scalar_kernel() {
        if !available() {
            eprintln!("no AVX-512 here: nothing to compare");
            return;
        }
        let data = sample(200 * BLOCK, 11);
        let (blocks, _) = data.as_chunks::<BLOCK>();
        let mut state = super::super::INIT;
        // SAFETY: checked above.
        unsafe { compress_one(&mut state, blocks) };
        assert_eq!(state, scalar(blocks));
    }

    /// `N` chains at once, one of which starts from a state of its own,
    /// against the scalar kernel chain by chain.
    fn chains_match_the_scalar_kernel<const N: usize>(kernel: Kernel<N>) {
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
        // SAFETY: the callers check `available()` first.
        unsafe { kernel(&mut states, lanes, count) };
        for (lane, state) in states.iter().enumerate() {
            let mut expected = start(lane);
            ::md5::block_api::compress(&mut expected, &lanes[lane][..count]);
            assert_eq!(*state, expected, "lane {lane} of {N}");
        }
    }

    #[test]
    fn eight_and_sixteen_chains_match_the_scalar_kernel_each() {
        if !available() {
            eprintln!("no AVX-512 here: nothing to compare");
            return;
        }
        chains_match_the_scalar_kernel::<8>(compress_eight);
        chains_match_the_scalar_kernel::<16>(compress_sixteen);
    }
}
