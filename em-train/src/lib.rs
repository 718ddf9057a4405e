//! # em-train
//!
//! Training by entropy minimization (`docs/method.md` §1-§2) on one engine:
//! - **EM-FT** ([`run_em_ft`]): sample the model's own answers to unlabeled prompts (or take
//!   fixed samples) and minimise the token entropy of the full next-token distribution at every
//!   response position.
//! - **EM-RL** ([`run_rl`]): RLOO/GRPO with PPO-clip and a k3 KL to the initial model, whose only
//!   reward is negative entropy (token level) or the mean log-prob (sequence level); the labeled
//!   GRPO/RLOO baselines (verifiable reward) and SC-RL (self-consistency) on the same loop, and
//!   any [`Reward`] of yours.
//! - **The engine** ([`Engine`]): AdamW as torch runs it with global grad-norm clipping,
//!   learning-rate schedules, micro-batches whose update equals the whole batch's, held-out
//!   validation, atomic checkpoints with exact resume, `metrics.jsonl` and an SVG plot.
//!
//! ## Quick start
//! ```no_run
//! use std::ops::ControlFlow;
//! use em_train::{DataSource, RunConfig, run_em_ft};
//!
//! let run = RunConfig {
//!     model: "models/qwen2.5-0.5b-instruct".into(),
//!     data: DataSource::Bench { name: "math500".into() },
//!     steps: 10,
//!     batch_size: 4,
//!     ..RunConfig::default()
//! };
//! let device = burn::tensor::Device::flex();
//! let summary = run_em_ft(&run, "runs/x".as_ref(), false, &device, |_| ControlFlow::Continue(()))?;
//! println!("last checkpoint: {}", summary.last_checkpoint.display());
//! # Ok::<(), em_train::TrainError>(())
//! ```
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`config`] | [`RunConfig`]: every setting, TOML/JSON, validated with the field named |
//! | [`data`] | samples and prompt files, the step → batch order (shuffled per epoch) |
//! | [`emft`] | the EM-FT loss and gradients of a batch, micro-batched |
//! | [`optim`] | [`AdamW`] keyed by HF names, global clipping |
//! | [`lora`] | LoRA adapters on the projections, PEFT-layout save and load |
//! | [`checkpoint`] | `checkpoint-{step}/`: weights, moments, trainer state, run config; best; prune |
//! | [`metrics`] | `metrics.jsonl` and `metrics.svg` |
//! | [`trainer`] | [`Engine`] and [`run_em_ft`] |
//! | [`rl`] | [`run_rl`]: rollouts, [`Reward`]s, [`advantages`], the PPO-clip loss |
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod emft;
pub mod error;
pub mod lora;
pub mod metrics;
pub mod optim;
pub mod rl;
pub mod trainer;

pub use config::{
    AdvantageKind, DataSource, LoraConfig, OptimizerConfig, Reduction, RewardKind, RlConfig,
    RunConfig, Schedule, ValidationConfig,
};
pub use data::Sample;
pub use em_core;
pub use emft::{BatchStats, EmFtLoss, em_ft_grads};
pub use error::{Result, TrainError};
pub use metrics::StepMetrics;
pub use optim::{AdamW, Update};
pub use rl::{BuiltinReward, GroupPrompt, Response, Reward, advantages, run_rl};
pub use trainer::{Engine, Event, RunSummary, ValidationReport, run_em_ft};
