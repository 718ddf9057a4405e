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
//! rows on rayon's threads, two passes over a row per step where the burn-op loop makes about
//! twenty, each allocating its output. One pass computes `log p` and `p` entry by entry from
//! the logits and the softmax's [`Moments`](em_core::fused::rows::Moments) (never stored),
//! the gradient, the Adam update and the updated row's maximum; the other the next softmax's
//! sums. `p0` is computed once, in the first step's pass, and read back in the later ones
//! (which then never read `z0`). Both passes run at the CPU's widest SIMD width
//! ([`em_core::fused::rows::vectorized`]), and Adam's moments and `p0` live in buffers reused
//! across calls. The steps update the logits' own storage when nothing else references it
//! (the generator hands them over, [`crate::LogitsProcessor::reports_input_entropy`]) and a
//! copy otherwise. The arithmetic is the same f32 arithmetic in the same order but for three
//! things: the softmax's sums (f64 there; the entropy follows from them,
//! [`Moments::written_entropy`]), its `exp` (em-core's vectorized one, at most an ulp from
//! libm's; see [`em_core::fused`]), and Adam's `√v / c₂` (here `√v · (1/c₂)`, one rounding
//! more and one division less: within 2 ulps).
//!
//! The host path's initial moments also give each row's entropy exactly as
//! [`em_core::entropy()`] computes it ([`Moments::entropy`], rounded to f32), which
//! [`crate::EmInfProcessor`] hands to the generator as the model's entropy
//! ([`crate::LogitsProcessor::process_step`]).
//!
//! [`Moments::written_entropy`]: em_core::fused::rows::Moments::written_entropy
//! [`Moments::entropy`]: em_core::fused::rows::Moments::entropy
//!
//! Tests compare both paths with each other and with the f64 reference.

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
    /// Each row's entropy before any update, in nats: the value the threshold is checked
    /// against. On the host path that is the entropy of the f32 `p` the first step uses
    /// ([`Moments::written_entropy`](rows::Moments::written_entropy)), which may differ from [`em_core::entropy()`]'s value
    /// in the last bit.
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
    em_inf_reporting(logits, config, step).map(|(out, _)| out)
}

/// [`em_inf`], and on the host path each row's entropy of `logits` exactly as
/// [`em_core::entropy()`] computes it (read as f64): the initial softmax's moments give it for
/// free ([`rows::Moments::entropy`], where EM-INF's own threshold reads
/// [`rows::Moments::written_entropy`]). `None` on the burn-op path, whose f32 softmax is not
/// [`em_core::entropy()`]'s computation. For [`crate::LogitsProcessor::process_step`].
pub(crate) fn em_inf_reporting(
    logits: Tensor<2>,
    config: &EmInfConfig,
    step: usize,
) -> Result<(EmInfOutput, Option<Vec<f64>>)> {
    config.validate()?;
    let z0 = compute_rows(logits)?;
    if let Some(rows) = host_rows(&z0) {
        let device = z0.device();
        // `rows` holds the storage too: when the caller handed its only reference over, the
        // steps now run in place (see `em_inf_host`).
        drop(z0);
        // Eight parallel regions per call at 3 steps: from a thread outside rayon's pool each
        // would wake the workers again (see `with_pool_awake`).
        return em_core::fused::with_pool_awake(|| em_inf_host(rows, &device, config, step))
            .map(|(out, entropy)| (out, Some(entropy)));
    }
    let batch = z0.dims()[0];
    // One softmax per step (log p, p and the [batch, 1] entropy column) serves the threshold
    // check, the gradient and, after the update, the next step; only the entropies come back.
    let mut parts = em_core::softmax_entropy(z0.clone());
    let initial_entropy = finite_rows(parts.entropy.clone(), step)?;
    let mut steps = vec![0usize; batch];
    if config.n_grad_steps == 0 {
        let out = EmInfOutput {
            logits: z0,
            steps,
            initial_entropy,
        };
        return Ok((out, None));
    }
    let device = z0.device();
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
    Ok((
        EmInfOutput {
            logits: z,
            steps,
            initial_entropy,
        },
        None,
    ))
}

