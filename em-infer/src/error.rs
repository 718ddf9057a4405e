//! The error type of em-infer.

use thiserror::Error;

/// Everything em-infer can fail with; each variant names what was wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// A prompt with no tokens (there is nothing to condition the first token on).
    #[error("prompt {row} is empty")]
    EmptyPrompt {
        /// The prompt's index in the batch.
        row: usize,
    },
    /// A prompt that leaves no room for a generated token in the model's context.
    #[error(
        "prompt {row} has {len} tokens, the model's context holds {context}: no room to generate"
    )]
    PromptTooLong {
        /// The prompt's index in the batch.
        row: usize,
        /// Its length in tokens.
        len: usize,
        /// The model's `max_position_embeddings`.
        context: usize,
    },
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Batch sizes that do not agree (logits vs sampler, prompts vs rows, ...).
    #[error("batch mismatch: {0}")]
    Batch(String),
    /// A logits processor failed.
    #[error("logits processor `{name}` failed at decoding step {step}: {message}")]
    Processor {
        /// The processor's name.
        name: String,
        /// The decoding step.
        step: usize,
        /// What went wrong.
        message: String,
    },
    /// The model failed (context overflow, batch mismatch, ...).
    #[error(transparent)]
    Model(#[from] em_models::ModelError),
    /// Reading a tensor back to the host failed.
    #[error("tensor read-back failed: {0}")]
    Tensor(#[from] burn::tensor::DataError),
}

impl InferError {
    /// [`InferError::InvalidConfig`] for `field = value`, which breaks `rule`.
    pub fn invalid<T>(field: &'static str, value: impl ToString, rule: &'static str) -> Result<T> {
        Err(InferError::InvalidConfig {
            field,
            value: value.to_string(),
            rule,
        })
    }
}

/// `Result` with [`InferError`].
pub type Result<T, E = InferError> = std::result::Result<T, E>;
