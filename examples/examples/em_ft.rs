//! EM-FT: fine-tune a checkpoint by minimising the token entropy of its own samples
//! (`docs/method.md` §1), with checkpoints, exact resume, `metrics.jsonl`, `metrics.svg` and
//! held-out validation.
//!
//! ```text
//! cargo run --release --example em_ft -- --model DIR --bench math500 --steps 10 --batch-size 4 \
//!     --num-samples 1 --temperature 1.0 --max-new-tokens 256 --lr 2e-5 --weight-decay 0.01 \
//!     --max-grad-norm 1.0 --reduction token-mean --seed 42 --out runs/x
//! cargo run --release --example em_ft -- --model DIR --samples samples.jsonl --steps 10 --out runs/y
//! cargo run --release --example em_ft -- --config run.toml --out runs/x --resume
//! ```
//!
//! Flags override the `--config` file (TOML or JSON, the fields of `em_train::RunConfig`); the
//! run's config is validated before any work and saved as `run.json` in every checkpoint, and
//! `--resume` refuses a config that differs from it.
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use em_train::{DataSource, Event, Reduction, RunConfig, Schedule, ValidationConfig, run_em_ft};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(about = "EM-FT: minimise the token entropy of the model's own samples")]
struct Args {
    /// Run config (TOML or JSON); the flags below override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Initial checkpoint directory (HF layout).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompts from an em-grade benchmark (labels unused): math500, amc, ...
    #[arg(long, conflicts_with_all = ["prompts", "samples"])]
    bench: Option<String>,
    /// Prompts from a JSON Lines file (with --field).
    #[arg(long, conflicts_with = "samples")]
    prompts: Option<PathBuf>,
    /// The prompt field of --prompts.
    #[arg(long, default_value = "problem")]
    field: String,
    /// Fixed samples (offline EM-FT): `{"prompt_ids", "response_ids"}` or `{"prompt",
    /// "response"}` per line.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Use the first N prompts or samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Raw prompts instead of the chat template with the math system prompt.
    #[arg(long)]
    no_chat: bool,
    /// Skip prompts longer than this (tokens).
    #[arg(long)]
    max_prompt_len: Option<usize>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Prompts (or samples) per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Rows per forward/backward (memory); the update is the whole batch's.
    #[arg(long)]
    micro_batch_size: Option<usize>,
    /// Responses per prompt.
    #[arg(long)]
    num_samples: Option<usize>,
    /// Rollout temperature.
    #[arg(long)]
    temperature: Option<f64>,
    /// Rollout nucleus cut-off.
    #[arg(long)]
    top_p: Option<f64>,
    /// New tokens per response at most.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Shuffle the data each epoch with this seed.
    #[arg(long)]
    shuffle: Option<u64>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Global grad-norm clip (0 disables).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    /// Linear warm-up steps, then cosine to --min-lr (default: constant lr).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    min_lr: f64,
    /// token-mean or sequence-mean.
    #[arg(long)]
    reduction: Option<String>,
    /// KL coefficient to the initial model (0: none).
    #[arg(long)]
    kl_coef: Option<f64>,
    /// Rollout seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Head chunk (positions whose logits exist at once).
    #[arg(long)]
    chunk: Option<usize>,
    /// Checkpoint every N steps (and at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints (plus the best).
    #[arg(long)]
    keep_last: Option<usize>,
    /// Held-out validation benchmark (greedy, graded).
    #[arg(long)]
    val_bench: Option<String>,
    /// Validation problems (the benchmark's first N, held out of training prompts).
    #[arg(long, default_value_t = ValidationConfig::default().limit)]
    val_limit: usize,
    /// Validate every N steps.
    #[arg(long, default_value_t = ValidationConfig::default().every)]
    val_every: usize,
    /// New tokens per validation answer.
    #[arg(long, default_value_t = ValidationConfig::default().max_new_tokens)]
    val_max_new_tokens: usize,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    resume: bool,
}

