//! `save_pretrained` and `Qwen2Config::init`: load → save → load is bit-identical (f32, f64,
//! bf16, f16; tied, untied, Llama; single file and shards), the saved directory gives the numpy
//! reference's logits, the layout is Hugging Face's, a failed save leaves nothing behind, and
//! bad requests are typed errors.

use std::path::Path;

use burn::tensor::{DType, Device};
use em_models::{
    Checkpoint, LoadOptions, Logits, ModelError, Qwen2Config, Qwen2ForCausalLM, SaveOptions,
    named_params, parse_dtype, parse_size,
};

use crate::common::*;

/// Every parameter's name and values (exactly, as f64) in module order.
fn host_params(model: &Qwen2ForCausalLM) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    named_params(model)
        .into_iter()
        .map(|p| (p.name, p.shape, host_f64(p.flat)))
        .collect()
}

fn config_of(name: &str) -> Qwen2Config {
    Qwen2Config::from_file(fixture(name).join("config.json")).unwrap()
}

fn load_as(dir: &Path, dtype: DType) -> Qwen2ForCausalLM {
    Qwen2ForCausalLM::from_dir(dir, &Device::flex(), &LoadOptions { dtype }).unwrap()
}

fn save(
    model: &Qwen2ForCausalLM,
    config: &Qwen2Config,
    source: Option<&Path>,
    out: &Path,
    options: SaveOptions,
) {
    model
        .save_pretrained(config, source, out, &options)
        .unwrap();
}

/// JSON with every number as f64 (`64` and `64.0` are the same value to transformers).
fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
        serde_json::Value::Array(a) => a.iter().map(numbers_as_f64).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
            .collect(),
        other => other.clone(),
    }
}

