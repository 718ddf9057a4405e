//! Shared set-up for the criterion benches: the enabled backends and seeded inputs.
#![warn(missing_docs)]

use burn::tensor::{Device, Tensor, TensorData};

/// Every backend compiled in, with its name for `"{backend}/{op}"` group names.
#[allow(clippy::vec_init_then_push)] // one push per enabled feature
pub fn backends() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut out = Vec::new();
    #[cfg(feature = "flex")]
    out.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    out.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    #[cfg(feature = "cuda")]
    out.push(("cuda", Device::cuda(0)));
    out
}

/// `[rows, vocab]` logits, normal with standard deviation 3, from a seeded host generator (so
/// every backend gets the same numbers).
pub fn random_logits(rows: usize, vocab: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*: plenty for bench inputs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..rows * vocab)
        .map(|_| {
            let (u1, u2) = (uniform().max(1e-300), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 3.0) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, vocab]), device)
}
