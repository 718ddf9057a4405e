//! The run config: one serde struct for everything a training run does, read from TOML or JSON
//! (or built by the `em_ft` example from its flags), validated before any work with an error
//! that names the field, and stored as `run.json` in every checkpoint so that a resume with a
//! different config is refused ([`crate::checkpoint`]).

use std::path::{Path, PathBuf};

use em_grade::prompts::MATH_SYSTEM_PROMPT;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Where the training prompts or samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum DataSource {
    /// An em-grade benchmark's questions (labels unused), e.g. `math500`.
    Bench {
        /// The benchmark's name.
        name: String,
    },
    /// A JSON Lines file of prompts, one object per line with the prompt text in `field`.
    Prompts {
        /// The file.
        path: PathBuf,
        /// The field holding the prompt.
        field: String,
        /// The field holding the reference answer (the verifiable reward needs it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer_field: Option<String>,
    },
    /// Fixed samples (offline EM-FT): JSON Lines, `{"prompt_ids": [...], "response_ids": [...]}`
    /// or `{"prompt": "...", "response": "..."}` per line ([`crate::data::read_samples`]).
    Samples {
        /// The file.
        path: PathBuf,
    },
    /// Fixed rollouts (EM-RL, offline RL, exact tests): JSON Lines,
    /// `{"prompt_ids": [...], "response_ids": [...]}` (optional `"answer"`), in groups of exactly
    /// `group_size` consecutive lines with identical `prompt_ids`
    /// ([`crate::data::read_replay`]).
    Replay {
        /// The file.
        path: PathBuf,
    },
}

/// What an RL run rewards (`docs/method.md` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    /// EM-RL-token: −(mean entropy of the distributions that produced the response tokens).
    Token,
    /// The paper's form: −(sum of those entropies).
    TokenSum,
    /// EM-RL-sequence: the mean log-prob of the response tokens.
    Sequence,
    /// The paper's form: their sum.
    SequenceSum,
    /// 1 if the extracted answer is equivalent to the reference (math) or the program passes
    /// the tests (code), else 0. Needs labels.
    Verifiable,
    /// SC-RL: the fraction of the group's answers equivalent to this one (itself included; no
    /// answer → 0). No labels.
    SelfConsistency,
}

impl RewardKind {
    /// Parses `token`, `token-sum`, `sequence`, `sequence-sum`, `verifiable`,
    /// `self-consistency`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.into())).or_else(|_| {
            TrainError::invalid(
                "rl.reward",
                name,
                "expected token, token-sum, sequence, sequence-sum, verifiable or self-consistency",
            )
        })
    }
}

/// How rewards become advantages within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageKind {
    /// RLOO: `n/(n−1)·(r_i − mean)` (the released code; default).
    Rloo,
    /// GRPO: `(r_i − mean) / (unbiased std + 1e-6)`.
    Grpo,
}

impl AdvantageKind {
    /// Parses `rloo` / `grpo`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "rloo" => Ok(Self::Rloo),
            "grpo" => Ok(Self::Grpo),
            other => TrainError::invalid("rl.advantage", other, "expected rloo or grpo"),
        }
    }
}

/// The RL part of a run (EM-RL and the labeled baselines). Defaults: the paper's EM-RL-token
/// with RLOO, groups of 4, PPO clip 0.2, one mini-batch, no entropy bonus (the released scripts
/// left verl's 0.001 on: set `entropy_coef` to reproduce them). The KL coefficient is the run's
/// `kl_coef` (the paper: 0.001).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlConfig {
    /// The reward.
    pub reward: RewardKind,
    /// The advantage estimator.
    pub advantage: AdvantageKind,
    /// Responses per prompt (n).
    pub group_size: usize,
    /// Optimiser steps per rollout: the rollout's groups split, in order, into this many equal
    /// parts.
    pub mini_batches: usize,
    /// PPO clip ε.
    pub clip_ratio: f64,
    /// Entropy bonus: the loss subtracts `entropy_coef` × the token-mean entropy.
    pub entropy_coef: f64,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            reward: RewardKind::Token,
            advantage: AdvantageKind::Rloo,
            group_size: 4,
            mini_batches: 1,
            clip_ratio: 0.2,
            entropy_coef: 0.0,
        }
    }
}

/// How the per-position entropies of a batch become one loss (`docs/method.md` §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    /// Σ H·mask / Σ mask over the whole batch (the released code; default).
    TokenMean,
    /// Each sample's Σ H, averaged over the batch's samples (the paper's printed form).
    SequenceMean,
}

impl Reduction {
    /// Parses `token-mean` / `sequence-mean`.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "token-mean" => Ok(Self::TokenMean),
            "sequence-mean" => Ok(Self::SequenceMean),
            other => {
                TrainError::invalid("reduction", other, "expected token-mean or sequence-mean")
            }
        }
    }
}

