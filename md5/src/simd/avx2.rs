//! MD5 of eight or sixteen chains at once with AVX2, for CPUs without
//! AVX-512. AVX2 has neither a three-input logic instruction nor a rotate:
//! each round function takes two or three instructions (the ones on `c` and
//! `d`, which are ready early, run off the critical path) and a rotation
//! three. Sixteen chains run as two groups of eight.

use super::{chains, Step8};
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
        let f = match R {
            // b ? c : d
            0 => _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d))),
            // d ? b : c
            1 => _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c))),
            2 => _mm256_xor_si256(b, _mm256_xor_si256(c, d)),
            // c ^ (b | !d)
            _ => {
                let not_d = _mm256_xor_si256(d, _mm256_set1_epi32(-1));
                _mm256_xor_si256(c, _mm256_or_si256(b, not_d))
            }
        };
        let x = _mm256_add_epi32(_mm256_add_epi32(a, mk), f);
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

/// Sixteen chains, eight at a time (a `Kernel`).
///
/// # Safety
/// The CPU must have AVX2 (`available`).
#[target_feature(enable = "avx2")]
pub unsafe fn compress_sixteen(
    states: &mut [[u32; 4]; 16],
    lanes: [&[[u8; BLOCK]]; 16],
    count: usize,
) {
    let (low, high) = states.split_at_mut(8);
    for (half, group) in [low, high].into_iter().enumerate() {
        let group: &mut [[u32; 4]; 8] = group.try_into().expect("eight states");
        let inputs: [&[[u8; BLOCK]]; 8] = std::array::from_fn(|lane| lanes[8 * half + lane]);
        chains::<Avx2, 8>(group, inputs, count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::chains_match_the_scalar_kernel;
    use super::*;

    #[test]
    fn eight_and_sixteen_chains_match_the_scalar_kernel_each() {
        if !available() {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        chains_match_the_scalar_kernel::<8>(compress_eight);
        chains_match_the_scalar_kernel::<16>(compress_sixteen);
    }
}
