//! em-models integration tests: tiny committed fixtures against an independent numpy forward
//! (golden values from `tests/fixtures/gen_fixtures.py`; regenerate with the command in its
//! header), structure tests, typed errors on bad input, the tokenizer, and, when `EM_QWEN_DIR`
//! is set, the real Qwen2.5-Coder-0.5B-Instruct checkpoint.
#![allow(clippy::unwrap_used)]

mod common;
mod config_errors;
mod golden;
#[cfg(feature = "flex")]
mod load_errors;
mod real;
mod rope;
#[cfg(feature = "flex")]
mod save;
mod structure;
mod tokenizer;
mod train;
