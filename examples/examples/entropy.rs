//! Entropy of a next-token distribution and one entropy-minimisation step on its logits.
//!
//! ```text
//! cargo run --release --example entropy
//! cargo run --release --example entropy -- --logits 2,1,0.5,-1 --learning-rate 0.5 --steps 5
//! cargo run --release --example entropy --features wgpu   # the same on the wgpu backend
//! ```
//!
//! Prints the distribution, its entropy H, the closed-form gradient −p ⊙ (log p + H) next to
//! burn's autodiff gradient, and what gradient-descent steps on the logits do to H (the
//! mechanism behind EM-INF, without Adam).
use anyhow::Result;
use burn::tensor::Device;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Entropy of a distribution and its gradient step")]
struct Args {
    /// Comma-separated logits of one next-token distribution.
    #[arg(long, value_delimiter = ',', default_value = "2.0,1.0,0.5,0.0,-1.0")]
    logits: Vec<f32>,
    /// Step size of each gradient-descent step on the logits.
    #[arg(long, default_value_t = 1.0)]
    learning_rate: f32,
    /// How many steps to take.
    #[arg(long, default_value_t = 3)]
    steps: usize,
}

#[allow(clippy::print_stdout)] // printing the report is the point of the example
fn main() -> Result<()> {
    let args = Args::parse();
    let device = Device::default();
    let report = em_examples::entropy_demo(&args.logits, args.learning_rate, args.steps, &device)?;
    print!("{report}");
    Ok(())
}
