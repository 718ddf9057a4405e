//! KL divergences: the full-distribution one (EM-INF's regulariser, EM-FT's optional anchor) and
//! the sampled-token k3 estimator (EM-RL's penalty to the reference policy).

use burn::tensor::Tensor;

use crate::softmax::{promote, shifted, sum_last};
use crate::util::{assert_same_shape, assert_vocab};

/// `KL(p_ref ‖ p) = Σ_j p_ref,j (log p_ref,j − log p_j)` per row, with `p_ref = softmax(reference_logits)`
/// and `p = softmax(logits)`.
///
/// Computed as `Σ e_r (z'_r − z') / s_r − ln s_r + ln s` from both rows' max-shifted logits, so
/// neither log-softmax is formed. Rounding can make a mathematically zero KL come out a few ulps
/// negative: the result is clamped at 0. Entries where `p_ref = 0` (−∞ reference logits)
/// contribute nothing; where `p = 0` but `p_ref > 0` the result is very large (∞ in exact
/// arithmetic). Differentiable under autodiff with respect to both arguments.
///
/// # Shapes
/// - `reference_logits`, `logits`: `[rows, vocab]`
/// - output: `[rows]`
///
/// # Panics
/// If the shapes differ or `vocab` is 0.
pub fn kl_divergence(reference_logits: Tensor<2>, logits: Tensor<2>) -> Tensor<1> {
    assert_same_shape(
        "kl_divergence",
        "reference_logits",
        reference_logits.dims(),
        "logits",
        logits.dims(),
    );
    assert_vocab("kl_divergence", logits.dims());
    let reference = shifted(promote(reference_logits));
    let current = shifted(promote(logits));
    let cross = sum_last(reference.exp * (reference.shifted - current.shifted));
    let kl = cross / reference.sum.clone() - reference.sum.log() + current.sum.log();
    kl.clamp_min(0.0).squeeze_dim(1)
}

/// The k3 estimator of `KL(π ‖ π_ref)` from sampled-token log-probabilities (Schulman's
/// "approximating KL"), as EM-RL uses it: `Δ = ref_log_probs − log_probs`,
/// `k3 = exp(Δ) − Δ − 1`.
///
/// For `|Δ| < 0.1` the Taylor series `Δ²/2 + Δ³/6 + Δ⁴/24 + Δ⁵/120` is used instead: the direct
/// form loses every significant digit there in f32 (it subtracts numbers near 1 to get ~Δ²/2),
/// and the truncation error, below `Δ⁶/720`, is under 3e-7 of the value.
///
/// Following the released verl code, `Δ` is clamped to `[−20, 20]` before the exponential (so a
/// −∞ log-probability cannot overflow) and the result is clamped to `[−10, 10]`. k3 is ≥ 0 in
/// exact arithmetic. Differentiable under autodiff.
///
/// # Shapes
/// - `log_probs`, `ref_log_probs`: `[batch, seq]`
/// - output: `[batch, seq]`
///
/// # Panics
/// If the shapes differ.
pub fn k3_kl(log_probs: Tensor<2>, ref_log_probs: Tensor<2>) -> Tensor<2> {
    assert_same_shape(
        "k3_kl",
        "log_probs",
        log_probs.dims(),
        "ref_log_probs",
        ref_log_probs.dims(),
    );
    let delta = (promote(ref_log_probs) - promote(log_probs)).clamp(-20.0, 20.0);
    let direct = delta.clone().exp() - delta.clone() - 1.0;
    // Horner form of Δ²(1/2 + Δ(1/6 + Δ(1/24 + Δ/120))).
    let series = delta.clone().powi_scalar(2)
        * ((((delta.clone() / 120.0) + 1.0 / 24.0) * delta.clone() + 1.0 / 6.0) * delta.clone()
            + 0.5);
    let small = delta.abs().lower_elem(0.1);
    direct.mask_where(small, series).clamp(-10.0, 10.0)
}
