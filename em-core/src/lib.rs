//! # em-core
//!
//! The numerical core of entropy minimization (EM) for LLM reasoning
//! (Agarwal et al., 2025, <https://arxiv.org/abs/2505.15134>): token entropy, its closed-form
//! gradient, log-probabilities of chosen tokens, KL divergences and masked reductions, on any
//! burn backend. Library code never names a backend: every function takes tensors that carry their
//! [`Device`](burn::tensor::Device), and the backend is chosen by a cargo feature of the final
//! binary (`flex` by default, `wgpu`, `cuda`).
//!
//! ## Quick start
//!
//! ```
//! use burn::tensor::{Bool, Device, Tensor, TensorData};
//! use em_core::{EntropyLossConfig, Reduction, entropy};
//!
//! let device = Device::default();
//! // Two rows over a vocabulary of 3: a uniform one (H = ln 3) and a peaked one.
//! let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 8.0, 0.0, 0.0], [2, 3]), &device);
//! let h: Vec<f32> = entropy(logits.clone()).into_data().try_into_vec()?;
//! assert!((h[0] - 3f32.ln()).abs() < 1e-6);
//! assert!(h[1] < 0.01);
//!
//! // The EM-FT objective: masked token mean of the entropy of every response position.
//! let loss = EntropyLossConfig::new().with_reduction(Reduction::TokenMean).init();
//! let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, false], [1, 2]), &device);
//! let value: f32 = loss.forward(logits.reshape([1, 2, 3]), mask).into_scalar();
//! assert!((value - 3f32.ln()).abs() < 1e-6);
//! # Ok::<(), burn::tensor::DataError>(())
//! ```
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`softmax`] | the shared parts: [`promote`], [`sum_last`], [`softmax_entropy`] → [`SoftmaxEntropy`] (`log p`, `p`, `H`, the entropy gradient), [`kept_entropy`] |
//! | [`entropy`](mod@entropy) | [`entropy()`], [`token_entropy`], [`entropy_grad`] |
//! | [`log_probs`] | [`token_log_probs`], [`log_sum_exp`] |
//! | [`kl`] | [`kl_divergence`] (full distribution), [`k3_kl`] (sampled-token estimator) |
//! | [`reduce`] | [`Reduction`], [`masked_reduce`] |
//! | [`loss`] | [`EntropyLossConfig`] → [`EntropyLoss`], the EM-FT objective |
//! | [`fused`] | plain f32 flex tensors as host rows ([`fused::host_rows`]) and the softmax family on them ([`fused::rows`]): the CPU fast path the functions above take by themselves |
//! | [`mod@reference`] | f64 slice implementations, used as test oracles |
//! | [`manifest`] | [`manifest::first_difference`]: run identity, the field where two runs' configs differ |
//! | [`rng`] | the one seeded generator ([`rng::Rng`], ChaCha12) and the stable hash used for seeds |
//!
//! ## Precision
//! Every function computes in f32 when its input is f16, bf16 or flex32 (the result is f32), and
//! keeps f64 input in f64. Logits of −∞ (masked vocabulary entries) are supported and contribute
//! nothing; NaN or +∞ logits give NaN for their row (callers that sample check for it).
//! f64 needs a device with f64 transcendentals (flex, CUDA): on wgpu/Vulkan `exp` and `log` are
//! 32-bit only, and f64 `exp` on Mesa's lavapipe returned garbage.
//!
//! ## Shapes
//! All functions check ranks and sizes on entry and panic with a message naming both shapes
//! (documented in each `# Panics` section): a mis-shaped tensor is a programming error, not
//! input data.
#![warn(missing_docs)]

pub mod entropy;
pub mod fused;
pub mod kl;
pub mod log_probs;
pub mod loss;
pub mod manifest;
pub mod reduce;
pub mod reference;
pub mod rng;
pub mod softmax;

mod util;

pub use entropy::{entropy, entropy_grad, token_entropy};
pub use kl::{k3_kl, kl_divergence};
pub use log_probs::{log_sum_exp, token_log_probs};
pub use loss::{EntropyLoss, EntropyLossConfig};
pub use reduce::{Reduction, masked_reduce};
pub use softmax::{
    KeptEntropy, SoftmaxEntropy, compute_dtype, kept_entropy, promote, softmax_entropy, sum_last,
};
