//! EM-INF against three independent oracles: the numpy port of the released algorithm
//! (`fixtures/em_inf_oracle.py`, regenerate with the command in its header), the f64 host twin
//! `em_infer::reference::em_inf`, and a twin whose gradient comes from burn's autodiff through
//! `em_core::entropy` + `em_core::kl_divergence` instead of the closed form.
#![allow(clippy::unwrap_used)]

mod common;
use common::{devices, host};

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use em_infer::{EmInfConfig, InferError, em_inf, reference};

fn row_tensor(row: &[f32], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(row.to_vec(), [1, row.len()]), device)
}

struct Case {
    config: EmInfConfig,
    logits: Vec<f32>,
    expected: Vec<f64>,
    steps: usize,
}

fn golden() -> Vec<Case> {
    let text = include_str!("fixtures/em_inf_golden.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            config: EmInfConfig {
                threshold: c["config"]["threshold"].as_f64().unwrap(),
                kl_weight: c["config"]["kl_weight"].as_f64().unwrap(),
                learning_rate: c["config"]["learning_rate"].as_f64().unwrap(),
                n_grad_steps: c["config"]["n_grad_steps"].as_u64().unwrap() as usize,
            },
            logits: floats(&c["logits"]).iter().map(|x| *x as f32).collect(),
            expected: floats(&c["expected"]),
            steps: c["steps"].as_u64().unwrap() as usize,
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn f64_twin_matches_numpy_port() {
    for (i, case) in golden().iter().enumerate() {
        let row: Vec<f64> = case.logits.iter().map(|x| f64::from(*x)).collect();
        let (z, steps) = reference::em_inf(&row, &case.config);
        assert_eq!(steps, case.steps, "case {i}");
        // Both f64, same operations in a different order: agreement to rounding, amplified
        // where a gradient is itself rounding noise (the uniform row: |g| ~ 1e-17), since Adam
        // moves such an entry by lr·g/(|g| + 1e-8), i.e. multiplies g's rounding by up to 1e7:
        // ~1e-9 per step (measured 1.04e-8 after 15 steps on the uniform row).
        let diff = max_diff(&z, &case.expected);
        let tolerance = 2e-9 * case.config.n_grad_steps as f64;
        assert!(diff < tolerance, "case {i}: {diff:e}");
    }
}

#[cfg(feature = "flex")]
#[test]
fn f64_tensors_match_numpy_port() {
    let device = Device::flex();
    for (i, case) in golden().iter().enumerate() {
        let x = row_tensor(&case.logits, &device).cast(FloatDType::F64);
        let out = em_inf(x, &case.config, 0).unwrap();
        assert_eq!(out.logits.dtype(), DType::F64);
        assert_eq!(out.steps, vec![case.steps], "case {i}");
        let diff = max_diff(&host(out.logits), &case.expected);
        assert!(diff < 1e-9, "case {i}: {diff:e}");
    }
}

/// In f32 every device agrees with the f64 numpy port to 1e-5, with the same step counts.
/// Adam's first step moves each entry by lr·g/(|g| + ε) ≈ ±lr, a sign function of the
/// gradient, so an entry whose gradient is within f32 rounding of 0 could flip; none of the
/// fixed golden rows has one (the test would say which entry if that changed).
#[test]
fn f32_devices_match_numpy_port() {
    for (name, device) in devices() {
        for (i, case) in golden().iter().enumerate() {
            let out = em_inf(row_tensor(&case.logits, &device), &case.config, 0).unwrap();
            assert_eq!(out.logits.dtype(), DType::F32);
            assert_eq!(out.steps, vec![case.steps], "{name} case {i}");
            let got = host(out.logits);
            for (j, (g, e)) in got.iter().zip(&case.expected).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5,
                    "{name} case {i} entry {j}: {g} vs {e}"
                );
            }
        }
    }
}

