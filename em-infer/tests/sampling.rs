//! The on-device sampler against the sort-and-cumsum f64 reference
//! (`em_infer::reference::sampling_distribution`): kept sets, log-probs, entropies, draw
//! frequencies; seeded reproducibility; typed errors.
#![allow(clippy::unwrap_used)]

mod common;
use common::{devices, host};

use burn::tensor::{Device, Tensor, TensorData};
use em_infer::{InferError, Sampler, Sampling, reference};
use em_models::{GenerationConfig, ModelError};

/// Deterministic pseudo-random logits: a heavy head and a long tail, like a language model's.
fn lm_like_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    (0..vocab)
        .map(|i| {
            // Box-Muller normal, scaled; a few boosted entries make a head.
            let (u1, u2) = (next().max(1e-12), next());
            let n = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let boost = if i % 97 == 3 { 6.0 } else { 0.0 };
            (2.0 * n + boost) as f32
        })
        .collect()
}

fn batch_of(row: &[f32], rows: usize, device: &Device) -> Tensor<2> {
    let flat: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows, row.len()]), device)
}

fn configs() -> Vec<Sampling> {
    let base = Sampling::default();
    vec![
        base,
        Sampling::greedy(),
        Sampling::with_temperature(0.7),
        Sampling { top_k: 1, ..base },
        Sampling { top_k: 7, ..base },
        Sampling { top_k: 50, ..base },
        Sampling { top_p: 0.5, ..base },
        Sampling { top_p: 0.9, ..base },
        Sampling {
            min_p: 0.05,
            ..base
        },
        Sampling {
            temperature: 0.6,
            top_k: 40,
            top_p: 0.8,
            min_p: 0.02,
            repetition_penalty: 1.0,
        },
        Sampling {
            top_p: 0.95,
            repetition_penalty: 1.3,
            ..base
        },
        Sampling {
            repetition_penalty: 1.3,
            ..Sampling::greedy()
        },
    ]
}

/// Every draw lands in the reference's support, and reports the reference's log-prob for the
/// token and the reference's entropy for the distribution: a kept set differing by one token
/// changes the normaliser and the entropy well beyond the tolerance for these rows.
#[test]
fn draws_match_the_sorted_reference() {
    let vocab = 1000;
    let rows = 16;
    let seen: Vec<u32> = vec![3, 100, 197, 5, 7];
    for (name, device) in devices() {
        for seed in 0..3u64 {
            let logits = lm_like_logits(vocab, seed);
            let row64: Vec<f64> = logits.iter().map(|x| f64::from(*x)).collect();
            for (c, sampling) in configs().iter().enumerate() {
                let seen_ids: Vec<usize> = seen.iter().map(|&i| i as usize).collect();
                let p = reference::sampling_distribution(&row64, sampling, &seen_ids);
                let h: f64 = -p
                    .iter()
                    .filter(|x| **x > 0.0)
                    .map(|x| x * x.ln())
                    .sum::<f64>();
                let mut sampler = Sampler::new(*sampling, seed, rows).unwrap();
                sampler
                    .observe_prompts(&vec![seen.clone(); rows], vocab, &device)
                    .unwrap();
                for _ in 0..3 {
                    let out = sampler.sample(batch_of(&logits, rows, &device)).unwrap();
                    for r in 0..rows {
                        let t = out.tokens[r] as usize;
                        assert!(
                            p[t] > 0.0,
                            "{name} seed {seed} config {c}: token {t} not kept"
                        );
                        let lp = p[t].ln();
                        assert!(
                            (out.log_probs[r] - lp).abs() < 2e-4,
                            "{name} seed {seed} config {c}: log p {} vs {lp}",
                            out.log_probs[r]
                        );
                        assert!(
                            (out.entropies[r] - h).abs() < 2e-4,
                            "{name} seed {seed} config {c}: H {} vs {h}",
                            out.entropies[r]
                        );
                    }
                    if sampling.is_greedy() {
                        let best = (0..vocab).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
                        assert!(out.tokens.iter().all(|t| *t as usize == best), "{name}");
                    }
                }
            }
        }
    }
}

