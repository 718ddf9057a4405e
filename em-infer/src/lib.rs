//! # em-infer (skeleton)
//!
//! Batched generation over any `em_models::CausalLm`, sampling (greedy, temperature, top-k,
//! top-p, min-p, repetition penalty), and EM-INF: a few Adam steps on each step's logits to lower
//! their entropy before sampling, with adaptive temperature, self-consistency and iterative
//! refinement as baselines.
//!
//! **Status:** not implemented yet; this crate currently exports nothing. The closed-form
//! entropy gradient EM-INF will use is [`em_core::entropy_grad`].
#![warn(missing_docs)]

pub use em_core;
