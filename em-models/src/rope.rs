//! Rotary position embedding in Hugging Face's "rotate half" layout: dimension `i` is paired with
//! `i + head_dim/2` (burn-nn's `RotaryEncoding` pairs adjacent dimensions instead, which is why
//! this crate has its own). Frequencies and angles are computed in f64 on the host, so positions
//! up to the model's full context keep full precision; [`reference_rope`] is the slow twin used
//! by the tests.

use burn::tensor::{DType, Device, Tensor};

use crate::build::host_tensor;
use crate::config::Qwen2Config;

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
