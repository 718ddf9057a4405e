//! EM-INF: a few Adam steps on each decoding step's logits to lower their entropy
//! (`docs/method.md` §3, following the released code).
//!
//! Per row of `[batch, vocab]` logits `z0` (fp32), with `p0 = softmax(z0)` fixed and a fresh Adam
//! state (β1 0.9, β2 0.999, ε 1e-8, bias correction, no weight decay) at every call:
//! up to `n_grad_steps` times, `H = entropy(softmax(z))`; **if `H < threshold` the row stops**
//! (checked before the update, so a row that starts below the threshold is untouched); otherwise
//! one Adam step on `loss = H + kl_weight · KL(p0 ‖ p)` with the closed-form gradient
//! `∂loss/∂z = −p ⊙ (log p + H) + kl_weight · (p − p0)`. No autodiff graph is built.
//!
//! All rows are updated together on the device; only the `[batch]` entropies come back to the
//! host each step (to apply the threshold, count steps and stop early when every row is done).
//! On flex, plain f32 logits take a host path instead ([`em_core::fused`]): rows and chunks of
//! rows on rayon's threads, four fused passes over a row per step (the softmax's three and one
//! for the gradient and the Adam update together) where the burn-op loop makes about twenty,
//! each allocating its output. The arithmetic is the same f32 arithmetic in the
//! same order; only the softmax's sums (f64 there) and its `exp` (em-core's vectorized one, at
//! most an ulp from libm's) differ (see [`em_core::fused`]). Tests compare both paths with
//! each other and with the f64 reference.

use burn::tensor::{Device, Tensor};
use em_core::fused::{HostRows, host_rows, rows, rows::CHUNK, tensor_from_rows};
use rayon::prelude::*;

use crate::error::{InferError, Result};

/// Hyperparameters of EM-INF. Defaults are the released code's: threshold 0.3, KL weight 0.05
/// (the paper uses 0.001 for code tasks), learning rate 0.1, 3 gradient steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EmInfConfig {
    /// A row whose (untempered) entropy falls below this, in nats, is not updated further.
    pub threshold: f64,
    /// Weight λ of `KL(p0 ‖ p)` in the loss.
    pub kl_weight: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Maximum number of Adam steps per decoding step; 0 makes EM-INF the identity.
    pub n_grad_steps: usize,
}

impl Default for EmInfConfig {
    fn default() -> Self {
        Self {
            threshold: 0.3,
            kl_weight: 0.05,
            learning_rate: 0.1,
            n_grad_steps: 3,
        }
    }
}

/// Adam's constants, fixed as in the released code (torch defaults).
pub const ADAM_BETA1: f64 = 0.9;
/// See [`ADAM_BETA1`].
pub const ADAM_BETA2: f64 = 0.999;
/// See [`ADAM_BETA1`].
pub const ADAM_EPS: f64 = 1e-8;

impl EmInfConfig {
    /// Checks every field: finite, threshold ≥ 0, kl_weight ≥ 0, learning_rate > 0.
    pub fn validate(&self) -> Result<()> {
        let check = |field: &'static str, value: f64, ok: bool, rule: &'static str| {
            if value.is_finite() && ok {
                Ok(())
            } else {
                InferError::invalid(field, value, rule)
            }
        };
        check(
            "threshold",
            self.threshold,
            self.threshold >= 0.0,
            "must be finite and ≥ 0",
        )?;
        check(
            "kl_weight",
            self.kl_weight,
            self.kl_weight >= 0.0,
            "must be finite and ≥ 0",
        )?;
        check(
            "learning_rate",
            self.learning_rate,
            self.learning_rate > 0.0,
            "must be finite and > 0",
        )
    }
}

/// The result of [`em_inf`]: the adjusted logits and, per row, how many Adam steps were taken.
#[derive(Debug, Clone)]
pub struct EmInfOutput {
    /// `[batch, vocab]`, f32 (f64 if the input was f64).
    pub logits: Tensor<2>,
    /// Adam steps taken by each row (0 for rows that started below the threshold).
    pub steps: Vec<usize>,
    /// Each row's entropy before any update, in nats.
    pub initial_entropy: Vec<f64>,
}

