//! The softmax parts every entropy-minimisation quantity is built from, in one place: the
//! compute dtype ([`promote`]), accurate row sums over long vocabularies ([`sum_last`]), `log p`,
//! `p` and `H` of one softmax together ([`softmax_entropy`] → [`SoftmaxEntropy`], with the
//! entropy gradient [`SoftmaxEntropy::entropy_grad`]), and the entropy of a kept, renormalised
//! subset ([`kept_entropy`]). em-core's own kernels, em-infer's EM-INF and sampler, and the
//! trainers' losses use these; nothing outside em-core writes the entropy formula again.

use burn::tensor::{DType, Tensor};

use crate::util::assert_vocab;

/// The compute dtype: half-precision (and flex32) tensors are promoted to f32; f32 and f64 are
/// kept as they are. Every em-core function computes in it; callers that prepare logits for
/// em-core (em-infer's processors and sampler) use this rather than their own cast.
pub fn promote<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    let target = compute_dtype(tensor.dtype());
    if target == tensor.dtype() {
        tensor
    } else {
        tensor.cast(target)
    }
}

/// The compute dtype of [`promote`] for values stored in `dtype`: f32 for half precision (and
/// flex32), the dtype itself otherwise. Models use it for what they compute beside the weights
/// (norms, RoPE tables, logits).
pub fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 | DType::Flex32 => DType::F32,
        other => other,
    }
}

/// `log p`, `p` and `H` of one softmax, computed together: what a caller needs for the entropy
/// gradient and for anything else built on the same distribution (EM-INF's update uses all
/// three and the entropy for its threshold), without recomputing the softmax.
#[derive(Debug, Clone)]
pub struct SoftmaxEntropy {
    /// `log softmax(z)`, `[rows, vocab]`; −∞ entries are clamped to `f32::MIN`.
    pub log_probs: Tensor<2>,
    /// `softmax(z)`, `[rows, vocab]`.
    pub probs: Tensor<2>,
    /// `H` per row, `[rows, 1]`.
    pub entropy: Tensor<2>,
}

/// Computes [`SoftmaxEntropy`] in the compute dtype (see [`crate::entropy()`]).
///
/// With `z' = z − max z` and `s = Σ exp z'`: `log p = z' − ln s`, `p = exp(log p)` and
/// `H = ln s − Σ p·z'`, so `s` itself is never broadcast. The algebraically equal form that
/// broadcasts both `s` (for e/s and Σ e·z'/s) and `ln s` was miscompiled by burn 0.22.1's
/// CubeCL reduce-broadcast fusion on wgpu (a V = 2 row came out ~6x too large: the division by
/// `s` read `ln s`); `tests/suite/gradients.rs` checks [`crate::entropy_grad`] against f64 on every
/// backend. For a uniform row `z' = 0`, so `log p + H` is exactly 0.
///
/// # Panics
/// If `vocab` is 0.
pub fn softmax_entropy(logits: Tensor<2>) -> SoftmaxEntropy {
    assert_vocab("softmax_entropy", logits.dims());
    let logits = promote(logits);
    if let Some(fused) = crate::fused::softmax_entropy(&logits) {
        return fused;
    }
    let s = shifted(logits);
    let log_sum = s.sum.log();
    let log_probs = s.shifted.clone() - log_sum.clone();
    let probs = log_probs.clone().exp();
    let entropy = log_sum - sum_last(probs.clone() * s.shifted);
    SoftmaxEntropy {
        log_probs,
        probs,
        entropy,
    }
}

impl SoftmaxEntropy {
    /// The entropy's gradient with respect to the logits, `∂H/∂z = −p ⊙ (log p + H)`, from
    /// the parts already computed (no second softmax). The one place this formula is written.
    ///
    /// # Shapes
    /// `[rows, vocab]`.
    pub fn entropy_grad(&self) -> Tensor<2> {
        -(self.probs.clone() * (self.log_probs.clone() + self.entropy.clone()))
    }
}

/// The entropy of a distribution restricted to a kept set and renormalised, from the full
/// distribution's `log p` and the kept weights `w` (`p` where kept, 0 elsewhere):
/// with `T = Σ w`, `H = ln T − Σ w·log p / T` (entries with `w = 0` contribute exactly 0 as
/// long as their `log p` is finite, which [`SoftmaxEntropy::log_probs`] guarantees). What a
/// sampler reports for the distribution a token was drawn from after top-k/top-p/min-p.
#[derive(Debug, Clone)]
pub struct KeptEntropy {
    /// `T = Σ w`, `[rows, 1]`.
    pub total: Tensor<2>,
    /// `ln T`, `[rows, 1]`: subtract it from `log p` for the renormalised log-probabilities.
    pub log_total: Tensor<2>,
    /// `H` of the renormalised kept distribution, `[rows, 1]`.
    pub entropy: Tensor<2>,
}

