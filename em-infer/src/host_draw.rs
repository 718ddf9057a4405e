//! [`Sampler::draw`](crate::Sampler::draw) and [`Sampling::kept`] on the CPU: the host twin of
//! the device path for plain f32 logits on flex, with every setting (greedy and temperature,
//! top-k, top-p, min-p, and the repetition penalty when the sampler's seen set is on the host
//! too).
//!
//! Why: on flex the device path is about twenty burn ops over `[batch, vocab]` without filters
//! (the tempered logits, the softmax's log-probs and probabilities, the zero-padded block grid
//! of the inverse-CDF search, its block sums, masks and the fallback argmax) and a few hundred
//! with them (40 bisection halvings per cut-off, each a masked count or sum), each a
//! single-threaded pass that allocates its output. At batch 8 over Qwen2.5's 151,936 entries
//! each output is 4.9 MB: the allocator hands such blocks back to the kernel when they are
//! freed, so every step faulted its pages in again. `cargo bench -p em-benches --bench decode
//! -- 'flex/sample/temperature_r8$'` spent half its samples in page faults (`perf record`,
//! 2026-12-06) and took 12-15 ms, a fifth of a batch-8 decode step of the 0.5B model;
//! `top_p0.9_r8` took 36 ms.
//!
//! Here each row takes its passes split in chunks across rayon's threads, and nothing of the
//! vocabulary's size is allocated but the penalised copy of a row (with a repetition penalty):
//! 1. the maximum of `z' = z / T` ([`rows::max_of`]);
//! 2. `s = Σ exp(z' − max)`, rounded as the device path rounds `ln s` to f32;
//! 3. with top-k or top-p, a histogram of `log p = shift(z', max) − (ln s)₃₂` (counts and f64
//!    masses in buckets of 1/16 nat) and a sort of the one bucket where the count reaches k or
//!    the head mass reaches `top_p` of the kept mass: the cut-off (see `cutoff`); min-p's is
//!    `max log p + ln min_p`;
//! 4. per chunk, with `p = exp(log p)` where `log p` reaches the cut-off and 0 elsewhere (the
//!    device path's masked probabilities, the same f32 operations): `Σ p`, `Σ p·log p` and the
//!    chunk's first largest `p`.
//!
//! The token is then found from the chunk sums (the chunk where the prefix mass passes
//! `u · Σ p`) and one sequential walk over that chunk; greedy takes the first largest `p`, as
//! the device path's argmax over the same probabilities. The reported log-prob and entropy are
//! the device path's formulas (`log p − ln Σ p`, `ln Σ p − Σ p·log p / Σ p`), with the sums
//! in f64 where the device path sums blocks in f32, so the two agree to f32 rounding, and the
//! token is the same but where `u · Σ p` falls within that rounding of a boundary between two
//! tokens, and the kept set is the same but where the top-p head mass is within that rounding
//! of its bound (tested against the device path on autodiff-tracked copies, which decline this
//! one, and both against the f64 reference in `tests/sampling.rs`).

use burn::tensor::{Bool, Device, Tensor, TensorData};
use em_core::fused::rows::{
    self, BLOCK, CHUNK, Kernel, LANES, accumulate, lane_totals, shift, vectorized,
};
use em_core::fused::{HostRows, tensor_from_rows};
use rayon::prelude::*;

use crate::em_inf::Scratch;
use crate::sampling::{Draw, LOG_PROB_FLOOR, Sampling};

/// What a host draw applies to each row: the repetition penalty (with the rows of the
/// sampler's seen set), the temperature and the filters.
#[derive(Clone, Copy)]
pub(crate) struct Settings<'a> {
    /// `None`: greedy (the argmax; log-probs at temperature 1).
    pub temperature: Option<f32>,
    pub filters: Filters,
    /// The seen set's rows (`[batch, vocab]`, 1 = seen) and the penalty, rounded to f32 as the
    /// device path's scalar operand.
    pub penalty: Option<(&'a HostRows, f32)>,
}

