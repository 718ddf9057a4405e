//! # em-infer
//!
//! Generation and inference-time entropy minimization for any [`em_models::CausalLm`]:
//!
//! - [`Generator`]: batched prompts of different lengths (left padding), one KV cache, per-row
//!   stopping (EOS ids, stop strings, max new tokens, the model's context), finished rows dropped
//!   from the batch, a streaming callback, seeded and reproducible; per step it records the
//!   sampled token's log-prob, the entropy of the distribution it was drawn from and the model's
//!   own entropy.
//! - [`Sampling`] / [`Sampler`]: greedy, temperature, top-k, top-p, min-p and repetition penalty,
//!   all on the device for `[batch, vocab]` (no sort, no cumsum: cut-offs and the draw are
//!   bisected with masked blocked sums; one host random number per row and step); on the CPU,
//!   draws take a host twin of a few passes per row (the filters' cut-offs from a histogram).
//! - [`LogitsProcessor`] (closures too) and [`ProcessorChain`]; **EM-INF** ([`em_inf()`],
//!   [`EmInfProcessor`]): a few Adam steps on each decoding step's logits that lower their
//!   entropy, with a KL term to the original distribution and a per-row threshold, computed with
//!   the closed-form gradient (no autodiff graph); its baseline **adaptive temperature**
//!   ([`adaptive_temperature()`], [`AdaptiveTemperatureProcessor`]).
//! - [`strategies`]: self-consistency and iterative refinement over the generator.
//! - [`mod@reference`]: f64 host twins of the device algorithms, used as test oracles.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use em_infer::{EmInfConfig, em_inf};
//!
//! let logits = Tensor::<2>::from_floats([[2.0, 1.0, 0.5, 0.0, -1.0]], &Device::default());
//! let out = em_inf(logits, &EmInfConfig::default(), 0).unwrap();
//! assert_eq!(out.steps, vec![3]); // H ≈ 1.3 nats stays above 0.3 for all three steps
//! ```
//!
//! Generating with EM-INF (see `examples/examples/em_inf.rs` for a runnable version):
//! ```no_run
//! use burn::tensor::Device;
//! use em_infer::{EmInfConfig, EmInfProcessor, GenerateConfig, Generator, Sampling};
//! use em_models::{LoadOptions, Message, from_pretrained};
//!
//! let device = Device::default();
//! let pretrained = from_pretrained("models/qwen2.5-0.5b-instruct", &device, &LoadOptions::default())?;
//! let generator = Generator::new(&pretrained.model, &pretrained.tokenizer);
//! let prompt = pretrained.tokenizer.apply_chat_template(&[Message::user("1 + 1 = ?")], true)?;
//! let config = GenerateConfig { sampling: Sampling::with_temperature(0.1), ..Default::default() };
//! let mut em_inf = EmInfProcessor::new(EmInfConfig::default())?;
//! let out = generator.generate_text(&[prompt], &config, &mut em_inf, |_| {})?;
//! println!("{} (mean entropy {:.3})", out[0].text, out[0].mean_entropy());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod adaptive_temperature;
pub mod em_inf;
pub mod error;
pub mod generator;
mod host_draw;
pub mod processor;
pub mod reference;
pub mod sampling;
pub mod strategies;
pub mod stream;

pub use adaptive_temperature::{
    AdaptiveTemperatureConfig, AdaptiveTemperatureOutput, adaptive_temperature,
};
pub use em_core;
pub use em_inf::{EmInfConfig, EmInfOutput, em_inf};
pub use error::{InferError, Result};
pub use generator::{GenerateConfig, Generator};
pub use processor::{
    AdaptiveTemperatureProcessor, EmInfProcessor, LogitsProcessor, Processed, ProcessorChain,
    ProcessorStats, StepContext, process_for_draw,
};
pub use sampling::{Draw, DrawnRow, Sampled, Sampler, Sampling};
pub use strategies::{RefinementRound, SelfConsistency, refine, self_consistency};
pub use stream::{Generation, StopReason, TokenEvent};
