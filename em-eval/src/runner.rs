//! The evaluation runner: prompts a model on a benchmark with one [`Strategy`], grades every
//! output, and writes one JSON line per problem **as it goes**, so a killed run resumes where it
//! stopped (finished ids are skipped; a half-written last line is dropped). At the end it writes
//! a summary JSON and refreshes a Markdown table over every summary in the output directory;
//! both are written atomically (temporary file + rename).
//!
//! Files in `out_dir`: `{benchmark}.{strategy}.jsonl` (records), `{benchmark}.{strategy}.json`
//! (summary), `report.md` (the table).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use em_infer::{
    AdaptiveTemperatureConfig, AdaptiveTemperatureProcessor, EmInfConfig, EmInfProcessor,
    GenerateConfig, Generation, Generator, LogitsProcessor, ProcessorChain, Sampling,
    self_consistency,
};
use em_models::{CausalLm, Message};

use crate::code::grade_code;
use crate::math::{answers_match, extract_answer};
use crate::problems::{Problem, Task};
use crate::sandbox::SandboxConfig;
use crate::{EvalError, Result};

/// The paper's math system prompt (`../shared/docs/method.md` §4).
pub const MATH_SYSTEM_PROMPT: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";
/// Appended to code questions that do not already ask for a code block.
pub const CODE_INSTRUCTION: &str =
    "Write your complete solution in Python in a single ```python code block.";

/// How answers are produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// One sample at the options' temperature.
    Sampling,
    /// Greedy decoding.
    Greedy,
    /// EM-INF in front of the sampler.
    EmInf(EmInfConfig),
    /// Adaptive temperature in front of the sampler.
    AdaptiveTemperature(AdaptiveTemperatureConfig),
    /// `n` samples, majority answer (math only).
    SelfConsistency {
        /// Samples per problem.
        n: usize,
    },
    /// `rounds` rounds of iterative refinement; the last round's answer counts.
    Refinement {
        /// Rounds.
        rounds: usize,
    },
}

impl Strategy {
    /// The name used in file names and reports: `sampling`, `greedy`, `em-inf`,
    /// `adaptive-temperature`, `self-consistency-N`, `refinement-N`.
    pub fn name(&self) -> String {
        match self {
            Strategy::Sampling => "sampling".into(),
            Strategy::Greedy => "greedy".into(),
            Strategy::EmInf(_) => "em-inf".into(),
            Strategy::AdaptiveTemperature(_) => "adaptive-temperature".into(),
            Strategy::SelfConsistency { n } => format!("self-consistency-{n}"),
            Strategy::Refinement { rounds } => format!("refinement-{rounds}"),
        }
    }

    /// Parses a name: the forms of [`Strategy::name`], with the paper's defaults for the
    /// unnumbered `self-consistency` (4) and `refinement` (3), and the default EM-INF and
    /// adaptive-temperature configs.
    ///
    /// # Errors
    /// [`EvalError::Strategy`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        let numbered = |prefix: &str, default: usize| -> Option<usize> {
            let rest = name.strip_prefix(prefix)?;
            if rest.is_empty() {
                return Some(default);
            }
            rest.strip_prefix('-')?.parse().ok().filter(|n| *n > 0)
        };
        Ok(match name {
            "sampling" => Strategy::Sampling,
            "greedy" => Strategy::Greedy,
            "em-inf" => Strategy::EmInf(EmInfConfig::default()),
            "adaptive-temperature" => {
                Strategy::AdaptiveTemperature(AdaptiveTemperatureConfig::default())
            }
            _ => {
                if let Some(n) = numbered("self-consistency", 4) {
                    Strategy::SelfConsistency { n }
                } else if let Some(rounds) = numbered("refinement", 3) {
                    Strategy::Refinement { rounds }
                } else {
                    return Err(EvalError::Strategy(name.to_string()));
                }
            }
        })
    }
}

