//! Values against the f64 reference, from ordinary to extreme logits.

use em_core::{
    Reduction, entropy, entropy_grad, k3_kl, kl_divergence, masked_reduce, reference,
    token_entropy, token_log_probs,
};

use crate::backend_tests;
use crate::common::*;

/// Rows of one vocabulary that exercise every regime, padded/truncated to `vocab` entries.
pub fn extreme_rows(vocab: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(7);
    let mut rows = vec![
        vec![3.0; vocab],       // uniform: H = ln V, gradient 0
        rng.logits(vocab, 1.0), // ordinary
        rng.logits(vocab, 8.0), // peaked
        {
            let mut r = vec![0.0; vocab];
            r[vocab / 2] = 12.0; // near one-hot
            r
        },
        {
            let mut r = vec![0.0; vocab];
            r[0] = 1234.0; // [1234, 0, ...]: one-hot to f64 precision
            r
        },
        (0..vocab)
            .map(|i| if i % 2 == 0 { 1e4 } else { -1e4 })
            .collect(), // ±1e4
        (0..vocab)
            .map(|i| {
                if i % 3 == 1 {
                    f32::NEG_INFINITY
                } else {
                    (i % 5) as f32
                }
            })
            .collect(),
    ];
    rows.push(vec![-1e4; vocab]); // all equal and large: uniform again
    rows
}

fn entropy_matches_reference_at_every_regime(b: &TestBackend) {
    for vocab in [2, 7, 1000, b.max_vocab] {
        let rows = extreme_rows(vocab);
        let flat: Vec<f32> = rows.concat();
        let got = host(entropy(tensor2(&flat, [rows.len(), vocab], &b.device)));
        let want: Vec<f64> = rows.iter().map(|r| reference::entropy(&widen(r))).collect();
        // f32 sums over up to 151,936 terms: relative error ≲ √V·ε ≈ 2e-5 in s and Σe·z'; the
        // absolute floor covers rows whose entropy is 0 up to rounding.
        assert_close(
            &format!("{} entropy V={vocab}", b.name),
            &got,
            &want,
            1e-4,
            1e-6,
        );
    }
}

fn entropy_grad_matches_reference(b: &TestBackend) {
    for vocab in [2, 7, 1000, b.max_vocab] {
        let rows = extreme_rows(vocab);
        let got = host(entropy_grad(tensor2(
            &rows.concat(),
            [rows.len(), vocab],
            &b.device,
        )));
        for (r, row) in rows.iter().enumerate() {
            let want = reference::entropy_grad(&widen(row));
            assert_within(
                &format!("{} entropy_grad V={vocab} row {r}", b.name),
                &got[r * vocab..(r + 1) * vocab],
                &want,
                &entropy_grad_tolerance(&widen(row), 1e-4),
            );
        }
    }
}

fn token_entropy_is_entropy_per_position(b: &TestBackend) {
    let (batch, seq, vocab) = (2, 3, 50);
    let mut rng = Rng::new(11);
    let flat = rng.logits(batch * seq * vocab, 2.0);
    let got = host(token_entropy(tensor3(
        &flat,
        [batch, seq, vocab],
        &b.device,
    )));
    let want: Vec<f64> = flat
        .chunks(vocab)
        .map(|r| reference::entropy(&widen(r)))
        .collect();
    assert_close(
        &format!("{} token_entropy", b.name),
        &got,
        &want,
        1e-5,
        1e-6,
    );
}

fn token_log_probs_match_reference(b: &TestBackend) {
    for vocab in [3, 1000, b.max_vocab] {
        let (batch, seq) = (2, 3);
        let mut rng = Rng::new(vocab as u64);
        let mut flat = rng.logits(batch * seq * vocab, 4.0);
        flat[vocab] = 1234.0; // a near one-hot position
        flat[2 * vocab + 1] = f32::NEG_INFINITY; // a masked entry
        let ids: Vec<i64> = (0..batch * seq).map(|_| rng.below(vocab) as i64).collect();
        let mut ids = ids;
        ids[2] = 1; // the −∞ entry: log-prob −∞
        let got = host(token_log_probs(
            tensor3(&flat, [batch, seq, vocab], &b.device),
            ids2(&ids, [batch, seq], &b.device),
        ));
        let want: Vec<f64> = flat
            .chunks(vocab)
            .zip(&ids)
            .map(|(r, &id)| reference::token_log_prob(&widen(r), id as usize))
            .collect();
        // log p = z_y − lse: absolute error ≲ ε·(|z_y| + |lse|) ≤ 1e-3 for |z| ≈ 1234.
        assert_close(
            &format!("{} token_log_probs V={vocab}", b.name),
            &got,
            &want,
            1e-5,
            2e-4,
        );
    }
}

fn kl_divergence_matches_reference(b: &TestBackend) {
    for vocab in [2, 1000, b.max_vocab] {
        let reference_rows = extreme_rows(vocab);
        let mut rng = Rng::new(3);
        let mut rows: Vec<Vec<f32>> = reference_rows
            .iter()
            .map(|r| r.iter().map(|&z| z + (rng.normal() * 0.5) as f32).collect())
            .collect();
        rows[0] = reference_rows[0].clone(); // identical rows: KL exactly 0
        let n = rows.len();
        let got = host(kl_divergence(
            tensor2(&reference_rows.concat(), [n, vocab], &b.device),
            tensor2(&rows.concat(), [n, vocab], &b.device),
        ));
        let want: Vec<f64> = reference_rows
            .iter()
            .zip(&rows)
            .map(|(r, q)| reference::kl_divergence(&widen(r), &widen(q)))
            .collect();
        assert_eq!(got[0], 0.0, "{}: KL(p‖p) must be exactly 0", b.name);
        // KL is a difference of O(ln V) terms: absolute error ≲ 10·ε·ln V·√V ≈ 1e-4 at full V.
        assert_close(&format!("{} kl V={vocab}", b.name), &got, &want, 1e-4, 1e-4);
    }
}

