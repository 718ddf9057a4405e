//! Gradients: burn autodiff through our forward, the closed forms, and f64 central finite
//! differences of the f64 reference must agree.

use burn::tensor::Tensor;
use em_core::{
    EntropyLossConfig, Reduction, entropy, entropy_grad, kl_divergence, reference, token_log_probs,
};

use crate::backend_tests;
use crate::common::*;
use crate::oracle::extreme_rows;

/// Autodiff gradient of `f(x).sum()` at `x`.
fn autodiff_grad<const D: usize, const E: usize>(
    x: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) -> Vec<f64> {
    let x = x.autodiff().require_grad();
    let grads = f(x.clone()).sum().backward();
    host(x.grad(&grads).expect("the input is tracked"))
}

fn entropy_autodiff_closed_form_and_finite_differences_agree(b: &TestBackend) {
    for vocab in [2, 5, 64, 1000] {
        for (r, row) in extreme_rows(vocab).iter().enumerate() {
            let what = format!("{} V={vocab} row {r}", b.name);
            let x = tensor2(row, [1, vocab], &b.device);
            let auto = autodiff_grad(x.clone(), entropy);
            let closed = host(entropy_grad(x));
            // f64 central differences of the f64 reference at the f32 point: truncation
            // O(h² H''') ≈ 1e-12 and rounding O(ε₆₄/h) ≈ 2e-11 with h = 1e-5.
            // The rounding term scales with the logits themselves, since H goes through
            // logsumexp whose terms are as large as max|z| (measured: 3.6e-11 on the peaked
            // row, max|z| ≈ 20), so the tolerance carries 4·ε₆₄·(1 + max|z|)/h on top.
            let step = 1e-5;
            let fd = reference::central_difference(reference::entropy, &widen(row), step);
            let scale = row
                .iter()
                .filter(|z| z.is_finite())
                .fold(0f64, |m, z| m.max(f64::from(z.abs())));
            let fd_floor = 4.0 * f64::EPSILON * (1.0 + scale) / step;
            let tolerance: Vec<f64> = entropy_grad_tolerance(&widen(row), 1e-4)
                .iter()
                .map(|t| t + fd_floor)
                .collect();
            assert_within(&format!("{what} closed vs fd"), &closed, &fd, &tolerance);
            assert_within(&format!("{what} autodiff vs fd"), &auto, &fd, &tolerance);
        }
    }
}

fn uniform_logits_have_zero_gradient_at_full_vocabulary(b: &TestBackend) {
    let vocab = b.max_vocab;
    let x = tensor2(&vec![0.25; vocab], [1, vocab], &b.device);
    let auto = autodiff_grad(x.clone(), entropy);
    let closed = host(entropy_grad(x));
    // p = 1/V exactly representable up to rounding, log p + H = 0 up to ε·ln V ≈ 1e-6, times
    // p = 6.6e-6: every entry is below 1e-10.
    assert!(
        max_abs(&auto) < 1e-10,
        "{}: autodiff {}",
        b.name,
        max_abs(&auto)
    );
    assert!(
        max_abs(&closed) < 1e-10,
        "{}: closed {}",
        b.name,
        max_abs(&closed)
    );
}

fn log_prob_gradient_is_one_hot_minus_softmax(b: &TestBackend) {
    let vocab = 40;
    let mut rng = Rng::new(17);
    let row = rng.logits(vocab, 3.0);
    let id = 13usize;
    let x = tensor2(&row, [1, vocab], &b.device).reshape([1, 1, vocab]);
    let ids = ids2(&[id as i64], [1, 1], &b.device);
    let auto = autodiff_grad(x, |x| token_log_probs(x, ids.clone()));
    let mut want = reference::softmax(&widen(&row));
    want.iter_mut().for_each(|p| *p = -*p);
    want[id] += 1.0;
    let fd =
        reference::central_difference(|z| reference::token_log_prob(z, id), &widen(&row), 1e-5);
    assert_close(
        &format!("{} closed form vs fd", b.name),
        &want,
        &fd,
        1e-8,
        1e-9,
    );
    assert_close(
        &format!("{} log-prob grad", b.name),
        &auto,
        &want,
        1e-5,
        1e-7,
    );
}

