//! EM-RL and the baselines: hand-computed advantages, PPO-clip on both sides of the clip,
//! reward reductions and self-consistency, the recompute forward against the generator's own
//! log-probs, replay-file errors, a smoke run and exact resume (flex).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use em_models::testing::{Tiny, tiny_pretrained, write_tiny_checkpoint};
use em_train::data::{Sample, read_replay};
use em_train::rl::{PpoLoss, PpoRow, ppo_grads, score_rows, self_consistency};
use em_train::{
    AdvantageKind, BuiltinReward, DataSource, Event, GroupPrompt, OptimizerConfig, Response,
    Reward, RewardKind, RlConfig, RunConfig, StepMetrics, TrainError, advantages, run_rl,
};

use crate::common::{prompts_file, write_jsonl};

fn device() -> Device {
    Device::flex()
}

#[test]
fn advantages_hand_computed() {
    let rloo = advantages(&[1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3, AdvantageKind::Rloo);
    assert_eq!(rloo, vec![-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]);
    let grpo = advantages(&[1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3, AdvantageKind::Grpo);
    let s = 1.0 / (1.0 + 1e-6); // unbiased std of (1, 2, 3) is 1
    for (a, b) in grpo.iter().zip([-s, 0.0, s, 0.0, 0.0, 0.0]) {
        assert!((a - b).abs() < 1e-15, "{grpo:?}");
    }
    // Groups of 2: RLOO is r_i − r_j.
    assert_eq!(
        advantages(&[0.25, 1.0], 2, AdvantageKind::Rloo),
        vec![-0.75, 0.75]
    );
}

#[test]
fn rewards_reduce_as_documented() {
    let (lp, h) = (vec![-1.0, -3.0], vec![0.5, 1.5]);
    let r = Response {
        ids: &[1, 2],
        text: "",
        log_probs: &lp,
        entropies: &h,
    };
    let prompt = GroupPrompt {
        ids: &[1],
        problem: None,
    };
    let score = |kind| BuiltinReward::new(kind).score_group(&prompt, &[r]).unwrap()[0];
    assert_eq!(score(RewardKind::Token), -1.0);
    assert_eq!(score(RewardKind::TokenSum), -2.0);
    assert_eq!(score(RewardKind::Sequence), -2.0);
    assert_eq!(score(RewardKind::SequenceSum), -4.0);
    assert!(matches!(
        BuiltinReward::new(RewardKind::Verifiable).score_group(&prompt, &[r]),
        Err(TrainError::InvalidConfig { .. })
    ));
    // Verifiable against a label; self-consistency without one.
    let problem = em_grade::Problem {
        id: "p".into(),
        benchmark: "t".into(),
        question: "1 + 1?".into(),
        task: em_grade::Task::Math { answer: "2".into() },
    };
    let texts = [
        "so \\boxed{2}",
        "it is \\boxed{2.0}",
        "\\boxed{3}",
        "no idea",
    ];
    let responses: Vec<Response<'_>> = texts
        .iter()
        .map(|t| Response {
            ids: &[1],
            text: t,
            log_probs: &lp,
            entropies: &h,
        })
        .collect();
    let with_label = GroupPrompt {
        ids: &[1],
        problem: Some(&problem),
    };
    let v = BuiltinReward::new(RewardKind::Verifiable)
        .score_group(&with_label, &responses)
        .unwrap();
    assert_eq!(v, vec![1.0, 1.0, 0.0, 0.0]);
    assert_eq!(self_consistency(&responses), vec![0.5, 0.5, 0.25, 0.0]);
}

fn oracle_model() -> em_models::Qwen2ForCausalLM {
    use burn::module::Module;
    em_models::Qwen2ForCausalLM::from_dir(
        crate::common::oracle_dir(),
        &device(),
        &em_models::LoadOptions::default(),
    )
    .unwrap()
    .train()
}

fn samples() -> Vec<Sample> {
    vec![
        Sample {
            prompt_ids: vec![5, 6, 7],
            response_ids: vec![8, 9, 10, 11],
        },
        Sample {
            prompt_ids: vec![12, 13],
            response_ids: vec![14, 15],
        },
    ]
}

/// ρ = e^{±0.5} lies outside [0.8, 1.2]: for each sign of A the active term is known in closed
/// form, and where the clipped term is active the policy gradient is exactly zero.
#[test]
fn ppo_clip_on_both_sides_of_the_clip() {
    let model = oracle_model();
    let t = 0.8;
    let scored = score_rows(&model, &samples(), t, 4, 2).unwrap();
    let loss = PpoLoss {
        clip_ratio: 0.2,
        kl_coef: 0.0,
        entropy_coef: 0.0,
        temperature: t,
        chunk: 4,
        micro_batch: 1,
    };
    let rows = |shift: f64, advantage: f64| -> Vec<PpoRow> {
        samples()
            .into_iter()
            .zip(&scored)
            .map(|(sample, (lp, _))| PpoRow {
                sample,
                old_log_probs: lp.iter().map(|l| l - shift).collect(),
                ref_log_probs: None,
                advantage,
            })
            .collect()
    };
    let (up, down) = (0.5f64.exp(), (-0.5f64).exp());
    // (shift, A) → (expected pg loss per token, clipped active)
    for (shift, a, pg, clipped) in [
        (0.5, 1.0, -1.2, true),    // ρ = 1.65, A > 0: min(ρ, 1.2)·A
        (0.5, -1.0, up, false),    // ρ = 1.65, A < 0: the unclipped term
        (-0.5, 1.0, -down, false), // ρ = 0.61, A > 0: the unclipped term
        (-0.5, -1.0, 0.8, true),   // ρ = 0.61, A < 0: max(ρ, 0.8)·|A|
    ] {
        let (grads, stats) = ppo_grads(&model, &rows(shift, a), &loss, 1).unwrap();
        assert!((stats.pg_loss - pg).abs() < 1e-5, "{shift} {a}: {stats:?}");
        assert!((stats.loss - pg).abs() < 1e-5, "{shift} {a}: {stats:?}");
        assert_eq!(stats.clip_fraction, if clipped { 1.0 } else { 0.0 });
        let norm = em_train::AdamW::grad_norm(&grads.named(&model)).unwrap();
        if clipped {
            assert_eq!(norm, 0.0, "a clipped token has no policy gradient");
        } else {
            assert!(norm > 1e-6);
        }
    }
}

/// At the same weights the trainer's recompute of the sampled tokens' log-probs equals the
/// generator's own (no rollout/trainer mismatch), at temperature 1 and below.
#[test]
fn recomputed_log_probs_equal_the_generators() {
    use burn::module::Module;
    let tiny = tiny_pretrained(Tiny::Qwen2Tied, &device(), 5).unwrap();
    let model = tiny.pretrained.model.clone();
    let tok = &tiny.pretrained.tokenizer;
    let prompts = vec![
        tok.encode("What is 12 + 30?", false).unwrap(),
        tok.encode("def f", false).unwrap(),
    ];
    for temperature in [1.0, 0.7] {
        let config = em_infer::GenerateConfig {
            max_new_tokens: 12,
            sampling: em_infer::Sampling::with_temperature(temperature),
            seed: 3,
            ..Default::default()
        };
        let out = em_infer::Generator::new(&model, tok)
            .generate(
                &prompts,
                &config,
                &mut em_infer::ProcessorChain::new(),
                |_| {},
            )
            .unwrap();
        let samples: Vec<Sample> = prompts
            .iter()
            .zip(&out)
            .map(|(p, g)| Sample {
                prompt_ids: p.clone(),
                response_ids: g.tokens.clone(),
            })
            .collect();
        let scored = score_rows(&model.clone().train(), &samples, temperature, 5, 2).unwrap();
        for (g, (lp, _)) in out.iter().zip(&scored) {
            assert_eq!(g.log_probs.len(), lp.len());
            for (a, b) in g.log_probs.iter().zip(lp) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "T {temperature}: generator {a}, recompute {b}"
                );
            }
        }
    }
}

