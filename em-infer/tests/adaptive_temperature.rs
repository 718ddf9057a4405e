//! Adaptive temperature against the numpy port in `fixtures/em_inf_oracle.py` (regenerate with
//! the command in its header) and the f64 host twin `em_infer::reference::adaptive_temperature`.
#![allow(clippy::unwrap_used)]

mod common;
use common::devices;

use burn::tensor::{Device, Tensor, TensorData};
use em_infer::{AdaptiveTemperatureConfig, InferError, adaptive_temperature, reference};

struct Case {
    alpha: f64,
    logits: Vec<f32>,
    tau: f64,
}

fn golden() -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/em_inf_golden.json")).unwrap();
    json["adaptive"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            alpha: c["alpha"].as_f64().unwrap(),
            logits: c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
            tau: c["tau"].as_f64().unwrap(),
        })
        .collect()
}

#[test]
fn f64_twin_matches_numpy_port() {
    for (i, case) in golden().iter().enumerate() {
        let config = AdaptiveTemperatureConfig {
            alpha: case.alpha,
            ..Default::default()
        };
        let row: Vec<f64> = case.logits.iter().map(|x| f64::from(*x)).collect();
        // The same sequence of midpoints: exactly equal unless a decision flipped.
        assert_eq!(
            reference::adaptive_temperature(&row, &config),
            case.tau,
            "case {i}"
        );
    }
}

/// Each row of one batch gets the numpy τ, and the logits are `z / τ`. τ is a sequence of
/// midpoints computed in f64 on both sides, so it is equal unless an f32 entropy fell on the
/// other side of a decision than numpy's f64 one, which would change τ by at least the final
/// bisection interval (≫ 1e-12).
#[test]
fn batched_devices_match_numpy_port() {
    let cases = golden();
    for alpha in [0.85, 0.5] {
        let rows: Vec<&Case> = cases
            .iter()
            .filter(|c| c.alpha == alpha && c.logits.len() == 16)
            .collect();
        for (name, device) in devices() {
            let config = AdaptiveTemperatureConfig {
                alpha,
                ..Default::default()
            };
            let flat: Vec<f32> = rows.iter().flat_map(|c| c.logits.clone()).collect();
            let x =
                Tensor::<2>::from_data(TensorData::new(flat.clone(), [rows.len(), 16]), &device);
            let out = adaptive_temperature(x, &config, 0).unwrap();
            let got: Vec<f64> = out
                .logits
                .into_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap();
            for (r, case) in rows.iter().enumerate() {
                assert!(
                    (out.temperatures[r] - case.tau).abs() < 1e-12,
                    "{name} α {alpha} row {r}"
                );
                for j in 0..16 {
                    let want = f64::from(case.logits[j]) / case.tau;
                    assert!(
                        (got[r * 16 + j] - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{name} row {r}"
                    );
                }
            }
        }
    }
    // The remaining rows one at a time (different vocabularies).
    for (name, device) in devices() {
        for (i, case) in cases.iter().enumerate() {
            let config = AdaptiveTemperatureConfig {
                alpha: case.alpha,
                ..Default::default()
            };
            let x = Tensor::<2>::from_data(
                TensorData::new(case.logits.clone(), [1, case.logits.len()]),
                &device,
            );
            let out = adaptive_temperature(x, &config, 0).unwrap();
            assert!(
                (out.temperatures[0] - case.tau).abs() < 1e-12,
                "{name} case {i}: {} vs {}",
                out.temperatures[0],
                case.tau
            );
        }
    }
}

#[test]
fn confident_rows_are_untouched() {
    let device = Device::default();
    let mut row = vec![0.0f32; 40];
    row[3] = 40.0; // H ≈ 1e-15 < δ
    let x = Tensor::<2>::from_data(TensorData::new(row.clone(), [1, 40]), &device);
    let out = adaptive_temperature(x, &AdaptiveTemperatureConfig::default(), 0).unwrap();
    assert_eq!(out.temperatures, vec![1.0]);
    let got: Vec<f32> = out.logits.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(got, row);
}

#[test]
fn bad_config_and_bad_logits_are_typed_errors() {
    let device = Device::default();
    let x = || {
        Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.5, f32::NAN], [2, 2]),
            &device,
        )
    };
    let bad = [
        (
            "alpha",
            AdaptiveTemperatureConfig {
                alpha: 0.0,
                ..Default::default()
            },
        ),
        (
            "alpha",
            AdaptiveTemperatureConfig {
                alpha: 1.5,
                ..Default::default()
            },
        ),
        (
            "delta",
            AdaptiveTemperatureConfig {
                delta: f64::NAN,
                ..Default::default()
            },
        ),
        (
            "tau_min",
            AdaptiveTemperatureConfig {
                tau_min: 0.0,
                ..Default::default()
            },
        ),
        (
            "tau_max",
            AdaptiveTemperatureConfig {
                tau_max: 0.005,
                ..Default::default()
            },
        ),
        (
            "tolerance",
            AdaptiveTemperatureConfig {
                tolerance: -1.0,
                ..Default::default()
            },
        ),
    ];
    for (field, config) in bad {
        let err = adaptive_temperature(x(), &config, 0).unwrap_err();
        assert!(
            matches!(err, InferError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
    let err = adaptive_temperature(x(), &AdaptiveTemperatureConfig::default(), 4).unwrap_err();
    assert!(
        matches!(err, InferError::NonFiniteLogits { step: 4, row: 1 }),
        "{err}"
    );
}
