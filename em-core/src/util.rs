//! Helpers shared by the numerical kernels: dtype promotion, shape checks and the max-shifted
//! exponentials every softmax-based quantity is built from.

use burn::tensor::{DType, FloatDType, Tensor};

/// Promotes half-precision (and flex32) tensors to f32; f32 and f64 are kept as they are.
pub(crate) fn to_compute<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    match tensor.dtype() {
        DType::F16 | DType::BF16 | DType::Flex32 => tensor.cast(FloatDType::F32),
        _ => tensor,
    }
}

/// Panics unless the last dimension (the vocabulary) is non-empty.
pub(crate) fn assert_vocab<const D: usize>(op: &str, dims: [usize; D]) {
    assert!(
        dims[D - 1] > 0,
        "em_core::{op}: the vocabulary (last) dimension is empty, shape {dims:?}"
    );
}

/// Panics unless two shapes are equal, naming both.
pub(crate) fn assert_same_shape<const D: usize>(
    op: &str,
    what_a: &str,
    a: [usize; D],
    what_b: &str,
    b: [usize; D],
) {
    assert!(
        a == b,
        "em_core::{op}: {what_a} shape {a:?} does not match {what_b} shape {b:?}"
    );
}

/// Block length of [`sum_last`]'s inner level.
const SUM_BLOCK: usize = 256;

/// Sum over the last dimension (kept as size 1) in two levels: blocks of at most
/// [`SUM_BLOCK`] contiguous entries, then the block sums.
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