/// Applies EM-INF to a batch of next-token logits `[batch, vocab]` (see the module docs).
///
/// `step` is the decoding step, only used to name it in errors.
///
/// # Errors
/// [`InferError::InvalidConfig`] for a bad config; [`InferError::NonFiniteLogits`] naming the
/// decoding step and row when a row contains NaN or +∞ (−∞ entries, i.e. masked tokens, are
/// fine as long as one entry per row is finite).
pub fn em_inf(logits: Tensor<2>, config: &EmInfConfig, step: usize) -> Result<EmInfOutput> {
    config.validate()?;
    let z0 = compute_rows(logits)?;
    let batch = z0.dims()[0];
    // One softmax per step (log p, p and the [batch, 1] entropy column) serves the threshold
    // check, the gradient and, after the update, the next step; only the entropies come back.
    let mut parts = em_core::softmax_entropy(z0.clone());
    let initial_entropy = finite_rows(parts.entropy.clone(), step)?;
    let mut steps = vec![0usize; batch];
    if config.n_grad_steps == 0 {
        return Ok(EmInfOutput {
            logits: z0,
            steps,
            initial_entropy,
        });
    }
    let device = z0.device();
    let host = (
        host_rows(&z0),
        host_rows(&parts.log_probs),
        host_rows(&parts.probs),
    );
    if let (Some(z0), Some(log_p0), Some(p0)) = host {
        let initial = [z0, log_p0, p0];
        return em_inf_host(&initial, initial_entropy, config, step, &device);
    }
    let p0 = parts.probs.clone();
    let mut z = z0;
    let mut m = z.zeros_like();
    let mut v = z.zeros_like();
    let mut active = vec![true; batch];
    let mut entropy = initial_entropy.clone();
    for t in 1..=config.n_grad_steps {
        for (row, h) in entropy.iter().enumerate() {
            active[row] = active[row] && *h >= config.threshold;
        }
        if !active.iter().any(|a| *a) {
            break;
        }
        for (row, a) in active.iter().enumerate() {
            steps[row] += usize::from(*a);
        }
        // ∂H/∂z (em-core's closed form) + λ·∂KL(p0‖p)/∂z, the latter p − p0.
        let grad = parts.entropy_grad() + (parts.probs - p0.clone()) * config.kl_weight;
        m = m * ADAM_BETA1 + grad.clone() * (1.0 - ADAM_BETA1);
        v = v * ADAM_BETA2 + grad.powi_scalar(2) * (1.0 - ADAM_BETA2);
        let step_size = config.learning_rate / (1.0 - ADAM_BETA1.powi(t as i32));
        let v_correction = (1.0 - ADAM_BETA2.powi(t as i32)).sqrt();
        let update = m.clone() / (v.clone().sqrt() / v_correction + ADAM_EPS) * step_size;
        let update = if active.iter().all(|a| *a) {
            update
        } else {
            let mask: Vec<f32> = active.iter().map(|a| if *a { 1.0 } else { 0.0 }).collect();
            let mask = Tensor::<1>::from_floats(mask.as_slice(), &device)
                .cast(z.dtype())
                .unsqueeze_dim::<2>(1);
            update * mask
        };
        z = z - update;
        if t == config.n_grad_steps {
            break;
        }
        parts = em_core::softmax_entropy(z.clone());
        entropy = finite_rows(parts.entropy.clone(), step)?;
    }
    Ok(EmInfOutput {
        logits: z,
        steps,
        initial_entropy,
    })
}

/// [`em_inf`] on the host rows of plain f32 flex logits (see the module docs), from the initial
/// softmax (`[z0, log p0, p0]`) and its entropies, which the caller checked; every row runs on
/// its own. The `(1 − β)` factors, ε, λ and the step size are rounded to f32 as burn's scalar
/// operands are.
fn em_inf_host(
    [z0, log_p0, p0]: &[HostRows; 3],
    initial_entropy: Vec<f64>,
    config: &EmInfConfig,
    step: usize,
    device: &Device,
) -> Result<EmInfOutput> {
    let (batch, width) = (z0.rows(), z0.width());
    let mut z = z0.values().to_vec();
    let runs: Vec<RowRun> = z
        .par_chunks_mut(width)
        .zip(log_p0.values().par_chunks(width))
        .zip(p0.values().par_chunks(width))
        .zip(initial_entropy.par_iter())
        // Exact: the entropies were read back from f32.
        .map(|(((z, log_p0), p0), &h0)| em_inf_row(z, log_p0, p0, h0 as f32, config))
        .collect();
    // The earliest step at which a row turned non-finite, the first such row: the error the
    // burn-op loop reports (it checks every row after every step).
    if let Some((row, _)) = runs
        .iter()
        .enumerate()
        .filter_map(|(row, run)| run.non_finite_after.map(|t| (row, t)))
        .min_by_key(|&(row, t)| (t, row))
    {
        return Err(InferError::NonFiniteLogits { step, row });
    }
    Ok(EmInfOutput {
        logits: tensor_from_rows(z, [batch, width], device),
        steps: runs.iter().map(|run| run.steps).collect(),
        initial_entropy,
    })
}

