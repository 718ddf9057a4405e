//! A replayed EM-RL / GRPO update against the JAX oracle (`tests/fixtures/rl_oracle.py`,
//! float64): 2 groups of 2 responses of different lengths, temperature 0.8, 2 mini-batches (so
//! the second sees ratio ≠ 1, clipped tokens and KL ≠ 0), k3 KL to the initial model: old
//! log-probs, rewards, advantages, each mini-batch's loss terms and gradient norm, and the
//! weights after the rollout, to 1e-4 relative.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use em_train::data::Sample;
use em_train::rl::score_rows;
use em_train::{
    AdvantageKind, BuiltinReward, DataSource, Event, GroupPrompt, OptimizerConfig, Response,
    Reward, RewardKind, RlConfig, RunConfig, StepMetrics, advantages, run_rl,
};

use crate::backend_tests;
use crate::common::{TestBackend, assert_weights_match, copy_oracle_model, json, rel};

fn rl_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rl")
}

fn close(got: f64, want: &serde_json::Value, what: &str) {
    let w = want.as_f64().unwrap();
    let tol = 1e-4 * w.abs().max(1e-3);
    assert!((got - w).abs() <= tol, "{what}: {got} vs oracle {w}");
}

fn scenario(backend: &TestBackend, name: &str, micro: Option<usize>) {
    let golden = json(&rl_dir().join("golden.json"));
    let g = &golden[name];
    let hyper = &golden["hyper"];
    let t = golden["temperature"].as_f64().unwrap();
    let reward = RewardKind::from_name(g["reward"].as_str().unwrap()).unwrap();
    let advantage = AdvantageKind::from_name(g["advantage"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model_dir = copy_oracle_model(dir.path());
    let what = format!("{} {name} micro {micro:?}", backend.name);

    // The rollout's statistics, rewards and advantages through the public pieces run_rl uses.
    let groups = em_train::data::read_replay(&rl_dir().join("replay.jsonl"), 2, 96).unwrap();
    let samples: Vec<Sample> = groups
        .iter()
        .flat_map(|gr| {
            gr.responses.iter().map(|r| Sample {
                prompt_ids: gr.prompt_ids.clone(),
                response_ids: r.clone(),
            })
        })
        .collect();
    let model = em_models::Qwen2ForCausalLM::from_dir(
        &model_dir,
        &backend.device,
        &em_models::LoadOptions::default(),
    )
    .unwrap();
    let scored = score_rows(&model, &samples, t, 3, 4).unwrap();
    for (i, (lp, _)) in scored.iter().enumerate() {
        let want: Vec<f64> = g["old_log_probs"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(rel(lp, &want) < 1e-5, "{what}: old log-probs of row {i}");
    }
    let mut rewards = Vec::new();
    for (k, gr) in groups.iter().enumerate() {
        let responses: Vec<Response<'_>> = gr
            .responses
            .iter()
            .enumerate()
            .map(|(j, ids)| Response {
                ids,
                text: "",
                log_probs: &scored[2 * k + j].0,
                entropies: &scored[2 * k + j].1,
            })
            .collect();
        let prompt = GroupPrompt {
            ids: &gr.prompt_ids,
            problem: None,
        };
        rewards.extend(
            BuiltinReward::new(reward)
                .score_group(&prompt, &responses)
                .unwrap(),
        );
    }
    for (i, r) in rewards.iter().enumerate() {
        close(*r, &g["rewards"][i], &format!("{what}: reward {i}"));
    }
    for (i, a) in advantages(&rewards, 2, advantage).iter().enumerate() {
        close(*a, &g["advantages"][i], &format!("{what}: advantage {i}"));
    }

    // The update itself, through run_rl.
    let run = RunConfig {
        model: model_dir.clone(),
        data: DataSource::Replay {
            path: rl_dir().join("replay.jsonl"),
        },
        steps: 1,
        batch_size: 2,
        micro_batch_size: micro,
        temperature: t,
        kl_coef: g["kl_coef"].as_f64().unwrap(),
        chunk: 3,
        optimizer: OptimizerConfig {
            lr: hyper["lr"].as_f64().unwrap(),
            weight_decay: hyper["weight_decay"].as_f64().unwrap(),
            max_grad_norm: Some(hyper["max_grad_norm"].as_f64().unwrap()),
            ..OptimizerConfig::default()
        },
        rl: Some(RlConfig {
            reward,
            advantage,
            group_size: 2,
            mini_batches: 2,
            clip_ratio: golden["clip_ratio"].as_f64().unwrap(),
            entropy_coef: g["entropy_coef"].as_f64().unwrap(),
        }),
        ..RunConfig::default()
    };
    let out = dir.path().join("out");
    let mut lines: Vec<StepMetrics> = Vec::new();
    run_rl(&run, &out, false, &backend.device, None, |e| {
        if let Event::Metrics(m) = e {
            lines.push((*m).clone());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(lines.len(), 2);
    for (m, want) in lines.iter().zip(g["mini_batches"].as_array().unwrap()) {
        let s = format!("{what} mini-batch {}", m.step);
        close(m.loss.unwrap(), &want["loss"], &format!("{s} loss"));
        close(
            m.pg_loss.unwrap(),
            &want["pg_loss"],
            &format!("{s} pg_loss"),
        );
        close(
            m.grad_norm.unwrap(),
            &want["grad_norm"],
            &format!("{s} grad_norm"),
        );
        close(
            m.entropy.unwrap(),
            &want["entropy"],
            &format!("{s} entropy"),
        );
        close(
            m.ratio_mean.unwrap(),
            &want["ratio_mean"],
            &format!("{s} ratio_mean"),
        );
        let kl = want["kl"].as_f64().unwrap();
        assert!(
            (m.kl.unwrap() - kl).abs() <= 1e-4 * kl.abs() + 1e-9,
            "{s} kl {:?} vs {kl}",
            m.kl
        );
        assert_eq!(
            m.clip_fraction.unwrap(),
            want["clip_fraction"].as_f64().unwrap(),
            "{s}"
        );
        assert_eq!(m.tokens.unwrap() as u64, want["tokens"].as_u64().unwrap());
    }
    assert_weights_match(
        &out.join("checkpoint-1"),
        &rl_dir().join(format!("{name}_mb2.safetensors")),
        &model_dir.join("model.safetensors"),
        1e-4,
        &what,
    );
}

fn token_rloo_update_matches_oracle(backend: &TestBackend) {
    scenario(backend, "token_rloo", None);
}

backend_tests!(token_rloo_update_matches_oracle);

#[cfg(feature = "flex")]
#[test]
fn sequence_grpo_update_with_entropy_bonus_matches_oracle() {
    scenario(&crate::common::flex(), "sequence_grpo", Some(1));
}