/// Rows of one batch are independent: the batched result equals each row alone (the f64
/// twin), rows that start below the threshold are returned bit-for-bit, and the argmax never
/// changes (the paper's Prop. 1).
#[test]
fn batch_rows_are_independent_and_keep_their_argmax() {
    let config = EmInfConfig {
        threshold: 0.8,
        ..EmInfConfig::default()
    };
    let vocab = 300;
    let mut state = 99u64;
    let mut rows: Vec<Vec<f32>> = (0..5)
        .map(|r| {
            (0..vocab)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * (1.0 + 3.0 * r as f32)
                })
                .collect()
        })
        .collect();
    rows[2] = vec![0.0; vocab];
    rows[2][5] = 15.0; // H ≈ 1e-4: never updated
    rows[4][17] = f32::NEG_INFINITY; // a masked token stays masked
    let flat: Vec<f32> = rows.concat();
    for (name, device) in devices() {
        let x = Tensor::<2>::from_data(TensorData::new(flat.clone(), [5, vocab]), &device);
        let out = em_inf(x, &config, 7).unwrap();
        let got = host(out.logits);
        for (r, row) in rows.iter().enumerate() {
            let row64: Vec<f64> = row.iter().map(|x| f64::from(*x)).collect();
            let (want, steps) = reference::em_inf(&row64, &config);
            assert_eq!(out.steps[r], steps, "{name} row {r}");
            let got_row = &got[r * vocab..(r + 1) * vocab];
            if steps == 0 {
                assert_eq!(
                    got_row,
                    row64.as_slice(),
                    "{name} row {r} must be untouched"
                );
            }
            for (j, (g, w)) in got_row.iter().zip(&want).enumerate() {
                // f32 device vs f64: each Adam step moves an entry by lr·m̂/√v̂, a ratio of
                // gradients whose f32 relative error reaches ~1e-4 on small entries (see
                // em-core's gradient tolerances), so up to lr·1e-4 per step: 3e-5 over 3 steps.
                let ok = (g.is_infinite() && g == w) || (g - w).abs() <= 3e-5;
                assert!(ok, "{name} row {r} entry {j}: {g} vs {w}");
            }
            let argmax = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .fold(0, |m, (i, x)| if *x > v[m] { i } else { m })
            };
            assert_eq!(
                argmax(got_row),
                argmax(&row64),
                "{name} row {r}: argmax moved"
            );
        }
        assert!(
            out.steps[0] > 0 && out.steps[2] == 0,
            "{name}: {:?}",
            out.steps
        );
    }
}

/// The slow twin: the gradient from burn's autodiff through `entropy + λ·KL(p0‖p)` (the
/// paper's implementation builds this graph every step) and the update from burn's own Adam
/// (`burn::optim::Adam`, β 0.9/0.999, ε 1e-8), on the device. Returns the logits and the steps.
#[cfg(feature = "flex")]
fn burn_adam_twin(z0: Tensor<2>, config: &EmInfConfig) -> (Tensor<2>, usize) {
    use burn::optim::{AdamConfig, Optimizer};
    let mut z = z0.clone();
    let mut state = None;
    let mut steps = 0;
    // burn's Adam computes m·√(1−β2ᵗ)/(1−β1ᵗ) / (√v + ε·√(1−β2ᵗ)), which is torch's (the
    // released code's) m̂ / (√v̂ + ε).
    let adam = AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .build();
    for _ in 0..config.n_grad_steps {
        let h = host(em_core::entropy(z.clone()).unsqueeze_dim::<2>(1))[0];
        if h < config.threshold {
            break;
        }
        let x = z.clone().autodiff().require_grad();
        let loss = em_core::entropy(x.clone())
            + em_core::kl_divergence(z0.clone().autodiff(), x.clone()) * config.kl_weight;
        let grads = loss.sum().backward();
        let g = x.grad(&grads).unwrap();
        let (next, next_state) = adam.step(config.learning_rate, z, g, state);
        z = next;
        state = next_state;
        steps += 1;
    }
    (z, steps)
}