/// AdamW as torch and verl run it (`p ← p·(1 − lr·wd)` on every parameter, bias-corrected
/// moments) with global grad-norm clipping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε added to √v̂.
    pub eps: f64,
    /// Clip the global gradient norm to this (`scale = min(1, C / (‖g‖ + 1e-6))`); `None`
    /// disables clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
        }
    }
}

/// The learning-rate schedule over optimiser steps `1..=steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Schedule {
    /// `lr` at every step (the paper's runs).
    Constant,
    /// `lr · min(1, s / warmup_steps)` up to `warmup_steps`, then cosine from `lr` to `min_lr`
    /// at the last step.
    WarmupCosine {
        /// Steps of linear warm-up.
        warmup_steps: usize,
        /// Learning rate at the last step.
        min_lr: f64,
    },
}

impl Schedule {
    /// The learning rate of optimiser step `step` (1-based) of `total`.
    pub fn lr(&self, peak: f64, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => peak,
            Schedule::WarmupCosine {
                warmup_steps,
                min_lr,
            } => {
                if warmup_steps > 0 && step <= warmup_steps {
                    return peak * step as f64 / warmup_steps as f64;
                }
                let span = total.saturating_sub(warmup_steps);
                if span == 0 {
                    return peak;
                }
                let progress = (step - warmup_steps) as f64 / span as f64;
                min_lr + (peak - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// LoRA adapters on the `*_proj.weight` linears ([`crate::lora`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / r · B·A`.
    pub alpha: f64,
    /// Also write the merged model (`save_pretrained` files) into every checkpoint, so that it
    /// loads as a plain checkpoint; otherwise checkpoints hold the adapters (PEFT layout) and
    /// the base stays `model`.
    pub merge_on_save: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            merge_on_save: false,
        }
    }
}

/// Held-out validation: greedy answers graded against labels (the only place labels are used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// The benchmark (an em-grade name).
    pub bench: String,
    /// Its first `limit` problems are the validation set; when training draws prompts from the
    /// same benchmark, they are removed from the training prompts.
    pub limit: usize,
    /// Validate at step 0, every `every` steps and at the last step.
    pub every: usize,
    /// New tokens per answer.
    pub max_new_tokens: usize,
    /// Problems decoded together.
    pub batch_size: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            bench: "math500".into(),
            limit: 16,
            every: 10,
            max_new_tokens: 512,
            batch_size: 8,
        }
    }
}

/// Everything an EM-FT run does. Defaults follow `docs/method.md` §1 (token-mean, no KL,
/// constant lr, one sample per prompt at temperature 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The initial checkpoint (HF layout). Training is f32.
    pub model: PathBuf,
    /// Training prompts or samples.
    pub data: DataSource,
    /// Use the first `limit` prompts or samples only.
    pub limit: Option<usize>,
    /// Wrap prompts in the chat template with [`RunConfig::system_prompt`] (online sources).
    pub chat: bool,
    /// The system turn of chat prompts (the paper's math prompt by default).
    pub system_prompt: String,
    /// Prompts longer than this (in tokens) are skipped and counted.
    pub max_prompt_len: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Prompts (online) or samples (offline) per optimiser step.
    pub batch_size: usize,
    /// Rows per forward/backward (memory); the update equals the whole batch's. `None` = the
    /// whole batch at once.
    pub micro_batch_size: Option<usize>,
    /// Responses sampled per prompt (online).
    pub num_samples: usize,
    /// Sampling temperature of the rollouts (the loss is always at temperature 1).
    pub temperature: f64,
    /// Nucleus cut-off of the rollouts (1 disables).
    pub top_p: f64,
    /// New tokens per response at most.
    pub max_new_tokens: usize,
    /// Shuffle the prompts or samples each epoch with this seed (`None`: file order).
    pub shuffle: Option<u64>,
    /// AdamW and clipping.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// How entropies become the loss.
    pub reduction: Reduction,
    /// Coefficient of a KL penalty to the initial model (k3 on the response tokens, token
    /// mean); 0 (the default) loads no reference.
    pub kl_coef: f64,
    /// The dtype the frozen reference is held in when `kl_coef > 0`: `f32` (default) or
    /// `bf16`/`f16` (half the memory; its log-probs are still computed in f32).
    pub reference_dtype: String,
    /// Seed of the rollouts.
    pub seed: u64,
    /// Positions whose logits exist at once in the head.
    pub chunk: usize,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// Keep the newest this many checkpoints (plus the best on validation).
    pub keep_last: usize,
    /// Held-out validation (`None`: none).
    pub validation: Option<ValidationConfig>,
    /// RL settings: `Some` for an EM-RL or baseline run ([`crate::rl::run_rl`]), `None` for
    /// EM-FT. `steps` then counts rollouts, `batch_size` prompts per rollout, and
    /// `micro_batch_size` rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rl: Option<RlConfig>,
    /// Train LoRA adapters instead of every weight (`None`: full fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            data: DataSource::Bench {
                name: "math500".into(),
            },
            limit: None,
            chat: true,
            system_prompt: MATH_SYSTEM_PROMPT.into(),
            max_prompt_len: 1024,
            steps: 10,
            batch_size: 4,
            micro_batch_size: None,
            num_samples: 1,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 256,
            shuffle: None,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Constant,
            reduction: Reduction::TokenMean,
            kl_coef: 0.0,
            reference_dtype: "f32".into(),
            seed: 42,
            chunk: 256,
            checkpoint_every: 0,
            keep_last: 2,
            validation: None,
            rl: None,
            lora: None,
        }
    }
}

