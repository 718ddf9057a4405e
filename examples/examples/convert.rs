//! Converts a Hugging Face checkpoint to another dtype and/or shard size, writing a directory
//! that transformers, vLLM and em load (config and tokenizer files carried over).
//!
//! ```text
//! cargo run --release --example convert -- --model DIR --dtype bf16 --out DIR2
//! cargo run --release --example convert -- --model DIR --dtype f32 --max-shard-size 2GB --out DIR2
//! ```
//!
//! The weights are loaded in f32 (f64 for `--dtype f64`), which holds every bf16/f16 value
//! exactly, and rounded once to the target dtype while the files are written. The output is
//! written to a temporary directory and renamed into place; an existing `--out` is refused
//! unless `--overwrite` is given.
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::DType;
use clap::Parser;
use em_models::{SaveOptions, parse_dtype, parse_size};

#[derive(Parser, Debug)]
#[command(about = "Convert a Hugging Face checkpoint's dtype and sharding")]
struct Args {
    /// Source checkpoint directory (config.json, model.safetensors or shards, tokenizer).
    #[arg(long)]
    model: String,
    /// Dtype of the saved weights: f32, bf16, f16 or f64.
    #[arg(long)]
    dtype: String,
    /// Largest shard, e.g. 2GB or 500MB (transformers' default: 5GB).
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
    /// Output directory (must not exist unless --overwrite).
    #[arg(long)]
    out: String,
    /// Replace an existing output directory.
    #[arg(long)]
    overwrite: bool,
}

#[allow(clippy::print_stdout)] // the summary is the output
fn main() -> Result<()> {
    let args = Args::parse();
    let dtype = parse_dtype(&args.dtype)?;
    let options = SaveOptions {
        dtype,
        max_shard_size: parse_size(&args.max_shard_size)?,
        overwrite: args.overwrite,
    };
    let load_dtype = if dtype == DType::F64 { "f64" } else { "f32" };
    let (pretrained, loaded_s) = em_examples::load_pretrained(&args.model, load_dtype)?;
    let started = Instant::now();
    pretrained
        .save_pretrained(&args.out, &options)
        .with_context(|| format!("saving {}", args.out))?;
    let params: usize = em_models::named_params(&pretrained.model)
        .iter()
        .map(em_models::NamedParam::numel)
        .sum();
    println!(
        "{} → {} ({dtype:?}, {params} parameters): load {loaded_s:.1} s, save {:.1} s",
        args.model,
        args.out,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
