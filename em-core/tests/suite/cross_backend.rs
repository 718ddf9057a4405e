//! flex and wgpu agree on identical host data (backend random streams differ, so inputs are
//! generated on the host).
#![cfg(all(feature = "flex", feature = "wgpu"))]

use em_core::{entropy, entropy_grad, kl_divergence, token_log_probs};

use crate::common::*;

#[test]
fn flex_and_wgpu_agree() {
    let (flex, wgpu) = (flex(), wgpu());
    let (rows, vocab) = (8, wgpu.max_vocab);
    let mut rng = Rng::new(37);
    let a = rng.logits(rows * vocab, 3.0);
    let c = rng.logits(rows * vocab, 3.0);
    let ids: Vec<i64> = (0..rows).map(|_| rng.below(vocab) as i64).collect();
    let run = |b: &TestBackend| {
        let x = tensor2(&a, [rows, vocab], &b.device);
        (
            host(entropy(x.clone())),
            host(entropy_grad(x.clone())),
            host(kl_divergence(
                x.clone(),
                tensor2(&c, [rows, vocab], &b.device),
            )),
            host(token_log_probs(
                x.reshape([1, rows, vocab]),
                ids2(&ids, [1, rows], &b.device),
            )),
        )
    };
    let (f, w) = (run(&flex), run(&wgpu));
    // Both are f32 with different reduction trees; each is within ~√V·ε ≈ 2e-5 of the f64
    // oracle (see the oracle tests), so they are within 1e-4 of each other
    // (2e-4 for the gradient: both sides carry the per-entry error budget).
    assert_close("entropy", &w.0, &f.0, 1e-4, 1e-6);
    let tolerance: Vec<f64> = a
        .chunks(vocab)
        .flat_map(|row| entropy_grad_tolerance(&widen(row), 2e-4))
        .collect();
    assert_within("entropy_grad", &w.1, &f.1, &tolerance);
    assert_close("kl", &w.2, &f.2, 1e-4, 1e-5);
    assert_close("log-probs", &w.3, &f.3, 1e-4, 1e-5);
}
