//! Whole runs on tiny checkpoints (flex): exact resume after a kill, refused resumes, the run's
//! files, validation and best checkpoint, the KL term, and typed errors for bad input.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use em_models::testing::{Tiny, write_tiny_checkpoint};
use em_train::checkpoint::TrainerState;
use em_train::metrics::MetricsLog;
use em_train::{
    DataSource, Event, OptimizerConfig, RunConfig, StepMetrics, TrainError, ValidationConfig,
    run_em_ft,
};

use crate::common::{
    copy_oracle_model, em_ft_metrics, json, oracle_dir, oracle_samples_run, prompts_file,
};

fn device() -> Device {
    Device::flex()
}

/// A tiny tied checkpoint with tokenizer; its context raised to 2048 so that benchmark prompts
/// fit (RoPE is computed, not stored).
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    write_tiny_checkpoint(Tiny::Qwen2Tied, 7, &model).unwrap();
    let path = model.join("config.json");
    let mut config = json(&path);
    config["max_position_embeddings"] = 2048.into();
    std::fs::write(&path, config.to_string()).unwrap();
    model
}

/// The EM-FT run tests' prompts.
const PROMPTS: [&str; 5] = [
    "What is 12 + 30?",
    "def fibonacci(n):",
    "The capital of France is",
    "Please reason step by step.",
    "The answer is",
];

fn online_run(model: PathBuf, prompts: PathBuf) -> RunConfig {
    RunConfig {
        model,
        data: DataSource::Prompts {
            path: prompts,
            field: "problem".into(),
            answer_field: None,
        },
        chat: false,
        steps: 4,
        batch_size: 2,
        num_samples: 2,
        micro_batch_size: Some(3),
        max_new_tokens: 6,
        shuffle: Some(3),
        optimizer: OptimizerConfig {
            lr: 1e-2,
            ..OptimizerConfig::default()
        },
        // Everything a resume must restore: the schedule's position, the reference for the KL
        // term, pruning of old checkpoints.
        schedule: em_train::Schedule::WarmupCosine {
            warmup_steps: 1,
            min_lr: 1e-3,
        },
        kl_coef: 0.1,
        checkpoint_every: 2,
        keep_last: 1,
        ..RunConfig::default()
    }
}

