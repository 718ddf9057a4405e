//! The training engine and the EM-FT run loop.
//!
//! [`Engine`] is what every trainer shares: the run config (validated), the output directory,
//! the trainable model, AdamW, the step counter, held-out validation, checkpoints (save, keep,
//! best, resume) and the metrics log. [`run_em_ft`] is EM-FT on top of it: each step takes the
//! next batch of prompts (sampling `num_samples` responses each from an inference view of the
//! current weights) or of fixed samples, computes the EM-FT gradients and takes one optimiser
//! step.
//!
//! Exact resume: the data order and the rollout seeds are functions of the step, the weights
//! and moments are saved in f32 and reloaded bit for bit, and the optimiser's step count is
//! restored, so a run killed after a checkpoint and resumed ends with the weights an
//! uninterrupted run ends with (tested on flex).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use em_grade::{Benchmark, Problem, SandboxConfig, Task};
use em_infer::{GenerateConfig, Generator, ProcessorChain, Sampling};
use em_models::{LoadOptions, Qwen2Config, Qwen2ForCausalLM, Tokenizer};

use crate::checkpoint::{self, Save, TrainerState};
use crate::config::{DataSource, RunConfig, ValidationConfig};
use crate::data::{self, Sample};
use crate::emft::{EmFtLoss, em_ft_grads};
use crate::error::{Result, TrainError, io};
use crate::metrics::{MetricsLog, StepMetrics, write_plot};
use crate::optim::{AdamW, OPTIMIZER_FILE, Update};

/// What a run reports as it goes.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The run starts at this step (0, or a resumed checkpoint's) of `steps`.
    Started {
        /// The first step to run is `from + 1`.
        from: usize,
        /// Total steps.
        steps: usize,
        /// The checkpoint resumed from, if any.
        resumed: Option<&'a Path>,
        /// Prompts skipped for their length.
        skipped_prompts: usize,
    },
    /// A metrics line was written (after each step, and the step-0 validation).
    Metrics(&'a StepMetrics),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
}

/// A training prompt of an online run: its token ids and, when labeled, its problem.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The prompt text's ids (chat template applied as configured).
    pub ids: Vec<u32>,
    /// The problem it came from, with its reference answer, when it has one.
    pub problem: Option<Problem>,
}

/// Held-out validation: the problems and how to decode them.
struct Validation {
    config: ValidationConfig,
    problems: Vec<Problem>,
}

/// What validation measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationReport {
    /// Share of problems answered correctly (greedy).
    pub accuracy: f64,
    /// Mean token entropy of the model's own distributions along the greedy answers.
    pub entropy: f64,
    /// Mean answer length in tokens.
    pub response_len: f64,
}

