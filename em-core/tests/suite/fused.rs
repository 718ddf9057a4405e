//! The fused flex rows (`em_core`'s private `fused` module) against their slow twin, the generic
//! burn-op path, which runs for the same values on autodiff-tracked copies of the tensors; and
//! both against the f64 reference. Flex only: other backends never take the fused path.
#![cfg(feature = "flex")]

use burn::tensor::{Device, Tensor};
use em_core::fused::rows;
use em_core::{entropy, kept_entropy, reference, softmax_entropy};

use crate::common::*;
use crate::oracle::extreme_rows;

/// The extreme rows plus the rows that are NaN throughout on both paths, and a masked row.
fn rows(vocab: usize) -> Vec<Vec<f32>> {
    let mut rows = extreme_rows(vocab);
    let mut rng = Rng::new(11);
    let with = |value: f32, rng: &mut Rng| {
        let mut r = rng.logits(vocab, 2.0);
        r[vocab / 3] = value;
        r
    };
    rows.push(with(f32::NAN, &mut rng));
    rows.push(with(f32::INFINITY, &mut rng));
    rows.push(vec![f32::NEG_INFINITY; vocab]);
    // Everything masked but one entry: H = 0, p one-hot.
    let mut one = vec![f32::NEG_INFINITY; vocab];
    one[vocab - 1] = -3.0;
    rows.push(one);
    rows
}

fn input(rows: &[Vec<f32>], vocab: usize) -> Tensor<2> {
    tensor2(&rows.concat(), [rows.len(), vocab], &Device::flex())
}

/// The generic path: the same values, autodiff-tracked (the fused path declines those).
fn generic(t: &Tensor<2>) -> Tensor<2> {
    t.clone().autodiff()
}

