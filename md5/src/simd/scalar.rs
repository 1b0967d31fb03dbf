//! One chain in general-purpose registers, for x86_64 CPUs without
//! AVX-512. Each step's round function, addition and rotation are written
//! in assembly so that the compiler cannot reorder them: `a + m + k` is
//! summed before `b` is known, and of the round function only what needs
//! `b` waits for it. That leaves five one-cycle instructions after `b` in
//! rounds F and I and four in G (its two halves share no bits, so they are
//! added one by one and `c & !d` is ready early) and H, fewer than LLVM
//! leaves when it picks the order (as in `md-5`).

use super::{chains, Chains};
use crate::{word, BLOCK, K};
use std::arch::asm;

/// One chain, in general-purpose registers.
struct Scalar;

impl Chains<1> for Scalar {
    type V = u32;

    #[inline(always)]
    unsafe fn load(words: &[u32; 1]) -> u32 {
        words[0]
    }

    #[inline(always)]
    unsafe fn store(v: u32) -> [u32; 1] {
        [v]
    }

    #[inline(always)]
    unsafe fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }

    type Block = [u32; 16];

    #[inline(always)]
    unsafe fn block(lanes: &[&[[u8; BLOCK]]; 1], n: usize) -> [u32; 16] {
        super::words(&lanes[0][n])
    }

    #[inline(always)]
    unsafe fn mk(block: &[u32; 16], i: usize) -> u32 {
        block[word(i)].wrapping_add(K[i])
    }

    /// `RIGHT` serves the kernels that rotate with two shifts; `rol` needs
    /// only `S`.
    #[inline(always)]
    unsafe fn step<const R: usize, const S: i32, const RIGHT: i32>(
        a: u32,
        b: u32,
        c: u32,
        d: u32,
        mk: u32,
    ) -> u32 {
        let mut a = a.wrapping_add(mk);
        // Adds the round function to `a` with scratch register `t`, then
        // rotates `a` and adds `b`.
        macro_rules! step_with {
            ($($round_function:literal),+) => {
                asm!(
                    $($round_function,)+
                    "rol {a:e}, {s}",
                    "add {a:e}, {b:e}",
                    a = inout(reg) a, b = in(reg) b, c = in(reg) c, d = in(reg) d,
                    t = out(reg) _, s = const S,
                    options(pure, nomem, nostack),
                )
            };
        }
        match R {
            // F = d ^ (b & (c ^ d))
            0 => step_with!(
                "mov {t:e}, {c:e}",
                "xor {t:e}, {d:e}",
                "and {t:e}, {b:e}",
                "xor {t:e}, {d:e}",
                "add {a:e}, {t:e}"
            ),
            // G = (c & !d) + (b & d), with c & !d as (c | d) ^ d
            1 => step_with!(
                "mov {t:e}, {c:e}",
                "or {t:e}, {d:e}",
                "xor {t:e}, {d:e}",
                "add {a:e}, {t:e}",
                "mov {t:e}, {d:e}",
                "and {t:e}, {b:e}",
                "add {a:e}, {t:e}"
            ),
            // H = b ^ c ^ d
            2 => step_with!(
                "mov {t:e}, {c:e}",
                "xor {t:e}, {d:e}",
                "xor {t:e}, {b:e}",
                "add {a:e}, {t:e}"
            ),
            // I = c ^ (b | !d)
            _ => step_with!(
                "mov {t:e}, {d:e}",
                "not {t:e}",
                "or {t:e}, {b:e}",
                "xor {t:e}, {c:e}",
                "add {a:e}, {t:e}"
            ),
        }
        a
    }
}

/// Compresses `blocks` into one state.
pub fn compress_one(state: &mut [u32; 4], blocks: &[[u8; BLOCK]]) {
    // SAFETY: these instructions are in every x86_64 CPU.
    unsafe { chains::<Scalar, 1>(std::array::from_mut(state), [blocks], blocks.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    #[test]
    fn one_chain_matches_the_md5_crate() {
        let data = sample(200 * BLOCK, 12);
        let (blocks, _) = data.as_chunks::<BLOCK>();
        for start in [crate::INIT, [5, 6, 7, 8]] {
            let mut state = start;
            compress_one(&mut state, blocks);
            let mut expected = start;
            ::md5::block_api::compress(&mut expected, blocks);
            assert_eq!(state, expected);
        }
    }
}
