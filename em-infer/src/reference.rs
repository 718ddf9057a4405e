//! Slow f64 host twins of em-infer's device algorithms, used as test oracles.

use crate::adaptive_temperature::AdaptiveTemperatureConfig;
use crate::em_inf::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS, EmInfConfig};

/// EM-INF on one row in f64, written sequentially and entry by entry (textbook softmax and
/// entropy from `em_core::reference`, Adam as in `torch.optim.Adam`). Returns the adjusted
/// logits and the number of Adam steps taken.
pub fn em_inf(logits: &[f64], config: &EmInfConfig) -> (Vec<f64>, usize) {
    use em_core::reference::{entropy, softmax};
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
        for i in 0..z.len() {
            let log_p = if p[i] > 0.0 { p[i].ln() } else { 0.0 };
            let g = -p[i] * (log_p + h) + config.kl_weight * (p[i] - p0[i]);
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
