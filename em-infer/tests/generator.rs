//! The generator on em-models' tiny seeded Qwen2 (`em_models::testing`), on every compiled backend: greedy
//! decoding against a cache-free argmax loop, batching and row dropping against each prompt
//! alone, seeded reproducibility, stopping rules, streaming, EM-INF's argmax invariance and the
//! typed errors.
#![allow(clippy::unwrap_used)]

mod common;
use common::devices;

use burn::tensor::{Device, Int, Tensor, TensorData};
use em_infer::{
    EmInfConfig, EmInfProcessor, GenerateConfig, Generation, Generator, InferError,
    LogitsProcessor, Processed, ProcessorChain, Sampling, StepContext, StopReason, TokenEvent,
    refine, self_consistency, strategies,
};
use em_models::testing::Tiny;
use em_models::{Logits, Qwen2ForCausalLM, Tokenizer};

/// em-models' tiny seeded Qwen2 (tied head) and its tokenizer.
fn load(device: &Device) -> (Qwen2ForCausalLM, Tokenizer) {
    let tiny = em_models::testing::tiny_pretrained(Tiny::Qwen2Tied, device, 3).unwrap();
    (tiny.pretrained.model, tiny.pretrained.tokenizer)
}

const PROMPTS: [&[u32]; 3] = [
    &[1, 45, 290, 7, 133],
    &[88, 19],
    &[250, 64, 3, 17, 200, 11, 9, 5],
];

fn prompts() -> Vec<Vec<u32>> {
    PROMPTS.iter().map(|p| p.to_vec()).collect()
}

/// Greedy without EOS, `n` tokens.
fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        sampling: Sampling::greedy(),
        eos_ids: Some(vec![]),
        ..GenerateConfig::default()
    }
}

fn run(
    generator: &Generator<'_, Qwen2ForCausalLM>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
) -> Vec<Generation> {
    generator
        .generate(prompts, config, &mut ProcessorChain::new(), |_| {})
        .unwrap()
}

/// The oracle: re-run the whole sequence through a fresh cache every step and take the host
/// argmax of the last position.
fn argmax_loop(model: &Qwen2ForCausalLM, prompt: &[u32], n: usize) -> Vec<u32> {
    let device = model.device();
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let ids: Vec<i64> = seq.iter().map(|&i| i64::from(i)).collect();
        let len = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, len]), &device);
        let mut cache = model.new_cache(1, len);
        let logits = model.forward(ids, &mut cache, Logits::Last).unwrap();
        let row: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
        let best = (0..row.len())
            .max_by(|a, b| row[*a].total_cmp(&row[*b]))
            .unwrap();
        seq.push(best as u32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn greedy_matches_a_cache_free_argmax_loop() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let out = run(&generator, &prompts(), &greedy(12));
        for (i, prompt) in prompts().iter().enumerate() {
            assert_eq!(
                out[i].tokens,
                argmax_loop(&model, prompt, 12),
                "{name} row {i}"
            );
            assert_eq!(out[i].stop, StopReason::MaxNewTokens);
            assert_eq!(out[i].prompt_tokens, prompt.len());
            assert_eq!(out[i].log_probs.len(), 12);
            assert!(
                out[i]
                    .log_probs
                    .iter()
                    .all(|lp| *lp <= 1e-6 && lp.is_finite())
            );
            // Greedy reports the untempered distribution: H > 0 for a random tiny model.
            assert!(out[i].entropies.iter().all(|h| *h > 0.0));
            // Without processors the sampled-from and the model's distributions coincide.
            for (a, b) in out[i].entropies.iter().zip(&out[i].model_entropies) {
                assert!((a - b).abs() < 1e-4, "{name}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn a_batch_gives_what_each_prompt_gives_alone() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let config = greedy(10);
        let together = run(&generator, &prompts(), &config);
        for (i, prompt) in prompts().iter().enumerate() {
            let alone = run(&generator, std::slice::from_ref(prompt), &config);
            assert_eq!(together[i].tokens, alone[0].tokens, "{name} row {i}");
        }
    }
}

/// A row that ends early is dropped from the batch; the others must not notice.
#[test]
fn rows_that_finish_leave_the_others_unchanged() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let full = run(&generator, &prompts(), &greedy(10));
        // Make row 1's third token its EOS, unless it appears earlier in any row.
        let eos = full[1].tokens[2];
        let config = GenerateConfig {
            eos_ids: Some(vec![eos]),
            ..greedy(10)
        };
        let out = run(&generator, &prompts(), &config);
        for (i, g) in out.iter().enumerate() {
            let cut = full[i].tokens.iter().position(|t| *t == eos);
            match cut {
                Some(at) => {
                    assert_eq!(g.tokens, full[i].tokens[..=at], "{name} row {i}");
                    assert_eq!(g.stop, StopReason::Eos);
                }
                None => assert_eq!(g.tokens, full[i].tokens, "{name} row {i}"),
            }
        }
        assert!(out[1].tokens.len() <= 3);
    }
}

