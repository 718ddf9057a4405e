//! Evaluates a checkpoint on the paper's benchmarks with one strategy, or grades existing
//! outputs without a model.
//!
//! ```text
//! cargo run --release --example eval -- --model ~/.cache/em/models/qwen2.5-coder-0.5b-instruct-f32 \
//!     --bench math500,amc --strategy em-inf --limit 20 --out results/
//! cargo run --release --example eval -- --grade-only outputs.jsonl --bench math500 --out results/
//! ```
//!
//! Writes `results/{bench}.{strategy}.jsonl` (one graded record per problem, as it goes: run the
//! same command again to resume a killed run), `results/{bench}.{strategy}.json` (the summary)
//! and `results/report.md` (accuracy per benchmark and strategy). Strategies: `sampling`,
//! `greedy`, `em-inf`, `adaptive-temperature`, `self-consistency[-N]`, `refinement[-N]`.
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use em_eval::problems::{Benchmark, data_dir};
use em_eval::{EvalOptions, OnMismatch, Strategy, evaluate, grade_outputs};
use em_infer::{EmInfConfig, Generator};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(about = "Evaluate a checkpoint on math and code benchmarks")]
struct Args {
    /// Checkpoint directory (not needed with --grade-only).
    #[arg(long)]
    model: Option<String>,
    /// Comma-separated benchmarks: math500, aime, amc, minerva, olympiadbench, leetcode,
    /// humaneval, mbpp.
    #[arg(long, value_delimiter = ',', default_value = "math500")]
    bench: Vec<String>,
    /// Strategy.
    #[arg(long, default_value = "sampling")]
    strategy: String,
    /// Evaluate the first N problems of each benchmark.
    #[arg(long)]
    limit: Option<usize>,
    /// Base seed.
    #[arg(long, default_value_t = EvalOptions::default().seed)]
    seed: u64,
    /// Sampling temperature.
    #[arg(long, default_value_t = EvalOptions::default().temperature)]
    temperature: f64,
    /// New tokens per answer at most (the paper: 4096, LeetCode 8192).
    #[arg(long, default_value_t = EvalOptions::default().max_new_tokens)]
    max_new_tokens: usize,
    /// Problems generated together.
    #[arg(long, default_value_t = EvalOptions::default().batch_size)]
    batch_size: usize,
    /// EM-INF KL weight (default 0.05; the paper uses 0.001 for code).
    #[arg(long)]
    kl_weight: Option<f64>,
    /// When the output directory holds a run of the same benchmark and strategy with another
    /// configuration (model, KL weight, temperature, ...), write a new run (`em-inf-2`, ...)
    /// instead of refusing.
    #[arg(long)]
    new_run: bool,
    /// Output directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Benchmark files directory (default: em-eval's shipped data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Grade the outputs in this JSON Lines file, or in every `*.jsonl` of this directory
    /// (`id`, `output` per line), instead of generating.
    #[arg(long)]
    grade_only: Option<PathBuf>,
    /// Weight dtype on the device: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[allow(clippy::print_stdout)] // the report is the output
fn main() -> Result<()> {
    let args = Args::parse();
    let data = args.data.clone().unwrap_or_else(data_dir);
    let benches = args
        .bench
        .iter()
        .map(|b| Benchmark::from_name(b).with_context(|| format!("unknown benchmark {b}")))
        .collect::<Result<Vec<_>>>()?;
    let mut strategy = Strategy::from_name(&args.strategy)?;
    if let (Strategy::EmInf(config), Some(kl)) = (&mut strategy, args.kl_weight) {
        *config = EmInfConfig {
            kl_weight: kl,
            ..*config
        };
    }
    let options = EvalOptions {
        model: args.model.clone().unwrap_or_default(),
        on_mismatch: if args.new_run {
            OnMismatch::NewRun
        } else {
            OnMismatch::Error
        },
        limit: args.limit,
        seed: args.seed,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        batch_size: args.batch_size,
        out_dir: args.out.clone(),
        ..EvalOptions::default()
    };
    if let Some(outputs) = &args.grade_only {
        for bench in &benches {
            let problems = bench.load(&data)?;
            let report = grade_outputs(outputs, bench.name(), &problems, "graded", &options)?;
            println!(
                "{}: {}/{} correct",
                bench.name(),
                report.correct,
                report.problems
            );
        }
        println!("{}", std::fs::read_to_string(args.out.join("report.md"))?);
        return Ok(());
    }
    let Some(model_dir) = &args.model else {
        bail!("--model DIR is needed (or --grade-only FILE)");
    };
    let (pretrained, _) = em_examples::load_pretrained(model_dir, &args.dtype)?;
    let generator = Generator::new(&pretrained.model, &pretrained.tokenizer);
    for bench in &benches {
        let problems = bench.load(&data)?;
        let total = args.limit.unwrap_or(problems.len()).min(problems.len());
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (ETA {eta}) {msg}",
        )?);
        bar.set_prefix(format!("{} {}", bench.name(), strategy.name()));
        let (mut done, mut correct) = (0usize, 0usize);
        let report = evaluate(
            &generator,
            bench.name(),
            &problems,
            &strategy,
            &options,
            |r| {
                done += 1;
                correct += usize::from(r.correct);
                bar.inc(1);
                bar.set_message(format!("{correct}/{done} correct this run"));
                ControlFlow::Continue(())
            },
        )?;
        bar.finish();
        println!(
            "{}: {:.1}% ({}/{}), {:.1} tok/s",
            bench.name(),
            100.0 * report.accuracy,
            report.correct,
            report.problems,
            report.tokens_per_second
        );
    }
    println!("\n{}", std::fs::read_to_string(args.out.join("report.md"))?);
    Ok(())
}