fn run_config(args: &Args) -> Result<RunConfig> {
    let mut c = match &args.config {
        Some(path) => RunConfig::from_file(path)?,
        None => RunConfig::default(),
    };
    macro_rules! set {
        ($($flag:ident => $field:expr),* $(,)?) => {
            $( if let Some(v) = args.$flag.clone() { $field = v; } )*
        };
    }
    set!(
        model => c.model,
        max_prompt_len => c.max_prompt_len,
        steps => c.steps,
        batch_size => c.batch_size,
        num_samples => c.num_samples,
        temperature => c.temperature,
        top_p => c.top_p,
        max_new_tokens => c.max_new_tokens,
        lr => c.optimizer.lr,
        weight_decay => c.optimizer.weight_decay,
        kl_coef => c.kl_coef,
        seed => c.seed,
        chunk => c.chunk,
        checkpoint_every => c.checkpoint_every,
        keep_last => c.keep_last,
    );
    if args.micro_batch_size.is_some() {
        c.micro_batch_size = args.micro_batch_size;
    }
    if args.limit.is_some() {
        c.limit = args.limit;
    }
    if args.shuffle.is_some() {
        c.shuffle = args.shuffle;
    }
    if let Some(clip) = args.max_grad_norm {
        c.optimizer.max_grad_norm = (clip > 0.0).then_some(clip);
    }
    if let Some(warmup_steps) = args.warmup_steps {
        c.schedule = Schedule::WarmupCosine {
            warmup_steps,
            min_lr: args.min_lr,
        };
    }
    if let Some(r) = &args.reduction {
        c.reduction = Reduction::from_name(r)?;
    }
    if args.no_chat {
        c.chat = false;
    }
    if let Some(name) = &args.bench {
        c.data = DataSource::Bench { name: name.clone() };
    } else if let Some(path) = &args.prompts {
        c.data = DataSource::Prompts {
            path: path.clone(),
            field: args.field.clone(),
        };
    } else if let Some(path) = &args.samples {
        c.data = DataSource::Samples { path: path.clone() };
    }
    if let Some(bench) = &args.val_bench {
        c.validation = Some(ValidationConfig {
            bench: bench.clone(),
            limit: args.val_limit,
            every: args.val_every,
            max_new_tokens: args.val_max_new_tokens,
            ..ValidationConfig::default()
        });
    }
    if c.model.as_os_str().is_empty() {
        bail!("--model (or `model` in --config) is required");
    }
    Ok(c)
}

#[allow(clippy::print_stdout)] // the report is the output
fn main() -> Result<()> {
    let args = Args::parse();
    let run = run_config(&args)?;
    let device = em_examples::device();
    let bar = ProgressBar::new(run.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed} < {eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = run_em_ft(&run, &args.out, args.resume, &device, |event| {
        match event {
            Event::Started {
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
            Event::Metrics(m) => {
                bar.set_position(m.step as u64);
                let mut parts = Vec::new();
                if let Some(v) = m.entropy {
                    parts.push(format!("entropy {v:.4}"));
                }
                if let Some(v) = m.grad_norm {
                    parts.push(format!("grad norm {v:.3}"));
                }
                if let Some(v) = m.response_len {
                    parts.push(format!("len {v:.0}"));
                }
                if let Some(v) = m.val_accuracy {
                    parts.push(format!("val {:.1}%", 100.0 * v));
                }
                bar.set_message(parts.join(", "));
                bar.println(serde_json::to_string(m).unwrap_or_default());
            }
            Event::Checkpoint(dir) => bar.println(format!("checkpoint {}", dir.display())),
        }
        ControlFlow::Continue(())
    })?;
    bar.finish();
    println!(
        "[{}] {} steps; last checkpoint {}; metrics {} and {}",
        em_examples::backend_name(),
        summary.steps,
        summary.last_checkpoint.display(),
        args.out.join("metrics.jsonl").display(),
        args.out.join("metrics.svg").display(),
    );
    if let Some(best) = summary.best {
        println!(
            "best on validation: {} ({:.1}%)",
            best.checkpoint,
            100.0 * best.val_accuracy
        );
    }
    Ok(())
}
