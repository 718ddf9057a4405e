//! One training step on a real checkpoint, for memory and time: the mean token entropy (EM-FT's
//! loss) over a batch of seeded random tokens, forward and backward with per-layer activation
//! checkpointing and the chunked head, reporting the step time and peak resident memory.
//!
//! ```text
//! cargo run --release --example train_step -- --model DIR --batch 2 --seq 1024
//! /usr/bin/time -v target/release/examples/train_step --model DIR --seq 2048   # peak RSS too
//! ```
use anyhow::Result;
use burn::module::Module;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "One EM-FT-style forward+backward on a checkpoint: time and peak memory")]
struct Args {
    /// Checkpoint directory.
    #[arg(long)]
    model: String,
    /// Rows.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Positions whose logits exist at once in the head.
    #[arg(long, default_value_t = em_models::HeadOptions::default().chunk)]
    chunk: usize,
    /// Seed of the random tokens.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// One backward through the whole model instead of layer by layer (keeps every layer's
    /// activations: for comparison).
    #[arg(long)]
    no_checkpoint: bool,
}

#[allow(clippy::print_stdout)] // the report is the output
fn main() -> Result<()> {
    let args = Args::parse();
    // Training is f32.
    let (pretrained, _) = em_examples::load_pretrained(&args.model, "f32")?;
    let loaded = em_examples::peak_rss_gib();
    let model = pretrained.model.train();
    let report = em_examples::entropy_step(
        &model,
        args.batch,
        args.seq,
        args.chunk,
        args.seed,
        !args.no_checkpoint,
    )?;
    println!(
        "[{}] {} batch {} × seq {}: entropy {:.4} nats, grad norm {:.4}, {} tensors, step {:.1} s | peak RSS after load {:.2} GiB, after step {:.2} GiB",
        em_examples::backend_name(),
        if args.no_checkpoint {
            "one backward"
        } else {
            "layer-checkpointed"
        },
        args.batch,
        args.seq,
        report.entropy,
        report.grad_norm,
        report.params_with_grad,
        report.seconds,
        loaded,
        em_examples::peak_rss_gib(),
    );
    Ok(())
}
