//! EM-RL and the labeled baselines on the training engine (`docs/method.md` §2): rollouts from
//! an inference view of the current policy, rewards and old log-probs from the trainer's own
//! recompute forward (never the generator's per-step statistics, so a replayed batch and an
//! online one update identically), group advantages (RLOO or GRPO), and one PPO-clip optimiser
//! step per mini-batch with a k3 KL to the frozen initial model.
//!
//! Log-probs, ratios, KL and the entropy rewards use `logits / temperature` (verl's
//! convention). Rewards: EM-RL-token (−mean entropy), EM-RL-sequence (mean log-prob), their
//! sums, the verifiable reward (GRPO/RLOO with labels) and self-consistency (SC-RL); any
//! [`Reward`] a user writes.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use em_grade::{Problem, SandboxConfig, Task};
use em_models::{HeadOptions, HeadStats, ParamGrads, Qwen2ForCausalLM};

use crate::checkpoint;
use crate::config::{AdvantageKind, DataSource, RewardKind, RlConfig, RunConfig};
use crate::data::{self, Sample};
pub use crate::emft::score_rows;
use crate::emft::{at_positions, checked_grads, rows};
use crate::error::{Result, TrainError};
use crate::metrics::StepMetrics;
use crate::trainer::{Engine, Event, Prompt, RunSummary, ValidationReport, add_validation, stop};

/// One prompt of a group, as a reward sees it.
#[derive(Debug, Clone, Copy)]
pub struct GroupPrompt<'a> {
    /// The prompt's ids.
    pub ids: &'a [u32],
    /// The problem it came from, with its label when it has one.
    pub problem: Option<&'a Problem>,
}

/// One response of a group, with the recomputed per-token statistics (at the run's
/// temperature).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Its token ids (a generated EOS included).
    pub ids: &'a [u32],
    /// Its text (special tokens skipped; empty without a tokenizer).
    pub text: &'a str,
    /// `log π(y_t)` per response token.
    pub log_probs: &'a [f64],
    /// The entropy of the distribution that produced each response token.
    pub entropies: &'a [f64],
}

