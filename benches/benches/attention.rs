//! Attention over the KV cache's buffers (`em_models::attend::cache_attention`) at the 0.5B
//! model's shapes (14 query heads over 2 kv heads, head width 64): decoding (one new position
//! per row) for 256 to 4096 cached positions at batch 1 and 8, and prefilling a 128- and a
//! 1024-token prompt, against burn's attention on the same device and inputs in the same run
//! (when decoding, the grouped form the model falls back to: the query heads sharing a kv head
//! as its query rows; when prefilling, causal with the kv heads repeated). Throughput is the cached keys' and values'
//! bytes, so criterion's GB/s says how close a call comes to a memory stream. A decode step
//! makes one call per layer (24 in the 0.5B model); EM-RL's rollouts run at 1-3K positions.
//!
//! ```text
//! cargo bench -p em-benches --bench attention
//! ```
//!
//! Groups: `cpu/decode_attention/t{total}_b{batch}`, `cpu/prefill_attention/s{seq}_b1` and
//! `flex/burn_attention/…` with the same ids.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use em_models::attend::cache_attention;
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

/// One bench input: `q: [batch, heads, seq, d]` against `total` cached positions.
struct Case {
    id: String,
    bytes: u64,
    q: Tensor<4>,
    keys: Tensor<4>,
    values: Tensor<4>,
    total: usize,
}

impl Case {
    fn new(batch: usize, seq: usize, total: usize, id: String, device: &Device) -> Self {
        // A buffer with room to spare, as the cache pre-allocates it.
        let capacity = total + 64;
        Self {
            id,
            bytes: (2 * batch * KV_HEADS * total * HEAD_DIM * 4) as u64,
            q: normal([batch, HEADS, seq, HEAD_DIM], 1, device),
            keys: normal([batch, KV_HEADS, capacity, HEAD_DIM], 2, device),
            values: normal([batch, KV_HEADS, capacity, HEAD_DIM], 3, device),
            total,
        }
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let kernels = Kernels::detect();
    let decode: Vec<Case> = [1usize, 8]
        .into_iter()
        .flat_map(|batch| [256usize, 1024, 2048, 4096].map(|total| (batch, total)))
        .map(|(batch, total)| Case::new(batch, 1, total, format!("t{total}_b{batch}"), &device))
        .collect();
    let prefill: Vec<Case> = [128usize, 1024]
        .into_iter()
        .map(|seq| Case::new(1, seq, seq, format!("s{seq}_b1"), &device))
        .collect();
    for (group, cases) in [
        ("decode_attention", &decode),
        ("prefill_attention", &prefill),
    ] {
        let mut host = c.benchmark_group(format!("cpu/{group}"));
        host.sample_size(10)
            .measurement_time(Duration::from_secs(4));
        for case in cases {
            let spans = vec![0..case.total; case.q.dims()[0]];
            host.throughput(Throughput::Bytes(case.bytes));
            host.bench_function(BenchmarkId::from_parameter(&case.id), |b| {
                b.iter(|| {
                    cache_attention(
                        kernels,
                        &case.q,
                        &case.keys,
                        &case.values,
                        case.total,
                        &spans,
                    )
                    .unwrap()
                })
            });
        }
        host.finish();
    }
    let mut burn = c.benchmark_group("flex/burn_attention");
    burn.sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for case in decode.iter().chain(&prefill) {
        let [batch, _, seq, _] = case.q.dims();
        let total = case.total;
        let visible = |t: &Tensor<4>| t.clone().slice([0..batch, 0..KV_HEADS, 0..total]);
        // Decoding: the query heads of a kv head as its query rows. Prefill: causal, with the
        // kv heads repeated for the query heads (the model's path).
        let (q, keys, values) = if seq == 1 {
            let q = case
                .q
                .clone()
                .reshape([batch, KV_HEADS, HEADS / KV_HEADS, HEAD_DIM]);
            (q, visible(&case.keys), visible(&case.values))
        } else {
            let repeat = |t: Tensor<4>| {
                t.unsqueeze_dim::<5>(2)
                    .expand([batch, KV_HEADS, HEADS / KV_HEADS, total, HEAD_DIM])
                    .reshape([batch, HEADS, total, HEAD_DIM])
            };
            (
                case.q.clone(),
                repeat(visible(&case.keys)),
                repeat(visible(&case.values)),
            )
        };
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: seq > 1,
        };
        burn.throughput(Throughput::Bytes(case.bytes));
        burn.bench_function(BenchmarkId::from_parameter(&case.id), |b| {
            b.iter(|| {
                attention(q.clone(), keys.clone(), values.clone(), None, None, options).into_data()
            })
        });
    }
    burn.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
