//! [`LogitsProcessor::process_step`]'s reported input entropy, against its oracle: the values
//! `em_core::entropy` returns for the same logits, bit for bit (the generator reports them as
//! the model's entropy in place of computing them), on every compiled backend; and the logits
//! it returns are [`LogitsProcessor::process`]'s.
#![allow(clippy::unwrap_used)]

mod common;
use common::{devices, host};

use burn::tensor::{DType, Tensor, TensorData};
use em_infer::{
    AdaptiveTemperatureConfig, AdaptiveTemperatureProcessor, EmInfConfig, EmInfProcessor,
    InferError, LogitsProcessor, ProcessorChain, StepContext, reference,
};

/// `ROWS` rows of 2,000 logits at spreads from 0.25 to 3.4 (entropies near ln 2000), one with a
/// masked token, one with a spike. So many rows because `Moments::written_entropy` (EM-INF's
/// own threshold entropy) most often rounds to `em_core::entropy`'s f32 value, and reporting it
/// must fail here.
fn logits(device: &burn::tensor::Device) -> Tensor<2> {
    let (rows, vocab) = (ROWS, VOCAB);
    let mut state = 7u64;
    let mut values: Vec<f32> = (0..rows * vocab)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            u * (0.25 + 0.05 * (i / vocab) as f32)
        })
        .collect();
    values[3 * vocab + 17] += 14.0;
    values[vocab + 3] = f32::NEG_INFINITY;
    Tensor::from_data(TensorData::new(values, [rows, vocab]), device)
}

const ROWS: usize = 64;
const VOCAB: usize = 2_000;

fn sharpen(z: Tensor<2>, _: &StepContext<'_>) -> Result<Tensor<2>, InferError> {
    Ok(z * 2.0)
}

/// Each processor's report against `em_core::entropy` of the same logits, for f32 logits on
/// every backend and, on flex, f16 ones (EM-INF's host path widens them) and f64 ones (EM-INF's
/// burn-op path, which reports nothing). The logits returned beside the report are checked
/// against independent values: the f64 EM-INF twin (loosely: this is about which logits come
/// back, not their precision, tested in `tests/em_inf.rs`) and twice them through a chain.
#[test]
fn reported_entropies_are_em_core_entropy_bit_for_bit() {
    let rows: Vec<usize> = (0..ROWS).collect();
    let histories: Vec<&[u32]> = vec![&[]; ROWS];
    let ctx = StepContext::new(0, &rows, &histories);
    let em_inf = EmInfConfig {
        threshold: 0.0,
        ..EmInfConfig::default()
    };
    for (name, device) in devices() {
        let dtypes: &[DType] = if name == "flex" {
            &[DType::F32, DType::F16, DType::F64]
        } else {
            &[DType::F32]
        };
        for &dtype in dtypes {
            let z = logits(&device).cast(dtype);
            let label = format!("{name} {dtype:?}");
            let want: Vec<f64> = host(em_core::entropy(z.clone()).unsqueeze_dim(1));
            // EM-INF reports on its host path only: flex, f32 logits or 16-bit ones widened.
            let host_path = name == "flex" && dtype != DType::F64;
            let check = |what: &str, processor: &mut dyn LogitsProcessor, reports: bool| {
                let out = processor.process_step(z.clone(), &ctx).unwrap();
                match out.input_entropy {
                    Some(h) => assert_eq!(h, want, "{label} {what}"),
                    None => assert!(!reports, "{label} {what}: nothing reported"),
                }
                host(out.logits)
            };
            let adjusted = check(
                "em-inf",
                &mut EmInfProcessor::new(em_inf).unwrap(),
                host_path,
            );
            let z_host = host(z.clone());
            for (r, (got, z0)) in adjusted.chunks(VOCAB).zip(z_host.chunks(VOCAB)).enumerate() {
                let (twin, _) = reference::em_inf(z0, &em_inf);
                for (g, w) in got.iter().zip(&twin) {
                    let ok = (g.is_infinite() && g == w) || (g - w).abs() <= 1e-2 * (1.0 + w.abs());
                    assert!(ok, "{label} em-inf row {r}: {g} vs the twin's {w}");
                }
            }
            if host_path {
                // The threshold's entropy (`Moments::written_entropy`) differs from
                // `em_core::entropy`'s in some row, so reporting it would fail above.
                let out = em_infer::em_inf(z.clone(), &em_inf, 0).unwrap();
                assert_ne!(
                    out.initial_entropy, want,
                    "{label}: rows that tell them apart"
                );
            }
            let zero_steps = EmInfConfig {
                n_grad_steps: 0,
                ..em_inf
            };
            let same = check(
                "em-inf, 0 steps",
                &mut EmInfProcessor::new(zero_steps).unwrap(),
                host_path,
            );
            assert_eq!(same, host(em_core::promote(z.clone())), "{label}");
            let adaptive = AdaptiveTemperatureConfig::default();
            check(
                "adaptive temperature",
                &mut AdaptiveTemperatureProcessor::new(adaptive).unwrap(),
                true,
            );
            // A chain reports what its first processor reports (its input is the chain's) and
            // runs the others on the first one's output.
            let mut first = ProcessorChain::new()
                .with(EmInfProcessor::new(em_inf).unwrap())
                .with(sharpen);
            let doubled = check("chain, em-inf first", &mut first, host_path);
            let twice: Vec<f64> = adjusted.iter().map(|x| 2.0 * x).collect();
            assert_eq!(doubled, twice, "{label}: the chain's output");
            let mut second = ProcessorChain::new()
                .with(sharpen)
                .with(AdaptiveTemperatureProcessor::new(adaptive).unwrap());
            let out = second.process_step(z.clone(), &ctx).unwrap();
            assert!(
                out.input_entropy.is_none(),
                "{label}: the sharpened input's"
            );
            let mut closure = sharpen;
            let out = closure.process_step(z.clone(), &ctx).unwrap();
            assert!(out.input_entropy.is_none());
            let mut empty = ProcessorChain::new();
            let out = empty.process_step(z.clone(), &ctx).unwrap();
            assert!(out.input_entropy.is_none());
            assert_eq!(host(out.logits), z_host);
        }
    }
}