#[test]
fn replay_groups_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let line = |p: &[u32], r: &[u32]| serde_json::json!({"prompt_ids": p, "response_ids": r});
    let ok = write_jsonl(
        dir.path(),
        "ok.jsonl",
        &[
            line(&[1, 2], &[3]),
            line(&[1, 2], &[4, 5]),
            line(&[6], &[7]),
            line(&[6], &[8]),
        ],
    );
    let groups = read_replay(&ok, 2, 10).unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].responses, vec![vec![3], vec![4, 5]]);
    let mixed = write_jsonl(
        dir.path(),
        "mixed.jsonl",
        &[line(&[1, 2], &[3]), line(&[1, 9], &[4])],
    );
    assert!(matches!(
        read_replay(&mixed, 2, 10),
        Err(TrainError::Data { line: 2, .. })
    ));
    let short = write_jsonl(
        dir.path(),
        "short.jsonl",
        &[line(&[1], &[3]), line(&[1], &[4]), line(&[5], &[6])],
    );
    assert!(matches!(
        read_replay(&short, 2, 10),
        Err(TrainError::Data { line: 3, .. })
    ));
}

fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    write_tiny_checkpoint(Tiny::Qwen2Tied, 11, &model).unwrap();
    model
}

fn rl_run(model: PathBuf, prompts: PathBuf) -> RunConfig {
    RunConfig {
        model,
        data: DataSource::Prompts {
            path: prompts,
            field: "problem".into(),
            answer_field: None,
        },
        chat: false,
        steps: 20,
        batch_size: 2,
        max_new_tokens: 8,
        kl_coef: 0.01,
        optimizer: OptimizerConfig {
            lr: 1e-2,
            ..OptimizerConfig::default()
        },
        rl: Some(RlConfig {
            reward: RewardKind::Token,
            advantage: AdvantageKind::Rloo,
            group_size: 4,
            mini_batches: 2,
            ..RlConfig::default()
        }),
        ..RunConfig::default()
    }
}

