//! # em-models (skeleton)
//!
//! The Qwen2/Qwen2.5 (and Llama) transformer for entropy minimization, loaded from Hugging Face
//! checkpoints: `config.json`, `model.safetensors` (single or sharded), `tokenizer.json` and the
//! chat template, with a pre-allocated KV cache and a small `CausalLm` trait that `em-infer` and
//! `em-train` build on.
//!
//! **Status:** not implemented yet; this crate currently exports nothing. The numerical core it
//! will use is [`em_core`]. See the workspace README's capability table for what works today.
#![warn(missing_docs)]

pub use em_core;
