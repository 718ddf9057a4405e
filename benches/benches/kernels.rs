//! The CPU products (`em_models::kernels`): `x·W` for 1 and 8 rows of `x` (decode) over weights
//! in f32, f16 and bf16, and for 128 rows (prefill) over 16-bit weights, against burn's matmul
//! on the same device and shapes in the same run (the path the kernels replace on the CPU).
//! Throughput is the weights' bytes, so criterion's GB/s is the memory stream each kernel
//! reaches.
//!
//! The weights are a stack of 72 MLP-sized `[896, 4864]` matrices (the 0.5B model's 24 layers ×
//! gate, up, down: 314M entries, 1.25 GB in f32, above the dev VM's 300 MB L3), multiplied one
//! after the other like the layers of a decode step; the head is `[151936, 896]` read row by
//! row (`nk`: how a model stores its head, tied or not), or the same entries as a
//! `[896, 151936]` matrix stored `[in, out]` (`kn_head`, the widest `kn` case).
//!
//! ```text
//! cargo bench -p em-benches --bench kernels
//! ```
//!
//! Groups: `cpu/kernels/{isa}_{kn|nk_layers|kn_head|nk}_{dtype}_r{rows}` (every SIMD set the CPU
//! has; `kn`/`nk_layers`: the layers stored `[in, out]` (f32 models) or `[out, in]` (16-bit
//! models on flex); `{isa}_hw`: batch-1 kernels without software prefetch, see
//! `em_models::kernels::Prefetch`), `cpu/widened/{kn|nk}_{dtype}_r128` (prefill's 16-bit
//! product: `matmul_widened`, both layouts) and
//! `flex/burn_matmul/{layout}_{dtype}_r{rows}` (rows 1, 8 and 128).
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use burn::tensor::{DType, Device, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
#[cfg(feature = "flex")]
use em_models::kernels::matmul_widened;
use em_models::kernels::{Kernels, Layout, Weights, matmul_rows};
use half::{bf16, f16};

const K: usize = 896;
const N: usize = 4864;
const LAYERS: usize = 72;
const VOCAB: usize = 151_936;
/// Rows of a prefill-sized product (a 128-token prompt).
const PREFILL: usize = 128;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = em_core::rng::rng(seed);
    (0..len)
        .map(|_| (em_core::rng::normal(&mut rng) * 0.02) as f32)
        .collect()
}

/// One matrix's entries in each width.
struct Stored {
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
}

impl Stored {
    fn new(len: usize, seed: u64) -> Self {
        let f32 = values(len, seed);
        Self {
            f16: f32.iter().map(|&v| f16::from_f32(v)).collect(),
            bf16: f32.iter().map(|&v| bf16::from_f32(v)).collect(),
            f32,
        }
    }

    fn weights(&self, dtype: DType) -> Weights<'_> {
        match dtype {
            DType::F16 => Weights::F16(&self.f16),
            DType::BF16 => Weights::Bf16(&self.bf16),
            _ => Weights::F32(&self.f32),
        }
    }

    fn tensor(&self, dtype: DType, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(self.f32.clone(), shape), (device, dtype))
    }
}

/// Matrices multiplied one after the other, their logical `[k, n]`, and the layouts (with
/// their labels) each is benched in.
type Suite<'a> = (&'a [&'a Stored], [usize; 2], [(Layout, &'static str); 2]);

fn name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

fn bytes(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 4,
        _ => 2,
    }
}