/// The twin agrees with the closed-form hot path to 1e-5 on the golden rows and on a random
/// row of Qwen2.5's full vocabulary.
#[cfg(feature = "flex")]
#[test]
fn burn_adam_twin_agrees() {
    let device = Device::flex();
    let config = EmInfConfig {
        n_grad_steps: 5,
        threshold: 0.1,
        ..EmInfConfig::default()
    };
    let mut rows: Vec<Vec<f32>> = golden()
        .into_iter()
        .filter(|c| c.logits.len() >= 100)
        .map(|c| c.logits)
        .collect();
    let mut state = 12345u64;
    rows.push(
        (0..151_936)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12.0
            })
            .collect(),
    );
    for row in rows {
        check_twin(row_tensor(&row, &device), &config);
    }
}

/// Compared in f64: Adam divides each gradient by its own magnitude, so where a tail entry's
/// gradient is as small as ε (p ~ 1e-9 on a 151,936-token row) the f32 rounding of that gradient
/// — which autodiff and the closed form order differently — moves the update by up to ~2e-4.
/// In f64 the two algorithms must agree to 1e-5; the f32 hot path is checked against the numpy
/// port elsewhere in this file.
#[cfg(feature = "flex")]
fn check_twin(z0: Tensor<2>, config: &EmInfConfig) {
    let z0 = z0.cast(FloatDType::F64);
    let (twin, steps) = burn_adam_twin(z0.clone(), config);
    let out = em_inf(z0, config, 0).unwrap();
    assert_eq!(out.steps, vec![steps]);
    let diff = max_diff(&host(out.logits), &host(twin));
    eprintln!("burn-Adam twin: {steps} steps, max |Δz| = {diff:e}");
    assert!(diff <= 1e-5, "burn-Adam twin differs by {diff:e}");
}

/// The same on next-token logits of the real Qwen2.5-Coder-0.5B-Instruct (`EM_QWEN_DIR`, see
/// `scripts/qwen/README.md`; skipped with a message when unset), at the released defaults and
/// at 15 steps.
#[cfg(feature = "flex")]
#[test]
fn burn_adam_twin_agrees_on_real_model_logits() {
    use em_models::{CausalLm, LoadOptions, Logits, from_pretrained};
    let Some(root) = std::env::var_os("EM_QWEN_DIR") else {
        eprintln!("skipped: EM_QWEN_DIR is not set (bash scripts/qwen/reproduce.sh builds it)");
        return;
    };
    let device = Device::flex();
    let dir = std::path::PathBuf::from(root).join("qwen2.5-coder-0.5b-instruct-f32");
    let pretrained = from_pretrained(&dir, &device, &LoadOptions::default()).unwrap();
    let text = "def is_prime(n):\n    \"\"\"Return True if n is prime.\"\"\"\n";
    let ids = pretrained.tokenizer.encode(text, false).unwrap();
    let n = ids.len();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        TensorData::new(
            ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
            [1, n],
        ),
        &device,
    );
    let mut cache = pretrained.model.new_cache(1, n);
    let logits = pretrained
        .model
        .forward(ids, &mut cache, Logits::All)
        .unwrap();
    let vocab = pretrained.model.vocab_size();
    // Every position's next-token logits: a mix of confident and uncertain rows.
    let mut adjusted = 0;
    for pos in 0..n {
        let row: Tensor<2> = logits
            .clone()
            .slice([0..1, pos..pos + 1, 0..vocab])
            .reshape([1, vocab]);
        for steps in [3, 15] {
            let config = EmInfConfig {
                n_grad_steps: steps,
                ..EmInfConfig::default()
            };
            let out = em_inf(row.clone(), &config, pos).unwrap();
            adjusted += usize::from(out.steps[0] > 0);
            check_twin(row.clone(), &config);
        }
    }
    assert!(adjusted > 0, "no position was above the threshold");
}

#[test]
fn zero_steps_is_the_identity() {
    let device = Device::default();
    let row = [0.5f32, -1.0, 2.0, 0.25];
    let config = EmInfConfig {
        n_grad_steps: 0,
        ..EmInfConfig::default()
    };
    let out = em_inf(row_tensor(&row, &device), &config, 0).unwrap();
    assert_eq!(out.steps, vec![0]);
    assert_eq!(
        host(out.logits),
        row.iter().map(|x| f64::from(*x)).collect::<Vec<_>>()
    );
}

