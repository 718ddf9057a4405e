//! Attention over the KV cache on the host: the new positions of each row (one when decoding,
//! the prompt when prefilling), read against the cache's buffers in place, for plain f32
//! tensors on flex (the CPU).
//!
//! Why: a decode step's attention is tiny (at 256 cached positions of the 0.5B model, 14 query
//! rows × 256 keys × 64 per layer) but burn-flex's attention pays for it as a general op: it
//! copies the visible part of the cache out of its buffer, runs two gemm calls per head and a
//! libm `expf` per score, ~80 µs per layer (~2 ms of a ~45 ms f16 decode step; timers around
//! each section of the step, `generate` example, 257 tokens, #14's note); a prefill repeats the
//! kv heads for every query head and computes the whole `[seq, total]` square of scores, half
//! of it masked. Here each (row, position, kv head) is one task: its query heads' scores over
//! the keys that position sees (a product by the keys as they lie in the buffer, on
//! [`crate::kernels`]' decode kernels), their softmax (with em-core's vectorizable `exp`,
//! compiled at the CPU's SIMD width, [`em_core::fused::rows::vectorized`]) and the weighted sum
//! of the values (a second product). Its speed is `cargo bench -p em-benches --bench
//! attention`.
//!
//! The same mathematics as burn's attention with the layer's mask (scale `1/√head_dim`, a
//! max-shifted softmax, masked keys excluded); only the summation order and `exp` differ, so the
//! two agree to f32 rounding (the unit test below runs burn's op as the twin). Everything else
//! (other backends, autodiff, f64, strided tensors) returns `None` and takes burn's op.

use std::ops::Range;

use burn::tensor::Tensor;
use em_core::fused::{host_rows, rows, tensor_from_rows};

use crate::kernels::{Kernels, Layout, MAX_ROWS, matmul_serial};
use crate::model::each_chunk_mut;

/// Lanes of the fixed-lane sums.
const LANES: usize = 16;
/// Multiply-adds per kv head of one call below which its tasks run on the calling thread (a
/// few µs; one task's when decoding a single row).
const PARALLEL_WORK: usize = 1 << 15;

/// The keys the query at absolute slot `at` of a row whose real tokens sit at `span` may see,
/// as at most two runs of consecutive slots, ascending: the row's tokens up to `at`, and `at`
/// itself when that is not among them (a padding query sees only itself). The rule of the
/// model's attention mask (`span_mask`): key `j` is visible iff `span.start ≤ j ≤ at` and
/// `j < span.end`, or `j = at`.
fn visible_runs(span: &Range<usize>, at: usize) -> [Range<usize>; 2] {
    let own = span.start..span.end.min(at + 1);
    if own.contains(&at) {
        [own, at..at]
    } else {
        [own, at..at + 1]
    }
}