/// Scores a whole group (so group rewards such as self-consistency fit): one reward per
/// response, in order.
pub trait Reward {
    /// The rewards of `responses` to `prompt`.
    ///
    /// # Errors
    /// Whatever the reward needs and lacks (a label, the sandbox).
    fn score_group(
        &mut self,
        prompt: &GroupPrompt<'_>,
        responses: &[Response<'_>],
    ) -> Result<Vec<f64>>;
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The built-in rewards.
#[derive(Debug, Clone)]
pub struct BuiltinReward {
    kind: RewardKind,
    sandbox: SandboxConfig,
}

impl BuiltinReward {
    /// The reward `kind` (code problems run in the default sandbox).
    pub fn new(kind: RewardKind) -> Self {
        Self {
            kind,
            sandbox: SandboxConfig::default(),
        }
    }
}

impl Reward for BuiltinReward {
    fn score_group(
        &mut self,
        prompt: &GroupPrompt<'_>,
        responses: &[Response<'_>],
    ) -> Result<Vec<f64>> {
        Ok(match self.kind {
            RewardKind::Token => responses.iter().map(|r| -mean(r.entropies)).collect(),
            RewardKind::TokenSum => responses
                .iter()
                .map(|r| -r.entropies.iter().sum::<f64>())
                .collect(),
            RewardKind::Sequence => responses.iter().map(|r| mean(r.log_probs)).collect(),
            RewardKind::SequenceSum => responses.iter().map(|r| r.log_probs.iter().sum()).collect(),
            RewardKind::Verifiable => {
                let Some(problem) = prompt.problem else {
                    return TrainError::invalid(
                        "rl.reward",
                        "verifiable",
                        "a prompt has no reference answer",
                    );
                };
                responses
                    .iter()
                    .map(|r| {
                        let grade = em_grade::grade(problem, r.text, &self.sandbox)?;
                        Ok(if grade.correct { 1.0 } else { 0.0 })
                    })
                    .collect::<Result<_>>()?
            }
            RewardKind::SelfConsistency => self_consistency(responses),
        })
    }
}

/// SC-RL: the share of the group's answers equivalent to each one (itself included); a
/// response without an extractable answer scores 0.
pub fn self_consistency(responses: &[Response<'_>]) -> Vec<f64> {
    use em_grade::math::{answers_match, extract_answer};
    let answers: Vec<Option<String>> = responses
        .iter()
        .map(|r| extract_answer(r.text).map(|e| e.answer))
        .collect();
    let n = responses.len().max(1) as f64;
    answers
        .iter()
        .map(|a| match a {
            None => 0.0,
            Some(a) => {
                answers
                    .iter()
                    .flatten()
                    .filter(|b| answers_match(b, a).correct)
                    .count() as f64
                    / n
            }
        })
        .collect()
}

/// Group advantages of `rewards` (consecutive groups of `group_size`): RLOO
/// `n/(n−1)·(r_i − mean)` or GRPO `(r_i − mean)/(unbiased std + 1e-6)`.
pub fn advantages(rewards: &[f64], group_size: usize, kind: AdvantageKind) -> Vec<f64> {
    rewards
        .chunks(group_size)
        .flat_map(|g| {
            let n = g.len() as f64;
            let m = mean(g);
            let std = if g.len() > 1 {
                (g.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            g.iter()
                .map(move |r| match kind {
                    AdvantageKind::Rloo if n > 1.0 => n / (n - 1.0) * (r - m),
                    AdvantageKind::Rloo => 0.0,
                    AdvantageKind::Grpo => (r - m) / (std + 1e-6),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One row of a PPO mini-batch.
#[derive(Debug, Clone)]
pub struct PpoRow {
    /// Prompt and response.
    pub sample: Sample,
    /// `log π_old(y_t)` per response token (the rollout's recompute).
    pub old_log_probs: Vec<f64>,
    /// `log π_ref(y_t)` per response token (with a KL term).
    pub ref_log_probs: Option<Vec<f64>>,
    /// The row's advantage (broadcast to its tokens).
    pub advantage: f64,
}

/// The PPO loss's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoLoss {
    /// ε of the clip.
    pub clip_ratio: f64,
    /// KL coefficient (k3 to the reference).
    pub kl_coef: f64,
    /// Entropy bonus coefficient.
    pub entropy_coef: f64,
    /// Logits are divided by it.
    pub temperature: f64,
    /// Head chunk.
    pub chunk: usize,
    /// Rows per forward/backward.
    pub micro_batch: usize,
}

/// What a PPO mini-batch's loss was made of (token means over the mini-batch).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PpoStats {
    /// The loss.
    pub loss: f64,
    /// The PPO-clip term.
    pub pg_loss: f64,
    /// Mean k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Mean entropy.
    pub entropy: f64,
    /// Share of tokens where the clipped term was active.
    pub clip_fraction: f64,
    /// Mean π/π_old.
    pub ratio_mean: f64,
    /// Response tokens.
    pub tokens: usize,
}

/// Gradients of the PPO-clip loss of one mini-batch: `Σ max(−A·ρ, −A·clip(ρ, 1±ε)) / N +
/// kl_coef · Σ k3 / N − entropy_coef · Σ H / N` over its N response tokens, ρ = π/π_old at
/// `temperature`; micro-batches normalised by the mini-batch's N.
///
/// # Errors
/// [`TrainError::NonFinite`] for a NaN/∞ loss; model errors.
pub fn ppo_grads(
    model: &Qwen2ForCausalLM,
    batch: &[PpoRow],
    loss: &PpoLoss,
    step: usize,
) -> Result<(ParamGrads, PpoStats)> {
    if batch.is_empty() {
        return Err(TrainError::NoData("an empty mini-batch".into()));
    }
    let device = model.device();
    let n_tokens: usize = batch.iter().map(|r| r.sample.response_ids.len()).sum();
    let n = n_tokens as f64;
    let options = HeadOptions {
        chunk: loss.chunk,
        temperature: loss.temperature,
    };
    let (eps, kl_coef, ent_coef) = (loss.clip_ratio, loss.kl_coef, loss.entropy_coef);
    let mut grads = ParamGrads::new();
    let mut stats = PpoStats {
        tokens: n_tokens,
        ..PpoStats::default()
    };
    let mut clipped_tokens = 0usize;
    for micro in batch.chunks(loss.micro_batch.max(1)) {
        let samples: Vec<Sample> = micro.iter().map(|r| r.sample.clone()).collect();
        let r = rows(&samples, &device);
        let positions = r.positions.clone();
        // Per-position constants: old log-probs, −advantages and reference log-probs at the
        // response positions, 0 elsewhere (the mask removes those positions anyway).
        let with_kl = kl_coef > 0.0 && micro.iter().all(|r| r.ref_log_probs.is_some());
        let old_t = at_positions(&r, model, |i, k| micro[i].old_log_probs[k]);
        let adv_t = at_positions(&r, model, |i, _| -micro[i].advantage);
        let ref_t = with_kl.then(|| {
            at_positions(&r, model, |i, k| {
                micro[i].ref_log_probs.as_ref().map_or(0.0, |lp| lp[k])
            })
        });
        let out = checked_grads(model, r, &options, step, move |s: &HeadStats| {
            let ratio = (s.log_probs.clone() - old_t).exp();
            let unclipped = adv_t.clone() * ratio.clone();
            let clipped = adv_t * ratio.clamp(1.0 - eps, 1.0 + eps);
            let mut total = (unclipped.max_pair(clipped) * s.mask.clone()).sum() / n;
            if let Some(ref_t) = ref_t {
                let kl = em_core::k3_kl(s.log_probs.clone(), ref_t) * s.mask.clone();
                total = total + kl.sum() * (kl_coef / n);
            }
            if ent_coef > 0.0 {
                total = total - (s.entropy.clone() * s.mask.clone()).sum() * (ent_coef / n);
            }
            total
        })?;
        stats.loss += out.value;
        for (i, (row, range)) in micro.iter().zip(&positions).enumerate() {
            for (k, t) in range.clone().enumerate() {
                let lp = out.log_probs[i][t];
                let ratio = (lp - row.old_log_probs[k]).exp();
                let a = row.advantage;
                let (unclipped, clipped) = (-a * ratio, -a * ratio.clamp(1.0 - eps, 1.0 + eps));
                stats.pg_loss += unclipped.max(clipped) / n;
                if clipped > unclipped {
                    clipped_tokens += 1;
                }
                stats.ratio_mean += ratio / n;
                stats.entropy += out.entropy[i][t] / n;
                if with_kl && let Some(ref_lp) = &row.ref_log_probs {
                    stats.kl += em_core::reference::k3_kl(lp, ref_lp[k]) / n;
                }
            }
        }
        grads.merge(out.grads);
    }
    stats.clip_fraction = clipped_tokens as f64 / n;
    Ok((grads, stats))
}

enum RlItems {
    Prompts(Vec<Prompt>),
    Replay(Vec<data::ReplayGroup>),
}

impl RlItems {
    fn len(&self) -> usize {
        match self {
            RlItems::Prompts(p) => p.len(),
            RlItems::Replay(g) => g.len(),
        }
    }
}

fn load_rl_items(engine: &Engine, rl: &RlConfig) -> Result<(RlItems, usize)> {
    let run = &engine.run;
    let vocab = engine.config.vocab_size;
    let context = engine.config.max_position_embeddings;
    if let DataSource::Replay { path } = &run.data {
        let mut groups = data::read_replay(path, rl.group_size, vocab)?;
        for (i, g) in groups.iter().enumerate() {
            for r in &g.responses {
                let len = g.prompt_ids.len() + r.len();
                if len > context {
                    return Err(TrainError::TooLong {
                        what: format!("{} group {}", path.display(), i + 1),
                        len,
                        context,
                    });
                }
            }
            if rl.reward == RewardKind::Verifiable && g.answer.is_none() {
                return TrainError::invalid(
                    "rl.reward",
                    "verifiable",
                    format!("{} group {} has no `answer`", path.display(), i + 1),
                );
            }
        }
        if let Some(n) = run.limit {
            groups.truncate(n);
        }
        return Ok((RlItems::Replay(groups), 0));
    }
    let (prompts, skipped) = engine.prompts()?;
    Ok((RlItems::Prompts(prompts), skipped))
}

/// One rollout's groups: prompt, problem, responses and their texts.
struct Group {
    prompt_ids: Vec<u32>,
    problem: Option<Problem>,
    responses: Vec<Vec<u32>>,
    texts: Vec<String>,
}

/// Runs (or resumes) an RL run (`run.rl` set): EM-RL with an entropy reward, or a baseline.
/// `reward` replaces the built-in reward of `run.rl.reward` (which then only names the run).
/// Metrics, checkpoints (at rollout boundaries, named by rollout), validation and resume as
/// [`crate::run_em_ft`].
///
/// # Errors
/// As [`crate::run_em_ft`].
pub fn run_rl(
    run: &RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    reward: Option<Box<dyn Reward>>,
    mut on_event: impl FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<RunSummary> {
    let Some(rl) = run.rl else {
        return TrainError::invalid("rl", "none", "an RL run needs the `rl` settings");
    };
    let mut engine = Engine::open(run, out, resume, device)?;
    let (items, skipped_prompts) = load_rl_items(&engine, &rl)?;
    let mut reward = reward.unwrap_or_else(|| Box::new(BuiltinReward::new(rl.reward)));
    let reference = run.load_reference(device)?;
    engine.start(skipped_prompts, &mut on_event)?;
    let micro = run.micro_batch();
    let mut last_checkpoint = engine.resumed_from.clone().unwrap_or_default();
    while engine.iteration < run.steps {
        let rollout = engine.iteration + 1;
        let started = Instant::now();
        let indices = data::batch_indices(items.len(), run.batch_size, rollout, run.shuffle);
        let groups = collect_groups(&engine, &items, &indices, &rl, rollout)?;
        let rollout_time = started.elapsed().as_secs_f64();
        let score_started = Instant::now();
        let samples: Vec<Sample> = groups
            .iter()
            .flat_map(|g| {
                g.responses.iter().map(|r| Sample {
                    prompt_ids: g.prompt_ids.clone(),
                    response_ids: r.clone(),
                })
            })
            .collect();
        let scored = score_rows(&engine.model, &samples, run.temperature, run.chunk, micro)?;
        let ref_scored = match &reference {
            Some(reference) => Some(score_rows(
                reference,
                &samples,
                run.temperature,
                run.chunk,
                micro,
            )?),
            None => None,
        };
        let mut rewards = Vec::with_capacity(samples.len());
        for (gi, g) in groups.iter().enumerate() {
            let base = gi * rl.group_size;
            let responses: Vec<Response<'_>> = g
                .responses
                .iter()
                .enumerate()
                .map(|(k, ids)| Response {
                    ids,
                    text: &g.texts[k],
                    log_probs: &scored[base + k].0,
                    entropies: &scored[base + k].1,
                })
                .collect();
            let prompt = GroupPrompt {
                ids: &g.prompt_ids,
                problem: g.problem.as_ref(),
            };
            let scores = reward.score_group(&prompt, &responses)?;
            if scores.len() != responses.len() || scores.iter().any(|s| !s.is_finite()) {
                return Err(TrainError::NonFinite {
                    step: engine.step + 1,
                    what: "reward",
                    value: scores
                        .iter()
                        .copied()
                        .find(|s| !s.is_finite())
                        .unwrap_or(f64::NAN),
                });
            }
            rewards.extend(scores);
        }
        let adv = advantages(&rewards, rl.group_size, rl.advantage);
        let reward_mean = mean(&rewards);
        let reward_std = (rewards
            .iter()
            .map(|r| (r - reward_mean).powi(2))
            .sum::<f64>()
            / rewards.len().max(1) as f64)
            .sqrt();
        let nonzero = adv
            .chunks(rl.group_size)
            .filter(|g| g.iter().any(|a| a.abs() > 1e-12))
            .count();
        let rows_all: Vec<PpoRow> = samples
            .into_iter()
            .enumerate()
            .map(|(i, sample)| PpoRow {
                sample,
                old_log_probs: scored[i].0.clone(),
                ref_log_probs: ref_scored.as_ref().map(|r| r[i].0.clone()),
                advantage: adv[i],
            })
            .collect();
        let score_time = score_started.elapsed().as_secs_f64();
        let per_mini = rows_all.len() / rl.mini_batches;
        let loss = PpoLoss {
            clip_ratio: rl.clip_ratio,
            kl_coef: run.kl_coef,
            entropy_coef: rl.entropy_coef,
            temperature: run.temperature,
            chunk: run.chunk,
            micro_batch: micro,
        };
        for (m, mini) in rows_all.chunks(per_mini).enumerate() {
            let t = Instant::now();
            let (grads, stats) = ppo_grads(&engine.model, mini, &loss, engine.step + 1)?;
            let update = engine.apply(&grads)?;
            drop(grads);
            let train_time = t.elapsed().as_secs_f64() + if m == 0 { score_time } else { 0.0 };
            let time = train_time + if m == 0 { rollout_time } else { 0.0 };
            let last = m + 1 == rl.mini_batches;
            let mut line = StepMetrics {
                step: engine.step,
                rollout: Some(rollout),
                loss: Some(stats.loss),
                entropy: Some(stats.entropy),
                response_len: Some(stats.tokens as f64 / mini.len() as f64),
                grad_norm: Some(update.grad_norm),
                lr: Some(update.lr),
                tokens: Some(stats.tokens),
                tokens_per_s: Some(stats.tokens as f64 / time.max(1e-9)),
                time_s: Some(time),
                rollout_time_s: Some(if m == 0 { rollout_time } else { 0.0 }),
                train_time_s: Some(train_time),
                kl: reference.as_ref().map(|_| stats.kl),
                reward_mean: Some(reward_mean),
                reward_std: Some(reward_std),
                advantage_abs_mean: Some(mean(&adv.iter().map(|a| a.abs()).collect::<Vec<_>>())),
                nonzero_advantage_groups: Some(nonzero),
                pg_loss: Some(stats.pg_loss),
                clip_fraction: Some(stats.clip_fraction),
                ratio_mean: Some(stats.ratio_mean),
                ..StepMetrics::default()
            };
            let mut validation: Option<ValidationReport> = None;
            if last {
                engine.iteration = rollout;
                if engine.validates_at(rollout) {
                    validation = engine.validate()?;
                }
            }
            add_validation(&mut line, validation);
            engine.metrics.append(&line)?;
            let flow = on_event(&Event::Metrics(&line));
            if last && engine.checkpoints_at(rollout) {
                last_checkpoint = engine.checkpoint(
                    items.len(),
                    validation.map(|v| v.accuracy),
                    skipped_prompts,
                )?;
                stop(on_event(&Event::Checkpoint(&last_checkpoint)), engine.step)?;
            }
            stop(flow, engine.step)?;
        }
    }
    Ok(RunSummary {
        steps: engine.step,
        last_checkpoint,
        best: checkpoint::best(out)?,
    })
}

/// The groups of rollout `rollout`: sampled from the current policy (an inference view, seeded
/// by the rollout) or replayed.
fn collect_groups(
    engine: &Engine,
    items: &RlItems,
    indices: &[usize],
    rl: &RlConfig,
    rollout: usize,
) -> Result<Vec<Group>> {
    let decode = |ids: &[u32]| -> Result<String> {
        Ok(match &engine.tokenizer {
            Some(t) => t.decode(ids, true)?,
            None => String::new(),
        })
    };
    match items {
        RlItems::Replay(all) => indices
            .iter()
            .map(|&i| {
                let g = &all[i];
                let problem = g.answer.as_ref().map(|answer| Problem {
                    id: format!("replay:{i}"),
                    benchmark: "replay".into(),
                    question: String::new(),
                    task: Task::Math {
                        answer: answer.clone(),
                    },
                });
                if rl.reward == RewardKind::Verifiable || rl.reward == RewardKind::SelfConsistency {
                    engine
                        .tokenizer
                        .as_ref()
                        .ok_or(TrainError::NeedsTokenizer("a reward on the answers' text"))?;
                }
                Ok(Group {
                    prompt_ids: g.prompt_ids.clone(),
                    problem,
                    texts: g
                        .responses
                        .iter()
                        .map(|r| decode(r))
                        .collect::<Result<_>>()?,
                    responses: g.responses.clone(),
                })
            })
            .collect(),
        RlItems::Prompts(all) => {
            let prompts: Vec<Vec<u32>> = indices.iter().map(|&i| all[i].ids.clone()).collect();
            let (_, outputs) = engine.sample(&prompts, rl.group_size, rollout)?;
            let mut outputs = outputs.into_iter();
            indices
                .iter()
                .map(|&i| {
                    let mut responses = Vec::with_capacity(rl.group_size);
                    let mut texts = Vec::with_capacity(rl.group_size);
                    for _ in 0..rl.group_size {
                        let g = outputs.next().ok_or_else(|| {
                            TrainError::NoData("the generator returned fewer rows".into())
                        })?;
                        if g.tokens.is_empty() {
                            return Err(TrainError::NoData(
                                "a response with no tokens (the prompt filled the context)".into(),
                            ));
                        }
                        responses.push(g.tokens);
                        texts.push(g.text);
                    }
                    Ok(Group {
                        prompt_ids: all[i].ids.clone(),
                        problem: all[i].problem.clone(),
                        responses,
                        texts,
                    })
                })
                .collect()
        }
    }
}
