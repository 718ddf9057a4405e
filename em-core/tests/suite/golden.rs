//! Golden values computed by numpy in float64 (`../golden/gen_golden.py`; the command that
//! regenerates them is in its header).

use em_core::{entropy, entropy_grad, k3_kl, kl_divergence, token_log_probs};
use serde::Deserialize;

use crate::backend_tests;
use crate::common::*;

#[derive(Deserialize)]
struct Golden {
    vocab: usize,
    logits: Vec<f32>,
    other_logits: Vec<f32>,
    entropy: Vec<f64>,
    entropy_grad: Vec<f64>,
    kl_logits_other: Vec<f64>,
    ids: Vec<i64>,
    token_log_probs: Vec<f64>,
    logp: Vec<f32>,
    ref_logp: Vec<f32>,
    k3: Vec<f64>,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("../golden/golden.json")).expect("golden.json parses")
}

fn numpy_golden_values_match(b: &TestBackend) {
    let g = golden();
    let rows = g.logits.len() / g.vocab;
    let x = tensor2(&g.logits, [rows, g.vocab], &b.device);
    let name = b.name;
    assert_close(
        &format!("{name} entropy"),
        &host(entropy(x.clone())),
        &g.entropy,
        1e-5,
        1e-6,
    );
    let tolerance: Vec<f64> = g
        .logits
        .chunks(g.vocab)
        .flat_map(|row| entropy_grad_tolerance(&widen(row), 1e-4))
        .collect();
    assert_within(
        &format!("{name} grad"),
        &host(entropy_grad(x.clone())),
        &g.entropy_grad,
        &tolerance,
    );
    let other = tensor2(&g.other_logits, [rows, g.vocab], &b.device);
    assert_close(
        &format!("{name} kl"),
        &host(kl_divergence(x.clone(), other)),
        &g.kl_logits_other,
        1e-4,
        1e-6,
    );
    let (batch, seq) = (2, rows / 2);
    let lp = token_log_probs(
        x.reshape([batch, seq, g.vocab]),
        ids2(&g.ids, [batch, seq], &b.device),
    );
    assert_close(
        &format!("{name} log-probs"),
        &host(lp),
        &g.token_log_probs,
        1e-5,
        1e-6,
    );
    let k3 = k3_kl(
        tensor2(&g.logp, [batch, seq], &b.device),
        tensor2(&g.ref_logp, [batch, seq], &b.device),
    );
    assert_close(&format!("{name} k3"), &host(k3), &g.k3, 1e-4, 1e-9);
}

backend_tests!(numpy_golden_values_match);
