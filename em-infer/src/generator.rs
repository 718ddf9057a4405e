//! Batched generation over any [`CausalLm`]: left-padded prompts, one KV cache, a logits
//! processor chain, a seeded [`Sampler`], per-row stopping and a streaming callback.
//!
//! Each decoding step runs the model on the rows still going (finished rows are dropped from the
//! KV cache and the sampler, so they stop costing compute), computes the entropy of the model's
//! own distribution, applies the processors (EM-INF, adaptive temperature, closures), draws one
//! token per row and reads back `[rows, 4]` values — token, its log-prob, the entropy of the
//! distribution it was drawn from, the model's entropy — in one host sync
//! ([`crate::sampling::Draw::read_back`]). The cache, the sampler and the active rows live in
//! one `DecodeState` with a single `retain`; streaming detokenisation and stop strings are in
//! `stream.rs`.

use burn::tensor::{Int, Tensor, TensorData};
use em_models::{CausalLm, KvCache, Logits, Tokenizer};

use crate::error::{InferError, Result};
use crate::processor::{LogitsProcessor, StepContext, process_for_draw};
use crate::sampling::{Sampler, Sampling};
pub use crate::stream::{Generation, StopReason, TokenEvent};
use crate::stream::{RowState, StopStrings};

/// How to generate. Defaults: 256 new tokens, plain sampling at temperature 1, seed 42, the
/// tokenizer's EOS ids, no stop strings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GenerateConfig {
    /// New tokens per row at most.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Seed of the per-row random streams; the same seed gives the same tokens on the same
    /// backend.
    pub seed: u64,
    /// One seed per prompt, overriding `seed`: row `i` then draws from a stream that depends on
    /// `row_seeds[i]` only, not on its position in the batch (e.g. a seed per problem id, so a
    /// resumed evaluation samples what an uninterrupted one would). Empty = derive from `seed`.
    pub row_seeds: Vec<u64>,
    /// Generation stops when the output text contains one of these; the text is cut before it.
    pub stop_strings: Vec<String>,
    /// Token ids that end a row (kept in `tokens`, not in `text`); `None` = the tokenizer's
    /// (`generation_config.json`, `config.json`, `tokenizer_config.json`).
    pub eos_ids: Option<Vec<u32>>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: Sampling::default(),
            seed: 42,
            row_seeds: Vec::new(),
            stop_strings: Vec::new(),
            eos_ids: None,
        }
    }
}

impl GenerateConfig {
    /// Checks `max_new_tokens > 0`, non-empty stop strings and the sampling parameters.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return InferError::invalid("max_new_tokens", 0, "must be > 0");
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return InferError::invalid(
                "stop_strings",
                format!("{:?}", self.stop_strings),
                "must not contain an empty string",
            );
        }
        self.sampling.validate()
    }
}

/// Generates from a model and its tokenizer. Cheap to create; holds only references.
#[derive(Debug, Clone, Copy)]
pub struct Generator<'m, M: CausalLm + ?Sized> {
    model: &'m M,
    tokenizer: &'m Tokenizer,
}

/// What a decode step works on besides the rows' own state: the KV cache, the sampler (random
/// streams, repetition-penalty state) and which rows are still going. Dropping finished rows
/// goes through [`DecodeState::retain`] alone, so the three never disagree.
struct DecodeState {
    cache: KvCache,
    sampler: Sampler,
    /// Indices (into the batch) of the rows still generating, in cache order.
    active: Vec<usize>,
}

impl DecodeState {
    /// Keeps the rows at positions `keep` of `active` (in that order) in the cache, the sampler
    /// and `active`.
    fn retain(&mut self, keep: &[usize]) -> Result<()> {
        if keep.len() == self.active.len() {
            return Ok(());
        }
        self.cache.retain_rows(keep)?;
        self.sampler.retain_rows(keep)?;
        self.active = keep.iter().map(|&i| self.active[i]).collect();
        Ok(())
    }
}

impl<'m, M: CausalLm + ?Sized> Generator<'m, M> {
    /// A generator for `model` with its `tokenizer`.
    pub fn new(model: &'m M, tokenizer: &'m Tokenizer) -> Self {
        Self { model, tokenizer }
    }

