//! # em-eval (skeleton)
//!
//! Math and code benchmarks (MATH500, AIME, AMC, Minerva, OlympiadBench, LeetCode, HumanEval,
//! MBPP), answer extraction and equivalence checking, sandboxed code execution, and a resumable
//! evaluation runner.
//!
//! **Status:** not implemented yet; this crate currently exports nothing.
#![warn(missing_docs)]

pub use em_core;
