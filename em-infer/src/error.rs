//! The error type of em-infer.

use thiserror::Error;

/// Everything em-infer can fail with; each variant names what was wrong.
#[derive(Debug, Error)]
pub enum InferError {
    /// A hyperparameter outside its domain, rejected when the config is used.
    #[error("invalid config: {field} = {value} ({rule})")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What the field must satisfy.
        rule: &'static str,
    },
    /// A row of logits containing NaN or +∞ (or nothing finite).
    #[error("non-finite logits at decoding step {step}, batch row {row}")]
    NonFiniteLogits {
        /// The decoding step.
        step: usize,
        /// The batch row.
        row: usize,
    },
    /// Logits with an empty vocabulary dimension.
    #[error("logits have an empty vocabulary dimension")]
    EmptyVocabulary,
    /// Reading a tensor back to the host failed.
    #[error("tensor read-back failed: {0}")]
    Tensor(String),
}

/// `Result` with [`InferError`].
pub type Result<T, E = InferError> = std::result::Result<T, E>;