    /// The model.
    pub fn model(&self) -> &'m M {
        self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &'m Tokenizer {
        self.tokenizer
    }

    /// Encodes `prompts` (no special tokens added: apply the chat template first if needed) and
    /// generates; see [`Generator::generate`].
    ///
    /// # Errors
    /// As [`Generator::generate`], and tokenizer failures.
    pub fn generate_text(
        &self,
        prompts: &[impl AsRef<str>],
        config: &GenerateConfig,
        processor: &mut dyn LogitsProcessor,
        on_token: impl FnMut(&TokenEvent<'_>),
    ) -> Result<Vec<Generation>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p.as_ref(), false))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.generate(&ids, config, processor, on_token)
    }

    /// Generates a continuation of every prompt (token ids) in one batch.
    ///
    /// Rows stop at an EOS id, a stop string, `max_new_tokens` or the model's context, each on
    /// its own; `on_token` is called once per generated token, in row order within a step.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] for a bad config; [`InferError::EmptyPrompt`],
    /// [`InferError::PromptTooLong`] or [`InferError::TokenOutOfVocabulary`] for a bad prompt;
    /// [`InferError::NonFiniteLogits`] naming the step and row when the model (or a processor)
    /// produces NaN/+∞ logits; errors of the model and the processors.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
        processor: &mut dyn LogitsProcessor,
        mut on_token: impl FnMut(&TokenEvent<'_>),
    ) -> Result<Vec<Generation>> {
        config.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model;
        let (vocab, context) = (model.vocab_size(), model.max_position_embeddings());
        for (row, prompt) in prompts.iter().enumerate() {
            if prompt.is_empty() {
                return Err(InferError::EmptyPrompt { row });
            }
            if prompt.len() >= context {
                return Err(InferError::PromptTooLong {
                    row,
                    len: prompt.len(),
                    context,
                });
            }
            if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
                return Err(InferError::TokenOutOfVocabulary { id, vocab });
            }
        }
        let eos: Vec<u32> = config
            .eos_ids
            .clone()
            .unwrap_or_else(|| self.tokenizer.eos_ids().to_vec());
        let device = model.device();
        let batch = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows: Vec<RowState> = prompts
            .iter()
            .map(|p| RowState::new(p.len(), context, config.max_new_tokens))
            .collect();
        let longest_row = rows.iter().map(RowState::limit).max().unwrap_or(0);
        let mut cache = model.new_cache(batch, width + longest_row);
        let padding: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        cache.set_left_padding(&padding)?;
        let mut sampler = if config.row_seeds.is_empty() {
            Sampler::new(config.sampling, config.seed, batch)?
        } else if config.row_seeds.len() == batch {
            Sampler::with_row_seeds(config.sampling, &config.row_seeds)?
        } else {
            return Err(InferError::Batch(format!(
                "{} row seeds for {batch} prompts",
                config.row_seeds.len()
            )));
        };
        sampler.observe_prompts(prompts, vocab, &device)?;

        let pad = i64::from(self.tokenizer.pad_id().unwrap_or(0));
        let mut flat = Vec::with_capacity(batch * width);
        for (p, prompt) in padding.iter().zip(prompts) {
            flat.extend(std::iter::repeat_n(pad, *p));
            flat.extend(prompt.iter().map(|&id| i64::from(id)));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, width]), &device);
        let mut logits = model.forward(ids, &mut cache, Logits::Last)?;
        let mut state = DecodeState {
            cache,
            sampler,
            active: (0..batch).collect(),
        };
        let stops = StopStrings::new(&config.stop_strings);

        for step in 0.. {
            let n = state.active.len();
            let z: Tensor<2> = logits.reshape([n, vocab]);
            // Borrowed, not copied: a step costs O(rows) here, not O(rows · tokens so far).
            let histories: Vec<&[u32]> = state
                .active
                .iter()
                .map(|&r| rows[r].generation.tokens.as_slice())
                .collect();
            let ctx = StepContext::new(step, &state.active, &histories);
            let active = &state.active;
            let (processed, model_logits) =
                process_for_draw(processor, z, &ctx).map_err(|e| match e {
                    InferError::NonFiniteLogits { step, row } => InferError::NonFiniteLogits {
                        step,
                        row: active.get(row).copied().unwrap_or(row),
                    },
                    other => other,
                })?;
            let drawn = state.sampler.draw_step(model_logits, processed)?;
            let mut still = Vec::with_capacity(n);
            for (i, (&r, d)) in state.active.iter().zip(&drawn).enumerate() {
                let model_entropy = d.extra.unwrap_or(f64::NAN);
                if !(d.entropy.is_finite() && model_entropy.is_finite() && d.log_prob.is_finite()) {
                    return Err(InferError::NonFiniteLogits { step, row: r });
                }
                let row = &mut rows[r];
                let pushed = row.push(d, model_entropy, self.tokenizer, &eos, &stops)?;
                on_token(&TokenEvent {
                    row: r,
                    step,
                    token: d.token,
                    text: row
                        .generation
                        .text
                        .get(pushed.emitted_from..)
                        .unwrap_or_default(),
                    log_prob: d.log_prob,
                    entropy: d.entropy,
                    model_entropy,
                    stop: pushed.stop.as_ref(),
                });
                match pushed.stop {
                    Some(reason) => row.finish(reason, self.tokenizer)?,
                    None => still.push(i),
                }
            }
            if still.is_empty() {
                break;
            }
            state.retain(&still)?;
            let last: Vec<i64> = state
                .active
                .iter()
                .map(|&r| {
                    rows[r]
                        .generation
                        .tokens
                        .last()
                        .map_or(pad, |&t| i64::from(t))
                })
                .collect();
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(last, [state.active.len(), 1]),
                &device,
            );
            logits = model.forward(ids, &mut state.cache, Logits::Last)?;
        }
        Ok(rows.into_iter().map(|r| r.generation).collect())
    }
}