#[test]
fn invalid_hyperparameters_are_typed_errors() {
    let device = Device::default();
    let bad = [
        (
            "threshold",
            EmInfConfig {
                threshold: -0.1,
                ..EmInfConfig::default()
            },
        ),
        (
            "threshold",
            EmInfConfig {
                threshold: f64::NAN,
                ..EmInfConfig::default()
            },
        ),
        (
            "kl_weight",
            EmInfConfig {
                kl_weight: -1.0,
                ..EmInfConfig::default()
            },
        ),
        (
            "learning_rate",
            EmInfConfig {
                learning_rate: 0.0,
                ..EmInfConfig::default()
            },
        ),
        (
            "learning_rate",
            EmInfConfig {
                learning_rate: f64::NAN,
                ..EmInfConfig::default()
            },
        ),
        (
            "learning_rate",
            EmInfConfig {
                learning_rate: -0.1,
                ..EmInfConfig::default()
            },
        ),
    ];
    for (field, config) in bad {
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, InferError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
        let err = em_inf(row_tensor(&[1.0, 2.0], &device), &config, 0).unwrap_err();
        assert!(matches!(err, InferError::InvalidConfig { .. }), "{err}");
    }
    assert!(EmInfConfig::default().validate().is_ok());
}

#[test]
fn non_finite_logits_name_step_and_row() {
    for (name, device) in devices() {
        for poison in [f32::NAN, f32::INFINITY] {
            let x = Tensor::<2>::from_data(
                TensorData::new(vec![1.0, 2.0, 3.0, 0.5, poison, 1.0], [2, 3]),
                &device,
            );
            let err = em_inf(x, &EmInfConfig::default(), 12).unwrap_err();
            assert!(
                matches!(err, InferError::NonFiniteLogits { step: 12, row: 1 }),
                "{name} {poison}: {err}"
            );
        }
        let masked = row_tensor(&[f32::NEG_INFINITY; 4], &device);
        let err = em_inf(masked, &EmInfConfig::default(), 3).unwrap_err();
        assert!(
            matches!(err, InferError::NonFiniteLogits { step: 3, row: 0 }),
            "{name}: {err}"
        );
    }
}

