//! The training path: `forward_hidden` over padded rows and the chunked `head_loss`, against
//! independent oracles: the full-logits slow twin under autodiff (em-core's `token_log_probs` and
//! `token_entropy`), central finite differences of an f64 model, and the rows run alone.

use std::ops::Range;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use em_core::{token_entropy, token_log_probs};
use em_models::testing::{Tiny, tiny_model};
use em_models::{
    BatchLayout, HeadOptions, HeadStats, ModelError, NamedParam, Qwen2ForCausalLM, named_grads,
};

use crate::backend_tests;
use crate::common::*;

/// A trainable tiny model (`em_models::testing`) with seeded weights, built on the host (flex)
/// and moved to `device`, so every backend gets the same weights.
fn model(name: &str, device: &Device, dtype: DType) -> Qwen2ForCausalLM {
    let kind = match name {
        "qwen2-tied" => Tiny::Qwen2Tied,
        "qwen2-untied" => Tiny::Qwen2Untied,
        "llama" => Tiny::Llama,
        other => panic!("no tiny model named {other}"),
    };
    tiny_model(kind, &Device::flex(), dtype, 11)
        .unwrap()
        .fork(device)
        .train()
}

/// The example batch: two rows of different lengths in one padded batch, the next token of
/// every position, and the positions scored (a "response" in each row).
struct Batch {
    rows: Vec<Vec<u32>>,
    layout: BatchLayout,
    next_ids: Vec<Vec<u32>>,
    positions: Vec<Range<usize>>,
}

fn batch(rows: Vec<Vec<u32>>, left: bool, prompt_lens: &[usize]) -> Batch {
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let layout = if left {
        BatchLayout::left_padded(&lengths)
    } else {
        BatchLayout::right_padded(&lengths)
    };
    let seq = layout.seq;
    let mut padded = Vec::new();
    let mut next_ids = Vec::new();
    let mut positions = Vec::new();
    for ((row, span), &p) in rows.iter().zip(&layout.spans).zip(prompt_lens) {
        let mut full = vec![0u32; seq];
        full[span.clone()].copy_from_slice(row);
        let mut next = vec![0u32; seq];
        next[span.start..span.end - 1].copy_from_slice(&full[span.start + 1..span.end]);
        positions.push(em_models::response_positions(span.start, p, row.len() - p));
        padded.push(full);
        next_ids.push(next);
    }
    Batch {
        rows: padded,
        layout,
        next_ids,
        positions,
    }
}

fn example() -> Batch {
    batch(
        vec![
            vec![5, 17, 42, 99, 7, 250, 3, 64],
            vec![11, 200, 31, 8, 150],
        ],
        false,
        &[3, 2],
    )
}

/// Per-position weights of the test loss (any fixed values; they make each position's
/// coefficient different).
fn weights(b: &Batch, device: &Device, dtype: DType) -> Tensor<2> {
    let seq = b.layout.seq;
    let values: Vec<f64> = (0..b.rows.len() * seq)
        .map(|i| 0.5 + 0.37 * ((i * 7) % 5) as f64)
        .collect();
    Tensor::from_data(
        TensorData::new(values, [b.rows.len(), seq]),
        (device, dtype),
    )
}

/// The loss both paths compute: Σ w·(0.8·log p − 1.3·H)·mask / Σ mask.
fn loss_of(lp: Tensor<2>, h: Tensor<2>, mask: Tensor<2>, w: Tensor<2>) -> Tensor<1> {
    let count = mask.clone().sum();
    ((lp * 0.8 - h * 1.3) * w * mask).sum() / count
}

/// Gradients by parameter name, as f64 (0 for a parameter without one), from
/// [`named_grads`] or [`em_models::ParamGrads::named`].
fn grads_of(params: Vec<NamedParam>) -> Vec<(String, Vec<f64>)> {
    params
        .into_iter()
        .map(|p| {
            let n = p.numel();
            let g = p.grad.map(host_f64).unwrap_or_else(|| vec![0.0; n]);
            (p.name, g)
        })
        .collect()
}

/// max |a − b| / max |b| over all parameters.
fn relative_error(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    let scale = b
        .iter()
        .flat_map(|(_, g)| g.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-30);
    a.iter()
        .zip(b)
        .map(|((na, ga), (nb, gb))| {
            assert_eq!(na, nb);
            ga.iter()
                .zip(gb)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        })
        .fold(0.0, f64::max)
        / scale
}