#[test]
fn f32_round_trip_is_bit_identical_and_hf_shaped() {
    for name in FIXTURES {
        let model = load(name, &Device::flex());
        let config = config_of(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        save(
            &model,
            &config,
            Some(&fixture(name)),
            &out,
            SaveOptions::default(),
        );

        let again = load_as(&out, DType::F32);
        assert_eq!(host_params(&model), host_params(&again), "{name}");

        // HF layout: [out, in] projections, lm_head only when untied, format "pt".
        let ckpt = Checkpoint::open(&out).unwrap();
        assert_eq!(
            ckpt.contains("lm_head.weight"),
            !config.tie_word_embeddings,
            "{name}"
        );
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let header = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
        assert_eq!(
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
        let q = header
            .info("model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(
            q.shape,
            vec![
                config.num_attention_heads * config.head_size(),
                config.hidden_size
            ],
            "[out, in]"
        );
        // The saved bytes equal the source file's tensors (the fixtures are f32).
        let source = Checkpoint::open(fixture(name)).unwrap();
        for tensor in ckpt.names() {
            let shape = header.info(tensor).unwrap().shape.clone();
            assert_eq!(
                ckpt.read_f32(tensor, &shape).unwrap(),
                source.read_f32(tensor, &shape).unwrap(),
                "{name}: {tensor}"
            );
        }

        // Every key of the source config kept, torch_dtype set; other files copied.
        let (src, saved) = (
            json(&fixture(name).join("config.json")),
            json(&out.join("config.json")),
        );
        for (key, value) in src.as_object().unwrap() {
            if key != "torch_dtype" {
                assert_eq!(
                    saved.get(key).map(numbers_as_f64),
                    Some(numbers_as_f64(value)),
                    "{name}: {key}"
                );
            }
        }
        assert_eq!(saved["torch_dtype"], "float32");
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            if fixture(name).join(file).exists() {
                assert_eq!(
                    std::fs::read(fixture(name).join(file)).unwrap(),
                    std::fs::read(out.join(file)).unwrap(),
                    "{name}: {file}"
                );
            }
        }
        // No temporary directory left next to the output.
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{name}: {left:?}");
    }
}

#[test]
fn sixteen_bit_and_f64_round_trips() {
    let name = "qwen2-untied";
    let model = load(name, &Device::flex());
    let config = config_of(name);
    let f32_params = host_params(&model);
    for (dtype, torch) in [
        (DType::BF16, "bfloat16"),
        (DType::F16, "float16"),
        (DType::F64, "float64"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("first");
        save(
            &model,
            &config,
            Some(&fixture(name)),
            &first,
            SaveOptions {
                dtype,
                ..SaveOptions::default()
            },
        );
        assert_eq!(json(&first.join("config.json"))["torch_dtype"], torch);
        let loaded = load_as(&first, dtype);
        // The saved values are the f32 weights rounded to the dtype (an independent rounding:
        // the `half` crate's, through f32).
        for ((n, _, expected), (m, _, got)) in f32_params.iter().zip(host_params(&loaded)) {
            assert_eq!(n, &m);
            let rounded: Vec<f64> = expected
                .iter()
                .map(|&x| match dtype {
                    DType::BF16 => half::bf16::from_f64(x).to_f64(),
                    DType::F16 => half::f16::from_f64(x).to_f64(),
                    _ => x,
                })
                .collect();
            assert_eq!(rounded, got, "{dtype:?} {n}");
        }
        // Loading the saved checkpoint in its dtype and saving again gives the same bytes.
        let second = tmp.path().join("second");
        save(
            &loaded,
            &config,
            Some(&first),
            &second,
            SaveOptions {
                dtype,
                ..SaveOptions::default()
            },
        );
        assert_eq!(
            std::fs::read(first.join("model.safetensors")).unwrap(),
            std::fs::read(second.join("model.safetensors")).unwrap(),
            "{dtype:?}"
        );
    }
}

#[test]
fn sharded_save_loads_back_and_gives_the_numpy_logits() {
    for name in FIXTURES {
        let model = load(name, &Device::flex());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("sharded");
        save(
            &model,
            &config_of(name),
            Some(&fixture(name)),
            &out,
            SaveOptions {
                max_shard_size: 8_000,
                ..SaveOptions::default()
            },
        );
        let index = json(&out.join("model.safetensors.index.json"));
        let files: std::collections::BTreeSet<&str> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(files.len() > 2, "{name}: {files:?}");
        assert!(!out.join("model.safetensors").exists());
        let total: u64 = named_params(&model)
            .iter()
            .map(|p| p.numel() as u64 * 4)
            .sum();
        assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
        let again = load_as(&out, DType::F32);
        assert_eq!(host_params(&model), host_params(&again), "{name}");

        let diff = numpy_logits_error(&again, name);
        assert!(diff <= 1e-4, "{name}: max |Δlogit| = {diff:e}");
    }
}

#[test]
fn existing_output_unknown_dtype_and_failed_saves() {
    let model = load("qwen2-tied", &Device::flex());
    let config = config_of("qwen2-tied");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "old").unwrap();
    let err = model
        .save_pretrained(&config, None, &out, &SaveOptions::default())
        .unwrap_err();
    assert!(matches!(err, ModelError::OutputExists { .. }), "{err}");
    assert!(
        out.join("keep.txt").exists(),
        "a refused save touches nothing"
    );
    model
        .save_pretrained(
            &config,
            None,
            &out,
            &SaveOptions {
                overwrite: true,
                ..SaveOptions::default()
            },
        )
        .unwrap();
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").exists());

    let err = model
        .save_pretrained(
            &config,
            None,
            tmp.path().join("int"),
            &SaveOptions {
                dtype: DType::I32,
                ..SaveOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::UnknownDtype { .. }), "{err}");
    assert!(matches!(
        parse_dtype("int8"),
        Err(ModelError::UnknownDtype { .. })
    ));
    assert_eq!(parse_dtype("bfloat16").unwrap(), DType::BF16);
    assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("1234").unwrap(), 1234);
    for bad in ["", "GB", "-1GB", "2XB", "0"] {
        assert!(
            matches!(parse_size(bad), Err(ModelError::InvalidSize { .. })),
            "{bad}"
        );
    }

    // A save that fails after the weights are written (a source file that cannot be copied)
    // leaves neither the output nor a temporary directory.
    let source = scratch_copy("qwen2-tied");
    std::os::unix::fs::symlink("/nonexistent/file", source.path().join("broken.json")).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let failed = parent.path().join("failed");
    let err = model
        .save_pretrained(
            &config,
            Some(source.path()),
            &failed,
            &SaveOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    assert!(!failed.exists());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn truncated_saved_file_is_a_typed_error() {
    let model = load("qwen2-tied", &Device::flex());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    save(
        &model,
        &config_of("qwen2-tied"),
        None,
        &out,
        SaveOptions::default(),
    );
    let path = out.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err =
        Qwen2ForCausalLM::from_dir(&out, &Device::flex(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
}

#[test]
fn init_is_seeded_follows_hf_and_saves() {
    let mut config = config_of("qwen2-untied");
    config
        .extra
        .insert("initializer_range".into(), serde_json::json!(0.05));
    config.extra.insert(
        "some_future_key".into(),
        serde_json::json!({"kept": [1, 2]}),
    );
    let device = Device::flex();
    let a = config.init(&device, DType::F32, 7).unwrap();
    let b = config.init(&device, DType::F32, 7).unwrap();
    let c = config.init(&device, DType::F32, 8).unwrap();
    let (pa, pb, pc) = (host_params(&a), host_params(&b), host_params(&c));
    assert_eq!(pa, pb, "same seed, same weights");
    assert_ne!(pa, pc, "another seed, other weights");
    let mut drawn = Vec::new();
    for (name, _, values) in &pa {
        if name.ends_with("norm.weight") {
            assert!(values.iter().all(|&v| v == 1.0), "{name}");
        } else if name.ends_with(".bias") {
            assert!(values.iter().all(|&v| v == 0.0), "{name}");
        } else {
            drawn.extend_from_slice(values);
        }
    }
    let n = drawn.len() as f64;
    let mean = drawn.iter().sum::<f64>() / n;
    let std = (drawn.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // ~20k draws: the sample std is within a few percent of 0.05 and the mean near 0.
    assert!((std - 0.05).abs() < 0.05 * 0.05, "std {std}");
    assert!(mean.abs() < 0.05 * 0.03, "mean {mean}");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fresh");
    save(&a, &config, None, &out, SaveOptions::default());
    assert_eq!(host_params(&load_as(&out, DType::F32)), pa);
    let saved = Qwen2Config::from_file(out.join("config.json")).unwrap();
    assert_eq!(saved.initializer_range(), 0.05);
    assert_eq!(
        saved.extra["some_future_key"],
        serde_json::json!({"kept": [1, 2]})
    );

    // An f64 model is f64 end to end: its logits come back in f64.
    let f64_model = config.init(&device, DType::F64, 7).unwrap();
    let mut cache = f64_model.new_cache(1, 8);
    let logits = f64_model
        .forward(
            ids_tensor(&[vec![1, 2, 3]], &device),
            &mut cache,
            Logits::All,
        )
        .unwrap();
    assert_eq!(logits.dtype(), DType::F64);
    // ... and equal to the f32 model's within f32 precision.
    let mut cache = a.new_cache(1, 8);
    let logits32 = a
        .forward(
            ids_tensor(&[vec![1, 2, 3]], &device),
            &mut cache,
            Logits::All,
        )
        .unwrap();
    let (l32, _) = to_vec3(logits32);
    let l64 = host_f64(logits);
    assert!(max_abs_diff(&l32, &l64) < 1e-4);

    // Keys the source wrote as null (HF's `"rope_scaling": null`) are written back as null.
    let mut text = json(&fixture("qwen2-tied").join("config.json"));
    text["rope_scaling"] = serde_json::Value::Null;
    text["sliding_window"] = serde_json::Value::Null;
    let with_nulls = Qwen2Config::from_json_str(&text.to_string(), "<test>").unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&with_nulls.to_json_with_dtype("float32")).unwrap();
    assert_eq!(saved.get("rope_scaling"), Some(&serde_json::Value::Null));
    assert_eq!(saved.get("sliding_window"), Some(&serde_json::Value::Null));
    assert_eq!(saved["num_key_value_heads"], 2);

    // A config the crate cannot run is refused by init too.
    let mut bad = config.clone();
    bad.hidden_act = Some("gelu".into());
    assert!(matches!(
        bad.init(&device, DType::F32, 0),
        Err(ModelError::InvalidConfig {
            key: "hidden_act",
            ..
        })
    ));
}
