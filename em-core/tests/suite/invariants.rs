//! Properties that hold for every input (proptest, small case counts: each case is a device
//! round trip).

use em_core::{entropy, kl_divergence};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::backend_tests;
use crate::common::*;

const CASES: u32 = 48;

/// Logits on a 1/1024 grid in [−64, 64]: adding an integer shift |c| ≤ 100 to them is exact in
/// f32 (fewer than 24 significant bits), so shift invariance can be tested without the shift's
/// own rounding blurring it.
fn grid_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-65_536i32..=65_536, 1..=96)
        .prop_map(|v| v.into_iter().map(|k| k as f32 / 1024.0).collect())
}

/// Logits over a wide range, including ±1e4.
fn wide_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![-30f32..30f32, -1e4f32..1e4f32, Just(0f32), Just(1e4f32)],
        1..=96,
    )
}

fn run<S: Strategy>(
    b: &TestBackend,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{}: {e}", b.name);
    }
}

fn one(b: &TestBackend, row: &[f32]) -> f64 {
    host(entropy(tensor2(row, [1, row.len()], &b.device)))[0]
}

fn entropy_is_between_zero_and_ln_v(b: &TestBackend) {
    run(b, wide_logits(), |row| {
        let h = one(b, &row);
        let bound = (row.len() as f64).ln();
        // f32 rounding of ln s − Σe·z'/s: a few ε times ln V.
        prop_assert!(h >= -1e-6 && h <= bound + 1e-5, "H = {h}, ln V = {bound}");
        Ok(())
    });
}

fn entropy_is_shift_invariant(b: &TestBackend) {
    run(b, (grid_logits(), -100i32..=100), |(row, c)| {
        let shifted: Vec<f32> = row.iter().map(|z| z + c as f32).collect();
        // z + c and max + c are exact, so the max-shifted logits are bit-identical: only
        // backend reduction order could differ, and it does not depend on the values.
        let (h, hs) = (one(b, &row), one(b, &shifted));
        prop_assert!((h - hs).abs() <= 1e-6, "H(z) = {h}, H(z + {c}) = {hs}");
        Ok(())
    });
}

fn entropy_is_permutation_invariant(b: &TestBackend) {
    run(
        b,
        wide_logits().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        |(row, perm)| {
            let (h, hp) = (one(b, &row), one(b, &perm));
            // Only the summation order changes: relative 1e-5 of the larger of H and 1.
            prop_assert!((h - hp).abs() <= 1e-5 * h.abs().max(1.0), "{h} vs {hp}");
            Ok(())
        },
    );
}

fn kl_is_non_negative_and_zero_on_itself(b: &TestBackend) {
    let pair = wide_logits().prop_flat_map(|p| {
        let n = p.len();
        (Just(p), prop::collection::vec(-30f32..30f32, n))
    });
    run(b, pair, |(p, q)| {
        let n = p.len();
        let both = [p.clone(), p.clone()].concat();
        let other = [q, p].concat();
        let kl = host(kl_divergence(
            tensor2(&both, [2, n], &b.device),
            tensor2(&other, [2, n], &b.device),
        ));
        prop_assert!(kl[0] >= 0.0, "KL = {}", kl[0]);
        prop_assert!(kl[1] == 0.0, "KL(p‖p) = {}", kl[1]);
        Ok(())
    });
}

backend_tests!(
    entropy_is_between_zero_and_ln_v,
    entropy_is_shift_invariant,
    entropy_is_permutation_invariant,
    kl_is_non_negative_and_zero_on_itself,
);