/// Attention of the `seq` new positions of each row, `q: [batch, heads, seq, head_dim]` (one
/// when decoding, the prompt when prefilling), against the first `total` positions of the
/// cache buffers `keys`, `values` (`[batch, kv_heads, capacity, head_dim]`), the new positions
/// at slots `total - seq..total`, row `b`'s real tokens at `spans[b]`; each query sees the keys
/// the model's mask lets it see (causal within its row's span, `visible_runs`). Query head
/// `h` reads kv head `h / (heads / kv_heads)`. Returns `[batch, seq, heads · head_dim]`, or
/// `None` where burn's attention must run (see the module). `kernels` runs the two products
/// ([`Kernels::detect`] for this CPU's fastest).
///
/// One task per (row, position, kv head): a position's query heads share its keys, so a prefill
/// is `seq` decode steps' attention, each over its own causal prefix only (burn's masked op
/// computes every score of the `[seq, total]` square and masks half of them).
pub fn cache_attention(
    kernels: Kernels,
    q: &Tensor<4>,
    keys: &Tensor<4>,
    values: &Tensor<4>,
    total: usize,
    spans: &[Range<usize>],
) -> Option<Tensor<3>> {
    let [batch, heads, seq, d] = q.dims();
    let [kb, kv_heads, capacity, kd] = keys.dims();
    if seq == 0
        || seq > total
        || kb != batch
        || kd != d
        || d == 0
        || values.dims() != keys.dims()
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || total > capacity
        || spans.len() != batch
    {
        return None;
    }
    let rep = heads / kv_heads;
    let flat = |t: &Tensor<4>, n: usize| host_rows(&t.clone().reshape([n, d]));
    let (qh, kh, vh) = (
        flat(q, batch * heads * seq)?,
        flat(keys, batch * kv_heads * capacity)?,
        flat(values, batch * kv_heads * capacity)?,
    );
    let (qv, kv, vv) = (qh.values(), kh.values(), vh.values());
    let start = total - seq;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; batch * seq * heads * d];
    // Split across threads when there is enough work (2 multiply-adds per query head, visible
    // key and dimension, ~half the keys when prefilling).
    let keys_seen = if seq == 1 { total } else { total - seq / 2 };
    let tasks = batch * seq * kv_heads;
    let parallel = tasks > 1 && 2 * rep * batch * seq * keys_seen * d >= PARALLEL_WORK;
    each_chunk_mut(&mut out, rep * d, parallel, |index, out| {
        let (bs, g) = (index / kv_heads, index % kv_heads);
        let (b, s) = (bs / seq, bs % seq);
        let cache = (b * kv_heads + g) * capacity * d;
        // The position's query heads of this kv head, `[rep, d]` (`seq` rows apart in `q`).
        let mut queries = Vec::with_capacity(rep * d);
        for h in g * rep..(g + 1) * rep {
            let row = ((b * heads + h) * seq + s) * d;
            queries.extend_from_slice(&qv[row..row + d]);
        }
        let runs = visible_runs(&spans[b], start + s);
        // At most `MAX_ROWS` query heads per product.
        for (group, out) in queries
            .chunks(MAX_ROWS * d)
            .zip(out.chunks_mut(MAX_ROWS * d))
        {
            head_group(
                kernels,
                group,
                &kv[cache..],
                &vv[cache..],
                &runs,
                d,
                scale,
                out,
            );
        }
    });
    Some(
        tensor_from_rows(out, [batch * seq, heads * d], &q.device()).reshape([
            batch,
            seq,
            heads * d,
        ]),
    )
}

/// Up to [`MAX_ROWS`] query heads `q: [g, d]` sharing one kv head, against its visible keys
/// `runs` (of `keys`, `values`: `[≥ total, d]`), into `out: [g, d]` (zero on entry).
///
/// Both halves are products the decode kernels already run: the scores of a run are
/// `q · K_runᵀ`, a `[g, d] × [d, n]` product with `K_run` stored `[n, d]` (the tied head's NK
/// layout), and the output adds `P_run · V_run`, `[g, n] × [n, d]` with `V_run` stored `[n, d]`
/// (the layers' KN layout). The kernels keep `g × streams` accumulators in registers and sum
/// lanes once per key and head; the first version here summed sixteen lanes one after the other
/// for every key and head, ~390 µs per layer at 2048 cached positions (the `attention` bench).
#[allow(clippy::too_many_arguments)]
fn head_group(
    kernels: Kernels,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    runs: &[Range<usize>; 2],
    d: usize,
    scale: f32,
    out: &mut [f32],
) {
    let g = q.len() / d;
    fn stored<'t>(t: &'t [f32], run: &Range<usize>, d: usize) -> &'t [f32] {
        &t[run.start * d..run.end * d]
    }
    // `[g, n_r]` scores of each run.
    let mut scores: Vec<Vec<f32>> = runs
        .iter()
        .map(|run| match run.len() {
            0 => Vec::new(),
            n => matmul_serial(kernels, q, g, stored(keys, run, d), Layout::NK, [d, n]),
        })
        .collect();
    rows::vectorized(Softmax {
        runs: &mut scores,
        heads: g,
        scale,
    });
    for (p, run) in scores.iter().zip(runs) {
        if !run.is_empty() {
            let y = matmul_serial(
                kernels,
                p,
                g,
                stored(values, run, d),
                Layout::KN,
                [run.len(), d],
            );
            out.iter_mut().zip(&y).for_each(|(o, y)| *o += y);
        }
    }
}