/// One row's EM-INF on the host.
struct RowRun {
    /// Adam steps taken.
    steps: usize,
    /// The step after which the row's entropy was not finite, if it was.
    non_finite_after: Option<usize>,
}

/// The Adam steps of one row `z` (updated in place) from its initial softmax (`log p0`, `p0`,
/// `H0`, finite): the burn-op loop of [`em_inf`] for that row, in the same f32 operations.
fn em_inf_row(z: &mut [f32], log_p0: &[f32], p0: &[f32], h0: f32, config: &EmInfConfig) -> RowRun {
    if config.n_grad_steps == 0 || f64::from(h0) < config.threshold {
        // No step: nothing to allocate.
        return RowRun {
            steps: 0,
            non_finite_after: None,
        };
    }
    let n = z.len();
    // The softmax of the current logits: the initial one (borrowed) until the first update.
    let (mut log_p, mut p) = (vec![0f32; n], vec![0f32; n]);
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    // The scalars as burn's f32 ops see them (a scalar operand is cast to the tensor's dtype).
    let (beta1, beta2) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32);
    let (keep1, keep2) = ((1.0 - ADAM_BETA1) as f32, (1.0 - ADAM_BETA2) as f32);
    let (kl_weight, eps) = (config.kl_weight as f32, ADAM_EPS as f32);
    let mut h = h0;
    let mut steps = 0;
    for t in 1..=config.n_grad_steps {
        if f64::from(h) < config.threshold {
            break;
        }
        steps += 1;
        let step_size = (config.learning_rate / (1.0 - ADAM_BETA1.powi(t as i32))) as f32;
        let v_correction = (1.0 - ADAM_BETA2.powi(t as i32)).sqrt() as f32;
        // In chunks on rayon's threads (elementwise: the result does not depend on the split).
        let state = m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK));
        let (p_now, log_p_now) = if t == 1 {
            (p0, log_p0)
        } else {
            (&p[..], &log_p[..])
        };
        let softmax = p_now
            .par_chunks(CHUNK)
            .zip(log_p_now.par_chunks(CHUNK))
            .zip(p0.par_chunks(CHUNK));
        let chunks = z.par_chunks_mut(CHUNK).zip(state).zip(softmax);
        chunks.for_each(|((z, (m, v)), ((p, log_p), p0))| {
            let state = m.iter_mut().zip(v.iter_mut());
            let softmax = p.iter().zip(log_p).zip(p0);
            for ((z, (m, v)), ((&p, &log_p), &p0)) in z.iter_mut().zip(state).zip(softmax) {
                let grad = -(p * (log_p + h)) + (p - p0) * kl_weight;
                *m = *m * beta1 + grad * keep1;
                *v = *v * beta2 + grad * grad * keep2;
                *z -= *m / (v.sqrt() / v_correction + eps) * step_size;
            }
        });
        if t == config.n_grad_steps {
            break;
        }
        h = rows::softmax_entropy(z, &mut log_p, &mut p);
        if !h.is_finite() {
            return RowRun {
                steps,
                non_finite_after: Some(t),
            };
        }
    }
    RowRun {
        steps,
        non_finite_after: None,
    }
}

/// Checks the vocabulary (a typed error rather than em-core's panic: logits come from a model)
/// and moves to em-core's compute dtype ([`em_core::promote`]).
pub(crate) fn compute_rows(logits: Tensor<2>) -> Result<Tensor<2>> {
    if logits.dims()[1] == 0 {
        return Err(InferError::EmptyVocabulary);
    }
    Ok(em_core::promote(logits))
}

/// Reads a per-row quantity (`[rows]` or `[rows, 1]`) to the host and names the first
/// non-finite row: NaN/+∞ logits, or a row with nothing finite, make its entropy non-finite.
pub(crate) fn finite_rows<const D: usize>(values: Tensor<D>, step: usize) -> Result<Vec<f64>> {
    let values = host_f64(values)?;
    match values.iter().position(|v| !v.is_finite()) {
        Some(row) => Err(InferError::NonFiniteLogits { step, row }),
        None => Ok(values),
    }
}

pub(crate) fn host_f64<const D: usize>(t: Tensor<D>) -> Result<Vec<f64>> {
    Ok(t.into_data().convert::<f64>().try_to_vec::<f64>()?)
}
