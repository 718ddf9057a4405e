//! The command-line flags `em_ft` and `em_rl` share, and how they become an
//! [`em_train::RunConfig`].

use std::path::PathBuf;

use anyhow::{Result, bail};
use em_train::{DataSource, RunConfig, Schedule, ValidationConfig};

/// The flags `em_ft` and `em_rl` share. Each given flag overrides one field of the base config:
/// the `--config` file (TOML or JSON), or, with `--resume` and no `--config`, the `run.json` of
/// the run's newest checkpoint (so `--out DIR --resume` alone continues a run), or the defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Run config (TOML or JSON, the fields of `em_train::RunConfig`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Initial checkpoint directory (HF layout).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompts from an em-grade benchmark: math500, amc, aime, minerva, ...
    #[arg(long, conflicts_with_all = ["prompts", "samples", "replay"])]
    pub bench: Option<String>,
    /// Prompts from a JSON Lines file (with --field).
    #[arg(long, conflicts_with_all = ["samples", "replay"])]
    pub prompts: Option<PathBuf>,
    /// The prompt field of --prompts.
    #[arg(long, default_value = "problem")]
    pub field: String,
    /// The reference-answer field of --prompts (the verifiable reward needs it).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// EM-FT: fixed samples, `{"prompt_ids", "response_ids"}` or `{"prompt", "response"}`.
    #[arg(long, conflicts_with = "replay")]
    pub samples: Option<PathBuf>,
    /// RL: fixed rollouts, groups of --group-size lines with identical `prompt_ids`.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Use the first N prompts, samples or groups.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Raw prompts instead of the chat template with the math system prompt.
    #[arg(long)]
    pub no_chat: bool,
    /// Skip prompts longer than this (tokens).
    #[arg(long)]
    pub max_prompt_len: Option<usize>,
    /// Iterations: optimiser steps (EM-FT) or rollouts (RL).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Prompts (or samples) per iteration.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Rows per forward/backward (memory); the update is the whole batch's.
    #[arg(long)]
    pub micro_batch_size: Option<usize>,
    /// Rollout temperature (RL: also the temperature of log-probs, ratios and rewards).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Rollout nucleus cut-off.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// New tokens per response at most.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Shuffle the data each epoch with this seed.
    #[arg(long)]
    pub shuffle: Option<u64>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global grad-norm clip (0 disables).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Linear warm-up steps, then cosine to --min-lr (default: constant lr).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Final learning rate of the cosine schedule (with --warmup-steps).
    #[arg(long, requires = "warmup_steps")]
    pub min_lr: Option<f64>,
    /// KL coefficient to the initial model (0: none, and no reference is loaded).
    #[arg(long)]
    pub kl_coef: Option<f64>,
    /// The frozen reference's dtype (with --kl-coef > 0): f32 or bf16 (half the memory).
    #[arg(long)]
    pub reference_dtype: Option<String>,
    /// Rollout seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Head chunk (positions whose logits exist at once).
    #[arg(long)]
    pub chunk: Option<usize>,
    /// Checkpoint every N iterations (and at every validation and the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints (plus the best).
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Held-out validation benchmark (greedy, graded; its problems leave the training prompts).
    #[arg(long)]
    pub val_bench: Option<String>,
    /// Validation problems (the benchmark's first N).
    #[arg(long, requires = "val_bench", default_value_t = ValidationConfig::default().limit)]
    pub val_limit: usize,
    /// Validate every N iterations.
    #[arg(long, requires = "val_bench", default_value_t = ValidationConfig::default().every)]
    pub val_every: usize,
    /// New tokens per validation answer.
    #[arg(long, requires = "val_bench", default_value_t = ValidationConfig::default().max_new_tokens)]
    pub val_max_new_tokens: usize,
    /// Train LoRA adapters of this rank on the q/k/v/o/gate/up/down projections instead of
    /// every weight.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator (the update is alpha/r · B·A).
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// Also write the merged model into every checkpoint (otherwise: the adapters, PEFT layout).
    #[arg(long, requires = "lora_rank")]
    pub lora_merge: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    /// The run config: the base (see [`TrainArgs`]) with every given flag applied; the
    /// method's own flags are the caller's.
    ///
    /// # Errors
    /// An unreadable `--config` or `run.json`; no model anywhere.
    pub fn run_config(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(path) => RunConfig::from_file(path)?,
            None if self.resume => match em_train::checkpoint::list(&self.out)?.last() {
                Some((_, dir)) => RunConfig::from_file(dir.join(em_train::checkpoint::RUN_FILE))?,
                None => RunConfig::default(),
            },
            None => RunConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $field:expr),* $(,)?) => {
                $( if let Some(v) = self.$flag.clone() { $field = v; } )*
            };
        }
        set!(
            model => c.model,
            max_prompt_len => c.max_prompt_len,
            steps => c.steps,
            batch_size => c.batch_size,
            temperature => c.temperature,
            top_p => c.top_p,
            max_new_tokens => c.max_new_tokens,
            lr => c.optimizer.lr,
            weight_decay => c.optimizer.weight_decay,
            kl_coef => c.kl_coef,
            reference_dtype => c.reference_dtype,
            seed => c.seed,
            chunk => c.chunk,
            checkpoint_every => c.checkpoint_every,
            keep_last => c.keep_last,
        );
        if self.micro_batch_size.is_some() {
            c.micro_batch_size = self.micro_batch_size;
        }
        if self.limit.is_some() {
            c.limit = self.limit;
        }
        if self.shuffle.is_some() {
            c.shuffle = self.shuffle;
        }
        if let Some(clip) = self.max_grad_norm {
            c.optimizer.max_grad_norm = (clip > 0.0).then_some(clip);
        }
        if let Some(warmup_steps) = self.warmup_steps {
            c.schedule = Schedule::WarmupCosine {
                warmup_steps,
                min_lr: self.min_lr.unwrap_or(0.0),
            };
        }
        if self.no_chat {
            c.chat = false;
        }
        if let Some(rank) = self.lora_rank {
            let defaults = em_train::LoraConfig::default();
            c.lora = Some(em_train::LoraConfig {
                rank,
                alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64),
                merge_on_save: self.lora_merge || defaults.merge_on_save,
            });
        }
        if let Some(name) = &self.bench {
            c.data = DataSource::Bench { name: name.clone() };
        } else if let Some(path) = &self.prompts {
            c.data = DataSource::Prompts {
                path: path.clone(),
                field: self.field.clone(),
                answer_field: self.answer_field.clone(),
            };
        } else if let Some(path) = &self.samples {
            c.data = DataSource::Samples { path: path.clone() };
        } else if let Some(path) = &self.replay {
            c.data = DataSource::Replay { path: path.clone() };
        }
        if let Some(bench) = &self.val_bench {
            c.validation = Some(ValidationConfig {
                bench: bench.clone(),
                limit: self.val_limit,
                every: self.val_every,
                max_new_tokens: self.val_max_new_tokens,
                ..ValidationConfig::default()
            });
        }
        if c.model.as_os_str().is_empty() {
            bail!("--model (or `model` in --config) is required");
        }
        Ok(c)
    }
}

