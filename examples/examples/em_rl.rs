//! EM-RL (negative entropy as the only reward) and the labeled GRPO/RLOO/SC-RL baselines
//! (`docs/method.md` §2), with the same checkpoints, metrics, plot, validation and resume as
//! `em_ft`.
//!
//! ```text
//! cargo run --release --example em_rl -- --model DIR --bench math500 --reward token \
//!     --advantage rloo --batch-size 2 --group-size 4 --mini-batches 2 --clip-ratio 0.2 \
//!     --kl-coef 0.001 --steps 10 --lr 1e-6 --weight-decay 0.01 --max-grad-norm 1.0 \
//!     --temperature 1.0 --max-new-tokens 256 --seed 42 --out runs/y
//! cargo run --release --example em_rl -- --model DIR --bench math500 --reward verifiable \
//!     --advantage grpo --out runs/grpo                            # labeled GRPO baseline
//! cargo run --release --example em_rl -- --model DIR --replay rollouts.jsonl --group-size 4 --out runs/r
//! ```
//!
//! `--steps` counts rollouts; each is split into `--mini-batches` optimiser steps. The paper's
//! runs: lr 1e-6, KL 0.001, n = 4, 4 mini-batches per rollout. The released scripts also left
//! verl's entropy bonus (0.001) on: `--entropy-coef 0.001` reproduces that (off by default).
use anyhow::Result;
use clap::Parser;
use em_examples::train_args::{TrainArgs, progress};
use em_train::{AdvantageKind, RewardKind, run_rl};

#[derive(Parser, Debug)]
#[command(about = "EM-RL and labeled GRPO/RLOO/SC-RL baselines")]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
    /// token, token-sum, sequence, sequence-sum, verifiable or self-consistency.
    #[arg(long)]
    reward: Option<String>,
    /// rloo or grpo.
    #[arg(long)]
    advantage: Option<String>,
    /// Responses per prompt (n).
    #[arg(long)]
    group_size: Option<usize>,
    /// Optimiser steps per rollout (whole groups each).
    #[arg(long)]
    mini_batches: Option<usize>,
    /// PPO clip ε.
    #[arg(long)]
    clip_ratio: Option<f64>,
    /// Entropy bonus coefficient (the released scripts: 0.001).
    #[arg(long)]
    entropy_coef: Option<f64>,
}

#[allow(clippy::print_stdout)] // the report is the output
fn main() -> Result<()> {
    let args = Args::parse();
    let mut run = args.train.run_config()?;
    if args.train.config.is_none() && !args.train.resume && args.train.kl_coef.is_none() {
        run.kl_coef = 0.001; // the paper's
    }
    if args.train.config.is_none() && !args.train.resume && args.train.lr.is_none() {
        run.optimizer.lr = 1e-6; // the paper's
    }
    let mut rl = run.rl.unwrap_or_default();
    if let Some(r) = &args.reward {
        rl.reward = RewardKind::from_name(r)?;
    }
    if let Some(a) = &args.advantage {
        rl.advantage = AdvantageKind::from_name(a)?;
    }
    if let Some(n) = args.group_size {
        rl.group_size = n;
    }
    if let Some(m) = args.mini_batches {
        rl.mini_batches = m;
    }
    if let Some(c) = args.clip_ratio {
        rl.clip_ratio = c;
    }
    if let Some(e) = args.entropy_coef {
        rl.entropy_coef = e;
    }
    run.rl = Some(rl);
    let out = &args.train.out;
    let (bar, on_event) = progress(run.steps);
    let summary = run_rl(
        &run,
        out,
        args.train.resume,
        &em_examples::device(),
        None,
        on_event,
    )?;
    bar.finish();
    println!("{}", em_examples::train_args::summary(&summary, out));
    Ok(())
}
