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
    let mut rng = em_core::rng::rng(seed);
    let values: Vec<f32> = (0..rows * vocab)
        .map(|_| (em_core::rng::normal(&mut rng) * 3.0) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, vocab]), device)
}

/// em-models' tiny seeded Qwen2 (`em_models::testing`, tied head, f32) on every compiled
/// backend, named.
///
/// # Panics
/// If the model cannot be built (a bench without its model should stop loudly).
#[allow(clippy::unwrap_used)]
pub fn tiny_models() -> Vec<(&'static str, em_models::Qwen2ForCausalLM)> {
    use em_models::testing::{Tiny, tiny_model};
    backends()
        .into_iter()
        .map(|(name, device)| {
            let model = tiny_model(Tiny::Qwen2Tied, &device, burn::tensor::DType::F32, 3);
            (name, model.unwrap())
        })
        .collect()
}

/// The real Qwen2.5-Coder-0.5B-Instruct (f32) on flex, from `$EM_QWEN_DIR` (see
/// `scripts/qwen/README.md`); `None`, with a message, when the variable is unset or flex is
/// not compiled in.
///
/// # Panics
/// If `EM_QWEN_DIR` is set but the checkpoint does not load.
pub fn real_model() -> Option<em_models::Qwen2ForCausalLM> {
    real_model_in(burn::tensor::DType::F32)
}

/// [`real_model`] with its weights held in `dtype` (f32, f16 or bf16) on the device.
///
/// # Panics
/// As [`real_model`].
#[allow(clippy::unwrap_used)]
pub fn real_model_in(dtype: burn::tensor::DType) -> Option<em_models::Qwen2ForCausalLM> {
    let Some(root) = std::env::var_os("EM_QWEN_DIR") else {
        eprintln!("real-model benches skipped: EM_QWEN_DIR is not set");
        return None;
    };
    let dir = std::path::PathBuf::from(root).join("qwen2.5-coder-0.5b-instruct-f32");
    #[cfg(feature = "flex")]
    {
        let options = em_models::LoadOptions { dtype };
        Some(em_models::Qwen2ForCausalLM::from_dir(&dir, &Device::flex(), &options).unwrap())
    }
    #[cfg(not(feature = "flex"))]
    {
        eprintln!(
            "real-model benches skipped: built without flex ({})",
            dir.display()
        );
        None
    }
}
