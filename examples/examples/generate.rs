//! Greedy generation from a Hugging Face checkpoint directory, with prefill and decode speed.
//!
//! ```text
//! cargo run --release --example generate -- --model ~/.cache/em/models/qwen2.5-coder-0.5b-instruct-f32 \
//!     --prompt "Write a Python function that checks whether a number is prime." --chat --max-new-tokens 64
//! cargo run --release --example generate --features wgpu -- --model DIR --prompt "..."   # wgpu backend
//! ```
//!
//! The backend is the one the build enabled (`cuda` > `wgpu` > `flex`). `--dtype bf16|f16` keeps
//! the weights in 16 bits on the device (GPU backends); logits are f32 either way.
use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Int, Tensor, TensorData};
use clap::Parser;
use em_models::{CausalLm, LoadOptions, Logits, Message, from_pretrained};

#[derive(Parser, Debug)]
#[command(about = "Greedy generation with an em-models checkpoint")]
struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template (system prompt + user turn).
    #[arg(long)]
    chat: bool,
    /// System prompt used with --chat (default: the template's own).
    #[arg(long)]
    system: Option<String>,
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Weight dtype on the device: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[allow(clippy::print_stdout)] // the continuation and the speeds are the output
fn main() -> Result<()> {
    let args = Args::parse();
    let device = em_examples::device();
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("--dtype {other}: expected f32, bf16 or f16"),
    };
    let started = Instant::now();
    let pretrained = from_pretrained(&args.model, &device, &LoadOptions { dtype })
        .with_context(|| format!("loading {}", args.model))?;
    let load_s = started.elapsed().as_secs_f64();
    let tok = &pretrained.tokenizer;
    let text = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.clone()));
        }
        messages.push(Message::user(args.prompt.clone()));
        tok.apply_chat_template(&messages, true)?
    } else {
        args.prompt.clone()
    };
    let ids = tok.encode(&text, false)?;
    let n = ids.len();
    let model = &pretrained.model;
    if n + args.max_new_tokens > model.max_position_embeddings() {
        bail!(
            "prompt ({n} tokens) + --max-new-tokens {} exceed the model's context of {}",
            args.max_new_tokens,
            model.max_position_embeddings()
        );
    }
    let mut cache = model.new_cache(1, n + args.max_new_tokens);
    let to_tensor = |ids: &[u32]| {
        Tensor::<2, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
                [1, ids.len()],
            ),
            &device,
        )
    };
    let next_of = |logits: Tensor<3>| -> Result<u32> {
        let id: i64 = logits.argmax(2).into_scalar();
        Ok(u32::try_from(id)?)
    };

    let t0 = Instant::now();
    let mut next = next_of(CausalLm::forward(
        model,
        to_tensor(&ids),
        &mut cache,
        Logits::Last,
    )?)?;
    let prefill_s = t0.elapsed().as_secs_f64();

    print!("{text}");
    let mut generated = Vec::new();
    // Streaming detokenisation over a short window: `generated[prefix..read]` is text already
    // printed, kept only as left context (byte-level BPE can merge across token boundaries),
    // so each token costs a decode of a few tokens, not of everything generated so far.
    let (mut prefix, mut read) = (0usize, 0usize);
    let t1 = Instant::now();
    while generated.len() < args.max_new_tokens {
        generated.push(next);
        let before = tok.decode(&generated[prefix..read], false)?;
        let after = tok.decode(&generated[prefix..], false)?;
        let fresh = after.get(before.len()..).unwrap_or_default();
        if !fresh.is_empty() && !fresh.ends_with('\u{FFFD}') {
            print!("{fresh}");
            std::io::stdout().flush()?;
            (prefix, read) = (read, generated.len());
        }
        if tok.eos_ids().contains(&next) || generated.len() == args.max_new_tokens {
            break;
        }
        next = next_of(CausalLm::forward(
            model,
            to_tensor(&[next]),
            &mut cache,
            Logits::Last,
        )?)?;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    println!();
    println!(
        "\n[{}] load {load_s:.1} s | prefill {n} tokens {:.1} tok/s | decode {} tokens {:.1} tok/s",
        em_examples::backend_name(),
        n as f64 / prefill_s,
        generated.len(),
        (generated.len().saturating_sub(1)) as f64 / decode_s.max(1e-9),
    );
    Ok(())
}