#[test]
fn sampling_is_reproducible_for_a_seed() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let config = |seed| GenerateConfig {
            max_new_tokens: 8,
            seed,
            eos_ids: Some(vec![]),
            sampling: Sampling {
                top_k: 50,
                top_p: 0.95,
                ..Sampling::default()
            },
            ..GenerateConfig::default()
        };
        let a = run(&generator, &prompts(), &config(3));
        let b = run(&generator, &prompts(), &config(3));
        let c = run(&generator, &prompts(), &config(4));
        assert_eq!(a, b, "{name}");
        assert_ne!(
            a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
            c.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

#[test]
fn stop_strings_cut_the_text_and_streaming_adds_up() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let prompt = vec![PROMPTS[0].to_vec()];
        let mut streamed = String::new();
        let mut events = 0;
        let full = generator
            .generate(
                &prompt,
                &greedy(20),
                &mut ProcessorChain::new(),
                |e: &TokenEvent<'_>| {
                    streamed.push_str(e.text);
                    events += 1;
                },
            )
            .unwrap()
            .remove(0);
        assert_eq!(events, 20);
        assert!(full.text.starts_with(&streamed), "{name}");
        assert_eq!(full.text, tok.decode(&full.tokens, true).unwrap());
        // A stop string taken from the middle of the text.
        let chars: Vec<char> = full.text.chars().collect();
        assert!(chars.len() >= 6, "{name}: {:?}", full.text);
        let at: usize = chars[..chars.len() / 2].iter().map(|c| c.len_utf8()).sum();
        let stop: String = full.text[at..].chars().take(2).collect();
        let first = full.text.find(&stop).unwrap();
        let config = GenerateConfig {
            stop_strings: vec!["never appears \u{1F600}".into(), stop.clone()],
            ..greedy(20)
        };
        let out = run(&generator, &prompt, &config).remove(0);
        assert_eq!(out.stop, StopReason::StopString(stop.clone()), "{name}");
        assert_eq!(out.text, full.text[..first], "{name}");
        assert!(out.tokens.len() < full.tokens.len());
        assert_eq!(out.tokens, full.tokens[..out.tokens.len()]);
    }
}

#[test]
fn default_eos_ids_and_the_context_limit_stop_rows() {
    let device = Device::default();
    let (model, tok) = load(&device);
    let generator = Generator::new(&model, &tok);
    // The fixture's context is 64: a 60-token prompt leaves room for 4 tokens.
    let long: Vec<u32> = (0..60).map(|i| 3 + (i * 7) % 250).collect();
    let out = run(&generator, &[long], &greedy(10)).remove(0);
    assert_eq!(out.tokens.len(), 4);
    assert_eq!(out.stop, StopReason::ContextFull);
    // With the tokenizer's EOS ids (2 and 0 here), a row that emits one stops there.
    let config = GenerateConfig {
        eos_ids: None,
        ..greedy(40)
    };
    let free = run(&generator, &prompts(), &greedy(40));
    let out = run(&generator, &prompts(), &config);
    for (f, g) in free.iter().zip(&out) {
        match f.tokens.iter().position(|t| tok.eos_ids().contains(t)) {
            Some(at) => {
                assert_eq!(g.stop, StopReason::Eos);
                assert_eq!(g.tokens, f.tokens[..=at]);
            }
            None => assert_eq!(g.tokens, f.tokens),
        }
    }
}

