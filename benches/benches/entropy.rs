//! em-core's hot paths over the real Qwen2.5 vocabulary (151,936), rows {1, 8, 64}.
//!
//! ```text
//! cargo bench -p em-benches --bench entropy                      # flex
//! cargo bench -p em-benches --bench entropy --features wgpu      # flex and wgpu
//! ```
//!
//! Groups are `"{backend}/{op}"`; the parameter is the number of rows. Every timed iteration
//! ends with a device sync. On a GPU-less machine wgpu runs on Mesa's lavapipe, whose shader
//! loops are capped near 65,535 iterations: its numbers describe a software rasteriser, not a GPU.
#![allow(missing_docs)]

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use em_benches::{backends, random_logits};
use em_core::{entropy, entropy_grad, kl_divergence, token_log_probs};

const VOCAB: usize = 151_936;
const ROWS: [usize; 3] = [1, 8, 64];

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

fn bench_entropy(c: &mut Criterion) {
    for (backend, device) in backends() {
        let mut group = c.benchmark_group(format!("{backend}/entropy_forward"));
        for rows in ROWS {
            let logits = random_logits(rows, VOCAB, 1, &device);
            group.throughput(Throughput::Elements((rows * VOCAB) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &logits, |b, logits| {
                b.iter(|| {
                    let h = entropy(logits.clone());
                    sync(&device);
                    h
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{backend}/entropy_forward_backward"));
        for rows in ROWS {
            let logits = random_logits(rows, VOCAB, 2, &device);
            group.throughput(Throughput::Elements((rows * VOCAB) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &logits, |b, logits| {
                b.iter(|| {
                    let x = logits.clone().autodiff().require_grad();
                    let grads = entropy(x.clone()).sum().backward();
                    let g = x.grad(&grads);
                    sync(&device);
                    g
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{backend}/entropy_grad"));
        for rows in ROWS {
            let logits = random_logits(rows, VOCAB, 3, &device);
            group.throughput(Throughput::Elements((rows * VOCAB) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &logits, |b, logits| {
                b.iter(|| {
                    let g = entropy_grad(logits.clone());
                    sync(&device);
                    g
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{backend}/kl_divergence"));
        for rows in ROWS {
            let reference = random_logits(rows, VOCAB, 4, &device);
            let logits = random_logits(rows, VOCAB, 5, &device);
            group.throughput(Throughput::Elements((rows * VOCAB) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, _| {
                b.iter(|| {
                    let kl = kl_divergence(reference.clone(), logits.clone());
                    sync(&device);
                    kl
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{backend}/token_log_probs"));
        for rows in ROWS {
            let logits = random_logits(rows, VOCAB, 6, &device).reshape([1, rows, VOCAB]);
            let ids: Vec<i64> = (0..rows as i64)
                .map(|i| (i * 7919) % VOCAB as i64)
                .collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, rows]), &device);
            group.throughput(Throughput::Elements((rows * VOCAB) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &logits, |b, logits| {
                b.iter(|| {
                    let lp = token_log_probs(logits.clone(), ids.clone());
                    sync(&device);
                    lp
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_entropy
}
criterion_main!(benches);