fn collect(lines: &mut Vec<StepMetrics>) -> impl FnMut(&Event<'_>) -> ControlFlow<()> + '_ {
    |e| {
        if let Event::Metrics(m) = e {
            lines.push((*m).clone());
        }
        ControlFlow::Continue(())
    }
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn killed_run_resumes_to_the_same_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_checkpoint(dir.path());
    let run = online_run(model, prompts_file(dir.path(), &PROMPTS));

    let whole = dir.path().join("whole");
    let mut whole_lines = Vec::new();
    run_em_ft(&run, &whole, false, &device(), collect(&mut whole_lines)).unwrap();
    assert_eq!(whole_lines.len(), 4);

    // Killed after step 3: checkpoint-2 is the newest, and step 3's metrics line was written.
    let killed = dir.path().join("killed");
    let stopped = run_em_ft(&run, &killed, false, &device(), |e| match e {
        Event::Metrics(m) if m.step == 3 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    assert!(matches!(stopped, Err(TrainError::Interrupted { step: 3 })));
    assert!(killed.join("checkpoint-2").is_dir());
    assert!(!killed.join("checkpoint-3").exists());
    assert_eq!(MetricsLog::new(&killed).read().unwrap().len(), 3);
    // A half-written checkpoint from a kill during a save is never resumed from, even with
    // its state file written.
    let partial = killed.join(".checkpoint-4.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::copy(
        killed.join("checkpoint-2/trainer_state.json"),
        partial.join("trainer_state.json"),
    )
    .unwrap();

    // Without --resume the directory is refused; with it the run continues from step 2.
    assert!(matches!(
        run_em_ft(&run, &killed, false, &device(), |_| ControlFlow::Continue(
            ()
        )),
        Err(TrainError::OutputExists { .. })
    ));
    let mut resumed_lines = Vec::new();
    let summary = run_em_ft(&run, &killed, true, &device(), collect(&mut resumed_lines)).unwrap();
    assert_eq!(summary.steps, 4);
    assert_eq!(
        resumed_lines.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![3, 4]
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            read(whole.join("checkpoint-4").join(file))
                == read(killed.join("checkpoint-4").join(file)),
            "{file} differs between the resumed and the uninterrupted run"
        );
    }
    // metrics.jsonl was cut back to step 2 and continued: one line per step, same values.
    let a = MetricsLog::new(&whole).read().unwrap();
    let b = MetricsLog::new(&killed).read().unwrap();
    assert_eq!(
        b.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.loss, x.grad_norm, x.tokens),
            (y.loss, y.grad_norm, y.tokens)
        );
    }
    let state: TrainerState = em_train::checkpoint::read_json(
        &killed
            .join("checkpoint-4")
            .join(em_train::checkpoint::TRAINER_STATE_FILE),
    )
    .unwrap();
    assert_eq!(
        (state.step, state.data_epoch, state.data_position),
        (4, 1, 3)
    );
    // The checkpoint is a loadable HF checkpoint with the tokenizer copied.
    let loaded = em_models::from_pretrained(
        killed.join("checkpoint-4"),
        &device(),
        &em_models::LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.config.vocab_size, 320);

    // Resuming with another hyperparameter names it.
    let mut other = run.clone();
    other.optimizer.lr = 2e-2;
    match run_em_ft(&other, &killed, true, &device(), |_| {
        ControlFlow::Continue(())
    }) {
        Err(TrainError::ResumeMismatch { difference, .. }) => {
            assert_eq!(difference.field, "optimizer.lr")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn em_ft_lowers_the_entropy_of_fixed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = oracle_samples_run(copy_oracle_model(dir.path()), 12, 6);
    let lines = em_ft_metrics(&run, &dir.path().join("out"));
    let first = lines[0].entropy.unwrap();
    let last = lines[11].entropy.unwrap();
    assert!(last < 0.8 * first, "entropy {first} → {last}");
    // With one batch of all samples, the loss is the batch's mean token entropy.
    assert!((lines[0].loss.unwrap() - first).abs() < 1e-6);
}

#[test]
fn kl_term_is_zero_at_the_start_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig {
        kl_coef: 0.5,
        ..oracle_samples_run(copy_oracle_model(dir.path()), 3, 6)
    };
    let lines = em_ft_metrics(&run, &dir.path().join("out"));
    // Step 1: the model is the reference, k3 = 0 and the loss is the entropy alone.
    assert!(lines[0].kl.unwrap().abs() < 1e-6, "{:?}", lines[0].kl);
    assert!((lines[0].loss.unwrap() - lines[0].entropy.unwrap()).abs() < 1e-6);
    assert!(lines[2].kl.unwrap() > 1e-6);
    let expected = lines[2].entropy.unwrap() + 0.5 * lines[2].kl.unwrap();
    assert!((lines[2].loss.unwrap() - expected).abs() < 1e-5 * expected);
}

#[test]
fn validation_best_checkpoint_pruning_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_checkpoint(dir.path());
    let out = dir.path().join("out");
    let run = RunConfig {
        validation: Some(ValidationConfig {
            bench: "math500".into(),
            limit: 2,
            every: 1,
            max_new_tokens: 4,
            batch_size: 2,
        }),
        steps: 3,
        checkpoint_every: 1,
        keep_last: 1,
        ..online_run(model, prompts_file(dir.path(), &PROMPTS))
    };
    let mut lines = Vec::new();
    run_em_ft(&run, &out, false, &device(), collect(&mut lines)).unwrap();
    assert_eq!(lines[0].step, 0);
    assert!(lines[0].loss.is_none(), "step 0 only validates");
    for m in &lines {
        let accuracy = m.val_accuracy.unwrap();
        assert!((0.0..=1.0).contains(&accuracy));
        assert!(m.val_entropy.unwrap() > 0.0);
    }
    let best: em_train::checkpoint::Best =
        em_train::checkpoint::read_json(&out.join("best.json")).unwrap();
    let kept: Vec<usize> = em_train::checkpoint::list(&out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    // keep_last 1: the newest, plus the best.
    let mut expected = vec![best.step, 3];
    expected.dedup();
    expected.sort();
    assert_eq!(kept, expected);
    let svg = std::fs::read_to_string(out.join("metrics.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    for title in ["loss", "entropy", "grad norm", "validation accuracy"] {
        assert!(svg.contains(title), "plot lacks {title}");
    }
}

#[test]
fn bad_input_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // NaN in a weight: the loss is NaN, the step is refused, no checkpoint is written.
    let model = copy_oracle_model(dir.path());
    let path = model.join("model.safetensors");
    let mut bytes = read(path.clone());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header["model.norm.weight"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    bytes[8 + n + start..8 + n + start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let run = RunConfig {
        model: model.clone(),
        data: DataSource::Samples {
            path: oracle_dir().join("samples.jsonl"),
        },
        steps: 1,
        batch_size: 2,
        ..RunConfig::default()
    };
    let out = dir.path().join("nan");
    match run_em_ft(&run, &out, false, &device(), |_| ControlFlow::Continue(())) {
        Err(TrainError::NonFinite { step: 1, what, .. }) => assert_eq!(what, "loss"),
        other => panic!("{other:?}"),
    }
    assert!(em_train::checkpoint::list(&out).unwrap().is_empty());

    // A sample longer than the context (64).
    let model = copy_oracle_model(&dir.path().join("b"));
    let long = dir.path().join("long.jsonl");
    let ids: Vec<u32> = (3..70).collect();
    std::fs::write(
        &long,
        serde_json::json!({"prompt_ids": ids, "response_ids": [5]}).to_string(),
    )
    .unwrap();
    let run = RunConfig {
        model: model.clone(),
        data: DataSource::Samples { path: long },
        ..run
    };
    assert!(matches!(
        run_em_ft(&run, &dir.path().join("long"), false, &device(), |_| {
            ControlFlow::Continue(())
        }),
        Err(TrainError::TooLong {
            len: 68,
            context: 64,
            ..
        })
    ));
    // Online without a tokenizer, and an invalid config before any work.
    let run = RunConfig {
        data: DataSource::Prompts {
            path: prompts_file(dir.path(), &PROMPTS),
            field: "problem".into(),
            answer_field: None,
        },
        ..run
    };
    assert!(matches!(
        run_em_ft(&run, &dir.path().join("notok"), false, &device(), |_| {
            ControlFlow::Continue(())
        }),
        Err(TrainError::NeedsTokenizer(_))
    ));
    let run = RunConfig {
        batch_size: 0,
        ..run
    };
    assert!(matches!(
        run_em_ft(&run, &dir.path().join("bad"), false, &device(), |_| {
            ControlFlow::Continue(())
        }),
        Err(TrainError::InvalidConfig { .. })
    ));
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn best_is_the_highest_accuracy_and_the_earliest_on_a_tie() {
    let dir = tempfile::tempdir().unwrap();
    let state = |step, val_accuracy| TrainerState {
        step,
        data_epoch: 0,
        data_position: 0,
        shuffle_seed: None,
        rollout_seed: 0,
        next_lr: 0.0,
        val_accuracy,
        skipped_prompts: 0,
        rollout: None,
    };
    let best = |s| {
        em_train::checkpoint::update_best(dir.path(), &s)
            .unwrap()
            .unwrap()
    };
    assert_eq!(best(state(1, Some(0.25))).step, 1);
    assert_eq!(best(state(2, Some(0.5))).step, 2);
    assert_eq!(best(state(3, Some(0.5))).step, 2, "a tie keeps the earlier");
    assert_eq!(best(state(4, None)).step, 2, "no validation, no change");
    assert_eq!(best(state(5, Some(0.25))).step, 2);
    assert_eq!(best(state(6, Some(0.75))).checkpoint, "checkpoint-6");
}

#[test]
fn a_bf16_reference_gives_the_kl_of_the_rounded_initial_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig {
        kl_coef: 0.5,
        reference_dtype: "bf16".into(),
        ..oracle_samples_run(copy_oracle_model(dir.path()), 1, 6)
    };
    let lines = em_ft_metrics(&run, &dir.path().join("out"));
    // The f32 policy against its own bf16 rounding: small but not zero.
    let kl = lines[0].kl.unwrap();
    assert!(kl > 0.0 && kl < 1e-2, "{kl}");
}