/// The host twin of the draw (plain f32 logits on flex: greedy, temperature, the filters and
/// the repetition penalty) against the device path on autodiff-tracked copies of the same
/// logits, which decline it, from the same seeds: the same log-probs and entropies to f32
/// rounding, and the same tokens but where the target mass falls within rounding of the
/// boundary between two tokens (then no token between the two has an f32 probability above 0),
/// at most one token in 20. One vocabulary within one chunk of the host's split,
/// and Qwen2.5's, 19 chunks with a ragged end.
#[cfg(feature = "flex")]
#[test]
fn host_draw_matches_the_device_path() {
    let device = Device::flex();
    for (vocab, rows) in [(1000, 8), (151_936, 4)] {
        let values: Vec<Vec<f32>> = (0..rows)
            .map(|r| lm_like_logits(vocab, r as u64 + 11))
            .collect();
        let flat: Vec<f32> = values.iter().flatten().copied().collect();
        let logits = Tensor::<2>::from_data(TensorData::new(flat, [rows, vocab]), &device);
        let base = Sampling::default();
        let seen: Vec<u32> = (0..vocab as u32).step_by(97).take(40).collect();
        let seen_ids: Vec<usize> = seen.iter().map(|&i| i as usize).collect();
        for sampling in [
            Sampling::greedy(),
            base,
            Sampling::with_temperature(0.7),
            Sampling::with_temperature(0.1),
            Sampling::with_temperature(1.5),
            // A top-k as wide as the vocabulary removes nothing.
            Sampling {
                top_k: vocab,
                ..base
            },
            // The filters, alone and together (Qwen2.5's generation config among them), and
            // the repetition penalty.
            Sampling { top_k: 20, ..base },
            Sampling {
                top_k: 300,
                ..Sampling::greedy()
            },
            Sampling { top_p: 0.3, ..base },
            Sampling {
                top_p: 0.9,
                ..Sampling::with_temperature(0.7)
            },
            Sampling {
                min_p: 0.05,
                ..base
            },
            Sampling {
                temperature: 0.7,
                top_k: 20,
                top_p: 0.8,
                min_p: 0.0,
                repetition_penalty: 1.05,
            },
            Sampling {
                temperature: 0.6,
                top_k: 400,
                top_p: 0.95,
                min_p: 0.02,
                repetition_penalty: 1.0,
            },
            Sampling {
                repetition_penalty: 1.3,
                ..Sampling::greedy()
            },
            Sampling {
                repetition_penalty: 1.3,
                ..base
            },
        ] {
            let p: Vec<Vec<f64>> = values
                .iter()
                .map(|row| {
                    let row64: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
                    let seen: &[usize] = if sampling.repetition_penalty == 1.0 {
                        &[]
                    } else {
                        &seen_ids
                    };
                    reference::sampling_distribution(&row64, &sampling, seen)
                })
                .collect();
            let mut host_path = Sampler::new(sampling, 5, rows).unwrap();
            let mut device_path = Sampler::new(sampling, 5, rows).unwrap();
            for sampler in [&mut host_path, &mut device_path] {
                sampler
                    .observe_prompts(&vec![seen.clone(); rows], vocab, &device)
                    .unwrap();
            }
            let (mut draws, mut differ) = (0, 0);
            for _ in 0..10 {
                let a = host_path.sample(logits.clone()).unwrap();
                let b = device_path.sample(logits.clone().autodiff()).unwrap();
                for (r, p) in p.iter().enumerate() {
                    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * y.abs().max(1.0);
                    let (ta, tb) = (a.tokens[r] as usize, b.tokens[r] as usize);
                    assert!(p[ta] > 0.0, "{vocab} {sampling:?}: token {ta} not kept");
                    assert!(
                        close(a.entropies[r], b.entropies[r]),
                        "{vocab} {sampling:?} row {r}: H {} vs {}",
                        a.entropies[r],
                        b.entropies[r]
                    );
                    draws += 1;
                    if ta == tb {
                        assert!(
                            close(a.log_probs[r], b.log_probs[r]),
                            "{vocab} {sampling:?} row {r}: log p {} vs {}",
                            a.log_probs[r],
                            b.log_probs[r]
                        );
                    } else {
                        differ += 1;
                        // Neighbours: every token between the two is 0 in f32 (below e^−87).
                        let between = ta.min(tb) + 1..ta.max(tb);
                        assert!(
                            !sampling.is_greedy() && p[between].iter().all(|&q| q < 1e-37),
                            "{vocab} {sampling:?} row {r}: token {ta} vs {tb}"
                        );
                    }
                }
            }
            assert!(
                differ * 20 <= draws,
                "{vocab} {sampling:?}: {differ} of {draws} tokens differ"
            );
        }
    }
}