/// The shared training engine (see the module docs).
pub struct Engine {
    /// The validated run config.
    pub run: RunConfig,
    /// The output directory.
    pub out: PathBuf,
    /// The trainable model (f32).
    pub model: Qwen2ForCausalLM,
    /// Its config.
    pub config: Qwen2Config,
    /// The initial checkpoint's tokenizer, when it has one.
    pub tokenizer: Option<Tokenizer>,
    /// AdamW.
    pub optimizer: AdamW,
    /// Optimiser steps done.
    pub step: usize,
    /// Iterations done: EM-FT steps (= `step`) or RL rollouts.
    pub iteration: usize,
    /// The checkpoint resumed from.
    pub resumed_from: Option<PathBuf>,
    /// The metrics file.
    pub metrics: MetricsLog,
    validation: Option<Validation>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("out", &self.out)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// The prompt settings of the run as em-eval's prompt builder takes them (chat template,
/// system prompt).
pub(crate) fn eval_options(run: &RunConfig) -> em_eval::EvalOptions {
    em_eval::EvalOptions {
        chat: run.chat,
        math_system_prompt: run.system_prompt.clone(),
        ..em_eval::EvalOptions::default()
    }
}

/// Loads a benchmark's problems from em-grade's shipped data.
pub(crate) fn load_bench(name: &str, field: &str) -> Result<Vec<Problem>> {
    let Some(bench) = Benchmark::from_name(name) else {
        return TrainError::invalid(field, name, "unknown benchmark");
    };
    Ok(bench.load(&em_grade::problems::data_dir())?)
}

impl Engine {
    /// Validates `run`, then opens `out`: a fresh run (refused when `out` already holds
    /// checkpoints or metrics, unless `resume`), or, with `resume`, the newest complete
    /// checkpoint (its `run.json` must equal `run`; `metrics.jsonl` is cut back to its step).
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`], [`TrainError::OutputExists`],
    /// [`TrainError::ResumeMismatch`], model loading errors.
    pub fn open(run: &RunConfig, out: &Path, resume: bool, device: &Device) -> Result<Self> {
        run.validate()?;
        let metrics = MetricsLog::new(out);
        let checkpoints = checkpoint::list(out)?;
        if !resume && (!checkpoints.is_empty() || metrics.path().exists()) {
            return Err(TrainError::OutputExists {
                path: out.to_path_buf(),
            });
        }
        std::fs::create_dir_all(out).map_err(io(out))?;
        let options = LoadOptions::default();
        let (model, config, optimizer, step, iteration, resumed_from) = match checkpoints.last() {
            Some((_, dir)) if resume => {
                checkpoint::check_same_run(dir, run)?;
                let state: TrainerState =
                    checkpoint::read_json(&dir.join(checkpoint::TRAINER_STATE_FILE))?;
                let (config, model) = match &run.lora {
                    // The base is the initial model; the checkpoint holds the adapters.
                    Some(lora) => {
                        let config = Qwen2Config::from_file(run.model.join("config.json"))?;
                        let base = Qwen2ForCausalLM::from_dir(&run.model, device, &options)?;
                        let model = crate::lora::attach(base.train(), lora, run.seed);
                        (config, crate::lora::load(model, dir)?)
                    }
                    None => (
                        Qwen2Config::from_file(dir.join("config.json"))?,
                        Qwen2ForCausalLM::from_dir(dir, device, &options)?.train(),
                    ),
                };
                let optimizer = AdamW::load(
                    run.optimizer,
                    &model,
                    &dir.join(OPTIMIZER_FILE),
                    state.step as u64,
                )?;
                metrics.truncate_to(state.step)?;
                // A kill between the checkpoint's rename and best.json's update loses nothing.
                checkpoint::update_best(out, &state)?;
                checkpoint::prune(out, run.keep_last)?;
                let iteration = state.rollout.unwrap_or(state.step);
                (
                    model,
                    config,
                    optimizer,
                    state.step,
                    iteration,
                    Some(dir.clone()),
                )
            }
            _ => {
                if metrics.path().exists() {
                    // Resumed before the first checkpoint: start over.
                    checkpoint::write_atomic(metrics.path(), b"")?;
                }
                let config = Qwen2Config::from_file(run.model.join("config.json"))?;
                let mut model = Qwen2ForCausalLM::from_dir(&run.model, device, &options)?.train();
                if let Some(lora) = &run.lora {
                    model = crate::lora::attach(model, lora, run.seed);
                }
                (model, config, AdamW::new(run.optimizer), 0, 0, None)
            }
        };
        let tokenizer = if run.model.join("tokenizer.json").exists() {
            Some(Tokenizer::from_dir(&run.model, Some(config.vocab_size))?)
        } else {
            None
        };
        let validation = match &run.validation {
            Some(v) => {
                let mut problems = load_bench(&v.bench, "validation.bench")?;
                problems.truncate(v.limit);
                let Some(tokenizer) = &tokenizer else {
                    return Err(TrainError::NeedsTokenizer("validation"));
                };
                // A problem whose prompt leaves no room for an answer cannot be validated on.
                let options = eval_options(run);
                for p in &problems {
                    let len = tokenizer
                        .encode(
                            &em_eval::runner::prompt_text(tokenizer, p, &options)?,
                            false,
                        )?
                        .len();
                    if len >= config.max_position_embeddings {
                        return Err(TrainError::TooLong {
                            what: format!("validation problem {}", p.id),
                            len,
                            context: config.max_position_embeddings,
                        });
                    }
                }
                Some(Validation {
                    config: v.clone(),
                    problems,
                })
            }
            None => None,
        };
        Ok(Self {
            run: run.clone(),
            out: out.to_path_buf(),
            model,
            config,
            tokenizer,
            optimizer,
            step,
            iteration,
            resumed_from,
            metrics,
            validation,
        })
    }

    /// The ids of the validation problems (held out of training prompts from the same
    /// benchmark).
    pub fn validation_ids(&self, bench: &str) -> Vec<String> {
        match &self.validation {
            Some(v) if v.config.bench == bench => v.problems.iter().map(|p| p.id.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The learning rate of optimiser step `step` (1-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.run
            .schedule
            .lr(self.run.optimizer.lr, step, self.run.optimizer_steps())
    }

    /// One optimiser step with `grads` (step `self.step + 1`).
    ///
    /// # Errors
    /// [`TrainError::NonFinite`] for a NaN/∞ gradient norm (the model is unchanged).
    pub fn apply(&mut self, grads: &em_models::ParamGrads) -> Result<Update> {
        let step = self.step + 1;
        let lr = self.lr(step);
        let model = self.model.clone();
        let (model, update) = self.optimizer.step(model, grads, lr, step)?;
        self.model = model;
        self.step = step;
        Ok(update)
    }

    /// Whether validation runs after iteration `step` (0 included).
    pub fn validates_at(&self, step: usize) -> bool {
        self.validation.as_ref().is_some_and(|v| {
            step == 0 || step.is_multiple_of(v.config.every) || step == self.run.steps
        })
    }

    /// Whether a checkpoint is written after iteration `step`: every `checkpoint_every`, at
    /// every validation (so that the best on validation is a checkpoint) and at the end.
    pub fn checkpoints_at(&self, step: usize) -> bool {
        step == self.run.steps
            || (self.run.checkpoint_every > 0 && step.is_multiple_of(self.run.checkpoint_every))
            || (step > 0 && self.validates_at(step))
    }

    /// The run's prompts (benchmark or prompts file): token ids with their problem when it is
    /// labeled, validation problems held out, prompts longer than `max_prompt_len` skipped (and
    /// counted), `limit` applied. EM-FT's and RL's online data.
    ///
    /// # Errors
    /// [`TrainError::NeedsTokenizer`], data errors, [`TrainError::NoData`] when nothing is left.
    pub fn prompts(&self) -> Result<(Vec<Prompt>, usize)> {
        let run = &self.run;
        let context = self.config.max_position_embeddings;
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or(TrainError::NeedsTokenizer("sampling responses to prompts"))?;
        let options = eval_options(run);
        let problems: Vec<(String, Option<Problem>)> = match &run.data {
            DataSource::Bench { name } => {
                let held_out = self.validation_ids(name);
                load_bench(name, "data.name")?
                    .into_iter()
                    .filter(|p| !held_out.contains(&p.id))
                    .map(|p| {
                        Ok((
                            em_eval::runner::prompt_text(tokenizer, &p, &options)?,
                            Some(p),
                        ))
                    })
                    .collect::<Result<_>>()?
            }
            DataSource::Prompts {
                path,
                field,
                answer_field,
            } => data::read_prompts(path, field, answer_field.as_deref())?
                .into_iter()
                .enumerate()
                .map(|(i, (text, answer))| {
                    let problem = answer.map(|answer| Problem {
                        id: format!("{}:{}", path.display(), i + 1),
                        benchmark: "prompts".into(),
                        question: text.clone(),
                        task: Task::Math { answer },
                    });
                    Ok((
                        tokenizer.prompt_text(&text, run.chat, Some(&run.system_prompt))?,
                        problem,
                    ))
                })
                .collect::<Result<_>>()?,
            DataSource::Samples { .. } | DataSource::Replay { .. } => {
                return TrainError::invalid("data.kind", "samples", "fixed data has no prompts");
            }
        };
        let limit = run.max_prompt_len.min(context.saturating_sub(1));
        let mut prompts = Vec::new();
        let mut skipped = 0;
        for (text, problem) in problems {
            let ids = tokenizer.encode(&text, false)?;
            if ids.is_empty() || ids.len() > limit {
                skipped += 1;
            } else {
                prompts.push(Prompt { ids, problem });
            }
        }
        if let Some(n) = run.limit {
            prompts.truncate(n);
        }
        if prompts.is_empty() {
            return Err(TrainError::NoData(format!(
                "no prompts left ({skipped} longer than max_prompt_len {}, validation problems held out)",
                run.max_prompt_len
            )));
        }
        Ok((prompts, skipped))
    }

    /// `per_prompt` responses to each prompt from the current weights (a merged inference view;
    /// nothing is recorded) at the run's temperature and top-p, seeded by `iteration`: the rows
    /// (each prompt repeated, prompt-major) and their generations. EM-FT's rollouts and RL's.
    ///
    /// # Errors
    /// [`TrainError::NeedsTokenizer`]; generation errors.
    pub fn sample(
        &self,
        prompts: &[Vec<u32>],
        per_prompt: usize,
        iteration: usize,
    ) -> Result<(Vec<Vec<u32>>, Vec<em_infer::Generation>)> {
        let run = &self.run;
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or(TrainError::NeedsTokenizer("sampling responses to prompts"))?;
        let rows: Vec<Vec<u32>> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt))
            .collect();
        let model = crate::lora::inference_view(&self.model);
        let config = GenerateConfig {
            max_new_tokens: run.max_new_tokens,
            sampling: Sampling {
                temperature: run.temperature,
                top_p: run.top_p,
                ..Sampling::default()
            },
            seed: em_core::rng::mix(run.seed, iteration as u64),
            ..GenerateConfig::default()
        };
        let outputs = Generator::new(&model, tokenizer).generate(
            &rows,
            &config,
            &mut ProcessorChain::new(),
            |_| {},
        )?;
        Ok((rows, outputs))
    }

    /// Greedy answers to the validation problems from the current weights, graded.
    ///
    /// # Errors
    /// Generation and grading errors; `Ok(None)` without validation.
    pub fn validate(&self) -> Result<Option<ValidationReport>> {
        let (Some(v), Some(tokenizer)) = (&self.validation, &self.tokenizer) else {
            return Ok(None);
        };
        let model = crate::lora::inference_view(&self.model);
        let generator = Generator::new(&model, tokenizer);
        let options = eval_options(&self.run);
        let sandbox = SandboxConfig::default();
        let (mut correct, mut entropy, mut tokens) = (0usize, 0.0, 0usize);
        for chunk in v.problems.chunks(v.config.batch_size) {
            let prompts: Vec<String> = chunk
                .iter()
                .map(|p| em_eval::runner::prompt_text(tokenizer, p, &options))
                .collect::<std::result::Result<_, _>>()?;
            let config = GenerateConfig {
                max_new_tokens: v.config.max_new_tokens,
                sampling: Sampling::greedy(),
                ..GenerateConfig::default()
            };
            let outputs =
                generator.generate_text(&prompts, &config, &mut ProcessorChain::new(), |_| {})?;
            for (problem, output) in chunk.iter().zip(&outputs) {
                if em_grade::grade(problem, &output.text, &sandbox)?.correct {
                    correct += 1;
                }
                entropy += output.model_entropies.iter().sum::<f64>();
                tokens += output.tokens.len();
            }
        }
        let n = v.problems.len().max(1) as f64;
        Ok(Some(ValidationReport {
            accuracy: correct as f64 / n,
            entropy: entropy / tokens.max(1) as f64,
            response_len: tokens as f64 / n,
        }))
    }

    /// Reports the start (`Event::Started`) and, on a fresh run with validation, validates the
    /// initial weights into a step-0 metrics line.
    ///
    /// # Errors
    /// [`TrainError::Interrupted`] when `on_event` stops the run; validation and I/O errors.
    pub(crate) fn start(
        &self,
        skipped_prompts: usize,
        on_event: &mut impl FnMut(&Event<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        stop(
            on_event(&Event::Started {
                from: self.iteration,
                steps: self.run.steps,
                resumed: self.resumed_from.as_deref(),
                skipped_prompts,
            }),
            self.step,
        )?;
        if self.iteration == 0 && self.validates_at(0) {
            let mut line = StepMetrics {
                rollout: self.run.rl.map(|_| 0),
                ..StepMetrics::default()
            };
            add_validation(&mut line, self.validate()?);
            self.metrics.append(&line)?;
            stop(on_event(&Event::Metrics(&line)), 0)?;
        }
        Ok(())
    }

    /// Writes the checkpoint of the current iteration: its [`TrainerState`] follows from the
    /// engine (steps, iteration, the data cursor over `data_len` items, the next learning rate)
    /// and the iteration's validation accuracy.
    ///
    /// # Errors
    /// As [`Engine::save_checkpoint`].
    pub(crate) fn checkpoint(
        &self,
        data_len: usize,
        val_accuracy: Option<f64>,
        skipped_prompts: usize,
    ) -> Result<PathBuf> {
        let (data_epoch, data_position) =
            data::cursor(data_len, self.run.batch_size, self.iteration);
        self.save_checkpoint(&TrainerState {
            step: self.step,
            data_epoch,
            data_position,
            shuffle_seed: self.run.shuffle,
            rollout_seed: self.run.seed,
            next_lr: self.lr(self.step + 1),
            val_accuracy,
            skipped_prompts,
            rollout: self.run.rl.map(|_| self.iteration),
        })
    }

    /// Writes the checkpoint of the current step (with `state`), updates `best.json`, prunes
    /// old checkpoints and redraws the plot.
    ///
    /// # Errors
    /// I/O, model and plot errors.
    pub fn save_checkpoint(&self, state: &TrainerState) -> Result<PathBuf> {
        let dir = checkpoint::save(&Save {
            out: &self.out,
            model: &self.model,
            config: &self.config,
            source_dir: Some(&self.run.model),
            optimizer: &self.optimizer,
            state,
            run: &self.run,
        })?;
        checkpoint::update_best(&self.out, state)?;
        checkpoint::prune(&self.out, self.run.keep_last)?;
        // The plot is a view of metrics.jsonl: failing to draw it must not stop training.
        if let Err(e) = write_plot(&self.out) {
            tracing::warn!("metrics plot not written: {e}");
        }
        Ok(dir)
    }
}

/// The run's training items: prompts (token ids, online) or fixed samples.
enum Items {
    Prompts(Vec<Vec<u32>>),
    Samples(Vec<Sample>),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Prompts(p) => p.len(),
            Items::Samples(s) => s.len(),
        }
    }
}

/// Reads the run's data: returns the items and how many prompts were skipped for length.
fn load_items(engine: &Engine) -> Result<(Items, usize)> {
    let run = &engine.run;
    let context = engine.config.max_position_embeddings;
    let vocab = engine.config.vocab_size;
    let (items, skipped) = match &run.data {
        DataSource::Samples { path } => {
            let samples = data::read_samples(path, engine.tokenizer.as_ref(), vocab)?;
            for (i, s) in samples.iter().enumerate() {
                if s.len() > context {
                    return Err(TrainError::TooLong {
                        what: format!("{} sample {}", path.display(), i + 1),
                        len: s.len(),
                        context,
                    });
                }
            }
            (Items::Samples(samples), 0)
        }
        _ => {
            let (prompts, skipped) = engine.prompts()?;
            return Ok((
                Items::Prompts(prompts.into_iter().map(|p| p.ids).collect()),
                skipped,
            ));
        }
    };
    let items = match (items, run.limit) {
        (Items::Samples(mut s), Some(n)) => {
            s.truncate(n);
            Items::Samples(s)
        }
        (items, _) => items,
    };
    Ok((items, skipped))
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Steps done.
    pub steps: usize,
    /// The last checkpoint.
    pub last_checkpoint: PathBuf,
    /// The best checkpoint on validation, if validated.
    pub best: Option<checkpoint::Best>,
}

/// Samples `num_samples` responses to each prompt from the current weights (an inference
/// view; nothing is recorded), seeded by the step.
fn rollout(engine: &Engine, prompts: &[Vec<u32>], step: usize) -> Result<Vec<Sample>> {
    let (rows, outputs) = engine.sample(prompts, engine.run.num_samples, step)?;
    Ok(rows
        .into_iter()
        .zip(outputs)
        .filter(|(_, g)| !g.tokens.is_empty())
        .map(|(prompt_ids, g)| Sample {
            prompt_ids,
            response_ids: g.tokens,
        })
        .collect())
}

/// Runs (or, with `resume`, continues) an EM-FT run described by `run` into `out`. `on_event`
/// sees every metrics line and checkpoint; returning `ControlFlow::Break` stops the run as a
/// kill would ([`TrainError::Interrupted`]; a resume continues from the last checkpoint).
///
/// # Errors
/// Config, data, model, generation and I/O errors, each typed; [`TrainError::Interrupted`].
pub fn run_em_ft(
    run: &RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    mut on_event: impl FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<RunSummary> {
    if run.rl.is_some() {
        return TrainError::invalid("rl", "set", "an RL run goes through em_train::rl::run_rl");
    }
    let mut engine = Engine::open(run, out, resume, device)?;
    let (items, skipped_prompts) = load_items(&engine)?;
    let reference = run.load_reference(device)?;
    let loss = EmFtLoss {
        reduction: run.reduction,
        micro_batch: run.micro_batch(),
        chunk: run.chunk,
        kl_coef: run.kl_coef,
    };
    engine.start(skipped_prompts, &mut on_event)?;
    let mut last_checkpoint = engine.resumed_from.clone().unwrap_or_default();
    while engine.step < run.steps {
        let step = engine.step + 1;
        let started = Instant::now();
        let indices = data::batch_indices(items.len(), run.batch_size, step, run.shuffle);
        let (samples, rollout_time) = match &items {
            Items::Samples(all) => (indices.iter().map(|&i| all[i].clone()).collect(), None),
            Items::Prompts(all) => {
                let prompts: Vec<Vec<u32>> = indices.iter().map(|&i| all[i].clone()).collect();
                let t = Instant::now();
                let samples = rollout(&engine, &prompts, step)?;
                (samples, Some(t.elapsed().as_secs_f64()))
            }
        };
        let train_started = Instant::now();
        let (grads, stats) = em_ft_grads(&engine.model, reference.as_ref(), &samples, &loss, step)?;
        let update = engine.apply(&grads)?;
        engine.iteration = step;
        drop(grads);
        let train_time = train_started.elapsed().as_secs_f64();
        let time = started.elapsed().as_secs_f64();
        let mut line = StepMetrics {
            step,
            loss: Some(stats.loss),
            entropy: Some(stats.mean_entropy()),
            response_len: Some(stats.mean_response_len()),
            grad_norm: Some(update.grad_norm),
            lr: Some(update.lr),
            tokens: Some(stats.tokens),
            tokens_per_s: Some(stats.tokens as f64 / time.max(1e-9)),
            time_s: Some(time),
            rollout_time_s: rollout_time,
            train_time_s: Some(train_time),
            kl: reference.as_ref().map(|_| stats.mean_kl()),
            ..StepMetrics::default()
        };
        let validation = if engine.validates_at(step) {
            engine.validate()?
        } else {
            None
        };
        add_validation(&mut line, validation);
        engine.metrics.append(&line)?;
        let flow = on_event(&Event::Metrics(&line));
        if engine.checkpoints_at(step) {
            last_checkpoint =
                engine.checkpoint(items.len(), validation.map(|v| v.accuracy), skipped_prompts)?;
            stop(on_event(&Event::Checkpoint(&last_checkpoint)), step)?;
        }
        stop(flow, step)?;
    }
    Ok(RunSummary {
        steps: engine.step,
        last_checkpoint,
        best: checkpoint::best(out)?,
    })
}

/// `Err(Interrupted)` when the caller's callback broke off after `step`.
pub(crate) fn stop(flow: ControlFlow<()>, step: usize) -> Result<()> {
    match flow {
        ControlFlow::Break(()) => Err(TrainError::Interrupted { step }),
        ControlFlow::Continue(()) => Ok(()),
    }
}

pub(crate) fn add_validation(line: &mut StepMetrics, report: Option<ValidationReport>) {
    if let Some(v) = report {
        line.val_accuracy = Some(v.accuracy);
        line.val_entropy = Some(v.entropy);
        line.val_response_len = Some(v.response_len);
    }
}
