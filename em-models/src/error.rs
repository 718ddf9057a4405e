//! The crate's error type: every variant names the file, key or tensor at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read (missing, permissions, ...).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected structure.
    #[error("malformed JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (line and column included).
        #[source]
        source: serde_json::Error,
    },
    /// A required key is absent from a configuration file.
    #[error("{path}: missing required key `{key}`")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A configuration value is present but unusable.
    #[error("{path}: invalid `{key}`: {reason}")]
    InvalidConfig {
        /// The file (or `<config>` for a config built in code).
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The checkpoint's architecture is not one this crate implements.
    #[error(
        "{path}: unsupported architecture {found:?} (supported: Qwen2ForCausalLM, LlamaForCausalLM)"
    )]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// What `architectures`/`model_type` said.
        found: String,
    },
    /// A safetensors file is corrupt or truncated.
    #[error("corrupt or truncated safetensors file {path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint in {dir}")]
    MissingTensor {
        /// The checkpoint key.
        name: String,
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// A tensor has a different shape from the one the config implies.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?} from config.json")]
    ShapeMismatch {
        /// The checkpoint key.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored in a dtype this loader does not convert.
    #[error(
        "tensor `{name}` in {path} has unsupported dtype {dtype} (supported: F32, F16, BF16, F64)"
    )]
    UnsupportedDtype {
        /// The checkpoint key.
        name: String,
        /// The file.
        path: PathBuf,
        /// The dtype as written in the file.
        dtype: String,
    },
    /// A dtype that is not one of the float dtypes a model can be loaded, initialised or saved
    /// in (f32, f64, bf16, f16).
    #[error("unknown or unsupported dtype {dtype:?} (supported: f32, f64, bf16, f16)")]
    UnknownDtype {
        /// The dtype as given.
        dtype: String,
    },
    /// The output directory of a save exists and overwriting was not asked for.
    #[error("{path} exists; refusing to overwrite it (ask for overwrite to replace it)")]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// A size such as `2GB` that could not be parsed.
    #[error("invalid size {text:?} (expected e.g. 2GB, 500MB, 1GiB or a byte count)")]
    InvalidSize {
        /// The text.
        text: String,
    },
    /// Host data of a tensor could not be read in the expected element type.
    #[error("tensor data: {0}")]
    Tensor(#[from] burn::tensor::DataError),
    /// `tokenizer.json` could not be loaded, or encoding/decoding failed.
    #[error("tokenizer {path}: {source}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizer library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// The tokenizer produces ids the model has no embedding row for.
    #[error("tokenizer {path} has token id {max_id}, but config.json has vocab_size {vocab_size}")]
    TokenizerVocab {
        /// The tokenizer file.
        path: PathBuf,
        /// The largest id the tokenizer can produce.
        max_id: u32,
        /// The model's embedding rows.
        vocab_size: usize,
    },
    /// The chat template failed to compile or render.
    #[error("chat template from {path}: {source}")]
    Template {
        /// The file the template came from.
        path: PathBuf,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },
    /// The tokenizer configuration has no chat template.
    #[error("{path} has no `chat_template`")]
    NoChatTemplate {
        /// The file.
        path: PathBuf,
    },
    /// The sequence does not fit in the KV cache (or the model's context).
    #[error("sequence of {needed} positions exceeds the capacity of {capacity}")]
    ContextOverflow {
        /// Positions needed (cached + new).
        needed: usize,
        /// What the cache holds.
        capacity: usize,
    },
    /// A batch argument does not fit the cache or the other arguments.
    #[error("batch mismatch: {0}")]
    Batch(String),
    /// The hub could not provide the model.
    #[error("hub: {what}")]
    Hub {
        /// What was asked for (the model id, and the file when one failed).
        what: String,
        /// The hub client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}