/// The kept set itself, compared entry by entry with the reference over Qwen2.5's full
/// vocabulary (flex: lavapipe caps shader loops near 65,535), for cut-offs whose boundary is
/// not within f32 rounding of the threshold.
#[cfg(feature = "flex")]
#[test]
fn full_vocabulary_kept_sets_are_exact() {
    let device = Device::flex();
    let vocab = 151_936;
    let base = Sampling::default();
    // Seed 2 is rounded to steps of 0.5: thousands of exact ties, across blocks too (the top-k
    // search looks at the blocks with the largest maxima only; ties at the cut-off must still
    // all be kept). Seed 3 has one confident token (p > 0.94, the histogram's first bucket,
    // which the other rows leave empty).
    for seed in 0..4u64 {
        let mut logits = lm_like_logits(vocab, 10 + seed);
        if seed == 2 {
            logits
                .iter_mut()
                .for_each(|x| *x = (*x * 2.0).round() / 2.0);
        }
        if seed == 3 {
            let top = (0..vocab)
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            logits[top] += 25.0;
        }
        let row64: Vec<f64> = logits.iter().map(|x| f64::from(*x)).collect();
        for sampling in [
            Sampling { top_k: 1, ..base },
            Sampling { top_k: 20, ..base },
            Sampling { top_k: 50, ..base },
            Sampling {
                top_k: 1000,
                ..base
            },
            Sampling {
                top_k: 20,
                top_p: 0.8,
                ..base
            },
            // Top-p after top-k keeping the ties at the top-k cut-off (seed 2), also those in
            // blocks outside the top-k candidates, and a head-side search (top-p ≤ ½).
            Sampling {
                top_k: 20,
                top_p: 0.99,
                ..base
            },
            Sampling {
                top_k: 50,
                top_p: 0.4,
                ..base
            },
            Sampling { top_p: 0.3, ..base },
            Sampling { top_p: 0.9, ..base },
            Sampling {
                top_p: 0.999,
                ..base
            },
            Sampling {
                min_p: 0.01,
                ..base
            },
            Sampling {
                temperature: 0.5,
                top_p: 0.95,
                ..base
            },
        ] {
            let p = reference::sampling_distribution(&row64, &sampling, &[]);
            if sampling.top_p < 1.0 {
                let margin = top_p_margin(&row64, &sampling);
                if margin < 1e-9 {
                    eprintln!("seed {seed} {sampling:?}: boundary within {margin:e}, skipped");
                    continue;
                }
            }
            let expected: Vec<bool> = p.iter().map(|x| *x > 0.0).collect();
            // The host path (plain logits) and the device path (autodiff-tracked ones, which
            // the host path declines).
            for (path, logits) in [
                ("host", batch_of(&logits, 1, &device)),
                ("device", batch_of(&logits, 1, &device).autodiff()),
            ] {
                let kept = sampling
                    .kept(logits)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<bool>()
                    .unwrap();
                let differ: Vec<usize> = (0..vocab).filter(|i| kept[*i] != expected[*i]).collect();
                assert!(
                    differ.is_empty(),
                    "{path} seed {seed} {sampling:?}: {} entries differ, e.g. {:?} (kept {} vs {})",
                    differ.len(),
                    &differ[..differ.len().min(5)],
                    kept.iter().filter(|k| **k).count(),
                    expected.iter().filter(|k| **k).count()
                );
            }
        }
    }
}

/// How far (in probability mass) the top-p threshold is from the nearest cumulative sum of the
/// sorted f64 distribution: below f32's resolution the "right" kept set is not defined by the
/// f32 logits.
fn top_p_margin(logits: &[f64], sampling: &Sampling) -> f64 {
    let t = sampling.temperature;
    let mut p = em_core::reference::softmax(&logits.iter().map(|z| z / t).collect::<Vec<_>>());
    p.sort_by(|a, b| b.total_cmp(a));
    let mut cum = 0.0;
    let mut margin = f64::INFINITY;
    for x in p {
        cum += x;
        margin = margin.min((cum - sampling.top_p).abs());
    }
    margin
}

