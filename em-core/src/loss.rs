//! The EM-FT objective: token entropy of the full next-token distribution at every response
//! position, reduced over a mask.

use burn::config::Config;
use burn::tensor::{Bool, Tensor};

use crate::entropy::token_entropy;
use crate::reduce::{Reduction, masked_reduce};
use crate::util::assert_same_shape;

/// Configuration of [`EntropyLoss`].
#[derive(Config, Debug)]
pub struct EntropyLossConfig {
    /// How per-token entropies are reduced: the masked token mean by default (the released
    /// code); [`Reduction::SequenceMean`] is the paper's printed form.
    #[config(default = "Reduction::TokenMean")]
    pub reduction: Reduction,
}

impl EntropyLossConfig {
    /// Builds the loss. There is nothing to validate: every reduction is valid.
    pub fn init(&self) -> EntropyLoss {
        EntropyLoss {
            reduction: self.reduction,
        }
    }
}

/// Masked token entropy, the EM-FT loss; minimise it with any burn optimiser.
///
/// The mask selects the positions whose logits *predict* a response token: for a sequence whose
/// prompt has `prompt_len` tokens, position `prompt_len − 1` predicts the first response token,
/// and the position of the last response token (which predicts nothing in the response) is
/// excluded. Prompt and padding positions are false.
#[derive(Clone, Debug)]
pub struct EntropyLoss {
    reduction: Reduction,
}

impl EntropyLoss {
    /// The reduction this loss applies.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The loss value, differentiable under autodiff.
    ///
    /// # Shapes
    /// - `logits`: `[batch, seq, vocab]`
    /// - `mask`: `[batch, seq]`, true at positions that count
    /// - output: `[1]`
    ///
    /// # Panics
    /// If `mask` is not `[batch, seq]` or `vocab` is 0.
    pub fn forward(&self, logits: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<1> {
        let [batch, seq, _] = logits.dims();
        assert_same_shape(
            "EntropyLoss::forward",
            "mask",
            mask.dims(),
            "logits [batch, seq]",
            [batch, seq],
        );
        masked_reduce(token_entropy(logits), mask, self.reduction)
    }
}
