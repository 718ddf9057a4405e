//! `config.json`: HF field names, unknown keys ignored, and a typed error for each kind of bad file.

use std::path::Path;

use em_models::{Architecture, ModelError, Qwen2Config};

use crate::common::fixture;

const GOOD: &str = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
  "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
  "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "tie_word_embeddings": true, "sliding_window": 32768,
  "use_sliding_window": false, "torch_dtype": "bfloat16", "some_future_key": {"x": 1}}"#;

fn parse(text: &str) -> Result<Qwen2Config, ModelError> {
    Qwen2Config::from_json_str(text, "config.json")
}

fn edit(f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    f(v.as_object_mut().unwrap());
    v.to_string()
}

#[test]
fn qwen25_config_parses_with_hf_names() {
    let c = parse(GOOD).unwrap();
    assert_eq!(
        c.architecture(Path::new("config.json")).unwrap(),
        Architecture::Qwen2
    );
    assert_eq!(
        (c.hidden_size, c.kv_heads(), c.head_size(), c.vocab_size),
        (896, 2, 64, 151_936)
    );
    assert!(c.tie_word_embeddings);
    assert!(c.qkv_bias(Architecture::Qwen2) && !c.o_bias(Architecture::Qwen2));
    assert_eq!(c.rope_theta, 1e6);
}

#[test]
fn fixture_configs_parse() {
    for name in crate::common::FIXTURES {
        Qwen2Config::from_file(fixture(name).join("config.json")).unwrap();
    }
}

#[test]
fn missing_required_key_is_named() {
    for key in [
        "hidden_size",
        "vocab_size",
        "num_hidden_layers",
        "rms_norm_eps",
    ] {
        let err = parse(&edit(|m| {
            m.remove(key);
        }))
        .unwrap_err();
        assert!(
            matches!(err, ModelError::MissingKey { key: k, .. } if k == key),
            "{err}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn malformed_json_and_wrong_types() {
    let err = parse("{\"hidden_size\": 896,").unwrap_err();
    assert!(matches!(err, ModelError::Json { .. }), "{err}");
    let err = parse(&edit(|m| {
        m.insert("hidden_size".into(), "wide".into());
    }))
    .unwrap_err();
    assert!(
        matches!(err, ModelError::Json { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );
    let err = parse("[1, 2]").unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig { .. }), "{err}");
}

#[test]
fn missing_file_is_io_error() {
    let err = Qwen2Config::from_file("/nonexistent/config.json").unwrap_err();
    assert!(
        matches!(err, ModelError::Io { .. })
            && err.to_string().contains("/nonexistent/config.json")
    );
}

#[test]
fn unsupported_architecture() {
    let err = parse(&edit(|m| {
        m.insert(
            "architectures".into(),
            serde_json::json!(["MistralForCausalLM"]),
        );
        m.insert("model_type".into(), "mistral".into());
    }))
    .unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("MistralForCausalLM"));
    // model_type alone is enough
    let c = parse(&edit(|m| {
        m.remove("architectures");
        m.insert("model_type".into(), "llama".into());
    }))
    .unwrap();
    assert_eq!(c.architecture(Path::new("x")).unwrap(), Architecture::Llama);
}

#[test]
fn invalid_values_are_rejected_by_key() {
    let cases: [(&str, serde_json::Value, &str); 7] = [
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
        ("num_attention_heads", serde_json::json!(12), "hidden_size"),
        ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        (
            "use_sliding_window",
            serde_json::json!(true),
            "use_sliding_window",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_scaling",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "rope_scaling",
        ),
    ];
    for (key, value, named) in cases {
        let err = parse(&edit(|m| {
            m.insert(key.into(), value.clone());
        }))
        .unwrap_err();
        assert!(
            matches!(&err, ModelError::InvalidConfig { key: k, .. } if *k == named),
            "{key} = {value}: {err}"
        );
    }
}
