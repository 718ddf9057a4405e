//! Slow f64 implementations on host slices: the test oracles for the tensor kernels.
//!
//! Each function is written the textbook way (two passes, f64 accumulation, `log p` from
//! log-softmax), not the way the kernels are written, so that the two share no code and no
//! algebraic rewrite. Use them in tests and for debugging; they are not meant to be fast.

use crate::reduce::Reduction;

/// `log Σ exp(z)` of one row.
///
/// # Panics
/// If `logits` is empty.
pub fn log_sum_exp(logits: &[f64]) -> f64 {
    assert!(!logits.is_empty(), "reference::log_sum_exp: empty row");
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln()
}

/// `log softmax(z)` of one row.
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|z| z - lse).collect()
}

/// `softmax(z)` of one row.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    log_softmax(logits).into_iter().map(f64::exp).collect()
}

/// `H = −Σ p log p` of one row, with `0 log 0 = 0`.
pub fn entropy(logits: &[f64]) -> f64 {
    log_softmax(logits)
        .into_iter()
        .map(|lp| {
            if lp == f64::NEG_INFINITY {
                0.0
            } else {
                -lp.exp() * lp
            }
        })
        .sum()
}

/// `∂H/∂z_i = −p_i (log p_i + H)` of one row, with `0 · log 0 = 0`.
pub fn entropy_grad(logits: &[f64]) -> Vec<f64> {
    let h = entropy(logits);
    log_softmax(logits)
        .into_iter()
        .map(|lp| {
            if lp == f64::NEG_INFINITY {
                0.0
            } else {
                -lp.exp() * (lp + h)
            }
        })
        .collect()
}

/// `KL(p_ref ‖ p) = Σ p_ref (log p_ref − log p)` of one pair of rows.
///
/// # Panics
/// If the rows differ in length.
pub fn kl_divergence(reference_logits: &[f64], logits: &[f64]) -> f64 {
    assert_eq!(
        reference_logits.len(),
        logits.len(),
        "reference::kl_divergence: rows differ in length"
    );
    log_softmax(reference_logits)
        .into_iter()
        .zip(log_softmax(logits))
        .map(|(lr, lq)| {
            if lr == f64::NEG_INFINITY {
                0.0
            } else {
                lr.exp() * (lr - lq)
            }
        })
        .sum()
}

/// `log softmax(z)[id]` of one row.
///
/// # Panics
/// If `id` is out of range.
pub fn token_log_prob(logits: &[f64], id: usize) -> f64 {
    log_softmax(logits)[id]
}

/// k3 with the same clamps as [`crate::k3_kl`]: `Δ = clamp(ref − logp, ±20)`,
/// `clamp(exp(Δ) − 1 − Δ, ±10)`, with `exp(Δ) − 1` from `f64::exp_m1` (exact to f64 precision).
pub fn k3_kl(log_prob: f64, ref_log_prob: f64) -> f64 {
    let delta = (ref_log_prob - log_prob).clamp(-20.0, 20.0);
    (delta.exp_m1() - delta).clamp(-10.0, 10.0)
}

/// [`crate::masked_reduce`] on row-major `[rows, cols]` host data.
///
/// # Panics
/// If `values` and `mask` differ in length or their length is not a multiple of `cols`.
pub fn masked_reduce(values: &[f64], mask: &[bool], cols: usize, reduction: Reduction) -> f64 {
    assert_eq!(
        values.len(),
        mask.len(),
        "reference::masked_reduce: lengths differ"
    );
    assert!(
        cols > 0 && values.len().is_multiple_of(cols),
        "reference::masked_reduce: bad cols"
    );
    let mut total = 0.0;
    let mut tokens = 0usize;
    let mut sequences = 0usize;
    for (row_values, row_mask) in values.chunks(cols).zip(mask.chunks(cols)) {
        let mut kept_in_row = 0usize;
        for (&v, &keep) in row_values.iter().zip(row_mask) {
            if keep {
                total += v;
                kept_in_row += 1;
            }
        }
        tokens += kept_in_row;
        sequences += usize::from(kept_in_row > 0);
    }
    match reduction {
        Reduction::Sum => total,
        Reduction::TokenMean => total / tokens.max(1) as f64,
        Reduction::SequenceMean => total / sequences.max(1) as f64,
    }
}

/// Central finite difference of `f` at `x`: `(f(x + h e_i) − f(x − h e_i)) / 2h` for every `i`.
pub fn central_difference(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut point = x.to_vec();
    (0..x.len())
        .map(|i| {
            let original = point[i];
            point[i] = original + h;
            let plus = f(&point);
            point[i] = original - h;
            let minus = f(&point);
            point[i] = original;
            (plus - minus) / (2.0 * h)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // The oracles themselves against closed forms.
    #[test]
    fn two_point_distribution_matches_the_binary_entropy() {
        // softmax([a, 0]) = (σ(a), 1 − σ(a)).
        let a: f64 = 1.3;
        let p = 1.0 / (1.0 + (-a).exp());
        let binary = -p * p.ln() - (1.0 - p) * (1.0 - p).ln();
        assert!((entropy(&[a, 0.0]) - binary).abs() < 1e-15);
        // dH/da = −p(1−p)·a for the two-point family; the second entry is its negative.
        let g = entropy_grad(&[a, 0.0]);
        assert!((g[0] + p * (1.0 - p) * a).abs() < 1e-15);
        assert!((g[0] + g[1]).abs() < 1e-15);
    }

    #[test]
    fn masked_entries_contribute_nothing() {
        let h = entropy(&[0.0, 0.0, f64::NEG_INFINITY]);
        assert!((h - 2f64.ln()).abs() < 1e-15);
        assert_eq!(
            kl_divergence(&[0.0, f64::NEG_INFINITY], &[0.0, 0.0]),
            2f64.ln()
        );
    }

    #[test]
    fn finite_difference_of_a_quadratic_is_exact() {
        let g = central_difference(|x| x[0] * x[0] + 3.0 * x[1], &[2.0, -1.0], 1e-3);
        assert!((g[0] - 4.0).abs() < 1e-9 && (g[1] - 3.0).abs() < 1e-9);
    }

    #[test]
    fn reductions_follow_their_definitions() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mask = [true, true, false, false, false, false];
        assert_eq!(masked_reduce(&values, &mask, 3, Reduction::Sum), 3.0);
        assert_eq!(masked_reduce(&values, &mask, 3, Reduction::TokenMean), 1.5);
        assert_eq!(
            masked_reduce(&values, &mask, 3, Reduction::SequenceMean),
            3.0
        );
        assert_eq!(
            masked_reduce(&values, &[false; 6], 3, Reduction::TokenMean),
            0.0
        );
    }
}
