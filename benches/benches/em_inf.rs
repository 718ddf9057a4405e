//! EM-INF's cost per decoding step: [`em_infer::em_inf`] over `[rows, 151,936]` logits
//! (rows 1 and 8) at 3 and 15 Adam steps, next to the entropy forward pass alone, which every
//! sampler pays anyway. The threshold is 0 so every row takes every step (the worst case).
//! Compare with a model decode step from `--bench model`.
//!
//! ```text
//! cargo bench -p em-benches --bench em_inf                   # flex
//! cargo bench -p em-benches --bench em_inf --features wgpu   # flex and wgpu
//! ```
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::Device;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use em_benches::{backends, random_logits};
use em_infer::{EmInfConfig, em_inf};

const VOCAB: usize = 151_936;

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

fn bench_em_inf(c: &mut Criterion) {
    for (backend, device) in backends() {
        let mut group = c.benchmark_group(format!("{backend}/em_inf"));
        for rows in [1usize, 8] {
            let logits = random_logits(rows, VOCAB, 11, &device);
            group.bench_with_input(BenchmarkId::new("entropy_only", rows), &logits, |b, l| {
                b.iter(|| {
                    let h = em_core::entropy(l.clone());
                    sync(&device);
                    h
                })
            });
            for steps in [3usize, 15] {
                let config = EmInfConfig {
                    threshold: 0.0,
                    n_grad_steps: steps,
                    ..EmInfConfig::default()
                };
                let id = BenchmarkId::new(format!("steps{steps}"), rows);
                group.bench_with_input(id, &logits, |b, l| {
                    b.iter(|| {
                        let out = em_inf(l.clone(), &config, 0).unwrap();
                        sync(&device);
                        out
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench_em_inf
}
criterion_main!(benches);
