//! Half-precision logits are computed in f32; f64 logits stay f64.

use burn::tensor::{DType, FloatDType};
use em_core::{entropy, reference, token_log_probs};

use crate::backend_tests;
use crate::common::*;

fn half_precision_logits_are_computed_in_f32(b: &TestBackend) {
    let vocab = 4096;
    let mut rng = Rng::new(29);
    let rows = rng.logits(4 * vocab, 3.0);
    for dtype in [FloatDType::F16, FloatDType::BF16] {
        if !b.device.supports_dtype(dtype) {
            eprintln!(
                "{}: skipping {dtype:?}: the device does not support it",
                b.name
            );
            continue;
        }
        let half = tensor2(&rows, [4, vocab], &b.device).cast(dtype);
        // The values the device actually holds, rounded to half precision.
        let stored = host(half.clone());
        let h = entropy(half.clone());
        assert_eq!(
            h.dtype(),
            DType::F32,
            "{}: {dtype:?} entropy must come out in f32",
            b.name
        );
        let want: Vec<f64> = stored.chunks(vocab).map(reference::entropy).collect();
        // Computed in f16 this would be off by ~1e-3 relative (an f16 ulp); in f32, ≤ 1e-5.
        assert_close(
            &format!("{} {dtype:?} entropy", b.name),
            &host(h),
            &want,
            2e-5,
            1e-6,
        );

        let ids = ids2(&[1, 2, 3, 4], [1, 4], &b.device);
        let lp = host(token_log_probs(half.reshape([1, 4, vocab]), ids));
        let want: Vec<f64> = stored
            .chunks(vocab)
            .zip([1, 2, 3, 4])
            .map(|(r, id)| reference::token_log_prob(r, id))
            .collect();
        assert_close(
            &format!("{} {dtype:?} log-probs", b.name),
            &lp,
            &want,
            2e-5,
            1e-5,
        );
    }
}

fn f64_logits_keep_f64_precision(b: &TestBackend) {
    // wgpu reports f64 support, but Vulkan's GLSL.std.450 `Exp`/`Log` are defined for 16- and
    // 32-bit floats only: on lavapipe an f64 `exp` returned denormals (~7.5e-312 for sums that
    // should be ~1835), so f64 logits are a flex (and CUDA) feature; the README says so.
    if b.name == "wgpu" || !b.device.supports_dtype(FloatDType::F64) {
        eprintln!(
            "{}: skipping f64: no f64 transcendentals on this device",
            b.name
        );
        return;
    }
    let vocab = 1000;
    let mut rng = Rng::new(31);
    let rows: Vec<f64> = (0..3 * vocab).map(|_| rng.normal() * 4.0).collect();
    let x = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new(rows.clone(), [3, vocab]),
        (&b.device, DType::F64),
    );
    let h = entropy(x);
    assert_eq!(h.dtype(), DType::F64, "{}", b.name);
    let want: Vec<f64> = rows.chunks(vocab).map(reference::entropy).collect();
    assert_close(
        &format!("{} f64 entropy", b.name),
        &host(h),
        &want,
        1e-12,
        1e-13,
    );
}

backend_tests!(
    half_precision_logits_are_computed_in_f32,
    f64_logits_keep_f64_precision
);