/// The RL tests' prompts.
const PROMPTS: [&str; 3] = ["What is 12 + 30?", "def fibonacci(n):", "The answer is"];

#[test]
fn em_rl_token_raises_the_reward_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let run = rl_run(
        tiny_checkpoint(dir.path()),
        prompts_file(dir.path(), &PROMPTS),
    );
    let mut lines: Vec<StepMetrics> = Vec::new();
    run_rl(&run, &dir.path().join("out"), false, &device(), None, |e| {
        if let Event::Metrics(m) = e {
            lines.push((*m).clone());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(lines.len(), 40, "20 rollouts × 2 mini-batches");
    assert_eq!(lines[39].step, 40);
    assert_eq!(lines[39].rollout, Some(20));
    for m in &lines {
        for v in [m.loss, m.grad_norm, m.reward_mean, m.kl, m.ratio_mean] {
            assert!(v.unwrap().is_finite(), "{m:?}");
        }
    }
    let reward = |r: std::ops::Range<usize>| {
        let v: Vec<f64> = lines[r]
            .iter()
            .step_by(2)
            .map(|m| m.reward_mean.unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (first, last) = (reward(0..10), reward(30..40));
    assert!(last > first + 0.1, "mean reward {first} → {last}");
    // The first mini-batch of a rollout is on-policy: ratio 1 and no KL yet at rollout 1.
    assert!((lines[0].ratio_mean.unwrap() - 1.0).abs() < 1e-6);
    assert!(lines[0].kl.unwrap().abs() < 1e-6);
    assert!(
        (lines[1].ratio_mean.unwrap() - 1.0).abs() > 1e-6,
        "{:?}",
        lines[1]
    );
}

#[test]
fn killed_rl_run_resumes_to_the_same_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig {
        steps: 3,
        checkpoint_every: 1,
        shuffle: Some(1),
        ..rl_run(
            tiny_checkpoint(dir.path()),
            prompts_file(dir.path(), &PROMPTS),
        )
    };
    let whole = dir.path().join("whole");
    run_rl(&run, &whole, false, &device(), None, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let killed = dir.path().join("killed");
    // Killed during rollout 3, after its first mini-batch.
    let stopped = run_rl(&run, &killed, false, &device(), None, |e| match e {
        Event::Metrics(m) if m.step == 5 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    assert!(matches!(stopped, Err(TrainError::Interrupted { step: 5 })));
    assert!(killed.join("checkpoint-2").is_dir() && !killed.join("checkpoint-3").exists());
    let summary = run_rl(&run, &killed, true, &device(), None, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(summary.steps, 6);
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            std::fs::read(whole.join("checkpoint-3").join(file)).unwrap()
                == std::fs::read(killed.join("checkpoint-3").join(file)).unwrap(),
            "{file}"
        );
    }
    let steps: Vec<usize> = em_train::metrics::MetricsLog::new(&killed)
        .read()
        .unwrap()
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn rl_configs_are_checked() {
    let base = RunConfig {
        model: "m".into(),
        rl: Some(RlConfig::default()),
        ..RunConfig::default()
    };
    base.validate().unwrap();
    let field = |c: RunConfig| match c.validate() {
        Err(TrainError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let with = |f: &dyn Fn(&mut RlConfig)| {
        let mut c = base.clone();
        f(c.rl.as_mut().unwrap());
        c
    };
    assert_eq!(field(with(&|r| r.group_size = 1)), "rl.group_size");
    assert_eq!(field(with(&|r| r.mini_batches = 3)), "rl.mini_batches");
    assert_eq!(field(with(&|r| r.clip_ratio = 0.0)), "rl.clip_ratio");
    assert_eq!(field(with(&|r| r.entropy_coef = -1.0)), "rl.entropy_coef");
    let mut c = base.clone();
    c.data = DataSource::Samples { path: "s".into() };
    assert_eq!(field(c), "data.kind");
    let mut c = with(&|r| r.reward = RewardKind::Verifiable);
    c.data = DataSource::Prompts {
        path: "p".into(),
        field: "q".into(),
        answer_field: None,
    };
    assert_eq!(field(c), "data.answer_field");
    let mut c = base.clone();
    c.rl = None;
    c.data = DataSource::Replay { path: "r".into() };
    assert_eq!(field(c), "data.kind");
}
