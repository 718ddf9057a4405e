//! Device RoPE (rotate-half on tensors) against its slow f64 twin (explicit 2×2 rotations), with
//! plain and Llama-3-scaled frequencies, and the Llama-3 frequency formula against a closed form.

use burn::tensor::{Tensor, TensorData};
use em_models::Qwen2Config;
use em_models::rope::{RotaryEmbedding, apply_rope, reference_rope};

use crate::backend_tests;
use crate::common::*;

fn rope_matches_reference_twin(b: &TestBackend) {
    for name in ["qwen2-untied", "llama"] {
        let config = Qwen2Config::from_file(fixture(name).join("config.json")).unwrap();
        let rope = RotaryEmbedding::new(&config);
        let (heads, head_dim, seq) = (3, config.head_size(), 7);
        // two rows with different positions (as a left-padded batch has)
        let positions = vec![(0..seq).collect::<Vec<_>>(), (40..40 + seq).collect()];
        let mut x = Vec::new();
        let mut state = 1u64;
        for _ in 0..2 * seq * heads * head_dim {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x.push(((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32);
        }
        // device layout [b, h, s, d] from host layout [b, s, h, d]
        let t = Tensor::<4>::from_data(
            TensorData::new(x.clone(), [2, seq, heads, head_dim]),
            &b.device,
        )
        .swap_dims(1, 2);
        let (cos, sin) = rope.tables(&positions, &b.device, burn::tensor::DType::F32);
        let got: Vec<f32> = apply_rope(t, &cos, &sin)
            .swap_dims(1, 2)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let row = seq * heads * head_dim;
        for (r, pos) in positions.iter().enumerate() {
            let mut expected: Vec<f64> = x[r * row..(r + 1) * row]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            reference_rope(&mut expected, pos, heads, rope.inv_freq());
            let diff = max_abs_diff(&got[r * row..(r + 1) * row], &expected);
            assert!(diff < 1e-6, "{}: {name} row {r}: {diff:e}", b.name);
        }
    }
}

backend_tests!(rope_matches_reference_twin);

#[test]
fn llama3_scaling_closed_form() {
    // head_dim 8, theta 10^4: frequencies 1, 0.1, 0.01, 0.001, wavelengths 2π·{1, 10, 100, 1000};
    // with original context 64, low 1, high 8 these are kept (< 8), smoothed (8..64), divided (> 64).
    let text = r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 16,
        "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 8.0, "original_max_position_embeddings": 64}}"#;
    let config = Qwen2Config::from_json_str(text, "<test>").unwrap();
    let f = RotaryEmbedding::new(&config).inv_freq().to_vec();
    let base = [1.0, 0.1, 0.01, 0.001];
    assert!((f[0] - base[0]).abs() < 1e-15);
    let wavelen = 2.0 * std::f64::consts::PI / base[1];
    let smooth = (64.0 / wavelen - 1.0) / (8.0 - 1.0);
    let expected = (1.0 - smooth) * base[1] / 4.0 + smooth * base[1];
    assert!((f[1] - expected).abs() < 1e-15, "{} vs {expected}", f[1]);
    assert!((f[2] - base[2] / 4.0).abs() < 1e-15);
    assert!((f[3] - base[3] / 4.0).abs() < 1e-15);
}