impl<'a> Settings<'a> {
    /// The settings of `sampling` over `vocab` entries, with the seen set's rows when a
    /// repetition penalty applies.
    pub(crate) fn of(sampling: &Sampling, vocab: usize, seen: Option<&'a HostRows>) -> Self {
        Self {
            temperature: (!sampling.is_greedy()).then_some(sampling.temperature as f32),
            filters: Filters {
                top_k: if sampling.top_k < vocab {
                    sampling.top_k
                } else {
                    0
                },
                top_p: sampling.top_p,
                min_p: sampling.min_p,
            },
            penalty: seen.map(|seen| (seen, sampling.repetition_penalty as f32)),
        }
    }
}

/// Top-k (0: off, as is a k of the vocabulary's size or more), top-p (1: off), min-p (0: off).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filters {
    pub top_k: usize,
    pub top_p: f64,
    pub min_p: f64,
}

/// The draw of every row of `z` (`[batch, vocab]`, a plain f32 flex tensor's rows) with
/// `settings`, row `r` with the uniform number `uniforms[r]` in `[0, 1)`: tokens, log-probs and
/// entropies as [`Draw`]'s tensors on `device`.
pub(crate) fn draw(
    z: &HostRows,
    settings: &Settings<'_>,
    uniforms: &[f32],
    device: &Device,
) -> Draw {
    let batch = z.rows();
    debug_assert_eq!(uniforms.len(), batch);
    let drawn: Vec<[f32; 3]> = (0..batch)
        .into_par_iter()
        .map(|r| {
            let row = penalised(z, r, settings);
            draw_row(&row, settings, uniforms[r])
        })
        .collect();
    let column =
        |i: usize| tensor_from_rows(drawn.iter().map(|d| d[i]).collect(), [batch, 1], device);
    Draw {
        tokens: column(0),
        log_probs: column(1),
        entropies: column(2),
    }
}

/// The entries `settings` keeps in each row of `z` (`[batch, vocab]`, a plain f32 flex
/// tensor's rows) with a probability above 0: [`Sampling::kept`] on the host.
pub(crate) fn kept(z: &HostRows, settings: &Settings<'_>, device: &Device) -> Tensor<2, Bool> {
    let (batch, width) = (z.rows(), z.width());
    let mut keep = vec![false; batch * width];
    for (r, keep) in keep.chunks_mut(width).enumerate() {
        let row = penalised(z, r, settings);
        if let Some((softmax, cut)) = softmax_and_cut(&row, settings) {
            keep.par_chunks_mut(CHUNK)
                .zip(row.par_chunks(CHUNK))
                .for_each(|(keep, z)| {
                    for (k, &x) in keep.iter_mut().zip(z) {
                        let log_p = softmax.log_p(x);
                        *k = log_p >= cut && rows::exp(log_p) > 0.0;
                    }
                });
        }
    }
    Tensor::from_data(TensorData::new(keep, [batch, width]), device)
}

/// Row `r` of `z`, with the repetition penalty applied where `settings` has one (into a pooled
/// buffer then): Hugging Face's rule as the device path computes it, `z / θ` for a seen
/// positive logit and `z · θ` for the other seen ones.
fn penalised<'z>(z: &'z HostRows, r: usize, settings: &Settings<'_>) -> Row<'z> {
    let width = z.width();
    let row = &z.values()[r * width..(r + 1) * width];
    let Some((seen, penalty)) = settings.penalty else {
        return Row::Borrowed(row);
    };
    let seen = &seen.values()[r * width..(r + 1) * width];
    let mut out = Scratch::take(width);
    out.par_chunks_mut(CHUNK)
        .zip(row.par_chunks(CHUNK).zip(seen.par_chunks(CHUNK)))
        .for_each(|(out, (z, seen))| {
            for ((o, &z), &s) in out.iter_mut().zip(z).zip(seen) {
                *o = if s <= 0.5 {
                    z
                } else if z > 0.0 {
                    z / penalty
                } else {
                    z * penalty
                };
            }
        });
    Row::Penalised(out)
}

/// A row of logits: borrowed, or penalised into a pooled buffer.
enum Row<'z> {
    Borrowed(&'z [f32]),
    Penalised(Scratch),
}

