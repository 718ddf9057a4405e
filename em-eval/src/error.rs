//! The error type of em-eval's runner.

use std::path::PathBuf;

/// Everything the runner can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A benchmark file is malformed, or code could not be run at all.
    #[error(transparent)]
    Grade(#[from] em_grade::GradeError),
    /// Generation failed.
    #[error(transparent)]
    Infer(#[from] em_infer::InferError),
    /// The tokenizer or chat template failed.
    #[error(transparent)]
    Model(#[from] em_models::ModelError),
    /// A results file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A corrupt line in a records or outputs file.
    #[error("{}, line {line}: {source}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// Serialising a record failed.
    #[error("serialising a record: {0}")]
    Json(#[source] serde_json::Error),
    /// An unknown strategy name, or a strategy that does not fit the benchmark.
    #[error(
        "strategy: {0} (known: sampling, greedy, em-inf, adaptive-temperature, self-consistency[-N], refinement[-N])"
    )]
    Strategy(String),
    /// An option outside its domain.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An output for a problem the benchmark does not have.
    #[error("no problem `{id}` in {benchmark}")]
    UnknownProblem {
        /// The id.
        id: String,
        /// The benchmark.
        benchmark: String,
    },
    /// The records on disk were written by a run with another identity (model, strategy
    /// configuration, sampling, prompts, limits): resuming would mix them.
    #[error(
        "{}: {difference}; use another output directory, delete the old run, or ask for a new run (OnMismatch::NewRun, --new-run)",
        path.display()
    )]
    ManifestMismatch {
        /// The existing manifest.
        path: PathBuf,
        /// The first field that differs.
        difference: em_core::manifest::Difference,
    },
    /// Records without a manifest (written before manifests existed, or by hand): whose they
    /// are cannot be told.
    #[error(
        "{}: records without a manifest; move them away or ask for a new run (OnMismatch::NewRun, --new-run)",
        records.display()
    )]
    ManifestMissing {
        /// The records file.
        records: PathBuf,
    },
    /// The run was stopped by its caller; what was written stays and a later run resumes.
    #[error("interrupted (resume by running again)")]
    Interrupted,
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
