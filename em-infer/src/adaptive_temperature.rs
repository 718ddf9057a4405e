//! Adaptive temperature, EM-INF's baseline (`docs/method.md` §3): per row, lower the
//! temperature until the entropy drops to a fraction of its original value.
//!
//! `H0 = entropy(softmax(z))`, `target = max(δ, α·H0)`. A row with `H0 ≤ δ` is left alone
//! (τ = 1). Otherwise τ is bisected in `[τ_min, τ_max]` (the midpoint each time, at most
//! `max_iterations` times) until `|H(z/τ) − target| < tolerance`; `H(z/τ) < target` raises the
//! lower end, anything else lowers the upper end. The result is `z / τ`.
//!
//! Rows are bisected together on the device; only the `[batch]` entropies come back each
//! iteration, and rows that converged keep their τ.

use burn::tensor::{Tensor, TensorData};

use crate::error::{InferError, Result};

/// Hyperparameters of adaptive temperature; defaults follow the released script
/// (α = 0.85; the paper reports 0.4-0.6).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdaptiveTemperatureConfig {
    /// Target fraction α of the original entropy.
    pub alpha: f64,
    /// Floor δ of the target entropy, in nats; rows already at or below it are untouched.
    pub delta: f64,
    /// Lowest temperature tried.
    pub tau_min: f64,
    /// Highest temperature tried.
    pub tau_max: f64,
    /// Accepted distance from the target entropy, in nats.
    pub tolerance: f64,
    /// Bisection iterations at most.
    pub max_iterations: usize,
}

impl Default for AdaptiveTemperatureConfig {
    fn default() -> Self {
        Self {
            alpha: 0.85,
            delta: 1e-5,
            tau_min: 0.01,
            tau_max: 1.0,
            tolerance: 0.1,
            max_iterations: 100,
        }
    }
}

impl AdaptiveTemperatureConfig {
    /// Checks every field: all finite, 0 < α ≤ 1, δ ≥ 0, 0 < τ_min < τ_max, tolerance > 0.
    pub fn validate(&self) -> Result<()> {
        let fail = InferError::invalid::<()>;
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha <= 1.0) {
            return fail("alpha", self.alpha, "must be in (0, 1]");
        }
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return fail("delta", self.delta, "must be finite and ≥ 0");
        }
        if !(self.tau_min.is_finite() && self.tau_min > 0.0) {
            return fail("tau_min", self.tau_min, "must be finite and > 0");
        }
        if !(self.tau_max.is_finite() && self.tau_max > self.tau_min) {
            return fail("tau_max", self.tau_max, "must be finite and > tau_min");
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return fail("tolerance", self.tolerance, "must be finite and > 0");
        }
        Ok(())
    }
}

/// The result of [`adaptive_temperature`].
#[derive(Debug, Clone)]
pub struct AdaptiveTemperatureOutput {
    /// `z / τ` per row, `[batch, vocab]`, f32 (f64 for f64 input).
    pub logits: Tensor<2>,
    /// The temperature chosen for each row (1 for untouched rows).
    pub temperatures: Vec<f64>,
}

/// Applies adaptive temperature to `[batch, vocab]` logits (see the module docs). `step` only
/// names the decoding step in errors.
///
/// # Errors
/// [`InferError::InvalidConfig`] for a bad config, [`InferError::NonFiniteLogits`] for a row
/// with NaN or +∞, [`InferError::EmptyVocabulary`] for an empty last dimension.
pub fn adaptive_temperature(
    logits: Tensor<2>,
    config: &AdaptiveTemperatureConfig,
    step: usize,
) -> Result<AdaptiveTemperatureOutput> {
    adaptive_temperature_reporting(logits, config, step).map(|(out, _)| out)
}

/// [`adaptive_temperature`] and each row's `H0`, [`em_core::entropy()`] of `logits` (read as
/// f64). For [`crate::LogitsProcessor::process_step`].
pub(crate) fn adaptive_temperature_reporting(
    logits: Tensor<2>,
    config: &AdaptiveTemperatureConfig,
    step: usize,
) -> Result<(AdaptiveTemperatureOutput, Vec<f64>)> {
    config.validate()?;
    let z = crate::em_inf::compute_rows(logits)?;
    let batch = z.dims()[0];
    let h0 = crate::em_inf::finite_rows(em_core::entropy(z.clone()), step)?;
    let target: Vec<f64> = h0
        .iter()
        .map(|h| config.delta.max(config.alpha * h))
        .collect();
    let mut tau = vec![1.0; batch];
    let mut lo = vec![config.tau_min; batch];
    let mut hi = vec![config.tau_max; batch];
    let mut open: Vec<bool> = h0.iter().map(|h| *h > config.delta).collect();
    let device = z.device();
    for _ in 0..config.max_iterations {
        if !open.iter().any(|o| *o) {
            break;
        }
        for row in 0..batch {
            if open[row] {
                tau[row] = 0.5 * (lo[row] + hi[row]);
            }
        }
        let h = crate::em_inf::host_f64(em_core::entropy(divide_rows(z.clone(), &tau, &device)))?;
        for row in 0..batch {
            if !open[row] {
                continue;
            }
            if (h[row] - target[row]).abs() < config.tolerance {
                open[row] = false;
            } else if h[row] < target[row] {
                lo[row] = tau[row];
            } else {
                hi[row] = tau[row];
            }
        }
    }
    let logits = divide_rows(z, &tau, &device);
    let out = AdaptiveTemperatureOutput {
        logits,
        temperatures: tau,
    };
    Ok((out, h0))
}

/// `z[r, :] / tau[r]`.
fn divide_rows(z: Tensor<2>, tau: &[f64], device: &burn::tensor::Device) -> Tensor<2> {
    let inverse: Vec<f64> = tau.iter().map(|t| 1.0 / t).collect();
    let scale =
        Tensor::<1>::from_data(TensorData::new(inverse, [tau.len()]), device).cast(z.dtype());
    z * scale.unsqueeze_dim::<2>(1)
}
