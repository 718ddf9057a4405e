//! em-core's integration suite, one binary (each integration binary links all of burn).
//!
//! Every numerical test compares against an independent oracle: the f64 textbook implementations
//! in `em_core::reference`, f64 central finite differences, closed forms, or golden values from
//! numpy (`golden/`). Each test runs once per enabled backend (`flex::…`, `wgpu::…`).
#![allow(clippy::unwrap_used)]

mod common;

mod bad_input;
mod cross_backend;
mod dtypes;
mod fused;
mod golden;
mod gradients;
mod invariants;
mod oracle;
