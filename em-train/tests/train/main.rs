//! em-train integration tests: EM-FT steps against an independent JAX oracle
//! (`tests/fixtures/emft_oracle.py`; regenerate with the command in its header), exact resume,
//! the run's files (checkpoints, best, metrics, plot) and typed errors on bad input.
#![allow(clippy::unwrap_used)]

mod common;
mod config;
mod data;
#[cfg(feature = "flex")]
mod lora;
mod oracle;
#[cfg(feature = "flex")]
mod rl;
mod rl_oracle;
#[cfg(feature = "flex")]
mod run;
