//! # em-eval
//!
//! Evaluating entropy minimization the way the paper does (`docs/method.md` §4-§6):
//! a resumable evaluation runner over [`em_infer::Generator`] with the paper's decoding
//! strategies, grading every output with [`em_grade`] (benchmarks, math and code grading, the
//! sandbox — re-exported here, so `em_eval::math` is `em_grade::math`).
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
//! | [`runner`] | [`runner::evaluate`] with [`EvalOptions`]: prompts, generation, grading, JSON Lines records as it goes, resume |
//! | [`strategy`] | [`Strategy`]: sampling, greedy, EM-INF, adaptive temperature, self-consistency, refinement |
//! | [`manifest`] | run identity: [`manifest::RunManifest`] beside each records file, a resume with another one refused (or a new run) |
//! | [`records`] | [`EvalRecord`], [`EvalReport`], the summary JSON and `report.md` (atomic writes) |
//! | [`grade_only`] | [`grade_only::grade_outputs`]: grading another tool's outputs into the same files |
//! | re-exported from [`em_grade`] | [`problems`], [`math`], [`code`], [`sandbox`], [`prompts`], [`grade`] |
#![warn(missing_docs)]

pub mod error;
pub mod grade_only;
pub mod manifest;
pub mod records;
pub mod runner;
pub mod strategy;

pub use em_grade::{
    Benchmark, Grade, GradeStage, Problem, Task, code, grade, math, problems, prompts, sandbox,
};
pub use error::{EvalError, Result};
pub use grade_only::grade_outputs;
pub use manifest::{OnMismatch, RunManifest};
pub use records::{EvalRecord, EvalReport};
pub use runner::{EvalOptions, evaluate};
pub use strategy::Strategy;