#[test]
fn fused_softmax_entropy_matches_the_generic_path_and_the_reference() {
    for vocab in [1, 2, 7, 1000, QWEN_VOCAB] {
        let rows = rows(vocab);
        let z = input(&rows, vocab);
        let fused = softmax_entropy(z.clone());
        let slow = softmax_entropy(generic(&z));
        let what = |q: &str| format!("{q} V={vocab}");
        // f32 sums over up to 151,936 terms on the generic path (blocked), f64 here.
        let h_fused = host(fused.entropy);
        assert_close(&what("entropy"), &h_fused, &host(slow.entropy), 1e-4, 1e-6);
        let h_ref: Vec<f64> = rows.iter().map(|r| reference::entropy(&widen(r))).collect();
        // The reference has no NaN for a NaN-free row without a finite maximum (all −∞), where
        // both paths are NaN; compare only where the reference is finite.
        for (i, (&h, &want)) in h_fused.iter().zip(&h_ref).enumerate() {
            if want.is_finite() && !rows[i].iter().any(|x| x.is_nan()) {
                assert!(
                    (h - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                    "{}: row {i} {h} vs {want}",
                    what("entropy vs reference")
                );
            } else {
                assert!(h.is_nan(), "{}: row {i} {h}", what("non-finite row"));
            }
        }
        let (lp_fused, lp_slow) = (host(fused.log_probs), host(slow.log_probs));
        // log p = z' − ln s: z' is the same f32 value on both paths, ln s differs by rounding.
        assert_close(&what("log p"), &lp_fused, &lp_slow, 1e-6, 1e-5);
        let p_fused = host(fused.probs);
        assert_close(&what("p"), &p_fused, &host(slow.probs), 1e-5, 1e-9);
        // p is `rows::exp` of log p bit for bit (callers may recompute a weight from its
        // log-prob with it).
        for (i, (&p, &lp)) in p_fused.iter().zip(&lp_fused).enumerate() {
            let want = rows::exp(lp as f32);
            assert!(
                p.is_nan() && want.is_nan() || p == f64::from(want),
                "{}[{i}]: {p} vs exp({lp}) = {want}",
                what("p = exp(log p)")
            );
        }
    }
}

/// `rows::exp` against f64 `exp` rounded to f32: within one unit in the last place wherever the
/// result is at least `e^−87`, over every 61st f32 bit pattern from −87 to 89 (35 M arguments,
/// both signs, every binade); 0 below −87, +∞ above `ln f32::MAX`, NaN for NaN.
#[test]
fn exp_is_within_one_ulp() {
    let ulps = |x: f32| {
        let (got, want) = (rows::exp(x), f64::from(x).exp());
        let nearest = want as f32;
        if got == nearest {
            return 0.0;
        }
        let ulp = f64::from(f32::from_bits(nearest.to_bits() + 1)) - f64::from(nearest);
        (f64::from(got) - want).abs() / ulp
    };
    let mut worst = (0.0f64, 0.0f32);
    let mut check = |x: f32| {
        let e = ulps(x);
        if e > worst.0 {
            worst = (e, x);
        }
    };
    // Non-negative arguments up to 89 (bit patterns 0 ..), then negative ones down to −87.
    for bits in (0..=89f32.to_bits()).step_by(61) {
        check(f32::from_bits(bits));
    }
    for bits in ((-0f32).to_bits()..=(-87f32).to_bits()).step_by(61) {
        check(f32::from_bits(bits));
    }
    // Every argument near both ends, where `2ⁿ` reaches the f32 exponent's limits.
    for bits in 86.5f32.to_bits()..=88.722_83f32.to_bits() {
        check(f32::from_bits(bits));
    }
    for bits in (-85.5f32).to_bits()..=(-87f32).to_bits() {
        check(f32::from_bits(bits));
    }
    assert!(worst.0 <= 1.0, "{} ulp at x = {:e}", worst.0, worst.1);
    let at = |x: f32| rows::exp(x);
    assert_eq!(at(0.0), 1.0);
    assert!(at(88.72).is_finite() && at(88.72) > 3.3e38);
    let largest_finite = 88.722_83f32;
    assert!(at(largest_finite).is_finite());
    assert_eq!(
        at(f32::from_bits(largest_finite.to_bits() + 1)),
        f32::INFINITY
    );
    assert_eq!(at(88.73), f32::INFINITY);
    assert_eq!(at(89.5), f32::INFINITY);
    assert_eq!(at(f32::MAX), f32::INFINITY);
    assert_eq!(at(f32::INFINITY), f32::INFINITY);
    assert_eq!(at(-87.01), 0.0);
    assert_eq!(at(f32::MIN), 0.0);
    assert_eq!(at(f32::NEG_INFINITY), 0.0);
    assert!(at(f32::NAN).is_nan());
}

/// `rows::exp` inside `rows::vectorized` (AVX-512 or AVX2 where this CPU has them) against the
/// same function run one argument at a time, never vectorized (`black_box`): bit for bit, over
/// every 97th f32 bit pattern from −100 to 100 and the edge values.
#[test]
fn exp_is_the_same_at_every_vector_width() {
    use std::hint::black_box;
    let mut xs: Vec<f32> = (0..=100f32.to_bits())
        .step_by(97)
        .map(f32::from_bits)
        .collect();
    xs.extend(
        ((-0f32).to_bits()..=(-100f32).to_bits())
            .step_by(97)
            .map(f32::from_bits),
    );
    xs.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN,
        f32::MAX,
        -87.0,
        89.0,
    ]);
    struct ExpAll<'a>(&'a [f32]);
    impl rows::Kernel for ExpAll<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run(self) -> Vec<f32> {
            self.0.iter().map(|&x| rows::exp(x)).collect()
        }
    }
    let wide = rows::vectorized(ExpAll(&xs));
    for (&x, &got) in xs.iter().zip(&wide) {
        let want = black_box(rows::exp(black_box(x)));
        assert!(
            got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan(),
            "exp({x:e}): {got:e} vectorized vs {want:e}"
        );
    }
}

#[test]
fn fused_entropy_matches_the_generic_path() {
    for vocab in [1, 3, 1000, QWEN_VOCAB] {
        let rows = rows(vocab);
        let z = input(&rows, vocab);
        assert_close(
            &format!("entropy V={vocab}"),
            &host(entropy(z.clone())),
            &host(entropy(generic(&z))),
            1e-4,
            1e-6,
        );
    }
}