fn ids(b: &Batch, device: &Device) -> Tensor<2, Int> {
    ids_tensor(&b.rows, device)
}

/// The chunked path: forward_hidden + head_loss.
fn chunked(
    model: &Qwen2ForCausalLM,
    b: &Batch,
    options: &HeadOptions,
) -> (f64, Vec<(String, Vec<f64>)>) {
    let device = model.device();
    let hidden = model.forward_hidden(ids(b, &device), &b.layout).unwrap();
    let w = weights(b, &device, model.compute_dtype());
    let out = model
        .head_loss(
            hidden,
            &b.next_ids,
            &b.positions,
            options,
            |s: &HeadStats| {
                loss_of(
                    s.log_probs.clone(),
                    s.entropy.clone(),
                    s.mask.clone(),
                    w.clone(),
                )
            },
        )
        .unwrap();
    (out.value, grads_of(named_grads(model, &out.grads)))
}

/// The slow twin: full logits under autodiff, em-core's per-token functions, the same loss.
fn full_logits(
    model: &Qwen2ForCausalLM,
    b: &Batch,
    temperature: f64,
) -> (f64, Vec<(String, Vec<f64>)>) {
    let device = model.device();
    let dtype = model.compute_dtype();
    let hidden = model.forward_hidden(ids(b, &device), &b.layout).unwrap();
    let [batch, seq, _] = hidden.dims();
    let z = em_core::promote(model.head_logits(hidden)) / temperature;
    let next: Vec<Vec<u32>> = b.next_ids.clone();
    let lp = token_log_probs(z.clone(), ids_tensor(&next, &device));
    let h = token_entropy(z);
    let mut mask = vec![0.0f64; batch * seq];
    for (r, range) in b.positions.iter().enumerate() {
        for t in range.clone() {
            mask[r * seq + t] = 1.0;
        }
    }
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [batch, seq]), (&device, dtype));
    let loss = loss_of(lp, h, mask, weights(b, &device, dtype));
    let value = host_f64(loss.clone())[0];
    let grads = loss.backward();
    (value, grads_of(named_grads(model, &grads)))
}

/// On flex (the same head code runs on wgpu in `wgpu_f32_gradients_match_flex_f64`; lavapipe
/// takes ~30 s per gradient there).
#[test]
fn chunked_head_equals_full_logits() {
    let backend = &flex();
    for name in ["qwen2-tied", "qwen2-untied"] {
        let model = model(name, &backend.device, DType::F32);
        let b = example();
        for (chunk, temperature) in [(3, 1.0), (1000, 0.7)] {
            let options = HeadOptions { chunk, temperature };
            let (v1, g1) = chunked(&model, &b, &options);
            let (v2, g2) = full_logits(&model, &b, temperature);
            assert!(
                (v1 - v2).abs() <= 1e-5 * v2.abs().max(1.0),
                "{name}: loss {v1} vs {v2}"
            );
            let err = relative_error(&g1, &g2);
            assert!(
                err < 1e-5,
                "{} {name} chunk {chunk}: relative gradient error {err:e}",
                backend.name
            );
            // Every parameter receives a gradient, the tied embedding both of its uses.
            assert!(
                g1.iter().all(|(_, g)| g.iter().any(|v| *v != 0.0)),
                "{name}"
            );
        }
    }
}

fn wgpu_f32_gradients_match_flex_f64(backend: &TestBackend) {
    // The same host weights in f32 on this backend and in f64 on flex.
    let b = example();
    let options = HeadOptions {
        chunk: 4,
        temperature: 1.0,
    };
    let reference = model("qwen2-tied", &Device::flex(), DType::F64);
    let (_, g64) = chunked(&reference, &b, &options);
    let model = model("qwen2-tied", &backend.device, DType::F32);
    let (_, g32) = chunked(&model, &b, &options);
    let err = relative_error(&g32, &g64);
    assert!(err < 1e-4, "{}: f32 vs f64 gradients {err:e}", backend.name);
}

backend_tests!(wgpu_f32_gradients_match_flex_f64);

/// Adds `delta` to element `index` of the parameter `target`.
struct Nudge {
    target: burn::module::ParamId,
    index: usize,
    delta: f64,
}

impl ModuleMapper for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.id != self.target {
            return param;
        }
        let (index, delta) = (self.index, self.delta);
        param.map(|t| {
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let mut bump = vec![0.0f64; n];
            bump[index] = delta;
            let bump =
                Tensor::<1>::from_data(TensorData::new(bump, [n]), (&t.device(), DType::F64))
                    .reshape(dims);
            t + bump
        })
    }
}

