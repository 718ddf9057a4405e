//! What training needs from the model: a forward without a KV cache over padded rows
//! ([`Qwen2ForCausalLM::forward_hidden`]), and the head and its loss as one memory-bounded,
//! differentiable operation ([`Qwen2ForCausalLM::head_loss`]).
//!
//! ## The head without `[tokens, vocab]`
//! A loss built from per-position log-probs and entropies (EM-FT's entropy, EM-RL's PPO and KL
//! terms) only ever needs `chunk × vocab` logits at a time, in the forward and the backward:
//! 1. [`Qwen2ForCausalLM::head_stats`] runs the head chunk by chunk without recording, keeping
//!    the log-prob of each position's next token and the entropy of its full distribution
//!    (`[batch, seq]` each), handed out as fresh autodiff leaves;
//! 2. the caller's loss over those two small tensors is back-propagated to them, giving
//!    `∂L/∂log p` and `∂L/∂H` per position;
//! 3. [`Qwen2ForCausalLM::head_surrogate`] recomputes each chunk's logits, forms
//!    `∂L/∂z = ∂L/∂log p · (onehot − p) + ∂L/∂H · ∂H/∂z` (em-core's
//!    [`SoftmaxEntropy::entropy_grad`](em_core::SoftmaxEntropy::entropy_grad)), and accumulates
//!    `∂L/∂hidden` and `∂L/∂W` of the head with two 2-D matmuls per chunk (never a
//!    `[batch, vocab, hidden]` tensor); the scalar `Σ hidden·∂L/∂hidden + Σ W·∂L/∂W` then carries
//!    exactly those gradients into burn's autodiff graph of the transformer body.
//!
//! [`Qwen2ForCausalLM::head_loss`] does the three steps. Its slow twin is the full `[.., vocab]`
//! logits with em-core's `token_log_probs` / `entropy` under autodiff (the tests compare them).

use std::ops::Range;

use burn::tensor::{Gradients, IndexingUpdateOp, Int, Tensor, TensorData};
use em_core::{SoftmaxEntropy, softmax_entropy};

use crate::build::host_tensor;
use crate::error::{ModelError, Result};
use burn::module::Module;

use crate::model::{LayerInputs, Qwen2ForCausalLM};
use crate::params::ParamGrads;

/// Where each row's real tokens are in a padded `[batch, seq]` batch: row `b` holds them at
/// `spans[b]` (left padding: `seq − len .. seq`; right padding: `0 .. len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLayout {
    /// The padded length.
    pub seq: usize,
    /// One span per row.
    pub spans: Vec<Range<usize>>,
}

impl BatchLayout {
    /// Rows of the given lengths, padded on the left to the longest.
    pub fn left_padded(lengths: &[usize]) -> Self {
        let seq = lengths.iter().copied().max().unwrap_or(0);
        Self {
            seq,
            spans: lengths.iter().map(|&l| seq - l..seq).collect(),
        }
    }

    /// Rows of the given lengths, padded on the right to the longest.
    pub fn right_padded(lengths: &[usize]) -> Self {
        let seq = lengths.iter().copied().max().unwrap_or(0);
        Self {
            seq,
            spans: lengths.iter().map(|&l| 0..l).collect(),
        }
    }

    fn check(&self, batch: usize, seq: usize, context: usize) -> Result<()> {
        if self.spans.len() != batch || self.seq != seq {
            return Err(ModelError::Batch(format!(
                "layout of {} rows × {} positions for ids of shape [{batch}, {seq}]",
                self.spans.len(),
                self.seq
            )));
        }
        if let Some((row, span)) = self
            .spans
            .iter()
            .enumerate()
            .find(|(_, s)| s.start >= s.end || s.end > seq)
        {
            return Err(ModelError::Batch(format!(
                "row {row}: span {span:?} is empty or outside 0..{seq}"
            )));
        }
        if let Some(longest) = self.spans.iter().map(|s| s.end - s.start).max()
            && longest > context
        {
            return Err(ModelError::ContextOverflow {
                needed: longest,
                capacity: context,
            });
        }
        Ok(())
    }
}

/// Options of [`Qwen2ForCausalLM::head_stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadOptions {
    /// Positions whose logits exist at once (`chunk × vocab` floats).
    pub chunk: usize,
    /// Log-probs and entropies are those of `softmax(logits / temperature)` (EM-RL uses the
    /// sampling temperature, as verl does; EM-FT 1).
    pub temperature: f64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            chunk: 256,
            temperature: 1.0,
        }
    }
}

