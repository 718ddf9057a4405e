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
    let sum = exp.clone().sum_dim(D - 1);
    Shifted { shifted, exp, sum }
}
