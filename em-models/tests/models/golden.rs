//! Every fixture's logits at every position equal the float64 numpy forward of
//! `tests/fixtures/gen_fixtures.py` (an independent implementation) within 1e-4.

use crate::backend_tests;
use crate::common::*;

fn logits_match_numpy(b: &TestBackend) {
    for name in FIXTURES {
        let diff = numpy_logits_error(&load(name, &b.device), name);
        // f32 compute of a 2-layer model with O(1) activations: observed ~1e-6; 1e-4 is the bar.
        assert!(diff <= 1e-4, "{}: {name} max |Δlogit| = {diff:e}", b.name);
    }
}

backend_tests!(logits_match_numpy);
