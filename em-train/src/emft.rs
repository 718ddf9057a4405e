//! The EM-FT objective on a batch of samples (`docs/method.md` §1): the entropy of the model's
//! own, untempered next-token distribution at every position that predicts a response token —
//! for a prompt of P tokens and a response of R, positions P−1 … P+R−2 — reduced over the
//! whole batch, with an optional k3 KL penalty to a frozen reference on the sampled tokens.
//!
//! Masks come from the lengths, never from `ids == pad` (Qwen's pad id is also an EOS id, and a
//! generated EOS is a response token). A batch split into micro-batches gives the update of the
//! whole batch: every micro-batch's loss is normalised by the whole batch's token (or sample)
//! count and the gradients are summed.

use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData};
use em_models::{
    BatchLayout, HeadOptions, HeadStats, ParamGrads, Qwen2ForCausalLM, TrainStep, host_tensor,
};

use crate::config::Reduction;
use crate::data::Sample;
use crate::error::{Result, TrainError};

/// How [`em_ft_grads`] computes the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmFtLoss {
    /// Token mean or sequence mean.
    pub reduction: Reduction,
    /// Rows per forward/backward.
    pub micro_batch: usize,
    /// Positions whose logits exist at once in the head.
    pub chunk: usize,
    /// KL coefficient (used only with a reference model).
    pub kl_coef: f64,
}

/// What one batch's loss was made of.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchStats {
    /// The loss (entropy term plus `kl_coef` × KL).
    pub loss: f64,
    /// Σ of the entropies at the response positions.
    pub entropy_sum: f64,
    /// Σ R: response tokens (= positions scored).
    pub tokens: usize,
    /// Samples in the batch.
    pub samples: usize,
    /// Σ of the k3 KL terms at the response positions (0 without a reference).
    pub kl_sum: f64,
}

impl BatchStats {
    /// Mean token entropy (Σ H / Σ R).
    pub fn mean_entropy(&self) -> f64 {
        self.entropy_sum / self.tokens.max(1) as f64
    }

    /// Mean response length.
    pub fn mean_response_len(&self) -> f64 {
        self.tokens as f64 / self.samples.max(1) as f64
    }

    /// Mean token KL (Σ k3 / Σ R).
    pub fn mean_kl(&self) -> f64 {
        self.kl_sum / self.tokens.max(1) as f64
    }
}

/// One right-padded micro-batch: ids, the next token at every position, and the response
/// positions of each row.
pub(crate) struct Rows {
    pub(crate) ids: Tensor<2, Int>,
    pub(crate) layout: BatchLayout,
    pub(crate) next_ids: Vec<Vec<u32>>,
    pub(crate) positions: Vec<Range<usize>>,
}

pub(crate) fn rows(samples: &[Sample], device: &burn::tensor::Device) -> Rows {
    let lengths: Vec<usize> = samples.iter().map(Sample::len).collect();
    let width = lengths.iter().copied().max().unwrap_or(1);
    let mut flat = Vec::with_capacity(samples.len() * width);
    let mut next_ids = Vec::with_capacity(samples.len());
    let mut positions = Vec::with_capacity(samples.len());
    for s in samples {
        let seq: Vec<u32> = s
            .prompt_ids
            .iter()
            .chain(&s.response_ids)
            .copied()
            .collect();
        flat.extend(seq.iter().map(|&id| i64::from(id)));
        flat.extend(std::iter::repeat_n(0i64, width - seq.len()));
        next_ids.push(seq[1..].to_vec());
        positions.push(em_models::response_positions(
            0,
            s.prompt_ids.len(),
            s.response_ids.len(),
        ));
    }
    Rows {
        ids: Tensor::from_data(TensorData::new(flat, [samples.len(), width]), device),
        layout: BatchLayout::right_padded(&lengths),
        next_ids,
        positions,
    }
}

/// Per-row statistics of the response tokens: `(log_probs, entropies)` at `temperature`,
/// recomputed by `model` (no gradient), `micro_batch` rows at a time.
///
/// # Errors
/// Model errors.
pub fn score_rows(
    model: &Qwen2ForCausalLM,
    samples: &[Sample],
    temperature: f64,
    chunk: usize,
    micro_batch: usize,
) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let model = crate::lora::inference_view(model);
    let device = model.device();
    let options = HeadOptions { chunk, temperature };
    let mut out = Vec::with_capacity(samples.len());
    for micro in samples.chunks(micro_batch.max(1)) {
        let r = rows(micro, &device);
        let hidden = model.forward_hidden(r.ids, &r.layout)?;
        let stats = model.head_stats(hidden, &r.next_ids, &r.positions, &options)?;
        let (lp, h) = (host(stats.log_probs)?, host(stats.entropy)?);
        for (b, range) in r.positions.iter().enumerate() {
            out.push((lp[b][range.clone()].to_vec(), h[b][range.clone()].to_vec()));
        }
    }
    Ok(out)
}