/// The scores of [`head_group`] (`runs[r]: [heads, n_r]`, an empty run empty) → each query
/// head's softmax over all of its runs' keys, in place: `p = exp(scale·s − max) / Σ`,
/// max-shifted as burn's op.
struct Softmax<'a> {
    runs: &'a mut [Vec<f32>],
    heads: usize,
    scale: f32,
}

impl rows::Kernel for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let heads = self.heads;
        for h in 0..heads {
            let mut max = f32::NEG_INFINITY;
            for run in self.runs.iter_mut() {
                let at = head_row(run.len(), heads, h);
                for s in &mut run[at.clone()] {
                    *s *= self.scale;
                }
                max = max.max(lane_max(&run[at]));
            }
            let mut sum = 0f32;
            for run in self.runs.iter_mut() {
                let at = head_row(run.len(), heads, h);
                for s in &mut run[at.clone()] {
                    *s = rows::exp(*s - max);
                }
                sum += lane_sum(&run[at]);
            }
            let inv = 1.0 / sum;
            for run in self.runs.iter_mut() {
                let at = head_row(run.len(), heads, h);
                for s in &mut run[at] {
                    *s *= inv;
                }
            }
        }
    }
}

/// Head `h`'s stretch of a `[heads, n]` run of `len` scores (empty for an empty run). A
/// function, not a closure: the kernel's loops must inline all they call.
#[inline(always)]
fn head_row(len: usize, heads: usize, h: usize) -> Range<usize> {
    let w = len / heads;
    h * w..(h + 1) * w
}

/// The largest of `row` (NaN-free scores), over [`LANES`] lanes.
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            m[l] = m[l].max(c[l]);
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        m[l] = m[l].max(x);
    }
    let mut max = f32::NEG_INFINITY;
    for x in m {
        max = max.max(x);
    }
    max
}

/// The sum of `row` over [`LANES`] lanes, the tail into the first lanes.
#[inline(always)]
fn lane_sum(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        acc[l] += x;
    }
    let mut sum = 0f32;
    for x in acc {
        sum += x;
    }
    sum
}

/// `a · b` over [`LANES`] fixed accumulators (so it vectorizes), then the tail. The RmsNorm
/// host pass's sum of squares (`dot(x, x)`).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ac = a.chunks_exact(LANES);
    let mut bc = b.chunks_exact(LANES);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(all(test, feature = "flex"))]