/// Whether [`em_inf_reporting`] reports the entropy of `logits` whenever it succeeds: plain
/// f32 logits on flex with a vocabulary, which it neither converts nor copies before
/// [`host_rows`] takes them, so they take the host path. (16-bit logits take it too, after a
/// widening copy; `false` keeps the caller's clone for them, which costs nothing more.)
pub(crate) fn reports_input_entropy(logits: &Tensor<2>) -> bool {
    logits.dtype() == burn::tensor::DType::F32
        && logits.dims()[1] > 0
        && host_rows(logits).is_some()
}

/// [`em_inf`] on the host rows of plain f32 flex logits `z0` (see the module docs); every row
/// runs on its own. The `(1 − β)` factors, ε, λ and the step size are rounded to f32 as burn's
/// scalar operands are. Also returns each row's [`em_core::entropy()`] (see
/// [`em_inf_reporting`]).
///
/// The steps update `z0`'s own storage when nothing else references it (a caller that handed
/// its logits over, as the generator does for a processor that reports the input's entropy,
/// [`crate::LogitsProcessor::reports_input_entropy`]), and a copy otherwise: the copy was 0.2
/// ms of a batch-8 call. The result is the same either way (tested).
fn em_inf_host(
    mut z0: HostRows,
    device: &Device,
    config: &EmInfConfig,
    step: usize,
) -> Result<(EmInfOutput, Vec<f64>)> {
    let (batch, width) = (z0.rows(), z0.width());
    let initial: Vec<Option<rows::Moments>> =
        z0.values().par_chunks(width).map(rows::moments).collect();
    // Read as the burn-op loop reads its f32 entropy column.
    let initial_entropy: Vec<f64> = initial
        .iter()
        .map(|m| m.map_or(f64::NAN, |m| f64::from(m.written_entropy())))
        .collect();
    if let Some(row) = initial_entropy.iter().position(|h| !h.is_finite()) {
        return Err(InferError::NonFiniteLogits { step, row });
    }
    // `rows::entropy` of each row, which `em_core::entropy` writes as an f32 column.
    let input_entropy: Vec<f64> = initial
        .iter()
        .flatten()
        .map(|m| f64::from(m.entropy() as f32))
        .collect();
    if config.n_grad_steps == 0 {
        let out = EmInfOutput {
            logits: z0.into_tensor(),
            steps: vec![0; batch],
            initial_entropy,
        };
        return Ok((out, input_entropy));
    }
    // Every row has its moments (a row without them has a NaN entropy, rejected above).
    let initial: Vec<rows::Moments> = initial.into_iter().flatten().collect();
    let run_rows = |z: &mut [f32]| -> Vec<RowRun> {
        z.par_chunks_mut(width)
            .zip(initial.par_iter())
            .map(|(z, &initial)| em_inf_row(z, initial, config))
            .collect()
    };
    let (logits, runs) = match z0.values_mut() {
        Some(z) => {
            let runs = run_rows(z);
            (z0.into_tensor(), runs)
        }
        None => {
            // The copy that becomes the output, on every thread (a lone `to_vec` was 4% at
            // batch 8).
            let mut z: Vec<f32> = z0.values().par_iter().copied().collect();
            let runs = run_rows(&mut z);
            (tensor_from_rows(z, [batch, width], device), runs)
        }
    };
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
    let out = EmInfOutput {
        logits,
        steps: runs.iter().map(|run| run.steps).collect(),
        initial_entropy,
    };
    Ok((out, input_entropy))
}

/// One row's EM-INF on the host.
struct RowRun {
    /// Adam steps taken.
    steps: usize,
    /// The step after which the row's entropy was not finite, if it was.
    non_finite_after: Option<usize>,
}

