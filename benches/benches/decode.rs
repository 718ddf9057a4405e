//! One full decoding step — model forward of one token per row (KV cache at 128 positions), the
//! logits processors, the model's entropy (unless a processor handed it over), the draw and the
//! read-back, as the `Generator` does it — with plain sampling vs EM-INF (3 and 15 Adam steps)
//! vs adaptive temperature, at batch 1 and 8 (the real model also with f16 and bf16 weights:
//! plain step and EM-INF 3 steps); plus the sampler alone over Qwen2.5's vocabulary (greedy,
//! temperature, top-k, top-p).
//!
//! ```text
//! cargo bench -p em-benches --bench decode                                   # tiny model + sampler
//! EM_QWEN_DIR=~/.cache/em/models cargo bench -p em-benches --bench decode -- real   # real 0.5B, flex
//! cargo bench -p em-benches --bench decode --features wgpu
//! ```
//!
//! Groups: `{backend}/decode_step/{model}_b{batch}_{variant}` and `{backend}/sample/{variant}_r{rows}`.
#![allow(missing_docs, clippy::unwrap_used)] // a bench that cannot load its model should stop loudly

use std::time::Duration;

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use em_infer::{
    AdaptiveTemperatureProcessor, EmInfConfig, EmInfProcessor, LogitsProcessor, ProcessorChain,
    Sampler, Sampling, StepContext, process_for_draw,
};
use em_models::{CausalLm, Logits, Qwen2ForCausalLM};

const CONTEXT: usize = 128;

fn ids(batch: usize, len: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let values: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 7919 + 13) % vocab.min(290)) as i64)
        .collect();
    Tensor::from_data(TensorData::new(values, [batch, len]), device)
}

fn variants() -> Vec<(&'static str, Box<dyn LogitsProcessor>)> {
    let em_inf = |n_grad_steps| EmInfConfig {
        n_grad_steps,
        // 0 keeps every row above the threshold, so the bench always pays for every step.
        threshold: 0.0,
        ..EmInfConfig::default()
    };
    vec![
        ("plain", Box::new(ProcessorChain::new())),
        ("em_inf3", Box::new(EmInfProcessor::new(em_inf(3)).unwrap())),
        (
            "em_inf15",
            Box::new(EmInfProcessor::new(em_inf(15)).unwrap()),
        ),
        (
            "adaptive_temperature",
            Box::new(AdaptiveTemperatureProcessor::new(Default::default()).unwrap()),
        ),
    ]
}

/// The decode step of `model` at batch 1 and 8 with each of [`variants`] named in `variants_kept`
/// (all of them when it is empty).
fn bench_decode(
    c: &mut Criterion,
    backend: &str,
    label: &str,
    model: &Qwen2ForCausalLM,
    variants_kept: &[&str],
) {
    let device = model.device();
    let vocab = model.vocab_size();
    let mut group = c.benchmark_group(format!("{backend}/decode_step"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    for batch in [1usize, 8] {
        let mut cache = model.new_cache(batch, CONTEXT + 1);
        model
            .forward(
                ids(batch, CONTEXT, vocab, &device),
                &mut cache,
                Logits::Last,
            )
            .unwrap();
        let rows: Vec<usize> = (0..batch).collect();
        let histories: Vec<&[u32]> = vec![&[]; batch];
        for (name, mut processor) in variants()
            .into_iter()
            .filter(|(name, _)| variants_kept.is_empty() || variants_kept.contains(name))
        {
            // The paper's evaluation temperature.
            let mut sampler = Sampler::new(Sampling::with_temperature(0.1), 42, batch).unwrap();
            group.bench_function(
                BenchmarkId::from_parameter(format!("{label}_b{batch}_{name}")),
                |b| {
                    b.iter(|| {
                        cache.truncate(CONTEXT).unwrap();
                        let logits = model
                            .forward(ids(batch, 1, vocab, &device), &mut cache, Logits::Last)
                            .unwrap()
                            .reshape([batch, vocab]);
                        let ctx = StepContext::new(0, &rows, &histories);
                        // As the generator: the processors (the logits handed over to one
                        // that reports their entropy), then the draw and its one read-back.
                        let (out, model_logits) =
                            process_for_draw(processor.as_mut(), logits, &ctx).unwrap();
                        sampler.draw_step(model_logits, out).unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

fn sampler(c: &mut Criterion) {
    let vocab = 151_936;
    let base = Sampling::with_temperature(0.7);
    for (backend, device) in em_benches::backends() {
        let mut group = c.benchmark_group(format!("{backend}/sample"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        for rows in [1usize, 8] {
            let logits = em_benches::random_logits(rows, vocab, 7, &device);
            for (name, sampling) in [
                ("greedy", Sampling::greedy()),
                ("temperature", base),
                ("top_k50", Sampling { top_k: 50, ..base }),
                ("top_p0.9", Sampling { top_p: 0.9, ..base }),
                (
                    "top_k20_top_p0.8_rep1.05",
                    Sampling {
                        top_k: 20,
                        top_p: 0.8,
                        repetition_penalty: 1.05,
                        ..base
                    },
                ),
            ] {
                let mut s = Sampler::new(sampling, 1, rows).unwrap();
                s.observe_prompts(&vec![vec![1, 2, 3]; rows], vocab, &device)
                    .unwrap();
                group.bench_function(
                    BenchmarkId::from_parameter(format!("{name}_r{rows}")),
                    |b| b.iter(|| s.sample(logits.clone()).unwrap()),
                );
            }
        }
        group.finish();
    }
}

fn tiny(c: &mut Criterion) {
    for (name, model) in em_benches::tiny_models() {
        bench_decode(c, name, "tiny", &model, &[]);
    }
}

fn real(c: &mut Criterion) {
    if let Some(model) = em_benches::real_model() {
        bench_decode(c, "flex", "qwen2.5-0.5b-f32", &model, &[]);
    }
    // 16-bit weights (issue #14's goals): the plain step, and EM-INF's 3 steps on top of it
    // (the goal: at most 5% of the plain step).
    for (dtype, label) in [
        (burn::tensor::DType::F16, "qwen2.5-0.5b-f16"),
        (burn::tensor::DType::BF16, "qwen2.5-0.5b-bf16"),
    ] {
        if let Some(model) = em_benches::real_model_in(dtype) {
            bench_decode(c, "flex", label, &model, &["plain", "em_inf3"]);
        }
    }
}

criterion_group!(benches, tiny, sampler, real);
criterion_main!(benches);
