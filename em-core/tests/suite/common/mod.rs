//! Test harness shared by em-core's integration tests: the enabled backends, host↔device
//! helpers, a seeded generator and tolerance checks.
#![allow(dead_code, clippy::unwrap_used)]

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// A backend under test.
pub struct TestBackend {
    /// Short name used in messages (`flex`, `wgpu`).
    pub name: &'static str,
    /// The device (without autodiff).
    pub device: Device,
    /// The largest vocabulary this backend runs tests with. Mesa's lavapipe caps shader loops
    /// near 65,535 iterations (see the README), so wgpu tests stay below it; flex runs the real
    /// Qwen2.5 vocabulary.
    pub max_vocab: usize,
}

/// The real Qwen2.5 0.5B/1.5B vocabulary (embedding rows, padding included).
pub const QWEN_VOCAB: usize = 151_936;

#[cfg(feature = "flex")]
pub fn flex() -> TestBackend {
    TestBackend {
        name: "flex",
        device: Device::flex(),
        max_vocab: QWEN_VOCAB,
    }
}

#[cfg(feature = "wgpu")]
pub fn wgpu() -> TestBackend {
    TestBackend {
        name: "wgpu",
        device: Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        max_vocab: 32_768,
    }
}

/// Instantiates each listed `fn(&TestBackend)` once per enabled backend, as
/// `flex::name` and `wgpu::name`, so every test reports (and fails) per backend.
// Exported only within this test binary, where `crate` is the suite itself.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "flex")]
        mod flex {
            $( #[test] fn $name() { super::$name(&crate::common::flex()) } )*
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $( #[test] fn $name() { super::$name(&crate::common::wgpu()) } )*
        }
    };
}

/// Seeded test inputs from the workspace's one generator ([`em_core::rng`]), so every machine
/// sees the same numbers.
pub struct Rng(em_core::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(em_core::rng::rng(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        use rand::Rng as _;
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        em_core::rng::uniform(&mut self.0)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        em_core::rng::normal(&mut self.0)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// `n` logits, normal with the given scale, rounded to f32 (the values the device sees).
    pub fn logits(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

pub fn tensor2(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

pub fn tensor3(values: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

pub fn ids2(values: &[i64], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

pub fn mask2(values: &[bool], shape: [usize; 2], device: &Device) -> Tensor<2, Bool> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Any float tensor's values as f64 on the host.
pub fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor.into_data().try_into_vec_as::<f64>().unwrap()
}

pub fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` element-wise, naming the first
/// offending index. NaN is only accepted where NaN is expected.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if e.is_nan() {
            assert!(a.is_nan(), "{what}[{i}]: expected NaN, got {a}");
            continue;
        }
        let ok = a == e || (a - e).abs() <= atol + rtol * e.abs();
        assert!(
            ok,
            "{what}[{i}]: got {a}, expected {e} (rtol {rtol}, atol {atol})"
        );
    }
}

/// Like [`assert_close`] with one absolute tolerance per entry.
#[track_caller]
pub fn assert_within(what: &str, actual: &[f64], expected: &[f64], tolerance: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, ((&a, &e), &t)) in actual.iter().zip(expected).zip(tolerance).enumerate() {
        if e.is_nan() {
            assert!(a.is_nan(), "{what}[{i}]: expected NaN, got {a}");
            continue;
        }
        assert!(
            a == e || (a - e).abs() <= t,
            "{what}[{i}]: got {a}, expected {e} (tolerance {t:e})"
        );
    }
}

/// Per-entry tolerance for an entropy gradient `g_i = −p_i (log p_i + H)` computed in f32 from
/// the logits `row`: `rtol·|g_i|` for the entry's own rounding plus `rtol·p_i·(1 + |log p_i| + H)`,
/// because `log p_i` and `H` are each accurate to about `rtol·(1 + |value|)` in absolute terms
/// and, where they nearly cancel, that absolute error is all that is left of the bracket.
pub fn entropy_grad_tolerance(row: &[f64], rtol: f64) -> Vec<f64> {
    let h = em_core::reference::entropy(row);
    let grad = em_core::reference::entropy_grad(row);
    em_core::reference::log_softmax(row)
        .iter()
        .zip(grad)
        .map(|(&lp, g)| {
            let p = lp.exp();
            let bracket = if p > 0.0 {
                p * (1.0 + lp.abs() + h)
            } else {
                0.0
            };
            rtol * (g.abs() + bracket) + 1e-12
        })
        .collect()
}

/// Largest absolute value, for tolerances relative to a vector's scale.
pub fn max_abs(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}
