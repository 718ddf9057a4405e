//! # em-infer
//!
//! Inference-time entropy minimization. Implemented so far: **EM-INF** ([`em_inf`]), a few Adam
//! steps on each decoding step's logits `[batch, vocab]` that lower their entropy, with a KL
//! term to the original distribution and a per-row threshold, computed with the closed-form
//! gradient (no autodiff graph), and its baseline **adaptive temperature**
//! ([`adaptive_temperature`]), each with an f64 twin in [`reference`].
//!
//! **Planned** (issue #4): the batched `Generator` over any `em_models::CausalLm`, sampling
//! (greedy, temperature, top-k, top-p, min-p, repetition penalty), the `LogitsProcessor` chain,
//! self-consistency and iterative refinement.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use em_infer::{EmInfConfig, em_inf};
//!
//! let logits = Tensor::<2>::from_floats([[2.0, 1.0, 0.5, 0.0, -1.0]], &Device::default());
//! let out = em_inf(logits, &EmInfConfig::default(), 0).unwrap();
//! assert_eq!(out.steps, vec![3]); // H ≈ 1.3 nats stays above 0.3 for all three steps
//! ```
#![warn(missing_docs)]

pub mod adaptive_temperature;
pub mod em_inf;
pub mod error;
pub mod reference;

pub use adaptive_temperature::{
    AdaptiveTemperatureConfig, AdaptiveTemperatureOutput, adaptive_temperature,
};
pub use em_core;
pub use em_inf::{EmInfConfig, EmInfOutput, em_inf};
pub use error::{InferError, Result};
