//! Helpers shared by em-infer's integration tests.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor};

/// Every backend compiled into the test binary, named.
#[allow(clippy::vec_init_then_push)] // one push per enabled feature
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut out = Vec::new();
    #[cfg(feature = "flex")]
    out.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    out.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    out
}

/// A 2-D tensor's values on the host, widened to f64.
pub fn host(t: Tensor<2>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}
