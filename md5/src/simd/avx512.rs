//! MD5 compression with AVX-512 (AVX512F and AVX512VL, on 128-, 256- and
//! 512-bit vectors): `f` is one `vpternlogd`, the rotation one `vprold`, and
//! `m + k` is added to `a` off the critical path, which leaves four
//! one-cycle instructions per step. `compress_one` runs a single chain in
//! lane 0 of a vector, the others eight or sixteen chains.

use super::{chains, Chains, Step8};
use crate::{word, BLOCK, K};
use std::arch::x86_64::*;

/// Whether this CPU runs the kernels here.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// The truth tables of the round functions for `vpternlogd`, whose
/// operands are (b, c, d) except in round 1, (d, b, c):
/// F = b ? c : d, G = d ? b : c, H = b ^ c ^ d, I = c ^ (b | !d).
const SELECT: i32 = 0xCA;
const PARITY: i32 = 0x96;
const ROUND_I: i32 = 0x39;

/// One step on one width of vector, from that width's `vpternlogd`,
/// addition and `vprold`.
macro_rules! ternary_step {
    ($vector:ty, $ternary:ident, $add:ident, $rol:ident) => {
        #[inline(always)]
        unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
            a: $vector,
            b: $vector,
            c: $vector,
            d: $vector,
            mk: $vector,
        ) -> $vector {
            let f = match R {
                0 => $ternary::<SELECT>(b, c, d),
                1 => $ternary::<SELECT>(d, b, c),
                2 => $ternary::<PARITY>(b, c, d),
                _ => $ternary::<ROUND_I>(b, c, d),
            };
            $add(b, $rol::<S>($add($add(a, mk), f)))
        }
    };
}

/// One chain, in lane 0 of 128-bit vectors.
struct One;

impl Chains<1> for One {
    type V = __m128i;

    #[inline(always)]
    unsafe fn load(words: &[u32; 1]) -> __m128i {
        _mm_cvtsi32_si128(words[0] as i32)
    }

    #[inline(always)]
    unsafe fn store(v: __m128i) -> [u32; 1] {
        [_mm_cvtsi128_si32(v) as u32]
    }

    #[inline(always)]
    unsafe fn add(a: __m128i, b: __m128i) -> __m128i {
        _mm_add_epi32(a, b)
    }

    /// The block's words, in general-purpose registers: their constants
    /// are added there.
    type Block = [u32; 16];

    #[inline(always)]
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; 1], n: usize) -> [u32; 16] {
        super::words(&lanes[0][n])
    }

    #[inline(always)]
    unsafe fn mk(block: &[u32; 16], i: usize) -> __m128i {
        _mm_cvtsi32_si128(block[word(i)].wrapping_add(K[i]) as i32)
    }

    ternary_step!(
        __m128i,
        _mm_ternarylogic_epi32,
        _mm_add_epi32,
        _mm_rol_epi32
    );
}

/// Eight chains at once on 256-bit vectors.
struct Avx512;

impl Step8 for Avx512 {
    ternary_step!(
        __m256i,
        _mm256_ternarylogic_epi32,
        _mm256_add_epi32,
        _mm256_rol_epi32
    );
}

/// Compresses `blocks` into one state.
///
/// # Safety
/// The CPU must have AVX512F and AVX512VL (`available`).
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn compress_one(state: &mut [u32; 4], blocks: &[[u8; BLOCK]]) {
    chains::<One, 1>(std::array::from_mut(state), [blocks], blocks.len());
}

/// Eight chains at once (a `Kernel`).
///
/// # Safety
/// The CPU must have AVX512F and AVX512VL (`available`).
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn compress_eight(states: &mut [[u32; 4]; 8], lanes: [&[[u8; BLOCK]]; 8], count: usize) {
    chains::<Avx512, 8>(states, lanes, count);
}

/// Sixteen chains at once on 512-bit vectors.
struct Sixteen;

impl Chains<16> for Sixteen {
    type V = __m512i;

    #[inline(always)]
    unsafe fn load(words: &[u32; 16]) -> __m512i {
        _mm512_loadu_si512(words.as_ptr().cast())
    }

    #[inline(always)]
    unsafe fn store(v: __m512i) -> [u32; 16] {
        let mut words = [0u32; 16];
        _mm512_storeu_si512(words.as_mut_ptr().cast(), v);
        words
    }

    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }

    /// Each lane's block as a row of sixteen words, transposed.
    type Block = [__m512i; 16];

    #[inline(always)]
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; 16], n: usize) -> [__m512i; 16] {
        transpose16(std::array::from_fn(|lane| {
            _mm512_loadu_si512(lanes[lane].as_ptr().add(n).cast())
        }))
    }

    #[inline(always)]
    unsafe fn mk(block: &[__m512i; 16], i: usize) -> __m512i {
        _mm512_add_epi32(block[word(i)], _mm512_set1_epi32(K[i] as i32))
    }

    ternary_step!(
        __m512i,
        _mm512_ternarylogic_epi32,
        _mm512_add_epi32,
        _mm512_rol_epi32
    );
}

/// Transposes sixteen rows of sixteen 32-bit words.
///
/// # Safety
/// The CPU has AVX512F.
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

/// Sixteen chains at once, on 512-bit vectors (a `Kernel`).
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
    chains::<Sixteen, 16>(states, lanes, count);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chains_match_the_scalar_kernel, cpu_runs};
    use super::*;
    use crate::tests::sample;

    #[test]
    fn one_chain_matches_the_scalar_kernel() {
        if !cpu_runs("avx512", available()) {
            return;
        }
        let data = sample(200 * BLOCK, 11);
        let (blocks, _) = data.as_chunks::<BLOCK>();
        let mut state = crate::INIT;
        // SAFETY: checked above.
        unsafe { compress_one(&mut state, blocks) };
        let mut expected = crate::INIT;
        ::md5::block_api::compress(&mut expected, blocks);
        assert_eq!(state, expected);
    }

    #[test]
    fn eight_and_sixteen_chains_match_the_scalar_kernel_each() {
        if !cpu_runs("avx512", available()) {
            return;
        }
        chains_match_the_scalar_kernel::<8>(compress_eight);
        chains_match_the_scalar_kernel::<16>(compress_sixteen);
    }
}