/// EM-INF never moves the argmax (the paper's Prop. 1), so greedy decoding with it gives the
/// same tokens, while the distributions sampled from have lower entropy.
#[test]
fn em_inf_keeps_greedy_tokens_and_lowers_entropy() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let config = greedy(8);
        let plain = run(&generator, &prompts(), &config);
        let mut em_inf = EmInfProcessor::new(EmInfConfig::default()).unwrap();
        let adjusted = generator
            .generate(&prompts(), &config, &mut em_inf, |_| {})
            .unwrap();
        assert_eq!(em_inf.stats.rows, 3 * 8, "{name}");
        assert!(em_inf.stats.grad_steps > 0);
        for (p, a) in plain.iter().zip(&adjusted) {
            assert_eq!(p.tokens, a.tokens, "{name}");
            assert!(a.mean_entropy() < p.mean_entropy() - 0.1, "{name}");
            // The model's entropy, whether the generator computes it (plain) or EM-INF hands
            // it over (flex): the same values to the bit there. Elsewhere both runs compute it
            // (the burn-op EM-INF reports nothing) in other kernels' company.
            if name == "flex" {
                assert_eq!(p.model_entropies, a.model_entropies, "{name}");
            }
            for (x, y) in p.model_entropies.iter().zip(&a.model_entropies) {
                assert!((x - y).abs() < 1e-4, "{name}: {x} vs {y}");
            }
        }
    }
}

/// Leaves the logits alone and reports 42 as every row's input entropy, on `extra` more rows
/// than it was given.
struct Reporting {
    extra: usize,
    /// What it answers to `reports_input_entropy`.
    claims: bool,
}

/// [`Reporting`]'s marker value.
const MARKER: f64 = 42.0;

impl LogitsProcessor for Reporting {
    fn process(&mut self, logits: Tensor<2>, _: &StepContext<'_>) -> Result<Tensor<2>, InferError> {
        Ok(logits)
    }

    fn process_step(
        &mut self,
        logits: Tensor<2>,
        _: &StepContext<'_>,
    ) -> Result<Processed, InferError> {
        let rows = logits.dims()[0] + self.extra;
        Ok(Processed {
            logits,
            input_entropy: Some(vec![MARKER; rows]),
        })
    }

    fn reports_input_entropy(&self, _: &Tensor<2>) -> bool {
        self.claims
    }
}

/// The generator's model entropy is a processor's report when it has one value per row (a
/// marker value comes through), and its own pass otherwise (a report of the wrong length is
/// ignored: the plain run's values).
#[test]
fn model_entropy_comes_from_a_processor_that_reports_it() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let config = greedy(6);
        let plain = run(&generator, &prompts(), &config);
        let generate_with = |extra, claims| {
            generator.generate(
                &prompts(),
                &config,
                &mut Reporting { extra, claims },
                |_| {},
            )
        };
        let ignored = generate_with(1, false).unwrap();
        // Claiming the report (the logits handed over) or not, the same results.
        for claims in [false, true] {
            let reported = generate_with(0, claims).unwrap();
            for ((p, r), i) in plain.iter().zip(&reported).zip(&ignored) {
                assert_eq!(p.tokens, r.tokens, "{name}");
                assert!(r.model_entropies.iter().all(|h| *h == MARKER), "{name}");
                assert_eq!(r.entropies, p.entropies, "{name}: the draw's own entropy");
                assert_eq!(i.model_entropies, p.model_entropies, "{name}");
            }
        }
        // A processor that claims the report and then reports the wrong number of rows has
        // taken the model's logits: a typed error, not another tensor's entropy.
        let err = generate_with(1, true).unwrap_err();
        assert!(
            matches!(&err, InferError::Processor { step: 0, message, .. } if message.contains("reports the entropy")),
            "{name}: {err}"
        );
    }
}