impl std::ops::Deref for Row<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Self::Borrowed(row) => row,
            Self::Penalised(row) => row,
        }
    }
}

/// A row's tempered softmax, as the device path computes it: `log p = shift(z', max) − ln s`
/// in f32 with `z' = z / T` and `s = Σ exp(z' − max)` (f64 here).
#[derive(Debug, Clone, Copy)]
struct Softmax {
    scale: Scale,
    max: f32,
    ln_s: f32,
}

impl Softmax {
    /// `None` when the row's maximum is not finite (a NaN or +∞ logit).
    fn of(z: &[f32], scale: Scale) -> Option<Self> {
        let max = rows::max_in_order(
            z.par_chunks(CHUNK)
                .map(|z| vectorized(ScaledMax { z, scale }))
                .collect(),
        );
        if !max.is_finite() {
            return None;
        }
        let sum: f64 = z
            .par_chunks(CHUNK)
            .map(|z| vectorized(ExpSum { z, scale, max }))
            .collect::<Vec<_>>()
            .into_iter()
            .sum();
        Some(Self {
            scale,
            max,
            ln_s: sum.ln() as f32,
        })
    }

    #[inline(always)]
    fn log_p(&self, x: f32) -> f32 {
        shift(self.scale.apply(x), self.max) - self.ln_s
    }
}

/// A row's tempered softmax and its filters' cut-off ([`cutoff`]); `None` when the row's
/// maximum is not finite.
fn softmax_and_cut(z: &[f32], settings: &Settings<'_>) -> Option<(Softmax, f32)> {
    let softmax = Softmax::of(z, Scale(settings.temperature.filter(|&t| t != 1.0)))?;
    Some((softmax, cutoff(z, &softmax, &settings.filters)))
}

/// One row's `[token, log-prob, entropy]` (the token as an exact f32 integer); NaN log-prob
/// and entropy (token 0) for a row whose maximum is not finite, as the device path's NaN
/// softmax.
fn draw_row(z: &[f32], settings: &Settings<'_>, u: f32) -> [f32; 3] {
    let Some((softmax, cut)) = softmax_and_cut(z, settings) else {
        return [0.0, f32::NAN, f32::NAN];
    };
    let chunks: Vec<ChunkStats> = z
        .par_chunks(CHUNK)
        .map(|z| vectorized(Probs { z, softmax, cut }))
        .collect();
    let total: f64 = chunks.iter().map(|c| c.mass).sum();
    let weighted: f64 = chunks.iter().map(|c| c.weighted).sum();
    // The device path's kept entropy (f64 sums, f32 results) and its f32 columns `Σ p` and
    // `ln Σ p`.
    let log_total = total.ln();
    let entropy = (log_total - weighted / total) as f32;
    let (total32, log_total32) = (total as f32, log_total as f32);
    // The first largest `p` (always kept: every cut-off is at most the largest log-prob).
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
    let p_of = |i: usize| {
        let log_p = softmax.log_p(z[i]);
        if log_p >= cut { rows::exp(log_p) } else { 0.0 }
    };
    let token = match settings.temperature {
        None => argmax(),
        Some(_) => {
            let target = f64::from(u * total32);
            // Where rounding leaves the target at the whole mass, the device path's search
            // ends on the last token; a token of probability 0 falls back to the argmax.
            let token = passing(z, &chunks, target, p_of).unwrap_or(z.len() - 1);
            if p_of(token) > 0.0 { token } else { argmax() }
        }
    };
    [token as f32, softmax.log_p(z[token]) - log_total32, entropy]
}

/// Buckets of the cut-off search: `−log p` in steps of 1/16 nat, the last one open-ended
/// (everything below −63.9 nats).
const BUCKETS: usize = 1024;

#[inline(always)]
fn bucket(log_p: f32) -> usize {
    // `as` saturates: a log-prob of 0 (or above, by rounding) lands in bucket 0.
    ((-log_p * 16.0) as usize).min(BUCKETS - 1)
}