#[allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]
mod tests {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Bool, Device, Tensor, TensorData};

    use super::*;

    /// The mask rule key by key (`span_mask`): the oracle for [`visible_runs`] and the twin.
    fn visible(span: &Range<usize>, at: usize, j: usize) -> bool {
        (span.start <= j && j <= at && j < span.end) || j == at
    }

    fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        crate::testing::normal_tensor(shape, seed, device)
    }

    /// burn's attention over the visible prefix with the query heads' kv heads repeated and
    /// the mask built key by key: the op this module replaces.
    fn twin(
        q: &Tensor<4>,
        keys: &Tensor<4>,
        values: &Tensor<4>,
        total: usize,
        spans: &[Range<usize>],
    ) -> Vec<f32> {
        let [batch, heads, seq, d] = q.dims();
        let kv_heads = keys.dims()[1];
        let rep = heads / kv_heads;
        let device = q.device();
        let expand = |t: &Tensor<4>| {
            t.clone()
                .slice([0..batch, 0..kv_heads, 0..total, 0..d])
                .unsqueeze_dim::<5>(2)
                .expand([batch, kv_heads, rep, total, d])
                .reshape([batch, heads, total, d])
        };
        let mask: Vec<bool> = spans
            .iter()
            .flat_map(|span| {
                (total - seq..total)
                    .flat_map(move |at| (0..total).map(move |j| !visible(span, at, j)))
            })
            .collect();
        let mask =
            Tensor::<4, Bool>::from_data(TensorData::new(mask, [batch, 1, seq, total]), &device)
                .expand([batch, heads, seq, total]);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        attention(
            q.clone(),
            expand(keys),
            expand(values),
            Some(mask),
            None,
            options,
        )
        .swap_dims(1, 2)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
    }

    #[test]
    fn cache_attention_matches_burns_attention() {
        let device = Device::flex();
        // (batch, heads, kv heads, head_dim, capacity, total, new positions, spans): decoding
        // with grouped, plain and single-kv-head attention, a head width that is not a
        // multiple of the lanes, left padding, a row whose query is padding (it sees only
        // itself), enough work to take the parallel split; prefills of a whole prompt and of a
        // continuation after cached positions, with padding queries; every kind of product
        // kernel this CPU has.
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            Vec<Range<usize>>,
        );
        let cases: Vec<Case> = vec![
            (1, 14, 2, 64, 300, 257, 1, vec![0..257]),
            (2, 4, 4, 24, 16, 9, 1, vec![3..9, 0..9]),
            (3, 6, 1, 40, 32, 12, 1, vec![0..12, 5..12, 12..12]),
            (
                8,
                14,
                2,
                64,
                200,
                130,
                1,
                (0..8).map(|b| b * 7..130).collect(),
            ),
            // a head width of one lane vector, ragged stream and panel ends
            (2, 3, 3, 16, 90, 85, 1, vec![0..85, 19..85]),
            // more query heads per kv head than one product takes (two groups: 8 + 3)
            (2, 22, 2, 32, 50, 41, 1, vec![0..41, 30..40]),
            // prefills
            (2, 14, 2, 64, 40, 37, 37, vec![0..37, 5..37]),
            (2, 6, 2, 24, 24, 20, 6, vec![3..20, 0..20]),
            (1, 22, 2, 32, 70, 70, 70, vec![0..70]),
        ];
        for (seed, (batch, heads, kv_heads, d, capacity, total, seq, spans)) in
            cases.into_iter().enumerate()
        {
            let seed = seed as u64 * 3;
            let q = random([batch, heads, seq, d], seed, &device);
            let keys = random([batch, kv_heads, capacity, d], seed + 1, &device);
            let values = random([batch, kv_heads, capacity, d], seed + 2, &device);
            let want = twin(&q, &keys, &values, total, &spans);
            for kernels in Kernels::available() {
                let got = cache_attention(kernels, &q, &keys, &values, total, &spans)
                    .expect("plain f32 flex tensors take the host path");
                assert_eq!(got.dims(), [batch, seq, heads * d]);
                let got: Vec<f32> = got.into_data().try_to_vec::<f32>().unwrap();
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let name = kernels.name();
                assert!(
                    diff < 1e-5,
                    "case {seed}, {name}: max |host − burn| = {diff:e}"
                );
            }
        }
    }

    #[test]
    fn visible_runs_list_the_masks_keys() {
        for total in 1..12 {
            let at = total - 1;
            for start in 0..=total {
                for end in start..=total {
                    let span = start..end;
                    let want: Vec<usize> = (0..total).filter(|&j| visible(&span, at, j)).collect();
                    let got: Vec<usize> = visible_runs(&span, at).into_iter().flatten().collect();
                    assert_eq!(got, want, "span {span:?}, at {at}");
                }
            }
        }
    }

    #[test]
    fn other_tensors_take_burns_path() {
        let device = Device::flex();
        let q = random([1, 4, 3, 8], 1, &device);
        let keys = random([1, 2, 8, 8], 2, &device);
        // more new positions than cached ones, a total beyond the buffer, a span per row
        // missing
        assert!(cache_attention(Kernels::detect(), &q, &keys, &keys, 2, &[0..2]).is_none());
        assert!(cache_attention(Kernels::detect(), &q, &keys, &keys, 3, &[0..3]).is_some());
        let q = q.slice([0..1, 0..4, 0..1, 0..8]);
        assert!(cache_attention(Kernels::detect(), &q, &keys, &keys, 9, &[0..9]).is_none());
        assert!(cache_attention(Kernels::detect(), &q, &keys, &keys, 4, &[]).is_none());
        assert!(cache_attention(Kernels::detect(), &q, &keys, &keys, 4, &[0..4]).is_some());
        let f64_keys = keys.clone().cast(burn::tensor::DType::F64);
        assert!(cache_attention(Kernels::detect(), &q, &f64_keys, &f64_keys, 4, &[0..4]).is_none());
    }
}
