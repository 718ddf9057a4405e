//! # em-models
//!
//! The Qwen2 / Qwen2.5 (and Llama) decoder-only transformer for entropy minimization, loaded from
//! Hugging Face checkpoint directories, on any burn backend (the device decides).
//!
//! ## Quick start
//! ```no_run
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use em_models::{CausalLm, LoadOptions, Logits, Message, from_pretrained};
//!
//! let device = Device::default();
//! let pretrained = from_pretrained("models/qwen2.5-0.5b-instruct", &device, &LoadOptions::default())?;
//! let prompt = pretrained.tokenizer.apply_chat_template(&[Message::user("1 + 1 = ?")], true)?;
//! let ids = pretrained.tokenizer.encode(&prompt, false)?;
//! let n = ids.len();
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, n]), &device);
//! let mut cache = pretrained.model.new_cache(1, 512);
//! let logits = pretrained.model.forward(ids, &mut cache, Logits::Last)?; // [1, 1, vocab]
//! # Ok::<(), em_models::ModelError>(())
//! ```
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`config`] | [`Qwen2Config`] (HF `config.json`, field names verbatim), [`Architecture`] |
//! | [`model`] | [`Qwen2ForCausalLM`] (= [`LlamaForCausalLM`]), [`Logits`] |
//! | [`kernels`] | the CPU products on flex: decode (≤ 8 rows; f32/f16/bf16 weights read in place, AVX2/AVX-512) and 16-bit prefill (weights widened to f32 in chunks, gemm) |
//! | [`attend`] | attention over the KV cache (decode and prefill) on the host, the cache's buffers read in place (flex, f32) |
//! | [`cache`] | [`KvCache`]: pre-allocated, left-padding aware |
//! | [`rope`] | HF "rotate half" RoPE with Llama-3 scaling, and its f64 reference twin |
//! | [`loader`] | [`Checkpoint`] (single or sharded safetensors), [`LoadOptions`] |
//! | [`generation`] | [`GenerationConfig`]: `generation_config.json` (special ids, sampling defaults) |
//! | [`params`] | [`named_params`]: every parameter under its HF name, with its layout |
//! | [`save`] | [`Qwen2ForCausalLM::save_pretrained`]: HF layout, sharding, atomic |
//! | [`train`] | training forward without a cache ([`BatchLayout`]), the chunked head + loss ([`HeadStats`]) |
//! | [`testing`] | tiny seeded models and a tiny tokenizer for tests and benches |
//! | [`tokenizer`] | [`Tokenizer`]: `tokenizer.json`, chat template, EOS/pad ids |
//! | [`error`] | [`ModelError`], every variant naming the file/key/tensor at fault |
//!
//! Every consumer (em-infer, em-train) talks to a model through the [`CausalLm`] trait, so a new
//! architecture plugs in by implementing it.
#![warn(missing_docs)]

pub mod attend;
mod build;
pub mod cache;
pub mod config;
pub mod error;
pub mod generation;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod params;
pub mod rope;
pub mod save;
pub mod testing;
pub mod tokenizer;
pub mod train;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};

pub use build::host_tensor;
pub use cache::KvCache;
pub use config::{Architecture, Qwen2Config, RopeScaling, TokenIds};
pub use em_core;
pub use error::{ModelError, Result};
pub use generation::GenerationConfig;
pub use loader::{Checkpoint, FLOAT_DTYPES, LoadOptions, parse_dtype};
pub use model::{LlamaForCausalLM, LmHead, Logits, Qwen2ForCausalLM};
pub use params::{NamedParam, ParamGrads, named_grads, named_params, replace_params};
pub use save::{SaveOptions, parse_size, write_safetensors};
pub use tokenizer::{Message, Tokenizer};
pub use train::{BatchLayout, HeadLoss, HeadOptions, HeadStats, TrainStep, response_positions};

