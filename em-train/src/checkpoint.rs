//! Checkpoints: `out/checkpoint-{step}/` holds the model as [`em_models::Qwen2ForCausalLM::save_pretrained`]
//! writes it (f32, the training dtype, with the tokenizer and the other files of the initial
//! checkpoint), `optimizer.safetensors` (AdamW's moments keyed by HF tensor name),
//! `trainer_state.json` ([`TrainerState`]) and `run.json` (the validated [`RunConfig`]).
//!
//! Atomic: everything is written into `out/.checkpoint-{step}.partial`, fsynced, and renamed
//! into place last, so a directory named `checkpoint-*` is always complete; a killed save leaves
//! only a `.partial` directory, which the next save of that step replaces and which is never
//! resumed from. The newest `keep_last` checkpoints are kept, plus the best on validation
//! (`out/best.json` names it).

use std::path::{Path, PathBuf};

use em_models::{Qwen2Config, Qwen2ForCausalLM, SaveOptions};

use crate::config::RunConfig;
use crate::error::{Result, TrainError, io};
use crate::optim::{AdamW, OPTIMIZER_FILE};

/// The trainer's state file inside a checkpoint.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// The run config inside a checkpoint.
pub const RUN_FILE: &str = "run.json";
/// The file naming the best checkpoint, in the output directory.
pub const BEST_FILE: &str = "best.json";

/// Where a run is, besides the weights and the optimiser moments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Of [`TrainerState::step`] steps' data: the epoch and position the next step starts at.
    pub data_epoch: usize,
    /// See [`TrainerState::data_epoch`].
    pub data_position: usize,
    /// The data order's seed (`None`: file order).
    pub shuffle_seed: Option<u64>,
    /// The rollout seed; step `s` samples with `mix(seed, s)`.
    pub rollout_seed: u64,
    /// The learning rate of the next step.
    pub next_lr: f64,
    /// Validation accuracy at this step, if validated.
    pub val_accuracy: Option<f64>,
    /// Prompts skipped for being longer than `max_prompt_len`.
    pub skipped_prompts: usize,
    /// RL runs: rollouts done (checkpoints are named by it; `step` counts optimiser steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<usize>,
}

impl TrainerState {
    /// The iteration a checkpoint is named by: the rollout for RL, else the step.
    pub fn iteration(&self) -> usize {
        self.rollout.unwrap_or(self.step)
    }
}

/// What `best.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Best {
    /// The checkpoint directory's name.
    pub checkpoint: String,
    /// Its iteration (the step; the rollout for RL), as in its name.
    pub step: usize,
    /// Its validation accuracy.
    pub val_accuracy: f64,
}

/// The directory of the checkpoint of `step`.
pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// The complete checkpoints in `out`, oldest first: `(step, dir)`.
///
/// # Errors
/// [`TrainError::Io`] when `out` cannot be listed.
pub fn list(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !out.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out).map_err(io(out))? {
        let entry = entry.map_err(io(out))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().join(TRAINER_STATE_FILE).is_file() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes a file through a temporary sibling and a rename.
///
/// # Errors
/// [`TrainError::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    em_grade::problems::write_atomic(path, bytes).map_err(|e| match e {
        em_grade::GradeError::Io { path, source } => TrainError::Io { path, source },
        other => TrainError::Grade(other),
    })
}

fn json<T: serde::Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a JSON file.
///
/// # Errors
/// [`TrainError::Io`], [`TrainError::Json`] naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Everything one checkpoint save needs.
pub struct Save<'a> {
    /// The output directory.
    pub out: &'a Path,
    /// The model being trained.
    pub model: &'a Qwen2ForCausalLM,
    /// Its config.
    pub config: &'a Qwen2Config,
    /// The directory whose other files (tokenizer, generation config) are copied.
    pub source_dir: Option<&'a Path>,
    /// The optimiser.
    pub optimizer: &'a AdamW,
    /// The trainer's state.
    pub state: &'a TrainerState,
    /// The run config.
    pub run: &'a RunConfig,
}

