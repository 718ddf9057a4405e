//! Run identity. Beside each records file the runner writes `{benchmark}.{run}.manifest.json`:
//! the model, the benchmark, the strategy with its whole configuration, and every option that
//! changes what is generated or how it is graded (seed, temperature, token limit, prompts, chat
//! template, sandbox limits). A run that would resume into records written under another
//! manifest is refused with [`EvalError::ManifestMismatch`] naming the first differing field
//! ([`em_core::manifest::first_difference`], the comparison em-train's `--resume` is to reuse), or,
//! with [`OnMismatch::NewRun`], goes to the first free run name (`em-inf-2`, `em-inf-3`, ...)
//! whose manifest matches or is new. `limit`, `batch_size` and `out_dir` are not part of the
//! identity: a run continued with a larger limit, or another batch size, is the same run (each
//! problem's stream is seeded from its id, not its batch).

use std::path::{Path, PathBuf};

use em_grade::SandboxConfig;

use crate::records::{io_error, records_path, write_atomic};
use crate::runner::EvalOptions;
use crate::strategy::Strategy;
use crate::{EvalError, Result};

/// What to do when a run's manifest differs from the one on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMismatch {
    /// Refuse with [`EvalError::ManifestMismatch`] (the default: nothing is mixed silently).
    #[default]
    Error,
    /// Use the first run name `{strategy}-N` whose manifest matches or does not exist yet.
    NewRun,
}

/// The identity of one evaluation run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunManifest {
    /// [`EvalOptions::model`].
    pub model: String,
    /// The benchmark's name.
    pub benchmark: String,
    /// The strategy and its configuration.
    pub strategy: Strategy,
    /// [`EvalOptions::seed`].
    pub seed: u64,
    /// [`EvalOptions::temperature`].
    pub temperature: f64,
    /// [`EvalOptions::max_new_tokens`].
    pub max_new_tokens: usize,
    /// [`EvalOptions::chat`].
    pub chat: bool,
    /// [`EvalOptions::math_system_prompt`].
    pub math_system_prompt: String,
    /// [`EvalOptions::code_instruction`].
    pub code_instruction: String,
    /// [`EvalOptions::sandbox`].
    pub sandbox: SandboxConfig,
}

impl RunManifest {
    /// The manifest of evaluating `benchmark` with `strategy` under `options`.
    pub fn new(benchmark: &str, strategy: &Strategy, options: &EvalOptions) -> Self {
        Self {
            model: options.model.clone(),
            benchmark: benchmark.into(),
            strategy: strategy.clone(),
            seed: options.seed,
            temperature: options.temperature,
            max_new_tokens: options.max_new_tokens,
            chat: options.chat,
            math_system_prompt: options.math_system_prompt.clone(),
            code_instruction: options.code_instruction.clone(),
            sandbox: options.sandbox.clone(),
        }
    }
}

/// The manifest file of a run.
pub fn manifest_path(out_dir: &Path, benchmark: &str, run: &str) -> PathBuf {
    out_dir.join(format!("{benchmark}.{run}.manifest.json"))
}

/// The run name to write `manifest`'s records under (the strategy's name, or `{name}-N` with
/// [`OnMismatch::NewRun`]); writes the manifest when the run is new.
///
/// # Errors
/// [`EvalError::ManifestMismatch`] / [`EvalError::ManifestMissing`] with [`OnMismatch::Error`];
/// [`EvalError::Io`] / [`EvalError::Record`] for unreadable files.
pub fn resolve_run(
    out_dir: &Path,
    manifest: &RunManifest,
    on_mismatch: OnMismatch,
) -> Result<String> {
    let requested = serde_json::to_value(manifest).map_err(EvalError::Json)?;
    let base = manifest.strategy.name();
    let mut n = 0u32;
    loop {
        n += 1;
        let run = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let path = manifest_path(out_dir, &manifest.benchmark, &run);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let existing: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| EvalError::Record {
                        path: path.clone(),
                        line: 1,
                        source,
                    })?;
                match em_core::manifest::first_difference(&existing, &requested) {
                    None => return Ok(run),
                    Some(difference) if on_mismatch == OnMismatch::Error => {
                        return Err(EvalError::ManifestMismatch { path, difference });
                    }
                    Some(_) => continue,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let records = records_path(out_dir, &manifest.benchmark, &run);
                let has_records = std::fs::metadata(&records).is_ok_and(|m| m.len() > 0);
                if has_records {
                    if on_mismatch == OnMismatch::Error {
                        return Err(EvalError::ManifestMissing { records });
                    }
                    continue;
                }
                let json = serde_json::to_vec_pretty(&requested).map_err(EvalError::Json)?;
                write_atomic(&path, &json)?;
                return Ok(run);
            }
            Err(source) => return Err(io_error(&path)(source)),
        }
    }
}
