//! MD5 of eight or sixteen chains at once with AVX2, for CPUs without
//! AVX-512. AVX2 has neither a three-input logic instruction nor a rotate:
//! each round function takes one or two instructions after `b` (the ones
//! on `c` and `d`, which are ready early, run off the critical path) and a
//! rotation two. Sixteen chains run as two groups of eight, interleaved.

use super::{chains, Chains, Step8};
use crate::BLOCK;
use std::arch::x86_64::*;

/// Whether this CPU runs the kernels here.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

struct Avx2;

impl Step8 for Avx2 {
    #[inline(always)]
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: __m256i,
        b: __m256i,
        c: __m256i,
        d: __m256i,
        mk: __m256i,
    ) -> __m256i {
        let a = _mm256_add_epi32(a, mk);
        let x = match R {
            // b ? c : d
            0 => _mm256_add_epi32(
                a,
                _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d))),
            ),
            // d ? b : c, as (c & !d) + (b & d): the halves share no bits, and
            // the first is ready before b.
            1 => _mm256_add_epi32(
                _mm256_add_epi32(a, _mm256_andnot_si256(d, c)),
                _mm256_and_si256(b, d),
            ),
            2 => _mm256_add_epi32(a, _mm256_xor_si256(b, _mm256_xor_si256(c, d))),
            // c ^ (b | !d)
            _ => {
                let not_d = _mm256_xor_si256(d, _mm256_set1_epi32(-1));
                _mm256_add_epi32(a, _mm256_xor_si256(c, _mm256_or_si256(b, not_d)))
            }
        };
        let rotated = _mm256_or_si256(_mm256_slli_epi32::<S>(x), _mm256_srli_epi32::<RIGHT>(x));
        _mm256_add_epi32(b, rotated)
    }
}

/// Eight chains at once (a `Kernel`).
///
/// # Safety
/// The CPU must have AVX2 (`available`).
#[target_feature(enable = "avx2")]
pub unsafe fn compress_eight(states: &mut [[u32; 4]; 8], lanes: [&[[u8; BLOCK]]; 8], count: usize) {
    chains::<Avx2, 8>(states, lanes, count);
}

/// Sixteen chains as two groups of eight, step by step side by side: each
/// group waits on the latency of its steps, and the other's fill the gaps.
/// Each half is `Avx2`'s eight chains, spelled out without closures, which
/// would not inherit the kernel's AVX2.
struct Pair;

impl Chains<16> for Pair {
    type V = [__m256i; 2];

    #[inline(always)]
    unsafe fn load(words: &[u32; 16]) -> [__m256i; 2] {
        let (low, high) = words.split_at(8);
        [
            <Avx2 as Chains<8>>::load(low.try_into().expect("eight words")),
            <Avx2 as Chains<8>>::load(high.try_into().expect("eight words")),
        ]
    }

    #[inline(always)]
    unsafe fn store(v: [__m256i; 2]) -> [u32; 16] {
        let mut words = [0u32; 16];
        words[..8].copy_from_slice(&<Avx2 as Chains<8>>::store(v[0]));
        words[8..].copy_from_slice(&<Avx2 as Chains<8>>::store(v[1]));
        words
    }

    #[inline(always)]
    unsafe fn add(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
        [
            <Avx2 as Chains<8>>::add(a[0], b[0]),
            <Avx2 as Chains<8>>::add(a[1], b[1]),
        ]
    }

    type Block = [[__m256i; 16]; 2];

    #[inline(always)]
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; 16], n: usize) -> [[__m256i; 16]; 2] {
        let low: [&[[u8; BLOCK]]; 8] = lanes[..8].try_into().expect("eight lanes");
        let high: [&[[u8; BLOCK]]; 8] = lanes[8..].try_into().expect("eight lanes");
        [
            <Avx2 as Chains<8>>::block(&low, n),
            <Avx2 as Chains<8>>::block(&high, n),
        ]
    }

    #[inline(always)]
    unsafe fn mk(block: &[[__m256i; 16]; 2], i: usize) -> [__m256i; 2] {
        [
            <Avx2 as Chains<8>>::mk(&block[0], i),
            <Avx2 as Chains<8>>::mk(&block[1], i),
        ]
    }

    #[inline(always)]
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: [__m256i; 2],
        b: [__m256i; 2],
        c: [__m256i; 2],
        d: [__m256i; 2],
        mk: [__m256i; 2],
    ) -> [__m256i; 2] {
        [
            <Avx2 as Step8>::step::<R, S, RIGHT>(a[0], b[0], c[0], d[0], mk[0]),
            <Avx2 as Step8>::step::<R, S, RIGHT>(a[1], b[1], c[1], d[1], mk[1]),
        ]
    }
}

/// Sixteen chains at once (a `Kernel`).
///
/// # Safety
/// The CPU must have AVX2 (`available`).
#[target_feature(enable = "avx2")]
pub unsafe fn compress_sixteen(
    states: &mut [[u32; 4]; 16],
    lanes: [&[[u8; BLOCK]]; 16],
    count: usize,
) {
    chains::<Pair, 16>(states, lanes, count);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chains_match_the_scalar_kernel, cpu_runs};
    use super::*;

    #[test]
    fn eight_and_sixteen_chains_match_the_scalar_kernel_each() {
        if !cpu_runs("avx2", available()) {
            return;
        }
        chains_match_the_scalar_kernel::<8>(compress_eight);
        chains_match_the_scalar_kernel::<16>(compress_sixteen);
    }
}
