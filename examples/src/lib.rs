//! Library side of the em examples: each example binary parses its arguments and calls one
//! function here, so the examples' logic is tested with the rest of the workspace.
#![warn(missing_docs)]

use std::fmt::{self, Write as _};

use burn::tensor::{Device, Tensor, TensorData};
use em_core::{entropy, entropy_grad};

/// One step of the `entropy` example.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoStep {
    /// The logits before the step.
    pub logits: Vec<f32>,
    /// `softmax(logits)`.
    pub probs: Vec<f32>,
    /// The entropy in nats.
    pub entropy: f32,
    /// The closed-form gradient `−p ⊙ (log p + H)`.
    pub grad: Vec<f32>,
    /// burn's autodiff gradient of the same entropy.
    pub autodiff_grad: Vec<f32>,
}

/// What the `entropy` example prints.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// The device's description.
    pub device: String,
    /// Every step, then the final state (whose gradient is not applied).
    pub steps: Vec<DemoStep>,
    /// The learning rate used.
    pub learning_rate: f32,
}

/// Errors of the examples' library functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// No logits were given.
    #[error("at least one logit is needed")]
    NoLogits,
    /// A logit is NaN or infinite.
    #[error("logit {index} is {value}: logits must be finite")]
    NonFinite {
        /// Its position.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The learning rate is negative or not finite.
    #[error("the learning rate must be finite and ≥ 0, got {0}")]
    LearningRate(f32),
    /// Reading a tensor back failed.
    #[error("reading a tensor back from the device failed: {0:?}")]
    Data(burn::tensor::DataError),
}

fn to_vec<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, DemoError> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(DemoError::Data)
}

/// Computes the entropy of `softmax(logits)`, its gradient (closed form and autodiff), and takes
/// `steps` gradient-descent steps of size `learning_rate` on the logits.
///
/// # Errors
/// Empty or non-finite logits, a negative or non-finite learning rate.
pub fn entropy_demo(
    logits: &[f32],
    learning_rate: f32,
    steps: usize,
    device: &Device,
) -> Result<DemoReport, DemoError> {
    if logits.is_empty() {
        return Err(DemoError::NoLogits);
    }
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(DemoError::NonFinite { index, value });
    }
    if !(learning_rate.is_finite() && learning_rate >= 0.0) {
        return Err(DemoError::LearningRate(learning_rate));
    }
    let vocab = logits.len();
    let mut z = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [1, vocab]), device);
    let mut out = Vec::with_capacity(steps + 1);
    for step in 0..=steps {
        let tracked = z.clone().autodiff().require_grad();
        let grads = entropy(tracked.clone()).sum().backward();
        let autodiff_grad = tracked
            .grad(&grads)
            .map(to_vec)
            .transpose()?
            .unwrap_or_default();
        let grad = entropy_grad(z.clone());
        out.push(DemoStep {
            logits: to_vec(z.clone())?,
            probs: to_vec(burn::tensor::activation::softmax(z.clone(), 1))?,
            entropy: to_vec(entropy(z.clone()))?[0],
            grad: to_vec(grad.clone())?,
            autodiff_grad,
        });
        if step < steps {
            z = z - grad * learning_rate;
        }
    }
    Ok(DemoReport {
        device: format!("{device:?}"),
        steps: out,
        learning_rate,
    })
}

fn list(values: &[f32]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:+.4}")).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device: {}", self.device)?;
        let Some(first) = self.steps.first() else {
            return Ok(());
        };
        let max = (first.logits.len() as f32).ln();
        writeln!(f, "logits z          {}", list(&first.logits))?;
        writeln!(f, "p = softmax(z)    {}", list(&first.probs))?;
        writeln!(
            f,
            "H(p)              {:.6} nats (max ln V = {max:.6})",
            first.entropy
        )?;
        writeln!(f, "dH/dz closed form {}", list(&first.grad))?;
        writeln!(f, "dH/dz autodiff    {}", list(&first.autodiff_grad))?;
        let mut line = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            let _ = write!(
                line,
                "{}step {i}: H = {:.6}",
                if i == 0 { "" } else { "\n" },
                step.entropy
            );
        }
        writeln!(
            f,
            "gradient descent on z, learning rate {}:",
            self.learning_rate
        )?;
        writeln!(f, "{line}")?;
        if let Some(last) = self.steps.last() {
            writeln!(f, "final p           {}", list(&last.probs))?;
        }
        Ok(())
    }
}

/// The device of the backend this build enabled: `cuda` if compiled in, else `wgpu`, else
/// `flex`. The backend is a cargo feature of the binary, never a runtime switch of the library.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    return Device::cuda(0);
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    return Device::flex();
}

/// The name of the backend [`device`] returns.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "flex"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_lowers_entropy_and_keeps_the_argmax() {
        let device = Device::default();
        let report = entropy_demo(&[2.0, 1.0, 0.5, 0.0, -1.0], 1.0, 3, &device).unwrap();
        let h: Vec<f32> = report.steps.iter().map(|s| s.entropy).collect();
        assert!(
            h.windows(2).all(|w| w[1] < w[0]),
            "entropy must fall: {h:?}"
        );
        for step in &report.steps {
            for (a, c) in step.autodiff_grad.iter().zip(&step.grad) {
                assert!((a - c).abs() <= 1e-6 + 1e-4 * c.abs(), "{a} vs {c}");
            }
            let argmax = step
                .probs
                .iter()
                .enumerate()
                .fold(0, |m, (i, p)| if *p > step.probs[m] { i } else { m });
            assert_eq!(argmax, 0);
        }
        // The first entropy against the closed form of this 5-point distribution.
        let z = [2.0f64, 1.0, 0.5, 0.0, -1.0];
        let s: f64 = z.iter().map(|v| v.exp()).sum();
        let want: f64 = z
            .iter()
            .map(|v| {
                let p = v.exp() / s;
                -p * p.ln()
            })
            .sum();
        assert!((f64::from(h[0]) - want).abs() < 1e-6);
        assert!(report.to_string().contains("step 3: H ="));
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let device = Device::default();
        assert!(matches!(
            entropy_demo(&[], 1.0, 1, &device),
            Err(DemoError::NoLogits)
        ));
        assert!(matches!(
            entropy_demo(&[1.0, f32::NAN], 1.0, 1, &device),
            Err(DemoError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            entropy_demo(&[1.0], -1.0, 1, &device),
            Err(DemoError::LearningRate(_))
        ));
    }
}