/// Everything besides the model, the benchmark and the strategy. Defaults: the paper's protocol
/// (temperature 0.1, seed 42, math system prompt, chat template) with 1024 new tokens (the
/// paper's 4096, 8192 for LeetCode, are slow on a CPU: raise `max_new_tokens` to match it).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Evaluate the first `limit` problems only.
    pub limit: Option<usize>,
    /// Base seed; each problem's stream is seeded from it and the problem id.
    pub seed: u64,
    /// Sampling temperature (not used by `greedy`).
    pub temperature: f64,
    /// New tokens per answer at most.
    pub max_new_tokens: usize,
    /// Problems generated together in one batch.
    pub batch_size: usize,
    /// Wrap prompts in the model's chat template.
    pub chat: bool,
    /// System prompt for math problems (with `chat`).
    pub math_system_prompt: String,
    /// Appended to code questions (HumanEval, MBPP; LeetCode prompts carry their own).
    pub code_instruction: String,
    /// Limits for running code.
    pub sandbox: SandboxConfig,
    /// Where records, summaries and the report go.
    pub out_dir: PathBuf,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            limit: None,
            seed: 42,
            temperature: 0.1,
            max_new_tokens: 1024,
            batch_size: 4,
            chat: true,
            math_system_prompt: MATH_SYSTEM_PROMPT.into(),
            code_instruction: CODE_INSTRUCTION.into(),
            sandbox: SandboxConfig::default(),
            out_dir: PathBuf::from("results"),
        }
    }
}

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
    /// Which grading stage decided (math: `string`, `numeric`, `structure`, `symbolic`,
    /// `no_match`, `no_answer`; code: `passed` or why not).
    pub stage: String,
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
    /// How many records each grading stage decided.
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
            *stages.entry(r.stage.clone()).or_insert(0) += 1;
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
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
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

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file.
///
/// # Errors
/// [`EvalError::Io`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The seed of one problem: the base seed mixed with the id (FNV-1a), so a problem samples the
/// same tokens whichever batch it lands in.
pub fn problem_seed(seed: u64, id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The prompt text of a problem under `options`.
///
/// # Errors
/// [`EvalError::Model`] when the chat template fails.
pub fn prompt_text(
    tokenizer: &em_models::Tokenizer,
    problem: &Problem,
    options: &EvalOptions,
) -> Result<String> {
    let (system, user) = match &problem.task {
        Task::Math { .. } => (
            Some(options.math_system_prompt.clone()),
            problem.question.clone(),
        ),
        Task::Code { .. } if problem.question.contains("```") => (None, problem.question.clone()),
        Task::Code { .. } => (
            None,
            format!(
                "{}\n\n{}",
                problem.question.trim_end(),
                options.code_instruction
            ),
        ),
    };
    if !options.chat {
        return Ok(match system {
            Some(s) => format!("{s}\n\n{user}"),
            None => user,
        });
    }
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(user));
    Ok(tokenizer.apply_chat_template(&messages, true)?)
}

/// Grades one output against its problem: `(correct, stage, extracted)`.
///
/// # Errors
/// [`EvalError::Sandbox`] when code cannot be run at all.
pub fn grade(
    problem: &Problem,
    output: &str,
    sandbox: &SandboxConfig,
) -> Result<(bool, String, Option<String>)> {
    match &problem.task {
        Task::Math { answer } => {
            let extracted = extract_answer(output).map(|e| e.answer);
            let verdict = answers_match(extracted.as_deref().unwrap_or(""), answer);
            let stage = serde_json::to_value(verdict.stage)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Ok((verdict.correct, stage, extracted))
        }
        Task::Code { harness } => {
            let verdict = grade_code(output, harness, sandbox)?;
            Ok((
                verdict.passed,
                verdict.reason,
                crate::code::extract_code(output),
            ))
        }
    }
}

