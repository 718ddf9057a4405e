//! The reference solutions' CPU times, which set each code problem's CPU budget
//! ([`crate::sandbox::SandboxConfig::for_reference`]).
//!
//! `data/reference_cpu.json` maps `benchmark → problem id → CPU seconds` of the benchmark's own
//! canonical solution run against its tests in this sandbox (Python start-up included), the
//! least of three runs. Regenerate it on an idle machine with
//! `cargo run --release -p em-grade --example reference_cpu` (it writes the file atomically).
//! HumanEval and MBPP ship canonical solutions; LeetCode's file has none, so its problems keep
//! the sandbox's floor.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::{GradeError, Result};
use crate::problems::{Benchmark, Problem, Task, read_json, read_jsonl, write_atomic};
use crate::sandbox::{IsolationRequest, SandboxConfig};

/// The file under the data directory.
pub const FILE: &str = "reference_cpu.json";

/// `benchmark name → problem id → CPU seconds`.
pub type ReferenceTimes = BTreeMap<String, BTreeMap<String, f64>>;

/// Reads `data_dir/reference_cpu.json`; a missing file is an empty table.
///
/// # Errors
/// [`GradeError::Io`] or [`GradeError::Json`] for an unreadable or malformed file,
/// [`GradeError::Field`] for a time that is negative or not finite.
pub fn load_times(data_dir: &Path) -> Result<ReferenceTimes> {
    let path = data_dir.join(FILE);
    if !path.exists() {
        return Ok(ReferenceTimes::new());
    }
    let json = read_json(&path)?;
    let times: ReferenceTimes =
        serde_json::from_value(json).map_err(|source| GradeError::Json {
            path: path.clone(),
            line: None,
            source,
        })?;
    for (bench, ids) in &times {
        for (id, seconds) in ids {
            if !seconds.is_finite() || *seconds < 0.0 {
                return Err(GradeError::Field {
                    path,
                    line: None,
                    field: format!("{bench}.{id}"),
                    message: format!("CPU seconds must be finite and ≥ 0, got {seconds}"),
                });
            }
        }
    }
    Ok(times)
}

/// Fills `reference_cpu_seconds` of `benchmark`'s code problems from the table in `data_dir`.
pub(crate) fn attach(
    data_dir: &Path,
    benchmark: Benchmark,
    problems: &mut [Problem],
) -> Result<()> {
    if !benchmark.is_code() {
        return Ok(());
    }
    let times = load_times(data_dir)?;
    let Some(table) = times.get(benchmark.name()) else {
        return Ok(());
    };
    for p in problems {
        if let Task::Code {
            reference_cpu_seconds,
            ..
        } = &mut p.task
        {
            *reference_cpu_seconds = table.get(&p.id).copied();
        }
    }
    Ok(())
}

/// Each problem of `benchmark` that ships a canonical solution, with that solution's code
/// (HumanEval: the prompt followed by `canonical_solution`; MBPP: `code`). Empty for the other
/// benchmarks.
///
/// # Errors
/// As [`Benchmark::load`], and [`GradeError::Field`] for a record without its solution.
pub fn canonical_solutions(
    benchmark: Benchmark,
    data_dir: &Path,
) -> Result<Vec<(Problem, String)>> {
    let path = data_dir.join(benchmark.file());
    let raw: Vec<serde_json::Value> = match benchmark {
        Benchmark::HumanEval => read_jsonl(&path)?.into_iter().map(|(_, v)| v).collect(),
        Benchmark::Mbpp => match read_json(&path)? {
            serde_json::Value::Array(list) => list,
            _ => Vec::new(),
        },
        _ => return Ok(Vec::new()),
    };
    let problems = benchmark.load(data_dir)?;
    problems
        .into_iter()
        .zip(raw)
        .enumerate()
        .map(|(i, (problem, record))| {
            let field = |name: &str| {
                record
                    .get(name)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| GradeError::Field {
                        path: path.clone(),
                        line: Some(i + 1),
                        field: name.into(),
                        message: "missing or not a string".into(),
                    })
            };
            let code = match benchmark {
                Benchmark::HumanEval => {
                    format!("{}{}", field("prompt")?, field("canonical_solution")?)
                }
                _ => field("code")?.to_string(),
            };
            Ok((problem, code))
        })
        .collect()
}

/// Measures the CPU seconds of every canonical solution of `benchmark` (the least of
/// `repeats` runs, each under generous limits: 120 s CPU, 600 s wall, no retry), on at most
/// `workers` threads.
///
/// # Errors
/// [`GradeError::Reference`] naming a canonical solution that does not pass its own tests;
/// sandbox and loading errors.
pub fn measure(
    benchmark: Benchmark,
    data_dir: &Path,
    repeats: usize,
    workers: Option<usize>,
) -> Result<BTreeMap<String, f64>> {
    let config = SandboxConfig {
        cpu_time: Duration::from_secs(120),
        wall_time: Duration::from_secs(600),
        timeout_retries: 0,
        isolation: IsolationRequest::Auto,
        ..SandboxConfig::default()
    };
    let cases = canonical_solutions(benchmark, data_dir)?;
    let runs = crate::code::run_pool(&cases, workers, |(problem, code)| {
        let Task::Code { harness, .. } = &problem.task else {
            return Ok(None);
        };
        let output = format!("```python\n{code}\n```\n");
        let mut best: Option<f64> = None;
        for _ in 0..repeats.max(1) {
            let verdict = crate::code::grade_code(&output, harness, &config)?;
            let cpu = verdict.run.as_ref().and_then(|r| r.cpu_seconds);
            match (verdict.passed, cpu) {
                (true, Some(cpu)) => best = Some(best.map_or(cpu, |b: f64| b.min(cpu))),
                _ => {
                    return Err(GradeError::Reference {
                        benchmark: benchmark.name().into(),
                        id: problem.id.clone(),
                        message: format!(
                            "the canonical solution does not pass: {}",
                            verdict.outcome
                        ),
                    });
                }
            }
        }
        Ok(best.map(|b| (problem.id.clone(), b)))
    });
    runs.into_iter().filter_map(|r| r.transpose()).collect()
}

/// Writes `times` to `data_dir/reference_cpu.json` atomically (temporary file + rename), with
/// stable key order and times rounded to the millisecond.
///
/// # Errors
/// [`GradeError::Io`].
pub fn write_times(data_dir: &Path, times: &ReferenceTimes) -> Result<()> {
    let path = data_dir.join(FILE);
    let rounded: ReferenceTimes = times
        .iter()
        .map(|(b, ids)| {
            let ids = ids
                .iter()
                .map(|(id, s)| (id.clone(), (s * 1000.0).ceil() / 1000.0))
                .collect();
            (b.clone(), ids)
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&rounded).map_err(|e| GradeError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())
}