fn k3_matches_reference_including_tiny_and_clamped_deltas(b: &TestBackend) {
    let pairs: Vec<(f32, f32)> = vec![
        (-1.0, -1.0),
        (-1.0, -1.0001),
        (-2.0, -2.0 + 1e-3),
        (-0.5, -0.59),
        (-0.5, -0.61),
        (-3.0, -0.5),
        (-0.1, -7.0),
        (-30.0, -0.1),             // Δ = 29.9 → clamped to 20 → result clamped to 10
        (-0.1, f32::NEG_INFINITY), // ref −∞: Δ clamped to −20
        (f32::NEG_INFINITY, -0.1), // policy −∞: Δ = +∞ → 20 → 10
    ];
    let n = pairs.len();
    let logp: Vec<f32> = pairs.iter().map(|p| p.0).collect();
    let ref_logp: Vec<f32> = pairs.iter().map(|p| p.1).collect();
    let got = host(k3_kl(
        tensor2(&logp, [1, n], &b.device),
        tensor2(&ref_logp, [1, n], &b.device),
    ));
    let want: Vec<f64> = pairs
        .iter()
        .map(|&(l, r)| reference::k3_kl(f64::from(l), f64::from(r)))
        .collect();
    // Relative accuracy holds even for Δ ≈ 1e-4 (k3 ≈ 5e-9) thanks to the series branch.
    assert_close(&format!("{} k3", b.name), &got, &want, 1e-4, 1e-12);
}

fn masked_reduce_matches_reference(b: &TestBackend) {
    let (rows, cols) = (3, 5);
    let mut rng = Rng::new(5);
    let values = rng.logits(rows * cols, 3.0);
    let mask: Vec<bool> = vec![
        true, true, true, false, false, // 3 kept
        false, false, false, false, false, // empty row: not a sequence
        true, false, true, true, true, // 4 kept
    ];
    for reduction in [
        Reduction::TokenMean,
        Reduction::SequenceMean,
        Reduction::Sum,
    ] {
        let got = host(masked_reduce(
            tensor2(&values, [rows, cols], &b.device),
            mask2(&mask, [rows, cols], &b.device),
            reduction,
        ));
        let want = reference::masked_reduce(&widen(&values), &mask, cols, reduction);
        assert_close(
            &format!("{} {reduction:?}", b.name),
            &got,
            &[want],
            1e-6,
            1e-6,
        );
    }
    // An all-false mask reduces to 0, not NaN.
    for reduction in [
        Reduction::TokenMean,
        Reduction::SequenceMean,
        Reduction::Sum,
    ] {
        let got = host(masked_reduce(
            tensor2(&values, [rows, cols], &b.device),
            mask2(&[false; 15], [rows, cols], &b.device),
            reduction,
        ));
        assert_eq!(got, vec![0.0], "{} {reduction:?} of an empty mask", b.name);
    }
}

fn masked_positions_cannot_leak_nan(b: &TestBackend) {
    let values = [1.0, f32::NAN, 3.0, f32::INFINITY];
    let mask = [true, false, true, false];
    for reduction in [
        Reduction::TokenMean,
        Reduction::SequenceMean,
        Reduction::Sum,
    ] {
        let got = host(masked_reduce(
            tensor2(&values, [2, 2], &b.device),
            mask2(&mask, [2, 2], &b.device),
            reduction,
        ));
        let want = reference::masked_reduce(&[1.0, 0.0, 3.0, 0.0], &mask, 2, reduction);
        assert_close(
            &format!("{} {reduction:?} with NaN padding", b.name),
            &got,
            &[want],
            1e-7,
            0.0,
        );
    }
}

fn nan_and_infinite_logits_poison_only_their_row(b: &TestBackend) {
    let vocab = 4;
    let rows: Vec<f32> = vec![
        0.0,
        1.0,
        2.0,
        3.0, // fine
        0.0,
        f32::NAN,
        2.0,
        3.0, // NaN
        0.0,
        f32::INFINITY,
        2.0,
        3.0, // +∞
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY, // no support
    ];
    let h = host(entropy(tensor2(&rows, [4, vocab], &b.device)));
    assert!(h[0].is_finite(), "{}: {h:?}", b.name);
    for (r, value) in h.iter().enumerate().skip(1) {
        assert!(
            value.is_nan(),
            "{}: row {r} should be NaN, got {h:?}",
            b.name
        );
    }
    let g = host(entropy_grad(tensor2(&rows, [4, vocab], &b.device)));
    assert!(
        g[..vocab].iter().all(|v| v.is_finite()),
        "{}: {g:?}",
        b.name
    );
    assert!(
        g[vocab..2 * vocab].iter().any(|v| v.is_nan()),
        "{}: {g:?}",
        b.name
    );
    let lp = host(token_log_probs(
        tensor3(&rows, [1, 4, vocab], &b.device),
        ids2(&[0, 0, 0, 0], [1, 4], &b.device),
    ));
    assert!(
        lp[0].is_finite() && lp[1].is_nan() && lp[2].is_nan(),
        "{}: {lp:?}",
        b.name
    );
}

backend_tests!(
    entropy_matches_reference_at_every_regime,
    entropy_grad_matches_reference,
    token_entropy_is_entropy_per_position,
    token_log_probs_match_reference,
    kl_divergence_matches_reference,
    k3_matches_reference_including_tiny_and_clamped_deltas,
    masked_reduce_matches_reference,
    masked_positions_cannot_leak_nan,
    nan_and_infinite_logits_poison_only_their_row,
);