/// On flex, plain f32 logits take the host path (all of a row's steps in fused passes, see
/// `em_infer::em_inf`'s module docs); autodiff-tracked copies of the same logits take the
/// burn-op loop, its slow twin. Same f32 arithmetic but for the softmax sums (f64 against
/// blocked f32) and `exp` (`em_core::fused::rows::exp` against libm's, at most an ulp apart):
/// the same steps per row and logits within 1e-5·(1 + |z|) (printed: the largest gap was
/// 6.3e-6·(1 + |z|) after 10 steps, 2026-12-02), on rows over Qwen2.5's whole vocabulary that
/// stop at different steps (one never starts, one has a masked token). The host path's entropy
/// must be that of its f32 `p` ([`em_core::fused::rows::Moments::written_entropy`]): with the
/// exact one, flat rows' gradients (`log p + H` cancels) moved logits by 2.7e-5·(1 + |z|).
#[cfg(feature = "flex")]
#[test]
fn host_path_matches_the_burn_op_loop() {
    let device = Device::flex();
    let vocab = 151_936;
    let mut state = 99u64;
    // Noise of three widths, then one token raised above the noise so that the entropy starts
    // near the thresholds (about 2.3, 0.7 and 0.2 nats) and rows stop at different steps.
    let mut rows: Vec<Vec<f32>> = [
        (0.5f32, 0.0f32),
        (4.0, 0.0),
        (9.0, 0.0),
        (1.0, 13.0),
        (1.0, 15.0),
        (1.0, 16.5),
    ]
    .iter()
    .map(|&(scale, spike)| {
        let mut row: Vec<f32> = (0..vocab)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect();
        row[4321] += spike;
        row
    })
    .collect();
    rows[1][1234] = f32::NEG_INFINITY;
    let mut peaked = vec![0.0f32; vocab];
    peaked[7] = 30.0; // H far below the threshold: never updated
    rows.push(peaked);
    let x = Tensor::<2>::from_data(TensorData::new(rows.concat(), [rows.len(), vocab]), &device);
    assert!(
        em_core::fused::host_rows(&x).is_some(),
        "the host path is taken"
    );
    for config in [
        EmInfConfig::default(),
        // One step: the first step is also the last (nothing stored but the logits).
        EmInfConfig {
            n_grad_steps: 1,
            ..EmInfConfig::default()
        },
        EmInfConfig {
            n_grad_steps: 10,
            threshold: 2.0,
            kl_weight: 0.001,
            ..EmInfConfig::default()
        },
    ] {
        let host_path = em_inf(x.clone(), &config, 0).unwrap();
        let burn_ops = em_inf(x.clone().autodiff(), &config, 0).unwrap();
        assert_eq!(host_path.steps, burn_ops.steps, "{config:?}");
        assert_eq!(host_path.initial_entropy.len(), rows.len());
        for (a, b) in host_path
            .initial_entropy
            .iter()
            .zip(&burn_ops.initial_entropy)
        {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "H0 {a} vs {b}");
        }
        let (got, want) = (host(host_path.logits), host(burn_ops.logits));
        let mut largest = 0f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g.is_finite() {
                largest = largest.max((g - w).abs() / (1.0 + w.abs()));
            }
            let ok = (g.is_infinite() && g == w) || (g - w).abs() <= 1e-5 * (1.0 + w.abs());
            assert!(
                ok,
                "{config:?} row {} entry {}: {g} vs {w}",
                i / vocab,
                i % vocab
            );
        }
        eprintln!(
            "host path vs burn ops: H0 {:?}, steps {:?}, largest gap {largest:e}·(1 + |z|)",
            host_path.initial_entropy, host_path.steps
        );
        assert!(host_path.steps.contains(&0) && host_path.steps.contains(&config.n_grad_steps));
    }
}

/// Logits handed over (no other reference) are updated in place on the host path; the result
/// is bit for bit the one computed in a copy while the caller keeps its logits, which stay
/// untouched.
#[cfg(feature = "flex")]
#[test]
fn handed_over_logits_give_the_result_of_kept_ones() {
    let device = Device::flex();
    let (rows, vocab) = (3, 5000);
    let mut state = 7u64;
    let values: Vec<f32> = (0..rows * vocab)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    let fresh = || Tensor::<2>::from_data(TensorData::new(values.clone(), [rows, vocab]), &device);
    for config in [
        EmInfConfig {
            threshold: 0.0,
            ..EmInfConfig::default()
        },
        EmInfConfig {
            n_grad_steps: 0,
            ..EmInfConfig::default()
        },
    ] {
        let kept = fresh();
        let copied = em_inf(kept.clone(), &config, 0).unwrap();
        let given = fresh();
        let storage = |t: &Tensor<2>| {
            em_core::fused::host_rows(t)
                .expect("plain f32 on flex")
                .values()
                .as_ptr() as usize
        };
        let given_at = storage(&given);
        let handed_over = em_inf(given, &config, 0).unwrap();
        assert_eq!(
            storage(&handed_over.logits),
            given_at,
            "{config:?}: the output is not the given storage (a copy was made)"
        );
        // Kept logits: a copy updated, or with no step the logits themselves (no copy).
        let copied_from_kept = storage(&copied.logits) == storage(&kept);
        assert_eq!(copied_from_kept, config.n_grad_steps == 0, "{config:?}");
        assert_eq!(copied.steps, handed_over.steps);
        let (a, b) = (host(copied.logits), host(handed_over.logits));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{config:?}"
        );
        let untouched = host(kept);
        assert!(
            untouched
                .iter()
                .zip(&values)
                .all(|(x, y)| *x == f64::from(*y)),
            "{config:?}: the kept logits changed"
        );
        if config.n_grad_steps > 0 {
            assert_ne!(a, untouched, "{config:?}: the steps changed nothing");
        }
    }
}
