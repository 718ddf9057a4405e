//! Shared helpers: backends, the oracle fixture, host copies of checkpoints.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use em_models::Checkpoint;

/// A backend under test.
pub struct TestBackend {
    pub name: &'static str,
    pub device: Device,
}

#[cfg(feature = "flex")]
pub fn flex() -> TestBackend {
    TestBackend {
        name: "flex",
        device: Device::flex(),
    }
}

#[cfg(feature = "wgpu")]
pub fn wgpu() -> TestBackend {
    TestBackend {
        name: "wgpu",
        device: Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    }
}

/// Instantiates each `fn(&TestBackend)` once per enabled backend (`flex::name`, `wgpu::name`).
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

/// The oracle's fixture directory (tiny tied checkpoint, samples, goldens).
pub fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/emft")
}

/// A JSON file's contents.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every tensor of a safetensors file (or checkpoint directory) as f64, by name.
pub fn tensors(file_or_dir: &Path) -> Vec<(String, Vec<f64>)> {
    let ckpt = if file_or_dir.is_dir() {
        Checkpoint::open(file_or_dir).unwrap()
    } else {
        Checkpoint::open_file(file_or_dir).unwrap()
    };
    let header = header(&ckpt);
    header
        .into_iter()
        .map(|(name, shape)| {
            let v = ckpt.read_f32(&name, &shape).unwrap();
            (name, v.into_iter().map(f64::from).collect())
        })
        .collect()
}

/// Names and shapes of a checkpoint's tensors (read from the first file's header).
fn header(ckpt: &Checkpoint) -> Vec<(String, Vec<usize>)> {
    ckpt.names()
        .into_iter()
        .map(|n| (n.to_string(), ckpt.shape(n).unwrap()))
        .collect()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A copy of the oracle checkpoint (config + weights) in a fresh directory.
pub fn copy_oracle_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(oracle_dir().join(file), model.join(file)).unwrap();
    }
    model
}