/// What generation and training need from a causal language model.
pub trait CausalLm {
    /// Logits width (embedding rows).
    fn vocab_size(&self) -> usize;
    /// Longest context the model was trained for.
    fn max_position_embeddings(&self) -> usize;
    /// The device the weights live on.
    fn device(&self) -> Device;
    /// An empty KV cache for `batch` rows of up to `max_len` positions.
    fn new_cache(&self, batch: usize, max_len: usize) -> KvCache;
    /// Feeds `ids: [batch, seq]` after what `cache` holds; f32 logits `[batch, seq | 1, vocab]`.
    ///
    /// # Errors
    /// [`ModelError::ContextOverflow`] / [`ModelError::Batch`] when `ids` does not fit the cache.
    fn forward(
        &self,
        ids: Tensor<2, Int>,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<3>>;
}

impl CausalLm for Qwen2ForCausalLM {
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn max_position_embeddings(&self) -> usize {
        self.max_position_embeddings
    }
    fn device(&self) -> Device {
        Qwen2ForCausalLM::device(self)
    }
    fn new_cache(&self, batch: usize, max_len: usize) -> KvCache {
        Qwen2ForCausalLM::new_cache(self, batch, max_len)
    }
    fn forward(
        &self,
        ids: Tensor<2, Int>,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<3>> {
        Qwen2ForCausalLM::forward(self, ids, cache, logits)
    }
}

impl Pretrained {
    /// Saves model, config and every other file of [`Pretrained::dir`] as a Hugging Face
    /// checkpoint in `out` ([`Qwen2ForCausalLM::save_pretrained`]).
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::save_pretrained`].
    pub fn save_pretrained(&self, out: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        self.model
            .save_pretrained(&self.config, Some(&self.dir), out, options)
    }
}

/// A model with its config and tokenizer, as [`from_pretrained`] returns it.
#[derive(Debug)]
pub struct Pretrained {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: Qwen2Config,
    /// Its `generation_config.json`, when it has one (sampling defaults, EOS/pad ids).
    pub generation: Option<GenerationConfig>,
    /// The weights.
    pub model: Qwen2ForCausalLM,
    /// The tokenizer, chat template and special ids.
    pub tokenizer: Tokenizer,
}

/// Loads model and tokenizer from a local checkpoint directory or, with the cargo feature `hub`,
/// a Hugging Face hub id such as `Qwen/Qwen2.5-0.5B-Instruct` (downloaded into the HF cache).
///
/// # Errors
/// Any [`ModelError`] of the config, weights or tokenizer; [`ModelError::Hub`] when `id_or_dir`
/// is not a directory and the hub is unavailable.
pub fn from_pretrained(
    id_or_dir: impl AsRef<Path>,
    device: &Device,
    options: &LoadOptions,
) -> Result<Pretrained> {
    let path = id_or_dir.as_ref();
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        hub::fetch(path)?
    };
    // config.json and generation_config.json are parsed once, here, and shared by the model,
    // the tokenizer (vocabulary check, EOS and pad ids) and the caller (sampling defaults).
    let config_path = dir.join("config.json");
    let config = Qwen2Config::from_file(&config_path)?;
    let mut checkpoint = Checkpoint::open(&dir)?;
    let model =
        Qwen2ForCausalLM::from_checkpoint(&config, &config_path, &mut checkpoint, device, options)?;
    let generation = GenerationConfig::from_dir(&dir)?;
    let tokenizer = Tokenizer::from_parts(
        &dir,
        Some(config.vocab_size),
        Some(&config),
        generation.as_ref(),
    )?;
    Ok(Pretrained {
        dir,
        config,
        generation,
        model,
        tokenizer,
    })
}

#[cfg(feature = "hub")]
mod hub {
    use super::*;

    pub(crate) fn fetch(id: &Path) -> Result<PathBuf> {
        let id = id.to_string_lossy().to_string();
        let api = hf_hub::api::sync::Api::new().map_err(|e| ModelError::Hub {
            what: format!("{id}: cannot start the hub client"),
            source: Some(Box::new(e)),
        })?;
        let repo = api.model(id.clone());
        let get = |file: &str| {
            repo.get(file).map_err(|e| ModelError::Hub {
                what: format!("{id}/{file}"),
                source: Some(Box::new(e)),
            })
        };
        let config = get("config.json")?;
        for optional in ["tokenizer_config.json", "generation_config.json"] {
            let _ = repo.get(optional);
        }
        get("tokenizer.json")?;
        match repo.get("model.safetensors.index.json") {
            Ok(index_path) => {
                let index = crate::error::read_json(&index_path)?;
                let files: std::collections::BTreeSet<String> = index
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .map(|m| {
                        m.values()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                for file in files {
                    get(&file)?;
                }
            }
            Err(_) => {
                get("model.safetensors")?;
            }
        }
        config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| ModelError::Hub {
                what: format!("{id}: no snapshot directory"),
                source: None,
            })
    }
}

#[cfg(not(feature = "hub"))]
mod hub {
    use super::*;

    pub(crate) fn fetch(id: &Path) -> Result<PathBuf> {
        Err(ModelError::Hub {
            what: format!(
                "{} is not a local directory, and em-models was built without the `hub` feature",
                id.display()
            ),
            source: None,
        })
    }
}
