//! The training step's hot paths, each against its baseline in the same run: the chunked head
//! and loss (`head_loss`, only `chunk × vocab` logits at a time) against the full-logits slow
//! twin (em-core's `token_entropy` over `[batch, seq, vocab]` under autodiff), and the
//! layer-checkpointed step (`loss_and_grads`) against one plain backward (`forward_hidden` +
//! `head_loss`), and em-train's AdamW step (global clipping, moments keyed by name) beside the
//! gradient computation it follows, so the ratio is the optimiser's share of a step. The tiny seeded model (`em_models::testing`) on every backend; the real Qwen2.5-Coder-0.5B (f32, batch 1,
//! 128 tokens) on flex when `EM_QWEN_DIR` is set.
//!
//! ```text
//! cargo bench -p em-benches --bench train
//! EM_QWEN_DIR=~/.cache/em/models cargo bench -p em-benches --bench train -- real
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // a bench that cannot load its model should stop loudly

use std::time::Duration;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use em_models::{BatchLayout, HeadOptions, HeadStats, Qwen2ForCausalLM};

struct Batch {
    ids: Tensor<2, Int>,
    layout: BatchLayout,
    next: Vec<Vec<u32>>,
    positions: Vec<std::ops::Range<usize>>,
}

fn batch(rows: usize, seq: usize, vocab: usize, device: &Device) -> Batch {
    let tokens: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..seq)
                .map(|i| ((i * 7919 + r * 104_729 + 13) % vocab.min(150_000)) as u32)
                .collect()
        })
        .collect();
    let next = tokens
        .iter()
        .map(|t| t.iter().skip(1).copied().chain([0]).collect())
        .collect();
    let flat: Vec<i64> = tokens.iter().flatten().map(|&t| i64::from(t)).collect();
    Batch {
        ids: Tensor::from_data(TensorData::new(flat, [rows, seq]), device),
        layout: BatchLayout::right_padded(&vec![seq; rows]),
        next,
        positions: vec![0..seq - 1; rows],
    }
}

fn mean_entropy(s: &HeadStats) -> Tensor<1> {
    (s.entropy.clone() * s.mask.clone()).sum() / s.mask.clone().sum()
}

fn bench_train(
    c: &mut Criterion,
    prefix: &str,
    label: &str,
    model: &Qwen2ForCausalLM,
    rows: usize,
    seq: usize,
) {
    let device = model.device();
    let b = batch(rows, seq, model.vocab_size, &device);
    let options = HeadOptions::default();
    let mut group = c.benchmark_group(format!("{prefix}/train_step"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let id = |what: &str| BenchmarkId::new(what, format!("{label}_{rows}x{seq}"));
    group.bench_function(id("chunked_head"), |bench| {
        bench.iter(|| {
            let hidden = model.forward_hidden(b.ids.clone(), &b.layout).unwrap();
            model
                .head_loss(hidden, &b.next, &b.positions, &options, mean_entropy)
                .unwrap()
                .value
        })
    });
    group.bench_function(id("full_logits_twin"), |bench| {
        bench.iter(|| {
            let hidden = model.forward_hidden(b.ids.clone(), &b.layout).unwrap();
            let loss = em_core::token_entropy(model.head_logits(hidden)).mean();
            loss.backward();
        })
    });
    let checkpointed_step = || {
        model
            .loss_and_grads(
                b.ids.clone(),
                &b.layout,
                &b.next,
                &b.positions,
                &options,
                mean_entropy,
            )
            .unwrap()
    };
    group.bench_function(id("layer_checkpointed"), |bench| {
        bench.iter(|| checkpointed_step().value)
    });
    // The optimiser step on the gradients of one layer-checkpointed step: its cost relative to
    // `layer_checkpointed` above is the optimiser's share of a training step.
    let grads = checkpointed_step().grads;
    let config = em_train::OptimizerConfig::default();
    group.bench_function(id("adamw_step"), |bench| {
        bench.iter_batched(
            || (em_train::AdamW::new(config), model.clone()),
            |(mut adamw, m)| adamw.step(m, &grads, 1e-5, 1).unwrap().1.grad_norm,
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn tiny(c: &mut Criterion) {
    for (name, model) in em_benches::tiny_models() {
        let model = model.train();
        bench_train(c, name, "tiny", &model, 2, 32);
    }
}

fn real(c: &mut Criterion) {
    if let Some(model) = em_benches::real_model() {
        let model = model.train();
        bench_train(c, "flex", "qwen2.5-0.5b-f32", &model, 1, 128);
    }
}

criterion_group!(benches, tiny, real);
criterion_main!(benches);
