//! Every fixture's logits at every position equal the float64 numpy forward of
//! `tests/fixtures/gen_fixtures.py` (an independent implementation) within 1e-4.

use em_models::{CausalLm, Logits};

use crate::backend_tests;
use crate::common::*;

fn logits_match_numpy(b: &TestBackend) {
    let golden = golden();
    let ids: Vec<u32> = golden["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    for name in FIXTURES {
        let model = load(name, &b.device);
        let mut cache = model.new_cache(1, 16);
        let logits = CausalLm::forward(
            &model,
            ids_tensor(std::slice::from_ref(&ids), &b.device),
            &mut cache,
            Logits::All,
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
        let diff = max_abs_diff(&got, &expected);
        // f32 compute of a 2-layer model with O(1) activations: observed ~1e-6; 1e-4 is the bar.
        assert!(diff <= 1e-4, "{}: {name} max |Δlogit| = {diff:e}", b.name);
    }
}

backend_tests!(logits_match_numpy);
