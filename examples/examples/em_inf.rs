//! Plain sampling vs EM-INF on a real checkpoint, from the same seed: both continuations, their
//! mean entropy per token and their speed.
//!
//! ```text
//! bash scripts/qwen/reproduce.sh   # once: builds ~/.cache/em/models/qwen2.5-coder-0.5b-instruct-f32
//! cargo run --release --example em_inf -- --model ~/.cache/em/models/qwen2.5-coder-0.5b-instruct-f32 \
//!     --prompt "What is the sum of the first 10 positive odd numbers?" --chat --max-new-tokens 64
//! cargo run --release --example em_inf --features wgpu -- --model DIR --prompt "..."   # wgpu backend
//! ```
//!
//! Defaults are the paper's (`docs/method.md` §3 and §4): temperature 0.1 after EM-INF,
//! threshold 0.3, KL weight 0.05, learning rate 0.1, 3 Adam steps, seed 42, and the paper's math
//! system prompt with `--chat`. "Mean entropy sampled-from" is the entropy of the distribution
//! each token was drawn from (after EM-INF and temperature); "model" is the model's own.
use std::io::Write;

use anyhow::{Result, bail};
use clap::Parser;
use em_infer::{EmInfConfig, GenerateConfig, Generator, Sampling};
use em_models::CausalLm;

use em_eval::prompts::MATH_SYSTEM_PROMPT as MATH_SYSTEM;

#[derive(Parser, Debug)]
#[command(about = "Generate with plain sampling and with EM-INF from the same seed")]
struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template with a system turn.
    #[arg(long)]
    chat: bool,
    /// System prompt used with --chat.
    #[arg(long, default_value = MATH_SYSTEM)]
    system: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature (applied after EM-INF); 0 = greedy. Default: the paper's evaluation
    /// temperature.
    #[arg(long, default_value_t = em_eval::EvalOptions::default().temperature)]
    temperature: f64,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = Sampling::default().top_p)]
    top_p: f64,
    /// Seed shared by both runs.
    #[arg(long, default_value_t = GenerateConfig::default().seed)]
    seed: u64,
    /// EM-INF: rows with entropy below this (nats) are left alone.
    #[arg(long, default_value_t = EmInfConfig::default().threshold)]
    threshold: f64,
    /// EM-INF: weight of KL(p0 ‖ p) (the paper uses 0.001 for code).
    #[arg(long, default_value_t = EmInfConfig::default().kl_weight)]
    kl_weight: f64,
    /// EM-INF: Adam learning rate on the logits.
    #[arg(long, default_value_t = EmInfConfig::default().learning_rate)]
    learning_rate: f64,
    /// EM-INF: Adam steps per decoding step.
    #[arg(long, default_value_t = EmInfConfig::default().n_grad_steps)]
    n_grad_steps: usize,
    /// Weight dtype on the device: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[allow(clippy::print_stdout)] // the continuations and the measurements are the output
fn main() -> Result<()> {
    let args = Args::parse();
    let (pretrained, load_s) = em_examples::load_pretrained(&args.model, &args.dtype)?;
    let tok = &pretrained.tokenizer;
    let text = tok.prompt_text(&args.prompt, args.chat, Some(&args.system))?;
    let ids = tok.encode(&text, false)?;
    let context = pretrained.model.max_position_embeddings();
    if ids.len() >= context {
        bail!(
            "the prompt has {} tokens, the model's context {context}",
            ids.len()
        );
    }
    let config = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            ..Sampling::default()
        },
        seed: args.seed,
        ..GenerateConfig::default()
    };
    let em_inf = EmInfConfig {
        threshold: args.threshold,
        kl_weight: args.kl_weight,
        learning_rate: args.learning_rate,
        n_grad_steps: args.n_grad_steps,
    };
    let generator = Generator::new(&pretrained.model, tok);
    println!(
        "[{}] loaded {} in {load_s:.1} s; prompt {} tokens\n{text}",
        em_examples::backend_name(),
        args.model,
        ids.len()
    );
    let mut current = "";
    let reports = em_examples::compare_em_inf(&generator, &ids, &config, em_inf, |label, e| {
        if label != current {
            current = label;
            print!("\n===== {label} =====\n");
        }
        print!("{}", e.text);
        let _ = std::io::stdout().flush();
    })?;
    println!("\n");
    for report in &reports {
        println!("{report}");
    }
    Ok(())
}