fn kl_gradient_is_softmax_difference(b: &TestBackend) {
    let vocab = 40;
    let mut rng = Rng::new(19);
    let reference_row = rng.logits(vocab, 2.0);
    let row = rng.logits(vocab, 2.0);
    let p_ref = tensor2(&reference_row, [1, vocab], &b.device);
    let auto = autodiff_grad(tensor2(&row, [1, vocab], &b.device), |x| {
        kl_divergence(p_ref.clone(), x)
    });
    // ∂KL(p_ref ‖ softmax z)/∂z = softmax(z) − p_ref.
    let want: Vec<f64> = reference::softmax(&widen(&row))
        .iter()
        .zip(reference::softmax(&widen(&reference_row)))
        .map(|(p, q)| p - q)
        .collect();
    let fd = reference::central_difference(
        |z| reference::kl_divergence(&widen(&reference_row), z),
        &widen(&row),
        1e-5,
    );
    assert_close(
        &format!("{} closed form vs fd", b.name),
        &want,
        &fd,
        1e-7,
        1e-9,
    );
    assert_close(&format!("{} kl grad", b.name), &auto, &want, 1e-4, 1e-7);
}

fn entropy_loss_gradient_is_masked_mean_of_entropy_grads(b: &TestBackend) {
    let (batch, seq, vocab) = (2, 3, 16);
    let mut rng = Rng::new(23);
    let flat = rng.logits(batch * seq * vocab, 2.0);
    let mask = [false, true, true, true, false, false];
    let kept = mask.iter().filter(|&&m| m).count() as f64;
    let loss = EntropyLossConfig::new().init();
    let m = mask2(&mask, [batch, seq], &b.device);
    let x = tensor3(&flat, [batch, seq, vocab], &b.device);
    let auto = autodiff_grad(x.clone(), |x| loss.forward(x, m.clone()));
    let value = host(loss.forward(x, m));
    let mut want_grad = Vec::new();
    let mut want_value = 0.0;
    for (row, &keep) in flat.chunks(vocab).zip(&mask) {
        let row = widen(row);
        if keep {
            want_value += reference::entropy(&row) / kept;
            want_grad.extend(reference::entropy_grad(&row).iter().map(|g| g / kept));
        } else {
            want_grad.extend(std::iter::repeat_n(0.0, vocab));
        }
    }
    assert_close(
        &format!("{} loss value", b.name),
        &value,
        &[want_value],
        1e-5,
        1e-7,
    );
    assert_close(
        &format!("{} loss grad", b.name),
        &auto,
        &want_grad,
        1e-4,
        1e-7,
    );

    // The paper's printed form: the per-sequence sum averaged over sequences.
    let loss = EntropyLossConfig::new()
        .with_reduction(Reduction::SequenceMean)
        .init();
    let value = host(loss.forward(
        tensor3(&flat, [batch, seq, vocab], &b.device),
        mask2(&mask, [batch, seq], &b.device),
    ));
    let per_token: Vec<f64> = flat
        .chunks(vocab)
        .map(|r| reference::entropy(&widen(r)))
        .collect();
    let want = reference::masked_reduce(&per_token, &mask, seq, Reduction::SequenceMean);
    assert_close(
        &format!("{} sequence-mean loss", b.name),
        &value,
        &[want],
        1e-5,
        1e-7,
    );
}

backend_tests!(
    entropy_autodiff_closed_form_and_finite_differences_agree,
    uniform_logits_have_zero_gradient_at_full_vocabulary,
    log_prob_gradient_is_one_hot_minus_softmax,
    kl_gradient_is_softmax_difference,
    entropy_loss_gradient_is_masked_mean_of_entropy_grads,
);