fn kernels(c: &mut Criterion) {
    let simd: Vec<Kernels> = Kernels::available()
        .into_iter()
        .filter(|k| *k != Kernels::Portable)
        .collect();
    let layers: Vec<Stored> = (0..LAYERS as u64).map(|i| Stored::new(K * N, i)).collect();
    let head = Stored::new(VOCAB * K, 99);
    let layer_refs: Vec<&Stored> = layers.iter().collect();
    let mut group = c.benchmark_group("cpu/kernels");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for kernels in simd {
        let isa = kernels.name();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for rows in [1usize, 4, 8] {
                let x = values(rows * K, 7);
                // The layers stored `[in, out]` (an f32 model's projections) and `[out, in]`
                // (a 16-bit model's on flex); a head-sized matrix stored `[in, out]` (the widest
                // `kn` case) and `[vocab, hidden]` (a model's head, tied or not).
                let suites: [Suite<'_>; 2] = [
                    (
                        &layer_refs,
                        [K, N],
                        [(Layout::KN, "kn"), (Layout::NK, "nk_layers")],
                    ),
                    (
                        &[&head],
                        [K, VOCAB],
                        [(Layout::KN, "kn_head"), (Layout::NK, "nk")],
                    ),
                ];
                for (matrices, shape, cases) in suites {
                    let entries = matrices.len() * shape[0] * shape[1];
                    group.throughput(Throughput::Bytes(entries as u64 * bytes(dtype)));
                    for (layout, label) in cases {
                        group.bench_function(
                            BenchmarkId::from_parameter(format!(
                                "{isa}_{label}_{}_r{rows}",
                                name(dtype)
                            )),
                            |b| {
                                b.iter(|| {
                                    for m in matrices {
                                        matmul_rows(
                                            kernels,
                                            &x,
                                            rows,
                                            m.weights(dtype),
                                            layout,
                                            shape,
                                        );
                                    }
                                })
                            },
                        );
                    }
                }
            }
        }
    }
    group.finish();

    // Prefill-sized products (128 rows) with 16-bit weights: panels widened to f32 + gemm.
    #[cfg(feature = "flex")]
    {
        let mut group = c.benchmark_group("cpu/widened");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        let x = values(PREFILL * K, 7);
        for dtype in [DType::F16, DType::BF16] {
            group.throughput(Throughput::Bytes((LAYERS * K * N) as u64 * bytes(dtype)));
            for (layout, label) in [(Layout::KN, "kn"), (Layout::NK, "nk")] {
                group.bench_function(
                    BenchmarkId::from_parameter(format!("{label}_{}_r{PREFILL}", name(dtype))),
                    |b| {
                        b.iter(|| {
                            for layer in &layers {
                                matmul_widened(&x, PREFILL, layer.weights(dtype), layout, [K, N]);
                            }
                        })
                    },
                );
            }
        }
        group.finish();
    }

    // The baseline: burn's matmul on flex for the same products.
    #[cfg(feature = "flex")]
    {
        let device = Device::flex();
        let mut group = c.benchmark_group("flex/burn_matmul");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let weights: Vec<Tensor<3>> = layers
                .iter()
                .map(|l| l.tensor(dtype, [K, N], &device).unsqueeze())
                .collect();
            let embedding = head.tensor(dtype, [VOCAB, K], &device).unsqueeze::<3>();
            for rows in [1usize, 8, PREFILL] {
                let x: Tensor<3> = Tensor::from_data(
                    TensorData::new(values(rows * K, 7), [1, rows, K]),
                    (&device, dtype),
                );
                group.throughput(Throughput::Bytes((LAYERS * K * N) as u64 * bytes(dtype)));
                group.bench_function(
                    BenchmarkId::from_parameter(format!("kn_{}_r{rows}", name(dtype))),
                    |b| {
                        b.iter(|| {
                            for w in &weights {
                                x.clone().matmul(w.clone()).into_data();
                            }
                        })
                    },
                );
                if rows == PREFILL {
                    continue; // prefill scores its last row only
                }
                group.throughput(Throughput::Bytes((VOCAB * K) as u64 * bytes(dtype)));
                group.bench_function(
                    BenchmarkId::from_parameter(format!("nk_{}_r{rows}", name(dtype))),
                    |b| {
                        b.iter(|| {
                            embedding
                                .clone()
                                .matmul(x.clone().swap_dims(1, 2))
                                .into_data()
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
