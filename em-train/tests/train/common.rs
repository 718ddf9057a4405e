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

/// EM-FT on the oracle's fixed samples in file order: `steps` steps of `batch_size`, lr 1e-2.
pub fn oracle_samples_run(model: PathBuf, steps: usize, batch_size: usize) -> em_train::RunConfig {
    em_train::RunConfig {
        model,
        data: em_train::DataSource::Samples {
            path: oracle_dir().join("samples.jsonl"),
        },
        steps,
        batch_size,
        optimizer: em_train::OptimizerConfig {
            lr: 1e-2,
            ..em_train::OptimizerConfig::default()
        },
        ..em_train::RunConfig::default()
    }
}

/// The metrics lines of an EM-FT run into `out` on flex.
#[cfg(feature = "flex")]
pub fn em_ft_metrics(run: &em_train::RunConfig, out: &Path) -> Vec<em_train::StepMetrics> {
    let mut lines = Vec::new();
    em_train::run_em_ft(run, out, false, &Device::flex(), |e| {
        if let em_train::Event::Metrics(m) = e {
            lines.push((*m).clone());
        }
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    lines
}

/// Writes JSON Lines.
pub fn write_jsonl(dir: &Path, name: &str, lines: &[serde_json::Value]) -> PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

/// A prompts file, `{"problem": ...}` per line.
pub fn prompts_file(dir: &Path, prompts: &[&str]) -> PathBuf {
    let lines: Vec<serde_json::Value> = prompts
        .iter()
        .map(|p| serde_json::json!({ "problem": p }))
        .collect();
    write_jsonl(dir, "prompts.jsonl", &lines)
}

/// Asserts that the weights of checkpoint `ours` match the oracle's file `golden` to `tol`
/// (relative, per tensor) and that the update from `initial` matches to 1e-3: a far stricter
/// test than the weights.
pub fn assert_weights_match(ours: &Path, golden: &Path, initial: &Path, tol: f64, what: &str) {
    let ours = tensors(ours);
    let theirs = tensors(golden);
    let initial = tensors(initial);
    assert_eq!(ours.len(), theirs.len(), "{what}: tensor count");
    for ((name, a), ((tname, b), (_, p0))) in ours.iter().zip(theirs.iter().zip(&initial)) {
        assert_eq!(name, tname);
        let r = rel(a, b);
        assert!(r <= tol, "{what} {name}: rel {r:e}");
        let da: Vec<f64> = a.iter().zip(p0).map(|(x, y)| x - y).collect();
        let db: Vec<f64> = b.iter().zip(p0).map(|(x, y)| x - y).collect();
        let r = rel(&da, &db);
        assert!(r <= 1e-3, "{what} {name}: update rel {r:e}");
    }
}
