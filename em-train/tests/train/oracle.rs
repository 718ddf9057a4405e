//! One and two EM-FT steps on a tiny tied checkpoint with fixed samples of different lengths in
//! one batch, clipping active and weight decay on, against the JAX oracle
//! (`tests/fixtures/emft_oracle.py`, float64): loss, gradient norm, updated weights and Adam
//! moments to 1e-4 relative. The whole batch at once, one row per micro-batch, and the
//! sequence-mean reduction.

use std::ops::ControlFlow;

use em_train::{DataSource, Event, OptimizerConfig, Reduction, RunConfig, StepMetrics, run_em_ft};

use crate::backend_tests;
use crate::common::{
    TestBackend, assert_weights_match, copy_oracle_model, json, oracle_dir, rel, tensors,
};

const TOLERANCE: f64 = 1e-4;

fn run_scenario(backend: &TestBackend, scenario: &str, micro: Option<usize>) {
    let golden = json(&oracle_dir().join("golden.json"));
    let hyper = &golden["hyper"];
    let f = |k: &str| hyper[k].as_f64().unwrap();
    let expected = golden[scenario]["steps"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = copy_oracle_model(dir.path());
    let out = dir.path().join("run");
    let run = RunConfig {
        model: model.clone(),
        data: DataSource::Samples {
            path: oracle_dir().join("samples.jsonl"),
        },
        steps: expected.len(),
        batch_size: hyper["batch_size"].as_u64().unwrap() as usize,
        micro_batch_size: micro,
        optimizer: OptimizerConfig {
            lr: f("lr"),
            weight_decay: f("weight_decay"),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(f("max_grad_norm")),
        },
        reduction: match scenario {
            "token_mean" => Reduction::TokenMean,
            _ => Reduction::SequenceMean,
        },
        // A small head chunk, so that the chunked path is what is compared.
        chunk: 5,
        checkpoint_every: 1,
        keep_last: 10,
        ..RunConfig::default()
    };
    let mut lines: Vec<StepMetrics> = Vec::new();
    run_em_ft(&run, &out, false, &backend.device, |e| {
        if let Event::Metrics(m) = e {
            lines.push((*m).clone());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let what = format!("{} {scenario} micro {micro:?}", backend.name);
    for (line, want) in lines.iter().zip(expected) {
        let step = want["step"].as_u64().unwrap() as usize;
        assert_eq!(line.step, step);
        let close = |got: f64, key: &str| {
            let w = want[key].as_f64().unwrap();
            assert!(
                (got - w).abs() <= TOLERANCE * w.abs(),
                "{what} step {step} {key}: {got} vs oracle {w}"
            );
        };
        close(line.loss.unwrap(), "loss");
        close(line.grad_norm.unwrap(), "grad_norm");
        close(line.entropy.unwrap(), "entropy");
        assert_eq!(
            line.tokens.unwrap() as u64,
            want["tokens"].as_u64().unwrap()
        );
        assert!(
            line.grad_norm.unwrap() > f("max_grad_norm"),
            "{what}: clipping must be active"
        );
        assert_weights_match(
            &out.join(format!("checkpoint-{step}")),
            &oracle_dir().join(format!("{scenario}_step{step}.safetensors")),
            &model.join("model.safetensors"),
            TOLERANCE,
            &format!("{what} step {step}"),
        );
    }
    assert_eq!(lines.len(), expected.len());
    if scenario == "token_mean" {
        let moments = tensors(&out.join("checkpoint-2/optimizer.safetensors"));
        let golden = tensors(&oracle_dir().join("token_mean_step2_moments.safetensors"));
        let golden: std::collections::HashMap<_, _> = golden.into_iter().collect();
        assert_eq!(moments.len(), golden.len(), "{what}: moment tensors");
        for (name, a) in &moments {
            let r = rel(a, &golden[name]);
            assert!(r <= 1e-3, "{what} {name}: rel {r:e}");
        }
    }
}

fn token_mean_two_steps_match_oracle(backend: &TestBackend) {
    run_scenario(backend, "token_mean", None);
}

// Every backend runs the model, head and optimiser arithmetic of the first; micro-batching and
// the reduction are backend-independent bookkeeping, checked on flex (wgpu on lavapipe compiles
// a shader per new shape, ~1 min per scenario here).
backend_tests!(token_mean_two_steps_match_oracle);

#[cfg(feature = "flex")]
#[test]
fn micro_batches_give_the_whole_batch_update() {
    run_scenario(&crate::common::flex(), "token_mean", Some(1));
}

#[cfg(feature = "flex")]
#[test]
fn sequence_mean_step_matches_oracle() {
    run_scenario(&crate::common::flex(), "sequence_mean", Some(2));
}
