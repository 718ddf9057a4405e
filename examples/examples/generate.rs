//! Generation from a Hugging Face checkpoint directory, streamed, with prefill and decode speed.
//!
//! ```text
//! cargo run --release --example generate -- --model ~/.cache/em/models/qwen2.5-coder-0.5b-instruct-f32 \
//!     --prompt "Write a Python function that checks whether a number is prime." --chat --max-new-tokens 64
//! cargo run --release --example generate -- --model DIR --prompt "..." --temperature 0.7 --top-p 0.8
//! cargo run --release --example generate --features wgpu -- --model DIR --prompt "..."   # wgpu backend
//! ```
//!
//! Greedy by default. The backend is the one the build enabled (`cuda` > `wgpu` > `flex`).
//! `--dtype bf16|f16` keeps the weights in 16 bits on the device; logits are f32 either way.
use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use em_infer::{GenerateConfig, Generator, ProcessorChain, Sampling};

#[derive(Parser, Debug)]
#[command(about = "Generate with an em-models checkpoint")]
struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: String,
    /// The prompt.
    #[arg(long, required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// Token ids (a JSON array) fed as the prompt as they are, instead of --prompt (no template):
    /// what scripts/bench-peers.sh gives every engine.
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Option<std::path::PathBuf>,
    /// Decode exactly --max-new-tokens tokens, EOS or not (for speed comparisons).
    #[arg(long)]
    ignore_eos: bool,
    /// Print the speeds as one JSON line at the end (for scripts).
    #[arg(long)]
    json: bool,
    /// Untimed generations of one token from the same prompt before the timed one, so that
    /// the timed prefill runs warm (its first forward's page faults and allocations paid):
    /// what scripts/bench-peers.sh gives every engine.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Wrap the prompt in the model's chat template (system prompt + user turn).
    #[arg(long)]
    chat: bool,
    /// System prompt used with --chat (default: the template's own).
    #[arg(long)]
    system: Option<String>,
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Weight dtype on the device: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[allow(clippy::print_stdout)] // the continuation and the speeds are the output
fn main() -> Result<()> {
    let args = Args::parse();
    let (pretrained, load_s) = em_examples::load_pretrained(&args.model, &args.dtype)?;
    let load_rss = em_examples::peak_rss_gib();
    let tok = &pretrained.tokenizer;
    let prompt_ids: Vec<u32> = match &args.prompt_ids {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => {
            let prompt = args.prompt.as_deref().unwrap_or_default();
            let text = tok.prompt_text(prompt, args.chat, args.system.as_deref())?;
            tok.encode(&text, false)?
        }
    };
    let text = tok.decode(&prompt_ids, false)?;
    let config = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
        },
        seed: args.seed,
        eos_ids: args.ignore_eos.then(Vec::new),
        ..GenerateConfig::default()
    };
    let generator = Generator::new(&pretrained.model, tok);
    let warmup = GenerateConfig {
        max_new_tokens: 1,
        ..config.clone()
    };
    for _ in 0..args.warmup {
        generator.generate(
            std::slice::from_ref(&prompt_ids),
            &warmup,
            &mut ProcessorChain::new(),
            |_| {},
        )?;
    }
    print!("{text}");
    let t0 = Instant::now();
    // When each token arrived: the first ends the prefill; the median gap between two is the
    // decode step's time with the machine's stalls (another process taking a core) filtered
    // out, unlike the mean.
    let mut arrivals = Vec::with_capacity(args.max_new_tokens);
    let out = generator
        .generate(&[prompt_ids], &config, &mut ProcessorChain::new(), |e| {
            arrivals.push(t0.elapsed().as_secs_f64());
            print!("{}", e.text);
            let _ = std::io::stdout().flush();
        })?
        .remove(0);
    let total_s = t0.elapsed().as_secs_f64();
    let first_s = arrivals.first().copied().unwrap_or(total_s);
    let prefill_tok_s = out.prompt_tokens as f64 / first_s.max(1e-9);
    let decode_tok_s = out.tokens.len().saturating_sub(1) as f64 / (total_s - first_s).max(1e-9);
    println!();
    println!(
        "\n[{}] load {load_s:.1} s (peak RSS {load_rss:.2} GiB) | prefill {} tokens {:.1} tok/s | decode {} tokens {:.1} tok/s | stop {:?}",
        em_examples::backend_name(),
        out.prompt_tokens,
        prefill_tok_s,
        out.tokens.len(),
        decode_tok_s,
        out.stop,
    );
    let mut steps: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let median_tok_s = steps
        .get(steps.len() / 2)
        .map_or(0.0, |s| 1.0 / s.max(1e-9));
    println!("decode median step {median_tok_s:.1} tok/s");
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "prompt_tokens": out.prompt_tokens,
                "new_tokens": out.tokens.len(),
                "decode_median_tok_s": median_tok_s,
                "tokens": out.tokens,
            })
        );
    }
    Ok(())
}