/// The row's log-prob cut-off: the filters keep the entries with `log p ≥` it
/// (−∞ without filters). Every filter keeps an upper set of log-probs, so their intersection
/// keeps the entries at or above the largest of their cut-offs:
/// - top-k: the k-th largest log-prob;
/// - top-p: the largest log-prob `v` with `Σ_{kept, log p ≥ v} p ≥ top_p · Σ_{kept} p`, over
///   the entries top-k keeps;
/// - both bounded below by the device path's search floor (`LOG_PROB_FLOOR`), where its
///   bisection starts;
/// - min-p: `max log p + ln min_p` in f32, as the device path adds it.
///
/// Top-k and top-p are found from a histogram of the log-probs (counts and f64 masses in
/// [`BUCKETS`] buckets, one pass over the row) and a sort of the one bucket where the count or
/// the mass crosses its bound. This is the value the device path's bisection converges on (to
/// 1e-10 nats, below the f32 spacing of the log-probs involved); the masses are summed in f64
/// where the device path sums in f32, so the two can differ only where the head mass is within
/// f32 rounding of `top_p` times the total.
fn cutoff(z: &[f32], softmax: &Softmax, filters: &Filters) -> f32 {
    let mut cut = f32::NEG_INFINITY;
    if filters.top_k > 0 || filters.top_p < 1.0 {
        // Top-k alone needs only the counts: no `exp` per entry then.
        let masses = filters.top_p < 1.0;
        let histogram = z
            .par_chunks(CHUNK)
            .map(|z| {
                let softmax = *softmax;
                if masses {
                    vectorized(Histogram::<true> { z, softmax })
                } else {
                    vectorized(Histogram::<false> { z, softmax })
                }
            })
            .reduce_with(|mut a, b| {
                a.add(&b);
                a
            })
            .unwrap_or_else(Counts::empty);
        // Top-k: its cut-off, the bucket holding it and that bucket's entries at or above it
        // (largest first); every bucket above it is kept whole.
        let mut top_k: Option<(usize, Vec<(f32, f32)>)> = None;
        if filters.top_k > 0 {
            let mut count = 0usize;
            let crossing = (0..BUCKETS).find(|&b| {
                let next = count + histogram.counts[b] as usize;
                next >= filters.top_k || {
                    count = next;
                    false
                }
            });
            if let Some(b) = crossing {
                let mut entries = in_bucket(z, softmax, b);
                let c = entries[filters.top_k - count - 1].0;
                let kept = entries.partition_point(|e| e.0 >= c);
                entries.truncate(kept);
                top_k = Some((b, entries));
                cut = c;
            }
        }
        if filters.top_p < 1.0 {
            // The buckets top-k keeps (all without top-k), the last one in part.
            let last = top_k.as_ref().map_or(BUCKETS - 1, |(b, _)| *b);
            let last_mass = top_k
                .as_ref()
                .map(|(_, entries)| entries.iter().map(|e| f64::from(e.1)).sum::<f64>());
            let mass_of = |b: usize| match last_mass {
                Some(mass) if b == last => mass,
                _ => histogram.masses[b],
            };
            let total: f64 = (0..=last).map(mass_of).sum();
            let bound = filters.top_p * total;
            let mut head = 0.0f64;
            let crossing = (0..=last).find(|&b| {
                let next = head + mass_of(b);
                next >= bound || {
                    head = next;
                    false
                }
            });
            if let Some(b) = crossing {
                // Top-k's bucket: the entries it keeps, already sorted.
                let entries = match top_k {
                    Some((kb, entries)) if kb == b => entries,
                    _ => in_bucket(z, softmax, b),
                };
                // The histogram's mass passes the bound within this bucket; summed entry by
                // entry in another order it may pass only at the bucket's last entry.
                let crossing = entries
                    .iter()
                    .find(|e| {
                        head += f64::from(e.1);
                        head >= bound
                    })
                    .or(entries.last());
                if let Some(&(c, _)) = crossing {
                    cut = cut.max(c);
                }
            }
        }
        cut = cut.max(LOG_PROB_FLOOR as f32);
    }
    if filters.min_p > 0.0 {
        // The largest log-prob is `shift(max, max) − ln s = −ln s`.
        cut = cut.max(-softmax.ln_s + filters.min_p.ln() as f32);
    }
    cut
}

