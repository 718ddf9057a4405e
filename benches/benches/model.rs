//! Model forward speed: prefill of 128 tokens and one decode step (KV cache holding 128
//! positions), for the tiny seeded model (`em_models::testing`) on every backend, and for the real
//! Qwen2.5-Coder-0.5B-Instruct on flex with its weights held in f32, f16 and bf16 when
//! `EM_QWEN_DIR` is set (see em-models' real tests).
//!
//! ```text
//! cargo bench -p em-benches --bench model
//! EM_QWEN_DIR=~/.cache/em/models cargo bench -p em-benches --bench model -- real
//! cargo bench -p em-benches --bench model --features wgpu
//! ```
#![allow(missing_docs, clippy::unwrap_used)] // a bench that cannot load its model should stop loudly

use std::time::Duration;

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use em_models::{Logits, Qwen2ForCausalLM};

const PREFILL: usize = 128;

fn ids(len: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let values: Vec<i64> = (0..len)
        .map(|i| ((i * 7919 + 13) % vocab.min(290)) as i64)
        .collect();
    Tensor::from_data(TensorData::new(values, [1, len]), device)
}

fn bench_model(
    c: &mut Criterion,
    group_prefix: &str,
    label: &str,
    model: &Qwen2ForCausalLM,
    device: &Device,
) {
    let vocab = model.vocab_size;
    let mut group = c.benchmark_group(format!("{group_prefix}/prefill"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(
        BenchmarkId::from_parameter(format!("{label}_{PREFILL}")),
        |b| {
            b.iter(|| {
                let mut cache = model.new_cache(1, PREFILL + 1);
                let logits = model
                    .forward(ids(PREFILL, vocab, device), &mut cache, Logits::Last)
                    .unwrap();
                logits.into_data()
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group(format!("{group_prefix}/decode_step"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    let mut cache = model.new_cache(1, PREFILL + 1);
    model
        .forward(ids(PREFILL, vocab, device), &mut cache, Logits::Last)
        .unwrap();
    group.bench_function(
        BenchmarkId::from_parameter(format!("{label}_ctx{PREFILL}")),
        |b| {
            b.iter(|| {
                // the same position each time: truncate back, then decode one token
                cache.truncate(PREFILL).unwrap();
                let logits = model
                    .forward(ids(1, vocab, device), &mut cache, Logits::Last)
                    .unwrap();
                logits.into_data()
            })
        },
    );
    group.finish();
}

fn tiny(c: &mut Criterion) {
    for (name, model) in em_benches::tiny_models() {
        let device = model.device();
        bench_model(c, name, "tiny", &model, &device);
    }
}

fn real(c: &mut Criterion) {
    use burn::tensor::DType;
    for (dtype, label) in [
        (DType::F32, "qwen2.5-0.5b-f32"),
        (DType::F16, "qwen2.5-0.5b-f16"),
        (DType::BF16, "qwen2.5-0.5b-bf16"),
    ] {
        if let Some(model) = em_benches::real_model_in(dtype) {
            let device = model.device();
            bench_model(c, "flex", label, &model, &device);
        }
    }
}

criterion_group!(benches, tiny, real);
criterion_main!(benches);
