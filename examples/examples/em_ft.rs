//! EM-FT: fine-tune a checkpoint by minimising the token entropy of its own samples
//! (`docs/method.md` §1), with checkpoints, exact resume, `metrics.jsonl`, `metrics.svg` and
//! held-out validation.
//!
//! ```text
//! cargo run --release --example em_ft -- --model DIR --bench math500 --steps 10 --batch-size 4 \
//!     --num-samples 1 --temperature 1.0 --max-new-tokens 256 --lr 2e-5 --weight-decay 0.01 \
//!     --max-grad-norm 1.0 --reduction token-mean --seed 42 --out runs/x
//! cargo run --release --example em_ft -- --model DIR --samples samples.jsonl --steps 10 --out runs/y
//! cargo run --release --example em_ft -- --out runs/x --resume      # continue a killed run
//! ```
//!
//! Flags override the `--config` file (TOML or JSON, the fields of `em_train::RunConfig`); the
//! run's config is validated before any work and saved as `run.json` in every checkpoint, and
//! `--resume` refuses a config that differs from it.
use anyhow::Result;
use clap::Parser;
use em_examples::train_args::{TrainArgs, progress};
use em_train::{Reduction, run_em_ft};

#[derive(Parser, Debug)]
#[command(about = "EM-FT: minimise the token entropy of the model's own samples")]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
    /// Responses sampled per prompt.
    #[arg(long)]
    num_samples: Option<usize>,
    /// token-mean (Σ H / Σ tokens over the batch) or sequence-mean (each sample's Σ H,
    /// averaged over samples).
    #[arg(long)]
    reduction: Option<String>,
}

#[allow(clippy::print_stdout)] // the report is the output
fn main() -> Result<()> {
    let args = Args::parse();
    let mut run = args.train.run_config()?;
    if let Some(n) = args.num_samples {
        run.num_samples = n;
    }
    if let Some(r) = &args.reduction {
        run.reduction = Reduction::from_name(r)?;
    }
    let out = &args.train.out;
    let (bar, on_event) = progress(run.steps);
    let summary = run_em_ft(
        &run,
        out,
        args.train.resume,
        &em_examples::device(),
        on_event,
    )?;
    bar.finish();
    println!("{}", em_examples::train_args::summary(&summary, out));
    Ok(())
}