/// The Adam steps of one row `z` (`z0` on entry, updated in place) from the initial softmax's
/// [`rows::Moments`]: the burn-op loop of [`em_inf`] for that row, in the same f32 operations
/// (but for `√v / c₂`, see the module docs).
///
/// Two passes per step: one computes `log p` and `p` entry by entry from the logits and the
/// moments (the values [`rows::softmax_entropy`] would store), the gradient, Adam's update
/// and the updated row's maximum; the other the next moments from that maximum. The first
/// step's `p` is `p0`, which that pass stores for the later ones.
fn em_inf_row(z: &mut [f32], initial: rows::Moments, config: &EmInfConfig) -> RowRun {
    let mut run = RowRun {
        steps: 0,
        non_finite_after: None,
    };
    if f64::from(initial.written_entropy()) < config.threshold {
        // No step: nothing to allocate.
        return run;
    }
    // Adam's moments and p0, written (by the first step) before they are read.
    let [mut m, mut v, mut p0] = [(); 3].map(|()| Scratch::take(z.len()));
    // The scalars as burn's f32 ops see them (a scalar operand is cast to the tensor's dtype).
    let mut adam = AdamStep {
        softmax: Softmax::of(&initial),
        kl_weight: config.kl_weight as f32,
        beta1: ADAM_BETA1 as f32,
        beta2: ADAM_BETA2 as f32,
        keep1: (1.0 - ADAM_BETA1) as f32,
        keep2: (1.0 - ADAM_BETA2) as f32,
        eps: ADAM_EPS as f32,
        step_size: 0.0,
        v_scale: 0.0,
    };
    for t in 1..=config.n_grad_steps {
        if f64::from(adam.softmax.h) < config.threshold {
            break;
        }
        run.steps += 1;
        adam.step_size = (config.learning_rate / (1.0 - ADAM_BETA1.powi(t as i32))) as f32;
        // burn's f32 `√v / c₂` divides by the rounded c₂; this multiplies by its reciprocal.
        adam.v_scale = 1.0 / (1.0 - ADAM_BETA2.powi(t as i32)).sqrt() as f32;
        // In chunks on rayon's threads (elementwise: the result does not depend on the split;
        // the chunks' maxima are combined in chunk order).
        let state = m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK));
        let chunks = z
            .par_chunks_mut(CHUNK)
            .zip(p0.par_chunks_mut(CHUNK))
            .zip(state);
        let maxima = chunks
            .map(|((z, p0), (m, v))| {
                if t == 1 {
                    rows::vectorized(AdamChunk::<true>(&adam, z, p0, m, v))
                } else {
                    rows::vectorized(AdamChunk::<false>(&adam, z, p0, m, v))
                }
            })
            .collect();
        if t == config.n_grad_steps {
            break;
        }
        match rows::moments_from_max(z, rows::max_in_order(maxima)) {
            Some(moments) if moments.entropy().is_finite() => {
                adam.softmax = Softmax::of(&moments);
            }
            _ => {
                run.non_finite_after = Some(t);
                break;
            }
        }
    }
    run
}

/// What a pass needs of a row's softmax: `log p = shift(z, max) − ln s` entry by entry (in
/// f32, as [`rows::softmax_entropy`] computes it) and the entropy.
#[derive(Clone, Copy)]
struct Softmax {
    max: f32,
    ln_s: f32,
    h: f32,
}

impl Softmax {
    fn of(m: &rows::Moments) -> Self {
        Self {
            max: m.max,
            ln_s: m.log_sum as f32,
            h: m.written_entropy(),
        }
    }

    /// `(log p, p)` of logit `x`.
    #[inline(always)]
    fn at(&self, x: f32) -> (f32, f32) {
        let log_p = rows::shift(x, self.max) - self.ln_s;
        (log_p, rows::exp(log_p))
    }
}