#[test]
fn bad_prompts_and_configs_are_typed_errors() {
    let device = Device::default();
    let (model, tok) = load(&device);
    let generator = Generator::new(&model, &tok);
    let mut none = ProcessorChain::new();
    let mut go = |prompts: &[Vec<u32>], config: &GenerateConfig| {
        generator.generate(prompts, config, &mut none, |_| {})
    };
    assert!(matches!(
        go(&[vec![1], vec![]], &greedy(2)),
        Err(InferError::EmptyPrompt { row: 1 })
    ));
    assert!(matches!(
        go(&[vec![5; 64]], &greedy(2)),
        Err(InferError::PromptTooLong {
            row: 0,
            len: 64,
            context: 64
        })
    ));
    assert!(matches!(
        go(&[vec![5, 320]], &greedy(2)),
        Err(InferError::TokenOutOfVocabulary {
            id: 320,
            vocab: 320
        })
    ));
    assert!(matches!(
        go(&[vec![5]], &greedy(0)),
        Err(InferError::InvalidConfig {
            field: "max_new_tokens",
            ..
        })
    ));
    let empty_stop = GenerateConfig {
        stop_strings: vec![String::new()],
        ..greedy(2)
    };
    assert!(matches!(
        go(&[vec![5]], &empty_stop),
        Err(InferError::InvalidConfig {
            field: "stop_strings",
            ..
        })
    ));
    let bad_temperature = GenerateConfig {
        sampling: Sampling::with_temperature(-1.0),
        ..greedy(2)
    };
    assert!(matches!(
        go(&[vec![5]], &bad_temperature),
        Err(InferError::InvalidConfig {
            field: "temperature",
            ..
        })
    ));
    assert!(go(&[], &greedy(2)).unwrap().is_empty());
}

/// NaN logits (here injected into sequence 2 at step 3, after sequence 0 has finished so the
/// batch row differs from the sequence index) are an error naming the step and the sequence,
/// with or without EM-INF in front of the sampler.
#[test]
fn non_finite_logits_name_step_and_sequence() {
    for (name, device) in devices() {
        let (model, tok) = load(&device);
        let generator = Generator::new(&model, &tok);
        let full = run(&generator, &prompts(), &greedy(6));
        let config = GenerateConfig {
            eos_ids: Some(vec![full[0].tokens[1]]),
            ..greedy(6)
        };
        for with_em_inf in [false, true] {
            let poison = |logits: Tensor<2>, ctx: &StepContext<'_>| {
                if ctx.step != 3 {
                    return Ok::<_, InferError>(logits);
                }
                let [batch, vocab] = logits.dims();
                let row = ctx.rows.iter().position(|r| *r == 2).unwrap();
                let mut mask = vec![0f32; batch * vocab];
                mask[row * vocab + 7] = f32::NAN;
                let mask = Tensor::from_data(TensorData::new(mask, [batch, vocab]), &device);
                Ok(logits + mask)
            };
            let mut chain = ProcessorChain::new().with(poison);
            if with_em_inf {
                chain.push(EmInfProcessor::new(EmInfConfig::default()).unwrap());
            }
            let err = generator
                .generate(&prompts(), &config, &mut chain, |_| {})
                .unwrap_err();
            assert!(
                matches!(err, InferError::NonFiniteLogits { step: 3, row: 2 }),
                "{name} em_inf={with_em_inf}: {err}"
            );
        }
    }
}

