//! # em-train (skeleton)
//!
//! EM-FT (minimise the token entropy of the model's own samples), EM-RL (RLOO/GRPO with negative
//! entropy as the only reward, KL to a reference) and the labeled GRPO/RLOO baselines, with
//! atomic, resumable checkpoints.
//!
//! **Status:** not implemented yet; this crate currently exports nothing. The EM-FT objective
//! itself is available today as [`em_core::EntropyLoss`].
#![warn(missing_docs)]

pub use em_core;
