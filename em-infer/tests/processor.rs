//! [`LogitsProcessor::process_step`]'s reported input entropy, against its oracle: the values
//! `em_core::entropy` returns for the same logits, bit for bit (the generator reports them as
//! the model's entropy in place of computing them), on every compiled backend; and the logits
//! it returns are [`LogitsProcessor::process`]'s.
#![allow(clippy::unwrap_used)]

mod common;
use common::{devices, host};

use burn::tensor::{Tensor, TensorData};
use em_infer::{
    AdaptiveTemperatureConfig, AdaptiveTemperatureProcessor, EmInfConfig, EmInfProcessor,
    InferError, LogitsProcessor, ProcessorChain, StepContext,
};

/// `ROWS` rows of 2,000 logits at spreads from 0.25 to 3.4 (entropies near ln 2000), one with a
/// masked token, one with a spike. So many rows because `Moments::written_entropy` (EM-INF's
/// own threshold entropy) most often rounds to `em_core::entropy`'s f32 value, and reporting it
/// must fail here.
fn logits(device: &burn::tensor::Device) -> Tensor<2> {
    let (rows, vocab) = (ROWS, 2_000);
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

fn sharpen(z: Tensor<2>, _: &StepContext<'_>) -> Result<Tensor<2>, InferError> {
    Ok(z * 2.0)
}

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
        let z = logits(&device);
        let want: Vec<f64> = host(em_core::entropy(z.clone()).unsqueeze_dim(1));
        let check = |label: &str, processor: &mut dyn LogitsProcessor, reports: bool| {
            let out = processor.process_step(z.clone(), &ctx).unwrap();
            match out.input_entropy {
                Some(h) => assert_eq!(h, want, "{name} {label}"),
                None => assert!(!reports, "{name} {label}: nothing reported"),
            }
            let plain = processor.process(z.clone(), &ctx).unwrap();
            assert_eq!(host(out.logits), host(plain), "{name} {label}: logits");
        };
        // EM-INF reports on the CPU's host path only (flex); elsewhere it may not.
        let on_host = name == "flex";
        check("em-inf", &mut EmInfProcessor::new(em_inf).unwrap(), on_host);
        let zero_steps = EmInfConfig {
            n_grad_steps: 0,
            ..em_inf
        };
        check(
            "em-inf, 0 steps",
            &mut EmInfProcessor::new(zero_steps).unwrap(),
            on_host,
        );
        let adaptive = AdaptiveTemperatureConfig::default();
        check(
            "adaptive temperature",
            &mut AdaptiveTemperatureProcessor::new(adaptive).unwrap(),
            true,
        );
        // A chain reports what its first processor reports: its input is the chain's.
        let mut first = ProcessorChain::new()
            .with(EmInfProcessor::new(em_inf).unwrap())
            .with(sharpen);
        check("chain, em-inf first", &mut first, on_host);
        let mut second = ProcessorChain::new()
            .with(sharpen)
            .with(AdaptiveTemperatureProcessor::new(adaptive).unwrap());
        let out = second.process_step(z.clone(), &ctx).unwrap();
        assert!(out.input_entropy.is_none(), "{name}: the sharpened input's");
        let mut closure = sharpen;
        assert!(
            closure
                .process_step(z.clone(), &ctx)
                .unwrap()
                .input_entropy
                .is_none()
        );
        let mut empty = ProcessorChain::new();
        let out = empty.process_step(z.clone(), &ctx).unwrap();
        assert!(out.input_entropy.is_none());
        assert_eq!(host(out.logits), host(z.clone()));
    }
}
