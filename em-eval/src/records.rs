//! The files a run writes: one JSON line per graded problem ([`EvalRecord`]), appended as it
//! goes and read back on resume (a half-written last line dropped); the summary
//! ([`EvalReport`]) and `report.md`, written atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use em_grade::GradeStage;

use crate::{EvalError, Result};

/// One graded problem: a line of the records file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRecord {
    /// Problem id.
    pub id: String,
    /// Benchmark name.
    pub benchmark: String,
    /// Strategy name.
    pub strategy: String,
    /// The prompt text the model saw.
    pub prompt: String,
    /// The model's output (for self-consistency: the chosen sample; for refinement: the last
    /// round).
    pub output: String,
    /// The extracted answer (math) or program (code), if any.
    pub extracted: Option<String>,
    /// Graded correct.
    pub correct: bool,
    /// What decided: the math stage, or how the code's run ended (which limit fired, if one
    /// did).
    pub stage: GradeStage,
    /// Tokens generated for this problem (all samples / rounds).
    pub tokens: usize,
    /// Wall time of its generation share and grading, seconds.
    pub seconds: f64,
    /// The problem's seed.
    pub seed: u64,
    /// Mean entropy of the distributions its tokens were drawn from.
    pub mean_entropy: f64,
}

/// Accuracy of one benchmark under one strategy: the summary JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Benchmark name.
    pub benchmark: String,
    /// Strategy name.
    pub strategy: String,
    /// Problems graded.
    pub problems: usize,
    /// Problems correct.
    pub correct: usize,
    /// `correct / problems` (0 for none).
    pub accuracy: f64,
    /// Tokens generated.
    pub tokens: usize,
    /// Generation and grading time, seconds (summed over records, so across resumes).
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_second: f64,
    /// How many records each grading stage decided (keyed by [`GradeStage`]'s display).
    pub stages: BTreeMap<String, usize>,
}

impl EvalReport {
    /// The report of a set of records.
    pub fn from_records(benchmark: &str, strategy: &str, records: &[EvalRecord]) -> Self {
        let correct = records.iter().filter(|r| r.correct).count();
        let tokens = records.iter().map(|r| r.tokens).sum();
        let seconds: f64 = records.iter().map(|r| r.seconds).sum();
        let mut stages = BTreeMap::new();
        for r in records {
            *stages.entry(r.stage.to_string()).or_insert(0) += 1;
        }
        Self {
            benchmark: benchmark.into(),
            strategy: strategy.into(),
            problems: records.len(),
            correct,
            accuracy: if records.is_empty() {
                0.0
            } else {
                correct as f64 / records.len() as f64
            },
            tokens,
            seconds,
            tokens_per_second: if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            },
            stages,
        }
    }
}

/// Maps an I/O error on `path` to [`EvalError::Io`].
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The records file of a benchmark and strategy.
pub fn records_path(out_dir: &Path, benchmark: &str, strategy: &str) -> PathBuf {
    out_dir.join(format!("{benchmark}.{strategy}.jsonl"))
}

/// Reads a records file, dropping a half-written last line (a killed run's) from the file.
///
/// # Errors
/// [`EvalError::Io`]; [`EvalError::Record`] for a corrupt complete line.
pub fn read_records(path: &Path) -> Result<Vec<EvalRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EvalError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        // The tail after the last newline is a line the previous run did not finish.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(complete as u64));
        file.map_err(io_error(path))?;
    }
    text[..complete]
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| EvalError::Record {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Writes `bytes` to `path` atomically ([`em_grade::problems::write_atomic`]: temporary file +
/// rename, so a reader never sees a half-written file).
///
/// # Errors
/// [`EvalError::Grade`] wrapping the I/O error, naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(em_grade::problems::write_atomic(path, bytes)?)
}

/// Writes `report` as `out_dir/{benchmark}.{strategy}.json` (atomically) and regenerates
/// `report.md`: what a run and a grade-only pass both end with.
///
/// # Errors
/// [`EvalError::Json`], and as [`write_atomic`] and [`write_markdown`].
pub fn write_summary(out_dir: &Path, report: &EvalReport) -> Result<()> {
    let json = serde_json::to_vec_pretty(report).map_err(EvalError::Json)?;
    let path = out_dir.join(format!("{}.{}.json", report.benchmark, report.strategy));
    write_atomic(&path, &json)?;
    write_markdown(out_dir)
}

/// Regenerates `out_dir/report.md` from every `*.json` summary in `out_dir`.
///
/// # Errors
/// [`EvalError::Io`].
pub fn write_markdown(out_dir: &Path) -> Result<()> {
    let mut reports: Vec<EvalReport> = std::fs::read_dir(out_dir)
        .map_err(io_error(out_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect();
    reports.sort_by(|a, b| (&a.benchmark, &a.strategy).cmp(&(&b.benchmark, &b.strategy)));
    let mut md = String::from(
        "| benchmark | strategy | accuracy | correct / problems | tokens | tokens/s |\n|---|---|---|---|---|---|\n",
    );
    for r in &reports {
        md.push_str(&format!(
            "| {} | {} | {:.1}% | {} / {} | {} | {:.1} |\n",
            r.benchmark,
            r.strategy,
            100.0 * r.accuracy,
            r.correct,
            r.problems,
            r.tokens,
            r.tokens_per_second
        ));
    }
    write_atomic(&out_dir.join("report.md"), md.as_bytes())
}
