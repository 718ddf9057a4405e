//! Tiny models for tests, benches and examples in every crate of the workspace (and in users'
//! own tests): the shapes of em-models' committed fixtures (vocabulary 320, width 16, 2 layers,
//! GQA), with weights drawn by [`Qwen2Config::init`] from a seed, and the fixtures' 320-token
//! BPE tokenizer with its chat template. One helper instead of paths into another crate's test
//! fixtures; the fixtures themselves (numpy-golden logits) stay for fidelity tests.

use std::path::Path;

use burn::tensor::{DType, Device};

use crate::config::Qwen2Config;
use crate::error::{ModelError, Result};
use crate::model::Qwen2ForCausalLM;
use crate::save::SaveOptions;
use crate::{LoadOptions, Pretrained, from_pretrained};

/// Which tiny architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiny {
    /// Qwen2 with q/k/v biases and the head tied to the embedding.
    Qwen2Tied,
    /// Qwen2 with its own `lm_head`.
    Qwen2Untied,
    /// Llama without biases, one KV head, Llama-3 RoPE scaling.
    Llama,
}

impl Tiny {
    /// All three.
    pub const ALL: [Tiny; 3] = [Tiny::Qwen2Tied, Tiny::Qwen2Untied, Tiny::Llama];

    fn config_json(self) -> &'static str {
        match self {
            Tiny::Qwen2Tied => include_str!("../tests/fixtures/qwen2-tied/config.json"),
            Tiny::Qwen2Untied => include_str!("../tests/fixtures/qwen2-untied/config.json"),
            Tiny::Llama => include_str!("../tests/fixtures/llama/config.json"),
        }
    }
}

const TOKENIZER: &str = include_str!("../tests/fixtures/qwen2-tied/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../tests/fixtures/qwen2-tied/tokenizer_config.json");
const GENERATION_CONFIG: &str = include_str!("../tests/fixtures/qwen2-tied/generation_config.json");

/// The standard deviation of the tiny models' weights: far above HF's 0.02, so that a 16-wide
/// model has peaked next-token distributions (logit spread ~2) like a trained one, which the
/// generator's and EM-INF's tests need.
pub const TINY_INITIALIZER_RANGE: f64 = 0.5;

/// The config of a tiny model (`initializer_range` = [`TINY_INITIALIZER_RANGE`]).
///
/// # Errors
/// None in practice (the embedded configs are valid); typed like [`Qwen2Config::from_json_str`].
pub fn tiny_config(kind: Tiny) -> Result<Qwen2Config> {
    let mut config = Qwen2Config::from_json_str(kind.config_json(), "<tiny config>")?;
    config.extra.insert(
        "initializer_range".into(),
        serde_json::json!(TINY_INITIALIZER_RANGE),
    );
    Ok(config)
}

/// A tiny model with weights from `seed` in `dtype` on `device`.
///
/// # Errors
/// As [`Qwen2Config::init`].
pub fn tiny_model(
    kind: Tiny,
    device: &Device,
    dtype: DType,
    seed: u64,
) -> Result<Qwen2ForCausalLM> {
    tiny_config(kind)?.init(device, dtype, seed)
}

/// Writes a complete tiny checkpoint directory (config, weights from `seed` in f32, tokenizer,
/// tokenizer and generation configs) to `dir`, which must not exist.
///
/// # Errors
/// As [`Qwen2ForCausalLM::save_pretrained`] and file writes.
pub fn write_tiny_checkpoint(kind: Tiny, seed: u64, dir: &Path) -> Result<()> {
    let config = tiny_config(kind)?;
    let model = config.init(&Device::default(), DType::F32, seed)?;
    model.save_pretrained(&config, None, dir, &SaveOptions::default())?;
    for (name, text) in [
        ("tokenizer.json", TOKENIZER),
        ("tokenizer_config.json", TOKENIZER_CONFIG),
        ("generation_config.json", GENERATION_CONFIG),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| ModelError::Io { path, source })?;
    }
    Ok(())
}

/// A tiny checkpoint, written to a temporary directory that lives as long as this value, and
/// loaded on `device` as [`from_pretrained`] loads a real one.
#[derive(Debug)]
pub struct TinyPretrained {
    /// Model, config and tokenizer.
    pub pretrained: Pretrained,
    /// The checkpoint directory ([`Pretrained::dir`]).
    pub dir: tempfile::TempDir,
}

/// [`write_tiny_checkpoint`] into a fresh temporary directory, then [`from_pretrained`].
///
/// # Errors
/// As [`write_tiny_checkpoint`] and [`from_pretrained`].
pub fn tiny_pretrained(kind: Tiny, device: &Device, seed: u64) -> Result<TinyPretrained> {
    let dir = tempfile::tempdir().map_err(|source| ModelError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = dir.path().join("tiny");
    write_tiny_checkpoint(kind, seed, &path)?;
    let pretrained = from_pretrained(&path, device, &LoadOptions::default())?;
    Ok(TinyPretrained { pretrained, dir })
}

/// A tensor of `shape` with standard normal f32 entries drawn from `seed` (unit tests' inputs).
#[cfg(test)]
pub(crate) fn normal_tensor<const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &Device,
) -> burn::tensor::Tensor<D> {
    let mut rng = em_core::rng::rng(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| em_core::rng::normal(&mut rng) as f32)
        .collect();
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(v, shape), device)
}