#[test]
fn self_consistency_votes_and_refinement_rereads() {
    let device = Device::default();
    let (model, tok) = load(&device);
    let generator = Generator::new(&model, &tok);
    let config = GenerateConfig {
        max_new_tokens: 4,
        eos_ids: Some(vec![]),
        seed: 11,
        ..GenerateConfig::default()
    };
    // "Answer" = the first character of the text; equivalence = equality.
    let sc = self_consistency(
        &generator,
        PROMPTS[0],
        6,
        &config,
        &mut ProcessorChain::new(),
        |text: &str| text.chars().next().map(|c| c.to_string()),
        |a: &str, b: &str| a == b,
    )
    .unwrap();
    assert_eq!(sc.samples.len(), 6);
    // Each sample is the row of a batched generation with the same seed.
    let direct = run(&generator, &vec![PROMPTS[0].to_vec(); 6], &config);
    assert_eq!(sc.samples, direct);
    // Groups partition the answered samples, largest first, and the pick is in a largest one.
    let mut members: Vec<usize> = sc.groups.iter().flatten().copied().collect();
    members.sort_unstable();
    let answered: Vec<usize> = (0..6).filter(|i| sc.answers[*i].is_some()).collect();
    assert_eq!(members, answered);
    for g in &sc.groups {
        assert!(g.iter().all(|i| sc.answers[*i] == sc.answers[g[0]]));
    }
    assert!(sc.groups.windows(2).all(|w| w[0].len() >= w[1].len()));
    if let Some(chosen) = sc.chosen {
        assert!(
            sc.groups[0].len()
                == sc
                    .groups
                    .iter()
                    .find(|g| g.contains(&chosen))
                    .unwrap()
                    .len()
        );
    }

    let rounds = refine(
        &generator,
        "Q: 2+2?",
        "Q: 2+2?",
        3,
        &GenerateConfig {
            max_new_tokens: 3,
            ..config.clone()
        },
        &mut ProcessorChain::new(),
    )
    .unwrap();
    assert_eq!(rounds.len(), 3);
    assert_eq!(rounds[0].prompt, "Q: 2+2?");
    for w in rounds.windows(2) {
        assert_eq!(
            w[1].prompt,
            format!("{}{}\n\n{}", w[0].prompt, w[0].generation.text, "Q: 2+2?")
        );
    }
    assert!(matches!(
        self_consistency(
            &generator,
            PROMPTS[0],
            0,
            &config,
            &mut ProcessorChain::new(),
            |_: &str| None,
            |_: &str, _: &str| true
        ),
        Err(InferError::InvalidConfig { field: "n", .. })
    ));
}

#[test]
fn votes_break_ties_by_seed_and_skip_unanswered() {
    let a = |s: &str| Some(s.to_string());
    let answers = vec![a("1"), None, a("2"), a("1/1"), a("2"), None];
    // "1" and "1/1" are equivalent: {0, 3} and {2, 4} tie at two.
    let same = |x: &str, y: &str| {
        let v = |s: &str| -> f64 {
            s.split_once('/').map_or_else(
                || s.parse().unwrap(),
                |(n, d)| n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap(),
            )
        };
        v(x) == v(y)
    };
    let (groups, chosen) = strategies::vote(&answers, 42, same);
    assert_eq!(groups, vec![vec![0, 3], vec![2, 4]]);
    let chosen = chosen.unwrap();
    assert!(chosen == 0 || chosen == 2);
    assert_eq!(strategies::vote(&answers, 42, same).1, Some(chosen));
    let picks: std::collections::BTreeSet<_> = (0..32)
        .map(|seed| strategies::vote(&answers, seed, same).1.unwrap())
        .collect();
    assert_eq!(picks.len(), 2, "the tie-break depends on the seed");
    assert_eq!(strategies::vote(&[None, None], 0, same), (vec![], None));
}

/// A model in f64 (weights, activations and logits) generates what the same weights give in
/// f32 (greedy tokens; both are far from ties on this fixture), its model entropy read back
/// in f64 beside the sampler's f32 columns (mixing the two in one read-back panicked in
/// burn-flex's `cat`), with and without EM-INF (whose f64 path reports nothing).
#[test]
fn an_f64_model_generates() {
    for (name, device) in devices() {
        if name != "flex" {
            continue; // f64 compute is flex's (wgpu's shaders have no f64 here)
        }
        let (_, tok) = load(&device);
        let [wide, narrow] = [burn::tensor::DType::F64, burn::tensor::DType::F32].map(|dtype| {
            em_models::testing::tiny_model(Tiny::Qwen2Tied, &device, dtype, 3).unwrap()
        });
        let config = greedy(6);
        let want = run(&Generator::new(&narrow, &tok), &prompts(), &config);
        let generator = Generator::new(&wide, &tok);
        let plain = run(&generator, &prompts(), &config);
        let mut em_inf = EmInfProcessor::new(EmInfConfig::default()).unwrap();
        let adjusted = generator
            .generate(&prompts(), &config, &mut em_inf, |_| {})
            .unwrap();
        for ((w, p), a) in want.iter().zip(&plain).zip(&adjusted) {
            assert_eq!(p.tokens, w.tokens);
            assert_eq!(a.tokens, w.tokens);
            for (x, y) in p.model_entropies.iter().zip(&w.model_entropies) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
            assert_eq!(a.model_entropies, p.model_entropies);
        }
    }
}