/// Per-position statistics of the head, `[batch, seq]` in the compute dtype (f32; f64 for an
/// f64 model), 0 outside the positions asked for.
#[derive(Debug, Clone)]
pub struct HeadStats {
    /// `log softmax(z/T)[next token]`.
    pub log_probs: Tensor<2>,
    /// `H(softmax(z/T))` of the full distribution.
    pub entropy: Tensor<2>,
    /// 1 at the positions asked for, 0 elsewhere.
    pub mask: Tensor<2>,
}

/// What [`Qwen2ForCausalLM::head_loss`] returns.
pub struct HeadLoss {
    /// The loss's value.
    pub value: f64,
    /// The per-position statistics it was computed from (host copies).
    pub log_probs: Vec<Vec<f64>>,
    /// Entropies, as [`HeadLoss::log_probs`].
    pub entropy: Vec<Vec<f64>>,
    /// Gradients of the loss with respect to every tracked parameter of the model.
    pub grads: Gradients,
}

/// What [`Qwen2ForCausalLM::loss_and_grads`] returns.
#[derive(Debug)]
pub struct TrainStep {
    /// The loss's value.
    pub value: f64,
    /// Per-position log-probs (`[batch][seq]`, 0 outside the positions asked for).
    pub log_probs: Vec<Vec<f64>>,
    /// Per-position entropies, as [`TrainStep::log_probs`].
    pub entropy: Vec<Vec<f64>>,
    /// The gradient of every parameter the loss depends on.
    pub grads: ParamGrads,
}

impl std::fmt::Debug for HeadLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadLoss")
            .field("value", &self.value)
            .field("rows", &self.log_probs.len())
            .finish_non_exhaustive()
    }
}

/// The positions of a head request, flattened: `b·seq + t` and the token predicted there.
struct Selection {
    rows: Vec<i64>,
    targets: Vec<i64>,
}

impl Selection {
    fn new(
        batch: usize,
        seq: usize,
        next_ids: &[Vec<u32>],
        positions: &[Range<usize>],
    ) -> Result<Self> {
        if next_ids.len() != batch || positions.len() != batch {
            return Err(ModelError::Batch(format!(
                "{} next-id rows and {} position ranges for a batch of {batch}",
                next_ids.len(),
                positions.len()
            )));
        }
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (b, (ids, range)) in next_ids.iter().zip(positions).enumerate() {
            if range.end > seq || range.end > ids.len() {
                return Err(ModelError::Batch(format!(
                    "row {b}: positions {range:?} outside the row (seq {seq}, {} next ids)",
                    ids.len()
                )));
            }
            for t in range.clone() {
                rows.push((b * seq + t) as i64);
                targets.push(i64::from(ids[t]));
            }
        }
        Ok(Self { rows, targets })
    }

    fn chunks(&self, chunk: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let chunk = chunk.max(1);
        (0..self.rows.len())
            .step_by(chunk)
            .map(move |s| s..(s + chunk).min(self.rows.len()))
    }
}

impl Qwen2ForCausalLM {
    /// The training forward: `ids: [batch, seq]` laid out by `layout` (left or right padding,
    /// or none) through the body and the final norm, without a KV cache, to the hidden states
    /// `[batch, seq, hidden]` the head reads. Padded positions are masked out of attention and
    /// every row's positions count from its first real token, so a padded row gets the hidden
    /// states (and, under autodiff, the gradients) it gets alone; the padded positions'
    /// outputs are meaningless and must be masked by the loss.
    ///
    /// # Errors
    /// [`ModelError::Batch`] when the layout does not fit `ids`;
    /// [`ModelError::ContextOverflow`] for a row longer than `max_position_embeddings`.
    pub fn forward_hidden(&self, ids: Tensor<2, Int>, layout: &BatchLayout) -> Result<Tensor<3>> {
        let inputs = self.batch_inputs(&ids, layout)?;
        let mut x = self.embed(ids);
        for layer in &self.model.layers {
            x = layer.forward(x, &inputs, None);
        }
        Ok(self.model.norm.forward(x))
    }

    /// RoPE tables and the attention mask of a padded batch (constants: never recorded).
    fn batch_inputs(&self, ids: &Tensor<2, Int>, layout: &BatchLayout) -> Result<LayerInputs> {
        let [batch, seq] = ids.dims();
        layout.check(batch, seq, self.max_position_embeddings)?;
        let inputs = self.layer_inputs(&layout.spans, 0, seq, &ids.device());
        Ok(LayerInputs {
            cos: inputs.cos.inner(),
            sin: inputs.sin.inner(),
            mask: inputs.mask.map(Tensor::inner),
            spans: inputs.spans,
        })
    }

