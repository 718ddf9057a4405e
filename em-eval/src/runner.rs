//! The evaluation runner: prompts a model on a benchmark with one [`Strategy`], grades every
//! output with [`em_grade::grade`], and writes one JSON line per problem **as it goes**, so a
//! killed run resumes where it stopped (finished ids are skipped; a half-written last line is
//! dropped). At the end it writes a summary JSON and refreshes a Markdown table over every
//! summary in the output directory; both are written atomically (temporary file + rename).
//!
//! Files in `out_dir`: `{benchmark}.{strategy}.jsonl` (records), `{benchmark}.{strategy}.json`
//! (summary), `report.md` (the table).

use std::collections::HashSet;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use em_grade::math::{answers_match, extract_answer};
use em_grade::prompts::{CODE_INSTRUCTION, MATH_SYSTEM_PROMPT};
use em_grade::{Problem, SandboxConfig, Task, grade};
use em_infer::{
    AdaptiveTemperatureProcessor, EmInfProcessor, GenerateConfig, Generation, Generator,
    LogitsProcessor, ProcessorChain, Sampling, self_consistency,
};
use em_models::{CausalLm, Message};

use crate::manifest::{OnMismatch, RunManifest, resolve_run};
use crate::records::{EvalRecord, EvalReport, io_error, read_records, records_path, write_summary};
use crate::strategy::Strategy;
use crate::{EvalError, Result};

/// Everything besides the model, the benchmark and the strategy. Defaults: the paper's protocol
/// (temperature 0.1, seed 42, math system prompt, chat template) with 1024 new tokens (the
/// paper's 4096, 8192 for LeetCode, are slow on a CPU: raise `max_new_tokens` to match it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// What the model is (its checkpoint directory or name): part of the run's identity, so a
    /// resume with another model is refused. Empty when unnamed.
    pub model: String,
    /// What a resume whose manifest differs does (see [`crate::manifest`]).
    pub on_mismatch: OnMismatch,
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
            model: String::new(),
            on_mismatch: OnMismatch::Error,
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

/// The seed of one problem: the base seed mixed with the id ([`em_core::rng::stable_hash`]), so
/// a problem samples the same tokens whichever batch it lands in.
pub fn problem_seed(seed: u64, id: &str) -> u64 {
    em_core::rng::stable_hash(seed, id.as_bytes())
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
    let manifest = RunManifest::new(benchmark, strategy, options);
    let name = resolve_run(&options.out_dir, &manifest, options.on_mismatch)?;
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
            let graded_as = grade(problem, &output, &options.sandbox)?;
            let record = EvalRecord {
                id: problem.id.clone(),
                benchmark: benchmark.into(),
                strategy: name.clone(),
                prompt,
                output,
                extracted: graded_as.extracted,
                correct: graded_as.correct,
                stage: graded_as.stage,
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
    write_summary(&options.out_dir, &report)?;
    Ok(report)
}