/// 20,000 draws from a top-p + temperature distribution and from the plain tempered one (the
/// host twin's case on flex): every token's frequency within 5σ of the reference probability
/// (binomial σ), and nothing outside the support.
#[test]
fn draw_frequencies_match_the_distribution() {
    let vocab = 40;
    let logits: Vec<f32> = (0..vocab).map(|i| ((i * 7) % 11) as f32 * 0.4).collect();
    let top_p = Sampling {
        temperature: 0.8,
        top_p: 0.9,
        ..Sampling::default()
    };
    let row64: Vec<f64> = logits.iter().map(|x| f64::from(*x)).collect();
    for ((name, device), sampling) in devices()
        .into_iter()
        .flat_map(|d| [(d.clone(), top_p), (d, Sampling::with_temperature(0.8))])
    {
        let p = reference::sampling_distribution(&row64, &sampling, &[]);
        let rows = 1000;
        let mut sampler = Sampler::new(sampling, 7, rows).unwrap();
        let mut counts = vec![0usize; vocab];
        let draws = 20;
        for _ in 0..draws {
            for t in sampler
                .sample(batch_of(&logits, rows, &device))
                .unwrap()
                .tokens
            {
                counts[t as usize] += 1;
            }
        }
        let n = (rows * draws) as f64;
        for i in 0..vocab {
            let expected = n * p[i];
            let sigma = (n * p[i] * (1.0 - p[i])).sqrt();
            let got = counts[i] as f64;
            if p[i] == 0.0 {
                assert_eq!(counts[i], 0, "{name}: token {i} is outside the support");
            } else {
                assert!(
                    (got - expected).abs() <= 5.0 * sigma + 1.0,
                    "{name}: token {i} drawn {got} times, expected {expected:.1} ± {sigma:.1}"
                );
            }
        }
    }
}

#[test]
fn same_seed_same_tokens_and_rows_keep_their_streams() {
    let vocab = 300;
    let logits = lm_like_logits(vocab, 5);
    for (name, device) in devices() {
        let run = |seed: u64| {
            let mut s = Sampler::new(Sampling::default(), seed, 3).unwrap();
            (0..4)
                .map(|_| s.sample(batch_of(&logits, 3, &device)).unwrap().tokens)
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1), "{name}: not reproducible");
        assert_ne!(a, run(2), "{name}: the seed is ignored");
        assert!(
            a.iter().any(|step| step[0] != step[1]),
            "{name}: rows share a stream"
        );
        // Dropping row 1 keeps rows 0 and 2 on their own streams.
        let mut s = Sampler::new(Sampling::default(), 1, 3).unwrap();
        s.sample(batch_of(&logits, 3, &device)).unwrap();
        s.retain_rows(&[0, 2]).unwrap();
        for step in a.iter().skip(1) {
            let out = s.sample(batch_of(&logits, 2, &device)).unwrap().tokens;
            assert_eq!(out, vec![step[0], step[2]], "{name}");
        }
    }
}

#[test]
fn repetition_penalty_follows_hugging_face() {
    // 2.0 / 1.1 = 1.818 < 1.9: the seen token 0 loses to token 1; a negative seen logit is
    // multiplied (−0.5 · 1.1), and an unseen one is untouched.
    let logits = [2.0f32, 1.9, -0.5, -0.6];
    for (name, device) in devices() {
        let sampling = Sampling {
            repetition_penalty: 1.1,
            ..Sampling::greedy()
        };
        let mut s = Sampler::new(sampling, 0, 1).unwrap();
        s.observe_prompts(&[vec![0, 2]], 4, &device).unwrap();
        let out = s.sample(batch_of(&logits, 1, &device)).unwrap();
        assert_eq!(out.tokens, vec![1], "{name}");
        let z = [2.0 / 1.1, 1.9, -0.55, -0.6];
        let lp = em_core::reference::log_softmax(&z)[1];
        assert!((out.log_probs[0] - lp).abs() < 1e-5, "{name}: {out:?}");
        // The sampled token counts as seen from now on.
        let mut s = Sampler::new(sampling, 0, 1).unwrap();
        s.observe_prompts(&[vec![]], 4, &device).unwrap();
        let draw = s
            .draw(batch_of(&[1.0, 1.05, 0.0, 0.0], 1, &device))
            .unwrap();
        assert_eq!(host(draw.tokens.clone()), vec![1.0]);
        s.observe(draw.tokens);
        let next = s
            .sample(batch_of(&[1.0, 1.05, 0.0, 0.0], 1, &device))
            .unwrap();
        assert_eq!(next.tokens, vec![0], "{name}: 1.05 / 1.1 < 1.0");
    }
}

