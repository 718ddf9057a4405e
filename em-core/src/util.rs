//! Shape checks shared by the numerical kernels (the softmax parts live in
//! [`crate::softmax`]).

/// Panics unless the last dimension (the vocabulary) is non-empty.
pub(crate) fn assert_vocab<const D: usize>(op: &str, dims: [usize; D]) {
    assert!(
        dims[D - 1] > 0,
        "em_core::{op}: the vocabulary (last) dimension is empty, shape {dims:?}"
    );
}

/// Panics unless two shapes are equal, naming both.
pub(crate) fn assert_same_shape<const D: usize>(
    op: &str,
    what_a: &str,
    a: [usize; D],
    what_b: &str,
    b: [usize; D],
) {
    assert!(
        a == b,
        "em_core::{op}: {what_a} shape {a:?} does not match {what_b} shape {b:?}"
    );
}
