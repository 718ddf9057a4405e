//! Log-probabilities of chosen tokens and the log-partition function.

use burn::tensor::{Int, Tensor};

use crate::softmax::{promote, sum_last};
use crate::util::{assert_same_shape, assert_vocab};

/// `log Σ_j exp(z_j)` over the last dimension, kept as a size-1 dimension.
///
/// Stable for any finite or −∞ logits (the row maximum is subtracted first).
///
/// # Shapes
/// - `logits`: `[..., vocab]`
/// - output: `[..., 1]`, in the compute dtype (f32 for half precision input).
///
/// # Panics
/// If `vocab` is 0.
pub fn log_sum_exp<const D: usize>(logits: Tensor<D>) -> Tensor<D> {
    assert_vocab("log_sum_exp", logits.dims());
    let logits = promote(logits);
    let max = logits.clone().max_dim(D - 1).detach();
    sum_last((logits - max.clone()).exp()).log() + max
}

/// `log π(y_t)`: the log-probability that `softmax(logits[b, t])` gives to `ids[b, t]`.
///
/// Computed as `z[y] − logsumexp(z)`: besides the logits themselves only one transient
/// `[batch, seq, vocab]` buffer (the exponentials inside `logsumexp`) exists, the same as a
/// log-softmax would need, and the full log-softmax is never formed. Differentiable under
/// autodiff (EM-RL's policy loss).
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`
/// - `ids`: `[batch, seq]`, each id in `0..vocab`
/// - output: `[batch, seq]`
///
/// # Panics
/// If `vocab` is 0 or `ids` is not `[batch, seq]`. Ids outside `0..vocab` are not checked (that
/// would cost a device-to-host read): their result is backend-defined.
pub fn token_log_probs(logits: Tensor<3>, ids: Tensor<2, Int>) -> Tensor<2> {
    let [batch, seq, vocab] = logits.dims();
    assert_vocab("token_log_probs", [batch, seq, vocab]);
    assert_same_shape(
        "token_log_probs",
        "ids",
        ids.dims(),
        "logits [batch, seq]",
        [batch, seq],
    );
    let logits = promote(logits);
    let chosen = logits.clone().gather(2, ids.unsqueeze_dim::<3>(2));
    (chosen - log_sum_exp(logits)).squeeze_dim(2)
}
