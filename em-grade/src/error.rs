//! The one error type of em-grade: a benchmark file that cannot be read, or a sandbox that
//! cannot start. (What graded code does — fail, time out, exhaust a limit — is not an error but
//! a [`crate::sandbox::Status`] in the verdict.)

use std::path::PathBuf;

/// Everything em-grade can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GradeError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON (for JSON Lines: on that line).
    #[error("{}{}: invalid JSON: {source}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line, for JSON Lines.
        line: Option<usize>,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A record without a required field, or with one of the wrong type.
    #[error("{}{}: field `{field}`: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line (JSON Lines) or record index + 1 (JSON).
        line: Option<usize>,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two records with the same id.
    #[error("{}: duplicate id `{id}`", path.display())]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The id.
        id: String,
    },
    /// Creating a sandbox run's directory or files failed.
    #[error("sandbox setup failed: {0}")]
    SandboxSetup(#[source] std::io::Error),
    /// The interpreter (or `unshare`) could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A benchmark's reference solution misbehaves (it must pass its own tests).
    #[error("{benchmark} `{id}`: {message}")]
    Reference {
        /// The benchmark.
        benchmark: String,
        /// The problem.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A sandbox limit that is zero, negative or not finite.
    #[error("invalid sandbox config: {0}")]
    InvalidConfig(String),
}

/// `Result` with [`GradeError`].
pub type Result<T, E = GradeError> = std::result::Result<T, E>;