/// One Adam step's scalars, in f32 as burn's ops see them, with the current softmax.
#[derive(Clone, Copy)]
struct AdamStep {
    softmax: Softmax,
    kl_weight: f32,
    beta1: f32,
    beta2: f32,
    keep1: f32,
    keep2: f32,
    eps: f32,
    step_size: f32,
    /// `1 / c₂`, `c₂ = √(1 − β2ᵗ)`.
    v_scale: f32,
}

/// One chunk of an Adam step ([`AdamStep::update`]) and the updated chunk's maximum (NaN if
/// it holds a NaN), as [`rows::vectorized`] runs it: `(step, z, p0, m, v)`.
struct AdamChunk<'a, const FIRST: bool>(
    &'a AdamStep,
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
);

impl<const FIRST: bool> rows::Kernel for AdamChunk<'_, FIRST> {
    type Output = f32;

    #[inline(always)]
    fn run(self) -> f32 {
        let Self(adam, z, p0, m, v) = self;
        adam.update::<FIRST>(z, p0, m, v);
        rows::max_of(z)
    }
}

impl AdamStep {
    /// The gradient `−p ⊙ (log p + H) + λ·(p − p0)` and Adam's update of `z`, `m` and `v` over
    /// one chunk. `FIRST`: the first step, where `z` still equals `z0` (so `p` is `p0`, which
    /// is written to `p0` here and read there later) and the moments are Adam's initial zeros
    /// (burn's loop starts from zero tensors): `m`, `v` are written without being read,
    /// `0·β + x` as there.
    ///
    /// Why `√v` in the first step although `√v / c₂` is `|g|` there in real arithmetic
    /// (`c₂ = √(1 − β2)`): taking `|g|` moved the output by 2.6e-5 on a flat 151,936-token
    /// row, over the 1e-5 the burn-op loop is held to (`tests/em_inf.rs`). Where `log p + H`
    /// cancels, `g` is rounding noise that Adam scales up to `lr·g/(|g| + ε)`, so an ulp of
    /// difference in the first step's `z` changes the later steps' `g` entirely.
    #[inline(always)]
    fn update<const FIRST: bool>(
        &self,
        z: &mut [f32],
        p0: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        let h = self.softmax.h;
        let state = m.iter_mut().zip(v.iter_mut());
        for ((z, p0), (m, v)) in z.iter_mut().zip(p0.iter_mut()).zip(state) {
            let (log_p, p) = self.softmax.at(*z);
            if FIRST {
                *p0 = p;
            }
            let grad = -(p * (log_p + h)) + (p - *p0) * self.kl_weight;
            let (m_prev, v_prev) = if FIRST { (0.0, 0.0) } else { (*m, *v) };
            *m = m_prev * self.beta1 + grad * self.keep1;
            *v = v_prev * self.beta2 + grad * grad * self.keep2;
            *z -= *m / (v.sqrt() * self.v_scale + self.eps) * self.step_size;
        }
    }
}

/// A row-long f32 buffer for [`em_inf_row`] (Adam's moments, `p0`) and the host draw (a
/// penalised row), taken from a small pool shared by all calls and given back when dropped, its
/// contents unspecified.
///
/// Why: at Qwen2.5's vocabulary a row's three buffers are 1.8 MB, and a fresh allocation that
/// large is a fresh mapping from the kernel whose every page faults on first write (with four
/// such buffers, about a fifth of EM-INF's time at batch 8). The pool keeps at most
/// [`Scratch::KEPT`] buffers (about 29 MB at that width).
pub(crate) struct Scratch(Vec<f32>);

static SCRATCH: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

impl Scratch {
    /// Buffers the pool keeps: three per row of a batch of 16.
    const KEPT: usize = 48;

    pub(crate) fn take(n: usize) -> Self {
        let pooled = SCRATCH.lock().ok().and_then(|mut pool| pool.pop());
        let mut buffer = pooled.unwrap_or_default();
        if buffer.len() != n {
            buffer.clear();
            buffer.resize(n, 0.0);
        }
        Self(buffer)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut pool) = SCRATCH.lock()
            && pool.len() < Self::KEPT
        {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
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
