//! Masked reductions of per-token values (entropies, losses, KL terms) to one scalar.

use burn::config::Config;
use burn::tensor::{Bool, Tensor};

use crate::util::assert_same_shape;

/// How per-token values `v[b, t]` with a keep-mask `m[b, t]` are reduced to one number.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// `Σ v·m / Σ m`: every kept token weighs the same (the default of EM-FT and of the released
    /// EM-RL code). An all-false mask gives 0.
    TokenMean,
    /// `(1/N) Σ_b Σ_t v·m`: the sum over each sequence's kept tokens, averaged over the `N`
    /// sequences that keep at least one token (the paper's printed form, eq. 2). An all-false
    /// mask gives 0.
    SequenceMean,
    /// `Σ v·m`.
    Sum,
}

/// Reduces `values` over the positions where `mask` is true (true = keep).
///
/// Masked-out positions are *replaced* by zero rather than multiplied by it, so NaN or ∞ values
/// at padding positions cannot leak into the result, and they receive a zero gradient.
///
/// # Shapes
/// - `values`: `[batch, seq]`
/// - `mask`: `[batch, seq]`
/// - output: `[1]`
///
/// # Panics
/// If the shapes differ.
pub fn masked_reduce(values: Tensor<2>, mask: Tensor<2, Bool>, reduction: Reduction) -> Tensor<1> {
    assert_same_shape(
        "masked_reduce",
        "values",
        values.dims(),
        "mask",
        mask.dims(),
    );
    let dtype = values.dtype();
    let kept = values.mask_fill(mask.clone().bool_not(), 0.0);
    match reduction {
        Reduction::Sum => kept.sum(),
        Reduction::TokenMean => {
            // Counted in integers: an f32 count would stop being exact past 2^24 tokens.
            let count = mask.int().sum().float().cast(dtype).clamp_min(1.0);
            kept.sum() / count
        }
        Reduction::SequenceMean => {
            let sequences = mask
                .any_dim(1)
                .int()
                .sum()
                .float()
                .cast(dtype)
                .clamp_min(1.0);
            kept.sum() / sequences
        }
    }
}