#[test]
fn invalid_sampling_is_a_typed_error() {
    let base = Sampling::default();
    for (bad, field) in [
        (Sampling::with_temperature(-0.1), "temperature"),
        (Sampling::with_temperature(f64::NAN), "temperature"),
        (Sampling { top_p: 0.0, ..base }, "top_p"),
        (Sampling { top_p: 1.5, ..base }, "top_p"),
        (
            Sampling {
                top_p: f64::NAN,
                ..base
            },
            "top_p",
        ),
        (
            Sampling {
                min_p: -0.1,
                ..base
            },
            "min_p",
        ),
        (Sampling { min_p: 2.0, ..base }, "min_p"),
        (
            Sampling {
                repetition_penalty: 0.0,
                ..base
            },
            "repetition_penalty",
        ),
        (
            Sampling {
                repetition_penalty: f64::INFINITY,
                ..base
            },
            "repetition_penalty",
        ),
    ] {
        match Sampler::new(bad, 0, 1) {
            Err(InferError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn batch_and_vocabulary_mismatches_are_errors() {
    let device = Device::default();
    let mut s = Sampler::new(Sampling::default(), 0, 2).unwrap();
    assert!(matches!(
        s.sample(batch_of(&[1.0, 2.0], 3, &device)),
        Err(InferError::Batch(_))
    ));
    assert!(matches!(
        s.observe_prompts(&[vec![0], vec![1]], 2, &device),
        Ok(())
    ));
    let mut s = Sampler::new(
        Sampling {
            repetition_penalty: 1.2,
            ..Sampling::default()
        },
        0,
        1,
    )
    .unwrap();
    assert!(matches!(
        s.observe_prompts(&[vec![5]], 4, &device),
        Err(InferError::TokenOutOfVocabulary { id: 5, vocab: 4 })
    ));
    assert!(matches!(s.retain_rows(&[1]), Err(InferError::Batch(_))));
    assert!(matches!(s.retain_rows(&[0, 0]), Err(InferError::Batch(_))));
    // A refused call changed nothing.
    assert_eq!(s.batch(), 1);
    // Prompts observed over 4 entries, logits over 3 (both paths).
    s.observe_prompts(&[vec![2]], 4, &device).unwrap();
    for logits in [
        batch_of(&[1.0, 2.0, 3.0], 1, &device),
        batch_of(&[1.0, 2.0, 3.0], 1, &device).autodiff(),
    ] {
        assert!(matches!(s.sample(logits), Err(InferError::Batch(_))));
    }
    assert!(matches!(
        Sampler::new(Sampling::default(), 0, 1)
            .unwrap()
            .sample(Tensor::<2>::empty([1, 0], &device)),
        Err(InferError::EmptyVocabulary)
    ));
}

#[test]
fn generation_config_defaults_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generation_config.json");
    let read = |path: &std::path::Path| GenerationConfig::from_file(path);
    // Qwen2.5-Instruct's own file.
    std::fs::write(
        &path,
        r#"{"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
            "eos_token_id": [151645, 151643], "repetition_penalty": 1.1,
            "temperature": 0.7, "top_p": 0.8, "top_k": 20}"#,
    )
    .unwrap();
    let config = read(&path).unwrap();
    assert_eq!(config.eos_ids(), vec![151645, 151643]);
    assert_eq!(config.pad_token_id, Some(151643));
    let s = Sampling::from_generation_config(Some(&config)).unwrap();
    assert_eq!(
        s,
        Sampling {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.8,
            min_p: 0.0,
            repetition_penalty: 1.1,
        }
    );
    std::fs::write(&path, r#"{"do_sample": false, "temperature": 0.7}"#).unwrap();
    let config = read(&path).unwrap();
    assert!(
        Sampling::from_generation_config(Some(&config))
            .unwrap()
            .is_greedy()
    );
    // No file: the defaults.
    assert_eq!(
        GenerationConfig::from_dir(dir.path().join("absent")).unwrap(),
        None
    );
    assert_eq!(
        Sampling::from_generation_config(None).unwrap(),
        Sampling::default()
    );
    // A value of the wrong type is an error of the file, naming the key; bad JSON too.
    for (text, needle) in [
        (r#"{"top_k": "20"}"#, "top_k"),
        (r#"{"top_k": 2.5}"#, "top_k"),
        (r#"{"do_sample": "yes"}"#, "do_sample"),
        (r#"{"temperature": 0.7"#, "EOF"),
    ] {
        std::fs::write(&path, text).unwrap();
        match read(&path) {
            Err(e @ (ModelError::InvalidConfig { .. } | ModelError::Json { .. })) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(needle) && msg.contains("generation_config.json"),
                    "{msg}"
                );
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // A well-typed value outside the sampler's domain is the sampler's error.
    std::fs::write(&path, r#"{"top_p": 1.5}"#).unwrap();
    let config = read(&path).unwrap();
    assert!(matches!(
        Sampling::from_generation_config(Some(&config)),
        Err(InferError::InvalidConfig { field: "top_p", .. })
    ));
}