/// Runs a training loop's events into a progress bar: one JSON line per metrics line, the
/// checkpoints, and a message with the latest values.
pub fn progress(
    steps: usize,
) -> (
    indicatif::ProgressBar,
    impl FnMut(&em_train::Event<'_>) -> std::ops::ControlFlow<()>,
) {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let handle = bar.clone();
    let on_event = move |event: &em_train::Event<'_>| {
        match event {
            em_train::Event::Started {
                from,
                resumed,
                skipped_prompts,
                ..
            } => {
                bar.set_position(*from as u64);
                if let Some(dir) = resumed {
                    bar.println(format!("resumed from {}", dir.display()));
                }
                if *skipped_prompts > 0 {
                    bar.println(format!(
                        "{skipped_prompts} prompts skipped (longer than max_prompt_len)"
                    ));
                }
            }
            em_train::Event::Metrics(m) => {
                bar.set_position(m.rollout.unwrap_or(m.step) as u64);
                let mut parts = Vec::new();
                for (name, value) in [
                    ("reward", m.reward_mean),
                    ("entropy", m.entropy),
                    ("grad norm", m.grad_norm),
                    ("len", m.response_len),
                    ("kl", m.kl),
                ] {
                    if let Some(v) = value {
                        parts.push(format!("{name} {v:.4}"));
                    }
                }
                if let Some(v) = m.val_accuracy {
                    parts.push(format!("val {:.1}%", 100.0 * v));
                }
                bar.set_message(parts.join(", "));
                bar.println(serde_json::to_string(m).unwrap_or_default());
            }
            em_train::Event::Checkpoint(dir) => {
                bar.println(format!("checkpoint {}", dir.display()))
            }
        }
        std::ops::ControlFlow::Continue(())
    };
    (handle, on_event)
}

/// What `em_ft` and `em_rl` print at the end: the optimiser steps, the last checkpoint, the
/// metrics files and the best checkpoint on validation.
pub fn summary(summary: &em_train::RunSummary, out: &std::path::Path) -> String {
    let mut text = format!(
        "[{}] {} optimiser steps; last checkpoint {}; metrics {} and {}",
        crate::backend_name(),
        summary.steps,
        summary.last_checkpoint.display(),
        out.join(em_train::metrics::METRICS_FILE).display(),
        out.join(em_train::metrics::PLOT_FILE).display(),
    );
    if let Some(best) = &summary.best {
        text.push_str(&format!(
            "\nbest on validation: {} ({:.1}%)",
            best.checkpoint,
            100.0 * best.val_accuracy
        ));
    }
    text
}