/// Computes [`KeptEntropy`].
///
/// # Shapes
/// - `weights`, `log_probs`: `[rows, vocab]`
///
/// # Panics
/// If the shapes differ or `vocab` is 0.
pub fn kept_entropy(weights: Tensor<2>, log_probs: Tensor<2>) -> KeptEntropy {
    crate::util::assert_same_shape(
        "kept_entropy",
        "weights",
        weights.dims(),
        "log_probs",
        log_probs.dims(),
    );
    assert_vocab("kept_entropy", weights.dims());
    if let Some(fused) = crate::fused::kept_entropy(&weights, &log_probs) {
        return fused;
    }
    let total = sum_last(weights.clone());
    let log_total = total.clone().log();
    let entropy = log_total.clone() - sum_last(weights * log_probs) / total.clone();
    KeptEntropy {
        total,
        log_total,
        entropy,
    }
}

/// Block length of [`sum_last`]'s inner level.
const SUM_BLOCK: usize = 256;

/// Sum over the last dimension (kept as size 1) in two levels: blocks of at most
/// `SUM_BLOCK` contiguous entries, then the block sums.
///
/// A backend that reduces a row sequentially accumulates rounding error proportional to the row
/// length: over 151,936 entries in f32, adding ~6e-6 terms to a running sum near 1 drifts by up
/// to ~1% (measured on a peaked Qwen-sized row). Blocking bounds the error by the block length
/// plus the block count whatever order the backend uses, for the price of a free reshape; the
/// block sums are summed the same way, so no chain of additions is longer than a few hundred
/// (Qwen2.5's 151,936 = 1187 blocks of 128; the 1187 block sums = 4 blocks of 256 + a tail of
/// 163). Rows whose length has no power-of-two factor ≥ 32 are split into a blocked prefix and a
/// short tail.
pub fn sum_last<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    let dims = tensor.dims();
    let len = dims[D - 1];
    let mut out_dims = dims;
    out_dims[D - 1] = 1;
    if len <= 2 * SUM_BLOCK {
        return tensor.sum_dim(D - 1);
    }
    let rows: usize = dims[..D - 1].iter().product();
    let flat: Tensor<2> = tensor.reshape([rows, len]);
    // The largest power of two ≤ SUM_BLOCK dividing the length.
    let block = (1usize << len.trailing_zeros()).min(SUM_BLOCK);
    let sums = if block >= 32 {
        blocked_sum(flat, block)
    } else {
        let head = len - len % SUM_BLOCK;
        let tail = flat.clone().slice([0..rows, head..len]).sum_dim(1);
        blocked_sum(flat.slice([0..rows, 0..head]), SUM_BLOCK) + tail
    };
    sums.reshape(out_dims)
}

/// `[rows, len] → [rows, 1]` with `len` a multiple of `block`.
fn blocked_sum(flat: Tensor<2>, block: usize) -> Tensor<2> {
    let [rows, len] = flat.dims();
    let blocks = len / block;
    let partial: Tensor<2> = flat
        .reshape([rows, blocks, block])
        .sum_dim(2)
        .reshape([rows, blocks]);
    sum_last(partial)
}

/// The pieces of a numerically stable softmax along the last dimension.
pub(crate) struct Shifted<const D: usize> {
    /// `z - max(z)`, with −∞ entries clamped to `f32::MIN` so that `0 · z` stays 0.
    pub shifted: Tensor<D>,
    /// `exp(z - max(z))`; its maximum entry is exactly 1.
    pub exp: Tensor<D>,
    /// `Σ exp(z - max(z))` (keepdim), always ≥ 1 for a row with a finite maximum.
    pub sum: Tensor<D>,
}

/// Shifts the logits by their (detached) row maximum. The maximum carries no gradient: every
/// quantity built on it is shift-invariant, so its gradient is exactly zero and would only cost
/// a backward pass through `max_dim`.
pub(crate) fn shifted<const D: usize>(logits: Tensor<D>) -> Shifted<D> {
    let max = logits.clone().max_dim(D - 1).detach();
    let shifted = (logits - max).clamp_min(f32::MIN);
    let exp = shifted.clone().exp();
    let sum = sum_last(exp.clone());
    Shifted { shifted, exp, sum }
}
