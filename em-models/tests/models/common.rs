//! Shared helpers: backends, fixture paths, host↔device conversion.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use em_models::{LoadOptions, Qwen2ForCausalLM};

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

pub const FIXTURES: [&str; 3] = ["qwen2-tied", "qwen2-untied", "llama"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A JSON file's contents.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A tensor's values as f64, exactly.
pub fn host_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

pub fn golden() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("golden.json")).unwrap()).unwrap()
}

/// Max |Δlogit| between `model` on the golden ids (every position) and fixture `name`'s logits
/// from the numpy forward of `tests/fixtures/gen_fixtures.py`.
pub fn numpy_logits_error(model: &Qwen2ForCausalLM, name: &str) -> f64 {
    let golden = golden();
    let ids: Vec<u32> = golden["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let device = model.device();
    let mut cache = model.new_cache(1, 16);
    let logits = model
        .forward(
            ids_tensor(std::slice::from_ref(&ids), &device),
            &mut cache,
            em_models::Logits::All,
        )
        .unwrap();
    let (got, dims) = to_vec3(logits);
    assert_eq!(dims, [1, ids.len(), 320], "{name}");
    let expected: Vec<f64> = golden["models"][name]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    max_abs_diff(&got, &expected)
}

pub fn load(name: &str, device: &Device) -> Qwen2ForCausalLM {
    Qwen2ForCausalLM::from_dir(fixture(name), device, &LoadOptions::default()).unwrap()
}

pub fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&i| i64::from(i)))
        .collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

pub fn to_vec3(t: Tensor<3>) -> (Vec<f32>, [usize; 3]) {
    let dims = t.dims();
    (
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap(),
        dims,
    )
}

/// A copy of a fixture directory in a fresh temporary directory, for tests that damage it.
pub fn scratch_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}
