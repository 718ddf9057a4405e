//! [`Sampler::draw`](crate::Sampler::draw) without filters, on the CPU: the host twin of the
//! device path for plain f32 logits on flex when no top-k, top-p, min-p or repetition penalty
//! applies (greedy decoding and plain temperature sampling, the paper's settings).
//!
//! Why: on flex the device path is about twenty burn ops over `[batch, vocab]` (the tempered
//! logits, the softmax's log-probs and probabilities, the zero-padded block grid of the
//! inverse-CDF search, its block sums, masks and the fallback argmax), each a single-threaded
//! pass that allocates its output. At batch 8 over Qwen2.5's 151,936 entries each output is
//! 4.9 MB: the allocator hands such blocks back to the kernel when they are freed, so every
//! step faulted its pages in again. `cargo bench -p em-benches --bench decode --
//! 'flex/sample/temperature_r8$'` spent half its samples in page faults (`perf record`,
//! 2026-12-06) and took 12-15 ms, a fifth of a batch-8 decode step of the 0.5B model.
//!
//! Here each row takes three passes over its logits, split in chunks across rayon's threads,
//! and nothing of the vocabulary's size is allocated:
//! 1. the maximum of `z' = z / T` ([`rows::max_of`]);
//! 2. `s = Σ exp(z' − max)`, rounded as the device path rounds `ln s` to f32;
//! 3. per chunk, with `p = exp(z' − max − (ln s)₃₂)` (the device path's probabilities, the
//!    same f32 operations): `Σ p`, `Σ p·log p` and the chunk's first largest `p`.
//!
//! The token is then found from the chunk sums (the chunk where the prefix mass passes
//! `u · Σ p`) and one sequential walk over that chunk; greedy takes the first largest `p`, as
//! the device path's argmax over the same probabilities. The reported log-prob and entropy are
//! the device path's formulas (`log p − ln Σ p`, `ln Σ p − Σ p·log p / Σ p`), with the sums
//! in f64 where the device path sums blocks in f32, so the two agree to f32 rounding, and the
//! token is the same but where `u · Σ p` falls within that rounding of a boundary between two
//! tokens (tested against the device path on autodiff-tracked copies, which decline this
//! one, and both against the f64 reference in `tests/sampling.rs`).

use em_core::fused::rows::{
    self, BLOCK, CHUNK, Kernel, LANES, accumulate, lane_totals, shift, vectorized,
};
use em_core::fused::{HostRows, tensor_from_rows};
use rayon::prelude::*;

use crate::sampling::Draw;

/// The draw of every row of `z` (`[batch, vocab]`, a plain f32 flex tensor's rows) at
/// `temperature` (`None`: greedy, the argmax at temperature 1), row `r` with the uniform
/// number `uniforms[r]` in `[0, 1)`: tokens, log-probs and entropies as [`Draw`]'s tensors on
/// `device`.
pub(crate) fn draw(
    z: &HostRows,
    temperature: Option<f32>,
    uniforms: &[f32],
    device: &burn::tensor::Device,
) -> Draw {
    let (batch, width) = (z.rows(), z.width());
    debug_assert_eq!(uniforms.len(), batch);
    let drawn: Vec<[f32; 3]> = z
        .values()
        .par_chunks(width)
        .zip(uniforms.par_iter())
        .map(|(z, &u)| draw_row(z, temperature, u))
        .collect();
    let column =
        |i: usize| tensor_from_rows(drawn.iter().map(|d| d[i]).collect(), [batch, 1], device);
    Draw {
        tokens: column(0),
        log_probs: column(1),
        entropies: column(2),
    }
}

/// One row's `[token, log-prob, entropy]` (the token as an exact f32 integer); NaN log-prob
/// and entropy (token 0) for a row whose maximum is not finite, as the device path's NaN
/// softmax.
fn draw_row(z: &[f32], temperature: Option<f32>, u: f32) -> [f32; 3] {
    let scale = Scale(temperature.filter(|&t| t != 1.0));
    let max = rows::max_in_order(
        z.par_chunks(CHUNK)
            .map(|z| vectorized(ScaledMax { z, scale }))
            .collect(),
    );
    if !max.is_finite() {
        return [0.0, f32::NAN, f32::NAN];
    }
    let sum: f64 = z
        .par_chunks(CHUNK)
        .map(|z| vectorized(ExpSum { z, scale, max }))
        .collect::<Vec<_>>()
        .into_iter()
        .sum();
    let ln_s = sum.ln() as f32;
    let chunks: Vec<ChunkStats> = z
        .par_chunks(CHUNK)
        .map(|z| {
            vectorized(Probs {
                z,
                scale,
                max,
                ln_s,
            })
        })
        .collect();
    let total: f64 = chunks.iter().map(|c| c.mass).sum();
    let weighted: f64 = chunks.iter().map(|c| c.weighted).sum();
    // The device path's kept entropy (f64 sums, f32 results) and its f32 columns `Σ p` and
    // `ln Σ p`.
    let log_total = total.ln();
    let entropy = (log_total - weighted / total) as f32;
    let (total32, log_total32) = (total as f32, log_total as f32);
    let argmax = || {
        let (c, best) = chunks
            .iter()
            .enumerate()
            .fold((0, &chunks[0]), |(bc, b), (c, chunk)| {
                if chunk.max_p > b.max_p {
                    (c, chunk)
                } else {
                    (bc, b)
                }
            });
        c * CHUNK + best.argmax
    };
    let p_of = |i: usize| rows::exp(shift(scale.apply(z[i]), max) - ln_s);
    let token = match temperature {
        None => argmax(),
        Some(_) => {
            let target = f64::from(u * total32);
            // Where rounding leaves the target at the whole mass, the device path's search
            // ends on the last token; a token of probability 0 falls back to the argmax.
            let token = passing(z, &chunks, target, p_of).unwrap_or(z.len() - 1);
            if p_of(token) > 0.0 { token } else { argmax() }
        }
    };
    let log_p = shift(scale.apply(z[token]), max) - ln_s;
    [token as f32, log_p - log_total32, entropy]
}