    /// One training step's forward and backward with activation memory linear in `seq`: the
    /// loss of [`Qwen2ForCausalLM::head_loss`] over `ids` laid out by `layout`, and its
    /// gradients for every parameter, recomputing each decoder layer from its saved input in
    /// the backward (per-layer activation checkpointing).
    ///
    /// The forward runs on an inference view and keeps only each layer's input
    /// (`layers × batch × seq × hidden`); the backward runs the head (chunked), then each layer
    /// again with autodiff from its saved input, back-propagates the incoming gradient through
    /// it alone, and drops its graph before the next, so at most one layer's attention
    /// (`[batch, heads, seq, seq]` under burn's autodiff) exists at a time. The gradients equal
    /// those of one backward through [`Qwen2ForCausalLM::forward_hidden`] +
    /// [`Qwen2ForCausalLM::head_loss`] (tested to 1e-10 in f64).
    ///
    /// The model must be trainable (`model.train()`, or built on an autodiff device).
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::forward_hidden`] and [`Qwen2ForCausalLM::head_loss`].
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads(
        &self,
        ids: Tensor<2, Int>,
        layout: &BatchLayout,
        next_ids: &[Vec<u32>],
        positions: &[Range<usize>],
        options: &HeadOptions,
        loss: impl FnOnce(&HeadStats) -> Tensor<1>,
    ) -> Result<TrainStep> {
        let ids = ids.inner();
        let inputs = self.batch_inputs(&ids, layout)?;
        check_options(options)?;
        let [batch, seq] = ids.dims();
        let sel = Selection::new(batch, seq, next_ids, positions)?;
        let plain = self.valid();
        let mut saved = Vec::with_capacity(self.num_layers());
        let mut x = plain.embed(ids.clone());
        for layer in &plain.model.layers {
            saved.push(x.clone());
            x = layer.forward(x, &inputs, None);
        }

        // The head: statistics of the final hidden states, the loss's derivatives, then
        // ∂L/∂W straight into the gradients and ∂L/∂hidden back through the final norm.
        let hidden = plain.model.norm.forward(x.clone());
        drop(plain);
        let stats = self.stats_of(hidden.clone(), &sel, options, true)?;
        let d = derivatives(stats, seq, loss)?;
        let (d_lp, d_h) = (
            host_f64(d.d_log_probs.inner())?,
            host_f64(d.d_entropy.inner())?,
        );
        let head_trainable = self.head_weight().is_require_grad();
        let (grad_hidden, grad_head) =
            self.head_grads(hidden, &sel, options, &d_lp, &d_h, head_trainable);
        let mut grads = ParamGrads::new();
        let head_id = match &self.lm_head {
            Some(lm_head) => lm_head.weight.id,
            None => self.model.embed_tokens.weight.id,
        };
        // A frozen head (LoRA) gets no gradient, and its `[vocab, hidden]` product is skipped.
        if let Some(grad_head) = grad_head {
            let numel = grad_head.dims().iter().product::<usize>();
            grads.add(head_id, grad_head.reshape([numel]));
        }
        let top = x.autodiff().require_grad();
        let normed = self.model.norm.forward(top.clone());
        let width = normed.dims()[2];
        let norm_grads = (normed.reshape([batch * seq, width]) * grad_hidden)
            .sum()
            .backward();
        grads.accumulate(&self.model.norm, &norm_grads);
        let mut upstream = top.grad(&norm_grads).map(Tensor::inner);
        drop(norm_grads);
        for (layer, input) in self.model.layers.iter().zip(saved).rev() {
            let Some(g) = upstream.take() else { break };
            let input = input.autodiff().require_grad();
            let out = layer.forward(input.clone(), &inputs, None);
            let layer_grads = (out * g).sum().backward();
            grads.accumulate(layer, &layer_grads);
            upstream = input.grad(&layer_grads).map(Tensor::inner);
        }
        if let Some(g) = upstream.filter(|_| self.model.embed_tokens.weight.val().is_require_grad())
        {
            let embedded = self.embed(ids);
            let embed_grads = (embedded * g).sum().backward();
            grads.accumulate(&self.model.embed_tokens, &embed_grads);
        }
        Ok(TrainStep {
            value: d.value,
            log_probs: d.log_probs,
            entropy: d.entropy,
            grads,
        })
    }

    /// The head's statistics at the given positions, computed `options.chunk` positions at a
    /// time with nothing recorded: for row `b` and `t` in `positions[b]`, the log-prob of
    /// `next_ids[b][t]` and the entropy of the full next-token distribution at `t`. When
    /// `hidden` is an autodiff tensor the two outputs are fresh leaves that require gradients
    /// (step 1 of the [module docs](crate::train)).
    ///
    /// # Shapes
    /// `hidden: [batch, seq, hidden]`, `next_ids[b]` at least `positions[b].end` long →
    /// `[batch, seq]` each.
    ///
    /// # Errors
    /// [`ModelError::Batch`] for positions outside the rows; [`ModelError::InvalidConfig`] for a
    /// temperature that is not finite and positive or a chunk of 0.
    pub fn head_stats(
        &self,
        hidden: Tensor<3>,
        next_ids: &[Vec<u32>],
        positions: &[Range<usize>],
        options: &HeadOptions,
    ) -> Result<HeadStats> {
        check_options(options)?;
        let [batch, seq, _] = hidden.dims();
        let sel = Selection::new(batch, seq, next_ids, positions)?;
        let leaves = hidden.is_autodiff();
        self.stats_of(hidden.inner(), &sel, options, leaves)
    }

    /// [`Qwen2ForCausalLM::head_stats`] of untracked hidden states; `leaves` makes the log-probs
    /// and entropies autodiff leaves that require gradients.
    fn stats_of(
        &self,
        hidden: Tensor<3>,
        sel: &Selection,
        options: &HeadOptions,
        leaves: bool,
    ) -> Result<HeadStats> {
        let [batch, seq, width] = hidden.dims();
        let device = hidden.device();
        // The head runs in the weights' width (the residual stream is f32 for 16-bit weights,
        // see `Qwen2ForCausalLM::embed`).
        let flat = hidden.reshape([batch * seq, width]).cast(self.dtype());
        let compute = self.compute_dtype();
        let mut log_probs = vec![0.0f64; batch * seq];
        let mut entropy = vec![0.0f64; batch * seq];
        let mut mask = vec![0.0f64; batch * seq];
        for range in sel.chunks(options.chunk) {
            let chunk = self.chunk_softmax(&flat, sel, range.clone(), options);
            let picked = chunk.parts.log_probs.gather(1, chunk.targets);
            let lp = host_f64(picked)?;
            let h = host_f64(chunk.parts.entropy)?;
            for (k, i) in range.enumerate() {
                let at = sel.rows[i] as usize;
                log_probs[at] = lp[k];
                entropy[at] = h[k];
                mask[at] = 1.0;
            }
        }
        let upload = |values: Vec<f64>, leaf: bool| -> Tensor<2> {
            let t = host_tensor(&values, [batch, seq], &device, compute);
            match (leaves, leaf) {
                (true, true) => t.autodiff().require_grad(),
                (true, false) => t.autodiff(),
                _ => t,
            }
        };
        Ok(HeadStats {
            log_probs: upload(log_probs, true),
            entropy: upload(entropy, true),
            mask: upload(mask, false),
        })
    }

    /// Step 3 of the [module docs](crate::train): a scalar whose gradient with respect to the
    /// model's parameters (through `hidden`'s graph and the head's weight) equals that of the
    /// loss whose derivatives with respect to [`HeadStats::log_probs`] and
    /// [`HeadStats::entropy`] are `d_log_probs` and `d_entropy` (`[batch, seq]`; only the
    /// selected positions are read). Call `.backward()` on it. Its value is not the loss.
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::head_stats`].
    pub fn head_surrogate(
        &self,
        hidden: Tensor<3>,
        next_ids: &[Vec<u32>],
        positions: &[Range<usize>],
        options: &HeadOptions,
        d_log_probs: Tensor<2>,
        d_entropy: Tensor<2>,
    ) -> Result<Tensor<1>> {
        check_options(options)?;
        let [batch, seq, width] = hidden.dims();
        let sel = Selection::new(batch, seq, next_ids, positions)?;
        let d_lp = host_f64(d_log_probs.inner())?;
        let d_h = host_f64(d_entropy.inner())?;
        let (grad_hidden, grad_head) =
            self.head_grads(hidden.clone().inner(), &sel, options, &d_lp, &d_h, true);
        let body = (hidden.reshape([batch * seq, width]) * grad_hidden).sum();
        Ok(match grad_head {
            Some(grad_head) => body + (self.head_weight() * grad_head).sum(),
            None => body,
        })
    }

    /// `∂L/∂hidden` (`[batch·seq, hidden]`) and `∂L/∂W` of the head weight as stored, from the
    /// loss's derivatives with respect to the per-position log-probs and entropies (host,
    /// `[batch·seq]`), recomputing each chunk's logits.
    fn head_grads(
        &self,
        hidden: Tensor<3>,
        sel: &Selection,
        options: &HeadOptions,
        d_lp: &[f64],
        d_h: &[f64],
        with_head: bool,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let [batch, seq, width] = hidden.dims();
        let weight_dtype = self.dtype();
        let compute = self.compute_dtype();
        let flat = hidden.reshape([batch * seq, width]).cast(weight_dtype);
        let device = flat.device();
        let head = self.head_weight().inner();
        let mut grad_hidden = Tensor::<2>::zeros([batch * seq, width], (&device, weight_dtype));
        let mut grad_head = Tensor::<2>::zeros(head.dims(), (&device, weight_dtype));
        let inv_t = 1.0 / options.temperature;
        for range in sel.chunks(options.chunk) {
            let n = range.len();
            let chunk = self.chunk_softmax(&flat, sel, range.clone(), options);
            let coefficient = |d: &[f64]| {
                let values: Vec<f64> = sel.rows[range.clone()]
                    .iter()
                    .map(|&r| d[r as usize] * inv_t)
                    .collect();
                host_tensor(&values, [n, 1], &device, compute)
            };
            let (c_lp, c_h) = (coefficient(d_lp), coefficient(d_h));
            // ∂L/∂z = c_lp·(onehot − p) + c_h·∂H/∂z, already divided by T.
            let onehot_minus_p = chunk.parts.probs.clone().neg().scatter(
                1,
                chunk.targets.clone(),
                Tensor::<2>::ones([n, 1], (&device, compute)),
                IndexingUpdateOp::Add,
            );
            let d_logits =
                (onehot_minus_p * c_lp + chunk.parts.entropy_grad() * c_h).cast(weight_dtype);
            let h = chunk.hidden;
            // z = h · Wᵀ with W `[vocab, hidden]` (tied or not).
            let d_h_chunk = d_logits.clone().matmul(head.clone());
            if with_head {
                grad_head = grad_head + d_logits.transpose().matmul(h);
            }
            grad_hidden =
                grad_hidden.select_assign(0, chunk.rows, d_h_chunk, IndexingUpdateOp::Add);
        }
        (grad_hidden, with_head.then_some(grad_head))
    }

    /// Steps 1-3 of the [module docs](crate::train): computes [`HeadStats`] at `positions` of
    /// `hidden` (from [`Qwen2ForCausalLM::forward_hidden`] on a model with autodiff), the
    /// caller's scalar `loss` of them, and its gradients with respect to every parameter, with
    /// only `chunk × vocab` logits alive at a time.
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::head_stats`]; [`ModelError::Batch`] when `hidden` is not tracked
    /// by autodiff.
    pub fn head_loss(
        &self,
        hidden: Tensor<3>,
        next_ids: &[Vec<u32>],
        positions: &[Range<usize>],
        options: &HeadOptions,
        loss: impl FnOnce(&HeadStats) -> Tensor<1>,
    ) -> Result<HeadLoss> {
        if !hidden.is_autodiff() {
            return Err(ModelError::Batch(
                "head_loss needs hidden states computed with autodiff (model.train())".into(),
            ));
        }
        let [_, seq, _] = hidden.dims();
        let stats = self.head_stats(hidden.clone(), next_ids, positions, options)?;
        let d = derivatives(stats, seq, loss)?;
        let surrogate = self.head_surrogate(
            hidden,
            next_ids,
            positions,
            options,
            d.d_log_probs,
            d.d_entropy,
        )?;
        Ok(HeadLoss {
            value: d.value,
            log_probs: d.log_probs,
            entropy: d.entropy,
            grads: surrogate.backward(),
        })
    }

    /// The full logits `[batch, seq, vocab]` of final hidden states, differentiable, with the
    /// tied head as a 2-D matmul over `[batch·seq, hidden]` (so its backward never builds
    /// `[batch, vocab, hidden]`): the slow twin of [`Qwen2ForCausalLM::head_loss`], for tests
    /// and benches. (The decoding forward keeps its own inference-tuned form.)
    pub fn head_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [batch, seq, width] = hidden.dims();
        hidden
            .cast(self.dtype())
            .reshape([batch * seq, width])
            .matmul(self.head_weight().transpose())
            .reshape([batch, seq, self.vocab_size])
    }

    /// Logits of one chunk of selected positions (no recording), as a softmax with its parts.
    fn chunk_softmax(
        &self,
        flat: &Tensor<2>,
        sel: &Selection,
        range: Range<usize>,
        options: &HeadOptions,
    ) -> Chunk {
        let device = flat.device();
        let n = range.len();
        let rows = Tensor::<1, Int>::from_data(
            TensorData::new(sel.rows[range.clone()].to_vec(), [n]),
            &device,
        );
        let targets = Tensor::<2, Int>::from_data(
            TensorData::new(sel.targets[range].to_vec(), [n, 1]),
            &device,
        );
        let hidden = flat.clone().select(0, rows.clone());
        let weight = self.head_weight().inner();
        let mut z = em_core::promote(hidden.clone().matmul(weight.transpose()));
        if options.temperature != 1.0 {
            z = z / options.temperature;
        }
        Chunk {
            hidden,
            rows,
            targets,
            parts: softmax_entropy(z),
        }
    }
}

/// A loss of [`HeadStats`], evaluated and differentiated with respect to them.
struct Derivatives {
    value: f64,
    d_log_probs: Tensor<2>,
    d_entropy: Tensor<2>,
    log_probs: Vec<Vec<f64>>,
    entropy: Vec<Vec<f64>>,
}

/// Step 2 of the [module docs](crate::train): the caller's loss of `stats` (whose log-probs
/// and entropies are autodiff leaves), its value, and its derivatives with respect to them
/// (zeros for a statistic the loss does not use).
fn derivatives(
    stats: HeadStats,
    seq: usize,
    loss: impl FnOnce(&HeadStats) -> Tensor<1>,
) -> Result<Derivatives> {
    let value = loss(&stats);
    let loss_value = host_f64(value.clone().inner())?
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    let grads = value.backward();
    let zeros = || {
        Tensor::<2>::zeros(
            stats.log_probs.dims(),
            (&stats.log_probs.device(), stats.log_probs.dtype()),
        )
    };
    let d_log_probs = stats.log_probs.grad(&grads).unwrap_or_else(zeros);
    let d_entropy = stats.entropy.grad(&grads).unwrap_or_else(zeros);
    let rows = |t: Tensor<2>| -> Result<Vec<Vec<f64>>> {
        Ok(host_f64(t.inner())?
            .chunks(seq.max(1))
            .map(<[f64]>::to_vec)
            .collect())
    };
    Ok(Derivatives {
        value: loss_value,
        d_log_probs,
        d_entropy,
        log_probs: rows(stats.log_probs)?,
        entropy: rows(stats.entropy)?,
    })
}

/// One chunk of selected positions: their hidden states, flat row indices, next tokens and
/// the softmax of their logits.
struct Chunk {
    hidden: Tensor<2>,
    rows: Tensor<1, Int>,
    targets: Tensor<2, Int>,
    parts: SoftmaxEntropy,
}

fn check_options(options: &HeadOptions) -> Result<()> {
    let path = std::path::PathBuf::from("<head options>");
    if options.chunk == 0 {
        return Err(ModelError::InvalidConfig {
            path,
            key: "chunk",
            reason: "must be at least 1".into(),
        });
    }
    if !(options.temperature.is_finite() && options.temperature > 0.0) {
        return Err(ModelError::InvalidConfig {
            path,
            key: "temperature",
            reason: format!("{} must be finite and positive", options.temperature),
        });
    }
    Ok(())
}

fn host_f64<const D: usize>(t: Tensor<D>) -> Result<Vec<f64>> {
    Ok(t.into_data().convert::<f64>().try_to_vec::<f64>()?)
}

/// Positions a response's tokens are predicted at, for a row whose prompt has `prompt_len`
/// tokens followed by `response_len` response tokens, starting at `offset` in the padded row:
/// `offset + P − 1 .. offset + P + R − 1` (EM-FT and EM-RL score exactly these).
pub fn response_positions(offset: usize, prompt_len: usize, response_len: usize) -> Range<usize> {
    let start = offset + prompt_len.saturating_sub(1);
    start..start + response_len
}
