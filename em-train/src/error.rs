//! Errors of em-train: every one names what is wrong (the field, the file, the line).

use std::path::PathBuf;

/// Result of em-train.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// What can go wrong while configuring, running or resuming a training run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A run-config field has a value it cannot have.
    #[error("invalid run config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// Dotted path of the field.
        field: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A run-config file could not be parsed (syntax, a missing or unknown field).
    #[error("run config {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the field and the line).
        message: String,
    },
    /// A data file has a bad line.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A data source yielded nothing to train on.
    #[error("no training data: {0}")]
    NoData(String),
    /// A sample or prompt does not fit the model's context.
    #[error("{what}: {len} tokens do not fit the context of {context}")]
    TooLong {
        /// Which sample or prompt.
        what: String,
        /// Its length.
        len: usize,
        /// The model's `max_position_embeddings`.
        context: usize,
    },
    /// The run needs a tokenizer (text data, online sampling, validation) and the checkpoint has
    /// none.
    #[error("{0} needs a tokenizer, and the checkpoint has no tokenizer.json")]
    NeedsTokenizer(&'static str),
    /// The output directory already holds a run and `resume` was not asked for.
    #[error(
        "{path} already holds a run (checkpoints or metrics): resume it with --resume, or choose another output directory"
    )]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// `resume` with a run config that differs from the one the run was started with.
    #[error("cannot resume {path}: {difference}")]
    ResumeMismatch {
        /// The checkpoint's run.json.
        path: PathBuf,
        /// The first field that differs.
        difference: em_core::manifest::Difference,
    },
    /// A checkpoint directory is incomplete or inconsistent.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The loss or the gradient is NaN or infinite: the update is refused and nothing is
    /// written.
    #[error("step {step}: {what} is not finite ({value})")]
    NonFinite {
        /// The optimiser step.
        step: usize,
        /// `loss`, `grad_norm`, ...
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The caller's callback stopped the run (as a kill would): what was written stays and a
    /// resume continues from the last checkpoint.
    #[error("stopped after step {step}")]
    Interrupted {
        /// The last finished step.
        step: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation of a state or metrics file failed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The model (loading, forward, saving).
    #[error(transparent)]
    Model(#[from] em_models::ModelError),
    /// Generation (rollouts, validation).
    #[error(transparent)]
    Infer(#[from] em_infer::InferError),
    /// Benchmarks and grading.
    #[error(transparent)]
    Grade(#[from] em_grade::GradeError),
    /// Prompt building for validation.
    #[error(transparent)]
    Eval(#[from] em_eval::EvalError),
    /// Reading a tensor back from the device.
    #[error("reading a tensor back from the device: {0:?}")]
    Tensor(burn::tensor::DataError),
    /// Drawing the metrics plot.
    #[error("plot {path}: {message}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// The drawing backend's message.
        message: String,
    },
}

impl TrainError {
    /// `Err(InvalidConfig)` for `field`.
    pub(crate) fn invalid<T>(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Result<T> {
        Err(Self::InvalidConfig {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        })
    }
}

/// `map_err` helper: an I/O error on `path`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