/// The losses the finite-difference test checks.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// EM-FT's: the token-mean entropy.
    Entropy,
    /// A policy-gradient-like one: the token-mean log-prob of the next tokens.
    LogProb,
    /// Both, with per-position weights ([`loss_of`]).
    Mixed,
}

fn loss_value(kind: Loss, s: &HeadStats, w: &Tensor<2>) -> Tensor<1> {
    let mean = |t: Tensor<2>| (t * s.mask.clone()).sum() / s.mask.clone().sum();
    match kind {
        Loss::Entropy => mean(s.entropy.clone()),
        Loss::LogProb => mean(s.log_probs.clone()),
        Loss::Mixed => loss_of(
            s.log_probs.clone(),
            s.entropy.clone(),
            s.mask.clone(),
            w.clone(),
        ),
    }
}

/// The loss value alone (no recording).
fn value(model: &Qwen2ForCausalLM, b: &Batch, options: &HeadOptions, kind: Loss) -> f64 {
    let device = model.device();
    let hidden = model.forward_hidden(ids(b, &device), &b.layout).unwrap();
    let s = model
        .head_stats(hidden, &b.next_ids, &b.positions, options)
        .unwrap();
    host_f64(loss_value(kind, &s, &weights(b, &device, DType::F64)))[0]
}

#[test]
fn f64_gradients_equal_central_finite_differences() {
    // Through everything: embedding, RMSNorm, q/k/v with biases, RoPE, GQA, MLP, the head
    // (tied and untied, Llama without biases), for EM-FT's entropy loss, a log-prob loss and
    // a weighted mix of both.
    let device = Device::flex();
    let options = HeadOptions {
        chunk: 5,
        temperature: 0.9,
    };
    for name in FIXTURES {
        let trainable = model(name, &device, DType::F64);
        let plain = trainable.valid();
        let b = batch(
            vec![vec![5, 17, 42, 99, 7, 250], vec![11, 200, 31, 8]],
            true,
            &[2, 1],
        );
        for kind in [Loss::Entropy, Loss::LogProb, Loss::Mixed] {
            let hidden = trainable
                .forward_hidden(ids(&b, &device), &b.layout)
                .unwrap();
            let w = weights(&b, &device, DType::F64);
            let out = trainable
                .head_loss(hidden, &b.next_ids, &b.positions, &options, |s| {
                    loss_value(kind, s, &w)
                })
                .unwrap();
            let base = value(&plain, &b, &options, kind);
            assert!((out.value - base).abs() < 1e-12, "{name}");
            for p in named_grads(&trainable, &out.grads) {
                let n = p.numel();
                let grad = host_f64(p.grad.clone().expect("every parameter is reached"));
                for index in [0, n / 3, n - 1] {
                    let eps = 1e-5;
                    let shifted = |delta: f64| {
                        let nudged = plain.clone().map(&mut Nudge {
                            target: p.id,
                            index,
                            delta,
                        });
                        value(&nudged, &b, &options, kind)
                    };
                    let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                    // f64 round-off of the loss (~1e-16 · |L| / eps) bounds the absolute floor.
                    let tolerance = 1e-6 * fd.abs() + 1e-9;
                    assert!(
                        (grad[index] - fd).abs() <= tolerance,
                        "{name} {kind:?} {} [{index}]: autodiff {} vs finite differences {fd}",
                        p.name,
                        grad[index]
                    );
                }
            }
        }
    }
}

#[test]
fn padded_rows_get_the_gradients_they_get_alone() {
    let device = Device::flex();
    let options = HeadOptions::default();
    let rows = vec![vec![5, 17, 42, 99, 7, 250, 3], vec![11, 200, 31, 8]];
    let prompts = [2, 1];
    let model = model("qwen2-tied", &device, DType::F64);
    // Σ over positions (no normalisation), so the batch's gradient is the sum of the rows'.
    let sum_loss = |s: &HeadStats| {
        (s.entropy.clone() * s.mask.clone()).sum()
            - (s.log_probs.clone() * s.mask.clone()).sum() * 0.5
    };
    let run = |b: &Batch| {
        let hidden = model.forward_hidden(ids(b, &device), &b.layout).unwrap();
        let out = model
            .head_loss(hidden, &b.next_ids, &b.positions, &options, sum_loss)
            .unwrap();
        (out.value, grads_of(named_grads(&model, &out.grads)))
    };
    let (alone_a, ga) = run(&batch(vec![rows[0].clone()], false, &prompts[..1]));
    let (alone_b, gb) = run(&batch(vec![rows[1].clone()], false, &prompts[1..]));
    let sum: Vec<(String, Vec<f64>)> = ga
        .iter()
        .zip(&gb)
        .map(|((n, a), (_, b))| (n.clone(), a.iter().zip(b).map(|(x, y)| x + y).collect()))
        .collect();
    for left in [true, false] {
        let (together, g) = run(&batch(rows.clone(), left, &prompts));
        assert!((together - alone_a - alone_b).abs() < 1e-10, "left {left}");
        let err = relative_error(&g, &sum);
        assert!(err < 1e-10, "left {left}: {err:e}");
    }
}

