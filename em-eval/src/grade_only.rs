//! Evaluation without a model: grading another tool's outputs into the runner's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use em_grade::{Problem, grade};

use crate::records::{EvalRecord, EvalReport, io_error, records_path, write_atomic, write_summary};
use crate::runner::EvalOptions;
use crate::{EvalError, Result};

/// Grades existing outputs (a JSON Lines file, or a directory of `*.jsonl` files, with at least
/// `id` and `output` per line, e.g. another tool's records) against `problems`, writing them as
/// records of strategy `strategy` and the usual summary: evaluation without a model.
///
/// # Errors
/// [`EvalError::Record`] for a line without `id`/`output`, [`EvalError::UnknownProblem`] for an
/// id not in `problems`; grading and file errors.
pub fn grade_outputs(
    outputs: &Path,
    benchmark: &str,
    problems: &[Problem],
    strategy: &str,
    options: &EvalOptions,
) -> Result<EvalReport> {
    #[derive(serde::Deserialize)]
    struct Output {
        id: String,
        output: String,
        #[serde(default)]
        prompt: String,
        #[serde(default)]
        tokens: usize,
    }
    // A file, or a directory whose `*.jsonl` files are read in name order.
    let files: Vec<PathBuf> = if outputs.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(outputs)
            .map_err(io_error(outputs))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
    } else {
        vec![outputs.to_path_buf()]
    };
    let mut inputs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io_error(&file))?;
        inputs.push((file, text));
    }
    std::fs::create_dir_all(&options.out_dir).map_err(io_error(&options.out_dir))?;
    let by_id: BTreeMap<&str, &Problem> = problems.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut lines = String::new();
    let mut graded = Vec::new();
    let lines_in = inputs.iter().flat_map(|(file, text)| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(move |(i, l)| (file, i, l))
    });
    for (file, i, line) in lines_in {
        let out: Output = serde_json::from_str(line).map_err(|source| EvalError::Record {
            path: file.clone(),
            line: i + 1,
            source,
        })?;
        let problem = by_id
            .get(out.id.as_str())
            .ok_or_else(|| EvalError::UnknownProblem {
                id: out.id.clone(),
                benchmark: benchmark.into(),
            })?;
        let started = Instant::now();
        let graded_as = grade(problem, &out.output, &options.sandbox)?;
        let record = EvalRecord {
            id: out.id,
            benchmark: benchmark.into(),
            strategy: strategy.into(),
            prompt: out.prompt,
            output: out.output,
            extracted: graded_as.extracted,
            correct: graded_as.correct,
            stage: graded_as.stage,
            tokens: out.tokens,
            seconds: started.elapsed().as_secs_f64(),
            seed: 0,
            mean_entropy: 0.0,
        };
        lines.push_str(&serde_json::to_string(&record).map_err(EvalError::Json)?);
        lines.push('\n');
        graded.push(record);
    }
    write_atomic(
        &records_path(&options.out_dir, benchmark, strategy),
        lines.as_bytes(),
    )?;
    let report = EvalReport::from_records(benchmark, strategy, &graded);
    write_summary(&options.out_dir, &report)?;
    Ok(report)
}
