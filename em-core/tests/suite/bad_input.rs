//! Mis-shaped input panics with a message naming both shapes (ranks are checked by the type
//! system: `entropy` only accepts a `Tensor<2>`).
#![cfg(feature = "flex")]

use burn::tensor::Device;
use em_core::{
    EntropyLossConfig, Reduction, entropy, entropy_grad, k3_kl, kl_divergence, masked_reduce,
    token_entropy, token_log_probs,
};

use crate::common::*;

fn device() -> Device {
    Device::flex()
}

#[test]
#[should_panic(
    expected = "em_core::token_log_probs: ids shape [2, 2] does not match logits [batch, seq] shape [2, 3]"
)]
fn log_probs_ids_shape_mismatch() {
    let d = device();
    let _ = token_log_probs(
        tensor3(&[0.0; 24], [2, 3, 4], &d),
        ids2(&[0; 4], [2, 2], &d),
    );
}

#[test]
#[should_panic(
    expected = "em_core::kl_divergence: reference_logits shape [2, 4] does not match logits shape [2, 5]"
)]
fn kl_shape_mismatch() {
    let d = device();
    let _ = kl_divergence(
        tensor2(&[0.0; 8], [2, 4], &d),
        tensor2(&[0.0; 10], [2, 5], &d),
    );
}

#[test]
#[should_panic(
    expected = "em_core::k3_kl: log_probs shape [1, 3] does not match ref_log_probs shape [3, 1]"
)]
fn k3_shape_mismatch() {
    let d = device();
    let _ = k3_kl(
        tensor2(&[0.0; 3], [1, 3], &d),
        tensor2(&[0.0; 3], [3, 1], &d),
    );
}

#[test]
#[should_panic(
    expected = "em_core::masked_reduce: values shape [2, 3] does not match mask shape [3, 2]"
)]
fn mask_shape_mismatch() {
    let d = device();
    let _ = masked_reduce(
        tensor2(&[0.0; 6], [2, 3], &d),
        mask2(&[true; 6], [3, 2], &d),
        Reduction::Sum,
    );
}

#[test]
#[should_panic(
    expected = "em_core::EntropyLoss::forward: mask shape [2, 2] does not match logits [batch, seq] shape [2, 3]"
)]
fn loss_mask_shape_mismatch() {
    let d = device();
    let loss = EntropyLossConfig::new().init();
    let _ = loss.forward(
        tensor3(&[0.0; 24], [2, 3, 4], &d),
        mask2(&[true; 4], [2, 2], &d),
    );
}

#[test]
#[should_panic(
    expected = "em_core::entropy: the vocabulary (last) dimension is empty, shape [2, 0]"
)]
fn empty_vocabulary_entropy() {
    let _ = entropy(burn::tensor::Tensor::<2>::empty([2, 0], &device()));
}

#[test]
#[should_panic(expected = "em_core::entropy_grad: the vocabulary (last) dimension is empty")]
fn empty_vocabulary_grad() {
    let _ = entropy_grad(burn::tensor::Tensor::<2>::empty([2, 0], &device()));
}

#[test]
#[should_panic(
    expected = "em_core::token_entropy: the vocabulary (last) dimension is empty, shape [1, 2, 0]"
)]
fn empty_vocabulary_token_entropy() {
    let _ = token_entropy(burn::tensor::Tensor::<3>::empty([1, 2, 0], &device()));
}

#[test]
fn reduction_config_round_trips_through_json() {
    let config = EntropyLossConfig::new().with_reduction(Reduction::SequenceMean);
    let json = serde_json::to_string(&config).unwrap();
    let back: EntropyLossConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.reduction, Reduction::SequenceMean);
    assert!(serde_json::from_str::<EntropyLossConfig>(r#"{"reduction":"Median"}"#).is_err());
}
