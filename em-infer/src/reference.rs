//! Slow f64 host twins of em-infer's device algorithms, used as test oracles.

use crate::adaptive_temperature::AdaptiveTemperatureConfig;
use crate::em_inf::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS, EmInfConfig};

/// EM-INF on one row in f64, written sequentially and entry by entry (textbook softmax,
/// entropy and its gradient from `em_core::reference`, Adam as in `torch.optim.Adam`). Returns the adjusted
/// logits and the number of Adam steps taken.
pub fn em_inf(logits: &[f64], config: &EmInfConfig) -> (Vec<f64>, usize) {
    use em_core::reference::{entropy, entropy_grad, softmax};
    let p0 = softmax(logits);
    let mut z = logits.to_vec();
    let mut m = vec![0.0; z.len()];
    let mut v = vec![0.0; z.len()];
    let mut taken = 0;
    for t in 1..=config.n_grad_steps {
        let h = entropy(&z);
        if h < config.threshold {
            break;
        }
        let p = softmax(&z);
        let dh = entropy_grad(&z);
        for i in 0..z.len() {
            let g = dh[i] + config.kl_weight * (p[i] - p0[i]);
            m[i] = ADAM_BETA1 * m[i] + (1.0 - ADAM_BETA1) * g;
            v[i] = ADAM_BETA2 * v[i] + (1.0 - ADAM_BETA2) * g * g;
            let m_hat = m[i] / (1.0 - ADAM_BETA1.powi(t as i32));
            let v_hat = v[i] / (1.0 - ADAM_BETA2.powi(t as i32));
            z[i] -= config.learning_rate * m_hat / (v_hat.sqrt() + ADAM_EPS);
        }
        taken += 1;
    }
    (z, taken)
}

/// Adaptive temperature on one row in f64, one bisection at a time. Returns the chosen τ.
pub fn adaptive_temperature(logits: &[f64], config: &AdaptiveTemperatureConfig) -> f64 {
    use em_core::reference::entropy;
    let h0 = entropy(logits);
    let target = config.delta.max(config.alpha * h0);
    if h0 <= config.delta {
        return 1.0;
    }
    let (mut lo, mut hi, mut tau) = (config.tau_min, config.tau_max, 1.0);
    for _ in 0..config.max_iterations {
        tau = 0.5 * (lo + hi);
        let scaled: Vec<f64> = logits.iter().map(|z| z / tau).collect();
        let h = entropy(&scaled);
        if (h - target).abs() < config.tolerance {
            break;
        }
        if h < target {
            lo = tau;
        } else {
            hi = tau;
        }
    }
    tau
}

/// The distribution [`crate::Sampler`] draws from, computed the textbook way in f64: penalise
/// the `seen` tokens (repetition penalty), divide by the temperature (greedy: 1), softmax, then
/// **sort** the probabilities descending and cut by rank (top-k: the first k, ties with the k-th
/// kept), by cumulative sum (top-p: the shortest prefix whose sum reaches `top_p` of what top-k
/// kept, ties with its last entry kept) and by ratio to the maximum (min-p); renormalise.
/// Returns the probabilities (0 outside the kept set).
pub fn sampling_distribution(
    logits: &[f64],
    sampling: &crate::Sampling,
    seen: &[usize],
) -> Vec<f64> {
    use em_core::reference::softmax;
    let mut z = logits.to_vec();
    if sampling.repetition_penalty != 1.0 {
        for &id in seen {
            z[id] = if z[id] > 0.0 {
                z[id] / sampling.repetition_penalty
            } else {
                z[id] * sampling.repetition_penalty
            };
        }
    }
    let t = if sampling.is_greedy() {
        1.0
    } else {
        sampling.temperature
    };
    let p = softmax(&z.iter().map(|x| x / t).collect::<Vec<_>>());
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
    let mut keep = vec![true; p.len()];
    if sampling.top_k > 0 && sampling.top_k < p.len() {
        let cut = p[order[sampling.top_k - 1]];
        for (i, k) in keep.iter_mut().enumerate() {
            *k = p[i] >= cut;
        }
    }
    if sampling.top_p < 1.0 {
        let total: f64 = (0..p.len()).filter(|i| keep[*i]).map(|i| p[i]).sum();
        let mut sum = 0.0;
        let mut cut = 0.0;
        for &i in order.iter().filter(|i| keep[**i]) {
            sum += p[i];
            cut = p[i];
            if sum >= sampling.top_p * total {
                break;
            }
        }
        for (i, k) in keep.iter_mut().enumerate() {
            *k = *k && p[i] >= cut;
        }
    }
    if sampling.min_p > 0.0 {
        let max = p[order[0]];
        for (i, k) in keep.iter_mut().enumerate() {
            *k = *k && p[i] >= sampling.min_p * max;
        }
    }
    let total: f64 = (0..p.len()).filter(|i| keep[*i]).map(|i| p[i]).sum();
    (0..p.len())
        .map(|i| if keep[i] { p[i] / total } else { 0.0 })
        .collect()
}