#[test]
fn fused_kept_entropy_matches_the_generic_path_and_the_reference() {
    let vocab = QWEN_VOCAB;
    let mut rng = Rng::new(5);
    let rows: Vec<Vec<f32>> = (0..4).map(|i| rng.logits(vocab, 1.0 + i as f64)).collect();
    let parts = softmax_entropy(input(&rows, vocab));
    // Keep every third entry of row 0, the top half of row 1, nothing of row 2, all of row 3.
    let p = host(parts.probs.clone());
    let kept: Vec<f32> = p
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let (row, j) = (i / vocab, i % vocab);
            let keep = match row {
                0 => j % 3 == 0,
                1 => p >= 1.0 / vocab as f64,
                2 => false,
                _ => true,
            };
            if keep { p as f32 } else { 0.0 }
        })
        .collect();
    let w = tensor2(&kept, [rows.len(), vocab], &Device::flex());
    let fused = kept_entropy(w.clone(), parts.log_probs.clone());
    let slow = kept_entropy(generic(&w), generic(&parts.log_probs));
    let h = host(fused.entropy);
    for (name, got, want) in [
        ("total", host(fused.total), host(slow.total)),
        ("log total", host(fused.log_total), host(slow.log_total)),
        ("entropy", h.clone(), host(slow.entropy)),
    ] {
        assert_close(name, &got, &want, 1e-4, 1e-6);
    }
    // The reference: the renormalised kept distribution's entropy in f64 (row 2 keeps nothing:
    // NaN on both paths).
    for (row, &h) in h.iter().enumerate() {
        let w = &kept[row * vocab..(row + 1) * vocab];
        let total: f64 = w.iter().map(|&w| f64::from(w)).sum();
        if total == 0.0 {
            assert!(h.is_nan(), "row {row}: {h}");
            continue;
        }
        let want = -w
            .iter()
            .filter(|&&w| w > 0.0)
            .map(|&w| {
                let q = f64::from(w) / total;
                q * q.ln()
            })
            .sum::<f64>();
        assert!(
            (h - want).abs() <= 1e-5 * (1.0 + want),
            "row {row}: {h} vs {want}"
        );
    }
}

/// `Moments` against the row passes that write the softmax: `written_entropy` is what
/// `rows::softmax_entropy` returns (it adds the written `p·z'` one by one; the moments have
/// only the sums) to within a few f32 ulps of `H`, and `entropy` is `rows::entropy` and the
/// f64 reference's.
#[test]
fn moments_give_the_written_softmax_entropy() {
    for vocab in [1, 7, 1000, QWEN_VOCAB] {
        for (i, row) in rows(vocab).iter().enumerate() {
            let (mut log_p, mut p) = (vec![0f32; vocab], vec![0f32; vocab]);
            let written = rows::softmax_entropy(row, &mut log_p, &mut p);
            let Some(m) = rows::moments(row) else {
                assert!(
                    written.is_nan() && rows::entropy(row).is_nan(),
                    "V={vocab} row {i}"
                );
                continue;
            };
            let h = m.written_entropy();
            let ulps = (h - written).abs() / (f32::EPSILON * (1.0 + written.abs()));
            assert!(
                ulps <= 4.0,
                "V={vocab} row {i}: {h} vs {written} ({ulps} ulps)"
            );
            assert_eq!(m.entropy() as f32, rows::entropy(row), "V={vocab} row {i}");
            let want = reference::entropy(&widen(row));
            if want.is_finite() {
                assert!(
                    (m.entropy() - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "V={vocab} row {i}: {} vs the reference {want}",
                    m.entropy()
                );
            }
        }
    }
}

/// `HostRows::values_mut` lends the storage only while nothing else references it (no live
/// clone of the tensor), and `into_tensor` gives back what was written there.
#[test]
fn host_rows_are_writable_only_when_unshared() {
    use em_core::fused::host_rows;
    let device = Device::flex();
    let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let t = tensor2(&values, [2, 3], &device);
    let kept = t.clone();
    let mut shared = host_rows(&t).expect("plain f32 on flex");
    drop(t);
    assert!(shared.values_mut().is_none(), "`kept` still references it");
    drop(shared);
    let mut owned = host_rows(&kept).expect("plain f32 on flex");
    drop(kept);
    owned.values_mut().expect("the only reference")[4] = -7.5;
    let back = owned.into_tensor();
    let got: Vec<f32> = back.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(got, [1.0, 2.0, 3.0, 4.0, -7.5, 6.0]);
}
