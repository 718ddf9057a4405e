//! # em-eval
//!
//! Evaluating entropy minimization the way the paper does (`../shared/docs/method.md` §4-§6):
//! benchmark loaders, math answer extraction and equivalence, sandboxed code execution, and a
//! resumable evaluation runner over [`em_infer::Generator`].
//!
//! ## Quick start
//! ```
//! use em_eval::math::{Stage, answers_match, extract_answer};
//!
//! let output = "... so the area is $\\boxed{\\dfrac{3}{4}}$ square units.";
//! let answer = extract_answer(output).unwrap().answer;
//! let verdict = answers_match(&answer, "0.75");
//! assert!(verdict.correct);
//! assert_eq!(verdict.stage, Stage::Numeric);
//! ```
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`problems`] | [`Problem`], [`Benchmark`] (the eight shipped sets, files in `em-eval/data/`), the generic [`problems::load_jsonl`] |
//! | [`math`] | [`math::extract_answer`], [`math::normalize`], [`math::answers_match`] → [`math::Verdict`] (which stage decided) |
//! | [`sandbox`] | [`sandbox::run_python`]: limits, namespaces (network, PID, mount, read-only filesystem, unprivileged user) or an audit hook |
//! | [`code`] | code extraction, the HumanEval / MBPP / LeetCode harnesses, [`code::pass_at_k`], a bounded worker pool |
//! | [`runner`] | [`runner::evaluate`] with a [`runner::Strategy`]: JSON Lines records as it goes, resume, summary JSON, Markdown table; [`runner::grade_outputs`] for existing outputs |
#![warn(missing_docs)]

pub mod code;
pub mod error;
pub mod math;
pub mod problems;
pub mod runner;
pub mod sandbox;

pub use error::{EvalError, Result};
pub use problems::{Benchmark, Problem, Task};
pub use runner::{EvalOptions, EvalRecord, EvalReport, Strategy, evaluate};
