//! Checkpoint loading: sharded and single files, dtypes, and a typed error naming the culprit for
//! every kind of damage.

use std::path::Path;

use burn::tensor::Device;
use em_models::{Checkpoint, LoadOptions, ModelError, Qwen2ForCausalLM};

use crate::common::*;

fn load_dir(dir: &Path) -> Result<Qwen2ForCausalLM, ModelError> {
    Qwen2ForCausalLM::from_dir(dir, &Device::flex(), &LoadOptions::default())
}

/// Rewrites one safetensors file through `f(header, data)`.
fn rewrite(
    path: &Path,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>, &mut Vec<u8>),
) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    f(header.as_object_mut().unwrap(), &mut data);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// Removes a tensor from the header and its bytes from the data, shifting later offsets, so the
/// file stays a valid safetensors file that merely lacks the tensor.
fn drop_tensor(
    header: &mut serde_json::Map<String, serde_json::Value>,
    data: &mut Vec<u8>,
    name: &str,
) {
    let offsets = |v: &serde_json::Value| -> (usize, usize) {
        let o = v["data_offsets"].as_array().unwrap();
        (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        )
    };
    let (start, end) = offsets(&header.remove(name).unwrap());
    data.drain(start..end);
    for (key, entry) in header.iter_mut() {
        if key == "__metadata__" {
            continue;
        }
        let (s, e) = offsets(entry);
        if s >= end {
            entry["data_offsets"] = serde_json::json!([s - (end - start), e - (end - start)]);
        }
    }
}

#[test]
fn sharded_checkpoint_reads_all_shards() {
    let ckpt = Checkpoint::open(fixture("qwen2-untied")).unwrap();
    assert!(ckpt.contains("lm_head.weight") && ckpt.contains("model.embed_tokens.weight"));
    assert_eq!(
        ckpt.names().len(),
        2 + 2 * 12 + 1,
        "embed + norm + 2 layers × 12 + lm_head"
    );
}

#[test]
fn tied_checkpoint_has_no_lm_head() {
    let model = load("qwen2-tied", &Device::flex());
    assert!(model.lm_head.is_none());
    let model = load("llama", &Device::flex());
    assert!(model.lm_head.is_some());
    assert!(
        model.model.layers[0].self_attn.q_proj.bias.is_none(),
        "llama has no q bias"
    );
}

#[test]
fn missing_weights_file() {
    let dir = scratch_copy("qwen2-tied");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::Io { ref path, .. } if path.ends_with("model.safetensors")),
        "{err}"
    );
}

#[test]
fn missing_shard_named_in_index() {
    let dir = scratch_copy("qwen2-untied");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch_copy("qwen2-tied");
    rewrite(&dir.path().join("model.safetensors"), |h, data| {
        drop_tensor(h, data, "model.layers.1.mlp.up_proj.weight");
    });
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor { ref name, .. } if name == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let dir = scratch_copy("qwen2-tied");
    rewrite(&dir.path().join("model.safetensors"), |h, _| {
        // same byte count, transposed shape
        h["model.layers.0.mlp.gate_proj.weight"]["shape"] = serde_json::json!([16, 40]);
    });
    let err = load_dir(dir.path()).unwrap_err();
    match err {
        ModelError::ShapeMismatch {
            name,
            expected,
            got,
        } => {
            assert_eq!(name, "model.layers.0.mlp.gate_proj.weight");
            assert_eq!((expected, got), (vec![40, 16], vec![16, 40]));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = scratch_copy("qwen2-tied");
    rewrite(&dir.path().join("model.safetensors"), |h, _| {
        // BF16 [320, 16] = 10,240 bytes = I32 [320, 8]... keep bytes consistent: 16-bit → I16
        h["model.embed_tokens.weight"]["dtype"] = "I16".into();
    });
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedDtype { ref name, ref dtype, .. }
            if name == "model.embed_tokens.weight" && dtype == "I16"),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_files() {
    let dir = scratch_copy("qwen2-tied");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::Safetensors { .. }),
        "truncated: {err}"
    );

    std::fs::write(&path, b"not a safetensors file at all").unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::Safetensors { .. }),
        "garbage: {err}"
    );

    std::fs::write(&path, []).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::Safetensors { .. }),
        "empty: {err}"
    );
}

#[test]
fn runtime_dtype_is_selectable() {
    // f16 weights on the device; logits still come back f32 and close to the f32 model's.
    // flex only: Mesa's lavapipe (our wgpu test device) has no shader-f16 support.
    let device = Device::flex();
    let f32_model = load("llama", &device);
    let f16_model = Qwen2ForCausalLM::from_dir(
        fixture("llama"),
        &device,
        &LoadOptions {
            dtype: burn::tensor::DType::F16,
        },
    )
    .unwrap();
    assert_eq!(
        f16_model.model.embed_tokens.weight.val().dtype(),
        burn::tensor::DType::F16
    );
    let ids = ids_tensor(&[vec![1, 2, 3, 4]], &device);
    let mut c1 = f32_model.new_cache(1, 8);
    let mut c2 = f16_model.new_cache(1, 8);
    let (a, _) = to_vec3(
        f32_model
            .forward(ids.clone(), &mut c1, em_models::Logits::All)
            .unwrap(),
    );
    let b = f16_model
        .forward(ids, &mut c2, em_models::Logits::All)
        .unwrap();
    assert_eq!(b.dtype(), burn::tensor::DType::F32);
    let (b, _) = to_vec3(b);
    let a64: Vec<f64> = a.iter().map(|x| f64::from(*x)).collect();
    let diff = max_abs_diff(&b, &a64);
    // f16 activations (11-bit mantissa) over a 2-layer model with |logits| ~ 5: ~1e-2 expected.
    assert!(diff < 0.1, "f16 vs f32 logits differ by {diff}");
}
