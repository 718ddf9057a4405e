//! The points at which the equation and symbolic stages evaluate expressions: a deterministic
//! low-discrepancy (Kronecker) sequence, not random numbers, so a verdict never depends on a
//! generator's state and the points cover each interval evenly. Variable `i` of point `k` is
//! `frac(½ + (k + 1)·αᵢ)` with `αᵢ = frac(√pᵢ)` for the `i`-th prime `pᵢ`: the `αᵢ` are
//! linearly independent over the rationals, so no two variables move in lockstep (which would
//! make `y − x` look constant).

/// The first primes; variable `i` uses `PRIMES[i % 16]` (more than 16 free variables never pass
/// the parser's budgets anyway).
const PRIMES: [f64; 16] = [
    2.0, 3.0, 5.0, 7.0, 11.0, 13.0, 17.0, 19.0, 23.0, 29.0, 31.0, 37.0, 41.0, 43.0, 47.0, 53.0,
];

/// Coordinate `var` of point `k`, in [0, 1).
pub(crate) fn unit(k: usize, var: usize) -> f64 {
    let alpha = PRIMES[var % PRIMES.len()].sqrt().fract();
    (0.5 + (k as f64 + 1.0) * alpha).fract()
}

#[cfg(test)]
mod tests {
    use super::unit;

    #[test]
    fn points_fill_the_unit_interval_evenly() {
        for var in 0..4 {
            let mut bins = [0usize; 10];
            for k in 0..1000 {
                let u = unit(k, var);
                assert!((0.0..1.0).contains(&u));
                bins[(u * 10.0) as usize] += 1;
            }
            assert!(bins.iter().all(|&b| (90..=110).contains(&b)), "{bins:?}");
        }
        // Two variables never differ by a constant.
        let d: Vec<f64> = (0..8).map(|k| unit(k, 1) - unit(k, 0)).collect();
        assert!(d.windows(2).any(|w| (w[0] - w[1]).abs() > 0.1), "{d:?}");
    }
}