/// Per-token values placed at each row's response positions of a `[rows, width]` tensor in the
/// model's compute dtype, 0 elsewhere: `value(i, k)` for row `i`'s `k`-th response token. The one
/// way the trainers turn host per-token constants (old and reference log-probs, advantages) into
/// loss inputs.
pub(crate) fn at_positions(
    r: &Rows,
    model: &Qwen2ForCausalLM,
    value: impl Fn(usize, usize) -> f64,
) -> Tensor<2> {
    let [b, width] = r.ids.dims();
    let mut values = vec![0.0; b * width];
    for (i, range) in r.positions.iter().enumerate() {
        for (k, t) in range.clone().enumerate() {
            values[i * width + t] = value(i, k);
        }
    }
    host_tensor(&values, [b, width], &model.device(), model.compute_dtype())
}

/// One micro-batch's loss and gradients ([`Qwen2ForCausalLM::loss_and_grads`]), refused when
/// the loss is NaN or infinite.
pub(crate) fn checked_grads(
    model: &Qwen2ForCausalLM,
    r: Rows,
    options: &HeadOptions,
    step: usize,
    loss: impl FnOnce(&HeadStats) -> Tensor<1>,
) -> Result<TrainStep> {
    let out = model.loss_and_grads(r.ids, &r.layout, &r.next_ids, &r.positions, options, loss)?;
    if !out.value.is_finite() {
        return Err(TrainError::NonFinite {
            step,
            what: "loss",
            value: out.value,
        });
    }
    Ok(out)
}

pub(crate) fn host(t: Tensor<2>) -> Result<Vec<Vec<f64>>> {
    let [b, s] = t.dims();
    let v = t
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(TrainError::Tensor)?;
    Ok((0..b).map(|i| v[i * s..(i + 1) * s].to_vec()).collect())
}

/// The EM-FT gradients of `samples` (one optimiser step's batch) for a trainable `model`, and
/// the batch's statistics. With `reference` and `loss.kl_coef > 0`, the loss adds
/// `kl_coef · Σ k3(log π_ref − log π) / Σ R` over the response tokens.
///
/// # Errors
/// [`TrainError::NoData`] for an empty batch; [`TrainError::NonFinite`] (with `step`) for a NaN
/// or infinite loss; model errors (a sample longer than the context).
pub fn em_ft_grads(
    model: &Qwen2ForCausalLM,
    reference: Option<&Qwen2ForCausalLM>,
    samples: &[Sample],
    loss: &EmFtLoss,
    step: usize,
) -> Result<(ParamGrads, BatchStats)> {
    if samples.is_empty() {
        return Err(TrainError::NoData("an empty batch".into()));
    }
    let device = model.device();
    let total_tokens: usize = samples.iter().map(|s| s.response_ids.len()).sum();
    let denominator = match loss.reduction {
        Reduction::TokenMean => total_tokens as f64,
        Reduction::SequenceMean => samples.len() as f64,
    };
    let options = HeadOptions {
        chunk: loss.chunk,
        temperature: 1.0,
    };
    let micro_batch = loss.micro_batch.max(1);
    // The reference's log-probs of the response tokens, recomputed as the RL trainer's are.
    let reference = match reference.filter(|_| loss.kl_coef > 0.0) {
        Some(reference) => Some(score_rows(
            reference,
            samples,
            1.0,
            loss.chunk,
            micro_batch,
        )?),
        None => None,
    };
    let mut grads = ParamGrads::new();
    let mut stats = BatchStats {
        tokens: total_tokens,
        samples: samples.len(),
        ..BatchStats::default()
    };
    for (m, micro) in samples.chunks(micro_batch).enumerate() {
        let first = m * micro_batch;
        let r = rows(micro, &device);
        let positions = r.positions.clone();
        let ref_rows = reference
            .as_ref()
            .map(|all| &all[first..first + micro.len()]);
        let ref_t = ref_rows.map(|rr| at_positions(&r, model, |i, k| rr[i].0[k]));
        let kl_scale = loss.kl_coef / total_tokens as f64;
        let out = checked_grads(model, r, &options, step, move |s: &HeadStats| {
            let entropy = (s.entropy.clone() * s.mask.clone()).sum() / denominator;
            match ref_t {
                Some(ref_t) => {
                    let kl = em_core::k3_kl(s.log_probs.clone(), ref_t) * s.mask.clone();
                    entropy + kl.sum() * kl_scale
                }
                None => entropy,
            }
        })?;
        stats.loss += out.value;
        for (b, range) in positions.iter().enumerate() {
            for (k, t) in range.clone().enumerate() {
                stats.entropy_sum += out.entropy[b][t];
                if let Some(rr) = ref_rows {
                    stats.kl_sum += em_core::reference::k3_kl(out.log_probs[b][t], rr[b].0[k]);
                }
            }
        }
        grads.merge(out.grads);
    }
    Ok((grads, stats))
}
