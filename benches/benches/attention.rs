//! Decode attention (`em_models::attend::decode_attention`): one new position per row against
//! the KV cache's buffers, at the 0.5B model's shapes (14 query heads over 2 kv heads, head
//! width 64), for 256 to 4096 cached positions, at batch 1 and 8, against burn's attention on
//! the same device and inputs in the same run (the grouped form the model falls back to: the
//! query heads sharing a kv head as its query rows). Throughput is the cached keys' and values'
//! bytes, so criterion's GB/s says how close a call comes to a memory stream. A decode step
//! makes one call per layer (24 in the 0.5B model); EM-RL's rollouts run at 1-3K positions.
//!
//! ```text
//! cargo bench -p em-benches --bench attention
//! ```
//!
//! Groups: `cpu/decode_attention/t{total}_b{batch}` and `flex/burn_attention/t{total}_b{batch}`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use em_models::attend::decode_attention;
use em_models::kernels::Kernels;

const HEADS: usize = 14;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;

fn normal(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let mut rng = em_core::rng::rng(seed);
    let values: Vec<f32> = (0..shape.iter().product())
        .map(|_| em_core::rng::normal(&mut rng) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let kernels = Kernels::detect();
    let mut host = c.benchmark_group("cpu/decode_attention");
    host.sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let mut cases = Vec::new();
    for batch in [1usize, 8] {
        for total in [256usize, 1024, 2048, 4096] {
            // A buffer with room to spare, as the cache pre-allocates it.
            let capacity = total + 64;
            let q = normal([batch, HEADS, 1, HEAD_DIM], 1, &device);
            let keys = normal([batch, KV_HEADS, capacity, HEAD_DIM], 2, &device);
            let values = normal([batch, KV_HEADS, capacity, HEAD_DIM], 3, &device);
            let spans = vec![0..total; batch];
            let bytes = (2 * batch * KV_HEADS * total * HEAD_DIM * 4) as u64;
            let id = format!("t{total}_b{batch}");
            host.throughput(Throughput::Bytes(bytes));
            host.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| decode_attention(kernels, &q, &keys, &values, total, &spans).unwrap())
            });
            cases.push((id, bytes, q, keys, values, total));
        }
    }
    host.finish();
    let mut burn = c.benchmark_group("flex/burn_attention");
    burn.sample_size(10)
        .measurement_time(Duration::from_secs(4));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    for (id, bytes, q, keys, values, total) in cases {
        let batch = q.dims()[0];
        let q = q.reshape([batch, KV_HEADS, HEADS / KV_HEADS, HEAD_DIM]);
        let visible = |t: &Tensor<4>| t.clone().slice([0..batch, 0..KV_HEADS, 0..total]);
        burn.throughput(Throughput::Bytes(bytes));
        burn.bench_function(BenchmarkId::from_parameter(&id), |b| {
            b.iter(|| {
                attention(
                    q.clone(),
                    visible(&keys),
                    visible(&values),
                    None,
                    None,
                    options,
                )
                .into_data()
            })
        });
    }
    burn.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
