//! Rotary position embedding in Hugging Face's "rotate half" layout: dimension `i` is paired with
//! `i + head_dim/2` (burn-nn's `RotaryEncoding` pairs adjacent dimensions instead, which is why
//! this crate has its own). Frequencies and angles are computed in f64 on the host, so positions
//! up to the model's full context keep full precision; [`reference_rope`] is the slow twin used
//! by the tests.

use burn::tensor::{DType, Device, Tensor};

use crate::build::host_tensor;
use crate::config::Qwen2Config;
use crate::model::each_chunk_mut;

/// The inverse frequencies of one head, with Llama-3 scaling applied when configured.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f64>,
}

impl RotaryEmbedding {
    /// Frequencies for `config` (assumed validated).
    pub fn new(config: &Qwen2Config) -> Self {
        let head_dim = config.head_size();
        let mut inv_freq: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        if let Some(scaling) = &config.rope_scaling
            && scaling.rope_type == "llama3"
        {
            let factor = scaling.factor.unwrap_or(1.0);
            let low = scaling.low_freq_factor.unwrap_or(1.0);
            let high = scaling.high_freq_factor.unwrap_or(4.0);
            let old_context = scaling.original_max_position_embeddings.unwrap_or(8192.0);
            let low_freq_wavelen = old_context / low;
            let high_freq_wavelen = old_context / high;
            for f in &mut inv_freq {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen < high_freq_wavelen {
                    // high frequency: unchanged
                } else if wavelen > low_freq_wavelen {
                    *f /= factor;
                } else {
                    let smooth = (old_context / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        Self { inv_freq }
    }

    /// Wraps precomputed inverse frequencies.
    pub fn from_inv_freq(inv_freq: Vec<f64>) -> Self {
        Self { inv_freq }
    }

    /// The inverse frequencies (`head_dim / 2` of them).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// `cos` and `sin` tables `[batch, 1, seq, head_dim]` for the given per-row positions
    /// (`positions[b][t]`), computed in f64 on the host and uploaded in `dtype` (f64 for an f64
    /// model, else f32) on `device`.
    pub fn tables(
        &self,
        positions: &[Vec<usize>],
        device: &Device,
        dtype: DType,
    ) -> (Tensor<4>, Tensor<4>) {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let head_dim = 2 * half;
        let mut cos = Vec::with_capacity(batch * seq * head_dim);
        let mut sin = Vec::with_capacity(batch * seq * head_dim);
        for row in positions {
            for &p in row {
                let start = cos.len();
                for f in &self.inv_freq {
                    let angle = p as f64 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
                cos.extend_from_within(start..start + half);
                sin.extend_from_within(start..start + half);
            }
        }
        let shape = [batch, 1, seq, head_dim];
        (
            host_tensor(&cos, shape, device, dtype),
            host_tensor(&sin, shape, device, dtype),
        )
    }
}

/// Applies the rotation to `x: [batch, heads, seq, head_dim]` with tables from
/// [`RotaryEmbedding::tables`]: `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [batch, heads, seq, head_dim] = x.dims();
    let half = head_dim / 2;
    let dtype = x.dtype();
    let (cos, sin) = (cos.clone().cast(dtype), sin.clone().cast(dtype));
    let x1 = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
    let x2 = x
        .clone()
        .slice([0..batch, 0..heads, 0..seq, half..head_dim]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// [`apply_rope`] on a projection's output before its heads are split: `x: [batch, seq,
/// heads · head_dim]` in, the same layout out. Plain f32 tensors on flex (and f32 tables) take
/// one host pass over the rows, at the CPU's SIMD width ([`em_core::fused::rows`]), where burn's
/// version makes six passes (two slices, a negation, a concatenation, two products and a sum;
/// 14 ops per layer of a decode step). The same f32 operations in the same order as
/// [`apply_rope`] (`x·cos + rotate_half(x)·sin`, each product rounded, then the sum), so the
/// two agree exactly (tested). Anything else returns `None`: the caller splits the heads and
/// runs [`apply_rope`].
///
/// # Shapes
/// `x`: `[batch, seq, heads · head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`.
pub(crate) fn rope_rows(x: &Tensor<3>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<3>> {
    use em_core::fused::{host_rows, rows, tensor_from_rows};
    let [batch, seq, width] = x.dims();
    let [cb, one, cs, d] = cos.dims();
    if cb != batch
        || one != 1
        || cs != seq
        || sin.dims() != cos.dims()
        || d == 0
        || !d.is_multiple_of(2)
        || !width.is_multiple_of(d)
    {
        return None;
    }
    let n = batch * seq;
    let x_rows = host_rows(&x.clone().reshape([n, width]))?;
    let cos = host_rows(&cos.clone().reshape([n, d]))?;
    let sin = host_rows(&sin.clone().reshape([n, d]))?;
    let (xv, cv, sv) = (x_rows.values(), cos.values(), sin.values());
    let mut out = vec![0f32; n * width];
    each_chunk_mut(&mut out, width, n * width >= rows::CHUNK, |i, out| {
        rows::vectorized(Rope {
            out,
            x: &xv[i * width..(i + 1) * width],
            c: &cv[i * d..(i + 1) * d],
            s: &sv[i * d..(i + 1) * d],
        });
    });
    Some(tensor_from_rows(out, [n, width], &x.device()).reshape([batch, seq, width]))
}

/// One position of [`rope_rows`]: every head of `x` rotated by the tables `c`, `s`.
struct Rope<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    c: &'a [f32],
    s: &'a [f32],
}

impl em_core::fused::rows::Kernel for Rope<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let d = self.c.len();
        let half = d / 2;
        let (c1, c2) = self.c.split_at(half);
        let (s1, s2) = self.s.split_at(half);
        for (out, x) in self.out.chunks_exact_mut(d).zip(self.x.chunks_exact(d)) {
            let (x1, x2) = x.split_at(half);
            let (o1, o2) = out.split_at_mut(half);
            for i in 0..half {
                o1[i] = x1[i] * c1[i] + -x2[i] * s1[i];
                o2[i] = x2[i] * c2[i] + x1[i] * s2[i];
            }
        }
    }
}

/// Slow f64 twin of [`apply_rope`] for one row: `x` is `[seq, heads, head_dim]` row-major,
/// rotated in place by explicit 2×2 rotations of the pairs `(i, i + head_dim/2)`.
pub fn reference_rope(x: &mut [f64], positions: &[usize], heads: usize, inv_freq: &[f64]) {
    let half = inv_freq.len();
    let head_dim = 2 * half;
    for (t, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * head_dim;
            for (i, f) in inv_freq.iter().enumerate() {
                let (s, c) = (p as f64 * f).sin_cos();
                let (a, b) = (x[base + i], x[base + i + half]);
                x[base + i] = a * c - b * s;
                x[base + i + half] = b * c + a * s;
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn random(shape: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
        crate::testing::normal_tensor(shape, seed, device)
    }

    /// The host pass against burn's ops (`apply_rope` on the split heads), entry for entry:
    /// a decode step (one position), left-padded rows at different positions, and a prefill
    /// large enough for the parallel split.
    #[test]
    fn rope_rows_equal_apply_rope() {
        let device = Device::flex();
        let rope = RotaryEmbedding::from_inv_freq(
            (0..32)
                .map(|i| 1e6f64.powf(-(2.0 * i as f64) / 64.0))
                .collect(),
        );
        let cases: [(usize, usize, usize, Vec<Vec<usize>>); 3] = [
            (1, 1, 14, vec![vec![300]]),
            (2, 3, 2, vec![vec![0, 1, 2], vec![7, 8, 9]]),
            (1, 40, 14, vec![(0..40).collect()]),
        ];
        for (seed, (batch, seq, heads, positions)) in cases.into_iter().enumerate() {
            let (cos, sin) = rope.tables(&positions, &device, DType::F32);
            let x = random([batch, seq, heads * 64], seed as u64, &device);
            let got = rope_rows(&x, &cos, &sin).expect("plain f32 flex tensors take the host pass");
            let want = apply_rope(
                x.reshape([batch, seq, heads, 64]).swap_dims(1, 2),
                &cos,
                &sin,
            )
            .swap_dims(1, 2)
            .reshape([batch, seq, heads * 64]);
            let got = got.into_data().try_to_vec::<f32>().unwrap();
            let want = want.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(got, want, "case {seed}");
        }
    }

    #[test]
    fn other_inputs_take_burns_ops() {
        let device = Device::flex();
        let rope = RotaryEmbedding::from_inv_freq(vec![1.0, 0.1]);
        let (cos, sin) = rope.tables(&[vec![0, 1]], &device, DType::F32);
        let x = random([1, 2, 8], 1, &device);
        assert!(rope_rows(&x, &cos, &sin).is_some());
        // A width that is not whole heads, tables for another length, f64 values.
        assert!(rope_rows(&random([1, 2, 6], 2, &device), &cos, &sin).is_none());
        assert!(rope_rows(&random([1, 3, 8], 3, &device), &cos, &sin).is_none());
        assert!(rope_rows(&x.cast(DType::F64), &cos, &sin).is_none());
    }
}
