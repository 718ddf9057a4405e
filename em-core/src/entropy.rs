//! Token entropy of the full next-token distribution and its closed-form gradient.
//!
//! For logits `z ∈ R^V` and `p = softmax(z)`:
//! - `H(z) = −Σ_j p_j log p_j = logsumexp(z) − Σ_j p_j z_j` (the stable form used here);
//! - `∂H/∂z_i = −p_i (log p_i + H)`.
//!
//! Both are computed from the max-shifted logits `z' = z − max z` (`e = exp z'`, `s = Σ e`):
//! `H = ln s − Σ e·z' / s`, so no entry of `exp` can overflow and `s ≥ 1`.

use burn::tensor::Tensor;

use crate::softmax::{promote, shifted, softmax_entropy, sum_last};
use crate::util::assert_vocab;

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
    entropy_keepdim(promote(logits)).squeeze_dim(1)
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
    softmax_entropy(logits).entropy_grad()
}

/// `[rows, vocab] → [rows, 1]` on compute-dtype logits.
fn entropy_keepdim(logits: Tensor<2>) -> Tensor<2> {
    if let Some(fused) = crate::fused::entropy(&logits) {
        return fused;
    }
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