/// Evaluates `problems` (one benchmark) with `strategy`; see the module docs. `on_record` sees
/// every new record; returning `ControlFlow::Break` stops the run (as a kill would: what was
/// written stays, and a later call resumes).
///
/// # Errors
/// [`EvalError::Interrupted`] when `on_record` broke off; generation, grading and file errors.
pub fn evaluate<M: CausalLm + ?Sized>(
    generator: &Generator<'_, M>,
    benchmark: &str,
    problems: &[Problem],
    strategy: &Strategy,
    options: &EvalOptions,
    mut on_record: impl FnMut(&EvalRecord) -> ControlFlow<()>,
) -> Result<EvalReport> {
    if options.batch_size == 0 {
        return Err(EvalError::InvalidOption("batch_size must be > 0".into()));
    }
    if matches!(strategy, Strategy::SelfConsistency { .. })
        && problems.iter().any(|p| matches!(p.task, Task::Code { .. }))
    {
        return Err(EvalError::Strategy(format!(
            "{} groups final answers, and {benchmark} is a code benchmark",
            strategy.name()
        )));
    }
    std::fs::create_dir_all(&options.out_dir).map_err(io_error(&options.out_dir))?;
    let name = strategy.name();
    let path = records_path(&options.out_dir, benchmark, &name);
    let selected = &problems[..options.limit.unwrap_or(problems.len()).min(problems.len())];
    let done: HashSet<String> = read_records(&path)?.into_iter().map(|r| r.id).collect();
    let todo: Vec<&Problem> = selected.iter().filter(|p| !done.contains(&p.id)).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let tokenizer = generator.tokenizer();
    let sampling = match strategy {
        Strategy::Greedy => Sampling::greedy(),
        _ => Sampling::with_temperature(options.temperature),
    };
    let mut processor: Box<dyn LogitsProcessor> = match strategy {
        Strategy::EmInf(c) => Box::new(EmInfProcessor::new(*c)?),
        Strategy::AdaptiveTemperature(c) => Box::new(AdaptiveTemperatureProcessor::new(*c)?),
        _ => Box::new(ProcessorChain::new()),
    };
    let batch_size = match strategy {
        Strategy::SelfConsistency { .. } | Strategy::Refinement { .. } => 1,
        _ => options.batch_size,
    };
    for chunk in todo.chunks(batch_size) {
        let started = Instant::now();
        let prompts: Vec<String> = chunk
            .iter()
            .map(|p| prompt_text(tokenizer, p, options))
            .collect::<Result<_>>()?;
        let seeds: Vec<u64> = chunk
            .iter()
            .map(|p| problem_seed(options.seed, &p.id))
            .collect();
        let config = GenerateConfig {
            max_new_tokens: options.max_new_tokens,
            sampling,
            seed: seeds[0],
            row_seeds: seeds.clone(),
            ..GenerateConfig::default()
        };
        // (output text, tokens, mean entropy) per problem of the chunk.
        let outputs: Vec<(String, usize, f64)> = match strategy {
            Strategy::SelfConsistency { n } => {
                let ids = tokenizer.encode(&prompts[0], false)?;
                let config = GenerateConfig {
                    row_seeds: Vec::new(),
                    ..config
                };
                let sc = self_consistency(
                    generator,
                    &ids,
                    *n,
                    &config,
                    processor.as_mut(),
                    |text| extract_answer(text).map(|e| e.answer),
                    |a, b| answers_match(a, b).correct,
                )?;
                let chosen = sc.chosen.unwrap_or(0);
                vec![summarise(&sc.samples, chosen)]
            }
            Strategy::Refinement { rounds } => {
                let config = GenerateConfig {
                    row_seeds: Vec::new(),
                    ..config
                };
                let result = em_infer::refine(
                    generator,
                    &prompts[0],
                    &chunk[0].question,
                    *rounds,
                    &config,
                    processor.as_mut(),
                )?;
                let generations: Vec<Generation> =
                    result.into_iter().map(|r| r.generation).collect();
                vec![summarise(&generations, generations.len() - 1)]
            }
            _ => generator
                .generate_text(&prompts, &config, processor.as_mut(), |_| {})?
                .iter()
                .map(|g| (g.text.clone(), g.tokens.len(), g.mean_entropy()))
                .collect(),
        };
        let share = started.elapsed().as_secs_f64() / chunk.len() as f64;
        for ((problem, prompt), (output, tokens, mean_entropy)) in
            chunk.iter().zip(prompts).zip(outputs)
        {
            let graded = Instant::now();
            let (correct, stage, extracted) = grade(problem, &output, &options.sandbox)?;
            let record = EvalRecord {
                id: problem.id.clone(),
                benchmark: benchmark.into(),
                strategy: name.clone(),
                prompt,
                output,
                extracted,
                correct,
                stage,
                tokens,
                seconds: share + graded.elapsed().as_secs_f64(),
                seed: problem_seed(options.seed, &problem.id),
                mean_entropy,
            };
            let mut line = serde_json::to_string(&record).map_err(EvalError::Json)?;
            line.push('\n');
            // One write per record: a kill leaves at most one partial line, which the next
            // run drops.
            file.write_all(line.as_bytes())
                .and_then(|()| file.flush())
                .map_err(io_error(&path))?;
            if on_record(&record).is_break() {
                return Err(EvalError::Interrupted);
            }
        }
    }
    finish(benchmark, &name, selected, options)
}

/// `(text, tokens, mean entropy)` of a multi-sample strategy: the chosen text, all tokens, the
/// token-weighted mean entropy.
fn summarise(generations: &[Generation], chosen: usize) -> (String, usize, f64) {
    let tokens: usize = generations.iter().map(|g| g.tokens.len()).sum();
    let entropy: f64 = generations.iter().flat_map(|g| &g.entropies).sum();
    (
        generations[chosen].text.clone(),
        tokens,
        if tokens == 0 {
            0.0
        } else {
            entropy / tokens as f64
        },
    )
}

/// Builds the report of the `selected` problems from the records file, writes the summary and
/// refreshes `report.md`.
fn finish(
    benchmark: &str,
    strategy: &str,
    selected: &[Problem],
    options: &EvalOptions,
) -> Result<EvalReport> {
    let wanted: HashSet<&str> = selected.iter().map(|p| p.id.as_str()).collect();
    let records: Vec<EvalRecord> =
        read_records(&records_path(&options.out_dir, benchmark, strategy))?
            .into_iter()
            .filter(|r| wanted.contains(r.id.as_str()))
            .collect();
    let report = EvalReport::from_records(benchmark, strategy, &records);
    let summary = options.out_dir.join(format!("{benchmark}.{strategy}.json"));
    let json = serde_json::to_vec_pretty(&report).map_err(EvalError::Json)?;
    write_atomic(&summary, &json)?;
    write_markdown(&options.out_dir)?;
    Ok(report)
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
        let (correct, stage, extracted) = grade(problem, &out.output, &options.sandbox)?;
        let record = EvalRecord {
            id: out.id,
            benchmark: benchmark.into(),
            strategy: strategy.into(),
            prompt: out.prompt,
            output: out.output,
            extracted,
            correct,
            stage,
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
    let json = serde_json::to_vec_pretty(&report).map_err(EvalError::Json)?;
    write_atomic(
        &options.out_dir.join(format!("{benchmark}.{strategy}.json")),
        &json,
    )?;
    write_markdown(&options.out_dir)?;
    Ok(report)
}