impl RunConfig {
    /// The frozen reference model, loaded from `model` in `reference_dtype`, when `kl_coef > 0`.
    ///
    /// # Errors
    /// Loading errors.
    pub fn load_reference(
        &self,
        device: &burn::tensor::Device,
    ) -> Result<Option<em_models::Qwen2ForCausalLM>> {
        if self.kl_coef <= 0.0 {
            return Ok(None);
        }
        let options = em_models::LoadOptions {
            dtype: em_models::parse_dtype(&self.reference_dtype)?,
        };
        Ok(Some(em_models::Qwen2ForCausalLM::from_dir(
            &self.model,
            device,
            &options,
        )?))
    }

    /// Reads a run config from a `.toml` or `.json` file (by extension; anything else is read as
    /// TOML). Missing fields take their defaults; unknown fields are errors.
    ///
    /// # Errors
    /// [`TrainError::Io`] for an unreadable file, [`TrainError::ConfigFile`] for a parse error
    /// (naming the field and position).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| TrainError::ConfigFile {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Rows of one optimiser step: EM-FT's batch × samples, or one RL mini-batch.
    pub fn rows_per_step(&self) -> usize {
        match &self.rl {
            Some(rl) => self.batch_size / rl.mini_batches.max(1) * rl.group_size,
            None => self.batch_size * self.num_samples.max(1),
        }
    }

    /// The micro-batch size in effect (rows per forward/backward).
    pub fn micro_batch(&self) -> usize {
        self.micro_batch_size.unwrap_or(self.rows_per_step()).max(1)
    }

    /// Whether the run samples its own responses (the data is prompts, not samples).
    pub fn is_online(&self) -> bool {
        !matches!(
            self.data,
            DataSource::Samples { .. } | DataSource::Replay { .. }
        )
    }

    /// Optimiser steps of the whole run (`steps` × mini-batches for RL).
    pub fn optimizer_steps(&self) -> usize {
        self.steps * self.rl.map_or(1, |rl| rl.mini_batches.max(1))
    }

    fn validate_rl(&self, rl: &RlConfig) -> Result<()> {
        if rl.group_size < 2 {
            return TrainError::invalid(
                "rl.group_size",
                rl.group_size,
                "must be ≥ 2 (advantages compare a response with its group)",
            );
        }
        if rl.mini_batches == 0 || !self.batch_size.is_multiple_of(rl.mini_batches) {
            return TrainError::invalid(
                "rl.mini_batches",
                rl.mini_batches,
                format!(
                    "must be > 0 and divide batch_size ({}): mini-batches are whole groups",
                    self.batch_size
                ),
            );
        }
        if !(rl.clip_ratio > 0.0 && rl.clip_ratio < 1.0) {
            return TrainError::invalid("rl.clip_ratio", rl.clip_ratio, "must be in (0, 1)");
        }
        if !(rl.entropy_coef.is_finite() && rl.entropy_coef >= 0.0) {
            return TrainError::invalid(
                "rl.entropy_coef",
                rl.entropy_coef,
                "must be finite and ≥ 0",
            );
        }
        match (&self.data, rl.reward) {
            (DataSource::Samples { .. }, _) => TrainError::invalid(
                "data.kind",
                "samples",
                "RL takes prompts (online) or `replay` rollouts, not EM-FT samples",
            ),
            (
                DataSource::Prompts {
                    answer_field: None, ..
                },
                RewardKind::Verifiable,
            ) => TrainError::invalid(
                "data.answer_field",
                "none",
                "the verifiable reward needs reference answers",
            ),
            _ => Ok(()),
        }
    }