#[test]
fn bad_training_inputs_are_typed_errors() {
    let device = Device::flex();
    let model = model("qwen2-tied", &device, DType::F32);
    let b = example();
    let wrong = BatchLayout::right_padded(&[3]);
    assert!(matches!(
        model.forward_hidden(ids(&b, &device), &wrong),
        Err(ModelError::Batch(_))
    ));
    // Longer than max_position_embeddings (64 in the fixture).
    let long = vec![vec![1u32; 65]];
    assert!(matches!(
        model.forward_hidden(
            ids_tensor(&long, &device),
            &BatchLayout::right_padded(&[65])
        ),
        Err(ModelError::ContextOverflow {
            needed: 65,
            capacity: 64
        })
    ));
    let hidden = model.forward_hidden(ids(&b, &device), &b.layout).unwrap();
    for (chunk, temperature, key) in [
        (0, 1.0, "chunk"),
        (4, f64::NAN, "temperature"),
        (4, 0.0, "temperature"),
    ] {
        let err = model
            .head_stats(
                hidden.clone(),
                &b.next_ids,
                &b.positions,
                &HeadOptions { chunk, temperature },
            )
            .unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidConfig { key: k, .. } if k == key),
            "{err}"
        );
    }
    let outside = vec![0..b.layout.seq + 1, 0..1];
    assert!(matches!(
        model.head_stats(
            hidden.clone(),
            &b.next_ids,
            &outside,
            &HeadOptions::default()
        ),
        Err(ModelError::Batch(_))
    ));
    let plain = model.valid();
    let hidden = plain.forward_hidden(ids(&b, &device), &b.layout).unwrap();
    assert!(matches!(
        plain.head_loss(
            hidden,
            &b.next_ids,
            &b.positions,
            &HeadOptions::default(),
            |s| s.entropy.clone().sum()
        ),
        Err(ModelError::Batch(_))
    ));
}

#[test]
fn layer_checkpointed_step_equals_one_backward() {
    let device = Device::flex();
    let options = HeadOptions {
        chunk: 4,
        temperature: 1.0,
    };
    for name in FIXTURES {
        let model = model(name, &device, DType::F64);
        for left in [true, false] {
            let b = batch(
                vec![vec![5, 17, 42, 99, 7, 250, 3], vec![11, 200, 31, 8]],
                left,
                &[3, 1],
            );
            let w = weights(&b, &device, DType::F64);
            let loss = |s: &HeadStats| {
                loss_of(
                    s.log_probs.clone(),
                    s.entropy.clone(),
                    s.mask.clone(),
                    w.clone(),
                )
            };
            let hidden = model.forward_hidden(ids(&b, &device), &b.layout).unwrap();
            let whole = model
                .head_loss(hidden, &b.next_ids, &b.positions, &options, loss)
                .unwrap();
            let expected = grads_of(named_grads(&model, &whole.grads));
            let step = model
                .loss_and_grads(
                    ids(&b, &device),
                    &b.layout,
                    &b.next_ids,
                    &b.positions,
                    &options,
                    loss,
                )
                .unwrap();
            assert!((step.value - whole.value).abs() < 1e-12, "{name}");
            for (a, b) in step
                .entropy
                .iter()
                .flatten()
                .zip(whole.entropy.iter().flatten())
            {
                assert!((a - b).abs() < 1e-12, "{name}: entropy {a} vs {b}");
            }
            let named = step.grads.named(&model);
            assert!(
                named.iter().all(|p| p.grad.is_some()),
                "every parameter has a gradient"
            );
            let got = grads_of(named);
            let err = relative_error(&got, &expected);
            assert!(err < 1e-10, "{name} left {left}: {err:e}");
        }
    }
}