impl Save<'_> {
    /// Writes the weights into `dir`: the model (`save_pretrained`, adapters merged) unless
    /// LoRA without `merge_on_save`, and the adapters with LoRA.
    fn weights(&self, dir: &Path) -> Result<()> {
        let lora = self.run.lora.as_ref();
        if lora.is_none_or(|l| l.merge_on_save) {
            self.model.save_pretrained(
                self.config,
                self.source_dir,
                dir,
                &SaveOptions::default(),
            )?;
        } else {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        if let Some(lora) = lora {
            crate::lora::save(self.model, lora, &self.run.model, dir)?;
        }
        Ok(())
    }
}

/// Writes the checkpoint of `save.state`'s iteration atomically and returns its directory.
///
/// # Errors
/// I/O, model and safetensors errors (nothing is left under the final name).
pub fn save(save: &Save<'_>) -> Result<PathBuf> {
    let dir = checkpoint_dir(save.out, save.state.iteration());
    let partial = save
        .out
        .join(format!(".checkpoint-{}.partial", save.state.iteration()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    save.weights(&partial)?;
    save.optimizer
        .save(save.model, &partial.join(OPTIMIZER_FILE))?;
    let run_path = partial.join(RUN_FILE);
    std::fs::write(&run_path, json(save.run, &run_path)?).map_err(io(&run_path))?;
    let state_path = partial.join(TRAINER_STATE_FILE);
    std::fs::write(&state_path, json(save.state, &state_path)?).map_err(io(&state_path))?;
    // On disk before the rename makes the checkpoint visible (a power loss, not only a killed
    // process, then leaves either the old state or the complete new one).
    sync_files(&partial)?;
    // An existing checkpoint of this iteration (a step redone after a kill) is moved aside
    // first and removed only once the new one is in place, so one of them always exists.
    if dir.exists() {
        let old = save
            .out
            .join(format!(".checkpoint-{}.old", save.state.iteration()));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&dir, &old).map_err(io(&dir))?;
        std::fs::rename(&partial, &dir).map_err(io(&dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&partial, &dir).map_err(io(&dir))?;
    }
    std::fs::File::open(save.out)
        .and_then(|d| d.sync_all())
        .map_err(io(save.out))?;
    Ok(dir)
}

/// `fsync`s every file of `dir` and the directory itself.
fn sync_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The best checkpoint so far, if `best.json` exists.
///
/// # Errors
/// [`TrainError::Json`] for a corrupt file.
pub fn best(out: &Path) -> Result<Option<Best>> {
    let path = out.join(BEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// Records the checkpoint of `state` as the best when it has a validation accuracy above the
/// current best's (the earliest wins a tie).
///
/// # Errors
/// I/O errors.
pub fn update_best(out: &Path, state: &TrainerState) -> Result<Option<Best>> {
    let current = best(out)?;
    let Some(accuracy) = state.val_accuracy else {
        return Ok(current);
    };
    if current.as_ref().is_some_and(|b| b.val_accuracy >= accuracy) {
        return Ok(current);
    }
    let new = Best {
        checkpoint: format!("checkpoint-{}", state.iteration()),
        step: state.iteration(),
        val_accuracy: accuracy,
    };
    let path = out.join(BEST_FILE);
    write_atomic(&path, &json(&new, &path)?)?;
    Ok(Some(new))
}

/// Removes all but the newest `keep_last` checkpoints and the best.
///
/// # Errors
/// I/O errors.
pub fn prune(out: &Path, keep_last: usize) -> Result<()> {
    let all = list(out)?;
    let best_step = best(out)?.map(|b| b.step);
    let cut = all.len().saturating_sub(keep_last);
    for (step, dir) in &all[..cut] {
        if Some(*step) != best_step {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
    }
    Ok(())
}

/// Checks that `requested` is the run stored in `dir` (its `run.json`).
///
/// # Errors
/// [`TrainError::ResumeMismatch`] naming the first field that differs.
pub fn check_same_run(dir: &Path, requested: &RunConfig) -> Result<()> {
    let path = dir.join(RUN_FILE);
    let existing: serde_json::Value = read_json(&path)?;
    let requested = serde_json::to_value(requested).map_err(|source| TrainError::Json {
        path: path.clone(),
        source,
    })?;
    match em_core::manifest::first_difference(&existing, &requested) {
        Some(difference) => Err(TrainError::ResumeMismatch { path, difference }),
        None => Ok(()),
    }
}