/// The first index whose prefix mass `Σ_{j ≤ i} p_j` exceeds `target`: the chunk where the
/// chunks' masses pass it, then a walk from that chunk's start; `None` when the target is at or
/// above the whole mass.
fn passing(
    z: &[f32],
    chunks: &[ChunkStats],
    target: f64,
    p_of: impl Fn(usize) -> f32,
) -> Option<usize> {
    let mut before = 0.0f64;
    let first = chunks.iter().position(|chunk| {
        let passes = before + chunk.mass > target;
        if !passes {
            before += chunk.mass;
        }
        passes
    })?;
    let mut mass = before;
    (first * CHUNK..z.len()).find(|&i| {
        mass += f64::from(p_of(i));
        mass > target
    })
}

/// `z / T` where a temperature other than 1 applies (the device path's tensor division), `z`
/// otherwise.
#[derive(Debug, Clone, Copy)]
struct Scale(Option<f32>);

impl Scale {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self.0 {
            Some(t) => x / t,
            None => x,
        }
    }
}

/// The maximum of a chunk's `z'`.
struct ScaledMax<'a> {
    z: &'a [f32],
    scale: Scale,
}

impl Kernel for ScaledMax<'_> {
    type Output = f32;

    #[inline(always)]
    fn run(self) -> f32 {
        match self.scale.0 {
            None => rows::max_of(self.z),
            Some(_) => {
                let mut scaled = [0f32; BLOCK];
                let mut max = f32::NEG_INFINITY;
                for block in self.z.chunks(BLOCK) {
                    let n = block.len();
                    for (s, &x) in scaled.iter_mut().zip(block) {
                        *s = self.scale.apply(x);
                    }
                    let m = rows::max_of(&scaled[..n]);
                    max = if max.is_nan() || m.is_nan() {
                        f32::NAN
                    } else {
                        max.max(m)
                    };
                }
                max
            }
        }
    }
}

/// A chunk's `Σ exp(z' − max)`, in 8 f64 lanes.
struct ExpSum<'a> {
    z: &'a [f32],
    scale: Scale,
    max: f32,
}

impl Kernel for ExpSum<'_> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        let mut lanes = [0f64; LANES];
        let mut exps = [0f32; BLOCK];
        for block in self.z.chunks(BLOCK) {
            let n = block.len();
            for (e, &x) in exps.iter_mut().zip(block) {
                *e = rows::exp(shift(self.scale.apply(x), self.max));
            }
            add_lanes(&mut lanes, &exps[..n]);
        }
        lanes.iter().sum()
    }
}

/// A chunk's `Σ p`, `Σ p·log p` and first largest `p`, `p = exp(z' − max − (ln s)₃₂)`.
struct Probs<'a> {
    z: &'a [f32],
    scale: Scale,
    max: f32,
    ln_s: f32,
}

/// What [`Probs`] returns.
#[derive(Debug, Clone, Copy)]
struct ChunkStats {
    mass: f64,
    weighted: f64,
    max_p: f32,
    /// Index of the first `max_p` in the chunk.
    argmax: usize,
}

impl Kernel for Probs<'_> {
    type Output = ChunkStats;

    #[inline(always)]
    fn run(self) -> ChunkStats {
        let mut sums = [[0f64; LANES]; 2];
        let (mut log_p, mut p) = ([0f32; BLOCK], [0f32; BLOCK]);
        let (mut max_p, mut argmax) = (f32::NEG_INFINITY, 0);
        for (b, block) in self.z.chunks(BLOCK).enumerate() {
            let n = block.len();
            for ((lp, p), &x) in log_p.iter_mut().zip(p.iter_mut()).zip(block) {
                *lp = shift(self.scale.apply(x), self.max) - self.ln_s;
                *p = rows::exp(*lp);
            }
            accumulate(&p[..n], &log_p[..n], &mut sums);
            let block_max = rows::max_of(&p[..n]);
            if block_max > max_p {
                max_p = block_max;
                argmax = b * BLOCK + p[..n].iter().position(|&v| v == block_max).unwrap_or(0);
            }
        }
        let [mass, weighted] = lane_totals(sums);
        ChunkStats {
            mass,
            weighted,
            max_p,
            argmax,
        }
    }
}

/// Adds every value into [`LANES`] lanes, value `i` into lane `i % LANES`.
#[inline(always)]
fn add_lanes(lanes: &mut [f64; LANES], values: &[f32]) {
    let blocks = values.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for (l, &v) in lanes.iter_mut().zip(block) {
            *l += f64::from(v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(rest) {
        *l += f64::from(v);
    }
}
