//! # em-grade
//!
//! Grading for entropy minimization, without burn: the paper's benchmarks and prompt strings,
//! math answer extraction and equivalence, code extraction, the benchmarks' test harnesses, a
//! sandbox for model-written code, and pass@k (`docs/method.md` §4-§5). Use it to
//! grade outputs from any engine, or as a verifiable reward; `em-eval` runs models on top of
//! it.
//!
//! ## Quick start
//! ```
//! use em_grade::{Grade, GradeStage, Problem, SandboxConfig, Task, grade};
//! use em_grade::math::Stage;
//!
//! let problem = Problem {
//!     id: "1".into(),
//!     benchmark: "demo".into(),
//!     question: "What is 3/4 as a decimal?".into(),
//!     task: Task::Math { answer: "0.75".into() },
//! };
//! let output = "... so the area is $\\boxed{\\dfrac{3}{4}}$ square units.";
//! let graded: Grade = grade(&problem, output, &SandboxConfig::default())?;
//! assert!(graded.correct);
//! assert_eq!(graded.stage, GradeStage::Math { stage: Stage::Numeric });
//! assert_eq!(graded.extracted.as_deref(), Some("\\dfrac{3}{4}"));
//! # Ok::<(), em_grade::GradeError>(())
//! ```
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`grade`] | one problem, one output → [`Grade`] `{ correct, stage, extracted }` |
//! | [`problems`] | [`Problem`], [`Benchmark`] (the eight shipped sets, files in `em-grade/data/`), the generic [`problems::load_jsonl`] |
//! | [`prompts`] | the paper's system prompt and code instructions |
//! | [`math`] | [`math::extract_answer`], [`math::normalize()`], [`math::answers_match`] → [`math::Verdict`] (which stage decided) |
//! | [`code`] | code extraction, the HumanEval / MBPP / LeetCode harnesses, [`code::pass_at_k`], a bounded worker pool |
//! | [`sandbox`] | [`sandbox::run_python`]: CPU budgets from reference times, limits, namespaces or an audit hook; which limit fired |
//! | [`mod@reference`] | the reference solutions' measured CPU times (`data/reference_cpu.json`) |
#![warn(missing_docs)]

pub mod code;
pub mod error;
pub mod math;
pub mod problems;
pub mod prompts;
pub mod reference;
pub mod sandbox;

use std::time::Duration;

pub use code::CodeOutcome;
pub use error::{GradeError, Result};
pub use problems::{Benchmark, CodeHarness, Problem, Task};
pub use sandbox::SandboxConfig;

/// Which part of the grader decided, typed by the kind of problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradeStage {
    /// A math answer: the comparison stage that decided.
    Math {
        /// The stage ([`math::Stage::NoAnswer`] when nothing was extracted).
        stage: math::Stage,
    },
    /// A program: how its run against the tests ended.
    Code {
        /// The outcome.
        outcome: CodeOutcome,
    },
}

impl std::fmt::Display for GradeStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GradeStage::Math { stage } => f.write_str(stage.name()),
            GradeStage::Code { outcome } => outcome.fmt(f),
        }
    }
}

/// The grade of one output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grade {
    /// Whether the output answers the problem correctly.
    pub correct: bool,
    /// What decided.
    pub stage: GradeStage,
    /// The extracted answer (math) or program (code), if any.
    pub extracted: Option<String>,
}

/// Grades `output` against `problem`: for math, the final answer is extracted and compared
/// with the reference ([`math::extract_answer`], [`math::answers_match`]); for code, the
/// program is extracted and run against the tests in the sandbox, with the CPU budget scaled
/// from the problem's reference time ([`SandboxConfig::for_reference`]).
///
/// # Errors
/// [`GradeError`] when the sandbox cannot start or `sandbox` is unusable (never for a wrong
/// or malformed output: that is a [`Grade`] with `correct == false`).
pub fn grade(problem: &Problem, output: &str, sandbox: &SandboxConfig) -> Result<Grade> {
    match &problem.task {
        Task::Math { answer } => {
            let extracted = math::extract_answer(output).map(|e| e.answer);
            let verdict = math::answers_match(extracted.as_deref().unwrap_or(""), answer);
            Ok(Grade {
                correct: verdict.correct,
                stage: GradeStage::Math {
                    stage: verdict.stage,
                },
                extracted,
            })
        }
        Task::Code {
            harness,
            reference_cpu_seconds,
        } => {
            let reference = reference_cpu_seconds.and_then(|s| Duration::try_from_secs_f64(s).ok());
            let verdict = code::grade_code(output, harness, &sandbox.for_reference(reference))?;
            Ok(Grade {
                correct: verdict.passed,
                stage: GradeStage::Code {
                    outcome: verdict.outcome,
                },
                extracted: verdict.code,
            })
        }
    }
}
