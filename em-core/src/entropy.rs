//! Token entropy of the full next-token distribution and its closed-form gradient.
//!
//! For logits `z ∈ R^V` and `p = softmax(z)`:
//! - `H(z) = −Σ_j p_j log p_j = logsumexp(z) − Σ_j p_j z_j` (the stable form used here);
//! - `∂H/∂z_i = −p_i (log p_i + H)`.
//!
//! Both are computed from the max-shifted logits `z' = z − max z` (`e = exp z'`, `s = Σ e`):
//! `H = ln s − Σ e·z' / s`, so no entry of `exp` can overflow and `s ≥ 1`.

use burn::tensor::Tensor;

use crate::util::{assert_vocab, shifted, sum_last, to_compute};

/// Entropy (in nats) of `softmax` over the last dimension, one value per row.
///
/// Differentiable under autodiff; the gradient equals [`entropy_grad`].
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
/// - output: `[rows]`, f32 for f32/f16/bf16 input, f64 for f64 input.
///
/// # Panics
/// If `vocab` is 0.
pub fn entropy(logits: Tensor<2>) -> Tensor<1> {
    assert_vocab("entropy", logits.dims());
    entropy_keepdim(to_compute(logits)).squeeze_dim(1)
}

/// Entropy per token: `[batch, seq, vocab] → [batch, seq]`.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`
/// - output: `[batch, seq]`
///
/// # Panics
/// If `vocab` is 0.
pub fn token_entropy(logits: Tensor<3>) -> Tensor<2> {
    let [batch, seq, vocab] = logits.dims();
    assert_vocab("token_entropy", [batch, seq, vocab]);
    entropy(logits.reshape([batch * seq, vocab])).reshape([batch, seq])
}

/// Closed-form gradient of [`entropy`] with respect to the logits: `−p ⊙ (log p + H)`.
///
/// No autodiff graph is built; this is the hot-path form used by EM-INF.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
/// - output: `[rows, vocab]`, in the compute dtype (see [`entropy`]).
///
/// # Panics
/// If `vocab` is 0.
pub fn entropy_grad(logits: Tensor<2>) -> Tensor<2> {
    assert_vocab("entropy_grad", logits.dims());
    let parts = softmax_entropy(logits);
    -(parts.probs * (parts.log_probs + parts.entropy))
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

/// Computes [`SoftmaxEntropy`] in the compute dtype (see [`entropy`]).
///
/// With `z' = z − max z` and `s = Σ exp z'`: `log p = z' − ln s`, `p = exp(log p)` and
/// `H = ln s − Σ p·z'`, so `s` itself is never broadcast. The algebraically equal form that
/// broadcasts both `s` (for e/s and Σ e·z'/s) and `ln s` was miscompiled by burn 0.22.1's
/// CubeCL reduce-broadcast fusion on wgpu (a V = 2 row came out ~6x too large: the division by
/// `s` read `ln s`); `tests/suite/gradients.rs` checks [`entropy_grad`] against f64 on every
/// backend. For a uniform row `z' = 0`, so `log p + H` is exactly 0.
///
/// # Panics
/// If `vocab` is 0.
pub fn softmax_entropy(logits: Tensor<2>) -> SoftmaxEntropy {
    assert_vocab("softmax_entropy", logits.dims());
    let s = shifted(to_compute(logits));
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

/// `[rows, vocab] → [rows, 1]` on compute-dtype logits.
fn entropy_keepdim(logits: Tensor<2>) -> Tensor<2> {
    let s = shifted(logits);
    let weighted = sum_last(s.exp * s.shifted);
    s.sum.clone().log() - weighted / s.sum
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn rows(values: &[f32], vocab: usize) -> Tensor<2> {
        let device = Device::default();
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len() / vocab, vocab]),
            &device,
        )
    }

    #[test]
    fn uniform_row_has_entropy_ln_v_and_zero_gradient() {
        let h: Vec<f32> = entropy(rows(&[2.5; 8], 8))
            .into_data()
            .try_into_vec()
            .unwrap();
        assert!((h[0] - 8f32.ln()).abs() < 1e-6, "{h:?}");
        let g: Vec<f32> = entropy_grad(rows(&[2.5; 8], 8))
            .into_data()
            .try_into_vec()
            .unwrap();
        assert!(g.iter().all(|x| x.abs() < 1e-7), "{g:?}");
    }

    #[test]
    fn single_entry_vocabulary_has_zero_entropy() {
        let h: Vec<f32> = entropy(rows(&[-3.0, 7.0], 1))
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(h, vec![0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "vocabulary (last) dimension is empty, shape [3, 0]")]
    fn empty_vocabulary_is_rejected() {
        let _ = entropy(Tensor::<2>::empty([3, 0], &Device::default()));
    }
}