    /// Checks every field's domain (files are checked when the data is read).
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optimizer;
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                TrainError::invalid(field, v, "must be finite and > 0")
            }
        };
        if self.model.as_os_str().is_empty() {
            return TrainError::invalid("model", "\"\"", "a checkpoint directory is required");
        }
        if self.steps == 0 {
            return TrainError::invalid("steps", 0, "must be > 0");
        }
        if self.batch_size == 0 {
            return TrainError::invalid("batch_size", 0, "must be > 0");
        }
        if let Some(rl) = &self.rl {
            self.validate_rl(rl)?;
        } else if matches!(self.data, DataSource::Replay { .. }) {
            return TrainError::invalid(
                "data.kind",
                "replay",
                "replayed rollouts are for RL runs (EM-FT takes `samples`)",
            );
        }
        if let Some(m) = self.micro_batch_size
            && (m == 0 || m > self.rows_per_step())
        {
            return TrainError::invalid(
                "micro_batch_size",
                m,
                format!(
                    "must be in 1..={} (the rows of one optimiser step)",
                    self.rows_per_step()
                ),
            );
        }
        if self.num_samples == 0 {
            return TrainError::invalid("num_samples", 0, "must be > 0");
        }
        if self.limit == Some(0) {
            return TrainError::invalid("limit", 0, "must be > 0 when given");
        }
        if self.is_online() {
            positive("temperature", self.temperature)?;
            if !(self.top_p > 0.0 && self.top_p <= 1.0) {
                return TrainError::invalid("top_p", self.top_p, "must be in (0, 1]");
            }
            if self.max_new_tokens == 0 {
                return TrainError::invalid("max_new_tokens", 0, "must be > 0");
            }
        }
        if self.max_prompt_len == 0 {
            return TrainError::invalid("max_prompt_len", 0, "must be > 0");
        }
        if self.chunk == 0 {
            return TrainError::invalid("chunk", 0, "must be > 0");
        }
        positive("optimizer.lr", o.lr)?;
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0 && o.lr * o.weight_decay < 1.0) {
            return TrainError::invalid(
                "optimizer.weight_decay",
                o.weight_decay,
                "must be finite, ≥ 0 and lr·weight_decay < 1",
            );
        }
        for (field, beta) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return TrainError::invalid(field, beta, "must be in [0, 1)");
            }
        }
        positive("optimizer.eps", o.eps)?;
        if let Some(c) = o.max_grad_norm {
            positive("optimizer.max_grad_norm", c)?;
        }
        if let Schedule::WarmupCosine {
            warmup_steps,
            min_lr,
        } = self.schedule
        {
            if !(min_lr.is_finite() && min_lr >= 0.0 && min_lr <= o.lr) {
                return TrainError::invalid("schedule.min_lr", min_lr, "must be in [0, lr]");
            }
            if warmup_steps > self.steps {
                return TrainError::invalid(
                    "schedule.warmup_steps",
                    warmup_steps,
                    format!("must be ≤ steps ({})", self.steps),
                );
            }
        }
        if !(self.kl_coef.is_finite() && self.kl_coef >= 0.0) {
            return TrainError::invalid("kl_coef", self.kl_coef, "must be finite and ≥ 0");
        }
        if em_models::parse_dtype(&self.reference_dtype).is_err() {
            return TrainError::invalid(
                "reference_dtype",
                &self.reference_dtype,
                "expected f32, bf16, f16 or f64",
            );
        }
        if self.keep_last == 0 {
            return TrainError::invalid("keep_last", 0, "must be > 0");
        }
        match &self.data {
            DataSource::Bench { name } if em_grade::Benchmark::from_name(name).is_none() => {
                return TrainError::invalid(
                    "data.name",
                    name,
                    format!(
                        "unknown benchmark (one of {})",
                        em_grade::Benchmark::ALL.map(|b| b.name()).join(", ")
                    ),
                );
            }
            DataSource::Prompts { field, .. } if field.is_empty() => {
                return TrainError::invalid("data.field", "\"\"", "must name a field");
            }
            _ => {}
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                return TrainError::invalid("lora.rank", 0, "must be > 0");
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                return TrainError::invalid("lora.alpha", l.alpha, "must be finite and > 0");
            }
        }
        if let Some(v) = &self.validation {
            if em_grade::Benchmark::from_name(&v.bench).is_none() {
                return TrainError::invalid("validation.bench", &v.bench, "unknown benchmark");
            }
            for (field, value) in [
                ("validation.limit", v.limit),
                ("validation.every", v.every),
                ("validation.max_new_tokens", v.max_new_tokens),
                ("validation.batch_size", v.batch_size),
            ] {
                if value == 0 {
                    return TrainError::invalid(field, 0, "must be > 0");
                }
            }
        }
        Ok(())
    }
}