/// `(log p, p)` of the entries of bucket `b`, largest log-prob first.
fn in_bucket(z: &[f32], softmax: &Softmax, b: usize) -> Vec<(f32, f32)> {
    let mut entries: Vec<(f32, f32)> = z
        .par_chunks(CHUNK)
        .map(|z| {
            vectorized(InBucket {
                z,
                softmax: *softmax,
                b,
            })
        })
        .collect::<Vec<_>>()
        .concat();
    entries.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    entries
}

/// A chunk's entries of bucket `b`, as `(log p, p)`.
struct InBucket<'a> {
    z: &'a [f32],
    softmax: Softmax,
    b: usize,
}

impl Kernel for InBucket<'_> {
    type Output = Vec<(f32, f32)>;

    #[inline(always)]
    fn run(self) -> Vec<(f32, f32)> {
        // The bucket as a range, `bucket(x) == b` exactly: `−16·x` is exact, so
        // `b ≤ −16·x < b + 1` is `−(b + 1)/16 < x ≤ −b/16` (the first bucket open above, the
        // last one below).
        let upper = if self.b == 0 {
            f32::INFINITY
        } else {
            -(self.b as f32) / 16.0
        };
        let lower = if self.b + 1 < BUCKETS {
            -((self.b + 1) as f32) / 16.0
        } else {
            f32::NEG_INFINITY
        };
        let mut out = Vec::new();
        let mut log_p = [0f32; BLOCK];
        for block in self.z.chunks(BLOCK) {
            let n = block.len();
            for (lp, &x) in log_p.iter_mut().zip(block) {
                *lp = self.softmax.log_p(x);
            }
            for &lp in &log_p[..n] {
                if lp <= upper && lp > lower {
                    debug_assert_eq!(bucket(lp), self.b);
                    out.push((lp, rows::exp(lp)));
                }
            }
        }
        out
    }
}

/// A chunk's [`Counts`]: with `MASSES`, each bucket's f64 mass too; without (top-k alone),
/// the masses stay 0 and no `p` is computed.
struct Histogram<'a, const MASSES: bool> {
    z: &'a [f32],
    softmax: Softmax,
}

/// Per bucket of `−log p`, the entries and their f64 mass.
struct Counts {
    counts: Box<[u32; BUCKETS]>,
    masses: Box<[f64; BUCKETS]>,
}

impl Counts {
    fn empty() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            masses: Box::new([0.0; BUCKETS]),
        }
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        for (a, b) in self.masses.iter_mut().zip(other.masses.iter()) {
            *a += b;
        }
    }
}

impl<const MASSES: bool> Kernel for Histogram<'_, MASSES> {
    type Output = Counts;

    #[inline(always)]
    fn run(self) -> Counts {
        let Self { z, softmax } = self;
        let mut out = Counts::empty();
        let (mut log_p, mut p) = ([0f32; BLOCK], [0f32; BLOCK]);
        for block in z.chunks(BLOCK) {
            let n = block.len();
            for ((lp, p), &x) in log_p.iter_mut().zip(p.iter_mut()).zip(block) {
                *lp = softmax.log_p(x);
                if MASSES {
                    *p = rows::exp(*lp);
                }
            }
            for (&lp, &p) in log_p[..n].iter().zip(&p[..n]) {
                let b = bucket(lp);
                out.counts[b] += 1;
                if MASSES {
                    out.masses[b] += f64::from(p);
                }
            }
        }
        out
    }
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

/// A chunk's `Σ p`, `Σ p·log p` and first largest `p` over the entries with `log p ≥ cut`,
/// `p = exp(z' − max − (ln s)₃₂)`.
struct Probs<'a> {
    z: &'a [f32],
    softmax: Softmax,
    cut: f32,
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
                *lp = self.softmax.log_p(x);
                // Filtered out: weight 0, as the device path's masked weights.
                *p = if *lp >= self.cut { rows::exp(*lp) } else { 0.0 };
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
